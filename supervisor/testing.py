"""Test helpers for plugin authors: run systems for N ticks on a MockClock.

The same helpers the supervisor's own tests use::

    from supervisor.testing import run_systems

    def test_counter():
        result = run_systems(Counter(), ticks=30, tick_rate=30)
        assert result.system("counter").total == 30
        assert result.errors == []

Inside a trio test (pytest-trio with the ``autojump_clock`` fixture), use
``await run_systems_async(...)`` instead.

To assert on what a system logged (as structlog's ``capture_logs``, but after
the supervisor's redaction, so a test sees what an operator would)::

    with capture_logs() as logs:
        run_systems(Shop(), ticks=3)
    assert [e["event"] for e in logs if e["system"] == "shop"] == ["opened"]
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from typing import Any

import attrs
import structlog
import trio
import trio.testing

from ._core._config import Config
from ._core._plugins import build, default_name, plan_systems
from ._core._profiles import MachineFacts
from ._core._redact import Redactor
from ._core._runtime import Supervisor
from ._core._safecall import ErrorRecord
from ._core._views import RunSummary

__all__ = [
    "FIXED_FACTS",
    "TestRun",
    "Ticking",
    "capture_logs",
    "make_supervisor",
    "run_systems",
    "run_systems_async",
]

#: Machine facts used by the helpers, so a test picks the same profile on every machine.
FIXED_FACTS = MachineFacts(
    logical_cores=2,
    physical_cores=2,
    freq_mhz=2000.0,
    memory_total_gb=8.0,
    memory_available_gb=6.0,
    load1=0.0,
)

_Systems = Iterable[Any] | Mapping[str, Any]


class Ticking:
    """A system that only counts its ticks: run it beside a faulty one to see the world go on.

    ``ticks`` is how many times it was stepped; with ``gauge`` it also reports
    that count under that name.
    """

    def __init__(self, name: str = "ticking", *, gauge: str | None = None) -> None:
        self.name = name
        self.gauge = gauge
        self.ticks = 0

    def tick(self, ctx: Any) -> None:
        """Count the tick (and report it)."""
        self.ticks += 1
        if self.gauge is not None:
            ctx.report(self.gauge, self.ticks)


@attrs.frozen
class TestRun:
    """What a test run left behind."""

    __test__ = False  # not a pytest test class

    supervisor: Supervisor
    summary: RunSummary

    @property
    def errors(self) -> list[ErrorRecord]:
        """Every error record kept, oldest first."""
        return list(self.supervisor.errors.records)

    def system(self, name: str) -> Any:
        """The system registered as ``name``."""
        return self.supervisor.system(name)


def make_supervisor(
    systems: _Systems,
    *,
    config: Config | Mapping[str, Any] | None = None,
    tick_rate: float | None = None,
    timer: Callable[[], float] | None = None,
    **kwargs: Any,
) -> Supervisor:
    """A supervisor with ``systems`` registered (a mapping registers them under its keys).

    ``config`` may be a ``Config`` or a plain mapping shaped like the TOML
    file; environment overrides are not read, so tests are hermetic. Its
    ``[systems]`` tables work as in a file: a system passed as a *class* is
    built from the table of its name, checked like a file's, and the systems
    the config names (its ``enabled`` list, else its tables; an entry point
    name or ``pkg.module:Class``) are built and registered too. Instances are
    registered as they are. Snapshots are written only when ``state_dir`` is
    given.

    Raises:
        ConfigError: a table's arguments are wrong, or names an unknown system.
    """
    if config is None:
        config = Config()
    elif not isinstance(config, Config):
        config = Config.from_mapping(config, env={})
    if timer is not None:
        kwargs["timer"] = timer
    kwargs.setdefault("facts", FIXED_FACTS)
    # Snapshots only where the test says: never into the working folder.
    kwargs.setdefault("persist", kwargs.get("state_dir") is not None)
    sup = Supervisor(config, tick_rate=tick_rate, **kwargs)
    tables = dict(sup.active_config.systems.options)
    source = config.source
    named = systems.items() if isinstance(systems, Mapping) else ((None, s) for s in systems)
    for given, system in named:
        if isinstance(system, type):  # a class: built from its table, rebuilt on restart
            name = given or default_name(system, system.__name__)
            make = functools.partial(build, name, system, tables.pop(name, {}), source=source)
            sup.register(make(), name=name, origin="code", factory=make)
        else:
            sup.register(system, name=given)
    enabled = sup.active_config.systems.enabled
    wanted = enabled if enabled is not None else tuple(tables)
    for plan in plan_systems(wanted, tables, source=source) if wanted else ():
        make = functools.partial(build, plan.name, plan.factory, plan.options, source=source)
        sup.register(make(), name=plan.name, origin=plan.origin, factory=make)
    return sup


async def run_systems_async(
    *systems: Any,
    ticks: int | None = None,
    duration: float | None = None,
    named: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> TestRun:
    """Run ``systems`` (and ``named``, registered under their keys) inside the current trio run."""
    sup = make_supervisor(systems, **kwargs)
    for name, system in (named or {}).items():
        sup.register(system, name=name)
    summary = await sup.run(ticks=ticks, duration=duration)
    return TestRun(sup, summary)


def run_systems(
    *systems: Any,
    ticks: int | None = 10,
    duration: float | None = None,
    named: Mapping[str, Any] | None = None,
    start_time: float = 0.0,
    **kwargs: Any,
) -> TestRun:
    """Run ``systems`` for ``ticks`` ticks (or ``duration`` seconds) on a fresh MockClock.

    Virtual time jumps whenever every task waits, so a thousand ticks at
    30 Hz take milliseconds, and tick k starts at exactly
    ``start_time + k / tick_rate``.

    Args:
        systems: system instances, registered under their ``name``.
        ticks: how many ticks to run (None with ``duration``).
        duration: or how many seconds of virtual time.
        named: more systems, registered under the mapping's keys.
        start_time: the MockClock's starting time.
        kwargs: passed to ``make_supervisor`` (``config``, ``tick_rate``, ``timer``, ``phase``).
    """
    clock = trio.testing.MockClock(autojump_threshold=0)
    clock.jump(start_time)
    run = functools.partial(
        run_systems_async, *systems, ticks=ticks, duration=duration, named=named, **kwargs
    )
    return trio.run(run, clock=clock)


@contextlib.contextmanager
def capture_logs(sup: Supervisor | None = None) -> Iterator[list[MutableMapping[str, Any]]]:
    """Collect every log event written inside the block, redacted, instead of printing it.

    Each event is the dict a renderer would get: ``event``, ``log_level``,
    the bound ``system`` for a system's ``ctx.log``, and its keyword values,
    after redaction (the default rules, or those of ``sup``, e.g. one built
    from a config with ``[redaction]`` keys). Like structlog's
    ``capture_logs`` it reconfigures structlog for the block and restores it
    after; events below no level are filtered, so debug events are kept too.
    """
    captured: list[MutableMapping[str, Any]] = []

    def keep(_logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Any:
        event_dict.setdefault("log_level", method_name)
        captured.append(event_dict)
        raise structlog.DropEvent

    before = structlog.get_config()
    redact = (Redactor() if sup is None else sup.redactor).structlog_processor()
    structlog.configure(
        processors=[structlog.processors.format_exc_info, redact, keep],
        wrapper_class=structlog.make_filtering_bound_logger(0),
        cache_logger_on_first_use=False,
    )
    try:
        yield captured
    finally:
        structlog.configure(**before)
