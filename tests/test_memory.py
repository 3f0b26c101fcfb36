"""Memory per system (``_core/_memory.py``): attribution by class source lines, and a real run.

The unit tests trace allocations made by two classes of one throwaway module
(told apart by their lines); the end-to-end test runs ``supervisor run`` with
``[features] memory_tracking = true`` and a system that holds 20 MB, and
reads it on top of ``status`` and in ``/metrics`` (issue 17: within a minute).
"""

from __future__ import annotations

import importlib
import sys
import textwrap
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_harness import running_supervisor

from supervisor._alerts._signals import Reading, Window
from supervisor._core._config_alerts import parse_when
from supervisor._core._memory import attribute
from supervisor.testing import make_supervisor

MB = 1 << 20

HOGS = """
class Hog:
    def __init__(self, mb=20):
        self.mb = mb
        self.held = []

    def start(self, ctx):
        self.held = [bytearray(1 << 20) for _ in range(self.mb)]

    def tick(self, ctx):
        pass


class Small:
    def __init__(self):
        self.held = []

    def start(self, ctx):
        self.held = [bytearray(1 << 10) for _ in range(100)]

    def tick(self, ctx):
        self.held.append(str(len(self.held)))
"""


@pytest.fixture
def hogs(tmp_path: Path) -> Iterator[Any]:
    (tmp_path / "hogs_unit.py").write_text(textwrap.dedent(HOGS))
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module("hogs_unit")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("hogs_unit", None)


class TestAttribute:
    def test_two_classes_of_one_module_told_apart(self, hogs: Any) -> None:
        """20 MB held by Hog counts as Hog's, 100 KB as Small's: by the lines of each class."""
        sup = make_supervisor({"hog": hogs.Hog(), "small": hogs.Small()})
        tracemalloc.start(16)
        try:
            sup.system("hog").start(None)
            sup.system("small").start(None)
            sup.memory._classes = [(n, type(sup.system(n))) for n in sup.names]
            ranges = sup.memory.ranges()
            by_system, total, unattributed = attribute(ranges)
        finally:
            tracemalloc.stop()
        assert by_system["hog"] >= 20 * MB
        assert 100 * 1024 <= by_system["small"] < MB
        assert total >= by_system["hog"] + by_system["small"] + unattributed - 1
        path = hogs.Hog.start.__code__.co_filename
        assert {name for *_, name in ranges[path]} == {"hog", "small"}

    def test_status_section_only_when_configured(self) -> None:
        """Off by default: no service, no ``memory`` section; on: both."""
        off = make_supervisor({})
        assert "memory" not in off.status_sections
        try:
            on = make_supervisor({}, config={"features": {"memory_tracking": True}})
            assert tracemalloc.is_tracing()  # from the start: the constructors count
        finally:
            tracemalloc.stop()
        assert "memory" in on.status_sections
        assert on.memory.service in on.services
        assert on.status_sections["memory"]()["top"] == []


@pytest.fixture(scope="module")
def tracked_run() -> Iterator[Path]:
    config = textwrap.dedent("""
        [features]
        memory_tracking = true
        [systems]
        enabled = ["hog", "small"]
        [systems.hog]
        use = "hogs_run:Hog"
        [systems.small]
        use = "hogs_run:Small"
        [api]
        listen = "unix:s.sock"
        """)
    files = {"hogs_run.py": textwrap.dedent(HOGS)}
    with running_supervisor(config, files=files, tick_rate=30) as running:
        yield running.folder


def test_hog_on_top_within_a_minute(tracked_run: Path) -> None:
    """The 20 MB system is first in ``status`` with >= 15 MB, and in ``/metrics``."""
    transport = httpx.HTTPTransport(uds=str(tracked_run / "s.sock"))
    with httpx.Client(transport=transport, timeout=5) as client:
        deadline = time.monotonic() + 60
        while True:
            memory = client.get("http://x/v1/status").json()["memory"]
            if memory["top"] and memory["top"][0]["bytes"] >= 15 * MB:
                break
            assert time.monotonic() < deadline, memory
            time.sleep(0.2)
        metrics = client.get("http://x/metrics").text
    assert memory["tracking"] is True
    top = memory["top"][0]
    assert top["system"] == "hog"
    assert top["bytes"] >= 15 * MB
    assert memory["top"][1]["system"] == "small"
    line = next(
        x
        for x in metrics.splitlines()
        if x.startswith('supervisor_system_memory_bytes{system="hog"}')
    )
    assert float(line.split()[-1]) >= 15 * MB


class TestAlertMetrics:
    def test_memory_and_growth_over_the_window(self) -> None:
        """``system_memory_mb{system}`` is the newest reading; ``..._growth_mb`` newest - oldest."""
        window = Window(seconds=60)
        window.push(Reading(at=0.0, memory_mb={"hog": 20.0}))
        window.push(Reading(at=30.0, memory_mb={"hog": 50.0, "new": 1.0}))
        assert window.value("system_memory_mb", {"system": "hog"}) == 50.0
        assert window.value("system_memory_growth_mb", {"system": "hog"}) == 30.0
        assert window.value("system_memory_growth_mb", {"system": "new"}) is None
        assert window.value("system_memory_mb", {"system": "nosuch"}) is None

    def test_rule_needs_a_system(self) -> None:
        """A memory rule names its system: without one it is refused (one line)."""
        assert parse_when('system_memory_growth_mb{system="hog"} > 10')[0] == (
            "system_memory_growth_mb"
        )
        with pytest.raises(ValueError, match="needs the label 'system'"):
            parse_when("system_memory_mb > 100")


class TestReadiness:
    def test_tracking_in_production_fails_the_performance_check(self) -> None:
        """Tracking on in PRODUCTION's overlay: readiness says so (promotion needs --force)."""
        try:
            sup = make_supervisor({}, config={"features": {"memory_tracking": True}})
        finally:
            tracemalloc.stop()
        check = next(c for c in sup.readiness().checks if c.name == "performance")
        assert not check.ok
        assert "memory tracking is on" in check.detail
        assert "memory_tracking = false" in (check.recommendation or "")
        off = make_supervisor(
            {},
            config={
                "features": {"memory_tracking": True},
                "phases": {"production": {"features": {"memory_tracking": False}}},
            },
        )
        tracemalloc.stop()
        check = next(c for c in off.readiness().checks if c.name == "performance")
        assert "memory tracking" not in check.detail
