"""``GET /v1/experiments`` (issue 13): viewers may read it, nothing else is accepted."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx

from supervisor import ApiConfig, TokenConfig
from supervisor._server._app import make_app
from supervisor._server._audit import AuditLog
from supervisor.testing import make_supervisor

VIEWER = "viewer-token-0123456789"
CONFIG = {
    "flags": {"new_shop": {"percent": 10}},
    "experiments": {"layout": {"arms": {"a": 50, "b": 50}}},
}


def _client(tmp_path: Path) -> tuple[Any, httpx.AsyncClient]:
    sup = make_supervisor({}, config=CONFIG)
    token = TokenConfig(
        name="grafana", role="viewer", sha256=hashlib.sha256(VIEWER.encode()).hexdigest()
    )
    api = ApiConfig(listen="127.0.0.1:0", tokens=(token,))
    app = make_app(sup, api=api, tcp=True, audit=AuditLog(tmp_path / "audit.jsonl"))
    transport = httpx.ASGITransport(app=app)
    return sup, httpx.AsyncClient(transport=transport, base_url="http://api")


async def test_a_viewer_reads_flags_and_experiments(tmp_path: Path) -> None:
    sup, client = _client(tmp_path)
    for p in range(100):
        sup.flags.variant("layout", p)
    async with client as c:
        r = await c.get("/v1/experiments", headers={"Authorization": f"Bearer {VIEWER}"})
    assert r.status_code == 200
    data = r.json()
    assert data["flags"][0]["name"] == "new_shop"
    assert sum(arm["players"] for arm in data["experiments"][0]["arms"]) == 100
    assert data["test"].startswith("two-sample Poisson rate test")


async def test_what_is_refused(tmp_path: Path) -> None:
    sup, client = _client(tmp_path)
    auth = {"Authorization": f"Bearer {VIEWER}"}
    async with client as c:
        anonymous = await c.get("/v1/experiments")
        wrong = await c.get("/v1/experiments", headers={"Authorization": "Bearer nope"})
        param = await c.get("/v1/experiments?flag=new_shop", headers=auth)
        post = await c.post("/v1/experiments", headers=auth, json={"percent": 100})
    assert (anonymous.status_code, wrong.status_code) == (401, 401)
    assert param.status_code == 400
    assert "unknown query parameter 'flag'" in param.json()["error"]
    assert post.status_code == 405
    assert sup.flags.percent("new_shop") == 10.0
