"""MobiWM checkpoints: a directory with ``model.safetensors`` and ``config.json``. No pickle.

``config.json``::

    {"format": "mobiwm-checkpoint", "format_version": 1,
     "model_config": {...every ModelConfig field...},
     "normalizer": {"scale": .., "mean": .., "std": .., "fitted": true},
     "tensors": {"name": [shape], ...}, "n_parameters": ..,
     "extra": {...caller's training data summary, metrics, command...}}

``model.safetensors`` holds every parameter and buffer of ``MobiWM.state_dict()`` (the
normaliser statistics included). Both files are written to temporary files in the same folder
and moved into place with ``os.replace``. ``load_checkpoint`` checks the JSON and the tensors
against the code and raises ``ValueError`` naming the file and what does not match.

The generic helpers (``write_checkpoint``, ``read_config_json``, ``check_format``,
``check_model_config``, ``build_config``, ``load_weights``, ``check_tensors``,
``check_normalizer``, ``checkpoint_dir``) are shared with the baseline checkpoints of
``worldmodel.baselines``, which use the same layout with another ``format``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file
from torch import nn

from worldmodel.model.config import ModelConfig
from worldmodel.model.files import write_pair_atomic
from worldmodel.model.mobiwm import MobiWM
from worldmodel.model.uncertainty import has_uncertainty, load_uncertainty

CHECKPOINT_FORMAT = "mobiwm-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def save_checkpoint(
    model: MobiWM, path_dir: str | os.PathLike[str], extra: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` to the directory ``path_dir`` (created if needed); returns the directory.

    ``extra`` must be JSON-serialisable (training data summary, metrics, command line, ...).
    """
    if not isinstance(model, MobiWM):
        raise TypeError(f"save_checkpoint expects a MobiWM, got {type(model).__name__}")
    fmt, version = CHECKPOINT_FORMAT, CHECKPOINT_FORMAT_VERSION
    return write_checkpoint(model, path_dir, fmt, version, extra, "save_checkpoint")


LEGACY_DEFAULTS: dict[str, Any] = {
    "action_deltas": False,
    "antenna_bias": False,
    "season": 0,
    "season_mix_init": 0.75,
    "season_mix_learnt": True,
    "season_anchor": "difference",
    "season_actions": False,
    "coverage_prior": False,
    "coverage_tau_db": 4.0,
    "coverage_height_m": 30.0,
    "coverage_daily_demand": False,
    "coverage_calibrate": 0,
    "coverage_candidates": 0,
    "spatial_neighbours": 0,
    "memory_age": 1,
}
"""``ModelConfig`` fields added after format version 1 was fixed, with the value that reproduces
the model of a checkpoint written before the field existed (the feature did not exist then).
A checkpoint without such a key loads with this value; every other key must be present."""


