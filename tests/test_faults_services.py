"""Services run supervised: nothing a service raises ends the run, and the run ends them cleanly.

On the old main, ``trio.BusyResourceError`` raised inside hypercorn escaped
``serve_api`` into the nursery that runs the tick loop: exit 1, no final
snapshot. Here each service is a plain coroutine function with the agreed
signature ``async def svc(sup, task_status=trio.TASK_STATUS_IGNORED)``, on a
MockClock, so restart times and tick counts are exact.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import trio
import trio.testing

from supervisor import ConfigError, Supervisor
from supervisor._core._services import SERVICE_GRACE
from supervisor.testing import Ticking, make_supervisor


class Crashes:
    """A service that starts, runs ``after`` seconds, then raises ``make()``; every time."""

    def __init__(self, after: float, make: Any, *, before_started: bool = False) -> None:
        self.after = after
        self.make = make
        self.before_started = before_started
        self.starts: list[float] = []

    async def __call__(
        self, sup: Supervisor, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.starts.append(trio.current_time())
        if not self.before_started:
            task_status.started()
        await trio.sleep(self.after)
        raise self.make()


def _run(sup: Supervisor, **kwargs: Any) -> Any:
    return trio.run(
        functools.partial(sup.run, **kwargs), clock=trio.testing.MockClock(autojump_threshold=0)
    )


async def _stubborn(
    sup: Supervisor,
    *,
    ended: list[float],
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A service that ignores ``closing``: it returns only when cancelled (noted in ``ended``)."""
    task_status.started()
    try:
        await trio.sleep_forever()
    finally:
        ended.append(trio.current_time())


def _busy_group() -> BaseException:
    # As hypercorn's nursery raises it: a BusyResourceError inside an exception group.
    return ExceptionGroup("serve", [trio.BusyResourceError("another task is using this stream")])


class TestSupervisedServices:
    def test_a_service_that_crashes_is_restarted_with_backoff_and_the_tick_goes_on(
        self,
    ) -> None:
        """Crashes 1 s after each start: restarted after 0.1, 0.2, 0.4, 0.8, 1.6 s; 100 ticks."""
        ticks, service = Ticking(), Crashes(1.0, lambda: RuntimeError("boom"))
        sup = make_supervisor([ticks], tick_rate=10)
        sup.services.append(service)
        summary = _run(sup, duration=10)
        assert (summary.ticks, ticks.ticks) == (100, 100)
        assert service.starts == pytest.approx([0.0, 1.1, 2.3, 3.7, 5.5, 8.1])
        assert sup.service_failures == {"Crashes": 6}
        assert summary.exit_reason == "completed"

    @pytest.mark.parametrize(
        "make",
        [lambda: trio.BusyResourceError("another task is using this stream"), _busy_group],
        ids=["bare", "in-a-group"],
    )
    def test_busy_resource_error_over_and_over_never_ends_the_run(self, make: Any) -> None:
        """BusyResourceError at once after every start: 7 crashes in 10 s, 100 ticks, exit 0."""
        ticks, service = Ticking(), Crashes(0.0, make)
        sup = make_supervisor([ticks], tick_rate=10)
        sup.services.append(service)
        summary = _run(sup, duration=10)
        assert (summary.ticks, ticks.ticks) == (100, 100)
        # Backoff 0.1 s doubling: restarts at 0.1, 0.3, 0.7, 1.5, 3.1, 6.3 (then 12.7).
        assert service.starts == pytest.approx([0.0, 0.1, 0.3, 0.7, 1.5, 3.1, 6.3])
        assert sup.service_failures == {"Crashes": 7}
        assert summary.exit_code == 0

    def test_the_backoff_is_capped_and_resets_after_a_long_run(self) -> None:
        """A service that runs 20 s before each crash is restarted after 0.1 s every time."""
        service = Crashes(20.0, lambda: OSError("lost the socket"))
        sup = make_supervisor([Ticking()], tick_rate=10)
        sup.services.append(service)
        _run(sup, duration=65)
        assert service.starts == pytest.approx([0.0, 20.1, 40.2, 60.3])

    def test_a_crash_before_started_does_not_hold_up_the_run(self) -> None:
        """A service that raises before started(): counted, restarted; the systems start anyway."""
        ticks, service = Ticking(), Crashes(0.0, KeyError, before_started=True)
        sup = make_supervisor([ticks], tick_rate=10)
        sup.services.append(service)
        summary = _run(sup, duration=1)
        assert summary.ticks == 10
        assert sup.service_failures["Crashes"] == len(service.starts) == 4  # 0, 0.1, 0.3, 0.7

    def test_a_supervisor_error_before_started_stays_a_startup_error(self) -> None:
        """As before: a service refusing to start (ConfigError) aborts the run with that error."""

        async def bad_listen(
            sup: Supervisor, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        ) -> None:
            raise ConfigError("cannot listen on unix:/nope/x.sock", key="api.listen")

        ticks = Ticking()
        sup = make_supervisor([ticks], tick_rate=10)
        sup.services.append(bad_listen)
        with pytest.raises(ConfigError, match="cannot listen"):
            _run(sup, ticks=5)
        assert ticks.ticks == 0
        assert sup.closing.is_set()

    def test_a_hostile_exception_class_in_a_service_is_a_crash(self) -> None:
        """A service raising an exception whose __class__ property raises: counted, restarted."""

        class LiesAboutItsClass(Exception):
            @property  # type: ignore[misc]
            def __class__(self) -> type:
                raise RuntimeError("__class__")

        ticks, service = Ticking(), Crashes(0.5, LiesAboutItsClass)
        sup = make_supervisor([ticks], tick_rate=10)
        sup.services.append(service)
        assert _run(sup, duration=2).ticks == 20
        assert sup.service_failures["Crashes"] == len(service.starts) == 3  # 0, 0.6, 1.3

    def test_a_service_that_returns_is_not_restarted(self) -> None:
        """A service that finishes its work (even before started()) is done, not a crash."""
        calls: list[float] = []

        async def once(
            sup: Supervisor, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        ) -> None:
            calls.append(trio.current_time())

        sup = make_supervisor([Ticking()], tick_rate=10)
        sup.services.append(once)
        assert _run(sup, ticks=20).ticks == 20
        assert calls == [0.0]
        assert sup.service_failures == {}


