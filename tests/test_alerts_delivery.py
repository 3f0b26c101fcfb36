"""Alerts on a real run: evaluated off the tick, delivered to a real Alertmanager and webhooks.

Alertmanager is Debian's ``prometheus-alertmanager`` (``.ci/services.sh``
installs it), started here on a free loopback port with a temporary
storage folder and clustering off, and stopped by its PID. Without it the
Alertmanager test fails, it does not skip.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import structlog.testing
import trio
import trio.testing
from polling import wait_until
from test_prometheus import free_port, started, tail

from supervisor import ApiConfig, Config, SloConfig, Supervisor
from supervisor._alerts import alerts_view, attach_alerts, engine_for
from supervisor._alerts._delivery import Destination, rfc3339
from supervisor._alerts._engine import AlertEngine
from supervisor._alerts._evaluator import Transition
from supervisor._alerts._signals import Reading
from supervisor._errors import ConfigError
from supervisor._server._metrics import install as install_metrics
from supervisor.testing import Ticking, make_supervisor

TICK_RATE = 50.0


class Flaky:
    """Fails every tick while ``failing``, and from its ``until``-th tick on never again."""

    def __init__(self, until: int | None = None) -> None:
        self.name = "flaky"
        self.failing = True
        self.until = until
        self.ticks = 0

    def tick(self, ctx: Any) -> None:
        self.ticks += 1
        if self.failing and (self.until is None or self.ticks <= self.until):
            raise RuntimeError("the flaky system failed")


def _config(**alerts: Any) -> Config:
    rule = {
        "name": "flaky_errors",
        "when": 'errors_per_minute{system="flaky"} > 0',
        "for": "1s",
        "keep_firing_for": "1s",
        "severity": "page",
        "summary": "the flaky system fails",
    }
    return Config.from_mapping(
        {
            # Never quarantined: it fails on every tick until told to stop.
            "recovery": {"max_restarts": 1_000_000, "backoff_initial": 0.0, "backoff_max": 0.0},
            "alerts": {"window": 2.0, "instance": "test-host", "rules": [rule], **alerts},
        },
        env={},
    )


def _supervisor(config: Config, flaky: Flaky) -> Supervisor:
    return make_supervisor([flaky, Ticking()], config=config, tick_rate=TICK_RATE)


async def _wait(probe: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``probe`` every 100 ms until it is truthy."""
    return await wait_until(probe, timeout, what, every=0.1)


# --------------------------------------------------------------- the machine on a MockClock


