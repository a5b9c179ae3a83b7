"""Section 2, counterfactual fidelity of every model against the twin.

Per map the twin re-runs the true actions up to ``t0`` (first weekday 08:00 after the warm
start) in one copy per plan (``none``, a replicate, ``random``, ``overpower``, ``site_off``), with
shared fading draws, and holds each plan for ``horizon`` slots. Per cell, delta = mean traffic
over the horizon under the plan − under ``none``; ``delta_r2`` and sign agreement (tol = 1 % of
the map's mean cell traffic) pooled over cells and maps per plan kind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from worldmodel import metrics
from worldmodel.data.dataset import collate_maps, scenario_name
from worldmodel.data.format import MapRecord
from worldmodel.evaluate.batches import _run_model, map_item
from worldmodel.evaluate.config import CF_HORIZON, SectionSettings
from worldmodel.evaluate.models import EvalModel
from worldmodel.twin.scenario import AZIMUTH, POWER

CF_START_SLOT_OF_DAY = 32  # 08:00
CF_TOL_SHARE = 0.01  # sign-agreement tolerance: 1 % of the mean cell traffic
RANDOM_FRACTION = (0.2, 0.4)
RANDOM_STEP = np.array([3.0, 30.0, 3.0, 3.0])  # ± power dB, azimuth °, mech / elec tilt °
OVERPOWER_DB = 3.0
OVERPOWER_AZIMUTH_DEG = 60.0
OVERPOWER_CELLS = 3
PLAN_KINDS = ("random", "overpower", "site_off")


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
    settings = SectionSettings.resolve(
        quick, seed=seed, cf_random_plans=n_random, cf_horizon=horizon, cf_max_maps=max_maps
    )
    return run_counterfactual(records, models, settings, progress)


def run_counterfactual(
    records: Sequence[MapRecord],
    models: Sequence[EvalModel],
    settings: SectionSettings,
    progress: bool = True,
) -> dict[str, Any]:
    """Section 2 with resolved ``settings`` (``quick``: one map per scenario, ``seed``,
    ``cf_random_plans``, ``cf_horizon``, ``cf_max_maps``)."""
    from worldmodel.data.generate import scenario_of

    quick, seed, n_random = settings.quick, settings.seed, settings.cf_random_plans
    horizon, max_maps = settings.cf_horizon, settings.cf_max_maps
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
