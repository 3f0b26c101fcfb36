"""The rollout routes of the API: roles, audit, hostile input (4xx, nothing changed), states (409).

Driven in memory through the real app (``test_api``'s rig) with real flags
and a real record on disk; the rollout service itself is tested in
``test_rollout_manager`` and end to end in ``test_rollout_e2e``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_api import OPERATOR_TOKEN, VIEWER_TOKEN, FakeSupervisor, Rig, call, make_rig

from supervisor._core._config import Config
from supervisor._core._flags import Flags
from supervisor._rollout._file import FILE_NAME, RolloutFile
from supervisor._rollout._manager import Rollouts
from supervisor._rollout._service import _ROLLOUTS

START = {"steps": "1,5,25,100", "every": "10m", "rollback_on": ["error_rate_high"]}


def _rig(tmp_path: Path) -> tuple[Rig, Rollouts]:
    flags = Flags()
    flags.configure(Config.from_mapping({"flags": {"new_shop": {"percent": 0}}}))
    rig = make_rig(tmp_path, "dev-tcp", fake=FakeSupervisor())
    rollouts = Rollouts(
        flags=flags, file=RolloutFile(tmp_path / "state"), rules=frozenset({"error_rate_high"})
    )
    _ROLLOUTS[rig.fake] = rollouts
    return rig, rollouts


def _state(rig: Rig, rollouts: Rollouts, tmp_path: Path) -> tuple[Any, ...]:
    record = tmp_path / "state" / FILE_NAME
    return (
        rollouts.flags.percent("new_shop"),
        record.read_bytes() if record.exists() else None,
        [x["stage"] for x in rig.all_audit_lines()],
    )


class TestRoles:
    async def test_operator_starts_and_it_is_audited(self, tmp_path: Path) -> None:
        """An operator's start: 200, the flag at its first step, attempt and result audited."""
        rig, rollouts = _rig(tmp_path)
        answer = await call(
            rig, "POST", "/v1/rollouts/new_shop/start", token=OPERATOR_TOKEN,
            body={**START, "reason": "launch"},
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert answer.json()["detail"] == "rollout of 'new_shop' started at 1 %"
        assert rollouts.flags.percent("new_shop") == 1.0
        attempt, result = rig.all_audit_lines()
        assert (attempt["stage"], attempt["action"], attempt["caller"]) == (
            "attempt", "rollout_start", "ops",
        )  # fmt: skip
        assert attempt["arguments"] == {**START, "reason": "launch", "flag": "new_shop"}
        assert result["result"]["status"] == 200

    async def test_viewer_reads_but_may_not_act(self, tmp_path: Path) -> None:
        """A viewer gets GET /v1/rollouts, and 403 on every action, with nothing changed."""
        rig, rollouts = _rig(tmp_path)
        for verb in ("start", "pause", "resume", "abort"):
            before = rollouts.flags.percent("new_shop")
            answer = await call(
                rig, "POST", f"/v1/rollouts/new_shop/{verb}", token=VIEWER_TOKEN, body=START
            )
            assert answer.status_code == 403
            assert rollouts.flags.percent("new_shop") == before
        seen = await call(rig, "GET", "/v1/rollouts", token=VIEWER_TOKEN)
        assert seen.status_code == 200
        assert seen.json()["rollouts"] == []
        assert (await call(rig, "GET", "/v1/rollouts")).status_code == 401

    async def test_pause_resume_abort(self, tmp_path: Path) -> None:
        """Each command answers 200 and says where the flag is; a wrong state is 409."""
        rig, _rollouts = _rig(tmp_path)
        path = "/v1/rollouts/new_shop/"
        await call(rig, "POST", path + "start", token=OPERATOR_TOKEN, body=START)
        for verb, status, detail in (
            ("pause", 200, "paused at 1 %"),
            ("pause", 409, "is paused: nothing to pause"),
            ("resume", 200, "resumed at 1 %"),
            ("abort", 200, "aborted at 0 %"),
            ("resume", 409, "is aborted: nothing to resume"),
        ):
            answer = await call(
                rig, "POST", path + verb, token=OPERATOR_TOKEN, body={"reason": "r"}
            )
            assert answer.status_code == status, answer.text
            text = answer.json().get("detail") or answer.json()["error"]
            assert detail in text
        view = (await call(rig, "GET", "/v1/rollouts", token=OPERATOR_TOKEN)).json()
        assert view["enabled"] is True
        assert view["rollouts"][0]["state"] == "aborted"
        assert [e["event"] for e in view["rollouts"][0]["events"]] == [
            "started", "paused", "resumed", "aborted",
        ]  # fmt: skip


BAD = [
    ("nope", START, 404, "no flag 'nope' in the config (flags: new_shop)"),
    ("new_shop", {**START, "steps": "5,1"}, 400, "must increase"),
    ("new_shop", {**START, "steps": "1,500"}, 400, "above 100"),
    ("new_shop", {**START, "steps": [1, 5]}, 400, "key 'steps' must be a string"),
    ("new_shop", {**START, "every": "soon"}, 400, "--every"),
    ("new_shop", {**START, "rollback_on": ["typo"]}, 400, "no such alert rule"),
    ("new_shop", {**START, "rollback_on": "error_rate_high"}, 400, "must be a list of strings"),
    ("new_shop", {**START, "rollback_on": [3]}, 400, "is not a rule name"),
    ("new_shop", {**START, "rollback_on": ["x" * 5000]}, 400, "is not a rule name"),
    ("new_shop", {"steps": "1,5"}, 400, "missing key 'every'"),
    ("new_shop", {**START, "percent": 100}, 400, "unknown key 'percent'"),
    ("new_shop", {**START, "reason": "r" * 5000}, 400, "at most"),
    ("x" * 200, START, 404, "no such endpoint"),
    ("a%2Fb", START, 404, "no such endpoint"),
    ("..", START, 404, "no such endpoint"),
    ("new%20shop", START, 400, "is not a flag name"),
    ("%00", START, 400, "is not a flag name"),
]


class TestHostileInput:
    @pytest.mark.parametrize(("flag", "body", "status", "says"), BAD)
    async def test_bad_start_changes_nothing(
        self, tmp_path: Path, flag: str, body: dict[str, Any], status: int, says: str
    ) -> None:
        """Each bad request is one clear 4xx; the flag and the record are as they were."""
        rig, rollouts = _rig(tmp_path)
        before = _state(rig, rollouts, tmp_path)[:2]
        answer = await call(
            rig, "POST", f"/v1/rollouts/{flag}/start", token=OPERATOR_TOKEN, body=body
        )
        assert answer.status_code == status, answer.text
        assert says in answer.json()["error"]
        assert _state(rig, rollouts, tmp_path)[:2] == before
        assert rollouts.rollouts == {}

    async def test_a_body_that_is_not_json(self, tmp_path: Path) -> None:
        """Not JSON, not an object, a NaN: 400, nothing changed."""
        rig, rollouts = _rig(tmp_path)
        for content in (b"{", b"[]", b'{"steps": NaN}', b'{"steps":"1","steps":"2"}'):
            answer = await call(
                rig, "POST", "/v1/rollouts/new_shop/start", token=OPERATOR_TOKEN,
                content=content, headers={"content-type": "application/json"},
            )  # fmt: skip
            assert answer.status_code == 400
        assert rollouts.flags.percent("new_shop") == 0.0

    async def test_no_rollouts_attached(self, tmp_path: Path) -> None:
        """A supervisor without the capability: GET says so, an action is 404."""
        rig = make_rig(tmp_path, "dev-tcp", fake=FakeSupervisor())
        view = await call(rig, "GET", "/v1/rollouts", token=OPERATOR_TOKEN)
        assert view.json() == {"rollouts": [], "problems": [], "enabled": False}
        answer = await call(
            rig, "POST", "/v1/rollouts/new_shop/start", token=OPERATOR_TOKEN, body=START
        )
        assert answer.status_code == 404
        assert "no [flags]" in answer.json()["error"]
        assert json.loads(rig.audit.path.read_text().splitlines()[-1])["result"]["status"] == 404
