"""What every benchmark's command line shares: its parser and its JSON output."""

from __future__ import annotations

import argparse
import json
from typing import Any


def parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser described by the first line of ``doc``, with ``--json FILE``."""
    p = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    p.add_argument("--json", help="also write the figures to this file")
    return p


def write_json(path: str | None, figures: Any) -> None:
    """Write ``figures`` to ``path`` as JSON, when a path was given."""
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(figures, f, indent=2)
