"""Alerts: latency from a threshold crossed (plus ``for``) to a real Alertmanager having the alert.

Three figures (issue 11):

* **latency**: a system starts failing at a random moment; the rule
  ``errors_per_minute{system="flaky"} > 0`` (``for`` as given) fires; a
  poller asks Alertmanager's ``GET /api/v2/alerts`` every 10 ms. Latency is
  (Alertmanager has it) - (first failing tick) - ``for``: the evaluation
  interval (1 s) plus one POST. Needs ``prometheus-alertmanager`` on PATH.
* **evaluation cost**: one reading of the supervisor plus one evaluation of
  the rules (the loop time alerts take, once a second), for the six
  default rules and for 60 rules.
* **never blocking**: tick lateness p99 with no alerts, and with a rule
  firing to three webhooks that never answer (requests hang until their
  timeout), interleaved runs.

    python -m bench.alerts [--runs 5] [--for 0] [--seconds 10] [--json FILE]
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import trio

from bench._common import parser, write_json
from supervisor import Config, configure_logging
from supervisor._alerts import attach_alerts
from supervisor._alerts._engine import AlertEngine
from supervisor._alerts._signals import read
from supervisor.testing import Ticking, make_supervisor

TICK_RATE = 50.0


class Flaky:
    """Fails every tick once ``failing`` is set; notes the wall time of the first failure."""

    def __init__(self) -> None:
        self.name = "flaky"
        self.failing = False
        self.first_failure: float | None = None

    def tick(self, ctx: Any) -> None:
        if self.failing:
            if self.first_failure is None:
                self.first_failure = time.time()
            raise RuntimeError("flaky")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def _alertmanager(folder: Path) -> Iterator[str]:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        raise SystemExit("prometheus-alertmanager is not on PATH: bash .ci/services.sh")
    (folder / "am.yml").write_text(
        'route:\n  receiver: "null"\n  group_wait: 0s\nreceivers:\n  - name: "null"\n'
    )
    port = _free_port()
    argv = [
        binary,
        f"--config.file={folder / 'am.yml'}",
        f"--storage.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/-/ready", timeout=1.0).status_code == 200:
                    break
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _config(name: str, hold: str, **alerts: Any) -> Config:
    rule = {
        "name": name,
        "when": 'errors_per_minute{system="flaky"} > 0',
        "for": hold,
        "severity": "page",
    }
    return Config.from_mapping(
        {
            "recovery": {"max_restarts": 1_000_000, "backoff_initial": 0.0, "backoff_max": 0.0},
            "alerts": {"window": 5.0, "rules": [rule], **alerts},
        },
        env={},
    )


async def _one_latency(url: str, name: str, hold: str) -> float:
    flaky = Flaky()
    sup = make_supervisor([flaky, Ticking()], config=_config(name, hold, alertmanager=url))
    attach_alerts(sup)
    async with httpx.AsyncClient(timeout=2.0) as client, trio.open_nursery() as nursery:
        nursery.start_soon(sup.run)
        await trio.sleep(1.0 + random.random())  # a random phase against the evaluations
        flaky.failing = True
        while True:
            query = {"filter": f"alertname={name}"}
            answer = await client.get(f"{url}/api/v2/alerts", params=query)
            if answer.json():
                seen = time.time()
                break
            await trio.sleep(0.01)
        sup.stop()
    assert flaky.first_failure is not None
    return seen - flaky.first_failure


def _evaluation_cost(rules: int) -> float:
    """Microseconds for one reading plus one evaluation of ``rules`` rules."""
    table = Config.from_toml(Path(__file__).parent.parent / "configs" / "production.toml", env={})
    base = [r.as_table() for r in table.alerts.rules]
    tables = [{**base[i % len(base)], "name": f"r{i}"} for i in range(rules)]
    config = Config.from_mapping({"alerts": {"rules": tables}}, env={})
    sup = make_supervisor([Ticking()], config=config)
    for i in range(10_000):
        sup.lateness.record(random.random() * 1e-3)
        sup.work.record(random.random() * 1e-3)
        del i
    engine = AlertEngine(config.alerts)
    n = 2000
    started = time.perf_counter()
    for i in range(n):
        engine.step(read(sup, engine.fingerprints, float(i)))
    return (time.perf_counter() - started) / n * 1e6


@contextlib.contextmanager
def _black_hole() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"


class _Steps(trio.abc.Instrument):
    """How long each step of the services' tasks held the loop (seconds)."""

    def __init__(self) -> None:
        self.began: dict[trio.lowlevel.Task, float] = {}
        self.steps: list[float] = []

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith(("_run_service", "_watch")):
            self.began[task] = time.perf_counter()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        began = self.began.pop(task, None)
        if began is not None:
            self.steps.append(time.perf_counter() - began)


