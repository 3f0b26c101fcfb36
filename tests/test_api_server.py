"""The API's connection layer against hostile clients, on real sockets.

Each test runs :func:`~supervisor._server._serve.serve_api` on a real TCP port or Unix
socket in the test's own trio run (real clock: the deadlines under test are
real-time ones) and attacks it with raw sockets: half-closed bodies,
slowloris heads, idle holders, never-ending chunked bodies, more connections
than the cap. What must hold every time: the server never raises, each
misbehaving connection is closed within its deadline and counted, and
``/healthz`` keeps answering.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from hypercorn.events import Closed
from hypercorn.trio.tcp_server import TCPServer
from test_api import OPERATOR_TOKEN, UID_CALLER, FakeSupervisor, Rig, make_rig

from supervisor import ApiConfig
from supervisor._server import _connection
from supervisor._server._connection import ServerStats
from supervisor._server._serve import ApiListenError, serve_api

HEAD = b"POST /v1/phase HTTP/1.1\r\nHost: sv\r\nContent-Type: application/json\r\n"
HALF_CLOSED = HEAD + b"Content-Length: 100\r\n\r\n{"
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: sv\r\n\r\n"
HEALTHZ_CLOSE = b"GET /healthz HTTP/1.1\r\nHost: sv\r\nConnection: close\r\n\r\n"
# A system python that uid 65534 may execute (this virtualenv's may live under /root).
PLAIN_PYTHON = shutil.which("python3", path="/usr/bin:/bin") or ""


@attrs.define(eq=False)
class Served:
    """A running serve_api: where it listens, its app's rig, and the listener's counters."""

    rig: Rig
    listen: str
    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def stats(self) -> ServerStats:
        stats: ServerStats = self.rig.app.stats
        return stats

    async def connect(self) -> trio.SocketStream:
        if self.path:
            return await trio.open_unix_socket(self.path)
        return await trio.open_tcp_stream(self.host, self.port)


@attrs.define(eq=False)
class HypercornErrors(logging.Handler):
    """Counts the error records hypercorn logs (for example "Error in ASGI Framework")."""

    records: list[logging.LogRecord] = attrs.field(factory=list)

    def __attrs_pre_init__(self) -> None:
        super().__init__(logging.ERROR)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def hypercorn_errors() -> Iterator[HypercornErrors]:
    handler = HypercornErrors()
    logger = logging.getLogger("supervisor.api.server")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short folder: a Unix socket path must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="sv-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Any]:
    """A starter of serve_api with a fake supervisor: listen address, mode, ApiConfig options."""
    async with trio.open_nursery() as nursery:

        async def start(
            listen: str = "127.0.0.1:0", mode: str = "dev-tcp", **options: Any
        ) -> Served:
            rig = make_rig(tmp_path, mode, api_options=options)
            api = ApiConfig(**options)
            shown = await nursery.start(functools.partial(serve_api, rig.app, listen, api=api))
            served = Served(rig=rig, listen=shown)
            if shown.startswith("unix:"):
                served.path = shown[len("unix:") :]
            else:
                served.host, _, port = shown.rpartition(":")
                served.port = int(port)
            return served

        yield start
        nursery.cancel_scope.cancel()


async def read_all(stream: trio.abc.ReceiveStream, limit: float = 5.0) -> bytes:
    """Everything the server sends until it closes (fails the test after ``limit`` seconds)."""
    data = b""
    with trio.fail_after(limit):
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:  # reset by the server
                return data
            if not chunk:
                return data
            data += chunk


async def dribble(stream: trio.SocketStream, every: float) -> bytes:
    """Send a one-byte chunk every ``every`` seconds until the server closes; what it answered."""
    answer = b""
    while True:
        try:
            await stream.send_all(b"1\r\n \r\n")
            with trio.move_on_after(every):
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return answer
                answer += chunk
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return answer


async def wait_until(condition: Callable[[], bool], limit: float = 5.0) -> None:
    """Poll ``condition`` (state another task changes, with no event to wait on)."""
    with trio.fail_after(limit):
        while not condition():  # noqa: ASYNC110 - the state belongs to the code under test
            await trio.sleep(0.01)


async def healthz(served: Served) -> int:
    """The status of one GET /healthz on a fresh connection."""
    stream = await served.connect()
    async with stream:
        await stream.send_all(HEALTHZ_CLOSE)
        answer = await read_all(stream)
    return int(answer.split(b" ", 2)[1])


async def half_closed(served: Served) -> bytes:
    """The attack of issue 8: a 100-byte body declared, one byte sent, then SHUT_WR."""
    async with await served.connect() as stream:
        with contextlib.suppress(trio.BrokenResourceError):  # the server may answer first
            await stream.send_all(HALF_CLOSED)
            await stream.send_eof()
        return await read_all(stream)


async def upstream_send(self: Any, data: bytes) -> None:
    """hypercorn 0.18.0's ``protocol_send`` for RawData: BusyResourceError is not caught."""
    async with self.send_lock:
        try:
            with trio.CancelScope(shield=True):
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await self.protocol.handle(Closed())


