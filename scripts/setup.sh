#!/usr/bin/env bash
# Create (or reuse) .venv with Python 3.11 and install the project with its dev tools.
# A second run reuses the venv and only reinstalls when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] >= (3, 11), sys.version' \
  || { echo "setup: Python 3.11+ is required (set PYTHON=...)" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $("$PY" --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.mobiwm-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  # The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
  .venv/bin/python -m pip install --quiet torch==2.13.0
  .venv/bin/python -m pip install --quiet -e ".[dev]"
  echo "$want" > "$stamp"
  echo "setup: installed into .venv"
else
  echo "setup: .venv is up to date"
fi
