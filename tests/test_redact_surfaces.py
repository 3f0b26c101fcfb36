"""Every secret of the corpus through a real ``supervisor run``, every surface read back.

A system of the test's own (an import string, written into ``tmp_path``) puts
the secrets of ``tests/redaction_corpus.py`` everywhere a plugin can put
text: exception messages at start and at tick (with causes, and one long
message cut at the core's message limit), ``ctx.log`` info and exception
lines, gauge names (those that fit the gauge charset are published, the
others are refused as that system's error), and ``ctx.request_emergency``.
The operator adds more through the API: a phase-change reason, an emergency
reason, a shutdown reason, an over-long reason and a malformed body.

Then every surface is read and searched for every needle of every secret,
raw and as JSON, ``repr`` and msgpack would escape it:

- the JSON API with a token: ``/v1/errors``, ``/v1/status``,
  ``/v1/readiness``, the answers to the operator's requests (also refusals);
- ``/metrics``;
- the anonymous probes ``/healthz`` and ``/readyz``;
- the snapshot files, decoded (msgpack, nested system states too) and raw;
- the ``--summary-json`` file;
- standard error: JSON logs in one run, console logs in the other;
- the audit log.

The API is read three times: while ticking, after the system's emergency,
and after the operator's emergency (following a restart). Two processes: one
starts in TESTING (JSON logs) and is promoted to PRODUCTION, one starts in
PRODUCTION (console logs) and is moved back to TESTING; both need a token.
A failure lists every leak as ``surface: shape`` with the needle's start.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import msgpack
import pytest
from redaction_corpus import SECRETS, SHAPES, Secret

pytestmark = pytest.mark.e2e

SUPERVISOR = Path(sys.executable).parent / "supervisor"
#: How long to wait for the process at each step before failing.
STEP_TIMEOUT = 15.0
#: The core's bound on an exception message (``supervisor._core._safecall.MESSAGE_CHARS``).
MESSAGE_CHARS = 2000
#: The API's bound on a ``reason`` (``supervisor._address.MAX_REASON``).
MAX_REASON = 500
#: Between two samples in one message: a newline, because a Cookie header's
#: rule rightly takes the rest of its line.
JOIN = "\n"
#: Gauge names the core accepts (``supervisor._core._context.GAUGE_NAME``, at most 64).
GAUGE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")

#: A secret that straddles the message limit: redacting after the cut would
#: leave the start of the address (the cut is at ``MESSAGE_CHARS``).
STRADDLE_EMAIL = "straddle.victim@example.com"
STRADDLE = Secret("truncated-message", STRADDLE_EMAIL, "[email]", ("straddle.vict",))

SYSTEM_MODULE = '''\
"""Systems that put secrets on every surface a plugin reaches (tests/test_redact_surfaces.py)."""

import json
import os


def _load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class Leaky:
    name = "leaky"

    def __init__(self, plan, trigger):
        self.plan = _load(plan)
        self.trigger = trigger
        self.count = 0

    def start(self, ctx):
        ctx.log.info("leaky.starting", reasons=self.plan["reasons"])

    def tick(self, ctx):
        self.count += 1
        plan = self.plan
        for name in plan["gauges"]:
            ctx.report(name, 1)
        chunks = plan["chunks"]
        i = ctx.tick  # the first tick is tick 0
        if i < len(chunks):
            chunk = chunks[i]
            ctx.log.info("leaky.detail", detail=chunk, shapes={"all": chunk})
            ctx.log.info(chunk)  # a secret as the event name
            ctx.log.info("leaky.keys", **{text: 1 for text in plan["texts"]})
            try:
                raise KeyError(chunk)
            except KeyError as exc:
                exc.add_note(chunk)
                ctx.log.exception("leaky.caught", detail=chunk)
            try:
                raise LookupError(chunk)
            except LookupError as cause:
                error = ValueError(chunk)
                error.add_note(chunk)
                raise error from cause
        if i == len(chunks):
            ctx.report(plan["bad_gauge"], 1)  # refused: its name is the error's message
            raise RuntimeError(plan["straddle"])
        if i == len(chunks) + 1:
            ctx.log.info("leaky.done")
        if ctx.tick % 5 == 0 and os.path.exists(self.trigger):
            os.unlink(self.trigger)
            ctx.request_emergency(plan["emergency"])

    def snapshot(self):
        return {"count": self.count}

    def restore(self, state):
        self.count = state["count"]


class StartFail:
    name = "startfail"

    def __init__(self, plan):
        self.message = _load(plan)["start"]

    def start(self, ctx):
        raise ValueError(self.message)

    def tick(self, ctx):
        pass


class CriticalStartFail(StartFail):
    name = "critical"
    critical = True
'''


def _representatives() -> list[Secret]:
    """The shortest sample of each shape."""
    best: dict[str, Secret] = {}
    for secret in SECRETS:
        if secret.shape not in best or len(secret.text) < len(best[secret.shape].text):
            best[secret.shape] = secret
    return list(best.values())


def _halves() -> tuple[str, str]:
    """Two operator reasons (each within MAX_REASON) that hold one sample of every shape."""
    halves: tuple[list[str], list[str]] = ([], [])
    for secret in sorted(_representatives(), key=lambda s: -len(s.text)):
        shorter = min(halves, key=lambda h: len(JOIN.join(h)))
        shorter.append(secret.text)
    first, second = (JOIN.join(h) for h in halves)
    assert len(first) <= MAX_REASON
    assert len(second) <= MAX_REASON
    return first, second


def _chunks(limit: int = 1500) -> list[str]:
    """Every secret of the corpus, one a line, in messages under the core's limit."""
    chunks: list[str] = []
    current: list[str] = []
    for secret in SECRETS:
        if current and len(JOIN.join([*current, secret.text])) > limit:
            chunks.append(JOIN.join(current))
            current = []
        current.append(secret.text)
    chunks.append(JOIN.join(current))
    return chunks


