"""Durability, end to end: ``kill -9`` a running world and check no acknowledgement was a lie.

The rule: a purchase is acknowledged to its player only once it is durable,
so whenever the process dies, every acknowledged purchase is in the database
and every balance still equals the sum of its ledger.

Each run starts ``supervisor run`` (the console script of this virtualenv) on
the six systems of the demo world at 200 Hz, waits until purchases are being
acknowledged, lets it run a random 0.3-1.5 s more, and SIGKILLs it. The
database is checked right away, then ``supervisor run --resume --ticks 5``
must reconcile and stop cleanly, and the database is checked again. Runs
follow each other in the same state folder (the next run resumes from the
wreck of the last), in four independent chains at once: most of a run's time is spent
starting Python, and that overlaps.

The acknowledgement a player's client would receive is observable as the
datastore's ack log: one line per purchase, appended only after its commit.
This test checks the database against that log with its own SQL, not with
the code under test.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import pytest

from systems._datastore_acks import CHUNK, compare_acks, comparing

pytestmark = pytest.mark.e2e

SUPERVISOR = Path(sys.executable).parent / "supervisor"
#: Kills in all; they run in ``CHAINS`` chains side by side.
RUNS = 20
CHAINS = 4
TICK_RATE = 200
#: How long a run ticks before it is killed, in seconds.
RUN_SECONDS = (0.3, 1.5)
#: Upper bound for a run to start ticking, or for a resume to finish.
TIMEOUT = 30.0
SEED = 20_240_611

CONFIG = """\
[supervisor]
tick_rate = {rate}
state_dir = "state"
snapshot_interval = 0.25

[systems]
enabled = ["players", "economy", "tycoon", "datastore", "leaderboard", "security"]

[systems.players]
count = 200
churn = 0.5
seed = {seed}

[systems.economy]
payday = 50

[systems.tycoon]
seed = {seed}
buy_rate = 0.5
cheat_rate = 0.02

[systems.datastore]
{datastore}

[systems.leaderboard]

[systems.security]

[features]
api = false
optimizer = false
precise_timing = false   # no spinning: four worlds share two cores

[logging]
format = "json"
"""


@attrs.frozen
class Ack:
    """One line of the ack log: what the player was told."""

    id: int
    player: int
    amount: int
    tick: int
    item: str


def read_acks(path: Path) -> list[Ack]:
    """The complete lines of the ack log (a killed writer may leave a partial last line)."""
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")[:-1]  # whatever follows the last newline is incomplete
    acks = []
    for line in lines:
        pid, player, amount, tick, item = line.split(" ")
        acks.append(Ack(int(pid), int(player), int(amount), int(tick), "" if item == "-" else item))
    return acks


#: ``sql -> rows``: one query against the world's database (SQLite or PostgreSQL).
Query = Callable[[str], Iterable[tuple[Any, ...]]]


def audit(db: Path, acks: list[Ack]) -> list[str]:
    """Every way the SQLite database contradicts the acknowledgements or its own ledger."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return audit_query(conn.execute, acks)


def audit_query(query: Query, acks: list[Ack]) -> list[str]:
    """:func:`audit` on any database: the same SQL runs on SQLite and PostgreSQL."""
    problems: list[str] = []
    purchases = {
        row[0]: row[1:] for row in query("SELECT id, player, amount, tick, item FROM purchases")
    }
    problems.extend(
        f"acknowledged {ack} but the database has {purchases.get(ack.id)}"
        for ack in acks
        if purchases.get(ack.id) != (ack.player, ack.amount, ack.tick, ack.item)
    )
    ids = [a.id for a in acks]
    if len(ids) != len(set(ids)):
        problems.append("a purchase was acknowledged twice")
    ledger: dict[Any, Any] = dict(query("SELECT player, SUM(amount) FROM ledger GROUP BY player"))
    for pid, balance in query("SELECT id, balance FROM players"):
        if balance != ledger.get(pid, 0):
            problems.append(f"player {pid}: balance {balance} != ledger {ledger.get(pid, 0)}")
        if balance < 0:
            problems.append(f"player {pid}: negative balance {balance}")
    debits = {
        ref: (player, -amount)
        for ref, player, amount in query(
            "SELECT purchase, player, amount FROM ledger WHERE kind = 'purchase'"
        )
    }
    for pid, (player, amount, _, _) in purchases.items():
        if debits.get(pid) != (player, amount):
            problems.append(f"purchase {pid} has no matching ledger debit")
    if len(debits) != len(purchases):
        problems.append(f"{len(debits)} purchase debits for {len(purchases)} purchases")
    return problems


@attrs.frozen
class Backend:
    """Where a chain's world keeps its data: the ``[systems.datastore]`` lines, the check."""

    #: ``folder -> (the [systems.datastore] lines, the ack log)``.
    layout: Callable[[Path], tuple[str, Path]]
    #: ``(folder, acks) -> problems``.
    audit: Callable[[Path, list[Ack]], list[str]]


def _sqlite_layout(folder: Path) -> tuple[str, Path]:
    db = folder / "world.sqlite3"
    return f'path = "{db}"\nautosave = 0.5', Path(f"{db}.acks")


SQLITE = Backend(_sqlite_layout, lambda folder, acks: audit(folder / "world.sqlite3", acks))


