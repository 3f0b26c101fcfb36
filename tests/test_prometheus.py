"""A real Prometheus scrapes a real ``supervisor run`` over TCP with a viewer token.

This is the check that ``/metrics`` is not just parseable by
``prometheus_client`` but usable by the server operators actually run: the
exposition is accepted by Prometheus's own parser, the bearer token of a
``viewer`` is enough, the counters and histograms work with ``rate`` and
``histogram_quantile``.

``prometheus`` must be on ``PATH``: ``.ci/services.sh`` (run by the README's
test command, and so by ``.ci/run``) installs Debian's package when missing.
Without it this test fails, it does not skip.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from supervisor._server._metrics import LATENCY_BUCKETS

pytestmark = pytest.mark.e2e

#: The console script of the virtualenv running the tests.
SUPERVISOR = Path(sys.executable).parent / "supervisor"
TICK_RATE = 50
#: How long to wait for Prometheus to have scraped what a query needs.
QUERY_TIMEOUT = 30.0

T = TypeVar("T")

#: Every request goes to 127.0.0.1: never through an ``http_proxy`` from the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_get(url: str, *, token: str | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET ``url``; the status and body (also for 4xx/5xx answers)."""
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with _DIRECT.open(request, timeout=timeout) as response:
            status: int = response.status
            return status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def stop_process(proc: subprocess.Popen[bytes], *, grace: float = 10.0) -> None:
    """Terminate ``proc`` (by its own pid), wait, then kill it if it is still there."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace)


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file, for failure messages."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "<no log>"
    return "\n".join(text.splitlines()[-lines:])


class Scene:
    """A running supervisor and the Prometheus scraping it."""

    def __init__(
        self,
        tmp: Path,
        supervisor: subprocess.Popen[bytes],
        prometheus: subprocess.Popen[bytes],
        prom_url: str,
    ) -> None:
        self.tmp = tmp
        self.supervisor = supervisor
        self.prometheus = prometheus
        self.prom_url = prom_url

    def diagnostics(self) -> str:
        """What to look at when a wait times out: processes, scrape targets, logs."""
        targets = "<unavailable>"
        with contextlib.suppress(OSError, ValueError):
            status, body = http_get(f"{self.prom_url}/api/v1/targets")
            if status == 200:
                active = json.loads(body)["data"]["activeTargets"]
                targets = json.dumps(
                    [{k: t.get(k) for k in ("scrapeUrl", "health", "lastError")} for t in active]
                )
        return (
            f"supervisor exit code: {self.supervisor.poll()}, "
            f"prometheus exit code: {self.prometheus.poll()}\n"
            f"scrape targets: {targets}\n"
            f"--- supervisor stderr ---\n{tail(self.tmp / 'supervisor.log')}\n"
            f"--- prometheus stderr ---\n{tail(self.tmp / 'prometheus.log')}"
        )

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant-vector result of ``promql`` (an empty list until data is there)."""
        url = f"{self.prom_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            status, body = http_get(url)
        except OSError:  # Prometheus is still starting
            return []
        if status != 200:
            return []
        answer = json.loads(body)
        if answer.get("status") != "success" or answer["data"]["resultType"] != "vector":
            return []
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def scalar(self, promql: str) -> float | None:
        """The single value of ``promql``, or None while there is none (or it is NaN)."""
        result = self.query(promql)
        if len(result) != 1:
            return None
        value = float(result[0]["value"][1])
        return value if math.isfinite(value) else None

    def wait_value(
        self, promql: str, accept: Callable[[float], bool] = lambda _: True, *, what: str = ""
    ) -> float:
        """Poll ``promql`` until it has a single finite value that ``accept`` takes."""

        def probe() -> float | None:
            value = self.scalar(promql)
            return value if value is not None and accept(value) else None

        return self.wait_for(what or promql, probe)

    def wait_for(
        self, what: str, probe: Callable[[], T | None], timeout: float = QUERY_TIMEOUT
    ) -> T:
        """Poll ``probe`` until it returns something other than None."""
        deadline = time.monotonic() + timeout
        while True:
            for proc, name in ((self.supervisor, "supervisor"), (self.prometheus, "prometheus")):
                if proc.poll() is not None:
                    pytest.fail(f"{name} exited while waiting for {what}\n{self.diagnostics()}")
            got = probe()
            if got is not None:
                return got
            if time.monotonic() > deadline:
                pytest.fail(
                    f"timed out after {timeout:g} s waiting for {what}\n{self.diagnostics()}"
                )
            time.sleep(0.25)


def write_supervisor_config(tmp: Path, port: int, token: str) -> Path:
    """A config: the example world at TICK_RATE Hz, the API on TCP with one viewer token."""
    digest = hashlib.sha256(token.encode("ascii")).hexdigest()
    path = tmp / "supervisor.toml"
    path.write_text(
        f"""\
[supervisor]
state_dir = "state"
tick_rate = {TICK_RATE}

[features]
optimizer = false   # the rate Prometheus reads must stay the configured one

[api]
listen = "127.0.0.1:{port}"
audit_log = "state/audit.jsonl"
tokens = [{{ name = "prometheus", role = "viewer", sha256 = "{digest}" }}]

[systems]
enabled = ["heartbeat", "wanderers"]
""",
        encoding="utf-8",
    )
    return path