def _gauge_names() -> list[str]:
    """A gauge name for every secret made of gauge characters (``g_<secret>``)."""
    names = []
    for secret in SECRETS:
        name = f"g_{secret.text}"
        if set(secret.text) <= GAUGE_CHARS and len(name) <= 64:
            names.append(name)
    return names


def _plan() -> dict[str, Any]:
    first, second = _halves()
    everything = JOIN.join(s.text for s in SECRETS)
    return {
        "chunks": _chunks(),
        "texts": [s.text for s in SECRETS],
        "gauges": _gauge_names(),
        "bad_gauge": "bad gauge " + first.replace(JOIN, " "),
        # The cut keeps the first 13 characters of the address: "straddle.vict".
        "straddle": "x" * (MESSAGE_CHARS - 14) + " " + STRADDLE_EMAIL,
        "reasons": [first, second],
        "emergency": everything,
        "start": first + JOIN + second,
    }


# ------------------------------------------------------------------ searching


def _variants(needle: str) -> set[str]:
    """``needle`` as it may be written: plain, JSON-escaped (ASCII or not), repr-escaped."""
    return {
        needle,
        json.dumps(needle)[1:-1],
        json.dumps(needle, ensure_ascii=False)[1:-1],
        repr(needle)[1:-1],
        ascii(needle)[1:-1],
    }


ALL_SECRETS: tuple[Secret, ...] = (*SECRETS, STRADDLE)


