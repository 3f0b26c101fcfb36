"""The dashboard's fleet panel lists the fleet's members, in Chromium (issue 12).

One real ``redis-server`` and two real ``supervisor run`` members for the
module: ``a`` (its API on loopback TCP, the tokens of ``test_dashboard_browser``)
and ``b`` (no API, ``fleet_harness``'s member). Beside them, two entries anyone
who can write to the fleet's Redis could plant: a registry id that is markup
(an ``<img onerror>``) and a well-formed member ``evil`` whose host is markup.
The browser, the login and the waits are ``test_dashboard_browser``'s own.

What these tests prove: ``a``'s page shows both real members with their
figures, as ``a``'s ``/v1/status`` lists them; the planted markup is shown as
text (the hostile id in a red problem row) and never becomes an element or
runs. A screenshot of the panel is saved in the test's temp dir.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_harness import running_supervisor
from fleet_harness import start_member, stop
from redis_server import RedisServer, redis_server
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from test_dashboard_browser import (
    OPERATOR_TOKEN,
    VIEWER_TOKEN,
    World,
    _digest,
    _listening,
    browser,
    login,
    wait_for,
)

from supervisor._fleet import Keys

pytestmark = pytest.mark.e2e

__all__ = ["browser"]  # the module's Chromium fixture, shared by import

NAMESPACE = "dash"
#: A registry id and a host that would run a script if the page ever made them markup.
HOSTILE_ID = "<img src=x id=injected-id onerror=window.__pwned=1>"
HOSTILE_HOST = "<img src=x id=injected-host onerror=window.__pwned=2>"
#: What the page shows for "no value".
DASH = "\N{EN DASH}"

CONFIG = f"""\
[api]
listen = "127.0.0.1:0"
tokens = [
  {{ name = "ops", role = "operator", sha256 = "{_digest(OPERATOR_TOKEN)}" }},
  {{ name = "watcher", role = "viewer", sha256 = "{_digest(VIEWER_TOKEN)}" }},
]

[systems]
enabled = ["heartbeat"]

[fleet]
redis = "{{url}}"
namespace = "{NAMESPACE}"
id = "a"
heartbeat = "200ms"
"""


def _record(member_id: str, host: str) -> str:
    """A member record of the shape members write (``parse_record`` accepts it)."""
    return json.dumps(
        {
            "id": member_id, "host": host, "pid": 1, "version": "1", "phase": "production",
            "tick_rate": 30, "measured_tick_rate": 30.0, "lateness_p99_ms": 0.5,
            "players": 7, "errors": 0, "api": None, "state_dir": "/x", "started": 1.0,
            "heartbeat": time.time(),
        }
    )  # fmt: skip


def _plant(redis: RedisServer, member_id: str, text: str) -> None:
    keys = Keys(NAMESPACE)
    redis.command("SET", keys.member(member_id), text, "EX", "600")
    redis.command("ZADD", keys.members, str(time.time()), member_id)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Member ``a`` (the page's supervisor) and member ``b``, both registered, plus the
    planted entries."""
    folder = tmp_path_factory.mktemp("fleet")
    with redis_server() as redis:
        b = start_member(folder, "b", url=redis.url, namespace=NAMESPACE, rate=25.0)
        try:
            _plant(redis, HOSTILE_ID, _record("x", "h"))
            _plant(redis, "evil", _record("evil", HOSTILE_HOST))
            config = CONFIG.replace("{url}", redis.url)
            with running_supervisor(config, address=_listening) as run:
                yield World(run)
        finally:
            stop([b])


def _rows(driver: WebDriver) -> dict[str, list[str]]:
    """The member table's rows by their first cell (the id), as the page shows them."""
    out = {}
    for row in driver.find_elements(By.CSS_SELECTOR, "#fleet-members tbody tr"):
        cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
        out[cells[0]] = cells
    return out


def _rows_of(driver: WebDriver, ids: set[str]) -> dict[str, list[str]] | None:
    """The rows once ``ids`` all have one (None until then)."""
    rows = _rows(driver)
    return rows if ids <= set(rows) else None


def _members(world: World) -> list[str]:
    return [m["id"] for m in world.status()["fleet"]["members"]]


def test_the_page_lists_both_members(browser: WebDriver, world: World, tmp_path: Path) -> None:
    """``a``'s page shows ``a`` and ``b``: phase, rate set, players, errors, heartbeat age;
    the count of members under the table; the same list as ``a``'s ``/v1/status``."""
    login(browser, world, VIEWER_TOKEN)
    wait_for(browser, "the fleet panel", lambda d: d.find_element(By.ID, "fleet").is_displayed())
    rows = wait_for(browser, "a and b on the page", lambda d: _rows_of(d, {"a", "b"}))
    assert rows is not None
    assert set(rows) == {HOSTILE_ID, "a", "b", "evil"}, rows
    assert _members(world) == [HOSTILE_ID, "a", "b", "evil"]
    _id, _host, phase, rate, p99, players, errors, age = rows["b"]
    assert (phase, errors, players) == ("development", "0", DASH), rows["b"]
    assert rate.endswith("/25"), rate
    assert p99 == DASH or p99.endswith(" ms"), p99
    assert age.endswith(" s ago"), age
    assert float(age.split()[0]) < 5.0, age
    assert rows["a"][3].endswith("/20"), rows["a"]
    note = wait_for(browser, "the note", lambda d: d.find_element(By.ID, "fleet-members-note").text)
    assert note == "4 members", note
    panel = browser.find_element(By.ID, "fleet")
    browser.execute_script("arguments[0].scrollIntoView();", panel)
    _shot(panel, tmp_path / "fleet-members.png")


def test_planted_markup_stays_text(browser: WebDriver, world: World) -> None:
    """The hostile id is a red problem row, the hostile host a cell, both as text: no element
    was injected and no handler ran."""
    login(browser, world, VIEWER_TOKEN)
    rows = wait_for(browser, "the planted entries", lambda d: _rows_of(d, {HOSTILE_ID, "evil"}))
    assert rows is not None
    assert rows[HOSTILE_ID] == [HOSTILE_ID, "not a member id"]
    assert rows["evil"][1] == HOSTILE_HOST
    # Each frame rebuilds the table: read it again if a frame replaced it meanwhile.
    problem = wait_for(
        browser,
        "the problem rows",
        lambda d: [
            r.find_element(By.TAG_NAME, "td").text
            for r in d.find_elements(By.CSS_SELECTOR, "#fleet-members tr.bad")
        ],
    )
    assert problem == [HOSTILE_ID]
    assert browser.find_elements(By.CSS_SELECTOR, "#fleet img") == []
    assert browser.find_elements(By.ID, "injected-id") == []
    assert browser.find_elements(By.ID, "injected-host") == []
    assert browser.execute_script("return window.__pwned;") is None


def _shot(element: WebElement, path: Path) -> None:
    """A screenshot of ``element`` (the panel) where the test keeps its files."""
    assert element.screenshot(str(path))
    assert path.stat().st_size > 5_000
