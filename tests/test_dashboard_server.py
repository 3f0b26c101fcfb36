"""The dashboard's server side: sessions, CSRF, login limits, the page, static files, the stream.

In memory: the ASGI app of ``tests/test_api.py`` (its :class:`FakeSupervisor`)
through ``httpx.ASGITransport``, and the raw ASGI interface for the stream
(httpx's transport would wait for a stream's end). Time is passed in (the
sessions' wall clock, the limiter's monotonic clock), so expiry and refill are
exact. The real server, a real ``supervisor run`` and real sockets are in
``tests/test_dashboard_server_e2e.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from test_api import (
    OPERATOR_TOKEN,
    TOKENS,
    VIEWER_TOKEN,
    FakeSupervisor,
    Rig,
    make_rig,
)

from supervisor import Caller
from supervisor._core._histogram import Histogram
from supervisor._server._dashboard import CSP, session_cookie
from supervisor._server._events import HISTORY, QUEUE_FRAMES, Broadcaster
from supervisor._server._session import COOKIE_NAME, LoginLimiter, Sessions

OPS = Caller(name="ops", role="operator")
T0 = 1_800_000_000.0
PAGE = "<!doctype html><html><head><title>d</title></head><body>page</body></html>"


# ------------------------------------------------------------------ sessions


class TestSessions:
    def test_a_cookie_opens_its_session_until_it_expires(self) -> None:
        sessions = Sessions(lifetime=100.0)
        session, value = sessions.open(OPS, token="ab" * 32, now=T0)
        assert sessions.check(value, now=T0) == session
        assert sessions.check(value, now=T0 + 99.9) == session
        assert sessions.check(value, now=T0 + 100.0) is None  # expired at exactly its end
        assert session.caller == OPS
        assert session.token == "ab" * 32

    @pytest.mark.parametrize("where", ["payload", "signature"])
    def test_any_altered_byte_is_refused(self, where: str) -> None:
        sessions = Sessions()
        _, value = sessions.open(OPS, token=None, now=T0)
        body, mac = value.split(".")
        for i in range(len(body if where == "payload" else mac)):
            part = body if where == "payload" else mac
            flipped = part[:i] + ("A" if part[i] != "A" else "B") + part[i + 1 :]
            forged = f"{flipped}.{mac}" if where == "payload" else f"{body}.{flipped}"
            assert sessions.check(forged, now=T0) is None, (where, i)

    def test_a_forged_role_is_refused(self) -> None:
        """A viewer cannot rewrite its own cookie into an operator's."""
        import base64

        sessions = Sessions()
        _, value = sessions.open(Caller(name="v", role="viewer"), token=None, now=T0)
        body, mac = value.split(".")
        payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        payload["r"] = "operator"
        raw = json.dumps(payload, separators=(",", ":")).encode()
        forged = base64.urlsafe_b64encode(raw).rstrip(b"=").decode() + "." + mac
        assert sessions.check(forged, now=T0) is None

    @pytest.mark.parametrize(
        "value", ["", ".", "a.b.c", "x" * 600, "!!!.???", "eyJ9.", "bm90IGpzb24.AAAA"]
    )
    def test_garbage_is_refused_without_error(self, value: str) -> None:
        assert Sessions().check(value, now=T0) is None

    def test_a_restart_revokes_every_session(self) -> None:
        """The key is per process: another Sessions (a restart) knows no cookie."""
        _, value = Sessions().open(OPS, token=None, now=T0)
        assert Sessions().check(value, now=T0) is None

    def test_logout_ends_the_session_on_the_server(self) -> None:
        sessions = Sessions()
        session, value = sessions.open(OPS, token=None, now=T0)
        sessions.close(session.id)
        assert sessions.check(value, now=T0) is None

    def test_sessions_are_bounded_oldest_ended_first(self) -> None:
        sessions = Sessions(max_sessions=3)
        values = [sessions.open(OPS, token=None, now=T0 + i)[1] for i in range(5)]
        assert len(sessions) == 3
        assert [sessions.check(v, now=T0 + 5) is not None for v in values] == [
            False,
            False,
            True,
            True,
            True,
        ]

    def test_one_caller_cannot_push_out_the_others(self) -> None:
        sessions = Sessions(max_sessions=100, max_per_caller=4)
        _, ops = sessions.open(OPS, token=None, now=T0)
        viewer = Caller(name="v", role="viewer")
        values = [sessions.open(viewer, token=None, now=T0)[1] for _ in range(500)]
        assert len(sessions) == 5
        assert sessions.check(ops, now=T0) is not None
        assert [sessions.check(v, now=T0) is not None for v in values[-5:]] == [False] + [True] * 4

    def test_csrf_token_is_per_session_and_checked_in_full(self) -> None:
        sessions = Sessions()
        a, _ = sessions.open(OPS, token=None, now=T0)
        b, _ = sessions.open(OPS, token=None, now=T0)
        assert a.csrf != b.csrf
        assert sessions.csrf_ok(a, a.csrf.encode())
        assert not sessions.csrf_ok(a, b.csrf.encode())
        assert not sessions.csrf_ok(a, a.csrf[:-1].encode())
        assert not sessions.csrf_ok(a, None)


