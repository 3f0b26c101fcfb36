"""Serving the API: the listening socket, TLS, hypercorn's config, and the wiring into a run.

:func:`serve_api` serves an ASGI app (:func:`supervisor._server._app.make_app`)
inside the caller's trio run, on ``unix:PATH`` (mode 0600) or ``HOST:PORT``
(TLS with ``tls_cert``/``tls_key``), through :mod:`supervisor._server._listener`:
our own accept loop around hypercorn's HTTP/1.1 protocol, with a connection
cap and deadlines, in which no client can raise. :func:`attach_api` wires it
into a supervisor's run. Everything here happens once, at start or at the end
of a run; the per-request work is in :mod:`~supervisor._server._app`.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
import os
import socket
import ssl
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs
import hypercorn.config
import trio

from .._address import ListenAddress, parse_listen
from .._core._config_sections import ApiConfig
from .._errors import ConfigError, SupervisorError
from .._files import UnsafePathError, check_output_path
from .._logging import get_logger
from ._app import Api
from ._audit import AuditLog
from ._connection import ConnectionLimits, ServerStats
from ._events import Broadcaster
from ._listener import make_ssl_context, serve_connections
from ._requests import ASGIApp

if TYPE_CHECKING:
    from .._core._runtime import Supervisor
    from .._store._shipper import ErrorShipper

__all__ = ["ApiListenError", "attach_api", "serve_api"]

#: Pending connections the kernel queues before accept(): as many as it allows.
_BACKLOG: Final = socket.SOMAXCONN


class ApiListenError(SupervisorError, OSError):
    """Raised by :func:`serve_api` when it cannot listen on ``[api] listen``.

    ``listen`` is the address at fault; the message says why (in use, another
    supervisor is serving there, a path that is not a socket, ...).
    """

    def __init__(self, message: str, *, listen: str) -> None:
        self.listen = listen
        super().__init__(f"[api] listen {listen!r}: {message}")


class _ToStructlog(logging.Handler):
    """Forwards hypercorn's own (error) log records to structlog."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            log = get_logger(component="api.server")
            level = record.levelname.lower()
            method = getattr(
                log, level if level in {"debug", "info", "warning", "error"} else "error"
            )
            extra = {}
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                extra["error"] = f"{type(exc).__name__}: {exc}"
            method("api.server", message=record.getMessage(), **extra)
        except Exception:
            self.handleError(record)


@functools.cache
def _server_logger() -> logging.Logger:
    logger = logging.getLogger("supervisor.api.server")
    logger.propagate = False
    # WARNING: hypercorn's INFO lines ("Running on ... (CTRL + C to quit)")
    # are wrong for an embedded server; serve_api logs its own api.listening.
    logger.setLevel(logging.WARNING)
    logger.addHandler(_ToStructlog())
    return logger


def _unix_listener(address: ListenAddress, shown: str) -> socket.socket:
    assert address.path is not None
    path = Path(address.path)
    try:
        if not path.parent.is_dir():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = path.lstat().st_mode
    except FileNotFoundError:
        pass
    except OSError as exc:
        # A file where a folder of the path should be, a folder we may not
        # create or search: one line, at start-up, not a crashing service.
        raise ApiListenError(
            f"cannot prepare the socket's folder {str(path.parent)!r}: "
            f"{exc.strerror or type(exc).__name__}",
            listen=shown,
        ) from None
    else:
        if not stat.S_ISSOCK(mode):
            raise ApiListenError("the path exists and is not a socket", listen=shown)
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink(missing_ok=True)  # stale: left by a process that died
        except OSError:
            pass  # cannot tell; let bind() report it
        else:
            raise ApiListenError(
                "another process is serving on this socket (is a supervisor already running?)",
                listen=shown,
            )
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Bound and listening under a temporary name, then renamed into place:
    # the path never names a socket that refuses connections, so a client
    # that sees the file can connect (tests/test_api_audit.py::TestAttachApi).
    staging = path.with_name(f".{os.getpid()}.sock")  # short: socket paths are limited
    try:
        # umask 0177 makes bind() create the file 0600 at once, so there is
        # no moment at which another user could connect; chmod anyway in case
        # the platform ignores the umask for sockets.
        old = os.umask(0o177)
        try:
            staging.unlink(missing_ok=True)
            sock.bind(str(staging))
        finally:
            os.umask(old)
        os.chmod(staging, 0o600)
        sock.listen(_BACKLOG)
        os.rename(staging, path)
    except OSError as exc:
        sock.close()
        with contextlib.suppress(OSError):
            staging.unlink()
        raise ApiListenError(exc.strerror or str(exc), listen=shown) from None
    return sock


def _tcp_listener(address: ListenAddress, shown: str) -> socket.socket:
    assert address.host is not None
    try:
        infos = socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        raise ApiListenError(f"cannot resolve the host: {exc}", listen=shown) from None
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(sockaddr)
    except OSError as exc:
        sock.close()
        raise ApiListenError(exc.strerror or str(exc), listen=shown) from None
    return sock


