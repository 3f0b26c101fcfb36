"""Realtime mode: SCHED_FIFO, memory locking, CPU affinity, the GC between ticks, the safety net.

These tests run the tick loop on pytest's own thread: where the process is
permitted (root here), that thread really runs under SCHED_FIFO during the
run and must be put back afterwards; each test checks it is.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gc
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio

from supervisor import Config, ConfigError
from supervisor._core import _realtime
from supervisor._core._config_realtime import format_cpus, parse_cpus
from supervisor._core._config_sections import SupervisorConfig
from supervisor._core._gc import GC_OVERDUE
from supervisor._core._realtime import RealtimeMode, rt_throttling
from supervisor.testing import make_supervisor, run_systems

ROOT = os.geteuid() == 0
#: The real PM QoS device (the tests point ``_realtime`` at a plain file but one).
DEVICE = _realtime.CPU_DMA_LATENCY
needs_root = pytest.mark.skipif(not ROOT, reason="SCHED_FIFO and mlockall need root here")


def _locked_kib() -> int:
    """VmLck of this process (kB locked in memory), from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmLck:"):
            return int(line.split()[1])
    raise AssertionError("no VmLck in /proc/self/status")


def _policy(tid: int) -> int:
    """The scheduling policy of thread ``tid`` (0: this one), without SCHED_RESET_ON_FORK."""
    return os.sched_getscheduler(tid) & ~os.SCHED_RESET_ON_FORK


def _rt(**supervisor: Any) -> Config:
    return Config.from_mapping(
        {"supervisor": {"realtime": True, **supervisor}, "features": {"optimizer": False}},
        env={},
    )


