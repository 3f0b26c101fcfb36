"""The error classes keep a user's names on one line; the errors chore keeps to its budget."""

from __future__ import annotations

from typing import Any

import pytest
import structlog
import trio
import trio.testing

from supervisor import ConfigError, DependencyError, PluginError
from supervisor._core import _failures as failures
from supervisor._errors import printable
from supervisor.testing import make_supervisor


@pytest.mark.parametrize("text", ["plain", "a\nb", "tab\there", "nul\x00", "esc\x1b[2J", "é ü ✓"])
def test_printable_is_one_line_and_idempotent(text: str) -> None:
    once = printable(text)
    assert once.isprintable()
    assert printable(once) == once
    if text.isprintable():
        assert once == text


def test_config_error_escapes_message_source_and_key() -> None:
    exc = ConfigError("bad\nvalue", source="conf\n.toml", key="api.\rlisten")
    assert "\n" not in str(exc)
    assert "\r" not in str(exc)
    assert str(exc) == "conf\\n.toml: [api.\\rlisten] bad\\nvalue"
    assert exc.key == "api.\\rlisten"


def test_plugin_errors_escape_the_message() -> None:
    assert "\n" not in str(PluginError("cannot import\nx", system="s"))
    assert "\n" not in str(DependencyError("cycle\na -> b", system="a"))


# ---------------------------------------------------------------- the errors chore's budget

RATE = 10  # Hz: a 0.1 s period
COST = 0.004  # MockClock seconds one record takes to make (its message is read once)
STORM = 20  # failures per tick


class _Costly(Exception):
    """An error whose message takes COST seconds of the MockClock to read (plugin code).

    Only the first read costs: formatting the traceback reads it again.
    """

    read = False

    def __str__(self) -> str:
        if not self.read:
            self.read = True
            clock = trio.lowlevel.current_clock()
            assert isinstance(clock, trio.testing.MockClock)
            clock.jump(COST)
        return "costly"


class _Storm:
    """Fails every tick with a costly error; no recover(), so no record is made in the tick."""

    def tick(self, ctx: Any) -> None:
        raise _Costly


class _Probe:
    """First in every tick: the tick, when it started, and the records made before it."""

    name = "probe"
    priority = -100

    def __init__(self, seen: list[tuple[int, float, int]], sup: list[Any]) -> None:
        self.seen = seen
        self.sup = sup

    def tick(self, ctx: Any) -> None:
        self.seen.append((ctx.tick, trio.current_time(), self.sup[0].errors.total))


def _storm_run(
    ticks: int, storm: int = STORM, extra: Any = None
) -> tuple[Any, list[tuple[int, float, int]]]:
    seen: list[tuple[int, float, int]] = []
    ref: list[Any] = []
    systems: dict[str, Any] = {f"s{i:02}": _Storm() for i in range(storm)}
    systems["probe"] = _Probe(seen, ref)
    if extra is not None:
        systems[extra.name] = extra
    config = {"recovery": {"max_restarts": 1_000_000, "window_seconds": 1.0, "history": 1000}}

    async def main() -> Any:
        sup = make_supervisor(systems, config=config, tick_rate=RATE, timer=trio.current_time)
        ref.append(sup)
        await sup.run(ticks=ticks)
        return sup

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)), seen


def test_the_errors_chore_ends_within_half_the_slack() -> None:
    """20 failures a tick, 4 ms a record, 50 ms of budget: 12 records a gap, every tick on time.

    A record is started only while the last one's cost fits before the chore's
    end (0.05 s after a tick that took no time): starts at 0, 4, ... 44 ms.
    """
    sup, seen = _storm_run(ticks=5)
    assert [(tick, round(at, 9), made) for tick, at, made in seen] == [
        (tick, tick / RATE, 12 * tick) for tick in range(5)
    ]
    stats = sup.statistics()
    assert stats.lateness.max == 0.0, "no tick starts late"
    assert sup.errors.dropped["ring_full"] == 0
    # What did not fit waited; the run's end made the rest, in order.
    assert sup.errors.total == 5 * STORM
    ticks = [r.tick for r in sup.errors.records]
    assert ticks == sorted(ticks)


def test_a_record_costlier_than_the_budget_does_not_starve_the_chore() -> None:
    """A record costs 60 ms, more than the 50 ms budget: the oldest is still made each gap.

    It ends 60 ms after its tick, within the 100 ms period: every tick on time.
    """
    global COST
    saved, COST = COST, 0.06
    try:
        sup, seen = _storm_run(ticks=10, storm=1)
    finally:
        COST = saved
    assert [made for _, _, made in seen] == list(range(10))
    assert sup.statistics().lateness.max == 0.0


def test_with_no_slack_left_the_oldest_record_is_still_made() -> None:
    """A tick that overruns leaves no slack: one record is made after it, the rest wait."""

    class Slow:
        name = "slow"

        def tick(self, ctx: Any) -> None:
            clock = trio.lowlevel.current_clock()
            assert isinstance(clock, trio.testing.MockClock)
            clock.jump(0.15)  # more than the 0.1 s period

    sup, seen = _storm_run(ticks=3, extra=Slow())
    assert [made for _, _, made in seen] == [0, 1, 2]
    assert sup.errors.total == 3 * STORM


def test_a_full_ring_is_counted_and_the_tick_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ring holds 32: failures past it are counted (``ring_full``), the tick makes none.

    With the ring half full the chore takes nine tenths of the slack (90 ms: 22 records).
    """
    monkeypatch.setattr(failures, "PENDING", 32)
    sup, seen = _storm_run(ticks=3, storm=40)
    # Tick 0: 32 kept, 8 counted, 22 made after it; ticks 1 and 2: room for 22 of 40.
    assert sup.errors.dropped["ring_full"] == 8 + 18 + 18
    assert [made for _, _, made in seen] == [0, 22, 44]
    assert sup.statistics().lateness.max == 0.0
    assert sup.errors.total == 3 * 40 - 44


def test_a_wide_storm_logs_within_the_log_budget_and_accounts_for_every_failure() -> None:
    """1,000 fingerprints for 8 s: at most LOG_BUDGET lines a second, every failure counted.

    Their folds expire together 5 s in; a storm line takes a log token like an error
    line, the rest are left to the housekeeper's flush (one line for a wide storm).
    Every failure is in an error line or in a storm line's ``suppressed``.
    """
    sites = [compile("raise ValueError('storm')", f"<site {i}>", "exec") for i in range(1000)]

    class Wide:
        def __init__(self, index: int) -> None:
            self.index = index

        def tick(self, ctx: Any) -> None:
            exec(sites[(self.index + ctx.tick * 200) % len(sites)])

    systems = {f"s{i}": Wide(i) for i in range(200)}
    config = {"recovery": {"max_restarts": 1_000_000, "window_seconds": 1.0}}

    async def main() -> Any:
        sup = make_supervisor(
            systems, config=config, tick_rate=RATE, timer=trio.current_time, wall=trio.current_time
        )
        await sup.run(ticks=80)
        return sup

    with structlog.testing.capture_logs() as logs:
        sup = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    errors = [e for e in logs if e["event"] == "system.error"]
    storms = [e for e in logs if e["event"] == "system.error_storm"]
    assert sup.errors.total == 200 * 80
    assert len(errors) + sum(e["suppressed"] for e in storms) == sup.errors.total
    assert len(errors) + len(storms) <= failures.LOG_BURST + failures.LOG_BUDGET * 8 + 10