def _strings(obj: object) -> Iterator[str]:
    """Every string (keys too) in a decoded JSON or msgpack value; nested msgpack decoded."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, bytes):
        try:
            yield from _strings(msgpack.unpackb(obj, raw=False, strict_map_key=False))
        except Exception:
            yield obj.decode("utf-8", "replace")
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(obj, list | tuple):
        for item in obj:
            yield from _strings(item)


@attrs.define
class Leaks:
    """What was read, and every needle found on it."""

    surfaces: list[str] = attrs.Factory(list)
    found: dict[str, set[str]] = attrs.Factory(dict)

    def check_text(self, surface: str, text: str) -> None:
        """Search ``text`` (already decoded) for every needle of every secret."""
        if surface not in self.surfaces:
            self.surfaces.append(surface)
        for secret in ALL_SECRETS:
            for needle in secret.needles:
                if any(v in text for v in _variants(needle)):
                    self.found.setdefault(surface, set()).add(f"{secret.shape} ({needle[:24]!r})")

    def check_json(self, surface: str, raw: bytes) -> None:
        """A JSON document: searched raw and as its decoded strings."""
        text = raw.decode("utf-8", "replace")
        try:
            decoded = "\n".join(_strings(json.loads(text)))
        except ValueError:
            decoded = ""
        self.check_text(surface, text + "\n" + decoded)

    def report(self) -> str:
        lines = [
            f"{surface}: {len(found)} leak(s): {', '.join(sorted(found))}"
            for surface, found in self.found.items()
        ]
        return "\n".join(lines)

    def count(self) -> int:
        return sum(len(v) for v in self.found.values())


# ------------------------------------------------------------------ the run


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


@attrs.define
class SurfaceRun:
    """One ``supervisor run`` with the leaky systems, in ``tmp``."""

    tmp: Path
    start_phase: str
    log_format: str
    token: str = attrs.field(factory=lambda: secrets.token_urlsafe(24))
    proc: subprocess.Popen[str] | None = None
    env: dict[str, str] = attrs.Factory(dict)
    #: False writes ``[features] redaction = false`` (the control run); else the
    #: default: on outside development.
    redaction: bool = True
    #: The systems enabled (``critical`` fails its start and ends the run).
    systems: tuple[str, ...] = ("leaky", "startfail")

    socket: Path = attrs.field(init=False)
    stderr_path: Path = attrs.field(init=False)
    summary_path: Path = attrs.field(init=False)
    audit_path: Path = attrs.field(init=False)
    trigger: Path = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        names = ("s.sock", "stderr.txt", "summary.json", "audit.jsonl", "emergency.trigger")
        self.socket, self.stderr_path, self.summary_path, self.audit_path, self.trigger = (
            self.tmp / name for name in names
        )

    def write(self) -> Path:
        modules = self.tmp / "modules"
        modules.mkdir()
        (modules / "leaky_surface.py").write_text(SYSTEM_MODULE, encoding="utf-8")
        plan = self.tmp / "plan.json"
        plan.write_text(json.dumps(_plan()), encoding="utf-8")
        config = self.tmp / "supervisor.toml"
        lines = [
            "[supervisor]",
            f"state_dir = {json.dumps(str(self.tmp / 'state'))}",
            "snapshot_interval = 0.2",
            "[api]",
            f"listen = {json.dumps('unix:' + str(self.socket))}",
            f"audit_log = {json.dumps(str(self.audit_path))}",
            f'tokens = [{{ name = "ops", role = "operator", sha256 = "{_digest(self.token)}" }}]',
            "[recovery]",
            "max_restarts = 1000",
            "[systems]",
            f"enabled = {json.dumps(list(self.systems))}",
        ]
        if not self.redaction:
            lines += ["[features]", "redaction = false"]
        classes = {"leaky": "Leaky", "startfail": "StartFail", "critical": "CriticalStartFail"}
        for name in self.systems:
            lines += [
                f"[systems.{name}]",
                f'use = "leaky_surface:{classes[name]}"',
                f"plan = {json.dumps(str(plan))}",
            ]
            if name == "leaky":
                lines.append(f"trigger = {json.dumps(str(self.trigger))}")
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
        env.update(PYTHONPATH=str(modules), PYTHONUNBUFFERED="1")
        self.env = env
        return config

    @contextlib.contextmanager
    def running(self) -> Iterator[SurfaceRun]:
        config = self.write()
        argv = [
            str(SUPERVISOR),
            "run",
            "--config",
            str(config),
            "--phase",
            self.start_phase,
            "--tick-rate",
            "50",
            "--log-format",
            self.log_format,
            "--summary-json",
            str(self.summary_path),
        ]
        with self.stderr_path.open("w", encoding="utf-8") as err:
            self.proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=self.tmp,
                env=self.env,
                text=True,
            )
            try:
                yield self
            finally:
                if self.proc.poll() is None:
                    self.proc.kill()
                self.proc.communicate(timeout=STEP_TIMEOUT)

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8")

    def http(self, token: bool = True) -> httpx.Client:
        headers = {"authorization": f"Bearer {self.token}"} if token else {}
        return httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.socket)),
            base_url="http://supervisor",
            headers=headers,
            timeout=10.0,
        )

    def wait(self, what: str, check: Any) -> Any:
        deadline = time.monotonic() + STEP_TIMEOUT
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError, ValueError, KeyError):
                result = check()
                if result:
                    return result
            assert self.proc is not None
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        pytest.fail(f"timed out waiting for {what}; stderr:\n{self.stderr()[-4000:]}")

    def status(self) -> dict[str, Any]:
        with self.http() as http:
            answer = http.get("/v1/status")
        answer.raise_for_status()
        data = answer.json()
        assert isinstance(data, dict)
        return data

    def post(self, path: str, body: object, leaks: Leaks, label: str) -> httpx.Response:
        with self.http() as http:
            answer = http.post(path, json=body)
        leaks.check_json(f"answer to {label}", answer.content)
        return answer

    def hostile_requests(self, leaks: Leaks) -> None:
        """Secrets where a client puts them: query, path, and as a (wrong) bearer token."""
        email, card = "bob@example.com", "4111111111111111"
        with self.http() as http:
            answer = http.get("/v1/errors", params={"system": email, "limit": card})
            assert answer.status_code == 400, answer.text
            leaks.check_json("answer to a query with secrets", answer.content)
            answer = http.get(f"/v1/{email}/{card}")
            assert answer.status_code == 404, answer.text
            leaks.check_json("answer to a path with secrets", answer.content)
        with httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.socket)),
            base_url="http://supervisor",
            headers={"authorization": f"Bearer {card}"},
            timeout=10.0,
        ) as wrong:
            answer = wrong.post("/v1/shutdown", json={"reason": email})
            assert answer.status_code == 401, answer.text
            leaks.check_json("answer to a wrong token", answer.content)

    def read_api(self, leaks: Leaks) -> None:
        """Every API surface (and the anonymous probes) at this moment."""
        with self.http() as http:
            for path in ("/v1/errors?limit=1000", "/v1/status", "/v1/readiness"):
                answer = http.get(path)
                assert answer.status_code == 200, (path, answer.status_code, answer.text)
                leaks.check_json(path.split("?")[0], answer.content)
            metrics = http.get("/metrics")
            assert metrics.status_code == 200, metrics.text
            leaks.check_text("/metrics", metrics.text)
        with self.http(token=False) as anonymous:
            for path in ("/healthz", "/readyz"):
                answer = anonymous.get(path)
                assert answer.status_code in (200, 503), (path, answer.status_code)
                leaks.check_json(f"{path} (anonymous)", answer.content)

    def snapshot_phase(self, path: Path) -> str:
        """The phase a snapshot file's header records."""
        outer = msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=False)
        header = msgpack.unpackb(outer["header"], raw=False, strict_map_key=False)
        phase = header["phase"]
        assert isinstance(phase, str)
        return phase

    def read_files(self, leaks: Leaks) -> None:
        """Snapshots (decoded and raw), the summary, standard error, the audit log."""
        snapshots = sorted((self.tmp / "state" / "snapshots").rglob("*.msgpack"))
        assert snapshots, "no snapshot was written"
        for path in snapshots:
            raw = path.read_bytes()
            leaks.check_text("snapshot file (raw bytes)", raw.decode("utf-8", "replace"))
            try:
                decoded = msgpack.unpackb(raw, raw=False, strict_map_key=False)
            except Exception as exc:  # a framed format: search what decodes
                pytest.fail(f"{path.name} is not msgpack: {exc}")
            leaks.check_text("snapshot file (msgpack decoded)", "\n".join(_strings(decoded)))
        assert self.summary_path.exists(), self.stderr()[-4000:]
        leaks.check_json("--summary-json", self.summary_path.read_bytes())
        leaks.check_text(f"stderr ({self.log_format} logs)", self.stderr())
        audit = self.audit_path.read_bytes()
        assert audit, "nothing audited"
        for line in audit.splitlines():
            leaks.check_json("audit log", line)