class TestHalfClosed:
    """Issue 8's crash: POST, ``Content-Length: 100``, one byte, ``shutdown(SHUT_WR)``."""

    ATTEMPTS = 2000
    # The race shows within a few attempts (2 to 5 in six runs); the bound
    # only keeps a slow machine from failing the test by chance.
    RACE_ATTEMPTS = 5000

    async def test_thousands_of_attempts_fail_no_connection(
        self, serve: Any, hypercorn_errors: HypercornErrors
    ) -> None:
        """2,000 half-closed bodies: every one answered or closed, none an error, /healthz 200."""
        served = await serve()
        for _ in range(self.ATTEMPTS):
            await half_closed(served)
        assert await healthz(served) == 200
        assert served.stats.errors == 0
        assert hypercorn_errors.records == []
        assert served.stats.accepted == self.ATTEMPTS + 1

    async def test_on_the_unix_socket_too(
        self, serve: Any, short_tmp: Path, hypercorn_errors: HypercornErrors
    ) -> None:
        """The owner's socket takes the body, then the same half-close: 400, never an error."""
        served = await serve(f"unix:{short_tmp}/api.sock", "dev-unix")
        for _ in range(500):
            answer = await half_closed(served)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 400 ")
        assert await healthz(served) == 200
        assert served.stats.errors == 0
        assert hypercorn_errors.records == []

    async def test_upstream_close_races_the_error_answer(
        self, serve: Any, hypercorn_errors: HypercornErrors, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The root cause: with hypercorn's own _close and send, the race shows within 2,000 tries.

        Upstream's ``_close`` sends EOF outside ``send_lock``; the other task's
        ``send_all`` then raises ``BusyResourceError``. With our ``_close``
        (the test above) it never does. Even with the race back in place the
        server survives: the per-connection guard counts, never raises.
        """
        monkeypatch.setattr(_connection.Connection, "_close", TCPServer._close)
        monkeypatch.setattr(_connection.Connection, "_send_raw", upstream_send)
        served = await serve()
        for _ in range(self.RACE_ATTEMPTS):
            await half_closed(served)
            if hypercorn_errors.records or served.stats.errors:
                break
        busy = [r for r in hypercorn_errors.records if "BusyResourceError" in str(r.exc_info)]
        assert busy or served.stats.errors
        assert await healthz(served) == 200


class TestNothingEscapes:
    async def test_a_connection_that_raises_is_counted(
        self, serve: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Any exception out of one connection (here every other one) is counted, not raised."""
        original = _connection.Connection.run
        calls = 0

        async def flaky(self: Any) -> None:
            nonlocal calls
            calls += 1
            if calls % 2:
                raise RuntimeError("boom from a connection")
            await original(self)

        monkeypatch.setattr(_connection.Connection, "run", flaky)
        served = await serve()
        answers = []
        for _ in range(40):
            stream = await served.connect()
            await stream.send_all(HEALTHZ_CLOSE)
            answers.append(await read_all(stream))
            await stream.aclose()
        assert sum(a.startswith(b"HTTP/1.1 200 ") for a in answers) == 20
        assert answers.count(b"") == 20
        assert served.stats.errors == 20

    async def test_a_group_of_errors_is_counted(
        self, serve: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An ExceptionGroup (as trio nurseries raise) is one counted failure too."""

        async def grouped(self: Any) -> None:
            raise ExceptionGroup("two", [trio.BusyResourceError("a"), OSError("b")])

        monkeypatch.setattr(_connection.Connection, "run", grouped)
        served = await serve()
        for _ in range(5):
            async with await served.connect() as stream:
                await read_all(stream)
        assert served.stats.errors == 5


class TestDeadlines:
    async def test_slowloris_head_is_cut_at_header_timeout(self, serve: Any) -> None:
        """A byte every 50 ms never completes a head: closed at 0.5 s whatever it sends."""
        served = await serve(header_timeout=0.5)
        ends: list[float] = []

        async def loris() -> None:
            stream = await served.connect()
            start = trio.current_time()
            with trio.fail_after(3):
                for byte in HEAD * 10:
                    try:
                        await stream.send_all(bytes([byte]))
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        break
                    with trio.move_on_after(0.05):
                        if await stream.receive_some(100) == b"":
                            break
            ends.append(trio.current_time() - start)
            await stream.aclose()

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(loris)
        assert len(ends) == 20
        # The deadline falls 0.45 to 0.5 s after the server accepted; this task's
        # clock starts when it runs again after connect(), a scheduler pass later.
        assert all(0.4 <= t < 1.5 for t in ends), ends
        assert served.stats.header_timeouts == 20
        assert await healthz(served) == 200

    async def test_head_in_pieces_is_still_served(self, serve: Any) -> None:
        """Pieces of a head are read after a random pause (at most head_pace), then answered."""
        served = await serve(header_timeout=3.0)
        async with await served.connect() as stream:
            start = trio.current_time()
            for i in range(0, len(HEALTHZ_CLOSE), 10):
                await stream.send_all(HEALTHZ_CLOSE[i : i + 10])
                await trio.sleep(0.01)
            answer = await read_all(stream)
        assert answer.startswith(b"HTTP/1.1 200 ")
        pieces = len(HEALTHZ_CLOSE) // 10 + 1
        assert trio.current_time() - start < pieces * (0.01 + 0.25) + 0.5

    async def test_a_slow_head_builds_no_protocol_until_it_is_whole(
        self, serve: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Slowloris heads cost a socket and a task: hypercorn's protocol is built for whole heads.

        Building it (h11 state, a task group, the ASGI wrapper) for every
        slowloris connection, then tearing it down at eviction or timeout, was
        the churn that moved ticks under 600 held connections.
        """
        built: list[object] = []
        original = _connection._Http11Protocol.__init__

        def counting(self: Any, *args: Any, **kwargs: Any) -> None:
            built.append(self)
            original(self, *args, **kwargs)

        monkeypatch.setattr(_connection._Http11Protocol, "__init__", counting)
        served = await serve(header_timeout=0.4)
        async with await served.connect() as stream:
            for byte in HEAD[:20]:
                await stream.send_all(bytes([byte]))
                await trio.sleep(0.01)
            assert await read_all(stream) == b""  # cut at the head deadline, no answer
        assert built == []
        assert served.stats.header_timeouts == 1
        # A head ending in bare LFs (h11 takes them) and one past h11's limit
        # (hypercorn answers 431) still reach the protocol.
        async with await served.connect() as stream:
            await stream.send_all(b"GET /healthz HTTP/1.1\nHost: sv\nConnection: close\n\n")
            assert (await read_all(stream)).startswith(b"HTTP/1.1 200 ")
        async with await served.connect() as stream:
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(b"GET /healthz HTTP/1.1\r\nX-Pad: " + b"a" * 20_000)
            assert (await read_all(stream)).startswith(b"HTTP/1.1 431 ")
        assert len(built) == 2

    async def test_idle_connection_gets_header_timeout(self, serve: Any) -> None:
        """A connection that sends nothing is closed at header_timeout."""
        served = await serve(header_timeout=0.3)
        async with await served.connect() as stream:
            start = trio.current_time()
            assert await read_all(stream) == b""
        assert 0.25 <= trio.current_time() - start < 1.5
        assert served.stats.header_timeouts == 1

    async def test_keep_alive_connection_closed_when_idle(self, serve: Any) -> None:
        """After an answer, an idle keep-alive connection is closed at keep_alive_timeout."""
        served = await serve(keep_alive_timeout=0.3, header_timeout=5.0)
        async with await served.connect() as stream:
            await stream.send_all(HEALTHZ)
            start = trio.current_time()
            answer = await read_all(stream)
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert 0.25 <= trio.current_time() - start < 1.5
        assert served.stats.keep_alive_timeouts == 1
        assert served.stats.header_timeouts == 0

    async def test_keep_alive_serves_many_requests(self, serve: Any) -> None:
        """A client that keeps asking on one connection is served each time (no early close)."""
        served = await serve(keep_alive_timeout=1.0, header_timeout=1.0)
        stream = await served.connect()
        async with stream:
            for _ in range(5):
                await stream.send_all(HEALTHZ)
                data = b""
                with trio.fail_after(2):
                    while b'"alive"' not in data:
                        data += await stream.receive_some(4096)
                await trio.sleep(0.2)  # idle, under the keep-alive timeout
        assert served.stats.keep_alive_timeouts == 0

    async def test_never_ending_chunked_body_is_408(self, serve: Any, short_tmp: Path) -> None:
        """An operator's chunked body that never ends: 408 and closed at body_timeout."""
        served = await serve(f"unix:{short_tmp}/api.sock", "dev-unix", body_timeout=0.5)
        stream = await served.connect()
        await stream.send_all(HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
        start = trio.current_time()
        with trio.fail_after(5):
            answer = await dribble(stream, 0.05)
        await stream.aclose()
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert 0.45 <= trio.current_time() - start < 2.0
        assert served.rig.app.body_timeouts == 1
        assert served.rig.fake.state() == FakeSupervisor().state()

    async def test_body_in_too_many_chunks_is_413(self, serve: Any, short_tmp: Path) -> None:
        """A body in 2,000 one-byte chunks is refused (413) before it ends."""
        served = await serve(f"unix:{short_tmp}/api.sock", "dev-unix")
        body = b"".join(b"1\r\n \r\n" for _ in range(2000)) + b"0\r\n\r\n"
        async with await served.connect() as stream:
            with contextlib.suppress(trio.BrokenResourceError):  # closed before the end: fine
                await stream.send_all(HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + body)
            answer = await read_all(stream)
        assert answer.startswith(b"HTTP/1.1 413 ")
        assert b"parts" in answer


class TestConnectionCap:
    async def test_held_connections_past_the_cap_leave_healthz_answering(self, serve: Any) -> None:
        """max_connections=20 and 70 idle holders: /healthz answers at once, nothing dies.

        The oldest connections still waiting for a request head are evicted
        to make room, so a prober is never locked out by idle holders.
        """
        served = await serve(max_connections=20, header_timeout=30.0)
        held = [await served.connect() for _ in range(70)]
        with trio.fail_after(5):
            for _ in range(10):
                assert await healthz(served) == 200
        assert served.stats.evicted >= 50
        assert served.stats.errors == 0
        assert served.stats.open <= 20
        for stream in held:
            await stream.aclose()

    async def test_busy_connections_past_the_cap_wait_for_a_slot(self, serve: Any) -> None:
        """Every slot serving a request (slow shutdowns): a newcomer waits, then is answered.

        Nothing is closed at accept (a closed newcomer only reconnects at
        once): the accept loop pauses, and the newcomer is served as soon as
        a request ends.
        """
        served = await serve(max_connections=5, header_timeout=30.0)
        served.rig.fake.hang = True
        busy = []
        for _ in range(5):
            stream = await served.connect()
            await stream.send_all(
                b"POST /v1/shutdown HTTP/1.1\r\nHost: sv\r\nContent-Length: 2\r\n"
                b"Connection: close\r\n"
                b"Authorization: Bearer " + OPERATOR_TOKEN.encode() + b"\r\n\r\n{}"
            )
            busy.append(stream)
        await wait_until(lambda: len([c for c in served.rig.fake.calls if c[0] == "shutdown"]) == 5)
        newcomer = await served.connect()
        await newcomer.send_all(b"GET /healthz HTTP/1.1\r\nHost: sv\r\nConnection: close\r\n\r\n")
        with trio.move_on_after(0.3) as still_waiting:
            await newcomer.receive_some(100)
        assert still_waiting.cancelled_caught
        assert served.stats.accept_pauses == 1
        assert served.stats.open == 5
        # The actions end: their connections close, and the newcomer gets a slot.
        served.rig.fake.unhang.set()
        for stream in busy:
            assert (await read_all(stream)).startswith(b"HTTP/1.1 200 ")
            await stream.aclose()
        assert (await read_all(newcomer)).startswith(b"HTTP/1.1 200 ")
        await newcomer.aclose()
        assert served.stats.paused_seconds >= 0.3
        assert served.stats.accepted == 6
        await wait_until(lambda: served.stats.open == 0)


class TestPeerCredentials:
    async def test_owner_is_named_by_uid_and_user(self, serve: Any, short_tmp: Path) -> None:
        """Over the real socket, SO_PEERCRED names the owner; in production it is still operator."""
        served = await serve(f"unix:{short_tmp}/api.sock", "prod-unix")
        transport = httpx.AsyncHTTPTransport(uds=served.path)
        async with httpx.AsyncClient(transport=transport, base_url="http://sv") as client:
            response = await client.post("/v1/restart")
        assert response.status_code == 200
        assert served.rig.fake.calls[-1][1]["caller"].name == UID_CALLER
        assert served.rig.audit_lines()[-1]["caller"] == UID_CALLER

    @pytest.mark.skipif(
        os.getuid() != 0 or not PLAIN_PYTHON,
        reason="needs root, and a python another uid may run, to connect as another uid",
    )
    async def test_other_uid_is_refused(self, serve: Any, short_tmp: Path) -> None:
        """A process of another uid (the socket opened to it on purpose) gets 403, no change."""
        served = await serve(f"unix:{short_tmp}/api.sock", "dev-unix")
        os.chmod(short_tmp, 0o755)
        os.chmod(served.path, 0o666)
        script = (
            "import socket,sys;s=socket.socket(socket.AF_UNIX);s.connect(sys.argv[1]);"
            "s.sendall(b'POST /v1/restart HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 0\\r\\n"
            "Connection: close\\r\\n\\r\\n');d=b''\n"
            "while (c:=s.recv(4096)): d+=c\n"
            "print(d.split(b' ')[1].decode())"
        )
        result = await trio.to_thread.run_sync(
            functools.partial(
                subprocess.run,
                [PLAIN_PYTHON, "-c", script, served.path],
                capture_output=True,
                text=True,
                timeout=10,
                user=65534,
            )
        )
        assert result.stdout.strip() == "403", result.stderr
        assert served.rig.fake.restarts == 0


def _self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.mark.skipif(not any(
    os.access(os.path.join(p, "openssl"), os.X_OK) for p in os.environ.get("PATH", "").split(":")
), reason="needs the openssl command")  # fmt: skip
class TestTls:
    async def test_https_with_a_token(self, serve: Any, tmp_path: Path) -> None:
        """TLS on TCP: a client trusting the certificate gets answers; ALPN is http/1.1."""
        cert, key = _self_signed(tmp_path)
        served = await serve("127.0.0.1:0", tls_cert=str(cert), tls_key=str(key))
        context = ssl.create_default_context(cafile=str(cert))
        headers = {"authorization": f"Bearer {OPERATOR_TOKEN}"}
        async with httpx.AsyncClient(
            base_url=f"https://127.0.0.1:{served.port}", verify=context, headers=headers
        ) as client:
            assert (await client.get("/v1/status")).status_code == 200
            assert (await client.get("/healthz")).json()["alive"] is True
        stream = await trio.open_ssl_over_tcp_stream(
            "127.0.0.1", served.port, ssl_context=_alpn(context), https_compatible=True
        )
        await stream.do_handshake()
        assert stream.selected_alpn_protocol() == "http/1.1"
        await stream.aclose()

    async def test_plain_http_and_garbage_on_the_tls_port(self, serve: Any, tmp_path: Path) -> None:
        """Plain HTTP, random bytes and silence on the TLS port are closed, never an error."""
        cert, key = _self_signed(tmp_path)
        served = await serve(
            "127.0.0.1:0", tls_cert=str(cert), tls_key=str(key), header_timeout=0.5
        )
        for payload in (HEALTHZ, os.urandom(300), b""):
            stream = await served.connect()
            if payload:
                await stream.send_all(payload)
            await read_all(stream)
            await stream.aclose()
        assert served.stats.errors == 0
        # The silent one; random bytes may also look like the start of a TLS record.
        assert 1 <= served.stats.header_timeouts <= 2

    async def test_bad_files_are_one_line(self, tmp_path: Path) -> None:
        """A missing key, or a key that is not PEM, is an ApiListenError naming both files."""
        cert, _key = _self_signed(tmp_path)
        rig = make_rig(tmp_path, "dev-tcp")
        bad = tmp_path / "bad.pem"
        bad.write_text("not a key")
        for api in (
            ApiConfig(tls_cert=str(cert), tls_key=str(tmp_path / "missing.pem")),
            ApiConfig(tls_cert=str(cert), tls_key=str(bad)),
        ):
            with pytest.raises(ApiListenError, match="cannot use tls_cert") as info:
                await serve_api(rig.app, "127.0.0.1:0", api=api)
            assert "\n" not in str(info.value)


def _alpn(context: ssl.SSLContext) -> ssl.SSLContext:
    context.set_alpn_protocols(["http/1.1"])
    return context


class TestPlaintextTokens:
    async def test_non_loopback_without_tls_is_refused(self, tmp_path: Path) -> None:
        """0.0.0.0 without TLS: refused at start, one line naming both ways out."""
        rig = make_rig(tmp_path, "dev-tcp")
        with pytest.raises(ApiListenError) as info:
            await serve_api(rig.app, "0.0.0.0:0")
        message = str(info.value)
        assert "tls_cert" in message
        assert "allow_plaintext_tokens" in message
        assert "\n" not in message

    async def test_allowed_explicitly(self, serve: Any) -> None:
        """allow_plaintext_tokens = true serves plain HTTP on a non-loopback address."""
        served = await serve("0.0.0.0:0", allow_plaintext_tokens=True)
        served.host = "127.0.0.1"
        assert await healthz(served) == 200


class TestGarbage:
    async def test_closed_connections_leave_no_cycles(self, serve: Any) -> None:
        """Served, timed-out and evicted connections are freed by reference counting alone.

        Each used to leave its connection and protocol in a reference cycle
        for the garbage collector, whose pauses then grew with the churn an
        attacker controls (bench/held_connections.py).
        """
        served = await serve(max_connections=5, header_timeout=0.2)
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for _ in range(20):
                assert await healthz(served) == 200
            idle = [await served.connect() for _ in range(20)]
            await wait_until(lambda: served.stats.open == 0)
            for stream in idle:
                await stream.aclose()
            gc.collect()
            leaked = [
                o
                for o in gc.garbage
                if type(o).__module__.startswith(("supervisor", "hypercorn", "h11"))
            ]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
        assert served.stats.evicted + served.stats.header_timeouts == 20
        assert leaked == []


class TestGracefulStop:
    async def test_trigger_answers_in_flight_and_closes_idle(self, tmp_path: Path) -> None:
        """After the trigger: the request in flight is answered, idle ones close, no new ones."""
        rig = make_rig(tmp_path, "dev-tcp")
        rig.fake.hang = True
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            shown = await nursery.start(
                functools.partial(serve_api, rig.app, "127.0.0.1:0", shutdown_trigger=stop.wait)
            )
            port = int(shown.rpartition(":")[2])
            idle = await trio.open_tcp_stream("127.0.0.1", port)
            busy = await trio.open_tcp_stream("127.0.0.1", port)
            await busy.send_all(
                b"POST /v1/shutdown HTTP/1.1\r\nHost: sv\r\nContent-Length: 2\r\n"
                b"Authorization: Bearer " + OPERATOR_TOKEN.encode() + b"\r\n\r\n{}"
            )
            await wait_until(lambda: any(c[0] == "shutdown" for c in rig.fake.calls))
            stop.set()
            assert await read_all(idle, limit=2) == b""
            with pytest.raises(OSError, match=r"failed|refused"):
                await trio.open_tcp_stream("127.0.0.1", port)
            rig.fake.unhang.set()
            assert (await read_all(busy, limit=2)).startswith(b"HTTP/1.1 200 ")
            await idle.aclose()
            await busy.aclose()

    async def test_trigger_while_accept_is_paused_closes_the_newcomer(self, tmp_path: Path) -> None:
        """Every slot busy, one newcomer held by the paused accept loop: the stop closes it."""
        rig = make_rig(tmp_path, "dev-tcp")
        rig.fake.hang = True
        stop = trio.Event()
        api = ApiConfig(max_connections=1)
        async with trio.open_nursery() as nursery:
            shown = await nursery.start(
                functools.partial(
                    serve_api, rig.app, "127.0.0.1:0", api=api, shutdown_trigger=stop.wait
                )
            )
            port = int(shown.rpartition(":")[2])
            busy = await trio.open_tcp_stream("127.0.0.1", port)
            await busy.send_all(
                b"POST /v1/shutdown HTTP/1.1\r\nHost: sv\r\nContent-Length: 2\r\n"
                b"Authorization: Bearer " + OPERATOR_TOKEN.encode() + b"\r\n\r\n{}"
            )
            await wait_until(lambda: any(c[0] == "shutdown" for c in rig.fake.calls))
            newcomer = await trio.open_tcp_stream("127.0.0.1", port)
            await newcomer.send_all(b"GET /healthz HTTP/1.1\r\nHost: sv\r\n\r\n")
            await wait_until(lambda: rig.app.stats.accept_pauses == 1)
            stop.set()
            rig.fake.unhang.set()
            assert (await read_all(busy, limit=2)).startswith(b"HTTP/1.1 200 ")
            assert await read_all(newcomer, limit=2) == b""
            await busy.aclose()
            await newcomer.aclose()
        assert rig.app.stats.accepted == 1
        assert rig.app.stats.errors == 0
