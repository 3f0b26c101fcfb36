"""The dashboard's panels for rollouts, experiments, the fleet and other capabilities, in Chromium.

One ``supervisor run`` for the module (the world of ``test_dashboard_browser``:
its API on loopback TCP, a viewer and an operator token, an audit log) with a
flag ``new_shop``, an experiment ``layout`` whose arm b fails one tick in three,
a fleet member whose Redis is a closed port (so its section says
``disconnected`` with the connection error, and the world keeps ticking), and
memory tracking on (its ``memory`` section is shown generically). No shared
snapshot store: a member with one claims its world's lease in Redis at start
and refuses to run without it (failover's fencing).
A rollout of ``new_shop`` is started through the API with the operator's bearer
token, as a script would. The browser, the login and the waits are
``test_dashboard_browser``'s own (imported, not copied).

What these tests prove: the panels show what ``/v1/status`` says, a viewer gets
no rollout button, an operator pauses and resumes the rollout from the page through
the confirmation dialog (the audit log has both with their reasons), and text a
client chose (a rollout reason with markup) stays text.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cli_harness import running_supervisor
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from test_dashboard_browser import (
    OPERATOR_TOKEN,
    VIEWER_TOKEN,
    World,
    _digest,
    _listening,
    browser,
    confirm,
    login,
    wait_for,
)

pytestmark = pytest.mark.e2e

__all__ = ["browser"]  # the module's Chromium fixture, shared by import

CONFIG = f"""\
[supervisor]
state_dir = "state"

[features]
memory_tracking = true

[api]
listen = "127.0.0.1:0"
audit_log = "state/audit.jsonl"
tokens = [
  {{ name = "ops", role = "operator", sha256 = "{_digest(OPERATOR_TOKEN)}" }},
  {{ name = "watcher", role = "viewer", sha256 = "{_digest(VIEWER_TOKEN)}" }},
]

[fleet]
redis = "redis://127.0.0.1:1/0"
id = "panel-test"

[systems]
enabled = ["heartbeat", "shop"]

[systems.shop]
use = "shop:Shop"

[recovery]
max_restarts = 100000
window_seconds = 1
backoff_initial = 0

[flags.new_shop]
percent = 0
segments = ["beta"]

[experiments.layout]
arms = {{ a = 50, b = 50 }}
"""

SHOP = '''
class Shop:
    """Serves 50 players a tick; arm b (the new layout) fails one tick in three."""

    def tick(self, ctx):
        for player in range(50):
            ctx.flag("new_shop", player)
            if ctx.variant("layout", player) == "b" and ctx.tick % 3 == 0:
                raise RuntimeError("layout b broke")
'''

#: A reason with markup: the page must show it as text.
MARKUP = "<img src=x id=injected-reason onerror=window.__pwned=1>"


def _post(world: World, path: str, body: dict[str, Any]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    return httpx.post(world.base + path, json=body, headers=headers, timeout=10)


def _rollout(world: World) -> dict[str, Any]:
    (rollout,) = world.status()["rollouts"]["rollouts"]
    data: dict[str, Any] = rollout
    return data


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    """The supervisor, with a rollout of ``new_shop`` (1, 5, 25, 100 %, every 10 min) started."""
    with running_supervisor(CONFIG, files={"shop.py": SHOP}, address=_listening) as run:
        w = World(run)
        body = {"steps": "1,5,25,100", "every": "10m", "reason": "ship the new shop"}
        answer = _post(w, "/v1/rollouts/new_shop/start", body)
        assert answer.status_code == 200, answer.text
        yield w


def _rollout_row(driver: WebDriver) -> list[str]:
    row = driver.find_element(By.CSS_SELECTOR, '#rollouts tr[data-flag="new_shop"]')
    return [td.text for td in row.find_elements(By.TAG_NAME, "td")]


def test_rollout_panel_shows_the_rollout_and_a_viewer_gets_no_button(
    browser: WebDriver, world: World
) -> None:
    """Flag, state, percent, step k/n, the next step's countdown; no button for a viewer."""
    login(browser, world, VIEWER_TOKEN)
    wait_for(
        browser,
        "the rollouts panel",
        lambda d: d.find_element(By.ID, "rollouts-panel").is_displayed(),
    )
    cells = _rollout_row(browser)
    assert cells[:4] == ["new_shop", "running", "1 %", "1/4 (1 → 5 → 25 → 100 %)"], cells
    assert cells[4].startswith(("9m", "10m")), cells
    assert not any(
        b.is_displayed() for b in browser.find_elements(By.CSS_SELECTOR, "#rollouts button")
    )
    flag = browser.find_element(By.CSS_SELECTOR, '#flags tr[data-flag="new_shop"]').text
    assert flag == "new_shop (set at run time) yes 1 % beta", flag