class TestLoginLimiter:
    def test_burst_then_one_try_per_interval(self) -> None:
        limiter = LoginLimiter(burst=3, every=10.0)
        for _ in range(3):
            assert limiter.retry_after("1.2.3.4", 0.0) == 0.0
            limiter.failed("1.2.3.4", 0.0)
        assert limiter.retry_after("1.2.3.4", 0.0) == pytest.approx(10.0)
        assert limiter.retry_after("1.2.3.4", 4.0) == pytest.approx(6.0)
        assert limiter.retry_after("1.2.3.4", 10.0) == 0.0
        assert limiter.retry_after("5.6.7.8", 0.0) == 0.0  # per peer

    def test_memory_is_bounded(self) -> None:
        limiter = LoginLimiter(burst=1, every=60.0, max_peers=10)
        for i in range(100):
            limiter.failed(f"peer{i}", 0.0)
        assert limiter.retry_after("peer99", 0.0) > 0
        assert limiter.retry_after("peer0", 0.0) == 0.0  # forgotten: bounded memory


def test_cookie_flags() -> None:
    plain = session_cookie("v", max_age=60, secure=False).decode()
    assert plain == f"{COOKIE_NAME}=v; Path=/; HttpOnly; SameSite=Strict; Max-Age=60"
    assert session_cookie("v", max_age=60, secure=True).decode().endswith("; Secure")


# ------------------------------------------------------------------ the app


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    """The API on TCP (a token or a session is needed) with a dashboard page installed."""
    rig = make_rig(tmp_path, "dev-tcp")
    static = tmp_path / "static"
    static.mkdir()
    (static / "dashboard.html").write_text(PAGE)
    (static / "dashboard.js").write_text("console.log(1);\n")
    (static / "dashboard.css").write_text("body{}\n")
    (static / "notes.unknown").write_text("secret-ish")
    (tmp_path / "outside.css").write_text("outside")
    (static / "link.css").symlink_to(tmp_path / "outside.css")
    rig.app.dashboard.static_dir = static
    return rig


def _client(rig: Rig, *, https: bool = False) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=rig.app)
    base = "https://api" if https else "http://api"
    return httpx.AsyncClient(transport=transport, base_url=base)


async def _login(
    client: httpx.AsyncClient, token: str = OPERATOR_TOKEN, **headers: str
) -> httpx.Response:
    return await client.post("/dashboard/login", data={"token": token}, headers=headers)


async def _csrf(client: httpx.AsyncClient) -> str:
    answer = await client.get("/dashboard/session")
    assert answer.status_code == 200
    csrf: str = answer.json()["csrf"]
    return csrf