def chain(folder: Path, runs: int, rng: random.Random, backend: Backend = SQLITE) -> list[int]:
    """``runs`` kill-and-resume rounds in ``folder``; the acks seen after each kill."""
    folder.mkdir()
    datastore, acks_path = backend.layout(folder)
    config = folder / "world.toml"
    config.write_text(CONFIG.format(rate=TICK_RATE, seed=rng.randrange(1000), datastore=datastore))
    base = [str(SUPERVISOR), "run", "--config", str(config), "--state-dir", str(folder / "state")]
    snapshots = folder / "state" / "snapshots"
    counts = []
    for i in range(runs):
        log = folder / f"run-{i}.log"
        before = acks_path.stat().st_size if acks_path.exists() else 0
        with log.open("wb") as out:
            proc = subprocess.Popen(
                base + (["--resume"] if i else []), stdout=out, stderr=out, cwd=folder
            )
            try:
                deadline = time.monotonic() + TIMEOUT
                # Ticking once purchases are acknowledged and a snapshot exists to
                # resume from (``run --resume`` without one refuses); then a random
                # tick later.
                while (
                    not acks_path.exists()
                    or acks_path.stat().st_size <= before
                    or not any(snapshots.glob("snapshot-*.msgpack"))
                ):
                    assert proc.poll() is None, f"run {i} exited early:\n{log.read_text()[-3000:]}"
                    assert time.monotonic() < deadline, f"run {i} never acknowledged a purchase"
                    time.sleep(0.02)
                time.sleep(rng.uniform(*RUN_SECONDS))
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        assert proc.returncode == -signal.SIGKILL
        assert '"system.error"' not in log.read_text(), f"run {i} logged errors"
        acks = read_acks(acks_path)
        assert backend.audit(folder, acks) == [], f"after kill {i} ({folder.name})"
        counts.append(len(acks))

        resume = subprocess.run(
            [*base, "--resume", "--ticks", "5"],
            capture_output=True,
            text=True,
            cwd=folder,
            timeout=TIMEOUT,
            check=False,
        )
        (folder / f"resume-{i}.log").write_text(resume.stderr)
        assert resume.returncode == 0, resume.stderr[-3000:]
        assert '"system.error"' not in resume.stderr, resume.stderr[-3000:]
        assert '"resume.done"' in resume.stderr
        # The datastore checked the database against every acknowledgement first.
        assert f'"acknowledged": {len(acks)}, ' in resume.stderr, resume.stderr[-3000:]
        after = read_acks(acks_path)
        assert after[: len(acks)] == acks  # the log only grows
        assert backend.audit(folder, after) == [], f"after resume {i} ({folder.name})"
    return counts


def test_every_acknowledged_purchase_survives_kill_9(tmp_path: Path) -> None:
    """20 SIGKILLs at random ticks: acked purchases all in the DB, every ledger exact."""
    rng = random.Random(SEED)
    seeds = [random.Random(rng.random()) for _ in range(CHAINS)]
    with ThreadPoolExecutor(CHAINS) as pool:
        futures = [
            pool.submit(chain, tmp_path / f"chain-{c}", RUNS // CHAINS, seeds[c])
            for c in range(CHAINS)
        ]
        results = [f.result() for f in futures]
    for counts in results:
        # Each run acknowledged something before it was killed: no run was vacuous.
        assert all(b > a for a, b in itertools.pairwise([0, *counts]))


def test_the_ack_check_runs_in_slices_of_a_chunk(tmp_path: Path) -> None:
    """On the loop thread (SQLite) the check lets the loop run after every CHUNK lines."""
    acks = tmp_path / "world.acks"
    lines = 2 * CHUNK + 1
    acks.write_text("".join(f"{i} 1 5 7 -\n" for i in range(1, lines + 1)))
    steps = comparing(acks, 0, lambda ids: {i: (1, 5, 7, "") for i in ids if i != 3}, 9)
    slices = 0
    with contextlib.suppress(StopIteration):
        while True:
            next(steps)
            slices += 1
    assert slices == 3  # 500 + 500 + 1
    check = compare_acks(acks, 0, lambda ids: {}, None)
    assert (check.acks, check.missing, check.first_missing, check.max_id) == (
        lines,
        lines,
        1,
        lines,
    )


def test_a_resume_at_20_000_players_starts_under_a_tight_watchdog(tmp_path: Path) -> None:
    """The start's long parts (ack check, account reload) never hold the loop for a step.

    At 100,000 players the reload alone held the loop thread ~1 s and the
    default watchdog (``kill_timeout`` 1 s) interrupted ``--resume``; here
    20,000 players and a watchdog at 0.3 s.
    """
    config = tmp_path / "world.toml"
    text = CONFIG.format(rate=30, seed=7, datastore="").replace("count = 200", "count = 20000")
    text = text.replace("snapshot_interval = 0.25", "snapshot_interval = 1.0")
    config.write_text(text)
    base = [str(SUPERVISOR), "run", "--config", str(config), "--state-dir", str(tmp_path / "s")]
    first = subprocess.run(
        [*base, "--ticks", "45"], capture_output=True, text=True, timeout=60, check=False
    )
    assert first.returncode == 0, first.stderr[-3000:]
    config.write_text(f"{text}\n[watchdog]\nhang_timeout = 0.3\nkill_timeout = 0.3\n")
    resumed = subprocess.run(
        [*base, "--resume", "--ticks", "3"], capture_output=True, text=True, timeout=60, check=False
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert '"datastore.verified"' in resumed.stderr
    assert "StepInterrupted" not in resumed.stderr
