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


@pytest.fixture(autouse=True)
def _single_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