@pytest.fixture(autouse=True)
def _plain_file_for_pm_qos(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A plain file stands for /dev/cpu_dma_latency, so that the tests behave the same with and
    without the device (a container has none) and keep this machine's idle CPUs out of it;
    ``TestWakeLatency`` uses the real one."""
    device = tmp_path / "cpu_dma_latency"
    device.write_bytes(b"")
    monkeypatch.setattr(_realtime, "CPU_DMA_LATENCY", device)


@pytest.fixture(autouse=True)
def _back_to_normal() -> Any:
    """Every test leaves the thread, the memory locks and the GC as it found them."""
    policy, enabled = os.sched_getscheduler(0), gc.isenabled()
    cpus = os.sched_getaffinity(0)
    yield
    assert os.sched_getscheduler(0) == policy  # the flag too: nothing left behind
    assert os.sched_getaffinity(0) == cpus
    assert gc.isenabled() == enabled
    assert _locked_kib() == 0


class Probe:
    """Records the tick thread's scheduler and the watchdog thread's, from inside a tick."""

    name = "probe"

    def __init__(self) -> None:
        self.policy: int | None = None
        self.fifo_priority: int | None = None
        self.affinity: set[int] | None = None
        self.gc_enabled: bool | None = None
        self.locked = 0
        self.watchdog: tuple[int, int] | None = None

    def tick(self, ctx: Any) -> None:
        if ctx.tick != 2:
            return
        self.policy = _policy(0)
        self.fifo_priority = os.sched_getparam(0).sched_priority
        self.affinity = os.sched_getaffinity(0)
        self.gc_enabled = gc.isenabled()
        self.locked = _locked_kib()
        for thread in threading.enumerate():
            if thread.name == "supervisor-watchdog" and thread.native_id is not None:
                tid = thread.native_id
                self.watchdog = (_policy(tid), os.sched_getparam(tid).sched_priority)


class TestConfig:
    """The three keys of ``[supervisor]`` and their checks."""

    def test_off_by_default(self) -> None:
        """Realtime mode is off unless asked for; the priority defaults to 50."""
        cfg = SupervisorConfig()
        assert cfg.realtime is False
        assert cfg.realtime_priority == 50
        assert cfg.cpu_affinity is None
        assert cfg.realtime_max_wake_latency_us == 0

    @pytest.mark.parametrize("value", [-2, 1_000_001, 1.5, True, "0"])
    def test_wake_latency_out_of_range_is_refused(self, value: object) -> None:
        """-1 (leave the idle states alone) to 1 s; anything else: one line naming the key."""
        with pytest.raises(ConfigError, match=r"supervisor\.realtime_max_wake_latency_us"):
            Config.from_mapping({"supervisor": {"realtime_max_wake_latency_us": value}}, env={})

    @pytest.mark.parametrize("priority", [0, 99, -1, 1.5, True])
    def test_priority_out_of_range_is_refused(self, priority: object) -> None:
        """1..98: 99 is left for the watchdog thread (one above) and the kernel's own."""
        with pytest.raises(ConfigError, match=r"supervisor\.realtime_priority"):
            Config.from_mapping({"supervisor": {"realtime_priority": priority}}, env={})

    @pytest.mark.parametrize(
        ("text", "cpus"),
        [("1", {1}), ("0,2", {0, 2}), ("2-3", {2, 3}), ("0-1, 6", {0, 1, 6}), ("4-4", {4})],
    )
    def test_cpu_lists(self, text: str, cpus: set[int]) -> None:
        """The kernel's CPU list syntax (taskset -c, isolcpus)."""
        assert parse_cpus(text) == cpus
        assert SupervisorConfig(cpu_affinity=text).cpu_affinity == text

    @pytest.mark.parametrize(
        ("cpus", "text"), [(set(), ""), ({3}, "3"), ({0, 1, 2, 5}, "0-2,5"), ({1, 3, 4}, "1,3-4")]
    )
    def test_cpu_lists_are_shown_folded(self, cpus: set[int], text: str) -> None:
        """A log line names 2-8191, not eight thousand numbers."""
        assert format_cpus(cpus) == text
        assert not text or parse_cpus(text) == cpus

    @pytest.mark.parametrize("text", ["", "x", "1-", "3-1", "1;2", "-1", "9000", "0x1", "1,,2"])
    def test_bad_cpu_lists_are_refused_naming_the_key(self, text: str) -> None:
        """One line naming ``supervisor.cpu_affinity``, from TOML and from code alike."""
        with pytest.raises(ConfigError, match=r"supervisor\.cpu_affinity") as caught:
            Config.from_mapping({"supervisor": {"cpu_affinity": text}}, env={})
        assert "\n" not in str(caught.value)

    def test_an_environment_variable_error_names_the_variable(self) -> None:
        """``SUPERVISOR_SUPERVISOR_CPU_AFFINITY=0-99999``: the variable is the source."""
        with pytest.raises(ConfigError, match="SUPERVISOR_SUPERVISOR_CPU_AFFINITY"):
            Config.from_mapping({}, env={"SUPERVISOR_SUPERVISOR_CPU_AFFINITY": "0-99999"})

    def test_from_the_environment(self) -> None:
        """``SUPERVISOR_SUPERVISOR_REALTIME=true`` turns it on like the file does."""
        cfg = Config.from_mapping({}, env={"SUPERVISOR_SUPERVISOR_REALTIME": "true"})
        assert cfg.supervisor.realtime is True


def _qos_held() -> list[str]:
    """The descriptors of this process open on the PM QoS device."""
    fds = Path("/proc/self/fd")
    held = []
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(fd) == str(_realtime.CPU_DMA_LATENCY):
                held.append(fd.name)
    return held


def _qos_value() -> int:
    """The CPU wake-up latency the kernel enforces now (µs), read from the PM QoS device."""
    return int.from_bytes(_realtime.CPU_DMA_LATENCY.read_bytes()[:4], sys.byteorder, signed=True)


class WakeProbe:
    """Records, inside a tick, the wake-up latency the kernel enforces and our descriptors."""

    name = "wake_probe"

    def __init__(self) -> None:
        self.value: int | None = None
        self.held: list[str] = []

    def tick(self, ctx: Any) -> None:
        if ctx.tick == 2:
            self.value = _qos_value()
            self.held = _qos_held()


class TestWakeLatency:
    """Idle CPUs kept from deep sleep while the loop runs (PM QoS), released on leaving."""

    @needs_root
    @pytest.mark.skipif(not DEVICE.exists(), reason="no /dev/cpu_dma_latency here")
    def test_held_while_ticking_and_released_after(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Inside a tick the kernel enforces 0 µs (poll only); afterwards our file is closed."""
        monkeypatch.setattr(_realtime, "CPU_DMA_LATENCY", DEVICE)
        probe = WakeProbe()
        result = run_systems(probe, ticks=4, config=_rt())
        assert probe.value == 0
        assert len(probe.held) == 1
        assert _qos_held() == []
        status = result.supervisor.status().as_dict()["realtime"]
        assert status["max_wake_latency_us"] == 0
        assert status["problems"] == []

    def test_the_value_is_written_as_a_native_32_bit_integer(self) -> None:
        """``realtime_max_wake_latency_us = 20``: the 4 bytes the kernel reads, then closed."""
        device = _realtime.CPU_DMA_LATENCY  # the plain file (autouse fixture)
        probe = WakeProbe()
        result = run_systems(probe, ticks=4, config=_rt(realtime_max_wake_latency_us=20))
        assert device.read_bytes() == (20).to_bytes(4, sys.byteorder)
        assert probe.value == 20
        assert len(probe.held) == 1
        assert _qos_held() == []
        assert result.supervisor.status().as_dict()["realtime"]["max_wake_latency_us"] == 20

    def test_minus_one_leaves_the_idle_states_alone(self) -> None:
        """-1: the device is not opened at all, and nothing is reported as refused."""
        device = _realtime.CPU_DMA_LATENCY
        device.write_bytes(b"untouched")
        result = run_systems(Probe(), ticks=3, config=_rt(realtime_max_wake_latency_us=-1))
        assert device.read_bytes() == b"untouched"
        status = result.supervisor.status().as_dict()["realtime"]
        assert status["max_wake_latency_us"] is None
        assert not any(p.startswith("cpu_dma_latency") for p in status["problems"])

    def test_no_device_is_a_problem_not_a_crash(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """A container without the device: the ticks go on; the line says why and what to do."""
        monkeypatch.setattr(_realtime, "CPU_DMA_LATENCY", tmp_path / "missing")
        with structlog.testing.capture_logs() as logs:
            result = run_systems(Probe(), ticks=3, config=_rt())
        assert result.summary.ticks == 3
        [line] = [e for e in logs if e["event"] == "supervisor.realtime"]
        assert line["log_level"] == "warning"
        assert line["max_wake_latency_us"] is None
        [problem] = [p for p in line["problems"] if p.startswith("cpu_dma_latency")]
        assert "a container without the device" in problem
        assert "realtime_max_wake_latency_us = -1" in line["recommendation"]

    def test_not_permitted(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """EACCES (not root: the device is 0600): one problem, the fix in readiness."""
        device = _realtime.CPU_DMA_LATENCY
        real_open = os.open

        def refuse(path: Any, *args: Any, **kwargs: Any) -> int:
            if path == device:
                raise PermissionError(errno.EACCES, "Permission denied")
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", refuse)
        result = run_systems(Probe(), ticks=3, config=_rt())
        status = result.supervisor.status().as_dict()["realtime"]
        refused = f"cpu_dma_latency: not permitted ({device} is root's, mode 0600)"
        assert refused in status["problems"]
        [performance] = [c for c in result.supervisor.readiness().checks if c.name == "performance"]
        assert performance.recommendation is not None
        assert "--device /dev/cpu_dma_latency" in performance.recommendation


class TestOff:
    """Off, nothing changes: no section in status (the GC runs between ticks anyway: ``_gc``)."""

    def test_nothing_is_applied(self) -> None:
        """The probe sees the thread as it was; status has no realtime section."""
        probe = Probe()
        result = run_systems(probe, ticks=4)
        assert probe.policy == os.SCHED_OTHER
        assert probe.gc_enabled is False  # tests/test_gc.py
        assert gc.isenabled()
        assert "realtime" not in result.supervisor.status().as_dict()


@needs_root
class TestOn:
    """On, where permitted: SCHED_FIFO, the watchdog above it, memory locked, GC between ticks."""

    def test_the_tick_thread_runs_fifo_and_everything_is_put_back(self) -> None:
        """Inside a tick: FIFO at the priority, watchdog at +1, memory locked, GC off."""
        probe = Probe()
        result = run_systems(probe, ticks=4, config=_rt(realtime_priority=20))
        assert probe.policy == os.SCHED_FIFO
        assert probe.fifo_priority == 20
        assert probe.watchdog == (os.SCHED_FIFO, 21)
        assert probe.gc_enabled is False
        assert probe.locked > 0
        status = result.supervisor.status().as_dict()["realtime"]
        assert status["policy"] == "SCHED_FIFO"
        assert status["memory_locked"] in ("onfault", "all")
        assert status["problems"] == []
        assert status["recommendation"] is None
        # the autouse fixture checks the thread, the GC and the locks are back

    def test_cpu_affinity_pins_the_tick_thread_only_while_ticking(self) -> None:
        """``cpu_affinity = "0"``: the tick thread runs on CPU 0 during the run."""
        probe = Probe()
        run_systems(probe, ticks=4, config=_rt(cpu_affinity="0"))
        assert probe.affinity == {0}

    def test_a_cpu_not_available_is_a_problem_not_a_crash(self) -> None:
        """An unavailable CPU: the run goes on unpinned, with one warning line saying so."""
        probe = Probe()
        with structlog.testing.capture_logs() as logs:
            result = run_systems(probe, ticks=4, config=_rt(cpu_affinity="8000"))
        assert probe.affinity == os.sched_getaffinity(0)
        assert probe.policy == os.SCHED_FIFO
        lines = [e for e in logs if e["event"] == "supervisor.realtime"]
        assert len(lines) == 1
        assert lines[0]["log_level"] == "warning"
        assert lines[0]["problems"][0].startswith("cpu_affinity: CPUs 8000 are not available")
        assert "taskset" in lines[0]["recommendation"]
        assert result.summary.ticks == 4

    def test_a_restart_leaves_and_enters_again(self) -> None:
        """Each run of the ticks enters and leaves: after the run, nothing is left applied."""
        probe = Probe()
        run_systems(probe, ticks=4, config=_rt())
        run_systems(probe, ticks=4, config=_rt())
        assert probe.policy == os.SCHED_FIFO


class TestRefused:
    """Where the process is not permitted: one clear log line, a recommendation, ticks go on."""

    def test_no_permission(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """EPERM from sched_setscheduler and mlockall: SCHED_OTHER, and what to grant."""

        def refuse(*_: Any) -> None:
            raise PermissionError(errno.EPERM, "Operation not permitted")

        class NoLock:
            def mlockall(self, _flags: int) -> int:
                ctypes.set_errno(errno.EPERM)
                return -1

            def munlockall(self) -> int:  # pragma: no cover - never locked
                raise AssertionError("nothing was locked")

        monkeypatch.setattr(os, "sched_setscheduler", refuse)
        monkeypatch.setattr(_realtime, "libc", NoLock)
        probe = Probe()
        with structlog.testing.capture_logs() as logs:
            result = run_systems(probe, ticks=5, config=_rt())
        assert result.summary.ticks == 5
        assert probe.policy == os.SCHED_OTHER
        lines = [e for e in logs if e["event"] == "supervisor.realtime"]
        assert len(lines) == 1
        line = lines[0]
        assert line["log_level"] == "warning"
        assert line["policy"] == "SCHED_OTHER"
        assert line["memory_locked"] is None
        assert line["problems"] == [
            "sched_setscheduler: not permitted (needs root or CAP_SYS_NICE; a container may "
            "drop it)",
            "mlockall: not permitted (needs root or CAP_IPC_LOCK)",
        ]
        assert "CAP_SYS_NICE" in line["recommendation"]
        assert "LimitMEMLOCK" in line["recommendation"]
        # the GC still moves between ticks: that needs no permission
        assert line["gc_between_ticks"] is True
        status = result.supervisor.status().as_dict()["realtime"]
        assert status["problems"] == line["problems"]
        [performance] = [c for c in result.supervisor.readiness().checks if c.name == "performance"]
        assert performance.recommendation is not None
        assert performance.recommendation.startswith("realtime mode was refused: run as root")

    def test_memlock_limit(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """ENOMEM from mlockall names RLIMIT_MEMLOCK; a kernel without MCL_ONFAULT retries."""
        calls: list[int] = []

        class Limited:
            def mlockall(self, flags: int) -> int:
                calls.append(flags)
                ctypes.set_errno(errno.EINVAL if flags & 4 else errno.ENOMEM)
                return -1

        monkeypatch.setattr(_realtime, "libc", Limited)
        mode = RealtimeMode(log=None)
        problems: list[str] = []
        assert mode._lock(problems) is None
        assert calls == [7, 3]
        assert problems == [
            "mlockall: over RLIMIT_MEMLOCK (raise `ulimit -l` or grant CAP_IPC_LOCK)"
        ]


class TestThrottling:
    """The kernel's RT throttling is read and reported; off is a problem."""

    def test_read(self, tmp_path: Path) -> None:
        """The two files of /proc/sys/kernel, as integers."""
        (tmp_path / "sched_rt_runtime_us").write_text("950000\n")
        (tmp_path / "sched_rt_period_us").write_text("1000000\n")
        assert rt_throttling(tmp_path) == (950000, 1000000)
        assert rt_throttling(tmp_path / "missing") is None

    def test_off_is_reported(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """``-1``: a runaway realtime thread could starve the machine; say how to turn it on."""
        monkeypatch.setattr(_realtime, "rt_throttling", lambda: (-1, 1000000))
        result = run_systems(Probe(), ticks=3, config=_rt())
        status = result.supervisor.status().as_dict()["realtime"]
        assert status["rt_runtime_us"] == -1
        assert any(p.startswith("sched_rt_runtime_us: -1") for p in status["problems"])
        assert "sched_rt_runtime_us" in status["recommendation"]


class Garbage:
    """Makes ``per_tick`` reference cycles each tick: work for the cyclic GC."""

    name = "garbage"

    def __init__(self, per_tick: int) -> None:
        self.per_tick = per_tick
        self.gc_enabled: list[bool] = []

    def tick(self, ctx: Any) -> None:
        self.gc_enabled.append(gc.isenabled())
        for _ in range(self.per_tick):
            cycle: list[Any] = []
            cycle.append(cycle)


class TestGarbageCollection:
    """The cyclic GC runs between ticks, by CPython's thresholds, within the slack."""

    def test_collections_happen_between_ticks(self) -> None:
        """At 60 Hz on a MockClock every tick leaves its whole period: each tick's garbage goes."""
        garbage = Garbage(per_tick=2 * gc.get_threshold()[0])
        result = run_systems(garbage, ticks=30, config=_rt(), tick_rate=60)
        status = result.supervisor.status().as_dict()["realtime"]
        assert not any(garbage.gc_enabled)
        assert sum(status["collections"]) >= 29  # after every tick but the last
        assert status["collections"][1] >= 2  # the older generation by its own threshold
        assert status["collections_overdue"] == 0

    def test_no_slack_waits_until_overdue(self) -> None:
        """At 2 kHz a period (0.5 ms) is under GC_SLACK: collections wait until overdue."""
        garbage = Garbage(per_tick=gc.get_threshold()[0])
        result = run_systems(garbage, ticks=4 * GC_OVERDUE, config=_rt(), tick_rate=2000)
        status = result.supervisor.status().as_dict()["realtime"]
        assert status["collections_overdue"] >= 2
        assert sum(status["collections"]) == status["collections_overdue"]


@needs_root
class TestChildren:
    """What the tick thread starts begins as SCHED_OTHER (SCHED_RESET_ON_FORK)."""

    def test_threads_and_processes_started_in_a_tick_are_not_realtime(self) -> None:
        """A thread and a process a system starts mid-tick: SCHED_OTHER, priority 0."""
        release = threading.Event()
        seen: dict[str, tuple[int, int]] = {}

        class Spawner:
            name = "spawner"

            def tick(self, ctx: Any) -> None:
                if ctx.tick != 1:
                    return
                seen["tick"] = (_policy(0), os.sched_getparam(0).sched_priority)
                thread = threading.Thread(target=release.wait, daemon=True)
                thread.start()
                assert thread.native_id is not None
                seen["thread"] = (
                    _policy(thread.native_id),
                    os.sched_getparam(thread.native_id).sched_priority,
                )
                out = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        "import os; print(os.sched_getscheduler(0), "
                        "os.sched_getparam(0).sched_priority)",
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                policy, priority = map(int, out.stdout.split())
                seen["process"] = (policy, priority)

        try:
            run_systems(Spawner(), ticks=3, config=_rt(realtime_priority=40))
        finally:
            release.set()
        assert seen == {
            "tick": (os.SCHED_FIFO, 40),
            "thread": (os.SCHED_OTHER, 0),
            "process": (os.SCHED_OTHER, 0),
        }


@needs_root
def test_a_runaway_system_under_fifo_is_interrupted() -> None:
    """A ``while True`` under SCHED_FIFO: the watchdog (one priority above) still interrupts it."""

    class Runaway:
        name = "runaway"

        def tick(self, ctx: Any) -> None:
            if ctx.tick == 1:
                while True:
                    pass

    async def main() -> Any:
        sup = make_supervisor(
            [Runaway()],
            config={
                "supervisor": {"realtime": True},
                "watchdog": {"hang_timeout": 0.05, "kill_timeout": 0.1},
                "features": {"optimizer": False},
            },
        )
        await sup.run(ticks=3)
        return sup

    sup = trio.run(main)
    kinds = [r.kind for r in sup.errors.records]
    assert kinds == ["interrupted"]
    assert sup.errors.records[0].stack is not None
