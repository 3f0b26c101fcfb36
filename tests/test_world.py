"""The demo tycoon world: players, economy, tycoon, datastore, leaderboard, security.

Every test runs the systems under a real supervisor on a MockClock
(``supervisor.testing``), with the datastore on a SQLite file in ``tmp_path``.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
import structlog.testing
import trio
import trio.testing

from supervisor import Caller, Config, Context, StartupError, Supervisor
from supervisor.testing import FIXED_FACTS, make_supervisor, run_systems
from systems.datastore import Datastore, audit
from systems.economy import MAX_BALANCE, Economy, Purchase, Rejection, StoredAccount
from systems.leaderboard import Leaderboard
from systems.players import Players
from systems.security import Security
from systems.tycoon import Tycoon

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
#: The optimizer would throttle the leaderboard on a slow machine: keep runs identical.
QUIET: dict[str, Any] = {"features": {"optimizer": False, "watchdog": False}}
RATE = 30


def world(
    db: Path | None = None,
    *,
    count: int = 50,
    churn: float = 0.3,
    seed: int = 1,
    buy_rate: float = 0.5,
    cheat_rate: float = 0.0,
    **extra: Any,
) -> dict[str, Any]:
    """The six systems (the datastore only with ``db``), busy enough to exercise everything."""
    systems: dict[str, Any] = {
        "players": Players(count=count, churn=churn, seed=seed),
        "economy": Economy(payday=30),
        "tycoon": Tycoon(buy_rate=buy_rate, cheat_rate=cheat_rate),
        "leaderboard": Leaderboard(size=5, every=10),
        "security": Security(),
    }
    if db is not None:
        systems["datastore"] = Datastore(path=str(db), autosave=0)
    systems.update(extra)
    return systems


def run_world(systems: dict[str, Any], ticks: int) -> Supervisor:
    """Run ``systems`` for ``ticks`` ticks at 30 Hz on a MockClock; no errors allowed."""
    result = run_systems(named=systems, ticks=ticks, tick_rate=RATE, config=QUIET)
    assert result.errors == []
    return result.supervisor


def run_persisted(systems: dict[str, Any], ticks: int, state: Path, *, resume: bool) -> Supervisor:
    """Run with snapshots in ``state`` (a graceful stop writes one); optionally resume first."""
    sup = make_supervisor(systems, tick_rate=RATE, config=QUIET, state_dir=state)
    run = functools.partial(sup.run, ticks=ticks, resume=resume)
    trio.run(run, clock=trio.testing.MockClock(autojump_threshold=0))
    assert list(sup.errors.records) == []
    return sup


def query(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql, args).fetchall()


class Probe:
    """Calls ``action(ctx, economy)`` on tick ``at`` (before the datastore's commit)."""

    name = "probe"
    depends_on = ("economy",)

    def __init__(self, at: int, action: Callable[[Context, Economy], Any]) -> None:
        self.at = at
        self.action = action
        self.result: Any = None

    def tick(self, ctx: Context) -> None:
        if ctx.tick == self.at:
            self.result = self.action(ctx, ctx.system("economy"))


class Recorder:
    """Records the players' arrivals and departures, tick by tick."""

    name = "recorder"
    depends_on = ("players",)

    def __init__(self) -> None:
        self.events: list[tuple[int, tuple[int, ...], tuple[int, ...]]] = []

    def tick(self, ctx: Context) -> None:
        players = ctx.system("players")
        if players.events_tick == ctx.tick and (players.joined or players.left):
            self.events.append((ctx.tick, tuple(players.joined), tuple(players.left)))


def first_online(economy: Economy) -> int:
    return min(a.pid for a in economy.accounts.values() if a.online)


class TestPlayers:
    def history(self, seed: int) -> list[tuple[int, tuple[int, ...], tuple[int, ...]]]:
        recorder = Recorder()
        run_world({"players": Players(count=40, churn=0.5, seed=seed), "rec": recorder}, 300)
        return recorder.events

    def test_same_seed_same_history(self) -> None:
        """Joins and leaves are a function of the seed: equal for equal seeds, else different."""
        first = self.history(3)
        assert first == self.history(3)
        assert first != self.history(4)
        assert first[0] == (0, tuple(range(40)), ())  # the initial crowd arrives on tick 0
        assert len(first) > 20

    def test_population_hovers_and_is_published(self) -> None:
        """The crowd stays near ``count``; the ``players`` gauge is the online count."""
        sup = run_world({"players": Players(count=200, churn=0.2, seed=1)}, 900)
        players = sup.system("players")
        assert 150 <= len(players.online) <= 250
        assert players.joins - players.leaves == len(players.online)
        assert len(set(players.online)) == len(players.online)
        assert not set(players.online) & set(players.offline)
        assert sup.gauges["players"] == len(players.online)

    def test_nobody_leaves_and_joins_in_one_tick(self) -> None:
        """A leaver can return only on a later tick."""
        recorder = Recorder()
        run_world({"players": Players(count=30, churn=2.0, returning=1.0), "rec": recorder}, 200)
        assert all(not set(joined) & set(left) for _, joined, left in recorder.events)


class TestEconomy:
    def test_overdraft_overflow_and_invalid_amounts_are_rejected(self, tmp_path: Path) -> None:
        """Nothing is debited for a purchase the player cannot pay or an amount out of range."""

        def attempt(ctx: Context, economy: Economy) -> dict[str, Any]:
            pid = first_online(economy)
            before = economy.balance(pid)
            assert before is not None
            out: dict[str, Any] = {
                # (more than the balance plus the income the purchase settles first)
                "overdraft": economy.purchase(pid, before + 10**6, "dropper"),
                "overflow": economy.purchase(pid, MAX_BALANCE + 1),
                "zero": economy.purchase(pid, 0),
                "negative": economy.purchase(pid, -5),
                "fraction": economy.purchase(pid, 1.5),  # type: ignore[arg-type]
                "bool": economy.purchase(pid, True),
                "stranger": economy.purchase(10**9, 1),
                "credit_overflow": economy.credit(pid, MAX_BALANCE),
            }
            out["after"] = economy.balance(pid)
            out["before"] = before
            return out

        probe = Probe(5, attempt)
        systems = world(tmp_path / "w.db", churn=0.0, buy_rate=0.0, probe=probe)
        del systems["security"]  # the economy's own rules, without the guard in front
        sup = run_world(systems, 10)
        r = probe.result
        reasons = {k: v.reason for k, v in r.items() if isinstance(v, Rejection)}
        assert reasons == {
            "overdraft": "overdraft",
            "overflow": "overflow",
            "zero": "invalid_amount",
            "negative": "invalid_amount",
            "fraction": "invalid_amount",
            "bool": "invalid_amount",
            "stranger": "unknown_player",
        }
        assert r["credit_overflow"] is False
        assert r["after"] >= r["before"]  # nothing debited; accrued income may have been paid
        economy = sup.system("economy")
        assert economy.rejected["overflow"] == 2
        assert economy.purchases == 0
        assert query(tmp_path / "w.db", "SELECT COUNT(*) FROM ledger WHERE kind = 'purchase'") == [
            (0,)
        ]
        assert audit(tmp_path / "w.db") == []

    def test_purchase_acknowledged_only_after_the_commit(self, tmp_path: Path) -> None:
        """Pending within its tick; acknowledged after the tick's group commit, row in the DB."""
        db = tmp_path / "w.db"
        seen: dict[str, Any] = {}

        def on_ack(purchase: Purchase) -> None:
            # Another connection sees the row: the commit happened before the ack.
            seen["rows"] = query(
                db, "SELECT player, amount, item FROM purchases WHERE id = ?", purchase.id
            )
            seen["status"] = purchase.status

        def buy(ctx: Context, economy: Economy) -> Purchase | Rejection:
            bought = economy.purchase(first_online(economy), 300, "dropper", on_ack=on_ack)
            assert isinstance(bought, Purchase)
            seen["pending"] = (bought.status, bought in economy.pending, "rows" in seen)
            seen["in_db_before_commit"] = query(db, "SELECT COUNT(*) FROM purchases")[0][0]
            acks = Path(f"{db}.acks")
            seen["acked_before_commit"] = acks.exists() and acks.read_text() != ""
            return bought

        probe = Probe(5, buy)
        sup = run_world(world(db, churn=0.0, buy_rate=0.0, probe=probe), 10)
        bought = probe.result
        assert seen["pending"] == ("pending", True, False)
        assert seen["in_db_before_commit"] == 0
        assert seen["acked_before_commit"] is False
        assert seen["rows"] == [(bought.player, 300, "dropper")]
        assert seen["status"] == "acknowledged"
        assert bought.ack_tick == 5  # the same tick: the datastore commits at its end
        economy = sup.system("economy")
        assert list(economy.acknowledged) == [bought]
        assert economy.pending == []
        ack_line = (tmp_path / "w.db.acks").read_text().split()
        assert ack_line == [str(bought.id), str(bought.player), "300", "5", "dropper"]

    def test_without_a_store_nothing_is_acknowledged(self) -> None:
        """No datastore, no durability: purchases debit but stay pending."""
        sup = run_world(world(), 200)
        economy = sup.system("economy")
        assert economy.purchases > 0
        assert economy.acked == 0
        assert all(p.status == "pending" for p in economy.pending)

    def test_balances_equal_their_journal(self, tmp_path: Path) -> None:
        """In the DB and in memory: balance == grant + income - purchases, per player."""
        db = tmp_path / "w.db"
        sup = run_world(world(db, count=80, cheat_rate=0.05), 900)
        economy = sup.system("economy")
        assert economy.acked == economy.purchases > 50
        assert audit(db) == []
        sums = dict(query(db, "SELECT player, SUM(amount) FROM ledger GROUP BY player"))
        kinds = {k for (k,) in query(db, "SELECT DISTINCT kind FROM ledger")}
        assert kinds == {"grant", "income", "purchase"}
        for acct in economy.accounts.values():
            assert acct.balance == sums[acct.pid]
        stored = dict(query(db, "SELECT id, balance FROM players"))
        assert all(stored[a.pid] == a.balance for a in economy.accounts.values())
        # Leavers were saved, then forgotten: memory holds the online players only.
        assert set(economy.accounts) == set(sup.system("players").online)
        assert len(stored) > len(economy.accounts)

    def test_a_failed_commit_is_retried_and_acknowledged_late(self, tmp_path: Path) -> None:
        """A commit that fails acknowledges nothing; recovery retries the same batch next tick."""

        class Flaky(Datastore):
            fail_at = 5

            def _commit(self, batch: Any, tick: int) -> None:
                if tick == self.fail_at:
                    self.health_at_failure = self.health()
                    raise sqlite3.OperationalError("disk I/O error")
                super()._commit(batch, tick)

        db = tmp_path / "w.db"
        probe = Probe(5, lambda ctx, eco: eco.purchase(first_online(eco), 100, "dropper"))
        store = Flaky(path=str(db), autosave=0, name="datastore")
        systems = world(db, churn=0.0, buy_rate=0.0, probe=probe, datastore=store)
        result = run_systems(named=systems, ticks=10, tick_rate=RATE, config=QUIET)
        assert [(e.system, e.tick) for e in result.errors] == [("datastore", 5)]
        bought = probe.result
        assert bought.status == "acknowledged"
        assert bought.ack_tick == 6
        assert store.health() == "healthy"
        assert audit(db) == []


class TestTycoon:
    def test_plot_rules(self) -> None:
        """Droppers first, two per level, then the upgrade; income = droppers x (1 + level)."""
        t = Tycoon(
            dropper_price=100, upgrade_price=1000, dropper_income=2, max_droppers=4, max_level=1
        )
        assert t.next_step({}) == ("dropper", 100)
        assert t.next_step({"dropper": 1}) == ("dropper", 200)
        assert t.next_step({"dropper": 2}) == ("upgrade", 1000)
        assert t.next_step({"dropper": 2, "upgrade": 1}) == ("dropper", 300)
        assert t.next_step({"dropper": 4, "upgrade": 1}) is None
        assert t.plot_income({"dropper": 3, "upgrade": 1}) == 12

    def test_upgrades_are_bought_and_raise_income(self, tmp_path: Path) -> None:
        """Players buy through the economy; their income rate follows their plot."""
        sup = run_world(world(tmp_path / "w.db", churn=0.0, buy_rate=1.0), 900)
        economy, tycoon = sup.system("economy"), sup.system("tycoon")
        assert tycoon.bought > 0
        assert tycoon.bought == economy.purchases
        richest = max(economy.accounts.values(), key=lambda a: a.items.get("dropper", 0))
        assert richest.items["dropper"] >= 2
        assert richest.rate == economy.income + tycoon.plot_income(richest.items)
        items = query(tmp_path / "w.db", "SELECT item, COUNT(*) FROM purchases GROUP BY item")
        assert dict(items).keys() <= {"dropper", "upgrade"}


class TestLeaderboard:
    def test_top_players_by_earnings(self) -> None:
        """Best first, ties to the higher id; refreshed every ``every`` ticks."""
        sup = run_world(world(count=60, churn=0.1), 95)
        board, economy = sup.system("leaderboard"), sup.system("economy")
        assert board.refreshes == 10  # ticks 0, 10, ..., 90
        assert board.refreshed_tick == 90
        board.refresh(95)  # rank the state we can see now
        expected = sorted(
            ((a.pid, a.earnings) for a in economy.accounts.values() if a.online),
            key=lambda pe: (-pe[1], -pe[0]),
        )[:5]
        assert board.top == expected
        assert [e for _, e in board.top] == sorted((e for _, e in board.top), reverse=True)

    def test_recover_ranks_again(self) -> None:
        """After a failed refresh the board is emptied and ranked on the next tick."""

        class Broken(Leaderboard):
            def refresh(self, tick: int) -> None:
                if tick == 20:
                    raise RuntimeError("boom")
                super().refresh(tick)

        board = Broken(size=3, every=10, name="leaderboard")
        result = run_systems(named=world(leaderboard=board), ticks=25, tick_rate=RATE, config=QUIET)
        assert [(e.system, e.tick) for e in result.errors] == [("leaderboard", 20)]
        assert board.refreshed_tick == 21
        assert len(board.top) == 3


class TestSecurity:
    def test_rate_abuse_is_blocked_logged_and_never_acknowledged(self, tmp_path: Path) -> None:
        """A burst beyond ``burst`` is refused; only the allowed purchases are debited and acked."""

        def burst(ctx: Context, economy: Economy) -> list[Purchase | Rejection]:
            pid = first_online(economy)
            return [economy.purchase(pid, 10, "") for _ in range(8)]

        probe = Probe(5, burst)
        systems = world(tmp_path / "w.db", churn=0.0, buy_rate=0.0, probe=probe)
        with structlog.testing.capture_logs() as logs:
            sup = run_world(systems, 10)
        results = probe.result
        allowed = [r for r in results if isinstance(r, Purchase)]
        blocked = [r for r in results if isinstance(r, Rejection)]
        assert len(allowed) == 5
        assert {r.reason for r in blocked} == {"blocked:rate_limit"}
        assert len(blocked) == 3
        assert all(p.status == "acknowledged" for p in allowed)
        security = sup.system("security")
        assert security.violations == {"rate_limit": 3}
        assert security.offenders == {allowed[0].player: 3}
        violations = [e for e in logs if e["event"] == "security.violation"]
        assert len(violations) == 3
        assert violations[0]["kind"] == "rate_limit"
        assert violations[0]["system"] == "security"  # through ctx.log, bound to the system
        assert query(tmp_path / "w.db", "SELECT COUNT(*) FROM purchases") == [(5,)]

    def test_impossible_amounts_are_blocked(self) -> None:
        """Negative, fractional and absurd amounts are violations before the economy sees them."""

        def cheat(ctx: Context, economy: Economy) -> list[Purchase | Rejection]:
            pid = first_online(economy)
            return [
                economy.purchase(pid, amount)  # type: ignore[arg-type]
                for amount in (-1, 0, 2.5, 10**13, "100")
            ]

        probe = Probe(3, cheat)
        sup = run_world(world(buy_rate=0.0, probe=probe), 5)
        assert {r.reason for r in probe.result} == {"blocked:impossible_amount"}
        assert sup.system("security").violations == {"impossible_amount": 5}
        assert sup.system("economy").purchases == 0

    def test_the_bucket_refills_in_simulated_time(self) -> None:
        """``max_rate`` purchases a second come back: two a second at the defaults."""

        def drain(ctx: Context, economy: Economy) -> int:
            pid = first_online(economy)
            return sum(isinstance(economy.purchase(pid, 1), Purchase) for _ in range(10))

        first, later = Probe(2, drain), Probe(2 + RATE, drain)
        later.name = "later"
        run_world(world(buy_rate=0.0, churn=0.0, probe=first, later=later), RATE + 5)
        assert (first.result, later.result) == (5, 2)

    def test_impossible_player_ids_are_blocked_and_not_kept(self) -> None:
        """An id no player can have (not an int64) is a violation counted by kind only."""

        def strangers(ctx: Context, economy: Economy) -> list[Purchase | Rejection]:
            ids = (2**63, -(2**63) - 1, "7", 1.0, None)
            return [economy.purchase(pid, 10) for pid in ids]  # type: ignore[arg-type]

        probe = Probe(3, strangers)
        sup = run_world(world(buy_rate=0.0, probe=probe), 5)
        assert {r.reason for r in probe.result} == {"blocked:impossible_player"}
        security = sup.system("security")
        assert security.violations == {"impossible_player": 5}
        assert security.offenders == {}
        assert security._tokens == {}
        security.snapshot()  # nothing unpackable was kept

    def test_buckets_are_forgotten_oldest_first_once_refilled(self) -> None:
        """A bucket counted more than ``burst / max_rate`` seconds ago is dropped; same verdicts.

        Defaults: 5 / 2 = 2.5 s, 75 ticks at 30 Hz. Forgetting is invisible to
        the rule (a refilled bucket is a new one): the late burst gets 5 again.
        """

        def drain(ctx: Context, economy: Economy) -> int:
            pid = first_online(economy)
            return sum(isinstance(economy.purchase(pid, 1), Purchase) for _ in range(10))

        def kept(ctx: Context, economy: Economy) -> bool:
            return first_online(economy) in security._tokens

        security = Security()
        probes = {
            "probe": Probe(2, drain),
            "before": Probe(2 + 70, kept),
            "after": Probe(2 + 80, kept),
            "again": Probe(2 + 85, drain),
        }
        for name, probe in probes.items():
            probe.name = name
        systems = world(buy_rate=0.0, churn=0.0, security=security)
        run_world({**systems, **probes}, 90)
        assert [p.result for p in probes.values()] == [5, True, False, 5]

    def test_state_is_numbers_in_one_order_and_packs_as_bytes(self) -> None:
        """No container per bucket (the collector does not track the dicts); exact round trip.

        A snapshot from before the bytes (lists, in any order) restores to the
        same buckets, put in order.
        """
        sup = run_world(world(count=200, cheat_rate=0.3, buy_rate=3.0), 60)
        security = sup.system("security")
        assert len(security._tokens) > 20
        assert security.offenders
        assert list(security._tokens) == list(security._counted)
        assert not gc.is_tracked(security._tokens)
        assert not gc.is_tracked(security._counted)
        state = security.snapshot()
        assert isinstance(state["bucket_players"], bytes)
        copy = Security()
        copy.restore(msgpack.unpackb(msgpack.packb(state), raw=False))
        assert copy.snapshot() == state
        assert list(copy._counted) == list(security._counted)
        old = {
            **state,
            "offenders": [[p, n] for p, n in security.offenders.items()],
            "buckets": [[p, t, security._counted[p]] for p, t in security._tokens.items()][::-1],
            "recent": list(security._recent),
            "next_sweep": 0.0,
        }
        old_copy = Security()
        old_copy.restore(old)
        assert (old_copy._tokens, old_copy._counted) == (security._tokens, security._counted)
        times = list(old_copy._counted.values())
        assert times == sorted(times)  # put in order: oldest count first
        assert list(old_copy._tokens) == list(old_copy._counted)
        assert old_copy.offenders == security.offenders
        assert list(old_copy._recent) == list(security._recent)
        damaged: list[tuple[dict[str, Any], str]] = [
            ({"bucket_tokens": state["bucket_tokens"][:8]}, "shorter"),
            ({"bucket_players": b"\x00" * 7}, "8-byte 'q'"),
            ({"recent": "not bytes"}, "8-byte 'd'"),
            # An old snapshot with an id no player has.
            ({"buckets": [[2**63, 1.0, 0.0]], "offenders": []}, "not an int64"),
        ]
        for change, why in damaged:
            with pytest.raises(ValueError, match=why):
                copy.restore({**state, "violations": {"x": 1}, "checked": 0, **change})
            assert copy.snapshot() == state, why  # nothing changed

    def test_health_degrades_on_an_attack(self) -> None:
        """Violations reaching ``alarm`` within ``window`` make security degraded."""
        security = Security(alarm=20, window=5.0)
        sup = run_world(world(cheat_rate=1.0, buy_rate=2.0, security=security), 60)
        assert security.total >= 20
        assert security.health() == "degraded"
        assert sup.system("tycoon").cheats > 0


class TestSnapshot:
    def test_resume_continues_exactly_without_a_store(self, tmp_path: Path) -> None:
        """Snapshot at tick 60, restored into fresh instances: the world of 120 straight ticks."""
        straight = run_persisted(world(cheat_rate=0.05), 120, tmp_path / "a", resume=False)
        run_persisted(world(cheat_rate=0.05), 60, tmp_path / "b", resume=False)
        resumed = run_persisted(world(cheat_rate=0.05), 60, tmp_path / "b", resume=True)
        assert resumed.tick == straight.tick == 120
        for name in ("players", "economy", "tycoon", "leaderboard", "security"):
            assert resumed.system(name).snapshot() == straight.system(name).snapshot(), name

    def test_resume_continues_exactly_with_the_datastore(self, tmp_path: Path) -> None:
        """With the database as the truth: same snapshots, same rows, same acknowledgements."""
        dbs = {"a": tmp_path / "a.db", "b": tmp_path / "b.db"}
        straight = run_persisted(
            world(dbs["a"], cheat_rate=0.05), 150, tmp_path / "a", resume=False
        )
        run_persisted(world(dbs["b"], cheat_rate=0.05), 70, tmp_path / "b", resume=False)
        resumed = run_persisted(world(dbs["b"], cheat_rate=0.05), 80, tmp_path / "b", resume=True)
        assert resumed.tick == 150
        for name in ("players", "economy", "tycoon", "leaderboard", "security"):
            assert resumed.system(name).snapshot() == straight.system(name).snapshot(), name
        for table in ("players", "purchases", "ledger"):
            sql = f"SELECT * FROM {table} ORDER BY 1"
            assert query(dbs["a"], sql) == query(dbs["b"], sql), table
        assert Path(f"{dbs['a']}.acks").read_text() == Path(f"{dbs['b']}.acks").read_text()
        assert audit(dbs["b"]) == []

    def test_resume_from_a_snapshot_older_than_the_database(self, tmp_path: Path) -> None:
        """As after kill -9: the database wins; acknowledged purchases stay; the ledger holds."""
        db, state = tmp_path / "w.db", tmp_path / "state"
        run_persisted(world(db), 60, state, resume=False)
        old = tmp_path / "old"
        shutil.copytree(state / "snapshots", old)
        run_persisted(world(db), 90, state, resume=True)  # the database moves on to tick 150
        acked = query(db, "SELECT id, player, amount FROM purchases")
        balances = dict(query(db, "SELECT id, balance FROM players"))
        shutil.rmtree(state / "snapshots")
        shutil.copytree(old, state / "snapshots")  # only the tick-60 snapshot is left

        sup = run_persisted(world(db), 30, state, resume=True)
        assert sup.tick == 90
        assert set(acked) <= set(query(db, "SELECT id, player, amount FROM purchases"))
        assert audit(db) == []
        economy = sup.system("economy")
        (last_purchase,) = query(db, "SELECT MAX(id) FROM purchases")[0]
        assert economy.next_purchase == last_purchase + 1
        # The replayed ticks start from the committed balances, not the snapshot's.
        rejoined = [pid for pid in economy.accounts if pid in balances]
        assert rejoined

    async def test_restart_in_process_keeps_the_instances(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """``restart``: the same instances stop, restore and start again; the ledger stays exact."""
        db = tmp_path / "w.db"
        systems = world(db, cheat_rate=0.05)
        sup = make_supervisor(systems, tick_rate=RATE, config=QUIET, state_dir=tmp_path / "s")
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: sup.run(exit_on_emergency=False, task_status=task_status)
            )
            await trio.sleep(2.0)
            before = sup.tick
            await sup.restart(caller=Caller("ops", "operator"))
            await trio.sleep(2.0)
            sup.stop("test over")
        assert sup.tick > before + 30
        assert list(sup.errors.records) == []
        economy = sup.system("economy")
        assert economy is systems["economy"]
        assert economy.acked == economy.purchases > 0
        assert audit(db) == []

    def test_reconcile_drops_what_was_never_committed(self) -> None:
        """Queued entries from a snapshot are dropped, never acknowledged; the store's ids win."""

        class Store:
            def load_accounts(self, pids: Any) -> dict[int, StoredAccount]:
                return {7: StoredAccount(500, 40, 3, {"dropper": 1})}

            def last_ids(self) -> tuple[int, int]:
                return 100, 20

        players = Players(count=2)
        state = players.snapshot()
        state.update(online=[7, 8], next_id=9, seeded=True, joins=2)
        players.restore(state)
        economy = Economy(grant=1000)
        economy._players = players
        state = Economy().snapshot()
        state["pending"] = [[5, 7, 300, "dropper", 4]]
        state["ledger"] = [[9, 7, 4, "purchase", -300, 5]]
        economy.restore(state)
        economy.attach_store(Store(), tick=10)
        assert economy.dropped == 1
        assert economy.pending == []
        assert economy.accounts[7].balance == 500
        assert economy.accounts[7].paid_tick == 3
        assert economy.accounts[7].items == {"dropper": 1}
        assert economy.accounts[8].balance == 1000  # new: granted, queued for the next commit
        assert (economy.next_seq, economy.next_purchase) == (102, 21)
        batch = economy.drain()
        assert batch is not None
        assert batch.ledger == [(101, 8, 10, "grant", 1000, None)]


class TestHealthAndRecovery:
    def test_economy_resyncs_after_players_fail_mid_tick(self, tmp_path: Path) -> None:
        """A players tick that dies half way: the economy rebuilds from the online list."""

        class Fragile(Players):
            def tick(self, ctx: Context) -> None:
                if ctx.tick == 40:
                    self.online.pop()  # a departure nobody announced
                    raise RuntimeError("crash in the middle of churn")
                super().tick(ctx)

        db = tmp_path / "w.db"
        players = Fragile(count=40, churn=0.5, name="players")
        result = run_systems(
            named=world(db, players=players), ticks=80, tick_rate=RATE, config=QUIET
        )
        assert [(e.system, e.tick) for e in result.errors] == [("players", 40)]
        economy = result.system("economy")
        online = {a.pid for a in economy.accounts.values() if a.online}
        assert online == set(players.online)
        assert audit(db) == []

    def test_datastore_degrades_while_a_commit_is_held(self, tmp_path: Path) -> None:
        """A lost connection: the commit fails, recover reopens, the held batch goes next tick."""
        db = tmp_path / "w.db"
        store = Datastore(path=str(db), autosave=0)
        health: dict[int, str] = {}

        def lose_connection(ctx: Context, economy: Economy) -> None:
            assert store._conn is not None
            store._conn.close()

        class Watch:
            name = "watch"
            depends_on = ("economy",)

            def tick(self, ctx: Context) -> None:
                health[ctx.tick] = store.health()

        systems = world(db, datastore=store, probe=Probe(5, lose_connection), watch=Watch())
        result = run_systems(named=systems, ticks=10, tick_rate=RATE, config=QUIET)
        assert [(e.system, e.tick) for e in result.errors] == [("datastore", 5)]
        assert (health[5], health[6], health[7]) == ("healthy", "degraded", "healthy")
        economy = result.system("economy")
        assert economy.acked == economy.purchases
        assert audit(db) == []

    def test_a_dead_database_is_an_emergency(self, tmp_path: Path) -> None:
        """The datastore is critical: when it cannot reopen, it is unhealthy and the world stops."""

        class Dying(Datastore):
            dead = False

            def _open(self) -> None:
                if self.dead:
                    raise sqlite3.OperationalError("unable to open database file")
                super()._open()

        db = tmp_path / "w.db"
        store = Dying(path=str(db), autosave=0, name="datastore")
        health: list[str] = []

        def kill(ctx: Context, economy: Economy) -> None:
            assert store._conn is not None
            store.dead = True
            store._conn.close()

        class Watch:
            name = "watch"
            depends_on = ("economy",)

            def tick(self, ctx: Context) -> None:
                health.append(store.health())

        systems = world(db, datastore=store, probe=Probe(5, kill), watch=Watch())
        sup = make_supervisor(systems, tick_rate=RATE, config=QUIET, state_dir=tmp_path / "s")
        summary = trio.run(
            functools.partial(sup.run, ticks=60), clock=trio.testing.MockClock(autojump_threshold=0)
        )
        assert summary.emergency
        assert summary.exit_code == 3
        assert "unhealthy" in health
        economy = sup.system("economy")
        assert all(p.ack_tick is not None and p.ack_tick < 5 for p in economy.acknowledged)
        assert audit(db) == []

    def test_emergency_saves_everything(self, tmp_path: Path) -> None:
        """The emergency path stops the datastore too: every acknowledged purchase is saved."""
        db = tmp_path / "w.db"
        probe = Probe(45, lambda ctx, eco: ctx.request_emergency("drill"))
        sup = make_supervisor(
            world(db, probe=probe), tick_rate=RATE, config=QUIET, state_dir=tmp_path / "s"
        )
        summary = trio.run(sup.run, clock=trio.testing.MockClock(autojump_threshold=0))
        assert summary.emergency
        assert summary.snapshot_written
        economy = sup.system("economy")
        assert economy.acked == economy.purchases > 0
        saved = dict(query(db, "SELECT id, balance FROM players"))
        assert all(saved[a.pid] == a.balance for a in economy.accounts.values())
        assert audit(db) == []

    @pytest.mark.parametrize("emergency", [True, False])
    def test_only_a_graceful_stop_saves_all(self, tmp_path: Path, emergency: bool) -> None:
        """Stopping in EMERGENCY_SHUTDOWN skips the save-all (the per-tick commits made it
        durable and the clock runs until the snapshot); a graceful stop rewrites every account.

        The datastore tells the two apart by ``ctx.phase``: a comparison that never
        matches would save all on the emergency path and pass every other test.
        """
        saves: list[int] = []

        class Counting(Datastore):
            def _save_all(self, economy: Economy) -> None:
                saves.append(len(economy.accounts))
                super()._save_all(economy)

        db = tmp_path / "w.db"
        store = Counting(path=str(db), autosave=0, name="datastore")
        extra: dict[str, Any] = {"datastore": store}
        if emergency:
            extra["probe"] = Probe(45, lambda ctx, eco: ctx.request_emergency("drill"))
        sup = make_supervisor(world(**extra), tick_rate=RATE, config=QUIET, state_dir=tmp_path)
        run = functools.partial(sup.run, ticks=None if emergency else 60)
        summary = trio.run(run, clock=trio.testing.MockClock(autojump_threshold=0))
        assert summary.emergency is emergency
        assert len(saves) == (0 if emergency else 1)


class TestConfigs:
    @pytest.mark.parametrize("name", ["default", "development", "testing", "production"])
    def test_config_loads_and_builds_the_world(self, name: str) -> None:
        """Each shipped config validates and builds the six systems with its arguments."""
        config = Config.from_toml(CONFIGS / f"{name}.toml", env={})
        sup = Supervisor.from_config(config, facts=FIXED_FACTS, persist=False)
        assert set(sup.names) == {
            "players",
            "economy",
            "tycoon",
            "datastore",
            "leaderboard",
            "security",
        }
        assert config.supervisor.phase == {"default": "development"}.get(name, name)

    def test_default_is_the_demo(self) -> None:
        """200 players at 30 Hz, state in var."""
        config = Config.from_toml(CONFIGS / "default.toml", env={})
        sup = Supervisor.from_config(config, facts=FIXED_FACTS, persist=False)
        assert sup.system("players").count == 200
        assert sup.tick_rate == 30
        assert config.supervisor.state_dir == "var"

    def test_production_passes_the_security_check(self) -> None:
        """Hashed tokens, JSON logs, redaction: it may start directly in production."""
        config = Config.from_toml(CONFIGS / "production.toml", env={})
        sup = Supervisor.from_config(config, facts=FIXED_FACTS, persist=False)
        assert sup.security_report().ok
        assert config.logging.format == "json"
        assert len(config.api.tokens) == 2
        testing = Config.from_toml(CONFIGS / "testing.toml", env={})
        assert testing.logging.format == "json"


def _drop_purchases(db: Path, state: Path) -> None:
    """Behind its back: the acknowledged purchases vanish from the database."""
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("DELETE FROM purchases")


def _reprice_one(db: Path, state: Path) -> None:
    """One acknowledged purchase rewritten with another amount."""
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "UPDATE purchases SET amount = amount + 1 WHERE id = (SELECT MIN(id) FROM purchases)"
        )


