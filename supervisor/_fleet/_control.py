"""The control plane's side: read the registry, issue commands, read the audit stream.

What ``supervisor fleet`` does, straight against Redis (no member has to be
reachable): :meth:`FleetControl.members` lists live members (and those that
died without leaving), :meth:`FleetControl.issue` sends a command as one
atomic script (a generation, the durable flag, the audit stream entry, the
broadcast), :meth:`FleetControl.audit` reads the stream back. Records read
from Redis are checked (:func:`._protocol.parse_record`); a malformed one is
shown as such, never trusted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs

from .._core._config_fleet import NAME_PATTERN
from ._protocol import (
    AUDIT_MAXLEN,
    BROADCAST_SCRIPT,
    BadMessage,
    Command,
    Keys,
    parse_command,
    parse_record,
)
from ._redis import open_client

if TYPE_CHECKING:
    import coredis

__all__ = ["FleetControl", "member_rows"]

#: Members listed at most (the registry is read in one round trip).
MAX_MEMBERS = 10_000


@attrs.define(eq=False)
class FleetControl:
    """One connection's worth of fleet operations (``async with`` it)."""

    url: str
    namespace: str
    timeout: float = 2.0
    _client: coredis.Redis[str] | None = attrs.field(default=None, init=False)

    @property
    def keys(self) -> Keys:
        """The namespace's key names."""
        return Keys(self.namespace)

    async def __aenter__(self) -> FleetControl:
        self._client = open_client(self.url, timeout=self.timeout)
        await self._client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.__aexit__(None, None, None)

    @property
    def client(self) -> coredis.Redis[str]:
        """The open client.

        Raises:
            RuntimeError: outside ``async with``.
        """
        if self._client is None:
            raise RuntimeError("FleetControl is not open: use `async with`")
        return self._client

    async def members(self, *, now: float | None = None) -> dict[str, Any]:
        """``{"members": [...live records...], "gone": [...], "flags": {...}, "generation": N}``.

        ``gone``: ids that heartbeated within the last day but whose record has
        expired (they stopped without leaving: kill -9, a lost host).
        """
        client, keys = self.client, self.keys
        now = time.time() if now is None else now
        listed = await client.zrange(keys.members, 0, MAX_MEMBERS - 1, withscores=True)
        gone: list[dict[str, Any]] = []
        scored = []
        for entry in listed:
            if NAME_PATTERN.fullmatch(str(entry.member)):
                scored.append(entry)
            else:  # written by someone else: shown (cut short), never used as a key
                gone.append({"id": str(entry.member)[:60], "problem": "not a member id"})
        ids = [str(entry.member) for entry in scored]
        texts = await client.mget([keys.member(i) for i in ids]) if ids else ()
        live: list[dict[str, Any]] = []
        for entry, member_id, text in zip(scored, ids, texts, strict=True):
            if text is None:
                gone.append({"id": member_id, "last_heartbeat": float(entry.score)})
                continue
            try:
                record = parse_record(text)
            except BadMessage as exc:
                gone.append({"id": member_id, "problem": f"unreadable record: {exc}"})
                continue
            record["age"] = max(0.0, now - record["heartbeat"])
            live.append(record)
        live.sort(key=lambda r: r["id"])
        flags = {}
        for kind, text in zip(
            ("emergency", "phase"),
            await client.mget([keys.flag("emergency"), keys.flag("phase")]),
            strict=True,
        ):
            flags[kind] = _flag(text)
        generation = await client.get(keys.generation)
        return {
            "namespace": self.namespace,
            "members": live,
            "gone": gone,
            "flags": flags,
            "generation": int(generation) if generation and generation.isdigit() else 0,
        }

    async def issue(
        self,
        action: str,
        *,
        reason: str,
        origin: str,
        phase: str | None = None,
        force: bool = False,
    ) -> tuple[int, int]:
        """Issue a command to every member: (its generation, members subscribed now).

        ``clear`` removes the durable emergency flag (members already in an
        emergency stay there: a restart of each is the operator's call).
        """
        command = Command(
            generation=1,  # replaced by the script's INCR
            action=action,
            reason=reason,
            origin=origin,
            time=time.time(),
            phase=phase,
            force=force,
        )
        parse_command(json.dumps(command.as_dict()))  # the same check every member makes
        body = command.as_dict()
        del body["generation"]
        keys = self.keys
        result = await self.client.eval(
            BROADCAST_SCRIPT,
            keys=[keys.generation, keys.flag(command.flag), keys.audit],
            args=[
                keys.channel,
                json.dumps(body),
                "del" if action == "clear" else "set",
                AUDIT_MAXLEN,
            ],
        )
        assert isinstance(result, list | tuple)
        generation, receivers = result
        return int(generation), int(receivers)

    async def audit(self, count: int = 50) -> list[dict[str, Any]]:
        """The newest ``count`` audit stream entries, newest first."""
        entries = await self.client.xrevrange(self.keys.audit, count=count)
        out = []
        for entry in entries:
            fields = dict(entry.field_values)
            body = fields.get("command") or fields.get("ack") or "{}"
            try:
                data = json.loads(body)
            except ValueError:
                data = {"problem": "unreadable entry"}
            kind, member = fields.get("kind"), fields.get("member")
            out.append({"id": entry.identifier, "kind": kind, "member": member, **data})
        return out


def _flag(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        return parse_command(text).as_dict()
    except BadMessage as exc:
        return {"problem": f"unreadable flag: {exc}"}


def _cell(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def member_rows(members: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Table rows for ``fleet status``: id, host, phase, rate, p99, players, errors, api, age."""
    return [
        [
            str(m["id"]),
            str(m["host"]),
            str(m["phase"]),
            f"{_cell(m['measured_tick_rate'], '.1f')}/{m['tick_rate']:g}",
            _cell(m["lateness_p99_ms"], ".2f"),
            _cell(m["players"], ".0f"),
            _cell(m["errors"], ".0f"),
            str(m["api"] or "-"),
            f"{m['age']:.1f}s",
        ]
        for m in members
    ]
