"""The audit log fails closed, tallies anonymous refusals, and attach_api wires it all.

Full and read-only folders are real: a 64 KiB tmpfs filled to the last byte
(``ENOSPC`` from the kernel) and a tmpfs mounted read-only (``EROFS``), both
mounted by the test when the process may mount (root in the CI container;
skipped otherwise), plus an audit file that is a symlink to ``/dev/full``,
whose every write fails with ``ENOSPC`` and which needs no privilege.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from test_api import OWN_UID, STRANGER_UID, UID_CALLER, call, make_rig

from supervisor import ConfigError
from supervisor._server._audit import MAX_REFUSAL_SOURCES, AuditLog
from supervisor._server._serve import ApiListenError, attach_api
from supervisor.testing import Ticking, make_supervisor


@contextlib.contextmanager
def tmpfs(options: str) -> Iterator[Path]:
    """A fresh tmpfs mounted with ``options``; skips the test where mounting is not allowed."""
    where = Path(tempfile.mkdtemp(prefix="sv-fs-"))
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        shutil.rmtree(where, ignore_errors=True)


def fill(folder: Path) -> Path:
    """Write zeros into ``folder`` until its file system is full; returns the filler file."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    error = 0
    try:
        while not error:
            try:
                os.write(fd, b"\0" * 512)
            except OSError as exc:
                error = exc.errno or -1
    finally:
        os.close(fd)
    assert error == errno.ENOSPC
    return filler


