#!/usr/bin/env bash
# The first README command on a fresh machine: a virtualenv WITHOUT extras,
# `pip install .` (not editable) from this checkout, then, from an empty
# working folder, `supervisor --help` and `supervisor run --ticks 30` (the
# built-in demo world) must both exit 0. Catches a dependency that only the
# test extra provides (httpx once was) and anything that reads the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$PY" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check .
mkdir "$work/empty"
cd "$work/empty"
"$work/venv/bin/supervisor" --help >/dev/null
"$work/venv/bin/supervisor" run --ticks 30 2>"$work/run.log" || {
  code=$?
  tail -n 20 "$work/run.log" >&2
  echo "smoke: supervisor run --ticks 30 exited $code" >&2
  exit 1
}
echo "smoke: pip install . (no extras), supervisor --help and supervisor run --ticks 30: ok"
