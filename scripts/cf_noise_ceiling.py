"""How much of a counterfactual delta can a forecaster know? A ceiling for ``delta_r2``.

    python scripts/cf_noise_ceiling.py --data data/test12-realistic --maps 4 --draws 4

For the evaluation's counterfactual plans (same maps, start rows and plans as
``worldmodel.evaluate``'s counterfactual section with seed 0), the twin is re-run with
``--draws`` different draws of the *sessions* alone (``DemandConfig.session_seed``: the same
places, AR noise and day levels, other bursts). The per-cell delta of draw 0 (the map's own)
is then predicted by the mean delta of the other draws, which is what a perfect model of
*expected* demand would predict. ``--vary all`` draws every random part of the demand instead
(``noise_seed``: also where the heavy-tailed blocks lie), i.e. a model that knows the map's
layout and profiles but not where its demand sits. Its R² (pooled as the evaluation pools it: random and
overpower over the cells active under either plan, site-off over the neighbours) bounds the
counterfactual R² any model can reach on that twin.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from worldmodel import metrics
from worldmodel.data.dataset import load_split
from worldmodel.data.generate import scenario_of
from worldmodel.evaluate import (
    CF_HORIZON,
    CF_RANDOM_PLANS,
    PLAN_KINDS,
    make_plans,
    pick_t0,
    scenario_name,
    twin_counterfactual,
)
from worldmodel.twin.demand import DemandModel, demand_config


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="dataset folder (test split)")
    ap.add_argument("--maps", type=int, default=4, help="maps per scenario")
    ap.add_argument("--draws", type=int, default=4, help="session draws per map (>= 2)")
    ap.add_argument("--warm", type=int, default=104, help="warm-up rows before t0 (as the models)")
    ap.add_argument(
        "--vary",
        choices=("sessions", "all"),
        default="sessions",
        help="redraw the sessions only, or every random part of the demand",
    )
    args = ap.parse_args(argv)
    if args.draws < 2 or args.maps < 1:
        ap.error("--draws must be >= 2 and --maps >= 1")
    records = load_split(args.data, "test")
    chosen, count = [], {}
    for rec in records:
        s = scenario_name(rec)
        if count.get(s, 0) < args.maps:
            count[s] = count.get(s, 0) + 1
            chosen.append(rec)
    pooled = {k: ([], []) for k in PLAN_KINDS}
    for rec in tqdm(chosen, desc="maps", unit="map"):
        sc = scenario_of(rec)
        t0 = pick_t0(rec, args.warm, CF_HORIZON)
        rng = np.random.default_rng([0, int(rec.metadata["seed"])])
        plans = make_plans(rec, sc, t0, CF_RANDOM_PLANS, rng)
        deltas = []
        for d in range(args.draws):
            key = "session_seed" if args.vary == "sessions" else "noise_seed"
            cfg = dataclasses.replace(demand_config(sc.demand), **{key: d})
            _, after = twin_counterfactual(
                rec, plans, t0, CF_HORIZON, sc, demand=DemandModel(sc, config=cfg)
            )
            mean = after.mean(axis=1).astype(np.float64)
            deltas.append(mean - mean[0])
        deltas = np.stack(deltas)  # [D, E, N]
        expected = deltas[1:].mean(axis=0)
        a0 = plans[0].active
        for i, plan in enumerate(plans):
            if plan.kind not in PLAN_KINDS:
                continue
            sel = plan.active if plan.kind == "site_off" else (plan.active | a0)
            pooled[plan.kind][0].append(expected[i][sel])
            pooled[plan.kind][1].append(deltas[0, i][sel])
    print(f"{len(chosen)} maps, {args.draws} draws each, varying {args.vary}")
    print("| plan | R² of the expected delta (ceiling) | cells |")
    print("|---|---:|---:|")
    for kind, (pred, true) in pooled.items():
        p, t = np.concatenate(pred), np.concatenate(true)
        print(f"| {kind} | {metrics.delta_r2(p, t):.3f} | {t.size} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
