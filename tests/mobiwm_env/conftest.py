"""Fixtures of the env tests: headless pygame, a tiny world-model checkpoint, both env ids."""

from __future__ import annotations

import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

import mobiwm_env  # noqa: E402, F401  (registers the ids)

WM_ID = "MobiWM-LoadBalance-v0"
TWIN_ID = "MobiWM-LoadBalance-Twin-v0"


@pytest.fixture(scope="session")
def debug_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained MobiWM (``debug`` preset) saved with ``save_checkpoint``; the tests
    never depend on the shipped checkpoint. Skips while ``worldmodel.model`` is missing."""
    try:
        import worldmodel.model  # noqa: F401
    except ImportError as err:
        pytest.skip(f"worldmodel.model is not importable yet: {err}")
    from tests.conftest import save_untrained_mobiwm

    # MB: a plausible traffic range
    return save_untrained_mobiwm(tmp_path_factory.mktemp("ckpt") / "mobiwm-debug", 200.0)


@pytest.fixture(params=["twin", "world_model"])
def env_spec(request: pytest.FixtureRequest) -> tuple[str, dict]:
    """``(env id, kwargs)`` of both backends (the world model with the debug checkpoint)."""
    if request.param == "twin":
        return TWIN_ID, {}
    ckpt = request.getfixturevalue("debug_checkpoint")
    return WM_ID, {"checkpoint": str(ckpt)}
