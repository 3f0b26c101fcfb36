"""The defects that lived in the seams of the old Supervisor (issue 9), one test each.

Each of these failed on commit 2c97b9f: an emergency asked for mid-tick let
the rest of the tick step; a second ``run()`` reported the first one's stop
reason and took the first run's stop for its own; the API was served from
the base config while readiness judged the phase's.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from supervisor import Phase
from supervisor._core._control import Caller
from supervisor._server._serve import attach_api
from supervisor.testing import make_supervisor

OPERATOR = Caller("ops", "operator")
RATE = 10


class Logged:
    """Appends ``(tick, name, ctx.now)`` for each of its steps; asks for an emergency at ``at``."""

    def __init__(self, name: str, steps: list[tuple[int, str, float]], at: int | None = None):
        self.name = name
        self.steps = steps
        self.at = at
        self.stopped = False

    def tick(self, ctx: Any) -> None:
        self.steps.append((ctx.tick, self.name, ctx.now))
        if ctx.tick == self.at:
            ctx.request_emergency("enough")

    def stop(self, ctx: Any) -> None:
        self.stopped = True


class Waits:
    """An async system that, at tick ``at``, signals ``in_step`` and waits inside its step."""

    def __init__(self, steps: list[tuple[int, str, float]], at: int) -> None:
        self.name = "a_waits"
        self.steps = steps
        self.at = at
        self.in_step = trio.Event()
        self.stopped = False

    async def tick(self, ctx: Any) -> None:
        self.steps.append((ctx.tick, self.name, ctx.now))
        if ctx.tick == self.at:
            self.in_step.set()
            await trio.sleep(0.01)

    def stop(self, ctx: Any) -> None:
        self.stopped = True


class TestEmergencyAfterTheCurrentStep:
    async def test_a_plugins_emergency_ends_the_tick_after_its_step(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """b asks at tick 3: a and b stepped that tick, c did not; ticks were on time exactly."""
        steps: list[tuple[int, str, float]] = []
        systems = [Logged("a", steps), Logged("b", steps, at=3), Logged("c", steps)]
        sup = make_supervisor(systems, tick_rate=RATE)
        summary = await sup.run()
        assert [(t, n) for t, n, _ in steps if t == 3] == [(3, "a"), (3, "b")]
        assert max(t for t, n, _ in steps if n == "c") == 2
        assert summary.emergency
        assert sup.tick == 4  # the tick that was cut short still counts
        start = steps[0][2]
        assert [now - start for t, n, now in steps if n == "a"] == [k / RATE for k in range(4)]

    async def test_an_operators_emergency_mid_tick_stops_the_rest_and_answers_when_done(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Asked while a step awaits: later systems skip that tick; answered once state is safe."""
        steps: list[tuple[int, str, float]] = []
        waits, after = Waits(steps, at=3), Logged("b_after", steps)
        sup = make_supervisor([waits, after], tick_rate=RATE, state_dir=tmp_path)
        seen: dict[str, Any] = {}

        async def operator() -> None:
            await waits.in_step.wait()
            answer = await sup.shutdown(emergency=True, reason="drill", caller=OPERATOR)
            # Everything the answer claims has happened by the time it comes.
            seen["phase"] = sup.phase
            seen["stopped"] = (waits.stopped, after.stopped)
            seen["snapshot"] = await trio.Path(answer.as_dict()["snapshot"]).exists()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(operator)
            summary = await sup.run()
        assert [(t, n) for t, n, _ in steps if t == 3] == [(3, "a_waits")]
        assert seen == {
            "phase": Phase.EMERGENCY_SHUTDOWN,
            "stopped": (True, True),
            "snapshot": True,
        }
        assert summary.exit_code == 3


class TestEachRunHasItsOwnState:
    async def test_a_second_run_does_not_report_the_first_runs_stop_reason(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Run 1 stopped by request; run 2 ends by its tick limit and says so."""
        sup = make_supervisor([Logged("a", [])], tick_rate=RATE)
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(0.25)
            sup.stop("first run over")
        assert sup.summary().exit_reason == "first run over"
        second = await sup.run(ticks=5)
        assert second.exit_reason == "completed"

    async def test_stopped_means_it_happened_and_belongs_to_its_run(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A stop request does not mark the run stopped; a later run waits for its own stop."""
        seen_in_stop: list[bool] = []
        sup = make_supervisor([Logged("a", [])], tick_rate=RATE)

        class Watcher:
            name = "watcher"

            def tick(self, ctx: Any) -> None:
                pass

            def stop(self, ctx: Any) -> None:
                seen_in_stop.append(sup.run_state.stopped.is_set())

        sup.register(Watcher())
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(0.25)
            sup.stop("first")
            assert not sup.run_state.stopped.is_set()  # asked for, not yet happened
        assert seen_in_stop == [False]
        assert sup.run_state.stopped.is_set()
        # A second run, staying up after an emergency: it must wait for a restart or
        # a stop of its own, not take the first run's stop for one.
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: sup.run(exit_on_emergency=False, task_status=task_status)
            )
            sup.request_emergency("drill")
            await sup.run_state.emergency_done.wait()
            await trio.sleep(5.0)
            assert sup.run_state.running
            assert sup.liveness() == (True, "emergency_shutdown")
            sup.stop("second")
        assert sup.run_state.stopped.is_set()
        assert sup.run_state.stop_reason == "second"


