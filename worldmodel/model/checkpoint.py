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
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from worldmodel.model.config import ModelConfig
from worldmodel.model.mobiwm import MobiWM

CHECKPOINT_FORMAT = "mobiwm-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def save_checkpoint(
    model: MobiWM, path_dir: str | os.PathLike[str], extra: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` to the directory ``path_dir`` (created if needed); returns the directory.

    ``extra`` must be JSON-serialisable (training data summary, metrics, command line, ...).
    """
    if not isinstance(model, MobiWM):
        raise TypeError(f"save_checkpoint expects a MobiWM, got {type(model).__name__}")
    out = Path(path_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "model_config": model.cfg.to_dict(),
        "normalizer": {**model.normalizer.stats(), "fitted": model.normalizer.is_fitted},
        "tensors": {k: list(v.shape) for k, v in tensors.items()},
        "n_parameters": model.n_parameters(),
        "extra": extra or {},
    }
    try:
        text = json.dumps(meta, indent=2, sort_keys=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"save_checkpoint: extra is not JSON-serialisable: {err}") from err

    weights_tmp = _temp_path(out, WEIGHTS_FILE)
    config_tmp = _temp_path(out, CONFIG_FILE)
    try:
        save_file(tensors, str(weights_tmp), metadata={"format": "pt", CHECKPOINT_FORMAT: "1"})
        config_tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(weights_tmp, out / WEIGHTS_FILE)
        os.replace(config_tmp, out / CONFIG_FILE)
    finally:
        for tmp in (weights_tmp, config_tmp):
            tmp.unlink(missing_ok=True)
    return out


def read_checkpoint_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate ``config.json`` of a checkpoint (directory, or a file inside it).

    Returns the parsed dict; raises ``ValueError`` on corrupt JSON, wrong format / version, or
    unknown, missing or mistyped ``model_config`` keys.
    """
    cfg_path = _checkpoint_dir(path) / CONFIG_FILE
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path}: checkpoint config not found")
    try:
        meta = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{cfg_path}: corrupt JSON: {err}") from err
    if not isinstance(meta, dict):
        raise ValueError(f"{cfg_path}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{cfg_path}: 'format' is {meta.get('format')!r}, not {CHECKPOINT_FORMAT!r}"
        )
    version = meta.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise ValueError(
            f"{cfg_path}: format_version {version!r} is not supported by this code "
            f"(expects {CHECKPOINT_FORMAT_VERSION})"
        )
    mc = meta.get("model_config")
    if not isinstance(mc, dict):
        raise ValueError(f"{cfg_path}: 'model_config' must be an object")
    types = ModelConfig.field_types()
    unknown = sorted(set(mc) - set(types))
    missing = sorted(set(types) - set(mc))
    if unknown or missing:
        raise ValueError(
            f"{cfg_path}: model_config does not match the code: unknown keys {unknown}, "
            f"missing keys {missing}"
        )
    for key, kind in types.items():
        value = mc[key]
        ok = {
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, int | float) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "str": isinstance(value, str),
        }[kind]
        if not ok:
            raise ValueError(
                f"{cfg_path}: model_config.{key} must be {kind}, got {type(value).__name__} "
                f"{value!r}"
            )
    norm = meta.get("normalizer")
    if not isinstance(norm, dict) or not all(
        isinstance(norm.get(k), int | float) and not isinstance(norm.get(k), bool)
        for k in ("scale", "mean", "std")
    ):
        raise ValueError(f"{cfg_path}: 'normalizer' must hold numbers scale, mean, std")
    return meta


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> MobiWM:
    """Load a checkpoint directory (or a file inside it) → ``MobiWM`` in eval mode.

    Raises ``ValueError`` naming the file when the JSON, the config, or the tensors (missing,
    unexpected, shape or dtype mismatch, corrupt file) do not match this code.
    """
    directory = _checkpoint_dir(path)
    meta = read_checkpoint_config(directory)
    cfg_path = directory / CONFIG_FILE
    try:
        cfg = ModelConfig(**meta["model_config"])
    except ValueError as err:
        raise ValueError(f"{cfg_path}: invalid model_config: {err}") from err
    model = MobiWM(cfg)

    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path}: checkpoint weights not found")
    try:
        tensors = load_file(str(weights_path), device="cpu")
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{weights_path}: corrupt safetensors file: {err}") from err

    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{weights_path}: tensors do not match the model built from {cfg_path.name}: "
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
    model.load_state_dict(tensors, strict=True)

    stats = model.normalizer.stats()
    for key in ("scale", "mean", "std"):
        if not math.isclose(stats[key], float(meta["normalizer"][key]), rel_tol=1e-5, abs_tol=1e-7):
            raise ValueError(
                f"{directory}: normaliser {key} is {stats[key]} in {WEIGHTS_FILE} but "
                f"{meta['normalizer'][key]} in {CONFIG_FILE}"
            )
    model.to(map_location)
    model.eval()
    return model


def _checkpoint_dir(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if p.is_file():
        return p.parent
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: no checkpoint directory here")
    return p


def _temp_path(directory: Path, name: str) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    return Path(tmp)


def _short(keys: list[str], n: int = 8) -> str:
    return str(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")
