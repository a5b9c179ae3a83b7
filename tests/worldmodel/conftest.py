"""Fixtures of the world-model tests: the smoke dataset, generated once per session (read only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def smoke_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``smoke`` preset's maps (urban-para and suburb-topo, 192 slots); tests must not
    write into it."""
    from worldmodel.data.generate import PRESETS, generate

    root = tmp_path_factory.mktemp("smoke-dataset")
    generate(PRESETS["smoke"], root, progress=False)
    return root


def fitted_debug_mobiwm(root: Path) -> Any:
    """An untrained MobiWM ``debug`` (seed 0) whose normaliser is fitted on ``root``'s train
    split, in eval mode."""
    import numpy as np
    import torch

    from worldmodel.data.dataset import load_split
    from worldmodel.model import MobiWM, preset

    torch.manual_seed(0)
    m = MobiWM(preset("debug"))
    train = load_split(root, "train")
    m.normalizer.fit(
        np.concatenate([r.traffic.ravel() for r in train]),
        np.concatenate([r.active.ravel() for r in train]),
    )
    return m.eval()