def test_experiment_panel_shows_the_failing_arm_as_significant(
    browser: WebDriver, world: World
) -> None:
    """Per arm: players, errors, errors per player-minute, the p-value; arm b turns red."""
    login(browser, world, VIEWER_TOKEN)
    arm_b = '#experiments tr[data-arm="b"]'
    wait_for(
        browser,
        "arm b to be significantly worse",
        lambda d: "bad" in (d.find_element(By.CSS_SELECTOR, arm_b).get_attribute("class") or ""),
    )
    a = browser.find_element(By.CSS_SELECTOR, '#experiments tr[data-arm="a"]')
    b = browser.find_element(By.CSS_SELECTOR, arm_b)
    a_cells = [td.text for td in a.find_elements(By.TAG_NAME, "td")]
    b_cells = [td.text for td in b.find_elements(By.TAG_NAME, "td")]
    assert (a_cells[0], a_cells[3], a_cells[5]) == ("a", "0", "control"), a_cells
    assert (b_cells[0], b_cells[6]) == ("b", "yes"), b_cells
    assert int(b_cells[3]) > 0, b_cells
    assert float(b_cells[5]) < 0.05, b_cells
    assert int(a_cells[1]) + int(b_cells[1]) == 50, (a_cells, b_cells)
    text = browser.find_element(By.ID, "experiments").text
    assert "experiment layout" in text
    assert "shop: step p50" in text
    assert "two-sample Poisson rate test" in text


def _row(driver: WebDriver, key: str) -> tuple[str, str]:
    """The text and the class of the fleet panel's row ``key``."""
    row = driver.find_element(By.CSS_SELECTOR, f'#fleet tr[data-key="{key}"]')
    return row.text, row.get_attribute("class") or ""


def test_fleet_and_other_sections(browser: WebDriver, world: World) -> None:
    """The fleet member's state and last error (its Redis is down); a section without a panel
    of its own (``memory``) as key/value text."""
    login(browser, world, VIEWER_TOKEN)
    wait_for(browser, "the fleet panel", lambda d: d.find_element(By.ID, "fleet").is_displayed())
    # Each frame rebuilds the panel's rows: read a row's text and class in one go,
    # again if the frame replaced it meanwhile (wait_for ignores stale elements).
    text, classes = wait_for(browser, "the fleet's state", lambda d: _row(d, "state"))
    assert text.startswith("state "), text
    assert text != "state connected"
    assert "warn" in classes
    wait_for(browser, "the fleet's last error", lambda d: "bad" in _row(d, "last_error")[1])
    assert wait_for(browser, "the fleet's id", lambda d: _row(d, "id"))[0] == "id panel-test"
    memory = '#capabilities [data-section="memory"]'
    shown_text = wait_for(
        browser,
        "the memory section",
        lambda d: (
            d.find_element(By.CSS_SELECTOR, memory).text
            if d.find_element(By.CSS_SELECTOR, memory).is_displayed()
            else ""
        ),
    )
    assert shown_text.startswith("memory\n"), shown_text
    shown = wait_for(
        browser,
        "the capabilities",
        lambda d: {
            el.get_attribute("data-section")
            for el in d.find_elements(By.CSS_SELECTOR, "#capabilities [data-section]")
        },
    )
    assert not shown & {"fleet", "rollouts", "flags", "windows", "machine"}, shown


def test_operator_pauses_and_resumes_the_rollout_from_the_page(
    browser: WebDriver, world: World
) -> None:
    """Pause (confirm + reason) → paused on the page and in the API, audited with the reason;
    the reason (with markup) is shown as text; then Resume brings it back to running."""
    login(browser, world, OPERATOR_TOKEN)
    pause = '#rollouts tr[data-flag="new_shop"] button[data-action="pause"]'
    wait_for(
        browser, "the pause button", lambda d: d.find_element(By.CSS_SELECTOR, pause).is_displayed()
    )
    assert not browser.find_elements(By.CSS_SELECTOR, '#rollouts button[data-action="resume"]')
    browser.find_element(By.CSS_SELECTOR, pause).click()
    title = browser.find_element(By.ID, "confirm-title").text
    assert title == "Pause the rollout of new_shop", title
    reason = f"browser test: hold {MARKUP}"
    confirm(browser, reason)
    wait_for(browser, "paused on the page", lambda d: _rollout_row(d)[1] == "paused")
    assert _rollout(world)["state"] == "paused"
    done = world.audited("rollout_pause")
    assert done, "no audit line"
    assert done[-1]["arguments"] == {"flag": "new_shop", "reason": reason}
    assert done[-1]["result"]["status"] == 200
    wait_for(browser, "the reason", lambda d: MARKUP in _rollout_row(d)[6])
    assert browser.find_elements(By.ID, "injected-reason") == []
    assert browser.execute_script("return window.__pwned;") is None

    resume = '#rollouts tr[data-flag="new_shop"] button[data-action="resume"]'
    wait_for(
        browser,
        "the resume button",
        lambda d: d.find_element(By.CSS_SELECTOR, resume).is_displayed(),
    )
    browser.find_element(By.CSS_SELECTOR, resume).click()
    confirm(browser, "browser test: go on")
    wait_for(browser, "running again", lambda d: _rollout_row(d)[1] == "running")
    assert _rollout(world)["state"] == "running"
    assert world.audited("rollout_resume")[-1]["arguments"] == {
        "flag": "new_shop",
        "reason": "browser test: go on",
    }
