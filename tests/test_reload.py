"""Hot reload (``_core/_reload.py``): the reload chore on a MockClock, exact ticks.

Each test writes a throwaway module with a system's source into a temp folder
on ``sys.path`` (a fresh module name per test), builds a supervisor from
config tables naming it, reloads it while the run ticks, and checks what runs
afterwards: new code, state kept, dependents rebuilt, other systems never
interrupted; and on every kind of failure, the old code and instances.
"""

from __future__ import annotations

import itertools
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from supervisor import Phase
from supervisor.testing import capture_logs, make_supervisor

RATE = 10.0

COUNTER = """
VERSION = {version}

class Counter:
    {extra}
    def __init__(self, step=1):
        {init}
        self.step = step
        self.count = 0
        self.version = VERSION
        self.starts = 0
        self.stops = 0

    def start(self, ctx):
        {start}
        self.starts += 1

    def stop(self, ctx):
        self.stops += 1

    def tick(self, ctx):
        self.count += self.step * VERSION

    def snapshot(self):
        return {{"count": self.count}}

    def restore(self, state):
        {restore}
        self.count = state["count"]
"""

OTHERS = """
class Reader:
    depends_on = ("counter",)

    def __init__(self):
        self.peer = None
        self.seen = 0

    def start(self, ctx):
        self.peer = ctx.system("counter")

    def tick(self, ctx):
        self.seen = self.peer.count


class Plain:
    def __init__(self):
        self.ticks = 0

    def tick(self, ctx):
        self.ticks += 1
"""

_serial = itertools.count()


def counter_source(
    version: int = 1, *, extra: str = "", init: str = "", start: str = "", restore: str = ""
) -> str:
    """The counter module's source; each hole a line of code (or nothing)."""
    return textwrap.dedent(COUNTER).format(
        version=version,
        extra=extra or "pass",
        init=init or "pass",
        start=start or "pass",
        restore=restore or "pass",
    )


class World:
    """A temp package: the counter's module (edited by tests) and a module of two others."""

    def __init__(self, folder: Path) -> None:
        n = next(_serial)
        self.counter_mod = f"hot_counter_{n}"
        self.others_mod = f"hot_others_{n}"
        self.path = folder / f"{self.counter_mod}.py"
        self.write(counter_source())
        (folder / f"{self.others_mod}.py").write_text(textwrap.dedent(OTHERS))

    def write(self, source: str) -> None:
        """New source, seen by the import system now (no stale bytecode by mtime)."""
        self.path.write_text(source)
        pyc = self.path.parent / "__pycache__"
        for cached in pyc.glob(f"{self.counter_mod}.*.pyc"):
            cached.unlink()

    def config(self, **extra: Any) -> dict[str, Any]:
        """Config tables naming the three systems, as a file would."""
        return {
            "systems": {
                "enabled": ["counter", "reader", "plain"],
                "counter": {"use": f"{self.counter_mod}:Counter", "step": 2},
                "reader": {"use": f"{self.others_mod}:Reader"},
                "plain": {"use": f"{self.others_mod}:Plain"},
            },
            **extra,
        }


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    sys.path.insert(0, str(tmp_path))
    w = World(tmp_path)
    try:
        yield w
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(w.counter_mod, None)
        sys.modules.pop(w.others_mod, None)


async def reload_at(
    sup: Any, *, ticks: int, at: float, edit: Callable[[], None], modules: set[str]
) -> Any:
    """Run ``ticks`` ticks; at virtual time ``at`` edit the source and ask for a reload."""
    result: list[Any] = []
    async with trio.open_nursery() as nursery:

        async def ask() -> None:
            await trio.sleep_until(at)
            edit()
            result.append(await sup.reloader.reload(modules))

        nursery.start_soon(ask)
        await sup.run(ticks=ticks)
    return result[0]