class TestLogin:
    async def test_the_form_is_served_with_the_csp(self, rig: Rig) -> None:
        async with _client(rig) as client:
            answer = await client.get("/dashboard/login")
        assert answer.status_code == 200
        assert 'name="token"' in answer.text
        assert 'action="/dashboard/login"' in answer.text
        assert answer.headers["content-security-policy"] == CSP
        assert "<script" not in answer.text
        assert "style=" not in answer.text

    async def test_a_right_token_gets_a_session_cookie_and_303(self, rig: Rig) -> None:
        async with _client(rig) as client:
            answer = await _login(client)
            assert answer.status_code == 303
            assert answer.headers["location"] == "/dashboard"
            cookie = answer.headers["set-cookie"]
            assert cookie.startswith(f"{COOKIE_NAME}=")
            flags = cookie.split("; ")
            for flag in ("HttpOnly", "SameSite=Strict", "Path=/"):
                assert flag in flags
            max_age = [f for f in flags if f.startswith("Max-Age=")]
            assert max_age
            assert abs(int(max_age[0].split("=")[1]) - 43200) <= 1
            assert "Secure" not in cookie  # plain HTTP here
            assert OPERATOR_TOKEN not in cookie
            session = (await client.get("/dashboard/session")).json()
        assert session["name"] == "ops"
        assert session["role"] == "operator"
        assert len(session["csrf"]) >= 32
        line = rig.audit_lines()[-1]
        assert (line["action"], line["caller"], line["result"]["status"]) == ("login", "ops", 303)

    async def test_over_tls_the_cookie_is_secure(self, rig: Rig) -> None:
        async with _client(rig, https=True) as client:
            answer = await _login(client)
        assert "Secure" in answer.headers["set-cookie"].split("; ")

    async def test_a_wrong_token_gets_the_form_again_401_and_is_audited(self, rig: Rig) -> None:
        async with _client(rig) as client:
            answer = await _login(client, "nope")
        assert answer.status_code == 401
        assert "set-cookie" not in answer.headers
        assert "That token is not valid." in answer.text
        line = rig.audit_lines()[-1]
        assert (line["action"], line["stage"], line["result"]["status"]) == (
            "login",
            "refused",
            401,
        )

    async def test_failed_logins_are_rate_limited_per_peer(self, rig: Rig) -> None:
        now = [0.0]
        rig.app.dashboard.monotonic = lambda: now[0]
        async with _client(rig) as client:
            statuses = [(await _login(client, "guess")).status_code for _ in range(5)]
            assert statuses == [401] * 5
            limited = await _login(client, OPERATOR_TOKEN)  # even the right one: not looked at
            assert limited.status_code == 429
            assert limited.headers["retry-after"] == "12"
            assert "set-cookie" not in limited.headers
            now[0] = 12.0
            assert (await _login(client, OPERATOR_TOKEN)).status_code == 303

    @pytest.mark.parametrize(
        ("content", "ctype", "status"),
        [
            (b"token=a&token=b", "application/x-www-form-urlencoded", 400),
            (b'{"token": "x"}', "application/json", 415),
            (b"token=" + b"a" * 5000, "application/x-www-form-urlencoded", 413),
            (b"\xff\xfe", "application/x-www-form-urlencoded", 400),
            (b"a=1&b=2&c=3&d=4&e=5&f=6&g=7&h=8&i=9", "application/x-www-form-urlencoded", 400),
        ],
    )
    async def test_hostile_bodies_get_one_clear_error(
        self, rig: Rig, content: bytes, ctype: str, status: int
    ) -> None:
        async with _client(rig) as client:
            answer = await client.post(
                "/dashboard/login", content=content, headers={"content-type": ctype}
            )
        assert answer.status_code == status
        assert "set-cookie" not in answer.headers

    async def test_a_form_posted_from_another_site_is_refused(self, rig: Rig) -> None:
        async with _client(rig) as client:
            cross = await _login(client, origin="https://evil.example")
            fetch = await _login(client, **{"sec-fetch-site": "cross-site"})
            site = await _login(client, origin="http://api", **{"sec-fetch-site": "same-site"})
            same = await _login(client, origin="http://api", **{"sec-fetch-site": "same-origin"})
            # What Chromium sends for our own form under Referrer-Policy: no-referrer.
            chromium = await _login(client, origin="null", **{"sec-fetch-site": "same-origin"})
            old = await _login(client, origin="null")  # no Sec-Fetch-Site: Origin decides
        assert (cross.status_code, fetch.status_code, site.status_code, old.status_code) == (
            403,
            403,
            403,
            403,
        )
        assert (same.status_code, chromium.status_code) == (303, 303)

    async def test_a_token_removed_by_a_phase_ends_its_sessions(self, rig: Rig) -> None:
        async with _client(rig) as client:
            await _login(client)
            assert (await client.get("/v1/status")).status_code == 200
            rig.app.use_tokens(TOKENS[1:])  # the operator token is gone
            assert (await client.get("/v1/status")).status_code == 401

    async def test_logout_needs_csrf_then_ends_the_session(self, rig: Rig) -> None:
        async with _client(rig) as client:
            await _login(client)
            csrf = await _csrf(client)
            refused = await client.post("/dashboard/logout")
            assert refused.status_code == 403
            assert (await client.get("/v1/status")).status_code == 200
            cookie = client.cookies[COOKIE_NAME]
            answer = await client.post("/dashboard/logout", headers={"x-csrf-token": csrf})
            assert answer.status_code == 303
            assert answer.headers["location"] == "/dashboard/login"
            assert "Max-Age=0" in answer.headers["set-cookie"]
            # The old cookie, replayed (stolen before logout), is worthless.
            client.cookies.set(COOKIE_NAME, cookie)
            assert (await client.get("/v1/status")).status_code == 401
        assert rig.audit_lines()[-1]["action"] == "logout"


