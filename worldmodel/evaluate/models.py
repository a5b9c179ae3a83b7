"""The evaluated models: ``--models`` entries → ``EvalModel`` rows (batch interface + kind)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from worldmodel.baselines import (
    LEARNED,
    LearnedWorldModel,
    MobiWMAdapter,
    Persistence,
    SeasonalNaive,
    WorldModel,
    as_world_model,
    load_world_model,
)
from worldmodel.evaluate.config import NAIVE_BASELINES


@dataclass
class EvalModel:
    """One evaluated model: its row name, how it was given, the batch interface and its kind.

    ``kind``: ``mobiwm`` (action-conditioned MobiWM), ``static-mobiwm`` (``use_actions=False``),
    ``<name>-wm`` / ``<name>`` for a learned baseline with / without actions (``gru``,
    ``itransformer``, ``rssm``, ``tdmpc``) or ``naive``.
    """

    name: str
    spec: str
    wm: WorldModel
    kind: str
    n_parameters: int

    @property
    def history(self) -> int:
        return int(self.wm.history)

    @property
    def horizon(self) -> int:
        return int(self.wm.horizon)

    def info(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "kind": self.kind,
            "history": self.history,
            "horizon": self.horizon,
            "n_parameters": self.n_parameters,
        }


def _kind(raw: Any) -> tuple[str, int]:
    from worldmodel.model.mobiwm import MobiWM

    if isinstance(raw, MobiWM):
        return ("mobiwm" if raw.cfg.use_actions else "static-mobiwm"), raw.n_parameters()
    if isinstance(raw, LearnedWorldModel):
        name = next(k for k, cls in LEARNED.items() if type(raw) is cls)
        return (f"{name}-wm" if raw.cfg.use_actions else name), raw.n_parameters()
    if isinstance(raw, Persistence | SeasonalNaive):
        return "naive", 0
    n = sum(p.numel() for p in raw.parameters()) if hasattr(raw, "parameters") else 0
    return "other", int(n)


def _name_from_path(path: Path) -> str:
    if path.name in ("best", "last") and path.parent.name:
        return path.parent.name + ("/last" if path.name == "last" else "")
    return path.name or str(path)


def _looks_like_path(spec: str) -> bool:
    return "/" in spec or os.sep in spec or spec.startswith(".") or Path(spec).exists()


def resolve_models(
    specs: Sequence[Any],
    device: str | torch.device = "cpu",
    naive_horizon: int | None = None,
    memory: str = "observed",
) -> list[EvalModel]:
    """Turn ``--models`` entries into ``EvalModel`` rows.

    An entry is a checkpoint folder (``PATH`` or ``NAME=PATH``), a naive baseline name
    (``persistence``, ``seasonal``), a ``(name, spec_or_model)`` pair, or a model object
    (``MobiWM`` or anything with ``predict_batch``/``rollout_batch``). Raises
    ``FileNotFoundError`` naming a missing checkpoint folder and ``ValueError`` naming an
    unknown baseline or a duplicate row name. Naive baselines use ``naive_horizon`` (default:
    the first checkpoint model's horizon, else 4). MobiWM rows roll out with the daily
    ``memory`` mode (``MobiWM.rollout``).
    """
    if not specs:
        raise ValueError("no models to evaluate (give checkpoint folders or baseline names)")
    entries: list[tuple[str | None, Any]] = []
    for spec in specs:
        if isinstance(spec, tuple):
            if len(spec) != 2 or not isinstance(spec[0], str):
                raise ValueError(f"model entry {spec!r}: expected (name, spec_or_model)")
            obj = spec[1]
            entries.append((spec[0], str(obj) if isinstance(obj, os.PathLike) else obj))
        elif isinstance(spec, os.PathLike):
            entries.append((None, str(spec)))
        elif isinstance(spec, str) and "=" in spec and not Path(spec).exists():
            name, _, path = spec.partition("=")
            entries.append((name.strip() or None, path.strip()))
        else:
            entries.append((None, spec))

    loaded: list[tuple[str | None, str, Any]] = []  # (name, spec, model or None = naive)
    for name, spec in entries:
        if not isinstance(spec, str):
            loaded.append((name, type(spec).__name__, spec))
        elif spec in NAIVE_BASELINES:
            loaded.append((name or spec, spec, None))
        elif _looks_like_path(spec):
            path = Path(spec)
            if not path.is_dir():
                raise FileNotFoundError(f"{path}: checkpoint folder not found")
            loaded.append((name or _name_from_path(path), spec, load_world_model(path, device)))
        else:
            raise ValueError(
                f"unknown baseline {spec!r}; choose one of {list(NAIVE_BASELINES)} or give a "
                "checkpoint folder (a path)"
            )
    horizons = [int(as_world_model(m).horizon) for _, _, m in loaded if m is not None]
    p0 = naive_horizon or (horizons[0] if horizons else 4)

    out: list[EvalModel] = []
    for name, spec, raw in loaded:
        if raw is None:
            wm: WorldModel = Persistence(horizon=p0) if spec == "persistence" else SeasonalNaive(p0)
            kind, n_par = "naive", 0
        else:
            if hasattr(raw, "eval") and callable(raw.eval):
                raw.eval()
            wm = as_world_model(raw, memory)
            kind, n_par = _kind(raw)
        row = name or spec
        if any(m.name == row for m in out):
            raise ValueError(f"two models are named {row!r}; name them with NAME=PATH")
        out.append(EvalModel(row, spec, wm, kind, n_par))
    return out


class SampledMobiWM(MobiWMAdapter):
    """A MobiWM with a quantile head whose rollouts are *one sampled trajectory* of its
    predictive distribution (``Forecast.sample``, seeded) instead of the point prediction: its
    values spread like real traffic, which is what the rollout section's JSD compares."""

    def __init__(self, model: Any, memory: str = "observed", seed: int = 0) -> None:
        super().__init__(model, memory)
        if model.uncertainty_head is None:
            raise ValueError("SampledMobiWM needs a model with a quantile head")
        self.generator = torch.Generator().manual_seed(seed)

    def rollout_batch(
        self, batch: Any, n_chunks: int, memory: Any = None, uncertainty: bool = False
    ) -> Any:
        fc = super().rollout_batch(batch, n_chunks, memory, uncertainty=True)
        return fc if uncertainty else fc.sample(1, self.generator)[0]


SAMPLED_SUFFIX = "-sampled"


def sampled_rows(models: Sequence[EvalModel], seed: int = 0) -> list[EvalModel]:
    """A ``<name>-sampled`` row (``SampledMobiWM``) for every MobiWM row with a quantile head."""
    out = []
    for m in models:
        if isinstance(m.wm, MobiWMAdapter) and m.wm.model.uncertainty_head is not None:
            wm = SampledMobiWM(m.wm.model, m.wm.memory, seed)
            out.append(EvalModel(m.name + SAMPLED_SUFFIX, m.spec, wm, m.kind, m.n_parameters))
    return out
