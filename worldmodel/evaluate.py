"""Evaluate world models on a generated dataset: rollout (Table 1), counterfactuals, stability.

    python -m worldmodel.evaluate --data data/default --models runs/mobiwm-default/best \\
        persistence seasonal --out runs/eval [--split test] [--quick] \\
        [--sections rollout counterfactual stability lead]

``--models`` takes checkpoint folders (MobiWM or a trained baseline, ``NAME=PATH`` to name a
row) and the untrained baselines ``persistence`` and ``seasonal``. ``results.json`` and
``results.md`` (Markdown tables, also printed) are written atomically into ``--out``.

1. **Long-horizon rollout** (paper §5.2, Table 1 layout). Every model warm-starts on the true
   traffic of the first ``W = max_i H_i`` slots of every test map (model ``i`` reads the last
   ``H_i`` of them, so every model predicts the same slots) and rolls out autoregressively over
   the rest of the map with the true action / active sequence; the true traffic after the warm
   start is zeroed before any model sees it. JSD (``metrics.jsd``), MAE, RMSE and NRMSE over
   active real cells, pooled over each scenario's test maps; plus MobiWM's JSD improvement over
   the best baseline per scenario and the MAE per rollout day.
2. **Counterfactual fidelity.** Per map the twin is re-run from slot 0 to ``t0`` (first weekday
   08:00 after the warm start) with the true actions in ``E`` copies, one per plan; then every
   copy holds a plan for ``horizon`` slots: ``none`` (hold the parameters of ``t0``; plus a
   replicate as a sanity check), ``random`` (20–40 % of active cells: power ±3 dB, azimuth
   ±30°, tilts ±3°, clipped to the bounds), ``overpower`` (§5.4a: a few cells at the power
   bound + 3 dB and azimuth ±60°; the twin's bounds are widened) and ``site_off`` (§5.4b: every
   cell of one site switched off). The copies share their fast-fading draws (common random
   numbers, drawn as for a single copy, which also makes the re-run reproduce the dataset), so
   plan deltas are free of fading noise. Every model gets the twin's last ``H`` slots before
   ``t0`` as history and the plan as future actions. Per cell, delta = mean traffic over the
   horizon under the plan minus under ``none``; ``delta_r2`` and ``sign_agreement`` (tol = 1 %
   of the map's mean cell traffic) pooled over cells and maps per plan kind, over the cells
   active under either plan (``all``) and over the cells active under the plan (``on``: for
   ``site_off`` the neighbours that take over the traffic).
3. **Rollout stability.** Every checkpoint model rolls out ``stability_slots`` (10,000) slots
   on one test map from a true warm start: true actions while the map lasts, then held at the
   last values; time indices continue; slot ``s`` reads the OD of map row ``s mod T_map``
   (each window carries its own OD slices, so ``MobiWM.rollout`` sees cache slots
   ``0..T-1`` of the window). Reports NaN / negative values, min / max of the map's total
   traffic per slot relative to the twin's range over the map's week, the share of slots
   outside ``[0.5·min, 1.5·max]`` of that range, weekly means and the drift (mean total of the
   last week / first week).

4. **Error by lead time** (``--sections lead``; opt-in). From ``LEAD_ORIGINS`` forecast
   origins per map (one every ``LEAD_SPACING`` slots from the warm start, so they cover every
   hour of a day) every model reads the true traffic before the origin and rolls out
   ``LEAD_SLOTS`` slots. MAE by lead time ``ℓ`` (slots since the last true slot, 1 = the next
   slot) pooled over origins, maps and active cells, per scenario and over all. Lead 1–P is
   teacher forcing (one chunk from the truth); the curve shows whether a rollout's error keeps
   growing (feedback drift) or levels off once the true recent slots are forgotten.

``--quick``: rollout over at most 192 predicted slots, counterfactuals on the first test map of
each scenario with 2 random plans, a 2,016-slot stability run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from worldmodel import metrics
from worldmodel.baselines import (
    GRUWorldModel,
    MobiWMAdapter,
    Persistence,
    SeasonalNaive,
    WorldModel,
    as_world_model,
    load_world_model,
    slice_window,
)
from worldmodel.cli import arg, parse_config
from worldmodel.data.dataset import collate_maps, load_split, scenario_name
from worldmodel.data.format import MapRecord
from worldmodel.model.mobiwm import MEMORY_MODES, DailyMemory
from worldmodel.twin.scenario import AZIMUTH, DAYS_PER_WEEK, POWER, SLOTS_PER_DAY, SLOTS_PER_WEEK

SECTIONS = ("rollout", "counterfactual", "stability", "lead")
DEFAULT_SECTIONS = ("rollout", "counterfactual", "stability")
"""Sections run when ``--sections`` is not given (``lead`` is a diagnostic, opt-in)."""
NAIVE_BASELINES = ("persistence", "seasonal")
"""Baselines that need no checkpoint (``--models`` names)."""
PAPER_SCENARIOS = ("urban-para", "urban-topo", "suburb-para", "suburb-topo")
"""Table 1 column order; other scenarios (``hex-para``) follow as extra columns."""
QUICK_ROLLOUT_SLOTS = 2 * SLOTS_PER_DAY
QUICK_STABILITY_SLOTS = 3 * SLOTS_PER_WEEK
STABILITY_SLOTS = 10_000
CF_HORIZON = 24
JSD_TARGET_PCT = 25.0  # issue target: JSD this much below the best baseline per scenario
JSD_Z90 = 1.6449  # two-sided 90% normal quantile of the jackknife interval
CF_RANDOM_PLANS = 4
CF_QUICK_RANDOM_PLANS = 2
CF_START_SLOT_OF_DAY = 32  # 08:00
CF_TOL_SHARE = 0.01  # sign-agreement tolerance: 1 % of the mean cell traffic
RANDOM_FRACTION = (0.2, 0.4)
RANDOM_STEP = np.array([3.0, 30.0, 3.0, 3.0])  # ± power dB, azimuth °, mech / elec tilt °
OVERPOWER_DB = 3.0
OVERPOWER_AZIMUTH_DEG = 60.0
OVERPOWER_CELLS = 3
STABILITY_SEGMENT = 2 * SLOTS_PER_DAY  # slots per rollout call of the stability run
LEAD_SLOTS = SLOTS_PER_DAY  # longest lead time of the lead section (slots)
LEAD_ORIGINS = 24  # forecast origins per map, one every LEAD_SPACING slots
QUICK_LEAD_ORIGINS = 6
LEAD_SPACING = 4
LEAD_BATCH = 48  # (map, origin) rows per rollout call
LEAD_BANDS = ((1, 4), (5, 8), (9, 16), (17, 32), (33, 64), (65, 96))
PLAN_KINDS = ("random", "overpower", "site_off")


# ---------------------------------------------------------------------- models
@dataclass
class EvalModel:
    """One evaluated model: its row name, how it was given, the batch interface and its kind.

    ``kind``: ``mobiwm`` (action-conditioned MobiWM), ``static-mobiwm`` (``use_actions=False``),
    ``gru-wm`` / ``gru`` (GRU baseline with / without actions) or ``naive``.
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
    if isinstance(raw, GRUWorldModel):
        return ("gru-wm" if raw.cfg.use_actions else "gru"), raw.n_parameters()
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