def _old_copy(db: Path, state: Path) -> None:
    """The database replaced by a copy taken before the snapshot's commits."""
    shutil.copyfile(state / "early.db", db)


def _delete_database(db: Path, state: Path) -> None:
    """The database file gone entirely."""
    db.unlink()


def _truncate_acks(db: Path, state: Path) -> None:
    """The ack log cut short: fewer acknowledgements than the snapshot counted."""
    acks = Path(f"{db}.acks")
    lines = acks.read_text().splitlines(keepends=True)
    acks.write_text("".join(lines[: len(lines) // 2]))


class TestCrossCheck:
    """The datastore's start-up cross-check of the ack log, the snapshot and the database."""

    @pytest.mark.parametrize(
        "tamper", [_drop_purchases, _reprice_one, _old_copy, _delete_database, _truncate_acks]
    )
    def test_tampering_is_refused_with_every_file_kept(
        self, tmp_path: Path, tamper: Callable[[Path, Path], None]
    ) -> None:
        """Each way of losing acknowledged data refuses the start (StartupError, refused)
        with one line naming the database and the override; no file is changed."""
        db, state = tmp_path / "w.db", tmp_path / "state"
        run_persisted(world(db), 30, state, resume=False)
        shutil.copyfile(db, state / "early.db")
        run_persisted(world(db), 90, state, resume=True)
        assert query(db, "SELECT COUNT(*) FROM purchases")[0][0] > 0
        tamper(db, state)
        before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
        with pytest.raises(StartupError) as caught:
            run_persisted(world(db), 10, state, resume=True)
        assert caught.value.refused
        message = str(caught.value)
        assert "\n" not in message
        assert "lost acknowledged data" in message
        assert "accept_data_loss = true" in message
        after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
        assert {k: v for k, v in after.items() if not k.endswith(("-wal", "-shm"))} == before

    def test_accepted_loss_reuses_no_id_and_is_not_refused_again(self, tmp_path: Path) -> None:
        """``accept_data_loss``: the run goes on from the database, ids continue after the
        highest acknowledged one, and the next start (without the override) passes."""
        db, state = tmp_path / "w.db", tmp_path / "state"
        run_persisted(world(db), 90, state, resume=False)
        acked = [int(line.split()[0]) for line in Path(f"{db}.acks").read_text().splitlines()]
        _drop_purchases(db, state)
        accepting = Datastore(path=str(db), autosave=0, accept_data_loss=True)
        with structlog.testing.capture_logs() as logs:
            run_persisted(world(db, datastore=accepting), 90, state, resume=True)
        (loss,) = [e for e in logs if e["event"] == "datastore.data_loss"]
        assert loss["missing"] == len(acked)
        ids = [row[0] for row in query(db, "SELECT id FROM purchases")]
        assert ids
        assert min(ids) > max(acked)
        run_persisted(world(db), 10, state, resume=True)

    def test_a_new_world_moves_the_old_database_aside(self, tmp_path: Path) -> None:
        """Not restored (a fresh world) over a database that holds one: moved aside, whole."""
        db, state = tmp_path / "w.db", tmp_path / "state"
        run_persisted(world(db), 60, state, resume=False)
        old = db.read_bytes(), Path(f"{db}.acks").read_bytes()
        shutil.rmtree(state)  # as `run --fresh` moves the snapshots aside
        with structlog.testing.capture_logs() as logs:
            run_persisted(world(db), 60, state, resume=False)
        (moved,) = [e for e in logs if e["event"] == "datastore.moved_aside"]
        aside = Path(moved["folder"])
        assert aside.parent == tmp_path
        assert ((aside / "w.db").read_bytes(), (aside / "w.db.acks").read_bytes()) == old
        assert audit(db) == []
        assert query(db, "SELECT MIN(id) FROM purchases")[0][0] == 1
