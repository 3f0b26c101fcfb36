"""The dashboard in a real browser: Debian's Chromium, headless, driven by Selenium.

One ``supervisor run`` for the module (a real process, its API on a free
loopback TCP port, a viewer and an operator token, an audit log) runs a small
world: the heartbeat, 20 players and ``bomb``, a system that raises a
recognisable error on every tick from tick 20 on. One Chromium for the module
(``--headless=new``, a fresh profile in a temp dir, through Debian's
``chromedriver``: Selenium never downloads a driver) logs in through the form
as a person would. The tests run in file order: the last two press the
emergency button (the world stops ticking) and then Restart.

What a browser sees and a plain HTTP test cannot: the page's script really runs
under the Content-Security-Policy, the session cookie is stored with its flags,
the stream really updates the page without a reload, the dialog really asks for a
reason, and every request the page makes (read from Chromium's DevTools network
log) goes to the supervisor's own origin.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import attrs
import httpx
import pytest
from cli_harness import Running, running_supervisor
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: Flags for a quiet, reproducible headless Chromium that talks to nobody but the page.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--window-size=1280,1100",
)
VIEWER_TOKEN = "viewer-token-for-the-browser-tests"
OPERATOR_TOKEN = "operator-token-for-the-browser-tests"
#: The failing system's message, to find it on the page: with markup that would run a
#: script if the page ever put server text into innerHTML.
BOOM = "bomb went off <img src=x id=injected onerror=window.__pwned=1> on tick"
#: Seconds any page-side wait may take (frames come every second; the box is shared).
WAIT = 20.0

T = TypeVar("T")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


CONFIG = f"""\
[supervisor]
state_dir = "state"

[api]
listen = "127.0.0.1:0"
audit_log = "state/audit.jsonl"
tokens = [
  {{ name = "ops", role = "operator", sha256 = "{_digest(OPERATOR_TOKEN)}" }},
  {{ name = "watcher", role = "viewer", sha256 = "{_digest(VIEWER_TOKEN)}" }},
]

[systems]
enabled = ["heartbeat", "players", "bomb"]

[systems.players]
count = 20

[systems.bomb]
use = "bomb:Bomb"
"""

BOMB = f'''
class Bomb:
    """Raises on every tick from tick 20 on (not critical: it is retried and quarantined)."""

    def tick(self, ctx):
        if ctx.tick >= 20:
            raise RuntimeError({BOOM!r} + f" {{ctx.tick}}")
'''


@attrs.frozen
class World:
    """A ``supervisor run`` listening on loopback TCP, and how to reach it."""

    run: Running

    @property
    def base(self) -> str:
        return self.run.api

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.run.proc

    def get(self, path: str, token: str = VIEWER_TOKEN) -> httpx.Response:
        """GET ``path`` with a bearer token, as a script would."""
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.get(self.base + path, headers=headers, timeout=10)

    def status(self) -> dict[str, Any]:
        answer = self.get("/v1/status")
        assert answer.status_code == 200, answer.text
        data: dict[str, Any] = answer.json()
        return data

    def audited(self, action: str) -> list[dict[str, Any]]:
        """The audit log's ``result`` lines of ``action``, oldest first."""
        path = self.run.folder / "state" / "audit.jsonl"
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [x for x in lines if x.get("action") == action and x.get("stage") == "result"]


