"""Where a supervisor's API listens: the part of the API contract a client needs.

Kept apart from :mod:`supervisor._server._serve` (hypercorn, trio) so that the client
commands (``supervisor status`` and the rest) and ``supervisor --help`` import
none of the server: a command that only sends one request starts fast.
"""

from __future__ import annotations

from typing import Final

import attrs

__all__ = ["MAX_ERRORS_LIMIT", "MAX_REASON", "ListenAddress", "parse_listen"]

#: Longest ``reason`` accepted for shutdown and phase changes.
MAX_REASON: Final = 500
#: ``/v1/errors?limit=`` upper bound.
MAX_ERRORS_LIMIT: Final = 1000


@attrs.frozen(kw_only=True)
class ListenAddress:
    """Where the API listens (or where a client connects): a Unix socket or TCP."""

    path: str | None = None  # set for a Unix socket
    host: str | None = None  # set for TCP
    port: int = 0

    @property
    def is_tcp(self) -> bool:
        """True for a TCP address: tokens are then always required."""
        return self.path is None

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_listen(text: str) -> ListenAddress:
    """Parse ``unix:PATH``, ``HOST:PORT`` or ``http://HOST:PORT`` (IPv6 in brackets).

    Raises:
        ValueError: the text is none of those; the message says which part is wrong.
    """
    text = text.strip()
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if path.startswith("//"):  # unix:///abs/path, as some tools write it
            path = path[2:]
        if not path:
            raise ValueError(f"{text!r}: expected unix:PATH with a path")
        return ListenAddress(path=path)
    rest = text.removeprefix("http://").rstrip("/")
    if "://" in rest or "/" in rest:
        raise ValueError(f"{text!r}: expected unix:PATH, HOST:PORT or http://HOST:PORT")
    if rest.startswith("["):
        host, sep, port_text = rest[1:].partition("]:")
    else:
        host, sep, port_text = rest.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r}: expected unix:PATH, HOST:PORT or http://HOST:PORT")
    if not port_text.isascii() or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"{text!r}: the port must be a number from 0 to 65535")
    return ListenAddress(host=host, port=int(port_text))
