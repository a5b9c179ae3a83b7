#!/usr/bin/env bash
# Set up .venv if needed, then run the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m worldmodel.data.generate --preset default --out data/default "$@"
