"""The tick thread's short fair-scheduler slice (``_core._slice``): held while ticking, put back.

The tests that need the kernel's custom slices (Linux 6.12 and later) skip
elsewhere; the refusals run everywhere, on fake system calls.
"""

from __future__ import annotations

import errno
import threading
from typing import Any

import pytest

from supervisor._core._slice import TICK_SLICE, FairSlice, SchedAttr, sched_attr_calls
from supervisor.testing import run_systems

CALLS = sched_attr_calls()


def _runtime() -> int:
    """The slice (ns) of this thread, from ``sched_getattr``."""
    assert CALLS is not None
    attr = SchedAttr()
    assert CALLS[1](attr) == 0
    return int(attr.sched_runtime)


def _custom_slices() -> bool:
    if CALLS is None:
        return False
    probe = FairSlice()
    probe.enter()
    held = probe.held_us is not None
    probe.leave()
    return held


needs_custom_slices = pytest.mark.skipif(
    not _custom_slices(), reason="no custom fair slices here (Linux 6.12 or later on x86_64)"
)


class Probe:
    """A system that records its thread's slice inside a tick."""

    name = "probe"

    def __init__(self) -> None:
        self.runtime: int | None = None
        self.child: int | None = None

    def tick(self, ctx: Any) -> None:
        if ctx.tick != 1:
            return
        self.runtime = _runtime()
        seen: list[int] = []
        thread = threading.Thread(target=lambda: seen.append(_runtime()))
        thread.start()
        thread.join()
        self.child = seen[0]


@needs_custom_slices
class TestHeld:
    """On a kernel with custom slices: held while the loop runs, the default back after."""

    def test_enter_and_leave(self) -> None:
        """The slice is TICK_SLICE while held; leave() gives back the slice the thread had."""
        before = _runtime()
        fair = FairSlice()
        fair.enter()
        try:
            assert fair.held_us == round(TICK_SLICE * 1e6)
            assert fair.problem is None
            assert _runtime() == int(TICK_SLICE * 1e9)
        finally:
            fair.leave()
        assert fair.status()["fair_slice_us"] is None
        assert _runtime() == before

    def test_the_tick_thread_holds_it_and_what_it_starts_does_not(self) -> None:
        """Inside a tick the slice is short; a thread started there has the default one."""
        before = _runtime()
        probe = Probe()
        result = run_systems(probe, ticks=3)
        assert probe.runtime == int(TICK_SLICE * 1e9)
        assert probe.child == before  # SCHED_RESET_ON_FORK
        assert _runtime() == before  # put back when the loop ended
        section = result.supervisor.status().as_dict()["scheduler"]
        assert section == {"fair_slice_us": None}  # the loop has ended

    def test_leave_twice_is_harmless(self) -> None:
        fair = FairSlice()
        fair.enter()
        fair.leave()
        fair.leave()
        assert fair.held_us is None


class _FakeKernel:
    """sched_setattr/sched_getattr on a dict, with failures to order."""

    def __init__(
        self, *, set_error: int = 0, get_error: int = 0, ignores: bool = False, policy: int = 0
    ) -> None:
        self.policy = policy
        self.runtime = 1_400_000
        self.set_error = set_error
        self.get_error = get_error
        self.ignores = ignores
        self.sets: list[int] = []

    def set_attr(self, attr: SchedAttr) -> int:
        if self.set_error:
            return self.set_error
        self.sets.append(int(attr.sched_runtime))
        if not self.ignores:
            self.runtime = int(attr.sched_runtime) or 1_400_000
        return 0

    def get_attr(self, attr: SchedAttr) -> int:
        if self.get_error:
            return self.get_error
        attr.sched_policy = self.policy
        attr.sched_runtime = 0 if self.ignores else self.runtime
        return 0


class TestRefused:
    """Every refusal leaves the thread as it was and says why; nothing raises."""

    def test_no_system_call(self) -> None:
        fair = FairSlice(calls=None)
        fair.enter()
        assert fair.status() == {
            "fair_slice_us": None,
            "fair_slice_problem": "no sched_setattr on this platform",
        }
        fair.leave()

    @pytest.mark.parametrize(
        ("kernel", "problem", "sets"),
        [
            (
                _FakeKernel(get_error=errno.ENOSYS),
                "sched_getattr: Function not implemented",
                [],
            ),
            (
                _FakeKernel(set_error=errno.EPERM),
                "sched_setattr: Operation not permitted",
                [],
            ),
            # Before 6.12 the call succeeds and the runtime reads back 0: asked, then put back.
            (
                _FakeKernel(ignores=True),
                "the kernel has no custom slices (Linux 6.12 or later has)",
                [int(TICK_SLICE * 1e9), 0],
            ),
            # A thread under another policy (chrt, SCHED_BATCH) is left alone.
            (_FakeKernel(policy=1), "the tick thread is not SCHED_OTHER", []),
        ],
        ids=["getattr-fails", "setattr-refused", "kernel-ignores-it", "not-sched-other"],
    )
    def test_refused(self, kernel: _FakeKernel, problem: str, sets: list[int]) -> None:
        fair = FairSlice(calls=(kernel.set_attr, kernel.get_attr))
        fair.enter()
        assert fair.status() == {"fair_slice_us": None, "fair_slice_problem": problem}
        assert kernel.sets == sets
        fair.leave()
        assert kernel.sets == sets

    def test_held_then_put_back(self) -> None:
        kernel = _FakeKernel()
        fair = FairSlice(calls=(kernel.set_attr, kernel.get_attr))
        fair.enter()
        assert fair.held_us == round(TICK_SLICE * 1e6)
        assert kernel.runtime == int(TICK_SLICE * 1e9)
        fair.leave()
        assert kernel.runtime == 1_400_000
        assert kernel.sets == [int(TICK_SLICE * 1e9), 0]
