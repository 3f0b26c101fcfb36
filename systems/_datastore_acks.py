"""The ack log, read back: what every datastore backend checks its database against at start.

The ack log holds one line per acknowledged purchase, ``id player amount
tick item`` (item ``-`` for none), appended only after the purchase's
COMMIT. At start a datastore continuing a world compares it with its
database (``systems/datastore.py``, "Cross-check at start"); the SQLite and
the PostgreSQL backends differ only in how they look purchases up, so the
comparison lives here once, with the lookup passed in.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs

from .economy import Batch

__all__ = [
    "AckCheck",
    "Lookup",
    "Steps",
    "ack_chunks",
    "ack_lines",
    "compare_acks",
    "comparing",
    "exhaust",
]

#: Lines compared at a time (and ids in one ``IN (...)``): bounded memory for any log.
CHUNK = 500

#: One ack line: ``(id, player, amount, tick, item)``.
AckRow = tuple[int, int, int, int, str]

#: ``ids -> {id: (player, amount, tick, item)}`` for the purchases the database holds.
Lookup = Callable[[Sequence[int]], dict[int, tuple[Any, ...]]]

T = TypeVar("T")
#: Work done in slices: it yields between two (a chunk each), returns its result.
Steps = Generator[None, None, T]


def running(steps: Steps[T], result: list[T]) -> Iterator[None]:
    """Iterate to run ``steps``, one slice an iteration; their result is appended to ``result``."""
    result.append((yield from steps))


def exhaust(steps: Steps[T]) -> T:
    """Run ``steps`` to the end in one go (a thread's way); their result."""
    result: list[T] = []
    for _ in running(steps, result):
        pass
    return result[0]


@attrs.frozen
class AckCheck:
    """What :func:`compare_acks` found, with the database's last committed tick."""

    acks: int
    missing: int
    first_missing: int | None
    max_id: int
    db_tick: int | None


def compare_acks(
    acks: Path | None, accepted: int, lookup: Lookup | None, db_tick: int | None
) -> AckCheck:
    """:func:`comparing` in one go."""
    return exhaust(comparing(acks, accepted, lookup, db_tick))


def comparing(
    acks: Path | None, accepted: int, lookup: Lookup | None, db_tick: int | None
) -> Steps[AckCheck]:
    """Compare the ack log with the database, ``CHUNK`` lines at a time, yielding after each.

    A caller on the loop thread (SQLite) lets the loop run between two
    chunks: 100,000 acknowledgements take most of a second to check.

    Args:
        acks: the ack log (None or missing: no acknowledgements).
        accepted: the first ``accepted`` lines were lost once and the loss
            accepted (``accept_data_loss``): not checked again.
        lookup: the purchases the database holds; None: it holds none.
        db_tick: the database's last committed tick, passed through.
    """
    count = missing = max_id = 0
    first: int | None = None
    for chunk in ack_chunks(acks):
        count += len(chunk)
        max_id = max(max_id, *(a[0] for a in chunk))
        checked = chunk[max(accepted - count + len(chunk), 0) :]
        if not checked:
            continue
        stored = lookup([a[0] for a in checked]) if lookup is not None else {}
        for ack in checked:
            if stored.get(ack[0]) != ack[1:]:
                missing += 1
                first = ack[0] if first is None else first
        yield
    return AckCheck(count, missing, first, max_id, db_tick)


def ack_chunks(path: Path | None) -> Iterator[list[AckRow]]:
    """The ack log's lines as ``(id, player, amount, tick, item)``, ``CHUNK`` at a time.

    A last line without its newline (a write cut by a full disk) is not an
    acknowledgement: the reply is only sent once the whole line is written.
    """
    if path is None or not path.exists():
        return
    chunk: list[AckRow] = []
    with path.open("rb") as lines:
        for raw in lines:
            if not raw.endswith(b"\n"):
                break
            pid, player, amount, tick, item = raw.decode().split(" ")
            item = item.rstrip("\n")
            chunk.append(
                (int(pid), int(player), int(amount), int(tick), "" if item == "-" else item)
            )
            if len(chunk) == CHUNK:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def ack_lines(batch: Batch) -> bytes:
    """The ack log lines of ``batch``'s purchases (one ``os.write``: whole lines survive a kill)."""
    return "".join(
        f"{p.id} {p.player} {p.amount} {p.tick} {p.item or '-'}\n" for p in batch.purchases
    ).encode()


def open_ack_log(path: Path) -> int:
    """Open the ack log for appending (O_APPEND: a killed process leaves whole lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
