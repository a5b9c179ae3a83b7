"""Section 1, long-horizon rollout (paper §5.2, Table 1 layout).

Every model warm-starts on the true traffic of the first ``W = max_i H_i`` slots of every map and
rolls out autoregressively with the true actions; JSD, MAE, RMSE, NRMSE (traffic unit of the
dataset) over active cells pooled per scenario, MobiWM's JSD improvement over the best baseline
and over the best learned baseline (%, each with a leave-one-map-out jackknife) and the MAE per
rollout day (96 slots).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from worldmodel import metrics
from worldmodel.baselines import slice_window
from worldmodel.data.dataset import collate_maps, scenario_name
from worldmodel.data.format import MapRecord
from worldmodel.evaluate.batches import _group_by_shape, _run_model, map_item
from worldmodel.evaluate.config import SectionSettings, _ordered_scenarios
from worldmodel.evaluate.models import EvalModel
from worldmodel.twin.scenario import SLOTS_PER_DAY

JSD_TARGET_PCT = 25.0  # issue target: JSD this much below the best baseline per scenario
JSD_Z90 = 1.6449  # two-sided 90% normal quantile of the jackknife interval


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


def rollout_section(
    records: Sequence[MapRecord],
    models: Sequence[EvalModel],
    quick: bool = False,
    progress: bool = True,
    max_slots: int | None = None,
) -> dict[str, Any]:
    """Section 1: long-horizon rollout metrics per scenario and model (see module doc)."""
    settings = SectionSettings.resolve(quick, rollout_max_slots=max_slots)
    return run_rollout(records, models, settings, progress)


def run_rollout(
    records: Sequence[MapRecord],
    models: Sequence[EvalModel],
    settings: SectionSettings,
    progress: bool = True,
) -> dict[str, Any]:
    """Section 1 with resolved ``settings`` (``rollout_max_slots``)."""
    warm = max(m.history for m in models)
    by_scen: dict[str, list[MapRecord]] = {}
    for r in records:
        by_scen.setdefault(scenario_name(r), []).append(r)
    scenarios = _ordered_scenarios(list(by_scen))
    cap = settings.rollout_max_slots
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
    jack_learned: dict[str, dict[str, dict[str, float]]] = {}  # the same, learned baselines
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
        for learned, store in ((False, jack), (True, jack_learned)):
            point = _improvement({scen: res["metrics"][scen]}, models, learned)
            point = {n: (row[scen] or {}).get("pct") for n, row in point.items()}
            store[scen] = _jackknife_improvement(preds, true, mask, models, point, learned)
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
    res["improvement_jsd_learned_pct"] = _improvement(res["metrics"], models, True)
    res["improvement_jsd_learned_jackknife"] = {
        name: {scen: j[name] for scen, j in jack_learned.items() if name in j}
        for name in res["improvement_jsd_learned_pct"]
    }
    return res


def _ours_and_baselines(
    models: Sequence[EvalModel], learned_only: bool = False
) -> tuple[list[str], list[str]]:
    """Names of the MobiWM models and of the baselines they are scored against (every other
    row, or with ``learned_only`` the trained ones: not the naive copies)."""
    skip = ("mobiwm", "naive") if learned_only else ("mobiwm",)
    return [m.name for m in models if m.kind == "mobiwm"], [
        m.name for m in models if m.kind not in skip
    ]


def _jackknife_improvement(
    preds: dict[str, list[np.ndarray]],
    true: list[np.ndarray],
    mask: list[np.ndarray],
    models: Sequence[EvalModel],
    point: dict[str, float],
    learned_only: bool = False,
) -> dict[str, dict[str, float]]:
    """Leave-one-map-out jackknife of each MobiWM model's pooled-JSD improvement over the best
    baseline (picked again in every replicate; ``metrics.leave_one_map_out_jsd``): the standard
    error ``se = sqrt((n−1)/n · Σ (θ_i − θ̄)²)``, the 90% interval ``point ± 1.645·se`` and the
    lowest leave-one-out value (%). Empty with fewer than two maps. ``learned_only``: against
    the best learned baseline."""
    ours, base = _ours_and_baselines(models, learned_only)
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


def _improvement(
    table: dict[str, dict[str, dict[str, float]]],
    models: Sequence[EvalModel],
    learned_only: bool = False,
):
    """``{mobiwm model: {scenario: 100·(best baseline JSD − model JSD) / best baseline JSD}}``;
    ``learned_only``: the best learned baseline (empty when there is none)."""
    ours, base = _ours_and_baselines(models, learned_only)
    if learned_only and not base:
        return {}
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