def _scenario(run: SurfaceRun, to_phase: str, reasons: tuple[str, str]) -> Leaks:
    """Drive one run through every surface; return what leaked."""
    leaks = Leaks()
    plan = _plan()
    chunks = len(plan["chunks"])
    with run.running():
        # Not a connection before the socket exists: httpx leaks the refused socket.
        run.wait("api.listening", lambda: "api.listening" in run.stderr())
        run.wait("the leaky system's ticks", lambda: run.status()["tick"] > chunks + 3)

        # The operator: a phase change with a reason, an over-long reason, a bad body.
        answer = run.post(
            "/v1/phase",
            {"phase": to_phase, "force": True, "reason": reasons[0]},
            leaks,
            "POST /v1/phase",
        )
        assert answer.status_code == 200, answer.text
        too_long = (reasons[1] + " | ") * 2
        answer = run.post(
            "/v1/phase", {"phase": to_phase, "reason": too_long}, leaks, "long reason"
        )
        assert answer.status_code == 400, answer.text
        answer = run.post("/v1/shutdown", {reasons[1][:60]: True}, leaks, "bad body")
        assert answer.status_code == 400, answer.text
        run.hostile_requests(leaks)
        run.read_api(leaks)

        # The system asks for an emergency with every secret in its reason.
        run.trigger.touch()
        run.wait("the system's emergency", lambda: run.status()["phase"] == "emergency_shutdown")
        run.read_api(leaks)

        # Restart, then the operator's own emergency.
        answer = run.post("/v1/restart", {}, leaks, "POST /v1/restart")
        assert answer.status_code == 200, answer.text
        run.wait("ticking again", lambda: run.status()["phase"] != "emergency_shutdown")
        answer = run.post(
            "/v1/shutdown", {"emergency": True, "reason": reasons[1]}, leaks, "emergency"
        )
        assert answer.status_code == 200, answer.text
        run.wait("the operator's emergency", lambda: run.status()["phase"] == "emergency_shutdown")
        run.read_api(leaks)

        answer = run.post("/v1/shutdown", {"reason": reasons[0]}, leaks, "POST /v1/shutdown")
        assert answer.status_code == 200, answer.text
        assert run.proc is not None
        run.proc.wait(timeout=STEP_TIMEOUT)
    run.read_files(leaks)
    return leaks


