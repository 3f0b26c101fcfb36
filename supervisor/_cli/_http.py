"""One HTTP/1.1 exchange with a supervisor's API (Unix socket or TCP), with the standard library.

The client commands once used httpx: importing it (and httpcore, which
imports trio) took about 100 ms of every command's start, a third of the
0.3 s a client command may take (CONTRACT section 8). Each command sends
one request and reads one JSON answer, which ``http.client`` does in a few
milliseconds of import. Imported by :mod:`supervisor._cli._client` when a
command sends its request, so ``--help`` loads none of it.
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Mapping

from .._address import ListenAddress

__all__ = ["HTTPException", "NotConnected", "exchange"]

HTTPException = http.client.HTTPException


class NotConnected(Exception):
    """Nothing accepted the connection; the OSError that said why is the ``__cause__``."""


class _UnixConnection(http.client.HTTPConnection):
    """An HTTP connection over a Unix socket (``Host: supervisor``)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("supervisor", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        """Connect to the socket; on failure the socket is closed, not left to the collector."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def connection(address: ListenAddress, timeout: float) -> http.client.HTTPConnection:
    """A connection (not yet connected) to ``address``."""
    if address.path is not None:
        return _UnixConnection(address.path, timeout)
    return http.client.HTTPConnection(address.host or "127.0.0.1", address.port, timeout=timeout)


def exchange(
    address: ListenAddress,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    payload: bytes | None,
    timeout: float,
) -> tuple[int, bytes]:
    """Send one request and return the status and the body.

    Raises:
        NotConnected: the connection was not accepted (from its OSError).
        TimeoutError: no answer within ``timeout`` seconds.
        OSError, HTTPException: the connection broke mid-exchange.
    """
    conn = connection(address, timeout)
    try:
        try:
            conn.connect()
        except OSError as exc:
            raise NotConnected from exc
        conn.request(method, url, body=payload, headers=dict(headers))
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()
