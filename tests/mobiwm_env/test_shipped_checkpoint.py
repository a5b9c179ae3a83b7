"""The shipped world-model checkpoint loads, and reproduces the metrics recorded in its JSON."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from mobiwm_env.config import DEFAULT_CHECKPOINT
from worldmodel.model.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _ship_module():
    spec = importlib.util.spec_from_file_location(
        "ship_checkpoint", ROOT / "scripts" / "ship_checkpoint.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_checkpoint_loads_and_is_small():
    model = load_checkpoint(DEFAULT_CHECKPOINT)
    size_mb = sum(f.stat().st_size for f in DEFAULT_CHECKPOINT.iterdir()) / 1e6
    assert size_mb < 10
    cfg = json.loads((DEFAULT_CHECKPOINT / "config.json").read_text())
    assert cfg["extra"]["test_metrics"]["rollout"], "no recorded test metrics"
    assert model.cfg.use_actions
    assert model.normalizer.is_fitted


def test_shipped_checkpoint_reproduces_reference_rollout():
    recorded = json.loads((DEFAULT_CHECKPOINT / "config.json").read_text())["extra"][
        "reference_check"
    ]
    measured = _ship_module().reference_metrics(DEFAULT_CHECKPOINT)
    for key in ("jsd", "mae", "nrmse"):
        # deterministic data and model: only float summation order may differ across machines
        assert measured[key] == pytest.approx(recorded["metrics"][key], rel=0.02), key


def test_default_env_runs_the_shipped_daily_memory_model():
    import gymnasium as gym
    import numpy as np

    import mobiwm_env  # noqa: F401  (registers the ids)

    model = load_checkpoint(DEFAULT_CHECKPOINT)
    assert model.cfg.season == 96 and model.cfg.history == 104
    env = gym.make("MobiWM-LoadBalance-v0")
    try:
        obs, info = env.reset(seed=0)
        obs, reward, _, _, info = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
        assert np.isfinite(reward) and np.isfinite(obs).all()
        assert (info["traffic"] >= 0).all() and info["traffic"].sum() > 0
    finally:
        env.close()
    with pytest.raises(ValueError, match="warmup_slots"):
        gym.make("MobiWM-LoadBalance-v0", warmup_slots=16)