def _assert_no_leaks(leaks: Leaks, run: SurfaceRun) -> None:
    surfaces = len(leaks.surfaces)
    assert surfaces >= 14, leaks.surfaces
    # The secrets did reach the surfaces: their placeholders are there.
    stderr = run.stderr()
    for placeholder in ("[email]", "[iban]", "[phone]", "[private key]", "[card]"):
        assert placeholder in stderr, f"{placeholder} never logged: the system did not run?"
    assert not leaks.found, (
        f"{leaks.count()} (surface, shape) leaks over {surfaces} surfaces "
        f"and {len(SHAPES) + 1} shapes:\n{leaks.report()}"
    )


class TestTheSearchFindsLeaks:
    """The control: with redaction off, the same search finds the secrets on the surfaces."""

    def test_redaction_off_leaks_everywhere(self, tmp_path: Path) -> None:
        """``[features] redaction = false`` in TESTING: every shape is found in the logs and API.

        Without this, a search that could never match (a wrong needle, an
        unread file, a system that never ran) would pass the tests above.
        """
        run = SurfaceRun(tmp_path, "testing", "json", redaction=False)
        leaks = Leaks()
        chunks = len(_plan()["chunks"])
        with run.running():
            run.wait("api.listening", lambda: "api.listening" in run.stderr())
            run.wait("the leaky system's ticks", lambda: run.status()["tick"] > chunks + 3)
            run.read_api(leaks)
            answer = run.post("/v1/shutdown", {"reason": _halves()[0]}, leaks, "shutdown")
            assert answer.status_code == 200, answer.text
            assert run.proc is not None
            run.proc.wait(timeout=STEP_TIMEOUT)
        run.read_files(leaks)
        logged = {leak.split(" (")[0] for leak in leaks.found.get("stderr (json logs)", ())}
        assert logged == {*SHAPES, STRADDLE.shape}, set(SHAPES) - logged
        for surface in ("/v1/errors", "/v1/status", "/metrics", "audit log", "--summary-json"):
            assert leaks.found.get(surface), f"nothing found on {surface} with redaction off"
        assert "[email]" not in run.stderr()


