#!/usr/bin/env bash
# Set up .venv if needed, then run the main job: PPO trained in the shipped MobiWM world model,
# judged on the physics twin against the baselines (options: .venv/bin/python agents/train_ppo.py --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export SDL_VIDEODRIVER=${SDL_VIDEODRIVER:-dummy}
.venv/bin/python agents/train_ppo.py "$@"