class TestReload:
    async def test_new_code_runs_with_state_kept(
        self, world: World, autojump_clock: trio.testing.MockClock
    ) -> None:
        """After the reload the new code ticks from the old count; the others never miss a tick."""
        sup = make_supervisor((), config=world.config(), tick_rate=RATE)
        old = sup.system("counter")
        result = await reload_at(
            sup,
            ticks=20,
            at=0.95,  # ticks 0..9 ran (tick k at k/10 s): the reload follows tick 10's chores
            edit=lambda: world.write(counter_source(version=10)),
            modules={world.counter_mod},
        )
        assert result.ok, result.error
        assert result.systems == ("counter", "reader")  # the dependent is rebuilt too
        assert result.tick == 11  # the tick count after tick 10 (the 11th) ran
        new = sup.system("counter")
        assert new is not old
        assert new.version == 10
        assert old.stops == 1
        assert new.starts == 1
        # 11 ticks of step 2 on the old code, then 9 of 2 * 10 on the new.
        assert new.count == 11 * 2 + 9 * 20
        assert sup.system("reader").peer is new
        assert sup.system("plain").ticks == 20
        assert sup.reloader.section()["last"]["ok"] is True

    @pytest.mark.parametrize(
        ("source", "why"),
        [
            ("class Counter(:\n", "SyntaxError"),
            (counter_source(version=3) + "\nraise RuntimeError('half way')\n", "half way"),
            (counter_source(version=3, init="raise ValueError('ctor')"), "build failed"),
            (counter_source(version=3, restore="raise KeyError('gone')"), "restore() failed"),
            (counter_source(version=3).replace("class Counter", "class Renamed"), "no longer"),
        ],
        ids=["syntax", "module-body", "build", "restore", "renamed"],
    )
    async def test_failure_keeps_old_code(
        self, world: World, source: str, why: str, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Import, build and restore failures: old module, old instance never stopped, one line."""
        sup = make_supervisor((), config=world.config(), tick_rate=RATE)
        old = sup.system("counter")
        module = sys.modules[world.counter_mod]
        with capture_logs() as logs:
            result = await reload_at(
                sup,
                ticks=20,
                at=0.95,
                edit=lambda: world.write(source),
                modules={world.counter_mod},
            )
        assert not result.ok
        assert why in (result.error or "")
        assert sys.modules[world.counter_mod] is module
        assert module.VERSION == 1
        assert sup.system("counter") is old
        assert old.stops == 1
        assert old.starts == 1
        assert old.count == 20 * 2
        failed = [e for e in logs if e["event"] == "reload.failed"]
        assert len(failed) == 1
        assert why in failed[0]["error"]
        assert sup.reloader.section()["last"]["ok"] is False

    async def test_start_failure_brings_the_old_instances_back(
        self, world: World, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A new instance that fails to start: the old one is started again and ticks on."""
        sup = make_supervisor((), config=world.config(), tick_rate=RATE)
        old = sup.system("counter")
        result = await reload_at(
            sup,
            ticks=20,
            at=0.95,
            edit=lambda: world.write(counter_source(version=3, start="raise OSError('port')")),
            modules={world.counter_mod},
        )
        assert not result.ok
        assert "start() failed" in (result.error or "")
        assert sup.system("counter") is old
        assert old.starts == 2
        assert old.count == 20 * 2
        assert sys.modules[world.counter_mod].VERSION == 1

    async def test_refused_outside_development(
        self, world: World, autojump_clock: trio.testing.MockClock
    ) -> None:
        """In TESTING a reload is refused with a reason; nothing changes."""
        sup = make_supervisor((), config=world.config(), tick_rate=RATE, phase=Phase.TESTING)
        old = sup.system("counter")
        result = await reload_at(
            sup,
            ticks=5,
            at=0.25,
            edit=lambda: world.write(counter_source(version=5)),
            modules={world.counter_mod},
        )
        assert not result.ok
        assert "development phase only" in (result.error or "")
        assert sup.system("counter") is old

    def test_not_reloadable_said_once(self, world: World) -> None:
        """A system registered in code, or one that opts out, is not watched: said once each."""

        class InCode:
            def tick(self, ctx: Any) -> None:
                pass

        world.write(counter_source(extra="reload = False"))
        sup = make_supervisor({"incode": InCode()}, config=world.config())
        with capture_logs() as logs:
            files = sup.reloader.watched()
            sup.reloader.watched()
        assert set(files.values()) == {world.others_mod}
        told = {e["system"]: e["reason"] for e in logs if e["event"] == "reload.not_reloadable"}
        assert len([e for e in logs if e["event"] == "reload.not_reloadable"]) == 2
        assert told["counter"] == "opted out (reload = False)"
        assert "without a factory" in told["incode"]

    async def test_unpackable_state_keeps_old_code(
        self, world: World, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A ``snapshot()`` whose state msgpack cannot pack: refused before the module reloads."""
        world.write(
            counter_source().replace('return {"count": self.count}', 'return {"count": object()}')
        )
        sup = make_supervisor((), config=world.config(), tick_rate=RATE)
        old = sup.system("counter")
        result = await reload_at(
            sup,
            ticks=10,
            at=0.45,
            edit=lambda: world.write(counter_source(version=9)),
            modules={world.counter_mod},
        )
        assert not result.ok
        assert "snapshot() state" in (result.error or "")
        assert sup.system("counter") is old
        assert sys.modules[world.counter_mod].VERSION == 1

    async def test_refused_while_stopping(
        self, world: World, autojump_clock: trio.testing.MockClock
    ) -> None:
        """A reload asked for once the run is stopping is refused at once (no chore runs again)."""
        sup = make_supervisor((), config=world.config(), tick_rate=RATE)
        results = []

        async def ask() -> None:
            await trio.sleep(0.45)
            sup.stop("test")
            results.append(await sup.reloader.reload([world.counter_mod]))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            await sup.run(ticks=100)
        assert results[0].ok is False
        assert results[0].error == "the run is stopping"
