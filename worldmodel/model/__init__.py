"""MobiWM: the learned world model of per-cell traffic (paper §4).

``ModelConfig`` / ``preset`` describe a model, ``MobiWM`` is the model (``forward``/``loss`` for
training, ``encode_context``/``predict``/``rollout`` for inference), ``save_checkpoint`` /
``load_checkpoint`` store it as ``model.safetensors`` + ``config.json``; an optional
``QuantileHead`` beside it turns rollouts into ``Forecast`` distributions (``uncertainty``).
"""

from __future__ import annotations

from worldmodel.model.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    load_checkpoint,
    read_checkpoint_config,
    save_checkpoint,
)
from worldmodel.model.config import PRESETS, ModelConfig, WorldBatch, preset
from worldmodel.model.context import ContextCache
from worldmodel.model.mobiwm import MobiWM
from worldmodel.model.normalize import TrafficNormalizer, normalize_actions
from worldmodel.model.uncertainty import Forecast, QuantileHead

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "PRESETS",
    "ContextCache",
    "Forecast",
    "MobiWM",
    "ModelConfig",
    "QuantileHead",
    "TrafficNormalizer",
    "WorldBatch",
    "load_checkpoint",
    "normalize_actions",
    "preset",
    "read_checkpoint_config",
    "save_checkpoint",
]