async def _lateness(seconds: float, webhooks: list[str] | None) -> tuple[float, list[float]]:
    """Lateness p99 (µs), and the service task steps (alerts' only: no API here)."""
    flaky = Flaky()
    flaky.failing = True
    config = _config("noisy", "0s", webhooks=webhooks or [])
    sup = make_supervisor([flaky, Ticking()], config=config, tick_rate=TICK_RATE)
    if webhooks is not None:
        attach_alerts(sup)
    steps = _Steps()
    trio.lowlevel.add_instrument(steps)
    summary = await sup.run(duration=seconds)
    trio.lowlevel.remove_instrument(steps)
    return summary.lateness.p99 * 1e6, steps.steps


def main() -> None:
    """Run the three measurements and print them."""
    p = parser(__doc__)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--for", dest="hold", default="0s", help="the rule's `for` (default 0s)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each lateness run")
    args = p.parse_args()
    devnull = open(os.devnull, "w")  # noqa: SIM115 - the logs' stream for the whole run
    configure_logging("json", "error", stream=devnull)
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, _alertmanager(Path(tmp)) as url:
        latencies = [trio.run(_one_latency, url, f"bench_{i}", args.hold) for i in range(args.runs)]
    from supervisor._core._config_alerts import parse_hold

    hold = parse_hold(args.hold)
    net = [lat - hold for lat in latencies]
    figures["latency_s"] = {
        "for": hold,
        "runs": [round(x, 3) for x in net],
        "min": round(min(net), 3),
        "median": round(statistics.median(net), 3),
        "max": round(max(net), 3),
    }
    print(
        f"alert latency past `for` ({hold:g} s), {args.runs} runs: "
        f"min {min(net):.3f} s, median {statistics.median(net):.3f} s, max {max(net):.3f} s"
    )
    for rules in (6, 60):
        cost = _evaluation_cost(rules)
        figures[f"evaluation_us_{rules}_rules"] = round(cost, 1)
        print(f"one reading + evaluation of {rules} rules: {cost:.1f} µs (once a second)")
    quiet: list[float] = []
    stuck: list[float] = []
    steps: list[float] = []
    for _ in range(3):
        quiet.append(trio.run(_lateness, args.seconds, None)[0])
        with _black_hole() as hole:
            late, held = trio.run(_lateness, args.seconds, [hole] * 3)
        stuck.append(late)
        steps += held
    steps.sort()
    figures["lateness_p99_us"] = {"no_alerts": quiet, "firing_to_dead_webhooks": stuck}
    figures["alert_task_step_us"] = {
        "count": len(steps),
        "p50": round(steps[len(steps) // 2] * 1e6),
        "p99": round(steps[int(len(steps) * 0.99)] * 1e6),
        "max": round(steps[-1] * 1e6),
    }
    print(
        f"tick lateness p99 ({args.seconds:g} s runs at {TICK_RATE:g} Hz, a system failing "
        f"every tick): no alerts {', '.join(f'{x:.0f}' for x in quiet)} µs; "
        f"firing to 3 webhooks that never answer {', '.join(f'{x:.0f}' for x in stuck)} µs"
    )
    held_us = figures["alert_task_step_us"]
    print(
        f"loop held by one step of an alert task, {len(steps)} steps: p50 {held_us['p50']} µs, "
        f"p99 {held_us['p99']} µs, max {held_us['max']} µs"
    )
    write_json(args.json, figures)


if __name__ == "__main__":
    main()
