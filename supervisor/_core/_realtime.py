"""Realtime mode (``[supervisor] realtime = true``): the tools realtime audio and trading loops use.

While the tick loop runs (``TickLoop.run``), and only where the process is
permitted (root, ``CAP_SYS_NICE`` / ``CAP_IPC_LOCK``, no container limit):

- the tick thread runs under ``SCHED_FIFO`` at ``realtime_priority``: a
  timer wake-up preempts every ordinary thread at once instead of waiting
  for the fair scheduler;
- memory is locked (``mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)``):
  no page of the process is swapped out. ``MCL_ONFAULT`` locks pages as they
  are touched, so an 8 MiB thread stack is not committed whole (RSS stays
  as it was); kernels without it get ``MCL_CURRENT | MCL_FUTURE``;
- optionally the tick thread is pinned to ``cpu_affinity``;
- idle CPUs are kept from sleeping deeper than ``realtime_max_wake_latency_us``
  (PM QoS: the process holds ``/dev/cpu_dma_latency`` open with that value
  written, as ``cyclictest`` does; the kernel drops the request when the file
  is closed, by ``leave`` or by the process dying). The tick thread sleeps
  between ticks, so the CPU it wakes on is often idle: on a VM whose cpuidle
  driver is ``haltpoll`` an idle vCPU halts and its wake-up waits for the
  host to run it again (hundreds of µs to milliseconds at p99), on bare metal
  a deep C-state takes tens to hundreds of µs to leave. At 0, cpuidle only
  polls. The cost is not the process's: idle CPUs spin instead of halting
  (a VM's vCPUs burn their host cores, a machine burns power), for as long
  as the loop runs; ``-1`` leaves the idle states alone. Timer slack
  (``PR_SET_TIMERSLACK``) needs no setting: the tick waits on a ``timerfd``,
  which has none, and the kernel gives ``SCHED_FIFO`` threads none anyway;
- the cyclic GC runs between ticks (``_gc``: in plain mode too); the
  section shows its collections.

The safety net, so that a runaway system under ``SCHED_FIFO`` cannot starve
the machine: the hang watchdog's thread runs one priority above the tick
thread (it still needs the GIL: a thread asking for it gets it within the
switch interval, 5 ms, from a thread running Python code), its hang
interrupt (``_watchdog``), and the kernel's RT throttling
(``/proc/sys/kernel/sched_rt_runtime_us`` of ``sched_rt_period_us``: by
default 95 % of each second at most for realtime threads), which is read and
reported; ``-1`` (throttling off) is reported as a problem.

Threads and child processes inherit their creator's policy: a worker thread
trio starts from the tick thread, or the error store's writer process, would
run ``SCHED_FIFO`` too. The tick and watchdog threads are set with
``SCHED_RESET_ON_FORK``, so everything they start begins as ``SCHED_OTHER``
(``tests/test_realtime.py::TestChildren``).

Where something is refused, the loop runs on without it: one log line
(``supervisor.realtime``) says what was applied, what was refused and why,
and what to change (the same text is in ``status()["realtime"]``).
On leaving (end of the loop, restart, stop) everything is put back.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import attrs

from ._config_realtime import format_cpus, parse_cpus
from ._config_sections import SupervisorConfig
from ._gc import TickCollector

__all__ = [
    "RealtimeMode",
    "RealtimeReport",
    "libc",
    "rt_throttling",
]

_MCL_CURRENT: Final = 1
_MCL_FUTURE: Final = 2
_MCL_ONFAULT: Final = 4
#: SCHED_FIFO, and what the thread starts (threads, processes) begins as SCHED_OTHER.
_FIFO: Final = os.SCHED_FIFO | os.SCHED_RESET_ON_FORK
_PROC: Final = Path("/proc/sys/kernel")
#: The PM QoS device of the CPUs' wake-up latency (``Documentation/power/pm_qos_interface.rst``).
CPU_DMA_LATENCY = Path("/dev/cpu_dma_latency")


def libc() -> Any:
    """The C library, for ``mlockall``/``munlockall`` (the process's own symbols hold it)."""
    return ctypes.CDLL(None, use_errno=True)


def rt_throttling(proc: Path = _PROC) -> tuple[int, int] | None:
    """``(sched_rt_runtime_us, sched_rt_period_us)``, or None where they cannot be read."""
    try:
        runtime = int((proc / "sched_rt_runtime_us").read_text())
        period = int((proc / "sched_rt_period_us").read_text())
    except (OSError, ValueError):
        return None
    return runtime, period


@attrs.frozen(kw_only=True)
class RealtimeReport:
    """What realtime mode applied on entering, and what it could not."""

    requested: bool
    policy: str = "SCHED_OTHER"
    priority: int = 0
    watchdog_priority: int | None = None
    memory_locked: str | None = None  # "onfault" | "all" | None
    cpus: tuple[int, ...] | None = None
    #: The CPU wake-up latency held through PM QoS (µs), or None where not asked or refused.
    max_wake_latency_us: int | None = None
    gc_between_ticks: bool = False
    rt_runtime_us: int | None = None
    rt_period_us: int | None = None
    problems: tuple[str, ...] = ()
    recommendation: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready mapping (``status()["realtime"]``)."""
        d = attrs.asdict(self)
        d["cpus"] = None if self.cpus is None else list(self.cpus)
        d["problems"] = list(self.problems)
        return d


def _refusal(what: str, exc: OSError) -> str:
    """One problem line for a refused system call, naming the usual cause."""
    if what == "cpu_dma_latency" and exc.errno in (errno.EACCES, errno.EPERM):
        return f"cpu_dma_latency: not permitted ({CPU_DMA_LATENCY} is root's, mode 0600)"
    if what == "cpu_dma_latency" and exc.errno == errno.ENOENT:
        return (
            f"cpu_dma_latency: no {CPU_DMA_LATENCY} (a container without the device, "
            "or a kernel without PM QoS)"
        )
    if exc.errno == errno.EPERM:
        why = "not permitted (needs root or CAP_SYS_NICE; a container may drop it)"
        if what == "mlockall":
            why = "not permitted (needs root or CAP_IPC_LOCK)"
        return f"{what}: {why}"
    if exc.errno == errno.ENOMEM:
        return f"{what}: over RLIMIT_MEMLOCK (raise `ulimit -l` or grant CAP_IPC_LOCK)"
    return f"{what}: {os.strerror(exc.errno or 0) or exc}"


_FIXES: Final = (
    (
        "sched_setscheduler",
        "run as root or grant CAP_SYS_NICE (docker: --cap-add SYS_NICE "
        "--ulimit rtprio=99; systemd: LimitRTPRIO=99)",
    ),
    ("mlockall", "grant CAP_IPC_LOCK or raise the memlock limit (systemd: LimitMEMLOCK=infinity)"),
    ("cpu_affinity", "choose CPUs this process may use (see `taskset -p $PID`)"),
    (
        "cpu_dma_latency",
        "run as root (docker: --device /dev/cpu_dma_latency), or set "
        "realtime_max_wake_latency_us = -1 to leave the CPUs' idle states alone",
    ),
    (
        "sched_rt_runtime_us",
        "keep RT throttling on: echo 950000 > /proc/sys/kernel/sched_rt_runtime_us",
    ),
)


class RealtimeMode:
    """Enters and leaves realtime mode for the tick thread (one per tick loop)."""

    def __init__(self, log: Any, collector: TickCollector | None = None) -> None:
        self._log = log
        #: The tick loop's GC between ticks (its collections are in the section).
        self.collector = collector or TickCollector()
        #: The hang watchdog's thread id (its ``native_id``), when one runs:
        #: it gets the priority above the tick thread's.
        self.watchdog_tid: Callable[[], int | None] = lambda: None
        self.report = RealtimeReport(requested=False)
        self._saved: tuple[int, int, frozenset[int] | None] | None = None
        self._qos_fd: int | None = None

    def status(self) -> dict[str, Any]:
        """``status()["realtime"]``: the report, and the collections since entering."""
        return self.report.as_dict() | self.collector.status()

    # ------------------------------------------------------------------ enter / leave

    def enter(self, config: SupervisorConfig) -> None:
        """On the tick thread: apply what ``config`` asks and is permitted; log it once."""
        if not config.realtime:
            self.report = RealtimeReport(requested=False)
            return
        problems: list[str] = []
        self._saved = (
            os.sched_getscheduler(0),
            os.sched_getparam(0).sched_priority,
            None,
        )
        cpus = self._pin(config.cpu_affinity, problems)
        policy, priority, watchdog = self._schedule(config.realtime_priority, problems)
        locked = self._lock(problems)
        wake = self._hold_wake_latency(config.realtime_max_wake_latency_us, problems)
        throttle = rt_throttling()
        if throttle is not None and throttle[0] < 0:
            problems.append(
                "sched_rt_runtime_us: -1 (RT throttling off: a runaway realtime thread "
                "can starve the machine)"
            )
        fixes = [fix for key, fix in _FIXES if any(p.startswith(key) for p in problems)]
        self.report = RealtimeReport(
            requested=True,
            policy=policy,
            priority=priority,
            watchdog_priority=watchdog,
            memory_locked=locked,
            cpus=None if cpus is None else tuple(sorted(cpus)),
            max_wake_latency_us=wake,
            gc_between_ticks=True,
            rt_runtime_us=None if throttle is None else throttle[0],
            rt_period_us=None if throttle is None else throttle[1],
            problems=tuple(problems),
            recommendation="; ".join(fixes) or None,
        )
        level = self._log.warning if problems else self._log.info
        level("supervisor.realtime", **self.report.as_dict())

    def _pin(self, spec: str | None, problems: list[str]) -> frozenset[int] | None:
        if spec is None:
            return None
        cpus = parse_cpus(spec)  # checked when the config was built
        allowed = os.sched_getaffinity(0)
        if not cpus <= allowed:
            problems.append(
                f"cpu_affinity: CPUs {format_cpus(cpus - allowed)} are not available to this "
                f"process (it may use {format_cpus(allowed)})"
            )
            return None
        try:
            os.sched_setaffinity(0, cpus)
        except OSError as exc:
            problems.append(_refusal("cpu_affinity", exc))
            return None
        assert self._saved is not None
        self._saved = (self._saved[0], self._saved[1], frozenset(allowed))
        return cpus

    def _schedule(self, priority: int, problems: list[str]) -> tuple[str, int, int | None]:
        try:
            os.sched_setscheduler(0, _FIFO, os.sched_param(priority))
        except OSError as exc:
            problems.append(_refusal("sched_setscheduler", exc))
            return "SCHED_OTHER", 0, None
        tid = self.watchdog_tid()
        if tid is None:
            return "SCHED_FIFO", priority, None
        try:
            os.sched_setscheduler(tid, _FIFO, os.sched_param(priority + 1))
        except OSError as exc:
            problems.append(_refusal("sched_setscheduler (watchdog)", exc))
            return "SCHED_FIFO", priority, None
        return "SCHED_FIFO", priority, priority + 1

    def _lock(self, problems: list[str]) -> str | None:
        lib = libc()
        for flags, mode in (
            (_MCL_CURRENT | _MCL_FUTURE | _MCL_ONFAULT, "onfault"),
            (_MCL_CURRENT | _MCL_FUTURE, "all"),
        ):
            if lib.mlockall(flags) == 0:
                return mode
            err = ctypes.get_errno()
            if err != errno.EINVAL:  # EINVAL: a kernel without MCL_ONFAULT
                problems.append(_refusal("mlockall", OSError(err, os.strerror(err))))
                return None
        problems.append("mlockall: refused by the kernel (EINVAL)")
        return None

    def _hold_wake_latency(self, limit: int, problems: list[str]) -> int | None:
        """Ask the kernel (PM QoS) to keep every CPU's wake-up within ``limit`` µs.

        The request lives as long as the file stays open. The descriptor is
        closed on exec (``O_CLOEXEC``), so a program the supervisor starts
        (the error store's writer) cannot keep the request alive after
        ``leave``; a child forked without exec holds it only until it exits.
        """
        if limit < 0:
            return None
        try:
            fd = os.open(CPU_DMA_LATENCY, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            problems.append(_refusal("cpu_dma_latency", exc))
            return None
        try:
            # The kernel takes a native 32-bit integer (or its hex text).
            os.write(fd, limit.to_bytes(4, sys.byteorder, signed=True))
        except OSError as exc:
            os.close(fd)
            problems.append(_refusal("cpu_dma_latency", exc))
            return None
        self._qos_fd = fd
        return limit

    def leave(self) -> None:
        """Put back what ``enter`` changed (scheduler, memory locks, PM QoS request, CPUs)."""
        if not self.report.requested:
            return
        if self.report.memory_locked is not None:
            libc().munlockall()
        fd, self._qos_fd = self._qos_fd, None
        if fd is not None:
            os.close(fd)  # the kernel drops the PM QoS request with the file
        saved, self._saved = self._saved, None
        if saved is not None:
            policy, priority, cpus = saved
            with contextlib.suppress(OSError):
                os.sched_setscheduler(0, policy, os.sched_param(priority))
            if cpus is not None:
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(0, cpus)
        tid = self.watchdog_tid()
        if tid is not None and self.report.watchdog_priority is not None:
            with contextlib.suppress(OSError):  # the watchdog may have stopped already
                os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
