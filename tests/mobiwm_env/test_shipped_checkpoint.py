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
