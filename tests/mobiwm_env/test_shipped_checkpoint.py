"""The shipped world-model checkpoints load, and reproduce the metrics recorded in their JSON."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from mobiwm_env.config import DEFAULT_CHECKPOINT, SHIPPED_CHECKPOINTS
from worldmodel.model.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = pytest.mark.parametrize("name", sorted(SHIPPED_CHECKPOINTS))


def _ship_module():
    spec = importlib.util.spec_from_file_location(
        "ship_checkpoint", ROOT / "scripts" / "ship_checkpoint.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_both_shipped_checkpoints_fit_in_10_mb() -> None:
    size_mb = sum(f.stat().st_size for d in SHIPPED_CHECKPOINTS.values() for f in d.iterdir())
    assert size_mb / 1e6 < 10


@SHIPPED
def test_shipped_checkpoint_loads(name: str) -> None:
    path = SHIPPED_CHECKPOINTS[name]
    model = load_checkpoint(path)
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["extra"]["test_metrics"]["rollout"], "no recorded test metrics"
    assert model.cfg.use_actions
    assert model.normalizer.is_fitted


@SHIPPED
def test_shipped_checkpoint_reproduces_reference_rollout(name: str) -> None:
    path = SHIPPED_CHECKPOINTS[name]
    recorded = json.loads((path / "config.json").read_text())["extra"]["reference_check"]
    measured = _ship_module().reference_metrics(path)
    for key in ("jsd", "mae", "nrmse"):
        # deterministic data and model: only float summation order may differ across machines
        assert measured[key] == pytest.approx(recorded["metrics"][key], rel=0.02), key


def test_default_env_runs_the_shipped_daily_memory_model() -> None:
    import gymnasium as gym
    import numpy as np

    import mobiwm_env  # noqa: F401  (registers the ids)

    model = load_checkpoint(DEFAULT_CHECKPOINT)
    assert model.cfg.season == 96 and model.cfg.history > 96
    env = gym.make("MobiWM-LoadBalance-v0")
    full = gym.make("MobiWM-LoadBalance-v0", checkpoint="full")
    try:
        for e in (env, full):
            obs, info = e.reset(seed=0)
            obs, reward, _, _, info = e.step(np.zeros(e.action_space.shape, dtype=np.float32))
            assert np.isfinite(reward) and np.isfinite(obs).all()
            assert (info["traffic"] >= 0).all() and info["traffic"].sum() > 0
    finally:
        env.close()
        full.close()
    with pytest.raises(ValueError, match="warmup_slots"):
        gym.make("MobiWM-LoadBalance-v0", warmup_slots=16)


@SHIPPED
def test_shipped_checkpoint_carries_a_fitted_quantile_head(name: str) -> None:
    from worldmodel.model.uncertainty import QUANTILE_LEVELS

    path = SHIPPED_CHECKPOINTS[name]
    head = load_checkpoint(path).uncertainty_head
    assert head is not None and head.levels == QUANTILE_LEVELS
    assert head.support is not None and 0 < head.support.threshold < 1
    meta = json.loads((path / "uncertainty.json").read_text())
    extra = meta["extra"]
    assert extra["config"]["checkpoint"].endswith(f"mobiwm-{name}")  # fitted in place
    assert extra["examples"]["train"] > 100_000
    assert 0.0 < extra["copula_rho"] < 1.0
