"""The operator's routes: ``POST /v1/systems/NAME/quarantine``, ``.../release``, ``/v1/snapshot``.

Through the app in front of the fake supervisor of ``test_api``: operator
role, audited with the system's name, body ``{"reason": ...}``, an unknown
system 404 with one line.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_api import OPERATOR_TOKEN, VIEWER_TOKEN, call, make_rig

ROUTES = ["/v1/systems/economy/quarantine", "/v1/systems/economy/release", "/v1/snapshot"]


@pytest.mark.parametrize("path", ROUTES)
async def test_operator_only_and_audited(tmp_path: Path, path: str) -> None:
    rig = make_rig(tmp_path, "dev-tcp")
    refused = await call(rig, "POST", path, token=VIEWER_TOKEN, body={"reason": "x"})
    assert refused.status_code == 403
    answer = await call(rig, "POST", path, token=OPERATOR_TOKEN, body={"reason": "slow query"})
    assert answer.status_code == 200, answer.text
    action = path.rsplit("/", 1)[1]
    line = rig.audit_lines()[-1]
    assert (line["action"], line["result"]["status"]) == (action, 200)
    expected = {"reason": "slow query"} | ({"name": "economy"} if "systems" in path else {})
    assert line["arguments"] == expected
    name, kwargs = rig.fake.calls[-1]
    assert name == action
    assert kwargs["reason"] == "slow query"


async def test_answers(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, "dev-tcp")
    held = await call(rig, "POST", ROUTES[0], token=OPERATOR_TOKEN)
    assert held.json() == {"system": "economy", "state": "quarantined (by operator)", "tick": 1234}
    snap = await call(rig, "POST", "/v1/snapshot", token=OPERATOR_TOKEN, body={"reason": ""})
    assert snap.json() == {"path": "/srv/game/var/snapshots/snapshot-1234.msgpack", "tick": 1234}


@pytest.mark.parametrize("action", ["quarantine", "release"])
async def test_unknown_system_is_404(tmp_path: Path, action: str) -> None:
    rig = make_rig(tmp_path, "dev-tcp")
    answer = await call(rig, "POST", f"/v1/systems/nosuch/{action}", token=OPERATOR_TOKEN)
    assert answer.status_code == 404
    assert answer.json() == {"error": "no such system: 'nosuch' (systems: economy)"}
    assert rig.audit_lines()[-1]["result"]["status"] == 404


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/systems//quarantine", 404),
        ("/v1/systems/economy/restart", 404),
        ("/v1/systems/a/b/quarantine", 404),
    ],
)
async def test_other_paths_are_not_routes(tmp_path: Path, path: str, status: int) -> None:
    rig = make_rig(tmp_path, "dev-tcp")
    answer = await call(rig, "POST", path, token=OPERATOR_TOKEN)
    assert answer.status_code == status
    assert rig.fake.calls == []


async def test_body_is_checked(tmp_path: Path) -> None:
    """Only ``reason`` (a string); the name comes from the path, never from the body."""
    rig = make_rig(tmp_path, "dev-tcp")
    for body in ({"name": "players"}, {"reason": 3}):
        answer = await call(rig, "POST", ROUTES[0], token=OPERATOR_TOKEN, body=body)
        assert answer.status_code == 400, body
    got = await call(rig, "GET", ROUTES[0], token=OPERATOR_TOKEN)
    assert got.status_code == 405
    assert rig.fake.calls == []
