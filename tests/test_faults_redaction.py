"""Redaction at the source: free text is redacted once, when it is made, and never leaks later.

On the old main each surface redacted for itself and most forgot: error
groups carried raw messages, the emergency reason reached anonymous probes,
lifecycle reasons and gauge names reached status and snapshots. Here the
core redacts records, lifecycle events, gauge names, the emergency and stop
reasons when they are made (while redaction is on), and the kept history
once when a redacting phase begins.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
import trio.testing

from supervisor import Caller, Phase
from supervisor._core._redact import Redactor
from supervisor._core._runtime import LIFECYCLE_HISTORY
from supervisor._core._safecall import (
    MESSAGE_CHARS,
    SCAN_CHARS,
    TRACEBACK_CHARS,
    bounded,
)
from supervisor.testing import make_supervisor, run_systems

OPERATOR = Caller("ops", "operator")
EMAIL = "jane.doe@example.com"
API_KEY = "sk_live_" + "a1" * 12


class Leaky:
    """Fails with personal data in its message and reports a gauge named like an API key."""

    name = "leaky"

    def tick(self, ctx: Any) -> None:
        ctx.report(API_KEY, 1)
        if ctx.tick == 2:
            raise ValueError(f"purchase failed for {EMAIL}")

    def snapshot(self) -> dict[str, int]:
        return {}

    def restore(self, state: dict[str, int]) -> None:
        pass


def _everything(sup: Any) -> str:
    """Every surface the core serves, as one text (status, errors, summary, lifecycle)."""
    return json.dumps(
        {
            "status": sup.status().as_dict(),
            "errors": sup.error_view(limit=100).as_dict(),
            "summary": sup.summary().as_dict(),
            "probes": [sup.liveness(), sup.readiness_gate()],
            "next": sup.next_step(),
        },
        default=str,
    )


class TestRedactedWhenMade:
    async def test_in_testing_nothing_leaves_the_core_unredacted(
        self, tmp_path: Path, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Records, groups, gauges, lifecycle, emergency reason, snapshot: no e-mail, no key."""
        sup = make_supervisor([Leaky()], tick_rate=10, phase="testing", state_dir=tmp_path)
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: sup.run(exit_on_emergency=False, task_status=task_status)
            )
            await trio.sleep(0.55)
            await sup.shutdown(emergency=True, reason=f"called by {EMAIL}", caller=OPERATOR)
            text = _everything(sup)
            assert EMAIL not in text
            assert API_KEY not in text
            assert "[email]" in sup.status().as_dict()["emergency"]["reason"]
            assert (
                sup.error_view().as_dict()["groups"][0]["message"] == "purchase failed for [email]"
            )
            assert sup.readiness_gate() == (False, ["emergency_shutdown"])
            assert sup.liveness() == (True, "emergency_shutdown")
            sup.stop()
        files = b"".join(p.read_bytes() for p in (tmp_path / "snapshots").glob("*.msgpack"))
        assert b"[email]" in files  # the emergency's reason, in its snapshot
        assert EMAIL.encode() not in files
        assert API_KEY.encode() not in files
        assert "[email]" in sup.summary().exit_reason

    async def test_entering_a_redacting_phase_redacts_the_kept_history_once(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """In development the text is kept as is; 'phase testing' redacts what was kept."""
        sup = make_supervisor([Leaky()], tick_rate=10)
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(0.55)
            assert EMAIL in sup.errors.recent(1)[0].message  # development: not redacted
            assert API_KEY in sup.gauges
            await sup.change_phase("testing", force=True, reason=f"by {EMAIL}", caller=OPERATOR)
            assert sup.phase is Phase.TESTING
            text = _everything(sup)
            assert EMAIL not in text
            assert API_KEY not in text
            record = sup.errors.recent(1)[0]
            assert record.message == "purchase failed for [email]"
            assert EMAIL not in record.traceback
            assert list(sup.gauges) == ["[token]"]
            assert sup.phase_history[-1].reason.startswith("by [email]")
            await trio.sleep(0.5)  # the gauge keeps being reported under its redacted name
            assert list(sup.gauges) == ["[token]"]
            sup.stop("stopped by " + EMAIL)
        assert sup.summary().exit_reason == "stopped by [email]"


class TestLifecycleRing:
    def test_the_lifecycle_history_is_bounded(self) -> None:
        """Thousands of lifecycle actions keep the last LIFECYCLE_HISTORY of them."""
        sup = make_supervisor([])
        for i in range(3 * LIFECYCLE_HISTORY):
            sup._lifecycle.record(
                action="restart", before="a", after="a", caller="x", reason=str(i)
            )
        history = sup.phase_history
        assert len(history) == LIFECYCLE_HISTORY
        assert history[-1].reason == str(3 * LIFECYCLE_HISTORY - 1)


class TestRedactThenCut:
    """A secret straddling a cut must be redacted whole, not cut into an unrecognisable head."""

    def test_a_message_straddling_the_limit(self) -> None:
        """An e-mail across MESSAGE_CHARS: the record shows [email] (or its cut), never its head."""
        text = "x" * (MESSAGE_CHARS - 8) + " " + EMAIL + " tail"

        class Straddles:
            name = "straddles"

            def tick(self, ctx: Any) -> None:
                raise ValueError(text)

        result = run_systems(Straddles(), ticks=1, phase="testing")
        record = result.errors[0]
        assert len(record.message) <= MESSAGE_CHARS + 3
        assert "jane" not in record.message
        assert "jane" not in record.traceback
        assert record.message.endswith(" [email...") or "[email]" in record.message

    def test_a_traceback_tail_straddling_its_limit(self) -> None:
        """The kept end of a traceback starts after the cut: an e-mail across it is redacted."""
        text = "head\n" + EMAIL + " " + "w" * TRACEBACK_CHARS
        out = bounded(text, TRACEBACK_CHARS, Redactor(), tail=True)
        assert "example" not in out
        assert "jane" not in out
        assert out.startswith("...\n")

    def test_text_past_the_scan_window(self) -> None:
        """An e-mail across the redactor's window edge (SCAN_CHARS) is not kept in part."""
        filler = "[email] " * 10 + "ab " * ((SCAN_CHARS - 90) // 3)
        text = filler + EMAIL + " more" * 10
        assert len(filler) < SCAN_CHARS < len(filler) + len(EMAIL)
        out = bounded(text, MESSAGE_CHARS, Redactor())
        assert "jane" not in out
        assert out.endswith("...")

    def test_without_redaction_a_plain_cut(self) -> None:
        """In development nothing is redacted: the first MESSAGE_CHARS characters, then '...'."""
        assert bounded("y" * 5000, MESSAGE_CHARS) == "y" * MESSAGE_CHARS + "..."
        assert bounded("y" * 5000, MESSAGE_CHARS, Redactor(enabled=False)) == bounded(
            "y" * 5000, MESSAGE_CHARS
        )

    async def test_a_message_cut_in_development_is_redacted_whole_later(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Cut while redaction was off, a straddling e-mail's head goes when redaction begins."""
        text = "x" * (MESSAGE_CHARS - 8) + " " + EMAIL + " tail"

        class Straddles:
            name = "straddles"

            def tick(self, ctx: Any) -> None:
                if ctx.tick == 0:
                    raise ValueError(text)

        sup = make_supervisor([Straddles()], tick_rate=10)
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await trio.sleep(0.15)
            assert "jane.d" in sup.errors.recent(1)[0].message  # development: cut, as it was
            await sup.change_phase("testing", force=True, reason="", caller=OPERATOR)
            record = sup.errors.recent(1)[0]
            assert "jane" not in record.message
            assert "jane" not in record.traceback
            assert record.message.endswith("...")
            sup.stop()
