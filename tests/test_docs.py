"""Keep ``docs/`` true where a test can (issue 17).

Prose cannot be tested, but three things in it can, and they are the ones
that rot first: an alert rule added to the shipped rules without a runbook
entry (the on-call reads the runbook when it pages), a link to a file that
moved, and a command or option the runbook tells someone to type that the
CLI no longer has. Each test reads the files as shipped; nothing runs.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import yaml

from supervisor._cli._main import cli
from supervisor._rollout._service import ROLLBACK_ALERT

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
RUNBOOK = DOCS / "runbook.md"
PAGES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]

#: A Markdown link or image: ``[text](target)`` / ``![alt](target "title")``.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
#: An inline code span (one or two backticks).
SPAN = re.compile(r"``(.+?)``|`([^`\n]+)`")
#: ``supervisor CMD ...`` at the start of a command line (not ``supervisor/...``, ``supervisor.x``).
COMMAND = re.compile(r"(?:^|[\s$|(;&])supervisor((?:\s+[a-z][a-z0-9-]*)+)(.*)")
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def _shipped_rules() -> set[str]:
    """Every alert that ships: the configs' rules, the Prometheus rules, the rollout's own."""
    names = {ROLLBACK_ALERT}
    for config in sorted((ROOT / "configs").glob("*.toml")):
        rules = tomllib.loads(config.read_text()).get("alerts", {}).get("rules", [])
        names.update(rule["name"] for rule in rules)
    for rules_file in sorted((ROOT / "deploy").rglob("alerts*.yml")):
        data = yaml.safe_load(rules_file.read_text())
        for group in data.get("groups", []):
            names.update(rule["alert"] for rule in group.get("rules", []) if "alert" in rule)
    return names


def _outside_fences(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of ``text`` outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def _code(text: str) -> Iterator[str]:
    """Every piece of code in ``text``: inline spans and the lines of fenced blocks.

    A paragraph's lines are joined first: a span may wrap (`supervisor
    quarantine NAME --reason "..."` across two lines is one command).
    """
    fenced = False
    paragraph: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.lstrip().startswith("```") or not line.strip():
            for match in SPAN.finditer(" ".join(paragraph)):
                yield match.group(1) or match.group(2)
            paragraph = []
            if line.strip():
                fenced = not fenced
            continue
        if fenced:
            yield line
        else:
            paragraph.append(line.strip())


def test_the_rules_are_found() -> None:
    """The parsing above still finds the shipped rules (an empty set would pass anything)."""
    names = _shipped_rules()
    assert {"error_rate_high", "ticks_fast_burn", "world_slow_burn", "rollout_rolled_back"} <= names


@pytest.mark.parametrize("rule", sorted(_shipped_rules()))
def test_every_shipped_alert_has_a_runbook_entry(rule: str) -> None:
    """Each rule that can page someone has its own heading in the runbook."""
    headings = [line for line in RUNBOOK.read_text().splitlines() if line.startswith("### ")]
    assert any(re.search(rf"\b{re.escape(rule)}\b", h) for h in headings), (
        f"alert rule {rule!r} ships but docs/runbook.md has no '### {rule}' section"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page: Path) -> None:
    """Links to files in the repository point at files that exist (anchors are not checked)."""
    broken = []
    for number, line in _outside_fences(page.read_text()):
        for target in LINK.findall(SPAN.sub("", line)):
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # http:, mailto:, an anchor on this page
            path = target.split("#", 1)[0]
            if not (page.parent / path).exists():
                broken.append(f"{page.name}:{number}: {target}")
    assert not broken, "links to missing files: " + ", ".join(broken)


def _resolve(words: list[str]) -> click.Command | None:
    """The command ``words`` name; None when a word after a group is not one of its commands."""
    command: click.Command | None = cli
    for word in words:
        if not isinstance(command, click.Group):
            break
        command = command.get_command(click.Context(command), word)  # lazy ones too
    return command


def _commands_named(text: str) -> Iterator[tuple[str, list[str], list[str]]]:
    for code in _code(text):
        for match in COMMAND.finditer(code):
            words = match.group(1).split()
            yield match.group(0).strip(), words, OPTION.findall(match.group(2))


def test_every_command_in_the_runbook_exists() -> None:
    """`supervisor X [Y] --opt` in the runbook's code: X (and Y for a group) and --opt exist."""
    wrong = []
    named = list(_commands_named(RUNBOOK.read_text()))
    assert len(named) > 20, "the runbook names commands; the pattern above lost them"
    for text, words, options in named:
        command = _resolve(words)
        if command is None or command is cli:
            wrong.append(f"{text!r}: no such command")
            continue
        known = {opt for param in command.params for opt in param.opts}
        known.add("--help")
        wrong.extend(f"{text!r}: no option {opt}" for opt in options if opt not in known)
    assert not wrong, "; ".join(wrong)


#: A repository path in code: ``supervisor/_core/_loop.py``, ``configs/production.toml``.
REPO_PATH = re.compile(r"^(?:supervisor|systems|tests|bench|configs|deploy|docs)/[\w./-]*[\w/]$")


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_every_repository_path_named_exists(page: Path) -> None:
    """A file or folder the docs name in code (`supervisor/_core/_loop.py`) exists."""
    named = {code.strip() for code in _code(page.read_text()) if REPO_PATH.match(code.strip())}
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert not missing, f"{page.name} names paths that do not exist: {missing}"