class TestClosing:
    def test_services_see_closing_and_return_on_their_own(self) -> None:
        """closing is set when the run ends; a service that waits for it returns, not cancelled."""
        seen: list[tuple[str, float]] = []

        async def polite(
            sup: Supervisor, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        ) -> None:
            task_status.started()
            await sup.closing.wait()
            seen.append(("closing", trio.current_time()))
            await trio.sleep(0.5)  # e.g. sends the answer in flight
            seen.append(("returned", trio.current_time()))

        sup = make_supervisor([Ticking()], tick_rate=10)
        sup.services.append(polite)
        _run(sup, ticks=10)
        assert [name for name, _ in seen] == ["closing", "returned"]
        assert [at for _, at in seen] == pytest.approx([0.9, 1.4])

    def test_a_service_ignoring_closing_is_cancelled_after_the_grace(self) -> None:
        """A service that never returns gets SERVICE_GRACE seconds, then it is cancelled."""
        ended: list[float] = []
        stubborn = functools.partial(_stubborn, ended=ended)

        sup = make_supervisor([Ticking()], tick_rate=10)
        sup.services.append(stubborn)
        _run(sup, ticks=10)
        assert ended == [pytest.approx(0.9 + SERVICE_GRACE)]

    def test_a_forced_stop_gives_no_grace(self) -> None:
        """After a forced stop (a second signal) services are cancelled at once."""
        ended: list[float] = []
        stubborn = functools.partial(_stubborn, ended=ended)

        class Forces:
            name = "forces"

            def tick(self, ctx: Any) -> None:
                if ctx.tick == 3:
                    sup.run_state.force = True
                    sup.run_state.scope.cancel()

        sup = make_supervisor([Forces()], tick_rate=10)
        sup.services.append(stubborn)
        summary = _run(sup)
        assert summary.exit_reason == "forced stop"
        assert sup.closing.is_set()
        assert ended == [pytest.approx(0.3)]