def write_prometheus_config(tmp: Path, target_port: int, token: str) -> Path:
    """prometheus.yml: scrape the supervisor every second with its bearer token.

    ``authorization`` (type Bearer) is the form Prometheus 2.26+ documents;
    ``bearer_token`` is its deprecated predecessor.
    """
    path = tmp / "prometheus.yml"
    path.write_text(
        f"""\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: supervisor
    scrape_interval: 1s
    scrape_timeout: 1s
    metrics_path: /metrics
    authorization:
      type: Bearer
      credentials: "{token}"
    static_configs:
      - targets: ["127.0.0.1:{target_port}"]
""",
        encoding="utf-8",
    )
    return path


@contextlib.contextmanager
def started(argv: list[str], log: Path, **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``argv`` with stdout and stderr into ``log``; stopped at exit whatever happens."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kwargs
        )
        try:
            yield proc
        finally:
            stop_process(proc)


def test_prometheus_scrapes_a_running_supervisor(tmp_path: Path) -> None:
    """Prometheus reads the tick rate, a tick-counter rate near it, and a lateness p99."""
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.fail(
            "`prometheus` is not on PATH: run `bash .ci/services.sh` (Debian's package, "
            "as root or with sudo) to run the Prometheus integration test"
        )
    token = secrets.token_urlsafe(24)
    api_port = prom_port = free_port()
    while prom_port == api_port:
        prom_port = free_port()
    sup_config = write_supervisor_config(tmp_path, api_port, token)
    prom_config = write_prometheus_config(tmp_path, api_port, token)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
    env["PYTHONUNBUFFERED"] = "1"
    api = f"http://127.0.0.1:{api_port}"
    prom_url = f"http://127.0.0.1:{prom_port}"

    with started(
        [str(SUPERVISOR), "run", "--config", str(sup_config), "--log-format", "json"],
        tmp_path / "supervisor.log",
        cwd=tmp_path,
        env=env,
    ) as sup:
        # The API is up (and the token works) before Prometheus starts scraping.
        deadline = time.monotonic() + QUERY_TIMEOUT
        while True:
            with contextlib.suppress(OSError):
                status, body = http_get(f"{api}/metrics", token=token)
                if status == 200:
                    break
            if sup.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"the supervisor's /metrics never answered 200 (exit code {sup.poll()}):\n"
                    + tail(tmp_path / "supervisor.log")
                )
            time.sleep(0.1)
        assert b"supervisor_tick_rate_hz" in body
        # Without the token the TCP listener refuses: Prometheus really uses it.
        assert http_get(f"{api}/metrics")[0] == 401

        with started(
            [
                prometheus,
                f"--config.file={prom_config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--log.level=warn",
            ],
            tmp_path / "prometheus.log",
            cwd=tmp_path,
        ) as prom:
            scene = Scene(tmp_path, sup, prom, prom_url)

            rate_hz = scene.wait_value(
                "supervisor_tick_rate_hz", lambda v: v == TICK_RATE, what="a tick rate of 50 Hz"
            )
            assert rate_hz == TICK_RATE

            # The target is healthy: scraped with the token, exposition accepted.
            targets = json.loads(http_get(f"{prom_url}/api/v1/targets")[1])["data"]
            [target] = targets["activeTargets"]
            assert target["health"] == "up", target
            assert target["lastError"] == "", target
            # Every bucket of the lateness histogram made it into the TSDB.
            buckets = scene.scalar("count(supervisor_tick_lateness_seconds_bucket)")
            assert buckets == len(LATENCY_BUCKETS) + 1  # and +Inf

            # rate() over a window holding fewer scrapes than it spans extrapolates
            # low, so first wait until the 5 s window holds five 1 s scrapes.
            scene.wait_value(
                "count_over_time(supervisor_ticks_total[5s])",
                lambda v: v >= 5,
                what="five scrapes within 5 s",
            )
            ticks_per_second = scene.wait_value("rate(supervisor_ticks_total[5s])")
            assert 0.8 * TICK_RATE <= ticks_per_second <= 1.2 * TICK_RATE, ticks_per_second

            # A number of seconds read from the buckets: not NaN (there were
            # ticks in the window), not negative, and under a second (a tick
            # that late would be an outage, not a slow CI machine).
            p99 = scene.wait_value(
                "histogram_quantile(0.99, rate(supervisor_tick_lateness_seconds_bucket[10s]))"
            )
            assert 0.0 <= p99 < 1.0, p99

            # The phase is one-hot and the per-system series carry the system label.
            phases = {
                r["metric"]["phase"]: float(r["value"][1]) for r in scene.query("supervisor_phase")
            }
            assert phases == {
                "development": 1.0,
                "testing": 0.0,
                "production": 0.0,
                "emergency_shutdown": 0.0,
            }
            systems = {r["metric"]["system"] for r in scene.query("supervisor_system_errors_total")}
            assert systems == {"heartbeat", "wanderers"}

        # Prometheus is gone; the supervisor still runs, and stops cleanly on SIGTERM.
        assert prom.returncode is not None
        assert sup.poll() is None, tail(tmp_path / "supervisor.log")
        sup.terminate()
        assert sup.wait(timeout=15) == 0, tail(tmp_path / "supervisor.log")
