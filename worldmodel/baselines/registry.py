"""Baselines by name, and their checkpoints (the layout of MobiWM's: safetensors + JSON)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from worldmodel.baselines.gru import GRUWorldModel
from worldmodel.baselines.interface import MobiWMAdapter, WorldModel
from worldmodel.baselines.itransformer import ITransformerWM
from worldmodel.baselines.learned import LearnedWorldModel
from worldmodel.baselines.naive import Persistence, SeasonalNaive
from worldmodel.baselines.rssm import RSSMWorldModel
from worldmodel.baselines.tdmpc import TDMPCWorldModel
from worldmodel.model.checkpoint import (
    CHECKPOINT_FORMAT,
    build_config,
    check_format,
    check_model_config,
    load_checkpoint,
    load_weights,
    read_config_json,
    save_checkpoint,
    write_checkpoint,
)

LEARNED: dict[str, type[LearnedWorldModel]] = {
    "gru": GRUWorldModel,
    "itransformer": ITransformerWM,
    "rssm": RSSMWorldModel,
    "tdmpc": TDMPCWorldModel,
}
"""The trainable baselines by name (the trainer's ``--arch`` and ``model_class`` in checkpoints)."""

BASELINES: dict[str, Callable[..., WorldModel]] = {
    "persistence": Persistence,
    "seasonal": SeasonalNaive,
    **LEARNED,
}
"""Baseline constructors by name; keyword arguments as the classes (learned ones: their
config's fields)."""


def build_baseline(name: str, **cfg: Any) -> WorldModel:
    """Build baseline ``name`` (``persistence``, ``seasonal`` or a ``LEARNED`` name) with keyword
    config.

    Raises ``ValueError`` for an unknown name or keyword (naming the accepted ones).
    """
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {sorted(BASELINES)}")
    try:
        return BASELINES[name](**cfg)
    except TypeError as err:
        raise ValueError(
            f"build_baseline({name!r}): bad keyword arguments {sorted(cfg)}: {err}"
        ) from err


# ---------------------------------------------------------------------- checkpoints
BASELINE_FORMAT = "mobiwm-baseline-checkpoint"
BASELINE_FORMAT_VERSION = 1


def save_baseline(
    model: LearnedWorldModel, path_dir: str | os.PathLike[str], extra: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` to directory ``path_dir``: ``model.safetensors`` (``state_dict``, the
    normaliser included) and ``config.json`` (``format``, ``format_version``, ``model_class``,
    ``model_config``, ``normalizer``, ``tensors``, ``n_parameters``, ``extra``). Atomic writes."""
    names = {cls: name for name, cls in LEARNED.items()}
    if type(model) not in names:
        raise TypeError(f"save_baseline expects one of {sorted(names.values())}, got {type(model)}")
    header = {"model_class": names[type(model)]}
    return write_checkpoint(
        model, path_dir, BASELINE_FORMAT, BASELINE_FORMAT_VERSION, extra, "save_baseline", header
    )


def load_baseline(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> nn.Module:
    """Load a ``save_baseline`` directory (or a file inside it) → model in eval mode.

    Raises ``FileNotFoundError`` / ``ValueError`` naming the file on a missing file, corrupt
    JSON, wrong format or version, unknown class, config or tensors that do not match the code.
    """
    cfg_path, meta = read_config_json(path)
    check_format(cfg_path, meta, BASELINE_FORMAT, BASELINE_FORMAT_VERSION)
    kind = meta.get("model_class")
    if kind not in LEARNED:
        raise ValueError(f"{cfg_path}: unknown model_class {kind!r}; known {sorted(LEARNED)}")
    model_cls = LEARNED[kind]
    cfg_cls = model_cls.config_class
    mc = check_model_config(cfg_path, meta, cfg_cls.field_names())
    model = model_cls(build_config(cfg_path, cfg_cls, mc))
    return load_weights(model, cfg_path.parent, meta, map_location)


def save_world_model(
    model: Any, path_dir: str | os.PathLike[str], extra: dict[str, Any] | None = None
) -> Path:
    """Save a ``MobiWM`` (``save_checkpoint``) or a trainable baseline (``save_baseline``)."""
    from worldmodel.model.mobiwm import MobiWM

    if isinstance(model, MobiWMAdapter):
        model = model.model
    if isinstance(model, MobiWM):
        return save_checkpoint(model, path_dir, extra=extra)
    return save_baseline(model, path_dir, extra=extra)


def load_world_model(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Any:
    """Load any world-model checkpoint by its ``format``: ``MobiWM`` for MobiWM checkpoints,
    the baseline module otherwise (wrap with ``as_world_model`` for the batch interface)."""
    cfg_path, meta = read_config_json(path)
    fmt = meta.get("format")
    if fmt == CHECKPOINT_FORMAT:
        return load_checkpoint(cfg_path.parent, map_location)
    if fmt == BASELINE_FORMAT:
        return load_baseline(cfg_path.parent, map_location)
    raise ValueError(
        f"{cfg_path}: unknown checkpoint format {fmt!r}; expected "
        f"{CHECKPOINT_FORMAT!r} or {BASELINE_FORMAT!r}"
    )