class TestFailClosed:
    """A mutating request whose attempt line cannot be written is refused (503) and counted."""

    async def assert_refused(self, rig: Any) -> None:
        before = rig.fake.state()
        response = await call(rig, "POST", "/v1/phase", body={"phase": "testing"})
        assert response.status_code == 503, response.text
        assert response.json() == {
            "error": "the audit log cannot be written, so the action was not carried out"
        }
        assert rig.fake.state() == before
        assert not [c for c in rig.fake.calls if c[0] == "change_phase"]
        assert rig.app.audit_refusals == 1
        assert rig.audit.failures >= 1

    async def test_full_folder(self, tmp_path: Path) -> None:
        """ENOSPC on a full tmpfs: 503, nothing changes; with space back, the action is done."""
        with tmpfs("size=64k") as folder:
            audit_dir = folder / "audit"
            audit_dir.mkdir()
            rig = make_rig(tmp_path)
            rig.audit.path = audit_dir / "audit.jsonl"
            filler = fill(folder)
            await self.assert_refused(rig)
            assert not rig.audit.path.exists() or rig.audit.path.read_bytes() == b""
            filler.unlink()
            response = await call(rig, "POST", "/v1/phase", body={"phase": "testing"})
            assert response.status_code == 200
            assert rig.fake.phase == "testing"
            lines = [json.loads(x) for x in rig.audit.path.read_text().splitlines()]
            assert [x["stage"] for x in lines] == ["attempt", "result"]

    async def test_read_only_folder(self, tmp_path: Path) -> None:
        """EROFS on a read-only mount: 503 and the phase stays."""
        with tmpfs("ro,size=16k") as folder:
            rig = make_rig(tmp_path)
            rig.audit.path = folder / "audit.jsonl"
            await self.assert_refused(rig)

    async def test_dev_full(self, tmp_path: Path) -> None:
        """An audit file that is /dev/full (every write ENOSPC): 503, counted in /metrics."""
        rig = make_rig(tmp_path)
        rig.audit.path.parent.mkdir(parents=True)
        rig.audit.path.symlink_to("/dev/full")
        await self.assert_refused(rig)
        metrics = (await call(rig, "GET", "/metrics")).text
        assert "supervisor_api_unaudited_refusals_total 1.0" in metrics

    async def test_result_line_failure_after_the_action_is_counted(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The disk fills between attempt and result: the action stands, the failure is counted."""
        rig = make_rig(tmp_path)
        write = AuditLog.write

        def attempt_only(self: AuditLog, entry: Any) -> bool:
            if entry.stage == "attempt":
                return write(self, entry)
            self.failures += 1
            return False

        monkeypatch.setattr(AuditLog, "write", attempt_only)
        response = await call(rig, "POST", "/v1/restart")
        assert response.status_code == 200
        assert rig.fake.restarts == 1
        assert rig.audit.failures == 1
        assert [x["stage"] for x in rig.all_audit_lines()] == ["attempt"]


class TestAnonymousTally:
    async def test_thousand_anonymous_posts_make_few_lines(self, tmp_path: Path) -> None:
        """1,000 POSTs without a token: at most 4 lines (2 per minute), counts add up to 1,000."""
        rig = make_rig(tmp_path, "dev-tcp")
        async with rig.client() as client:
            for _ in range(1000):
                response = await client.post("/v1/phase", json={"phase": "production"})
                assert response.status_code == 401
        assert rig.audit.written <= 4
        await rig.app.flush_audit(final=True)
        lines = rig.all_audit_lines()
        assert len(lines) <= 4
        assert {(x["stage"], x["caller"], x["source"], x["action"]) for x in lines} == {
            ("refused", "anonymous", "127.0.0.1", "phase")
        }
        assert sum(x["count"] for x in lines) == 1000
        assert rig.fake.phase == "development"

    async def test_stranger_uid_is_tallied_by_uid(self, tmp_path: Path) -> None:
        """A non-owner on the socket (403) is tallied under its uid."""
        rig = make_rig(tmp_path, "stranger-unix")
        for _ in range(10):
            assert (await call(rig, "POST", "/v1/restart")).status_code == 403
        await rig.app.flush_audit(final=True)
        lines = rig.all_audit_lines()
        assert [(x["source"], x["count"]) for x in lines] == [
            (f"uid:{STRANGER_UID}", 1),
            (f"uid:{STRANGER_UID}", 9),
        ]
        assert all(x["result"]["status"] == 403 for x in lines)

    def test_minutes_and_sources(self, tmp_path: Path) -> None:
        """First refusal of a minute at once; the rest when the minute is over; sources bounded."""
        now = [600.0]
        audit = AuditLog(tmp_path / "a.jsonl", clock=lambda: now[0])

        def refuse(source: str) -> list[tuple[str | None, int | None]]:
            entries = audit.tally_refusal(
                source=source, action="restart", status=401, detail="a token is required"
            )
            return [(e.source, e.count) for e in entries]

        assert refuse("10.0.0.1") == [("10.0.0.1", 1)]
        assert refuse("10.0.0.1") == []
        assert refuse("10.0.0.1") == []
        assert refuse("10.0.0.2") == [("10.0.0.2", 1)]
        assert audit.finished_refusals() == []  # the minute is not over
        now[0] = 660.0
        assert [(e.source, e.count) for e in audit.finished_refusals()] == [("10.0.0.1", 2)]
        assert audit.finished_refusals() == []
        # A new minute: the first one is written again.
        assert refuse("10.0.0.1") == [("10.0.0.1", 1)]
        for i in range(MAX_REFUSAL_SOURCES + 50):
            refuse(f"10.1.{i // 256}.{i % 256}")
        now[0] = 720.0
        late = audit.finished_refusals()
        assert [(e.source, e.count) for e in late] == [("other", 50)]


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short folder: a Unix socket path must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="sv-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class TestAttachApi:
    def test_audit_path_that_is_a_folder_is_a_config_error(self, short_tmp: Path) -> None:
        """[api] audit_log naming a folder or a FIFO: one ConfigError line naming the key."""
        (short_tmp / "dir").mkdir()
        os.mkfifo(short_tmp / "fifo")
        for name in ("dir", "fifo"):
            sup = make_supervisor(
                [Ticking()],
                config={
                    "api": {
                        "listen": f"unix:{short_tmp}/s.sock",
                        "audit_log": str(short_tmp / name),
                    }
                },
            )
            with pytest.raises(ConfigError, match=r"\[api.audit_log\]") as info:
                attach_api(sup)
            assert "\n" not in str(info.value)
            assert sup.services == []

    async def test_serves_the_run_and_stops_with_it(self, short_tmp: Path) -> None:
        """A real supervisor: probes and status answer, the owner shuts it down, the socket goes."""
        sock = short_tmp / "s.sock"
        audit = short_tmp / "audit.jsonl"
        sup = make_supervisor(
            [Ticking()],
            config={
                "supervisor": {"phase": "production"},
                "api": {"listen": f"unix:{sock}", "audit_log": str(audit)},
            },
            tick_rate=30,
        )
        attach_api(sup)
        answers: dict[str, Any] = {}

        async def operate() -> None:
            with trio.fail_after(10):
                while not sock.exists():  # noqa: ASYNC110 - the socket file, no event
                    await trio.sleep(0.02)
            transport = httpx.AsyncHTTPTransport(uds=str(sock))
            async with httpx.AsyncClient(transport=transport, base_url="http://sv") as client:
                answers["healthz"] = (await client.get("/healthz")).status_code
                answers["status"] = (await client.get("/v1/status")).status_code
                answers["shutdown"] = (
                    await client.post("/v1/shutdown", json={"reason": "test over"})
                ).status_code

        async with trio.open_nursery() as nursery:
            nursery.start_soon(operate)
            with trio.fail_after(20):
                await sup.run(duration=15)
        assert answers == {"healthz": 200, "status": 200, "shutdown": 200}
        assert not sock.exists()
        lines = [json.loads(x) for x in audit.read_text().splitlines()]
        assert [(x["stage"], x["caller"], x["action"]) for x in lines] == [
            ("attempt", UID_CALLER, "shutdown"),
            ("result", UID_CALLER, "shutdown"),
        ]
        assert os.getuid() == OWN_UID

    async def test_address_in_use_is_one_listen_error(self, short_tmp: Path) -> None:
        """A port another process listens on: the run fails with the ApiListenError line."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            sup = make_supervisor(
                [Ticking()],
                config={"api": {"listen": f"127.0.0.1:{port}", "audit_log": str(short_tmp / "a")}},
                tick_rate=30,
            )
            attach_api(sup)
            with pytest.raises(ApiListenError, match="in use") as info:
                await sup.run(duration=5)
        assert "\n" not in str(info.value)

    async def test_socket_folder_that_is_a_file_is_one_listen_error(self, short_tmp: Path) -> None:
        """A file where the socket's folder should be fails start-up in one line.

        It used to raise FileExistsError inside the service, which then crashed
        and restarted forever while the world ticked without its API.
        """
        (short_tmp / "afile").write_text("not a folder")
        sup = make_supervisor(
            [Ticking()],
            config={
                "api": {
                    "listen": f"unix:{short_tmp}/afile/s.sock",
                    "audit_log": str(short_tmp / "a"),
                }
            },
            tick_rate=30,
        )
        attach_api(sup)
        with pytest.raises(ApiListenError, match="cannot prepare the socket's folder") as info:
            await sup.run(duration=5)
        assert "\n" not in str(info.value)
        assert sup.tick == 0
        assert (short_tmp / "afile").read_text() == "not a folder"