class TestEverySurface:
    """No secret of any shape on any surface, in TESTING and PRODUCTION."""

    def test_testing_then_production_json_logs(self, tmp_path: Path) -> None:
        """Start in TESTING (JSON logs), promote to PRODUCTION (forced, with a reason)."""
        run = SurfaceRun(tmp_path, "testing", "json")
        leaks = _scenario(run, "production", _halves())
        _assert_no_leaks(leaks, run)

    def test_production_then_testing_console_logs(self, tmp_path: Path) -> None:
        """Start in PRODUCTION (console logs), move back to TESTING (forced, with a reason)."""
        first, second = _halves()
        run = SurfaceRun(tmp_path, "production", "console")
        leaks = _scenario(run, "testing", (second, first))
        _assert_no_leaks(leaks, run)

    def test_critical_start_failure_line(self, tmp_path: Path) -> None:
        """A critical system failing its start with secrets: the one error line is redacted."""
        run = SurfaceRun(tmp_path, "testing", "json", systems=("critical",))
        leaks = Leaks()
        with run.running():
            assert run.proc is not None
            run.proc.wait(timeout=STEP_TIMEOUT)
        assert run.proc.returncode not in (0, None), run.stderr()
        errors = [
            line for line in run.stderr().splitlines() if line.startswith("supervisor: error")
        ]
        assert len(errors) == 1, run.stderr()
        assert "critical" in errors[0]
        assert "ValueError: [" in errors[0], errors[0]  # starts with a placeholder
        leaks.check_text("stderr (start-up error line)", run.stderr())
        assert not leaks.found, leaks.report()


class TestEnteringARedactingPhase:
    """What was kept while redaction was off is redacted once a redacting phase begins."""

    def test_development_then_testing(self, tmp_path: Path) -> None:
        """Secrets flow in DEVELOPMENT (shown, by design), then the move to TESTING hides them.

        After the move, every surface read anew (API, probes, metrics, the
        summary, snapshots written since) shows none. The logs and the audit
        lines written *during* development keep what they showed then: a line
        once written is not taken back. The phase-change reason itself is
        given while still in development.
        """
        run = SurfaceRun(tmp_path, "development", "json")
        leaks = Leaks()
        first, second = _halves()
        chunks = len(_plan()["chunks"])
        with run.running():
            run.wait("api.listening", lambda: "api.listening" in run.stderr())
            run.wait("the leaky system's ticks", lambda: run.status()["tick"] > chunks + 3)
            with run.http() as http:
                raw = http.get("/v1/errors?limit=1000").content.decode()
            assert any(n in raw for s in SECRETS for n in s.needles), "no secret kept in dev?"
            answer = run.post(
                "/v1/phase",
                {"phase": "testing", "force": True, "reason": first},
                leaks,
                "POST /v1/phase (from development)",
            )
            assert answer.status_code == 200, answer.text
            run.read_api(leaks)
            run.trigger.touch()
            run.wait(
                "the system's emergency", lambda: run.status()["phase"] == "emergency_shutdown"
            )
            run.read_api(leaks)
            answer = run.post("/v1/shutdown", {"reason": second}, leaks, "POST /v1/shutdown")
            assert answer.status_code == 200, answer.text
            assert run.proc is not None
            run.proc.wait(timeout=STEP_TIMEOUT)
        leaks.check_json("--summary-json", run.summary_path.read_bytes())
        later = [
            path
            for path in sorted((tmp_path / "state" / "snapshots").rglob("*.msgpack"))
            if run.snapshot_phase(path) != "development"
        ]
        assert later, "no snapshot written after leaving development"
        for path in later:
            leaks.check_text(
                "snapshot file (raw bytes)", path.read_bytes().decode("utf-8", "replace")
            )
        # A message cut while redaction was off keeps a half secret at its cut,
        # which no rule knows later: Redactor.text_after_cut drops that edge.
        assert not leaks.found, (
            f"{leaks.count()} (surface, shape) leaks after entering TESTING:\n{leaks.report()}"
        )