def _listening(folder: Path) -> str | None:
    """``http://HOST:PORT`` from the ``api.listening`` JSON log line, once it is written."""
    for line in (folder / "run.log").read_text(errors="replace").splitlines():
        if '"api.listening"' in line:
            return f"http://{json.loads(line)['listen']}"
    return None


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    """One supervisor for the module, on ``127.0.0.1:0`` (its port read from its log)."""
    with running_supervisor(CONFIG, files={"bomb.py": BOMB}, address=_listening) as run:
        yield World(run)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """One headless Chromium for the module, with a fresh profile and its DevTools network log."""
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not exe.exists():
            pytest.fail(f"{exe} is missing: .ci/services.sh installs chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: WebDriver, what: str, condition: Callable[[WebDriver], T]) -> T:
    """Poll ``condition`` until it is truthy; on timeout say what was awaited."""
    try:
        # An element read while the page navigates (a form post) goes stale: poll again.
        return WebDriverWait(
            driver, WAIT, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
        ).until(condition)
    except TimeoutException:
        pytest.fail(f"timed out waiting for {what}; page at {driver.current_url}")


def login(driver: WebDriver, world: World, token: str) -> None:
    """Log in through the form, as a person would, from a browser with no session."""
    driver.delete_all_cookies()
    driver.get(world.base + "/dashboard")
    wait_for(driver, "the login form", lambda d: d.current_url.endswith("/dashboard/login"))
    field = driver.find_element(By.CSS_SELECTOR, "input[name=token]")
    field.send_keys(token)
    field.submit()
    wait_for(driver, "the dashboard", lambda d: d.current_url.endswith("/dashboard"))
    wait_for(driver, "a first frame", lambda d: d.find_element(By.ID, "tick").text.isdigit())


def chromium_log(driver: WebDriver, kind: str) -> list[dict[str, Any]]:
    """Chromium's ``performance`` (DevTools events) or ``browser`` (console) log since last read."""
    entries: list[dict[str, Any]] = driver.get_log(kind)  # type: ignore[no-untyped-call]  # untyped in selenium
    return entries


def confirm(driver: WebDriver, reason: str) -> None:
    """Fill the open confirmation dialog: the reason, "I am sure", Confirm."""
    driver.find_element(By.ID, "confirm-reason").send_keys(reason)
    driver.find_element(By.ID, "confirm-sure").click()
    driver.find_element(By.ID, "confirm-ok").click()


def tick_on_page(driver: WebDriver) -> int:
    return int(driver.find_element(By.ID, "tick").text)


def page_fetch(driver: WebDriver, path: str, body: dict[str, Any], csrf: str | None) -> int:
    """POST from inside the page with its cookie (as a forged script would); the status code."""
    status: int = driver.execute_async_script(
        """
        const [path, body, csrf, done] = arguments;
        const headers = {"Content-Type": "application/json"};
        if (csrf !== null) headers["X-CSRF-Token"] = csrf;
        const init = {method: "POST", credentials: "same-origin", headers};
        init.body = JSON.stringify(body);
        fetch(path, init).then((r) => done(r.status), (e) => done(-1));
        """,
        path,
        body,
        csrf,
    )
    return status


def page_csrf(driver: WebDriver) -> str:
    """The session's CSRF token, as the page itself learns it."""
    session: dict[str, Any] = driver.execute_async_script(
        """
        const done = arguments[0];
        fetch("/dashboard/session", {credentials: "same-origin"}).then((r) => r.json()).then(done);
        """
    )
    return str(session["csrf"])


def test_login_through_the_form(browser: WebDriver, world: World) -> None:
    """No session → the form; a wrong token → the form again with one line; the right one → in."""
    browser.delete_all_cookies()
    browser.get(world.base + "/dashboard")
    wait_for(browser, "the login form", lambda d: d.current_url.endswith("/dashboard/login"))
    field = browser.find_element(By.CSS_SELECTOR, "input[name=token]")
    assert field.get_attribute("type") == "password"
    field.send_keys("not-a-token")
    field.submit()
    wait_for(browser, "the refusal line", lambda d: d.find_element(By.ID, "login-error").text)
    assert browser.current_url.endswith("/dashboard/login")
    assert browser.find_elements(By.CSS_SELECTOR, "input[name=token]")
    assert browser.get_cookies() == []
    login(browser, world, VIEWER_TOKEN)
    assert "token" not in browser.current_url
    assert browser.find_element(By.ID, "role").text == "watcher (viewer)"


def test_tick_count_grows_without_reload(browser: WebDriver, world: World) -> None:
    """The stream moves the tick count along; a marker set in the page survives (no reload)."""
    login(browser, world, VIEWER_TOKEN)
    browser.execute_script("window.__noReload = 'still here';")
    first = tick_on_page(browser)
    wait_for(browser, "the tick to move twice", lambda d: tick_on_page(d) > first + 20)
    assert browser.execute_script("return window.__noReload;") == "still here"
    later = world.status()["tick"]
    assert tick_on_page(browser) <= later
    uptime = browser.find_element(By.ID, "uptime").text
    assert uptime.endswith("s"), uptime


def test_failing_system_turns_red_and_its_error_appears(browser: WebDriver, world: World) -> None:
    """``bomb`` fails every tick: its row turns red and its (text-rendered) error is listed."""
    login(browser, world, VIEWER_TOKEN)
    row = 'tr[data-system="bomb"]'
    wait_for(
        browser,
        "bomb's row to turn red",
        lambda d: "bad" in (d.find_element(By.CSS_SELECTOR, row).get_attribute("class") or ""),
    )
    color = browser.find_element(By.CSS_SELECTOR, f"{row} td").value_of_css_property("color")
    assert color == "rgba(180, 35, 24, 1)", color
    healthy = browser.find_element(By.CSS_SELECTOR, 'tr[data-system="heartbeat"]')
    assert "bad" not in (healthy.get_attribute("class") or "")
    wait_for(browser, "bomb's error", lambda d: BOOM in d.find_element(By.ID, "errors").text)
    assert browser.find_elements(By.ID, "injected") == []  # the markup stayed text
    assert browser.execute_script("return window.__pwned;") is None
    assert "RuntimeError" in browser.find_element(By.ID, "errors").text


def test_viewer_has_no_operator_controls_and_a_forged_post_is_refused(
    browser: WebDriver, world: World
) -> None:
    """A viewer sees no action button; a POST forged in its page (with its CSRF token) is 403."""
    login(browser, world, VIEWER_TOKEN)
    assert not browser.find_element(By.ID, "operator").is_displayed()
    assert not any(
        b.is_displayed() for b in browser.find_elements(By.CSS_SELECTOR, "#systems button")
    )
    csrf = page_csrf(browser)
    body = {"emergency": True, "reason": "forged by a viewer"}
    assert page_fetch(browser, "/v1/shutdown", body, csrf) == 403
    assert page_fetch(browser, "/v1/systems/bomb/quarantine", {"reason": "x"}, csrf) == 403
    assert world.status()["phase"] == "development"


def test_cookie_flags(browser: WebDriver, world: World) -> None:
    """The session cookie: HttpOnly (no script reads it), SameSite=Strict, Path=/, expiring."""
    login(browser, world, VIEWER_TOKEN)
    cookies = browser.get_cookies()
    assert len(cookies) == 1, cookies
    cookie = cookies[0]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/"
    assert cookie["expiry"] > time.time()
    assert cookie["value"] not in VIEWER_TOKEN
    assert browser.execute_script("return document.cookie;") == ""


def test_logout_ends_the_session(browser: WebDriver, world: World) -> None:
    """The button ends the session: back to the form, no cookie, the dashboard asks again."""
    login(browser, world, VIEWER_TOKEN)
    browser.find_element(By.ID, "logout").click()
    wait_for(browser, "the login form", lambda d: d.current_url.endswith("/dashboard/login"))
    assert browser.get_cookies() == []
    browser.get(world.base + "/dashboard")
    assert browser.current_url.endswith("/dashboard/login")


def test_post_without_csrf_is_refused(browser: WebDriver, world: World) -> None:
    """Even an operator's cookie changes nothing without the session's CSRF token."""
    login(browser, world, OPERATOR_TOKEN)
    body = {"phase": "testing", "reason": "no csrf"}
    assert page_fetch(browser, "/v1/phase", body, None) == 403
    assert page_fetch(browser, "/v1/phase", body, "0" * 43) == 403
    assert world.status()["phase"] == "development"


def test_nothing_is_loaded_from_another_origin(browser: WebDriver, world: World) -> None:
    """Every request the page made (DevTools network log and resource timing) is same-origin."""
    for kind in ("performance", "browser"):
        chromium_log(browser, kind)  # drop what earlier tests logged (their refusals, on purpose)
    login(browser, world, OPERATOR_TOKEN)
    time.sleep(1.5)
    urls = []
    for entry in chromium_log(browser, "performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    urls += browser.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name);"
    )
    assert any(u.endswith("/dashboard/static/uPlot.iife.min.js") for u in urls), urls
    assert any(u.endswith("/dashboard/events") for u in urls), urls
    foreign = [u for u in urls if not u.startswith((world.base + "/", "data:"))]
    assert foreign == []
    csp = world.get("/dashboard", OPERATOR_TOKEN).headers.get("content-security-policy", "")
    assert "default-src 'self'" in csp
    # No script error and no CSP violation in the console (the login form has no icon of
    # its own, so Chromium's same-origin guess at /favicon.ico is the only 404 allowed).
    problems = [
        e
        for e in chromium_log(browser, "browser")
        if e["level"] == "SEVERE" and "/favicon.ico " not in e["message"]
    ]
    assert problems == [], problems


def test_lost_connection_shows_a_banner_and_reconnects(browser: WebDriver, world: World) -> None:
    """The supervisor freezes (SIGSTOP): no frame comes, and within seconds a banner says the
    connection is lost; once it runs again (SIGCONT) the page reconnects by itself, the banner
    goes and the tick moves again, without a reload."""
    login(browser, world, VIEWER_TOKEN)
    browser.execute_script("window.__noReload = 'still here';")
    banner = browser.find_element(By.ID, "banner")
    assert not banner.is_displayed()
    world.proc.send_signal(signal.SIGSTOP)
    try:
        wait_for(browser, "the banner", lambda d: banner.is_displayed())
        assert "Connection lost" in banner.text
        stuck = tick_on_page(browser)
    finally:
        world.proc.send_signal(signal.SIGCONT)
    wait_for(browser, "the banner to go", lambda d: not banner.is_displayed())
    wait_for(browser, "the tick to move again", lambda d: tick_on_page(d) > stuck)
    assert browser.execute_script("return window.__noReload;") == "still here"


def test_operator_emergency_through_the_dialog(
    browser: WebDriver, world: World, tmp_path: Path
) -> None:
    """Operator: the button asks for a reason and a confirmation; the world enters
    EMERGENCY_SHUTDOWN and the audit log has the shutdown with that reason.

    Runs after every test that needs the world running (only the restart comes after).
    """
    login(browser, world, OPERATOR_TOKEN)
    wait_for(
        browser, "the operator controls", lambda d: d.find_element(By.ID, "operator").is_displayed()
    )
    browser.find_element(By.ID, "btn-emergency").click()
    dialog = browser.find_element(By.ID, "confirm")
    wait_for(browser, "the dialog", lambda d: dialog.is_displayed())
    browser.find_element(By.ID, "confirm-ok").click()  # no reason yet: refused by the page
    assert dialog.is_displayed()
    assert world.status()["phase"] == "development"
    reason = "browser test: <b>database failover</b>"
    confirm(browser, reason)
    wait_for(
        browser,
        "the emergency on the page",
        lambda d: d.find_element(By.ID, "phase").text.lower() == "emergency shutdown",
    )
    assert reason in browser.find_element(By.ID, "emergency").text  # as text, not as markup
    assert world.status()["phase"] == "emergency_shutdown"
    done = world.audited("shutdown")
    assert done
    assert done[-1]["arguments"] == {"emergency": True, "reason": reason}
    assert done[-1]["result"]["status"] == 200
    browser.save_screenshot(str(tmp_path / "dashboard-emergency.png"))
    assert (tmp_path / "dashboard-emergency.png").stat().st_size > 10_000


def test_operator_restart_through_the_dialog(browser: WebDriver, world: World) -> None:
    """After the emergency, Restart (with its reason) brings the world back: the page shows it
    ticking again and the audit log has the restart with that reason."""
    login(browser, world, OPERATOR_TOKEN)
    assert world.status()["phase"] == "emergency_shutdown"
    browser.find_element(By.ID, "btn-restart").click()
    reason = "browser test: failover done"
    confirm(browser, reason)
    wait_for(
        browser,
        "the restart on the page",
        lambda d: d.find_element(By.ID, "phase").text.lower() != "emergency shutdown",
    )
    wait_for(
        browser,
        "a result line",
        lambda d: "/v1/restart: 200" in d.find_element(By.ID, "action-result").text,
    )
    assert not browser.find_element(By.ID, "emergency").is_displayed()
    first = tick_on_page(browser)
    wait_for(browser, "ticks again", lambda d: tick_on_page(d) > first)
    done = world.audited("restart")
    assert done
    assert done[-1]["arguments"] == {"reason": reason}
