"""Fixtures of every test: one torch intra-op thread per test.

The tensors in these tests are tiny; on a small shared CPU extra OpenMP threads only spin
against each other (10–50× slower). The previous setting is restored afterwards.

Also the helper that saves the tiny untrained MobiWM checkpoints the env and agent tests use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

MEMORY_LAYOUT: dict[str, Any] = dict(
    history=104, season=96, horizon=4, season_anchor="yesterday", memory_age=6
)
"""``ModelConfig`` overrides of a one-day daily memory: the shipped checkpoint's layout."""


def save_untrained_mobiwm(path: Path, traffic_mb: float, **overrides: Any) -> Path:
    """Save an untrained MobiWM ``debug`` (seed 0, ``overrides`` on the preset) whose normaliser
    has a plausible traffic scale of ``traffic_mb`` MB per slot; returns the checkpoint."""
    from worldmodel.model.checkpoint import save_checkpoint
    from worldmodel.model.config import preset
    from worldmodel.model.mobiwm import MobiWM

    torch.manual_seed(0)
    model = MobiWM(preset("debug", **overrides))
    model.normalizer.set_stats(traffic_mb, 0.7, 0.8)
    return save_checkpoint(model, path)


def add_quantile_head(
    ckpt: Path,
    seed: int = 0,
    threshold: float = 0.01,
    change: tuple[float, ...] = (8.0, 120.0, 8.0, 8.0),
) -> Path:
    """Write an untrained (randomly perturbed) quantile head and the twin's parameter bounds
    (with daily ``change`` limits) as the action support beside ``ckpt``; returns ``ckpt``."""
    from worldmodel.model.checkpoint import read_checkpoint_config
    from worldmodel.model.uncertainty import ActionSupport, QuantileHead, save_uncertainty

    d = read_checkpoint_config(ckpt)["model_config"]["d_model"]
    torch.manual_seed(seed)
    head = QuantileHead(d)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.1 * torch.randn_like(p))
    head.configure(copula_rho=0.5)
    head.support = ActionSupport((30, 0, 0, 0), (46, 360, 15, 12), change, threshold)
    save_uncertainty(head, ckpt)
    return ckpt


@pytest.fixture(autouse=True)
def _single_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