def read_checkpoint_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate ``config.json`` of a checkpoint (directory, or a file inside it).

    Returns the parsed dict (``model_config`` completed with ``LEGACY_DEFAULTS`` for keys an
    older checkpoint lacks); raises ``ValueError`` on corrupt JSON, wrong format / version, or
    unknown, missing or mistyped ``model_config`` keys.
    """
    cfg_path, meta = read_config_json(path)
    check_format(cfg_path, meta, CHECKPOINT_FORMAT, CHECKPOINT_FORMAT_VERSION)
    if isinstance(meta.get("model_config"), dict):
        meta["model_config"] = {**LEGACY_DEFAULTS, **meta["model_config"]}
    check_model_config(cfg_path, meta, ModelConfig.field_types())
    norm = meta.get("normalizer")
    if not isinstance(norm, dict) or not all(_is_number(norm.get(k)) for k in _NORM_KEYS):
        raise ValueError(f"{cfg_path}: 'normalizer' must hold numbers scale, mean, std")
    return meta


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> MobiWM:
    """Load a checkpoint directory (or a file inside it) → ``MobiWM`` in eval mode.

    Raises ``ValueError`` naming the file when the JSON, the config, or the tensors (missing,
    unexpected, shape or dtype mismatch, corrupt file) do not match this code. A quantile head
    saved beside the weights (``worldmodel.model.uncertainty``) is attached to the model.
    """
    directory = checkpoint_dir(path)
    meta = read_checkpoint_config(directory)
    model = MobiWM(build_config(directory / CONFIG_FILE, ModelConfig, meta["model_config"]))
    model = load_weights(model, directory, meta, map_location)
    if has_uncertainty(directory):
        model.attach_uncertainty(load_uncertainty(directory, model.cfg.d_model, map_location))
    return model


# ---------------------------------------------------------------------- generic helpers
_NORM_KEYS = ("scale", "mean", "std")
_TYPE_CHECKS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
}


def write_checkpoint(
    model: nn.Module,
    path_dir: str | os.PathLike[str],
    fmt: str,
    version: int,
    extra: dict[str, Any] | None = None,
    caller: str = "write_checkpoint",
    header: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` (with ``cfg.to_dict()``, ``normalizer`` and ``n_parameters()``) to the
    directory ``path_dir``: ``model.safetensors`` (its ``state_dict``) and ``config.json``
    (``format``, ``format_version``, then ``header``'s keys, ``model_config``, ``normalizer``,
    ``tensors``, ``n_parameters``, ``extra``). Both go through temporary files in the directory
    and ``os.replace``. Raises ``ValueError`` (prefixed ``caller``) if ``extra`` is not JSON."""
    out = Path(path_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format": fmt,
        "format_version": version,
        **(header or {}),
        "model_config": model.cfg.to_dict(),
        "normalizer": {**model.normalizer.stats(), "fitted": model.normalizer.is_fitted},
        "tensors": {k: list(v.shape) for k, v in tensors.items()},
        "n_parameters": model.n_parameters(),
        "extra": extra or {},
    }
    try:
        text = json.dumps(meta, indent=2)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{caller}: extra is not JSON-serialisable: {err}") from err

    meta_pt = {"format": "pt", fmt: str(version)}
    write_pair_atomic(out, tensors, WEIGHTS_FILE, text, CONFIG_FILE, meta_pt)
    return out


def read_config_json(path: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    """``config.json`` of the checkpoint at ``path`` (directory, or a file inside it) →
    ``(its path, the parsed object)``. Checks only that it exists and is a JSON object."""
    cfg_path = checkpoint_dir(path) / CONFIG_FILE
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path}: checkpoint config not found")
    try:
        meta = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{cfg_path}: corrupt JSON: {err}") from err
    if not isinstance(meta, dict):
        raise ValueError(f"{cfg_path}: expected a JSON object, got {type(meta).__name__}")
    return cfg_path, meta


def check_format(cfg_path: Path, meta: Mapping[str, Any], fmt: str, version: int) -> None:
    """Raise ``ValueError`` unless ``meta`` has ``format == fmt`` and ``format_version ==
    version``."""
    if meta.get("format") != fmt:
        raise ValueError(f"{cfg_path}: 'format' is {meta.get('format')!r}, not {fmt!r}")
    if meta.get("format_version") != version:
        raise ValueError(
            f"{cfg_path}: format_version {meta.get('format_version')!r} is not supported by "
            f"this code (expects {version})"
        )


