"""Fixtures of the world-model tests: the smoke dataset, generated once per session (read only)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def smoke_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``smoke`` preset's maps (urban-para and suburb-topo, 192 slots); tests must not
    write into it."""
    from worldmodel.data.generate import PRESETS, generate

    root = tmp_path_factory.mktemp("smoke-dataset")
    generate(PRESETS["smoke"], root, progress=False)
    return root