def _is_loopback(sock: socket.socket) -> bool:
    host = sock.getsockname()[0]
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _tls_context(api: ApiConfig, shown: str) -> ssl.SSLContext | None:
    """The TLS context of ``[api] tls_cert``/``tls_key``, or None when neither is set.

    ``ApiConfig`` refuses one without the other when it is built.

    Raises:
        ApiListenError: the files are not a usable pair.
    """
    if api.tls_cert is None or api.tls_key is None:
        return None
    try:
        return make_ssl_context(api.tls_cert, api.tls_key)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise ApiListenError(
            f"cannot use tls_cert {api.tls_cert!r} and tls_key {api.tls_key!r}: {reason}",
            listen=shown,
        ) from None


def _hypercorn_config(graceful_timeout: float) -> hypercorn.config.Config:
    config = hypercorn.config.Config()
    config.accesslog = None  # one api.action log line per change is enough
    config.errorlog = _server_logger()
    config.graceful_timeout = graceful_timeout
    config.include_server_header = False
    return config


async def serve_api(
    app: ASGIApp,
    listen: str,
    *,
    api: ApiConfig | None = None,
    stats: ServerStats | None = None,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    graceful_timeout: float = 1.0,
    tick_due: Callable[[], tuple[float, float] | None] | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``listen`` until cancelled or ``shutdown_trigger`` returns.

    Use ``await nursery.start(serve_api, app, listen)``: it returns once the
    socket is listening, with the address actually bound (the real port for
    ``HOST:0``). A Unix socket's folder is created (0700) if missing, a stale
    socket file is removed, the new one is 0600, and it is removed on exit.
    Connections are served by :mod:`supervisor._server._listener`: capped, with
    deadlines, and no client can make this function raise once it has started.

    Args:
        app: the ASGI app (from :func:`make_app`).
        listen: ``unix:PATH`` or ``HOST:PORT`` (relative paths are relative
            to the working folder: resolve them before).
        api: the ``[api]`` section for the connection limits, TLS (TCP only;
            certificate paths as given) and ``allow_plaintext_tokens``; the
            defaults when None.
        stats: connection counters to update; the app's own when it has them.
        shutdown_trigger: when it returns, stop accepting and give open
            requests ``graceful_timeout`` seconds to finish.
        graceful_timeout: seconds open requests get after the trigger.
        tick_due: the next tick's deadline and period (``Supervisor.next_tick_due``):
            a loaded server accepts nothing just before a tick.

    Raises:
        ApiListenError: the address is malformed, in use, or not usable; TLS
            files that do not load; a plain-HTTP TCP listener on a
            non-loopback address without ``allow_plaintext_tokens``.
    """
    api = api or ApiConfig()
    try:
        address = parse_listen(listen)
    except ValueError as exc:
        raise ApiListenError(str(exc), listen=listen) from None
    shown = str(address)
    tls = None
    if address.is_tcp:
        tls = _tls_context(api, shown)
        sock = _tcp_listener(address, shown)
        host, port = sock.getsockname()[:2]
        shown = str(attrs.evolve(address, host=host, port=port))
        if tls is None and not api.allow_plaintext_tokens and not _is_loopback(sock):
            sock.close()
            raise ApiListenError(
                "tokens would cross the network in plain text: set [api] tls_cert and "
                "tls_key, or allow_plaintext_tokens = true",
                listen=shown,
            )
    else:
        sock = _unix_listener(address, shown)
    inode = None if address.path is None else os.stat(address.path).st_ino
    if stats is None:
        own = getattr(app, "stats", None)
        stats = own if isinstance(own, ServerStats) else ServerStats()
    limits = ConnectionLimits(
        max_connections=api.max_connections,
        header_timeout=api.header_timeout,
        keep_alive_timeout=api.keep_alive_timeout,
        send_timeout=api.body_timeout,
    )
    log = get_logger(component="api")
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                functools.partial(
                    serve_connections,
                    app,
                    sock,
                    config=_hypercorn_config(graceful_timeout),
                    limits=limits,
                    stats=stats,
                    ssl_context=tls,
                    shutdown_trigger=shutdown_trigger,
                    graceful_timeout=graceful_timeout,
                    tick_due=tick_due,
                )
            )
            log.info("api.listening", listen=shown, tls=tls is not None)
            task_status.started(shown)
    finally:
        sock.close()  # if serve_connections never took it over
        if address.path is not None:
            # Only our own socket file: a successor may already have replaced it.
            with contextlib.suppress(OSError):
                if os.stat(address.path).st_ino == inode:
                    os.unlink(address.path)


# ------------------------------------------------------------------ attaching

#: Seconds between writes of the anonymous-refusal counts of finished minutes.
_AUDIT_FLUSH_EVERY: Final = 60.0


def _check_audit_path(path: Path, source: str) -> None:
    """Refuse an audit path that exists and is not a regular file (one line).

    Raises:
        ConfigError: naming ``api.audit_log``.
    """
    try:
        check_output_path(path)
    except UnsafePathError as exc:
        raise ConfigError(exc.problem, source=source, key="api.audit_log") from None


def _only(group: BaseExceptionGroup[Any], kind: type[Exception]) -> Exception | None:
    """The one exception in ``group`` (nested groups flattened) if it is a ``kind``, else None."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            leaves.append(exc)
    if len(leaves) == 1 and isinstance(leaves[0], kind):
        return leaves[0]
    return None


async def _wait_closing(sup: Supervisor) -> None:
    """Return when ``sup`` starts to close.

    ``sup.closing`` is read at call time: each run of a supervisor has its own event.
    """
    await sup.closing.wait()


def install_lazy_metrics(sup: Supervisor) -> None:
    """Give ``sup`` its Prometheus exposition, loading prometheus_client on the first scrape.

    A run nobody scrapes never pays its ~3 MB; the first ``GET /metrics``
    imports it in a worker thread (``Api._metrics``), off the loop.
    """
    exposition: Callable[[], tuple[bytes, str]] | None = None

    def export() -> tuple[bytes, str]:
        nonlocal exposition
        if exposition is None:
            from ._metrics import SupervisorMetrics  # noqa: PLC0415 - the first scrape

            exposition = SupervisorMetrics(sup).exposition
        return exposition()

    sup.metrics_exporter = export


def attach_api(sup: Supervisor, *, error_store: ErrorShipper | None = None) -> AuditLog:
    """Serve the HTTP API inside ``sup``'s run, from before the systems start.

    Appends one service to ``sup.services``: it serves ``[api] listen`` until
    ``sup.closing`` is set (so an answer in flight, such as the one to
    ``shutdown --emergency`` with ``--exit-on-emergency``, is sent before the
    process exits) and writes the audit log's anonymous-refusal counts once a
    minute and at the end. Also adds the audit log's writability to the
    readiness sink checks. ``error_store`` answers the store's queries
    (``/v1/errors?since=``, ``/v1/errors/trends``).

    Returns:
        The API's audit log, for the run's other writers (rollouts) to share:
        one writer per file, so its repair of a short write holds.

    Raises:
        ConfigError: ``[api] listen`` is malformed, or ``[api] audit_log``
            exists and is not a regular file.
    """
    api = sup.active_config.api
    source = sup.config.source
    try:
        addr = parse_listen(api.listen)
    except ValueError as exc:
        raise ConfigError(str(exc), source=source, key="api.listen") from None
    listen = f"unix:{sup.config.path(addr.path)}" if addr.path else api.listen
    audit_path = sup.config.path(api.audit_log)
    _check_audit_path(audit_path, source)
    served = attrs.evolve(
        api,
        tls_cert=None if api.tls_cert is None else str(sup.config.path(api.tls_cert)),
        tls_key=None if api.tls_key is None else str(sup.config.path(api.tls_key)),
    )
    audit = AuditLog(audit_path, redactor=sup.redactor)
    sup.sink_checks.append(
        lambda: None if audit.writable() else f"the audit log {audit_path} is not writable"
    )
    app = Api(
        sup=sup,
        api=served,
        tcp=addr.is_tcp,
        audit=audit,
        redactor=sup.redactor,
        error_store=error_store,
        events=(events := Broadcaster(sup)),
    )
    sup.services.append(events.broadcast)  # the dashboard's live frames, off the tick
    install_lazy_metrics(sup)  # GET /metrics: the core imports no metrics library
    # The tokens of the phase in force: what readiness judges is what the API accepts.
    sup.phase_listeners.append(lambda _phase: app.use_tokens(sup.active_config.api.tokens))

    async def flush_refusals() -> None:
        try:
            while True:
                await trio.sleep(_AUDIT_FLUSH_EVERY)
                await app.flush_audit()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2.0):
                await app.flush_audit(final=True)

    async def serve(
        _sup: Supervisor, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(flush_refusals)

                async def serving(task_status: trio.TaskStatus[str]) -> None:
                    await serve_api(
                        app,
                        listen,
                        api=served,
                        shutdown_trigger=functools.partial(_wait_closing, sup),
                        tick_due=sup.next_tick_due,
                        task_status=task_status,
                    )
                    nursery.cancel_scope.cancel()

                bound = await nursery.start(serving)
                sup.set_listen(bound)  # status shows the address actually bound
                task_status.started(bound)
        except BaseExceptionGroup as group:
            # The nursery wraps serve_api's start-up error: callers catch the one line.
            error = _only(group, ApiListenError)
            if error is None:
                raise
            raise error from None

    sup.services.append(serve)
    return audit