def check_model_config(
    cfg_path: Path, meta: Mapping[str, Any], fields: Iterable[str] | Mapping[str, str]
) -> dict[str, Any]:
    """``meta["model_config"]``, checked to be an object with exactly the keys ``fields``. When
    ``fields`` maps each key to ``"int" | "float" | "bool" | "str"``, every value must also be
    of that type. Raises ``ValueError`` naming ``cfg_path``."""
    mc = meta.get("model_config")
    if not isinstance(mc, dict):
        raise ValueError(f"{cfg_path}: 'model_config' must be an object")
    known = set(fields)
    unknown, missing = sorted(set(mc) - known), sorted(known - set(mc))
    if unknown or missing:
        raise ValueError(
            f"{cfg_path}: model_config does not match the code: unknown keys {unknown}, "
            f"missing keys {missing}"
        )
    types = fields if isinstance(fields, Mapping) else {}
    for key, kind in types.items():
        value = mc[key]
        if not _TYPE_CHECKS[kind](value):
            raise ValueError(
                f"{cfg_path}: model_config.{key} must be {kind}, got {type(value).__name__} "
                f"{value!r}"
            )
    return mc


def build_config(cfg_path: Path, cfg_cls: type, model_config: Mapping[str, Any]) -> Any:
    """``cfg_cls(**model_config)``; its ``ValueError`` becomes one naming ``cfg_path``."""
    try:
        return cfg_cls(**model_config)
    except ValueError as err:
        raise ValueError(f"{cfg_path}: invalid model_config: {err}") from err


def load_weights(
    model: ModuleT,
    directory: Path,
    meta: Mapping[str, Any],
    map_location: str | torch.device = "cpu",
) -> ModuleT:
    """Load ``directory/model.safetensors`` into ``model`` (strict: ``check_tensors``), check
    the normaliser against ``meta`` (``check_normalizer``), move it to ``map_location`` and
    return it in eval mode. Raises ``FileNotFoundError`` / ``ValueError`` naming the file."""
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path}: checkpoint weights not found")
    try:
        tensors = load_file(str(weights_path), device="cpu")
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{weights_path}: corrupt safetensors file: {err}") from err
    check_tensors(weights_path, tensors, model.state_dict())
    model.load_state_dict(tensors, strict=True)
    check_normalizer(directory, model, meta)
    model.to(map_location)
    model.eval()
    return model


def check_tensors(
    weights_path: Path, tensors: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> None:
    """Raise ``ValueError`` naming ``weights_path`` when ``tensors`` (read from the file) has
    missing or unexpected names, shapes or dtypes other than ``expected`` (the model's
    ``state_dict``), or non-finite floating-point values."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{weights_path}: tensors do not match the model built from {CONFIG_FILE}: "
            f"missing {_short(missing)}, unexpected {_short(unexpected)}"
        )
    problems = [
        f"{k}: file {list(tensors[k].shape)} {tensors[k].dtype} vs code {list(v.shape)} {v.dtype}"
        for k, v in expected.items()
        if tensors[k].shape != v.shape or tensors[k].dtype != v.dtype
    ]
    if problems:
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ValueError(
            f"{weights_path}: {len(problems)} tensor(s) do not match the model built from "
            f"{CONFIG_FILE} (shape/dtype mismatch): {'; '.join(problems[:5])}{more}"
        )
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"{weights_path}: non-finite values in {_short(bad)}")


def check_normalizer(directory: Path, model: nn.Module, meta: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` when ``meta["normalizer"]`` (if an object) disagrees with the
    statistics loaded into ``model.normalizer``, or holds a non-number."""
    norm = meta.get("normalizer")
    if not isinstance(norm, dict):
        return
    stats = model.normalizer.stats()
    for key in _NORM_KEYS:
        value = norm.get(key)
        if not _is_number(value) or not math.isclose(
            stats[key], float(value), rel_tol=1e-5, abs_tol=1e-7
        ):
            raise ValueError(
                f"{directory}: normaliser {key} is {stats[key]} in {WEIGHTS_FILE} but "
                f"{value!r} in {CONFIG_FILE}"
            )


def checkpoint_dir(path: str | os.PathLike[str]) -> Path:
    """The checkpoint directory ``path``, or the folder of the file ``path``."""
    p = Path(path)
    if p.is_file():
        return p.parent
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: no checkpoint directory here")
    return p


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _short(keys: list[str], n: int = 8) -> str:
    return str(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")
