"""What a ``supervisor run`` keeps resident: no module it does not use, no start-up leftovers.

The run's memory target (``bench/run_rss.py``, README "Benchmarks") is met by
loading what a run uses when it is first used: difflib only to word an error,
html (and its entity tables) with the dashboard's first page, statistics with
the error store's first trends query, decimal and fractions never by the
redactor (their values exist only once a program imported them), getpass
with a fleet command, and the client commands (``status``, ``alerts``, ...)
when they are named. The first test runs a real ``supervisor
run`` on the demo world and lists what it imported; the others hold the
start-up release (:mod:`supervisor._core._heap`).
"""

from __future__ import annotations

import json
import linecache
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from supervisor._core._heap import release_free_heap, release_start_up_memory

#: Modules a default run does not use; each loads where it is first needed.
NOT_LOADED_BY_A_RUN = (
    "difflib",
    "html",
    "html.entities",
    "statistics",
    "decimal",
    "fractions",
    "getpass",
    # the client commands a run does not need (supervisor._cli._main.LAZY_COMMANDS)
    "supervisor._cli._alerts_cmd",
    "supervisor._cli._errors_cmd",
    "supervisor._cli._experiments_cmd",
    "supervisor._cli._operator",
    "supervisor._cli._status_cmd",
)

RUN = """
import atexit, json, sys
def _dump():
    with open({out!r}, "w") as f:
        json.dump(sorted(sys.modules), f)
atexit.register(_dump)
sys.argv = ["supervisor", "run", "--ticks", "20"]
from supervisor._cli._main import main
main()
"""


def test_a_run_loads_no_module_it_does_not_use(tmp_path: Path) -> None:
    """A real run of the demo world (API, store, datastore) ends without loading any of them."""
    out = tmp_path / "modules.json"
    proc = subprocess.run(
        [sys.executable, "-c", RUN.format(out=str(out))],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = set(json.loads(out.read_text()))
    assert "supervisor._server._serve" in loaded  # the API was served: a real run
    assert "sqlite3" in loaded  # the demo world's datastore started
    assert sorted(loaded.intersection(NOT_LOADED_BY_A_RUN)) == []


def test_release_drops_attrs_generated_sources() -> None:
    """attrs' copies of its generated methods' source leave linecache; real files come back."""

    @attrs.define
    class Probe:
        x: int

    generated = [k for k in linecache.cache if k.startswith("<attrs generated")]
    assert generated
    release_start_up_memory()
    assert not [k for k in linecache.cache if k.startswith("<attrs generated")]
    assert Probe(x=1).x == 1  # the class keeps working
    assert linecache.getline(__file__, 1).startswith('"""')  # files are read again


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_release_free_heap_on_glibc() -> None:
    """On glibc the call is made (True or False: whether pages were free); never raises."""
    freed = [bytearray(4096) for _ in range(2000)]
    del freed
    assert release_free_heap() in (True, False)


def test_decimals_and_fractions_stay_inert_without_an_import_in_the_redactor() -> None:
    """A Decimal or a Fraction is kept as it is, alone or inside a structure, as before."""
    import decimal
    import fractions

    from supervisor._core._redact import Redactor

    price, share = decimal.Decimal("4111111111111111"), fractions.Fraction(1, 3)
    redactor = Redactor()
    assert redactor.value(price) is price
    assert redactor.value(share) is share
    assert redactor.value({"price": [price, share]}) == {"price": [price, share]}


def test_every_lazy_command_is_the_command_it_names() -> None:
    """Each name of LAZY_COMMANDS loads a command of that name, listed in the group's help."""
    import click

    from supervisor._cli._main import LAZY_COMMANDS, cli

    ctx = click.Context(cli)
    assert set(LAZY_COMMANDS) <= set(cli.list_commands(ctx))
    for name in LAZY_COMMANDS:
        command = cli.get_command(ctx, name)
        assert command is not None
        assert command.name == name


def test_an_unknown_command_is_told_the_nearest_lazy_one() -> None:
    """click's "did you mean" draws from every command, the lazily loaded ones too."""
    from click.testing import CliRunner

    from supervisor._cli._main import cli

    result = CliRunner().invoke(cli, ["statu"])
    assert result.exit_code == 2
    assert "'status'" in result.output
