"""Fixtures of the agent tests: headless pygame, tiny world-model checkpoints
(untrained MobiWM ``debug`` preset, with and without a daily memory, and a small GRU world
model); never the shipped one."""

from __future__ import annotations

import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("MPLBACKEND", "Agg")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from tests.conftest import MEMORY_LAYOUT, save_untrained_mobiwm  # noqa: E402


@pytest.fixture(scope="session")
def debug_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained MobiWM (``debug`` preset) with plausible normaliser statistics."""
    return save_untrained_mobiwm(tmp_path_factory.mktemp("ckpt") / "mobiwm-debug", 1500.0)


@pytest.fixture(scope="session")
def memory_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained MobiWM ``debug`` with a one-day memory (``H = 104``, yesterday-anchored),
    the shipped checkpoint's layout."""
    path = tmp_path_factory.mktemp("ckpt") / "mobiwm-memory"
    return save_untrained_mobiwm(path, 1500.0, **MEMORY_LAYOUT)


@pytest.fixture(scope="session")
def gru_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained small GRU world model saved with ``save_world_model``."""
    from worldmodel.baselines import GRUWorldModel, save_world_model

    torch.manual_seed(0)
    model = GRUWorldModel(hidden=8)
    model.normalizer.set_stats(1500.0, 0.7, 0.8)
    return save_world_model(model, tmp_path_factory.mktemp("ckpt") / "gru-debug")


@pytest.fixture(scope="session")
def learned_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Untrained small iTransformer, RSSM and TD-MPC2-style world models (default ``H = 104``),
    saved with ``save_world_model``, by name."""
    from worldmodel.baselines import LEARNED, save_world_model

    small = {
        "itransformer": {"d_model": 16, "heads": 2, "layers": 1, "ff": 32},
        "rssm": {"deter": 16, "hidden": 16, "groups": 4, "classes": 4},
        "tdmpc": {"latent": 16, "hidden": 32, "layers": 1},
    }
    root = tmp_path_factory.mktemp("ckpt")
    out = {}
    for name, cfg in small.items():
        torch.manual_seed(0)
        model = LEARNED[name](**cfg)
        if name == "tdmpc":  # its decoder head starts at zero (persistence): make inputs show
            torch.nn.init.normal_(model.decoder[-1].weight, std=0.5)
        model.normalizer.set_stats(1500.0, 0.7, 0.8)
        out[name] = save_world_model(model, root / f"{name}-debug")
    return out