# ---------------------------------------------------------------- one active config

TOKEN = "seam-token-51f0c2"


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A folder with a short path (a Unix socket's path is at most ~100 bytes)."""
    with tempfile.TemporaryDirectory(prefix="seam", dir="/tmp") as folder:
        yield Path(folder)


def _production_tokens_only(folder: Path, phase: str) -> dict[str, Any]:
    token = {
        "name": "ops",
        "role": "operator",
        "sha256": hashlib.sha256(TOKEN.encode()).hexdigest(),
    }
    return {
        "supervisor": {"phase": phase},
        "api": {"listen": f"unix:{folder / 's.sock'}", "audit_log": str(folder / "audit.jsonl")},
        "phases": {"production": {"api": {"tokens": [token]}}},
    }


async def _status_code(sock: Path) -> int:
    with trio.fail_after(10):
        while not await trio.Path(sock).exists():  # noqa: ASYNC110 - the socket file, no event
            await trio.sleep(0.02)
    transport = httpx.AsyncHTTPTransport(uds=str(sock))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://sv", headers=headers) as c:
        return (await c.get("/v1/status")).status_code


class TestOneActiveConfig:
    async def test_started_in_production_the_api_accepts_the_overlays_token(
        self, short_tmp: Path
    ) -> None:
        """Tokens only in [phases.production]: readiness counts them, and the API accepts them."""
        sup = make_supervisor(
            [Logged("a", [])],
            config=_production_tokens_only(short_tmp, "production"),
            tick_rate=RATE,
        )
        assert sup.security_report().check("security").ok
        assert len(sup.active_config.api.tokens) == 1
        attach_api(sup)
        codes: list[int] = []

        async def operate() -> None:
            codes.append(await _status_code(short_tmp / "s.sock"))
            sup.stop()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(operate)
            with trio.fail_after(20):
                await sup.run(duration=15)
        assert codes == [200]

    async def test_after_promotion_the_api_accepts_the_production_token(
        self, short_tmp: Path
    ) -> None:
        """In development the token is unknown (401); promoted, the API and readiness agree."""
        sup = make_supervisor(
            [Logged("a", [])],
            config=_production_tokens_only(short_tmp, "development"),
            tick_rate=RATE,
        )
        attach_api(sup)
        codes: list[int] = []

        async def operate() -> None:
            sock = short_tmp / "s.sock"
            codes.append(await _status_code(sock))
            await sup.change_phase("production", force=True, reason="go", caller=OPERATOR)
            assert len(sup.active_config.api.tokens) == 1
            assert (
                sup.readiness().check("security").detail
                == sup.security_report().check("security").detail
            )
            codes.append(await _status_code(sock))
            sup.stop()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(operate)
            with trio.fail_after(20):
                await sup.run(duration=15)
        assert codes == [401, 200]


class Fails:
    """Raises on tick ``at`` (with no restart budget: quarantined at once)."""

    def __init__(self, name: str, steps: list[tuple[int, str, float]], at: int) -> None:
        self.name = name
        self.steps = steps
        self.at = at

    def tick(self, ctx: Any) -> None:
        self.steps.append((ctx.tick, self.name, ctx.now))
        if ctx.tick == self.at:
            raise RuntimeError("boom")


async def test_an_emergency_after_a_quarantine_in_the_same_tick_still_ends_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """a is quarantined at tick 3 (the active list is rebuilt), then b asks: c does not step."""
    steps: list[tuple[int, str, float]] = []
    systems = [Fails("a", steps, at=3), Logged("b", steps, at=3), Logged("c", steps)]
    sup = make_supervisor(systems, tick_rate=RATE, config={"recovery": {"max_restarts": 0}})
    summary = await sup.run()
    assert [(t, n) for t, n, _ in steps if t == 3] == [(3, "a"), (3, "b")]
    assert summary.emergency