async def test_a_failing_system_fires_and_resolves_at_exact_virtual_times(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flaky = Flaky(until=250)  # 5 s of failures at 50 Hz: ticks at 0.00 ... 4.98 s
    sup = _supervisor(_config(), flaky)
    engine = attach_alerts(sup)
    assert engine is not None
    assert engine_for(sup) is engine
    seen: list[tuple[float, str]] = []
    step = engine.step

    def recorded(reading: Reading) -> list[Transition]:
        seen.extend((reading.at, t.after.value) for t in step(reading))
        return []

    engine.step = recorded  # type: ignore[method-assign]
    install_metrics(sup)  # what attach_api does: GET /metrics
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        nursery.start_soon(sup.run)
        await trio.sleep(12.0)
        view = alerts_view(sup)
        metrics, _ = sup.metrics_text()
        sup.stop()
    # Read once a second from the start: the failures show at 1 s (pending), hold
    # 'for' 1 s (firing at 2 s), stop at 4.98 s; the 2 s window is empty at 7 s
    # (its base is the reading at 5 s), and keep_firing_for 1 s resolves it at 8 s.
    assert [(at - start, state) for at, state in seen] == [
        (1.0, "pending"),
        (2.0, "firing"),
        (8.0, "resolved"),
    ]
    (rule,) = view["rules"]
    assert (rule["rule"], rule["state"], rule["fired"]) == ("flaky_errors", "resolved", 1)
    assert 'supervisor_alerts_firing{rule="flaky_errors",severity="page"} 0.0' in metrics.decode()


def test_a_burn_rate_rule_without_an_slo_store_is_refused_naming_it() -> None:
    config = Config.from_mapping(
        {
            "alerts": {
                "rules": [
                    {"name": "fast_burn", "when": 'slo_burn_rate{slo="tick",window="1h"} > 14.4'}
                ]
            }
        },
        source="prod.toml",
        env={},
    )
    sup = make_supervisor([Ticking()], config=config)
    with pytest.raises(
        ConfigError, match=r"prod.toml: \[alerts.rules.fast_burn.when\] .*no SLO store"
    ):
        attach_alerts(sup)
    with pytest.raises(ConfigError, match=r"names slo 'tick', but there is no \[slo.tick\]"):
        attach_alerts(sup, burn_rate=lambda slo, window: 0.0)
    with_slo = attrs.evolve(config, slo={"tick": SloConfig(name="tick")})
    sup = make_supervisor([Ticking()], config=with_slo)
    assert attach_alerts(sup, burn_rate=lambda slo, window: 0.0) is not None
    assert attach_alerts(make_supervisor([Ticking()])) is None  # no rules: nothing attached


# --------------------------------------------------------------- real receivers, real time


@contextlib.contextmanager
def alertmanager(tmp: Path) -> Iterator[str]:
    """A real Alertmanager on a free loopback port; its base URL."""
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        pytest.fail(
            "`prometheus-alertmanager` is not on PATH: run `bash .ci/services.sh` "
            "(Debian's package) to run the Alertmanager integration test"
        )
    config = tmp / "alertmanager.yml"
    config.write_text(
        'route:\n  receiver: "null"\n  group_wait: 0s\nreceivers:\n  - name: "null"\n',
        encoding="utf-8",
    )
    port = free_port()
    log = tmp / "alertmanager.log"
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.path={tmp / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    url = f"http://127.0.0.1:{port}"
    with started(argv, log):
        deadline = time.monotonic() + 15.0
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("Alertmanager did not start:\n" + tail(log))
            time.sleep(0.1)
        yield url


async def test_alertmanager_shows_the_alert_then_it_resolves(tmp_path: Path) -> None:
    """A failing system fires a rule; Alertmanager has it; the failures stop; it resolves."""
    with alertmanager(tmp_path) as url:
        flaky = Flaky()
        sup = _supervisor(_config(alertmanager=url), flaky)
        engine = attach_alerts(sup)
        assert engine is not None
        async with httpx.AsyncClient(timeout=2.0) as client, trio.open_nursery() as nursery:
            nursery.start_soon(sup.run)

            async def active() -> list[dict[str, Any]]:
                answer = await client.get(f"{url}/api/v2/alerts", params={"active": "true"})
                return [a for a in answer.json() if a["labels"]["alertname"] == "flaky_errors"]

            (alert,) = await _wait(active, 10.0, "Alertmanager to have the alert")
            assert alert["labels"] == {
                "alertname": "flaky_errors",
                "severity": "page",
                "instance": "test-host",
            }
            assert alert["status"]["state"] == "active"
            assert alert["annotations"]["summary"] == "the flaky system fails"
            flaky.failing = False
            await _wait(lambda: not engine.evaluator.firing(), 10.0, "the rule to resolve")
            await _wait(lambda: _gone(active), 10.0, "Alertmanager to resolve it")
            (dest,) = engine.destinations
            assert dest.counts["sent"] == 2  # firing, then resolved
            assert dest.counts["failed_attempt"] == 0
            sup.stop()


async def _gone(active: Callable[[], Any]) -> bool:
    return not await active()


class _Receiver(http.server.BaseHTTPRequestHandler):
    bodies: list[dict[str, Any]]

    def do_POST(self) -> None:
        length = int(self.headers["content-length"])
        self.bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


@contextlib.contextmanager
def webhook_receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local HTTP server that keeps every JSON body POSTed to it."""
    bodies: list[dict[str, Any]] = []
    handler = type("Receiver", (_Receiver,), {"bodies": bodies})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", bodies
    finally:
        server.shutdown()
        server.server_close()


async def test_a_webhook_gets_the_firing_and_the_resolved_json() -> None:
    with webhook_receiver() as (url, bodies):
        flaky = Flaky()
        sup = _supervisor(_config(webhooks=[url]), flaky)
        engine = attach_alerts(sup)
        assert engine is not None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sup.run)
            await _wait(lambda: bodies, 10.0, "the firing notification")
            flaky.failing = False
            await _wait(lambda: len(bodies) >= 2, 10.0, "the resolved notification")
            sup.stop()
    assert [b["status"] for b in bodies] == ["firing", "resolved"]
    firing, resolved = (b["alerts"][0] for b in bodies)
    assert firing["labels"]["alertname"] == "flaky_errors"
    assert firing["startsAt"] == resolved["startsAt"]
    assert resolved["endsAt"] > resolved["startsAt"]


@contextlib.contextmanager
def black_hole() -> Iterator[str]:
    """A listening socket that never accepts nor answers: requests to it hang until timeout."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"


async def _lateness_p99(config: Config, seconds: float) -> tuple[float, Supervisor]:
    flaky = Flaky()
    sup = _supervisor(config, flaky)
    attach_alerts(sup)
    summary = await sup.run(duration=seconds)
    return summary.lateness.p99, sup


@pytest.mark.slow
async def test_a_receiver_that_never_answers_is_not_felt_by_the_tick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Delivery waits on the network, never the tick: lateness p99 stays within noise."""
    monkeypatch.setattr("supervisor._alerts._delivery.TIMEOUT", 0.5)
    monkeypatch.setattr("supervisor._alerts._delivery.BACKOFF_INITIAL", 0.1)
    quiet, _ = await _lateness_p99(_config(), 4.0)
    with black_hole() as url:
        stuck, sup = await _lateness_p99(_config(webhooks=[url] * 3), 4.0)
    (dest, *_) = engine_for(sup).destinations  # type: ignore[union-attr]
    assert dest.counts["sent"] == 0
    assert dest.counts["failed_attempt"] >= 1
    assert "ReadTimeout" in (dest.last_error or "")
    # Loose: a loaded CI box varies; a blocked loop would show hundreds of ms.
    assert stuck <= max(3 * quiet, quiet + 0.005), (quiet, stuck)


async def test_a_full_queue_drops_and_counts() -> None:
    dest = Destination("webhook0", "http://127.0.0.1:9/hook", alertmanager=False, queue=2)
    assert [dest.offer({"n": i}) for i in range(4)] == [True, True, False, False]
    assert dest.counts["dropped_queue_full"] == 2
    assert dest.as_dict()["queued"] == 2


async def test_the_alerts_command_and_route_show_a_firing_rule() -> None:
    """``supervisor alerts`` (the real group) through the real API of a real run."""
    from click.testing import CliRunner

    from supervisor._cli._main import cli
    from supervisor._server._serve import attach_api

    folder = Path(tempfile.mkdtemp(prefix="sv-"))  # a Unix socket path must be short
    try:
        listen = f"unix:{folder / 's.sock'}"
        config = attrs.evolve(
            _config(),
            api=ApiConfig(listen=listen, audit_log=str(folder / "audit.jsonl")),
        )
        flaky = Flaky()
        sup = _supervisor(config, flaky)
        engine = attach_alerts(sup)
        assert engine is not None
        attach_api(sup)

        def invoke(*args: str) -> Any:
            return CliRunner().invoke(cli, ["alerts", "--api", listen, *args], env={})

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sup.run)
            await _wait(engine.evaluator.firing, 10.0, "the rule to fire")
            table = await trio.to_thread.run_sync(invoke)
            raw = await trio.to_thread.run_sync(invoke, "--json")
            sup.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert table.exit_code == 0, table.output
    assert "flaky_errors" in table.output
    assert "firing" in table.output
    data = json.loads(raw.output)
    (rule,) = data["rules"]
    assert (rule["rule"], rule["state"], rule["severity"]) == ("flaky_errors", "firing", "page")
    assert rule["firing_for"] >= 0.0
    assert data["firing"] == ["flaky_errors"]


def test_a_firing_alert_is_re_sent_to_alertmanager_only_and_its_resolve_ends_it() -> None:
    """Alertmanager forgets an alert not re-sent before its endsAt; webhooks hear transitions."""
    config = _config(
        alertmanager="http://127.0.0.1:9", webhooks=["http://127.0.0.1:9/h"], resend=2.0
    )
    engine = AlertEngine(config.alerts, wall=lambda: 1_000_000.0)
    manager, hook = engine.destinations
    errors = 0
    for second in range(12):
        errors += 10 if second < 6 else 0
        engine.step(Reading(at=float(second), errors=errors, by_system={"flaky": errors}))
    sent = [manager._receive.receive_nowait() for _ in range(manager.as_dict()["queued"])]
    hooked = [hook._receive.receive_nowait() for _ in range(hook.as_dict()["queued"])]
    # Fires at 2 s, re-sent at 4 and 6 s; false from 7 s (window 2 s), resolved at 8 s.
    assert [a["status"] for a in sent] == ["firing", "firing", "firing", "resolved"]
    assert [a["status"] for a in hooked] == ["firing", "resolved"]
    assert sent[0]["endsAt"] == rfc3339(1_000_000.0 + 4 * 2.0)  # 4 re-send periods ahead
    assert sent[-1]["endsAt"] == sent[-1]["startsAt"] == rfc3339(1_000_000.0)


def test_a_failing_slo_store_is_counted_logged_once_and_never_fires() -> None:
    rule = {"name": "burn", "when": 'slo_burn_rate{slo="tick",window="1h"} > 1'}
    config = Config.from_mapping({"alerts": {"rules": [rule]}}, env={})

    def broken(slo: str, window: str) -> float:
        raise OSError("the store is gone")

    engine = AlertEngine(config.alerts, burn_rate=broken)
    with structlog.testing.capture_logs() as logs:
        for second in range(5):
            assert engine.step(Reading(at=float(second))) == []
    assert engine.value_failures == 5
    assert [e["event"] for e in logs] == ["alert.value_failed"]
    assert alerts_view(make_supervisor([Ticking()]))["rules"] == []  # none attached there


def test_a_rule_that_starts_firing_is_told_to_the_listeners_once() -> None:
    """`run` wires this to the error store, so firing alerts are incidents of `report`."""
    config = _config(resend=2.0)
    engine = AlertEngine(config.alerts, wall=lambda: 1_000_000.0)
    fired: list[str] = []
    engine.on_firing.append(lambda rule: fired.append(rule.name))
    errors = 0
    for second in range(12):
        errors += 10 if second < 6 else 0
        engine.step(Reading(at=float(second), errors=errors, by_system={"flaky": errors}))
    assert fired == ["flaky_errors"]


def test_a_burn_rate_rule_reads_the_error_stores_slo() -> None:
    """The SLO store's burn rate is what a `slo_burn_rate` rule compares (wired by `run`)."""
    rule = {"name": "burn", "when": 'slo_burn_rate{slo="tick",window="1h"} > 1', "for": "0s"}
    config = Config.from_mapping({"alerts": {"rules": [rule]}}, env={})
    asked: list[tuple[str, str]] = []

    def burn_rate(slo: str, window: str) -> float:
        asked.append((slo, window))
        return 14.4

    engine = AlertEngine(config.alerts, burn_rate=burn_rate)
    fired: list[str] = []
    engine.on_firing.append(lambda r: fired.append(r.name))
    for second in range(3):
        engine.step(Reading(at=float(second)))
    assert asked[0] == ("tick", "1h")
    assert fired == ["burn"]
