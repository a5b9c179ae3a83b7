"""Section 3, rollout stability: one long autoregressive rollout per checkpoint model.

``stability_slots`` (10,000; quick 2,016) slots on the first map from a true warm start: true
actions while the map lasts, then held; time continues and the OD wraps (row ``s mod T_map``).
Reports NaN / negative values, the map's total traffic per slot against the twin's range over
the map (ratios), the share of slots outside ``[0.5·min, 1.5·max]``, weekly (672-slot) means
and the drift (last week / first week).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from worldmodel.data.dataset import collate_maps, scenario_name
from worldmodel.data.format import MapRecord
from worldmodel.evaluate.batches import _held, _run_model, _warm_memory, map_item
from worldmodel.evaluate.config import SectionSettings
from worldmodel.evaluate.models import EvalModel
from worldmodel.twin.scenario import SLOTS_PER_DAY, SLOTS_PER_WEEK

STABILITY_SEGMENT = 2 * SLOTS_PER_DAY  # slots per rollout call of the stability run
"""Read through the package (``worldmodel.evaluate.STABILITY_SEGMENT``) at call time, so that
patching it there changes the segments (``_segment_slots``)."""


def _segment_slots() -> int:
    """``STABILITY_SEGMENT`` as the ``worldmodel.evaluate`` package holds it now."""
    import worldmodel.evaluate as package

    return package.STABILITY_SEGMENT


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
    seg_chunks = max(1, _segment_slots() // p)
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
    settings = SectionSettings.resolve(quick, stability_slots=n_slots)
    return run_stability(records, models, settings, progress)


def run_stability(
    records: Sequence[MapRecord],
    models: Sequence[EvalModel],
    settings: SectionSettings,
    progress: bool = True,
) -> dict[str, Any]:
    """Section 3 with resolved ``settings`` (``stability_slots``)."""
    n_slots = settings.stability_slots
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
