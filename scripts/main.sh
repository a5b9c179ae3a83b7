#!/usr/bin/env bash
# Set up .venv if needed, then run the main job: PPO trained from scratch for 500,736 env steps in
# the shipped fast MobiWM world model, judged on the physics twin against the baselines
# (train_ppo.py's defaults, docs/agents.md; arguments given here override them, e.g. --seed 1;
# .venv/bin/python agents/train_ppo.py --help lists them). About 15 min on 2 cores
# (docs/results.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export SDL_VIDEODRIVER=${SDL_VIDEODRIVER:-dummy}
.venv/bin/python agents/train_ppo.py --compile "$@"