# ---------------------------------------------------------------------- batches
def map_item(
    rec: MapRecord,
    rows: np.ndarray,
    traffic: np.ndarray,
    actions: np.ndarray,
    active: np.ndarray,
    index: int = 0,
) -> dict[str, torch.Tensor]:
    """One map's window item (``WindowDataset`` layout) over map rows ``rows``.

    Rows may run past the map's end: time indices continue (slot ``slot[0] + row``) and the OD
    of row ``r`` is the OD of row ``r mod T_map``. ``traffic [T, N]``, ``actions [T, N, 4]``,
    ``active [T, N]`` are given by the caller (history / plan / zeros).
    """
    rows = np.asarray(rows, dtype=np.int64)
    slot = int(rec.slot[0]) + rows
    return {
        "traffic": torch.as_tensor(np.ascontiguousarray(traffic, dtype=np.float32)),
        "actions": torch.as_tensor(np.ascontiguousarray(actions, dtype=np.float32)),
        "active": torch.as_tensor(np.ascontiguousarray(active, dtype=bool)),
        "cell_xy": torch.as_tensor(np.ascontiguousarray(rec.cell_xy, dtype=np.float32)),
        "extent_m": torch.tensor(float(rec.metadata["extent_m"]), dtype=torch.float32),
        "slot_of_day": torch.as_tensor(slot % SLOTS_PER_DAY),
        "day_of_week": torch.as_tensor((slot // SLOTS_PER_DAY) % DAYS_PER_WEEK),
        "poi": torch.as_tensor(np.ascontiguousarray(rec.poi)),
        "od": torch.as_tensor(np.ascontiguousarray(rec.od[rows % rec.n_slots])),
        "facility": torch.as_tensor(np.ascontiguousarray(rec.facility)),
        "map_index": torch.tensor(index, dtype=torch.int64),
        "start": torch.tensor(int(rows[0]), dtype=torch.int64),
    }


def _held(arr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``arr[rows]`` with rows past the end held at the last row."""
    return arr[np.minimum(rows, len(arr) - 1)]


def _run_model(
    model: EvalModel, batch: dict[str, torch.Tensor], n_chunks: int, memory: Any = None
) -> torch.Tensor:
    kw = {} if memory is None else {"memory": memory}
    with torch.no_grad():
        return model.wm.rollout_batch(batch, n_chunks, **kw).detach().float().cpu()


def _warm_memory(model: EvalModel, rec: MapRecord) -> DailyMemory | None:
    """The warm start's last season of ``rec`` as a ``DailyMemory`` seen from the map's first
    slot (each segment shifts the offset) for a MobiWM row with the observed daily memory;
    else None."""
    wm = model.wm
    if not isinstance(wm, MobiWMAdapter) or wm.memory != "observed" or not wm.model.cfg.season:
        return None
    h, dev = wm.history, wm.model.device

    def rows(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a[:h]), device=dev).to(dtype)[None]

    return DailyMemory.of_history(
        rows(rec.traffic, torch.float32), rows(rec.actions, torch.float32),
        rows(rec.active, torch.bool), wm.model.cfg.season,
    )  # fmt: skip


def _shape_key(rec: MapRecord) -> tuple:
    """Maps with equal keys can share one ``collate_maps`` batch (same context shapes)."""
    return (rec.poi.shape, rec.od.shape[1:], rec.facility.shape)


def _group_by_shape(records: Sequence[MapRecord]) -> list[list[int]]:
    """Indices of maps that ``collate_maps`` can batch together (same context shapes)."""
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault(_shape_key(r), []).append(i)
    return list(groups.values())


def rollout_predictions(
    records: Sequence[MapRecord], models: Sequence[EvalModel], warm: int, length: int
) -> dict[str, list[np.ndarray]]:
    """Autoregressive predictions of map rows ``[warm, warm + length)`` → ``{model: [T, N_i]}``.

    Model ``i`` reads the true traffic of rows ``[warm - H_i, warm)`` only: the traffic of later
    rows is zeroed before the batch is built. Actions and active flags are the true ones. Maps
    with matching context shapes share one padded batch.
    """
    for m in models:
        if m.history > warm:
            raise ValueError(f"model {m.name!r}: history {m.history} > warm start {warm}")
    total = warm + max(-(-length // m.horizon) * m.horizon for m in models)
    if any(r.n_slots < total for r in records):
        raise ValueError(
            f"maps need {total} slots for this rollout; shortest has "
            f"{min(r.n_slots for r in records)}"
        )
    out: dict[str, dict[int, np.ndarray]] = {m.name: {} for m in models}
    rows = np.arange(total)
    for group in _group_by_shape(records):
        items = []
        for i in group:
            rec = records[i]
            traffic = rec.traffic[:total].copy()
            traffic[warm:] = 0.0  # the models never see the truth after the warm start
            items.append(map_item(rec, rows, traffic, rec.actions[:total], rec.active[:total], i))
        batch = collate_maps(items)
        for m in models:
            k = -(-length // m.horizon)
            window = slice_window(batch, warm - m.history, warm + k * m.horizon)
            pred = _run_model(m, window, k)[:, :length].numpy()
            for j, i in enumerate(group):
                out[m.name][i] = pred[j, :, : records[i].n_cells]
    return {name: [per[i] for i in range(len(records))] for name, per in out.items()}


# ---------------------------------------------------------------------- 1. rollout
def _ordered_scenarios(names: Sequence[str]) -> list[str]:
    present = list(dict.fromkeys(names))
    return [s for s in PAPER_SCENARIOS if s in present] + sorted(
        s for s in present if s not in PAPER_SCENARIOS
    )


def rollout_section(
    records: Sequence[MapRecord],
    models: Sequence[EvalModel],
    quick: bool = False,
    progress: bool = True,
    max_slots: int | None = None,
) -> dict[str, Any]:
    """Section 1: long-horizon rollout metrics per scenario and model (see module doc)."""
    warm = max(m.history for m in models)
    by_scen: dict[str, list[MapRecord]] = {}
    for r in records:
        by_scen.setdefault(scenario_name(r), []).append(r)
    scenarios = _ordered_scenarios(list(by_scen))
    cap = max_slots if max_slots is not None else (QUICK_ROLLOUT_SLOTS if quick else None)
    res: dict[str, Any] = {
        "warm_start": warm,
        "slots": {},
        "maps": {},
        "metrics": {},
        "jsd_per_map": {},
        "skipped": {},
    }
    pooled: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {m.name: [] for m in models}
    jack: dict[str, dict[str, dict[str, float]]] = {}  # scenario -> model -> jackknife
    by_day: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {m.name: [] for m in models}
    bar = tqdm(scenarios, desc="rollout", unit="scenario", disable=not progress)
    for scen in bar:
        recs = by_scen[scen]
        avail = min(r.n_slots for r in recs) - warm
        if cap is not None:
            avail = min(avail, cap)
        length = min(avail // m.horizon * m.horizon for m in models)
        if length < 1:
            res["skipped"][scen] = f"maps too short for a warm start of {warm} slots"
            continue
        res["slots"][scen] = length
        res["maps"][scen] = [r.name for r in recs]
        preds = rollout_predictions(recs, models, warm, length)
        true = [r.traffic[warm : warm + length].astype(np.float64) for r in recs]
        mask = [r.active[warm : warm + length] for r in recs]
        y = np.concatenate([t[mk] for t, mk in zip(true, mask, strict=True)])
        res["metrics"][scen] = {}
        res["jsd_per_map"][scen] = {}
        for m in models:
            x = np.concatenate([p[mk] for p, mk in zip(preds[m.name], mask, strict=True)])
            res["metrics"][scen][m.name] = metrics.rollout_metrics(x, y)
            res["jsd_per_map"][scen][m.name] = [
                metrics.jsd(p[mk], t[mk])
                for p, t, mk in zip(preds[m.name], true, mask, strict=True)
            ]
            pooled[m.name].append((x, y))
            day = np.arange(length) // SLOTS_PER_DAY
            err = np.zeros(day[-1] + 1)
            cnt = np.zeros(day[-1] + 1)
            for p, t, mk in zip(preds[m.name], true, mask, strict=True):
                d = np.broadcast_to(day[:, None], mk.shape)[mk]
                err += np.bincount(d, np.abs(p[mk] - t[mk]), minlength=len(err))
                cnt += np.bincount(d, minlength=len(cnt))
            by_day[m.name].append((err, cnt))
        point = _improvement({scen: res["metrics"][scen]}, models)
        point = {n: (row[scen] or {}).get("pct") for n, row in point.items()}
        jack[scen] = _jackknife_improvement(preds, true, mask, models, point)
    bar.close()
    res["overall"] = {
        m.name: metrics.rollout_metrics(
            np.concatenate([x for x, _ in pooled[m.name]]),
            np.concatenate([y for _, y in pooled[m.name]]),
        )
        for m in models
        if pooled[m.name]
    }
    res["mae_by_day"] = {}
    for name, parts in by_day.items():
        if parts:
            n_days = max(len(e) for e, _ in parts)
            err = sum(np.pad(e, (0, n_days - len(e))) for e, _ in parts)
            cnt = sum(np.pad(c, (0, n_days - len(c))) for _, c in parts)
            res["mae_by_day"][name] = [
                float(e / c) if c else None for e, c in zip(err, cnt, strict=True)
            ]
    res["improvement_jsd_pct"] = _improvement(res["metrics"], models)
    res["improvement_jsd_jackknife"] = {
        name: {scen: j[name] for scen, j in jack.items() if name in j}
        for name in res["improvement_jsd_pct"]
    }
    return res


def _ours_and_baselines(models: Sequence[EvalModel]) -> tuple[list[str], list[str]]:
    """Names of the MobiWM models and of the baselines they are scored against."""
    return [m.name for m in models if m.kind == "mobiwm"], [
        m.name for m in models if m.kind != "mobiwm"
    ]


def _jackknife_improvement(
    preds: dict[str, list[np.ndarray]],
    true: list[np.ndarray],
    mask: list[np.ndarray],
    models: Sequence[EvalModel],
    point: dict[str, float],
) -> dict[str, dict[str, float]]:
    """Leave-one-map-out jackknife of each MobiWM model's pooled-JSD improvement over the best
    baseline (picked again in every replicate; ``metrics.leave_one_map_out_jsd``): the standard
    error ``se = sqrt((n−1)/n · Σ (θ_i − θ̄)²)``, the 90% interval ``point ± 1.645·se`` and the
    lowest leave-one-out value (%). Empty with fewer than two maps."""
    ours, base = _ours_and_baselines(models)
    if not ours or not base or len(true) < 2:
        return {}
    sel = {n: [p[mk] for p, mk in zip(preds[n], mask, strict=True)] for n in ours + base}
    js = metrics.leave_one_map_out_jsd(sel, [t[mk] for t, mk in zip(true, mask, strict=True)])
    best = np.min(np.stack([js[b] for b in base]), axis=0)
    n_maps = len(true)
    out = {}
    for n in ours:
        if point.get(n) is None or not np.all(best > 0):
            continue
        theta = 100.0 * (best - js[n]) / best
        se = float(np.sqrt((n_maps - 1) / n_maps * np.sum((theta - theta.mean()) ** 2)))
        out[n] = {
            "se": se,
            "lo90": point[n] - JSD_Z90 * se,
            "hi90": point[n] + JSD_Z90 * se,
            "min_leave_one_out": float(theta.min()),
            "n_maps": n_maps,
        }
    return out


def _improvement(table: dict[str, dict[str, dict[str, float]]], models: Sequence[EvalModel]):
    """``{mobiwm model: {scenario: 100·(best baseline JSD − model JSD) / best baseline JSD}}``."""
    ours, base = _ours_and_baselines(models)
    out: dict[str, dict[str, Any]] = {}
    for name in ours:
        row: dict[str, Any] = {}
        for scen, per in table.items():
            if not base:
                row[scen] = None
                continue
            best = min(base, key=lambda b: per[b]["jsd"])
            b = per[best]["jsd"]
            row[scen] = {
                "pct": 100.0 * (b - per[name]["jsd"]) / b if b > 0 else None,
                "best_baseline": best,
            }
        out[name] = row
    return out


# ---------------------------------------------------------------------- 2. counterfactuals
@dataclass
class Plan:
    """Parameters / active flags held over the whole plan horizon, with what changed."""

    name: str
    kind: str  # "none", "random", "overpower", "site_off"
    actions: np.ndarray  # [N, 4]
    active: np.ndarray  # [N] bool
    cells: list[int]  # cells the plan changes (or switches off)
    site: int | None = None

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "cells": self.cells, "site": self.site}


def pick_t0(rec: MapRecord, warm: int, horizon: int) -> int:
    """First map row at 08:00 on a weekday with ``warm`` rows before it and ``horizon`` after;
    else the latest row that fits. ``ValueError`` when the map is too short."""
    rows = np.arange(rec.n_slots)
    ok = (
        (rec.slot_of_day == CF_START_SLOT_OF_DAY)
        & (rec.day_of_week < 5)
        & (rows >= warm)
        & (rows + horizon <= rec.n_slots)
    )
    if ok.any():
        return int(rows[ok][0])
    if rec.n_slots - horizon >= warm:
        return rec.n_slots - horizon
    raise ValueError(
        f"map {rec.name}: {rec.n_slots} slots are too few for a warm start of {warm} plus a "
        f"{horizon}-slot plan"
    )


def make_plans(
    rec: MapRecord, scenario: Any, t0: int, n_random: int, rng: np.random.Generator
) -> list[Plan]:
    """``none``, a ``none`` replicate, ``n_random`` random plans, ``overpower``, ``site_off``."""
    base_p = rec.actions[t0].astype(np.float64)
    base_a = rec.active[t0].copy()
    bounds = scenario.bounds
    on = np.flatnonzero(base_a)
    if len(on) == 0:
        raise ValueError(f"map {rec.name}: no active cell at row {t0}")
    plans = [
        Plan("none", "none", base_p, base_a, []),
        Plan("none-replicate", "none", base_p.copy(), base_a.copy(), []),
    ]
    for j in range(n_random):
        k = max(1, int(round(rng.uniform(*RANDOM_FRACTION) * len(on))))
        cells = np.sort(rng.choice(on, size=min(k, len(on)), replace=False))
        p = base_p.copy()
        p[cells] += rng.uniform(-1.0, 1.0, size=(len(cells), 4)) * RANDOM_STEP
        plans.append(Plan(f"random-{j}", "random", bounds.clip(p), base_a, cells.tolist()))
    cells = np.sort(rng.choice(on, size=min(OVERPOWER_CELLS, len(on)), replace=False))
    p = base_p.copy()
    p[cells, POWER] = bounds.power_dbm[1] + OVERPOWER_DB
    p[cells, AZIMUTH] = np.mod(
        p[cells, AZIMUTH] + rng.choice([-1.0, 1.0], size=len(cells)) * OVERPOWER_AZIMUTH_DEG, 360.0
    )
    plans.append(Plan("overpower", "overpower", p, base_a, cells.tolist()))
    site_of = np.asarray(scenario.cell_site)
    sites = np.unique(site_of[on])
    full = [s for s in sites if base_a[site_of == s].all()]
    site = (
        int(rng.choice(full)) if full else int(max(sites, key=lambda s: base_a[site_of == s].sum()))
    )
    off = np.flatnonzero((site_of == site) & base_a)
    a = base_a.copy()
    a[off] = False
    plans.append(Plan("site_off", "site_off", base_p, a, off.tolist(), site))
    return plans


def twin_counterfactual(
    rec: MapRecord,
    plans: Sequence[Plan],
    t0: int,
    horizon: int,
    scenario: Any = None,
    common_fading: bool = True,
    demand: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the map's twin with the true actions for rows ``[0, t0)`` in one copy per plan, then
    hold each plan for ``horizon`` slots. Returns ``(before [E, t0, N], after [E, horizon, N])``.

    The twin's power bound is widened to fit every plan (``scenario.with_bounds``); ``demand``
    (a ``DemandModel`` of the scenario) replaces the scenario's own demand realisation.
    """
    from worldmodel.data.generate import scenario_of
    from worldmodel.twin.network import NetworkTwin

    sc = scenario_of(rec) if scenario is None else scenario
    p_max = max(float(np.max(p.actions[:, POWER])) for p in plans)
    if p_max > sc.bounds.power_dbm[1]:
        wide = dataclasses.replace(sc.bounds, power_dbm=(sc.bounds.power_dbm[0], p_max))
        sc = sc.with_bounds(wide)
    e, n = len(plans), rec.n_cells
    twin = NetworkTwin(
        sc, e, demand=demand, seed=int(rec.metadata["seed"]), common_fading=common_fading
    )
    twin.reset(slot=int(rec.slot[0]), params=rec.actions[0], active=rec.active[0])
    before = twin.run(rec.actions[:t0], rec.active[:t0]).traffic
    acts = np.stack([np.broadcast_to(p.actions, (horizon, n, 4)) for p in plans])
    act = np.stack([np.broadcast_to(p.active, (horizon, n)) for p in plans])
    after = twin.run(acts, act).traffic
    return before, after


def model_counterfactual(
    model: EvalModel,
    rec: MapRecord,
    history: np.ndarray,
    plans: Sequence[Plan],
    t0: int,
    horizon: int,
) -> np.ndarray:
    """Model traffic ``[E, horizon, N]`` under each plan from the twin's history ``[E, ≥H, N]``
    (the rows just before ``t0``) with the true actions of those rows."""
    h, p = model.history, model.horizon
    k = -(-horizon // p)
    rows = np.arange(t0 - h, t0 + k * p)
    items = []
    for i, plan in enumerate(plans):
        traffic = np.concatenate([history[i, -h:], np.zeros((k * p, rec.n_cells))])
        acts = np.concatenate(
            [rec.actions[t0 - h : t0], np.broadcast_to(plan.actions, (k * p, rec.n_cells, 4))]
        )
        act = np.concatenate(
            [rec.active[t0 - h : t0], np.broadcast_to(plan.active, (k * p, rec.n_cells))]
        )
        items.append(map_item(rec, rows, traffic, acts, act, i))
    return _run_model(model, collate_maps(items), k)[:, :horizon].numpy()


def _cf_scores(parts: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """R² and sign agreement pooled over ``parts`` (one per map and plan)."""
    out: dict[str, Any] = {}
    for sel in ("all", "on"):
        pred = np.concatenate([q["pred"][q[sel]] for q in parts])
        true = np.concatenate([q["true"][q[sel]] for q in parts])
        tol = np.concatenate([np.full(int(q[sel].sum()), q["tol"]) for q in parts])
        if true.size == 0:
            out[sel] = None
            continue
        out[sel] = {
            "r2": metrics.delta_r2(pred, true),
            # scaled by the map's tolerance so one pooled tol (1.0) applies to every map
            "sign": metrics.sign_agreement(pred / tol, true / tol, tol=1.0),
            "n_cells": int(true.size),
        }
    return out


def counterfactual_section(
    records: Sequence[MapRecord],
    models: Sequence[EvalModel],
    quick: bool = False,
    progress: bool = True,
    n_random: int | None = None,
    horizon: int = CF_HORIZON,
    max_maps: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Section 2: counterfactual fidelity of every model against the twin (see module doc)."""
    from worldmodel.data.generate import scenario_of

    n_random = (
        n_random if n_random is not None else (CF_QUICK_RANDOM_PLANS if quick else CF_RANDOM_PLANS)
    )
    warm = max(m.history for m in models)
    chosen: list[MapRecord] = []
    per_scen: dict[str, int] = {}
    for r in records:
        s = scenario_name(r)
        if quick and per_scen.get(s, 0) >= 1:
            continue
        per_scen[s] = per_scen.get(s, 0) + 1
        chosen.append(r)
    if max_maps is not None:
        chosen = chosen[:max_maps]
    res: dict[str, Any] = {
        "horizon": horizon,
        "warm_start": warm,
        "n_random_plans": n_random,
        "maps": {},
        "twin": {},
        "metrics": {},
    }
    parts: dict[str, dict[str, list[dict[str, np.ndarray]]]] = {
        m.name: {k: [] for k in PLAN_KINDS} for m in models
    }
    twin_abs: dict[str, list[np.ndarray]] = {k: [] for k in PLAN_KINDS}
    replicate_max = 0.0
    bar = tqdm(chosen, desc="counterfactual", unit="map", disable=not progress)
    for rec in bar:
        scen = scenario_of(rec)
        t0 = pick_t0(rec, warm, horizon)
        rng = np.random.default_rng([seed, int(rec.metadata["seed"])])
        plans = make_plans(rec, scen, t0, n_random, rng)
        before, after = twin_counterfactual(rec, plans, t0, horizon, scen)
        true_mean = after.mean(axis=1).astype(np.float64)  # [E, N]
        true_delta = true_mean - true_mean[0]
        a0 = plans[0].active
        tol = CF_TOL_SHARE * float(true_mean[0][a0].mean())
        tol = tol if tol > 0 else 1e-9
        ref = rec.traffic[:t0].astype(np.float64)
        rerun = before[0].astype(np.float64)
        res["maps"][rec.name] = {
            "scenario": scenario_name(rec),
            "t0": t0,
            "t0_slot": int(rec.slot[t0]),
            "mean_cell_traffic": tol / CF_TOL_SHARE,
            "sign_tol": tol,
            "rerun_max_abs_diff": float(np.abs(rerun - ref).max()) if t0 else 0.0,
            "rerun_rel_mae": float(np.abs(rerun - ref).mean() / max(ref.mean(), 1e-9))
            if t0
            else 0.0,
            "plans": [p.info() for p in plans],
        }
        for i, plan in enumerate(plans[1:], start=1):
            if plan.kind == "none":
                replicate_max = max(replicate_max, float(np.abs(true_delta[i]).max()))
        pred_mean = {  # [E, N] mean traffic per plan and cell over the horizon
            m.name: model_counterfactual(m, rec, before, plans, t0, horizon).mean(axis=1)
            for m in models
        }
        for i, plan in enumerate(plans):
            if plan.kind not in PLAN_KINDS:
                continue
            sel_all = plan.active | a0
            twin_abs[plan.kind].append(np.abs(true_delta[i][sel_all]))
            for m in models:
                pm = pred_mean[m.name].astype(np.float64)
                parts[m.name][plan.kind].append(
                    {
                        "pred": pm[i] - pm[0],
                        "true": true_delta[i],
                        "all": sel_all,
                        "on": plan.active.copy(),
                        "tol": np.float64(tol),
                    }
                )
    bar.close()
    res["twin"] = {
        "replicate_max_abs_delta": replicate_max,
        "mean_abs_delta": {
            k: float(np.concatenate(v).mean()) if v else None for k, v in twin_abs.items()
        },
        "mean_cell_traffic": float(np.mean([v["mean_cell_traffic"] for v in res["maps"].values()]))
        if res["maps"]
        else None,
    }
    res["metrics"] = {
        m.name: {k: _cf_scores(v) if v else None for k, v in parts[m.name].items()} for m in models
    }
    return res


# ---------------------------------------------------------------------- 3. stability
def long_rollout(
    model: EvalModel, rec: MapRecord, n_slots: int, progress: bool = False
) -> tuple[np.ndarray, int | None]:
    """``n_slots`` autoregressive slots after a true warm start of ``H`` rows → ``([T, N],
    first non-finite row or None)``. Actions / active: the map's, then held at its last row;
    time continues; OD of row ``r`` = OD of row ``r mod T_map``. Runs in segments of
    ``STABILITY_SEGMENT`` slots, identical to one long rollout: each chunk reads only the last
    ``H`` predictions, and a MobiWM with the observed daily memory gets the warm start's last
    day as a ``DailyMemory`` in every later segment."""
    h, p = model.history, model.horizon
    if rec.n_slots < h:
        raise ValueError(f"map {rec.name}: {rec.n_slots} slots < history {h}")
    seg_chunks = max(1, STABILITY_SEGMENT // p)
    buffer = rec.traffic[:h].astype(np.float32)
    memory = _warm_memory(model, rec)
    done, start = 0, h
    out = np.zeros((n_slots, rec.n_cells), dtype=np.float32)
    bad: int | None = None
    bar = tqdm(total=n_slots, desc=f"stability {model.name}", unit="slot", disable=not progress)
    while done < n_slots:
        k = min(seg_chunks, -(-(n_slots - done) // p))
        rows = np.arange(start - h, start + k * p)
        traffic = np.concatenate([buffer, np.zeros((k * p, rec.n_cells), np.float32)])
        item = map_item(rec, rows, traffic, _held(rec.actions, rows), _held(rec.active, rows))
        table = None  # the warm start's last day, seen from this segment's first slot
        if memory is not None:
            table = dataclasses.replace(memory, offset=memory.offset + start - h)
        pred = _run_model(model, collate_maps([item]), k, table)[0].numpy()
        take = min(k * p, n_slots - done)
        out[done : done + take] = pred[:take]
        finite = np.isfinite(pred[:take]).all(axis=1)
        if not finite.all():
            bad = done + int(np.argmin(finite))
            out[done + take :] = np.nan
            bar.update(n_slots - done)
            break
        buffer = np.concatenate([buffer, pred])[-h:]
        done += take
        start += k * p
        bar.update(take)
    bar.close()
    return out, bad


def stability_stats(pred: np.ndarray, rec: MapRecord, first_bad: int | None) -> dict[str, Any]:
    """Summary of a long rollout ``[T, N]`` against the twin's totals over the map."""
    total_true = rec.traffic.astype(np.float64).sum(axis=1)
    t_min, t_max = float(total_true.min()), float(total_true.max())
    finite = pred[: first_bad if first_bad is not None else len(pred)].astype(np.float64)
    total = finite.sum(axis=1)
    week = min(SLOTS_PER_WEEK, max(1, len(total) // 2))
    n_weeks = len(total) // week
    weekly = [float(total[i * week : (i + 1) * week].mean()) for i in range(n_weeks)]
    first = float(total[:week].mean()) if len(total) else float("nan")
    last = float(total[-week:].mean()) if len(total) else float("nan")
    out_of_range = (total < 0.5 * t_min) | (total > 1.5 * t_max)
    return {
        "slots": int(len(pred)),
        "any_nan": bool(np.isnan(pred).any()),
        "first_non_finite_slot": first_bad,
        "any_negative": bool((finite < 0).any()),
        "total_min": float(total.min()) if len(total) else None,
        "total_max": float(total.max()) if len(total) else None,
        "twin_total_min": t_min,
        "twin_total_max": t_max,
        "twin_total_mean": float(total_true.mean()),
        "min_ratio": float(total.min() / t_min) if len(total) and t_min > 0 else None,
        "max_ratio": float(total.max() / t_max) if len(total) and t_max > 0 else None,
        "share_out_of_range": float(out_of_range.mean()) if len(total) else None,
        "period_slots": week,
        "period_means": weekly,
        "first_period_mean": first,
        "last_period_mean": last,
        "drift": last / first if first > 0 else None,
        "first_period_vs_twin_mean": first / float(total_true.mean())
        if total_true.mean() > 0
        else None,
    }


def stability_section(
    records: Sequence[MapRecord],
    models: Sequence[EvalModel],
    quick: bool = False,
    progress: bool = True,
    n_slots: int | None = None,
) -> dict[str, Any]:
    """Section 3: long rollouts of every checkpoint model (naive baselines are skipped)."""
    n_slots = n_slots or (QUICK_STABILITY_SLOTS if quick else STABILITY_SLOTS)
    rec = records[0]
    res: dict[str, Any] = {
        "map": rec.name,
        "scenario": scenario_name(rec),
        "slots": n_slots,
        "metrics": {},
    }
    for m in models:
        if m.kind == "naive":
            continue
        pred, bad = long_rollout(m, rec, n_slots, progress)
        res["metrics"][m.name] = stability_stats(pred, rec, bad)
    return res


# ---------------------------------------------------------------------- 4. lead time
def lead_section(
    records: Sequence[MapRecord],
    models: Sequence[EvalModel],
    quick: bool = False,
    progress: bool = True,
    lead_slots: int = LEAD_SLOTS,
    n_origins: int | None = None,
) -> dict[str, Any]:
    """Section 4: MAE by lead time from many forecast origins (see module doc)."""
    warm = max(m.history for m in models)
    n_origins = n_origins or (QUICK_LEAD_ORIGINS if quick else LEAD_ORIGINS)
    if lead_slots < 1 or n_origins < 1:
        raise ValueError(f"lead_slots and n_origins must be >= 1, got {lead_slots}, {n_origins}")
    chunks = {m.name: -(-lead_slots // m.horizon) for m in models}
    span = max(k * m.horizon for m, k in zip(models, chunks.values(), strict=True))
    origins = warm + LEAD_SPACING * np.arange(n_origins)
    need = int(origins[-1]) + span
    by_scen: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        by_scen.setdefault(scenario_name(r), []).append(i)
    res: dict[str, Any] = {
        "lead_slots": lead_slots,
        "origins": [int(o) for o in origins],
        "mae_by_lead": {},
        "overall": {},
        "skipped": {},
    }
    err = {m.name: {} for m in models}  # model -> scenario -> [sum |e| [L], count [L]]
    rows = []  # (record index, origin)
    for scen in _ordered_scenarios(list(by_scen)):
        short = [records[i].name for i in by_scen[scen] if records[i].n_slots < need]
        if short:
            res["skipped"][scen] = f"maps shorter than {need} slots: {short}"
            continue
        rows += [(i, int(o)) for i in by_scen[scen] for o in origins]
    groups: dict[tuple, list[tuple[int, int]]] = {}
    for i, o in rows:
        groups.setdefault(_shape_key(records[i]), []).append((i, o))
    jobs = [g[j : j + LEAD_BATCH] for g in groups.values() for j in range(0, len(g), LEAD_BATCH)]
    bar = tqdm(jobs, desc="lead", unit="batch", disable=not progress)
    for job in bar:
        items = []
        for i, o in job:
            rec = records[i]
            sel = np.arange(o - warm, o + span)
            traffic = rec.traffic[sel].copy()
            traffic[warm:] = 0.0  # nothing after the origin is seen
            items.append(map_item(rec, sel, traffic, rec.actions[sel], rec.active[sel], i))
        batch = collate_maps(items)
        for m in models:
            k = chunks[m.name]
            window = slice_window(batch, warm - m.history, warm + k * m.horizon)
            pred = _run_model(m, window, k)[:, :lead_slots].numpy()
            for j, (i, o) in enumerate(job):
                rec = records[i]
                t = rec.traffic[o : o + lead_slots].astype(np.float64)
                a = rec.active[o : o + lead_slots]
                e = np.where(a, np.abs(pred[j, :, : rec.n_cells] - t), 0.0)
                acc = err[m.name].setdefault(scenario_name(rec), [0.0, 0])
                acc[0] = acc[0] + e.sum(axis=1)
                acc[1] = acc[1] + a.sum(axis=1)
    bar.close()

    def mae(total: np.ndarray, count: np.ndarray) -> list[float | None]:
        return [float(e / c) if c else None for e, c in zip(total, count, strict=True)]

    for m in models:
        for scen, (total, count) in err[m.name].items():
            res["mae_by_lead"].setdefault(scen, {})[m.name] = mae(total, count)
        if err[m.name]:
            parts = list(err[m.name].values())
            res["overall"][m.name] = mae(sum(p[0] for p in parts), sum(p[1] for p in parts))
    return res


def lead_bands(curve: Sequence[float | None], bands=LEAD_BANDS) -> list[float | None]:
    """Mean of a per-lead MAE curve (lead 1 first) over each ``(first, last)`` band."""
    out: list[float | None] = []
    for lo, hi in bands:
        vals = [v for v in curve[lo - 1 : hi] if v is not None]
        out.append(float(np.mean(vals)) if vals and hi <= len(curve) else None)
    return out


# ---------------------------------------------------------------------- driver
def evaluate_models(
    data_root: str | Path,
    model_specs: Sequence[Any],
    split: str = "test",
    quick: bool = False,
    *,
    sections: Sequence[str] = DEFAULT_SECTIONS,
    scenarios: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    seed: int = 0,
    cf_random_plans: int | None = None,
    cf_max_maps: int | None = None,
    stability_slots: int | None = None,
    rollout_max_slots: int | None = None,
    memory: str = "observed",
) -> dict[str, Any]:
    """Run the chosen ``sections`` for every model on ``split`` of ``data_root``; returns the
    JSON-ready results (``config``, ``models``, one entry per section, ``seconds``). MobiWM
    rollouts use the daily ``memory`` mode (``MobiWM.rollout``)."""
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        raise ValueError(f"unknown section(s) {bad}; choose from {list(SECTIONS)}")
    models = resolve_models(model_specs, device, memory=memory)
    records = load_split(data_root, split, list(scenarios) if scenarios else None)
    if not records:
        raise ValueError(f"{data_root}: no maps in split {split!r}")
    results: dict[str, Any] = {
        "config": {
            "data": str(data_root),
            "split": split,
            "quick": quick,
            "sections": list(sections),
            "scenarios": list(scenarios) if scenarios else None,
            "seed": seed,
            "memory": memory,
            "n_maps": len(records),
            "traffic_unit": records[0].metadata.get("traffic_unit", "?"),
        },
        "models": {m.name: m.info() for m in models},
        "seconds": {},
    }
    steps = {
        "rollout": lambda: rollout_section(records, models, quick, progress, rollout_max_slots),
        "counterfactual": lambda: counterfactual_section(
            records, models, quick, progress, cf_random_plans, max_maps=cf_max_maps, seed=seed
        ),
        "stability": lambda: stability_section(records, models, quick, progress, stability_slots),
        "lead": lambda: lead_section(records, models, quick, progress),
    }
    for name in SECTIONS:
        if name in sections:
            t = time.perf_counter()
            results[name] = steps[name]()
            results["seconds"][name] = round(time.perf_counter() - t, 2)
    return results


# ---------------------------------------------------------------------- reports
def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if abs(v) >= 10**digits:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _ranked(values: list[float | None], lower_better: bool = True) -> list[str]:
    """Format a column, **bold** best and <u>underlined</u> second best."""
    ok = [
        (v if lower_better else -v, i)
        for i, v in enumerate(values)
        if v is not None and math.isfinite(v)
    ]
    order = [i for _, i in sorted(ok)]
    out = [_fmt(v) for v in values]
    if len(order) > 1:
        out[order[0]] = f"**{out[order[0]]}**"
        if len(order) > 2:
            out[order[1]] = f"<u>{out[order[1]]}</u>"
    return out


def to_markdown(results: dict[str, Any]) -> str:
    """The results as Markdown tables."""
    cfg = results["config"]
    unit = cfg.get("traffic_unit", "?")
    md = [
        "# World-model evaluation",
        "",
        f"data `{cfg['data']}`, split `{cfg['split']}`, {cfg['n_maps']} maps, "
        f"quick={cfg['quick']}, seed {cfg['seed']}; traffic in {unit} per slot.",
        "",
        _table(
            ["Model", "kind", "H", "P", "parameters", "spec"],
            [
                [
                    n,
                    i["kind"],
                    str(i["history"]),
                    str(i["horizon"]),
                    f"{i['n_parameters']:,}",
                    f"`{i['spec']}`",
                ]
                for n, i in results["models"].items()
            ],
        ),
    ]
    names = list(results["models"])
    md += _summary(results, names)
    ro = results.get("rollout")
    if ro:
        scen = list(ro["metrics"])
        md += [
            "",
            "## 1. Long-horizon rollout (Table 1 layout)",
            "",
            f"Warm start on the first {ro['warm_start']} true slots, then autoregressive with "
            "the true actions; metrics over active cells pooled over each scenario's maps "
            f"(MAE in {unit}). Predicted slots: "
            + ", ".join(f"{s} {n}" for s, n in ro["slots"].items())
            + ". **bold** best, <u>underlined</u> second.",
            "",
        ]
        header = ["Model"] + [f"{s} {k}" for s in scen for k in ("JSD", "MAE", "NRMSE")]
        cols = [
            _ranked([ro["metrics"][s][n][k] for n in names])
            for s in scen
            for k in ("jsd", "mae", "nrmse")
        ]
        md.append(_table(header, [[n] + [c[i] for c in cols] for i, n in enumerate(names)]))
        if ro["improvement_jsd_pct"]:
            md += ["", "JSD improvement over the best baseline (%, positive = better):", ""]
            rows = []
            for n, per in ro["improvement_jsd_pct"].items():
                rows.append(
                    [n]
                    + [
                        "–"
                        if per[s] is None or per[s]["pct"] is None
                        else f"{per[s]['pct']:+.1f} (vs {per[s]['best_baseline']})"
                        for s in scen
                    ]
                )
            md.append(_table(["Model"] + scen, rows))
        jk = ro.get("improvement_jsd_jackknife")
        if jk and any(jk.values()):
            md += [
                "",
                "How much that improvement depends on the maps drawn: leave-one-map-out "
                "jackknife, 90% interval (point ± 1.645·se) and, in brackets, the lowest value "
                f"with one map left out (%; the target is {JSD_TARGET_PCT:g}):",
                "",
            ]
            rows = [
                [n]
                + [
                    f"{per[s]['lo90']:+.1f} … {per[s]['hi90']:+.1f} "
                    f"[{per[s]['min_leave_one_out']:+.1f}]"
                    if s in per
                    else "–"
                    for s in scen
                ]
                for n, per in jk.items()
            ]
            md.append(_table(["Model"] + scen, rows))
        per_map = ro.get("jsd_per_map")
        if per_map:
            md += [
                "",
                "JSD of each map on its own (its own bins), mean over the scenario's maps (the "
                "table above pools the maps, where errors of opposite sign in two maps cancel):",
                "",
            ]
            cols = [_ranked([float(np.mean(per_map[s][n])) for n in names]) for s in scen]
            md.append(
                _table(["Model"] + scen, [[n] + [c[i] for c in cols] for i, n in enumerate(names)])
            )
        if ro["overall"]:
            md += ["", "All scenarios pooled:", ""]
            keys = ("jsd", "mae", "rmse", "nrmse")
            cols = [_ranked([ro["overall"][n][k] for n in names]) for k in keys]
            md.append(
                _table(
                    ["Model", "JSD", "MAE", "RMSE", "NRMSE"],
                    [[n] + [c[i] for c in cols] for i, n in enumerate(names)],
                )
            )
        if all("bias_pct" in ro["metrics"][s][n] for s in scen for n in names):
            md += [
                "",
                "Total-traffic bias (%, + = over-predicts; `metrics.bias_pct`), a level error "
                "that pooling maps does not cancel:",
                "",
            ]
            rows = [
                [n] + [f"{ro['metrics'][s][n]['bias_pct']:+.2f}" for s in scen]
                + [f"{ro['overall'][n]['bias_pct']:+.2f}"]
                for n in names
            ]  # fmt: skip
            md.append(_table(["Model", *scen, "pooled"], rows))
        if ro["mae_by_day"]:
            n_days = max(len(v) for v in ro["mae_by_day"].values())
            md += ["", f"MAE by rollout day ({unit}, all scenarios):", ""]
            rows = [[n] + [_fmt(v) for v in ro["mae_by_day"][n]] for n in names]
            md.append(_table(["Model"] + [f"day {d + 1}" for d in range(n_days)], rows))
        for s, why in ro.get("skipped", {}).items():
            md.append(f"\n*{s} skipped: {why}.*")
    cf = results.get("counterfactual")
    if cf:
        tw = cf["twin"]
        md += [
            "",
            "## 2. Counterfactual fidelity",
            "",
            f"{len(cf['maps'])} maps, plans held for {cf['horizon']} slots from a weekday "
            f"08:00 ({cf['n_random_plans']} random plans per map). Per-cell delta = mean traffic "
            "under the plan − under no change; R² (`delta_r2`) and sign agreement (tol = 1 % of "
            "the mean cell traffic) pooled over cells and maps. `all`: cells active under "
            "either plan; `on`: cells active under the plan (site_off: the neighbours).",
            "",
            "Twin effect size, mean |Δ| per cell ("
            + ", ".join(f"{k} {_fmt(v)}" for k, v in tw["mean_abs_delta"].items())
            + f") vs mean cell traffic {_fmt(tw['mean_cell_traffic'])} {unit}; no-change "
            f"replicate max |Δ| = {_fmt(tw['replicate_max_abs_delta'])}.",
            "",
        ]
        header = ["Model"]
        keys = []
        for kind in PLAN_KINDS:
            for sel in ("all", "on"):
                if kind != "site_off" and sel == "on":
                    continue
                suffix = "" if sel == "all" else " (on)"
                header += [f"{kind} R²{suffix}", f"{kind} sign{suffix}"]
                keys += [(kind, sel, "r2"), (kind, sel, "sign")]

        def val(n: str, kind: str, sel: str, k: str) -> float | None:
            block = cf["metrics"][n].get(kind)
            return None if not block or not block.get(sel) else block[sel][k]

        cols = [_ranked([val(n, *key) for n in names], lower_better=False) for key in keys]
        md.append(_table(header, [[n] + [c[i] for c in cols] for i, n in enumerate(names)]))
        rer = [v["rerun_max_abs_diff"] for v in cf["maps"].values()]
        if rer:
            md.append(f"\nTwin re-run vs dataset before t0: max |diff| {_fmt(max(rer))} {unit}.")
    st = results.get("stability")
    if st:
        md += [
            "",
            "## 3. Rollout stability",
            "",
            f"{st['slots']}-slot rollout on `{st['map']}` ({st['scenario']}); totals are the "
            "map's traffic per slot, ratios relative to the twin's min / max total over the "
            "map's week; drift = mean total of the last period / first period.",
            "",
        ]
        rows = []
        for n, s in st["metrics"].items():
            rows.append(
                [
                    n,
                    _fmt(s["any_nan"]),
                    _fmt(s["any_negative"]),
                    _fmt(s["min_ratio"]),
                    _fmt(s["max_ratio"]),
                    _fmt(s["share_out_of_range"]),
                    _fmt(s["drift"]),
                    _fmt(s["first_period_vs_twin_mean"]),
                ]
            )
        md.append(
            _table(
                [
                    "Model",
                    "NaN",
                    "negative",
                    "min / twin min",
                    "max / twin max",
                    "share outside [0.5 min, 1.5 max]",
                    "drift last/first",
                    "first period / twin mean",
                ],
                rows,
            )
        )
        if not rows:
            md.append("\n*No checkpoint model: naive baselines are stable by construction.*")
    ld = results.get("lead")
    if ld:
        bands = [b for b in LEAD_BANDS if b[1] <= ld["lead_slots"]]
        md += [
            "",
            "## 4. Error by lead time",
            "",
            f"MAE ({unit}) by slots since the last true slot, from {len(ld['origins'])} "
            "forecast origins per map (every hour of a day), pooled over maps and scenarios; "
            "the first band is one chunk from the true history (teacher forcing).",
            "",
        ]
        shown = [n for n in names if n in ld["overall"]]
        if shown:
            curves = [lead_bands(ld["overall"][n], bands) for n in shown]
            cols = [_ranked(list(c)) for c in zip(*curves, strict=True)]
            md.append(
                _table(
                    ["Model"] + [f"lead {lo}–{hi}" for lo, hi in bands],
                    [[n] + [c[i] for c in cols] for i, n in enumerate(shown)],
                )
            )
        for s, why in ld.get("skipped", {}).items():
            md.append(f"\n*{s} skipped: {why}.*")
    secs = results.get("seconds", {})
    if secs:
        md += ["", "Wall time: " + ", ".join(f"{k} {v:.1f} s" for k, v in secs.items()) + "."]
    return "\n".join(md) + "\n"


def _summary(results: dict[str, Any], names: list[str]) -> list[str]:
    """One line per model (ablation / size tables): parameters, pooled rollout JSD and MAE,
    counterfactual R² of the random, overpower and site-off-neighbour plans."""
    ro, cf = results.get("rollout") or {}, results.get("counterfactual") or {}
    overall = ro.get("overall") or {}
    if not overall and not cf:
        return []

    def r2(n: str, kind: str, sel: str) -> float | None:
        block = (cf.get("metrics") or {}).get(n, {}).get(kind)
        return None if not block or not block.get(sel) else block[sel]["r2"]

    cols = [
        [f"{results['models'][n]['n_parameters']:,}" for n in names],
        _ranked([(overall.get(n) or {}).get("jsd") for n in names]),
        _ranked([(overall.get(n) or {}).get("mae") for n in names]),
        _ranked([r2(n, "random", "all") for n in names], lower_better=False),
        _ranked([r2(n, "overpower", "all") for n in names], lower_better=False),
        _ranked([r2(n, "site_off", "on") for n in names], lower_better=False),
    ]
    header = ["Model", "parameters", "pooled JSD", "pooled MAE", "random R²", "overpower R²"]
    return [
        "",
        "## Summary",
        "",
        "Rollout metrics pooled over all scenarios (section 1); counterfactual R² of the "
        "per-cell deltas (section 2; site-off: the neighbours of the switched-off site).",
        "",
        _table(
            header + ["site-off R² (on)"],
            [[n] + [c[i] for c in cols] for i, n in enumerate(names)],
        ),
    ]


def _clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars → Python, non-finite floats → None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_results(out: str | Path, results: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``results.json`` and ``results.md`` into ``out`` atomically; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    j, m = out / "results.json", out / "results.md"
    _write_text_atomic(j, json.dumps(_clean(results), indent=2, allow_nan=False) + "\n")
    _write_text_atomic(m, to_markdown(results))
    return j, m


# ---------------------------------------------------------------------- CLI
@dataclass
class EvalConfig:
    """One evaluation run."""

    data: str = arg("data/default", "dataset folder (with manifest.json)")
    models: tuple[str, ...] = arg(
        (), "checkpoint folders (PATH or NAME=PATH) and/or baselines: persistence seasonal"
    )
    out: str = arg("runs/eval", "output folder for results.json and results.md")
    split: str = arg("test", "dataset split: train | val | test")
    quick: bool = arg(False, "short rollouts, 1 map per scenario for counterfactuals")
    sections: tuple[str, ...] = arg(
        DEFAULT_SECTIONS, f"sections to run: {' '.join(SECTIONS)} (lead: opt-in)"
    )
    scenarios: tuple[str, ...] = arg((), "only these scenarios (empty = all)")
    seed: int = arg(0, "seed of the counterfactual plans")
    cf_random_plans: int = arg(
        0, f"random plans per map (0 = {CF_RANDOM_PLANS}, quick {CF_QUICK_RANDOM_PLANS})"
    )
    stability_slots: int = arg(
        0, f"stability rollout length (0 = {STABILITY_SLOTS}, quick {QUICK_STABILITY_SLOTS})"
    )
    device: str = arg("cpu", "torch device of the models")
    memory: str = arg(
        "observed",
        "MobiWM's daily memory past the warm start: observed (the warm start's last day) | "
        "predicted (its own predictions a day earlier)",
    )
    threads: int = arg(0, "torch CPU threads (0 = torch default)")
    progress: bool = arg(True, "show progress bars")

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("--models: give at least one checkpoint folder or baseline name")
        bad = [s for s in self.sections if s not in SECTIONS]
        if bad:
            raise ValueError(f"unknown --sections {bad}; choose from {list(SECTIONS)}")
        if self.memory not in MEMORY_MODES:
            raise ValueError(f"--memory must be one of {list(MEMORY_MODES)}, got {self.memory!r}")
        for name in ("cf_random_plans", "stability_slots", "threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0")


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(EvalConfig, argv, description=__doc__ or "")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t = time.perf_counter()
    results = evaluate_models(
        cfg.data,
        list(cfg.models),
        cfg.split,
        cfg.quick,
        sections=cfg.sections,
        scenarios=cfg.scenarios or None,
        device=cfg.device,
        progress=cfg.progress,
        seed=cfg.seed,
        cf_random_plans=cfg.cf_random_plans or None,
        stability_slots=cfg.stability_slots or None,
        memory=cfg.memory,
    )
    results["seconds"]["total"] = round(time.perf_counter() - t, 2)
    j, m = write_results(cfg.out, results)
    print(to_markdown(results))
    print(f"wrote {j} and {m}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