class TestCookieOnTheApi:
    async def test_csrf_missing_or_wrong_is_403_and_nothing_changes(self, rig: Rig) -> None:
        async with _client(rig) as client:
            await _login(client)
            csrf = await _csrf(client)
            for headers in ({}, {"x-csrf-token": "wrong"}, {"x-csrf-token": csrf[:-2]}):
                answer = await client.post(
                    "/v1/shutdown", json={"emergency": True, "reason": "x"}, headers=headers
                )
                assert answer.status_code == 403
                assert "X-CSRF-Token" in answer.json()["error"]
            assert rig.fake.state() == ("development", False, False, 0)
            assert not [c for c in rig.fake.calls if c[0] == "shutdown"]
            answer = await client.post(
                "/v1/shutdown",
                json={"emergency": True, "reason": "from the page"},
                headers={"x-csrf-token": csrf},
            )
        assert answer.status_code == 200
        assert rig.fake.emergency
        lines = [x for x in rig.all_audit_lines() if x["action"] == "shutdown"]
        # Refusals are audited with the caller; the action has its attempt and result.
        assert [x["result"]["status"] if x["result"] else None for x in lines] == [
            403,
            403,
            403,
            None,
            200,
        ]
        assert lines[-1]["caller"] == "ops"
        assert lines[-2]["arguments"]["reason"] == "from the page"

    async def test_a_viewer_session_cannot_act_even_with_its_csrf(self, rig: Rig) -> None:
        async with _client(rig) as client:
            await _login(client, VIEWER_TOKEN)
            csrf = await _csrf(client)
            assert (await client.get("/v1/status")).status_code == 200
            for path, body in [
                ("/v1/shutdown", {"emergency": True, "reason": "x"}),
                ("/v1/restart", {}),
                ("/v1/phase", {"phase": "testing"}),
                ("/v1/systems/economy/quarantine", {"reason": "x"}),
            ]:
                answer = await client.post(path, json=body, headers={"x-csrf-token": csrf})
                assert answer.status_code == 403, path
                assert "needs operator" in answer.json()["error"]
        assert rig.fake.state() == ("development", False, False, 0)

    async def test_restart_from_the_page_has_its_reason_audited(self, rig: Rig) -> None:
        async with _client(rig) as client:
            await _login(client)
            csrf = await _csrf(client)
            answer = await client.post(
                "/v1/restart",
                json={"reason": "page: stuck economy"},
                headers={"x-csrf-token": csrf},
            )
        assert answer.status_code == 200
        attempt = next(x for x in rig.all_audit_lines() if x["action"] == "restart")
        assert attempt["arguments"] == {"reason": "page: stuck economy"}
        assert rig.fake.restarts == 1

    async def test_bearer_clients_need_no_csrf(self, rig: Rig) -> None:
        async with _client(rig) as client:
            answer = await client.post(
                "/v1/restart", json={}, headers={"authorization": f"Bearer {OPERATOR_TOKEN}"}
            )
        assert answer.status_code == 200

    async def test_a_bad_or_doubled_cookie_counts_as_none(self, rig: Rig) -> None:
        async with _client(rig) as client:
            await _login(client)
            good = client.cookies[COOKIE_NAME]
        transport = httpx.ASGITransport(app=rig.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as bare:
            for cookie in [f"{COOKIE_NAME}=junk", f"{COOKIE_NAME}={good}; {COOKIE_NAME}=x"]:
                answer = await bare.get("/v1/status", headers={"cookie": cookie})
                assert answer.status_code == 401, cookie
            answer = await bare.get("/v1/status", headers={"cookie": f"{COOKIE_NAME}={good}"})
            assert answer.status_code == 200


class TestPage:
    async def test_no_session_is_sent_to_the_login_form(self, rig: Rig) -> None:
        async with _client(rig) as client:
            answer = await client.get("/dashboard")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/dashboard/login"

    async def test_the_page_has_its_headers_and_the_sessions_csrf(self, rig: Rig) -> None:
        async with _client(rig) as client:
            await _login(client, VIEWER_TOKEN)
            csrf = await _csrf(client)
            answer = await client.get("/dashboard")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/html")
        assert answer.headers["content-security-policy"] == CSP
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert f'<meta name="supervisor-csrf" content="{csrf}">' in answer.text
        assert '<meta name="supervisor-role" content="viewer">' in answer.text

    async def test_the_unix_socket_owner_needs_no_login(self, tmp_path: Path) -> None:
        rig = make_rig(tmp_path, "dev-unix")
        (tmp_path / "dashboard.html").write_text(PAGE)
        rig.app.dashboard.static_dir = tmp_path
        async with rig.client() as client:
            page = await client.get("/dashboard")
            session = await client.get("/dashboard/session")
        assert page.status_code == 200
        assert '<meta name="supervisor-role" content="operator">' in page.text
        assert session.json()["csrf"] is None

    async def test_a_missing_page_is_a_clear_503(self, rig: Rig, tmp_path: Path) -> None:
        rig.app.dashboard.static_dir = tmp_path / "nothing"
        async with _client(rig) as client:
            await _login(client)
            answer = await client.get("/dashboard")
        assert answer.status_code == 503
        assert "not installed" in answer.json()["error"]


class TestStatic:
    async def test_files_have_their_types_and_cache_headers(self, rig: Rig) -> None:
        async with _client(rig) as client:
            js = await client.get("/dashboard/static/dashboard.js")
            css = await client.get("/dashboard/static/dashboard.css")
            again = await client.get(
                "/dashboard/static/dashboard.js", headers={"if-none-match": js.headers["etag"]}
            )
        assert js.status_code == 200
        assert js.text == "console.log(1);\n"
        assert js.headers["content-type"] == "text/javascript; charset=utf-8"
        assert css.headers["content-type"] == "text/css; charset=utf-8"
        assert js.headers["cache-control"] == "no-cache"
        assert js.headers["x-content-type-options"] == "nosniff"
        assert again.status_code == 304
        assert again.content == b""

    @pytest.mark.parametrize(
        "path",
        [
            "/dashboard/static/../_app.py",
            "/dashboard/static/%2e%2e/_app.py",
            "/dashboard/static/..%2f_app.py",
            "/dashboard/static/sub/dashboard.js",
            "/dashboard/static/.hidden.js",
            "/dashboard/static/",
            "/dashboard/static/notes.unknown",
            "/dashboard/static/link.css",
            "/dashboard/static/dashboard.js%00.css",
            "/dashboard/static/" + "a" * 300 + ".js",
            "/dashboard/static//etc/passwd",
        ],
    )
    async def test_nothing_outside_the_folder_is_reachable(self, rig: Rig, path: str) -> None:
        async with _client(rig) as client:
            answer = await client.get(path)
        assert answer.status_code == 404, path
        # httpx resolves a literal "..": that request is for another dashboard path.
        assert answer.json()["error"] in ("no such dashboard file", "no such dashboard page")

    async def test_wrong_methods_are_405(self, rig: Rig) -> None:
        async with _client(rig) as client:
            assert (await client.post("/dashboard/static/dashboard.js")).status_code == 405
            assert (await client.delete("/dashboard")).status_code == 405
            assert (await client.put("/dashboard/login")).status_code == 405
            assert (await client.head("/dashboard/events")).status_code == 405
            assert (await client.get("/dashboard/nope")).status_code == 404


# ------------------------------------------------------------------ the stream


class _Observed:
    """What the broadcaster reads: real histograms, the fake's views."""

    def __init__(self) -> None:
        self.fake = FakeSupervisor()
        self.lateness = Histogram()
        self.work = Histogram()
        self.errors = type("E", (), {"total": 0})()

    def status(self) -> Any:
        return self.fake.status()

    def error_view(self, *, limit: int = 20, system: str | None = None) -> Any:
        return self.fake.error_view(limit=limit, system=system)


class TestBroadcaster:
    async def test_points_are_per_second_quantiles_of_the_histograms(self) -> None:
        sup = _Observed()
        now = [T0]
        b = Broadcaster(sup, wall=lambda: now[0])
        await b.publish()  # the first copy of the counts: no second before it
        for _ in range(99):
            sup.lateness.record(0.001)
            sup.work.record(0.0002)
        sup.lateness.record(0.050)
        now[0] += 1
        await b.publish()
        point = b.history[-1]
        assert point["t"] == T0 + 1
        assert point["ticks"] == 100
        assert point["lateness_p50"] == pytest.approx(0.001, rel=0.05)
        assert point["lateness_p99"] == pytest.approx(0.001, rel=0.05)
        assert point["work_p50"] == pytest.approx(0.0002, rel=0.05)
        now[0] += 1
        await b.publish()  # nothing recorded in this second
        assert b.history[-1]["ticks"] == 0
        assert b.history[-1]["lateness_p99"] == 0.0

    async def test_history_is_the_last_300_seconds(self) -> None:
        b = Broadcaster(_Observed())
        for _ in range(HISTORY + 50):
            await b.publish()
        assert len(b.history) == HISTORY

    async def test_no_frame_is_built_while_nobody_listens(self) -> None:
        sup = _Observed()
        b = Broadcaster(sup)
        for _ in range(5):
            await b.publish()
        assert b.frames == 0
        assert not [c for c in sup.fake.calls if c[0] == "status"]

    async def test_one_frame_per_second_for_every_subscriber(self) -> None:
        sup = _Observed()
        b = Broadcaster(sup)
        subs = [b.subscribe(256) for _ in range(50)]
        await b.publish()
        assert b.frames == 1
        assert len([c for c in sup.fake.calls if c[0] == "status"]) == 1
        events = [s.receive.receive_nowait() for s in subs if s is not None]
        assert len(events) == 50
        assert len({id(e) for e in events}) == 1
        name, data = _parse(events[0])
        assert name == "frame"
        frame = json.loads(data)
        assert set(frame) == {"t", "status", "series", "alerts", "errors"}
        assert frame["status"]["tick"] == 1234
        assert frame["errors"]["recent"][0]["exc_type"] == "ZeroDivisionError"
        assert set(frame["series"]) == {
            "t",
            "ticks",
            "lateness_p50",
            "lateness_p99",
            "work_p50",
            "work_p99",
        }

    async def test_a_slow_subscriber_is_dropped_not_buffered(self) -> None:
        b = Broadcaster(_Observed())
        slow = b.subscribe(256)
        fast = b.subscribe(256)
        assert slow is not None
        assert fast is not None
        for _ in range(QUEUE_FRAMES):
            await b.publish()
            fast.receive.receive_nowait()
        assert b.streams == 2
        await b.publish()  # the slow one's queue is full
        assert b.streams == 1
        assert b.dropped == 1
        for _ in range(QUEUE_FRAMES):
            slow.receive.receive_nowait()  # what it had, then the end
        with pytest.raises(trio.EndOfChannel):
            slow.receive.receive_nowait()

    async def test_streams_are_capped_at_half_the_connections(self) -> None:
        b = Broadcaster(_Observed(), max_streams=128)
        assert all(b.subscribe(20) is not None for _ in range(10))
        assert b.subscribe(20) is None
        assert b.refused == 1
        assert b.subscribe(10_000) is not None  # the cap itself: 128
        while b.subscribe(10_000) is not None:
            pass
        assert b.streams == 128

    async def test_hello_has_the_history_then_the_latest_frame(self) -> None:
        b = Broadcaster(_Observed())
        assert _parse(b.hello().split(b"\n", 1)[1])[0] == "hello"
        for _ in range(3):
            await b.publish()
        name, data = _parse(b.hello().split(b"\n", 1)[1])
        hello = json.loads(data)
        assert name == "hello"
        assert b.hello().startswith(b"retry: 2000\n")
        assert len(hello["history"]) == 3
        assert hello["interval"] == 1.0
        assert hello["frame"]["status"]["tick"] == 1234

    async def test_error_trend_counts_per_minute(self) -> None:
        sup = _Observed()
        now = [T0 - T0 % 60]
        b = Broadcaster(sup, wall=lambda: now[0])
        for total in (0, 2, 5):  # three seconds of one minute
            sup.errors.total = total
            await b.publish()
            now[0] += 1
        now[0] += 60
        sup.errors.total = 6
        await b.publish()
        sup.errors.total = 1  # a lower total: counts were reset; counted from 0
        await b.publish()
        assert list(b._trend) == [[T0 - T0 % 60, 5], [T0 - T0 % 60 + 60, 2]]


def _parse(event: bytes) -> tuple[str, bytes]:
    match = re.fullmatch(rb"event: (\w+)\ndata: (.*)\n\n", event, re.DOTALL)
    assert match is not None, event[:200]
    assert b"\n" not in match[2]
    return match[1].decode(), match[2]


class TestStreamRequests:
    async def _stream(
        self, rig: Rig, cookie: str | None, nursery: trio.Nursery
    ) -> tuple[trio.MemoryReceiveChannel[dict[str, Any]], trio.Event]:
        out_send, out_receive = trio.open_memory_channel[dict[str, Any]](100)
        gone = trio.Event()
        delivered = [False]

        async def receive() -> dict[str, Any]:
            if not delivered[0]:
                delivered[0] = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        headers = [(b"host", b"api")]
        if cookie is not None:
            headers.append((b"cookie", cookie.encode()))
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/dashboard/events",
            "headers": headers,
            "query_string": b"",
            "scheme": "http",
            "client": ("127.0.0.1", 5000),
        }

        async def send(message: dict[str, Any]) -> None:
            await out_send.send(message)

        async def run() -> None:
            await rig.app(scope, receive, send)
            out_send.close()

        nursery.start_soon(run)
        return out_receive, gone

    async def _cookie(self, rig: Rig, token: str = VIEWER_TOKEN) -> str:
        async with _client(rig) as client:
            await _login(client, token)
            return f"{COOKIE_NAME}={client.cookies[COOKIE_NAME]}"

    async def test_a_viewer_gets_hello_then_frames_and_a_hang_up_frees_the_slot(
        self, rig: Rig
    ) -> None:
        b = Broadcaster(_Observed())
        rig.app.events = rig.app.dashboard.events = b
        cookie = await self._cookie(rig)
        async with trio.open_nursery() as nursery:
            messages, gone = await self._stream(rig, cookie, nursery)
            start = await messages.receive()
            assert start["status"] == 200
            assert (b"content-type", b"text/event-stream; charset=utf-8") in start["headers"]
            hello = await messages.receive()
            assert b"event: hello" in hello["body"]
            assert hello["more_body"]
            assert b.streams == 1
            await b.publish()
            frame = await messages.receive()
            assert frame["body"].startswith(b"event: frame\n")
            gone.set()  # the client hangs up half-way
        assert b.streams == 0

    async def test_no_session_no_stream(self, rig: Rig) -> None:
        rig.app.events = rig.app.dashboard.events = Broadcaster(_Observed())
        async with trio.open_nursery() as nursery:
            messages, _ = await self._stream(rig, None, nursery)
            start = await messages.receive()
        assert start["status"] == 401

    async def test_when_the_broadcaster_stops_the_stream_ends_cleanly(self, rig: Rig) -> None:
        b = Broadcaster(_Observed(), interval=3600)
        rig.app.events = rig.app.dashboard.events = b
        cookie = await self._cookie(rig)
        async with trio.open_nursery() as nursery:
            service = trio.CancelScope()

            async def broadcast() -> None:
                with service:
                    await b.broadcast(None, trio.TASK_STATUS_IGNORED)

            nursery.start_soon(broadcast)
            messages, _ = await self._stream(rig, cookie, nursery)
            await messages.receive()
            await messages.receive()  # hello
            service.cancel()
            rest = [m async for m in messages]
        assert rest[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
        assert b.streams == 0
