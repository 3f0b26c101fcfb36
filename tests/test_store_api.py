"""``GET /v1/errors?since=`` and ``/v1/errors/trends`` over a real store, and the CLI on them."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
import trio
from click.testing import CliRunner
from test_store import rec

from supervisor._core._config_sections import ApiConfig
from supervisor._server._app import make_app
from supervisor._server._audit import AuditLog
from supervisor._server._serve import serve_api
from supervisor._store._db import ErrorStore, MinuteRow
from supervisor._store._shipper import ErrorShipper
from supervisor.testing import make_supervisor


def fill(path: Path, now: float) -> None:
    store = ErrorStore.open(path, now=now - 7200, config_version="v1")
    store.write([rec(now - 3000 + i, fp="old") for i in range(30)])
    store.write([rec(now - 30 + i * 0.1, fp="burst", system="tycoon") for i in range(100)])
    store.write_minute(MinuteRow(minute=int(now) // 60 * 60 - 60, seconds=60, ticks=1800))
    store.close()


def client(tmp_path: Path, shipper: ErrorShipper | None) -> httpx.AsyncClient:
    sup = make_supervisor({})
    app = make_app(
        sup, api=ApiConfig(), tcp=False, audit=AuditLog(tmp_path / "audit.jsonl"),
        error_store=shipper,
    )  # fmt: skip

    async def as_owner(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        await app({**scope, "extensions": {"peer_uid": os.getuid()}}, receive, send)

    transport = httpx.ASGITransport(app=as_owner)
    return httpx.AsyncClient(transport=transport, base_url="http://api")


@pytest.fixture
def shipper(tmp_path: Path) -> ErrorShipper:
    fill(tmp_path / "errors.db", time.time())
    return ErrorShipper(path=tmp_path / "errors.db")


async def test_errors_since_reads_the_store(tmp_path: Path, shipper: ErrorShipper) -> None:
    async with client(tmp_path, shipper) as c:
        r = await c.get("/v1/errors", params={"since": "10m", "limit": "3"})
        assert r.status_code == 200
        body = r.json()
        assert body["source"] == "store"
        assert body["counts"] == {"tycoon": 100}
        assert len(body["records"]) == 3
        r = await c.get("/v1/errors", params={"since": "2h", "system": "economy"})
        assert r.json()["total"] == 30
        r = await c.get("/v1/errors", params={"fingerprint": "bur"})
        assert r.json()["total"] == 100
        # Without store options: the in-memory view, as before.
        r = await c.get("/v1/errors")
        assert "source" not in r.json()


async def test_trends_answer(tmp_path: Path, shipper: ErrorShipper) -> None:
    async with client(tmp_path, shipper) as c:
        r = await c.get("/v1/errors/trends", params={"since": "2h", "bucket": "10m"})
    assert r.status_code == 200
    body = r.json()
    assert body["bucket"] == 600
    assert {s["fingerprint"]: s["total"] for s in body["series"]} == {"burst": 100, "old": 30}
    assert body["top_movers"][0]["fingerprint"] == "burst"
    assert body["new"]["config_version"] == "v1"
    assert body["store"]["schema_version"] == 2
    assert body["correlation"]["minutes"] == 1


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"since": "yesterday"}, "query parameter 'since'"),
        ({"since": "30d", "bucket": "1m"}, "buckets"),
        ({"bucket": "5x"}, "query parameter 'bucket'"),
        ({"nope": "1"}, "unknown query parameter"),
    ],
)
async def test_bad_queries_are_400(
    tmp_path: Path, shipper: ErrorShipper, query: dict[str, str], message: str
) -> None:
    async with client(tmp_path, shipper) as c:
        r = await c.get("/v1/errors/trends", params=query)
    assert r.status_code == 400
    assert message in r.json()["error"]


async def test_no_store_is_404(tmp_path: Path) -> None:
    async with client(tmp_path, None) as c:
        r = await c.get("/v1/errors/trends")
        assert r.status_code == 404
        assert "store" in r.json()["error"]
        r = await c.get("/v1/errors", params={"since": "1h"})
        assert r.status_code == 404


def test_report_reads_the_file_without_a_supervisor(tmp_path: Path) -> None:
    """``supervisor report`` from --state-dir: text, Markdown and JSON; SLOs from --config."""
    from supervisor._cli._main import cli

    fill(tmp_path / "errors.db", time.time())
    runner = CliRunner()
    text = runner.invoke(cli, ["report", "--state-dir", str(tmp_path), "--since", "1d"])
    assert text.exit_code == 0, text.output
    assert "ticks_on_time" in text.output  # the default objectives
    assert "130 errors" in text.output
    md = runner.invoke(cli, ["report", "--state-dir", str(tmp_path), "--markdown"])
    assert "| objective |" in md.output
    config = tmp_path / "s.toml"
    config.write_text('[slo.fast]\nkind = "timeliness"\ntarget = 0.99\nlateness_ms = 2\n')
    js = runner.invoke(
        cli, ["report", "--config", str(config), "--state-dir", str(tmp_path), "--json"]
    )
    assert js.exit_code == 0, js.output
    levels = json.loads(js.output)["service_levels"]
    assert [(s["name"], s["ratio"]) for s in levels] == [("fast", 1.0)]
    config.write_text("[slo.fast]\ntarget = 1.5\n")
    bad = runner.invoke(cli, ["report", "--config", str(config)])
    assert bad.exit_code == 2
    assert "slo.fast.target" in bad.output
    missing = runner.invoke(cli, ["report", "--state-dir", str(tmp_path / "none")])
    assert missing.exit_code == 1


@pytest.fixture
def served(tmp_path: Path, shipper: ErrorShipper) -> Iterator[str]:
    """The app with the store, served on a Unix socket by serve_api in a thread; its address."""
    folder = Path(tempfile.mkdtemp(prefix="sv-"))  # a socket path must be short
    sup = make_supervisor({})
    app = make_app(
        sup, api=ApiConfig(), tcp=False, audit=AuditLog(tmp_path / "audit.jsonl"),
        error_store=shipper,
    )  # fmt: skip
    listen = f"unix:{folder / 's.sock'}"
    started = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        state["token"] = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:
            state["scope"] = scope
            async with trio.open_nursery() as nursery:
                await nursery.start(serve_api, app, listen)
                started.set()

    thread = threading.Thread(target=lambda: trio.run(main), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield listen
    finally:
        trio.from_thread.run_sync(state["scope"].cancel, trio_token=state["token"])
        thread.join(10)
        shutil.rmtree(folder, ignore_errors=True)


def test_errors_command_on_the_store(served: str) -> None:
    """``supervisor errors --since/--trend/--new`` through the API, text and JSON."""
    from supervisor._cli._main import cli

    runner = CliRunner()
    with structlog.testing.capture_logs():
        since = runner.invoke(cli, ["errors", "--since", "1h", "--api", served])
        trend = runner.invoke(cli, ["errors", "--trend", "--since", "2h", "--api", served])
        new = runner.invoke(cli, ["errors", "--new", "--api", served])
        js = runner.invoke(cli, ["errors", "--trend", "--json", "--api", served])
        bad = runner.invoke(cli, ["errors", "--since", "soon", "--api", served])
    assert since.exit_code == 0, since.output
    assert "tycoon" in since.stdout
    assert trend.exit_code == 0, trend.output
    assert "top movers: tycoon/burst" in trend.stdout
    assert "new since the process started: 2" in new.stdout
    assert json.loads(js.stdout)["series"][0]["fingerprint"] == "burst"
    assert bad.exit_code == 1
    assert "query parameter 'since'" in bad.output
