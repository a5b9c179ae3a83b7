"""Atomic writes of a weights file (safetensors) and its JSON config, shared by the checkpoints
of MobiWM, the learned baselines and the quantile head."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file


def write_pair_atomic(
    directory: Path,
    tensors: dict[str, torch.Tensor],
    weights_name: str,
    text: str,
    config_name: str,
    metadata: dict[str, str],
) -> None:
    """Write ``tensors`` to ``directory/weights_name`` and ``text`` to ``directory/config_name``
    through temporary files in the same folder and ``os.replace`` (weights first); the
    temporary files never remain."""
    weights_tmp = temp_path(directory, weights_name)
    config_tmp = temp_path(directory, config_name)
    try:
        save_file(tensors, str(weights_tmp), metadata=metadata)
        config_tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(weights_tmp, directory / weights_name)
        os.replace(config_tmp, directory / config_name)
    finally:
        for tmp in (weights_tmp, config_tmp):
            tmp.unlink(missing_ok=True)


def temp_path(directory: Path, name: str) -> Path:
    """A new, unique temporary file ``.<name>.*.tmp`` in ``directory``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    return Path(tmp)
