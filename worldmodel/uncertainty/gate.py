"""The out-of-distribution gate on plans: support distance of counterfactual plans per map.

A plan is scored by ``ActionSupport.score``: how far its parameters leave the training data's
range, and its changes from the last observed slot the training data's largest daily changes, in
units of those changes (0 = inside). The gate's threshold is the largest score of random in-range
plans on validation maps; ``plan_scores`` gives the scores of every plan kind of the
counterfactual section (``none``, ``random``, ``overpower``, ``site_off``) on any maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from worldmodel.data.format import MapRecord
from worldmodel.model.uncertainty import ActionSupport


def plan_scores(
    support: ActionSupport,
    records: Sequence[MapRecord],
    n_random: int,
    seed: int,
    warm: int = 0,
    horizon: int = 24,
) -> dict[str, list[float]]:
    """Support distance of the counterfactual section's plans on each map → ``{kind:
    [scores]}``; each plan's reference is the map's parameters one slot before its start."""
    from worldmodel.data.generate import scenario_of
    from worldmodel.evaluate.counterfactual import make_plans, pick_t0

    rng = np.random.default_rng(seed)
    out: dict[str, list[float]] = {}
    for rec in records:
        t0 = pick_t0(rec, max(warm, 1), horizon)
        sc = scenario_of(rec)
        ref = torch.as_tensor(rec.actions[t0 - 1], dtype=torch.float64)[None]
        for plan in make_plans(rec, sc, t0, n_random, rng):
            act = torch.as_tensor(plan.actions, dtype=torch.float64)[None, None]
            on = torch.as_tensor(plan.active)[None, None]
            s = float(support.score(act, ref, on)[0])
            out.setdefault(plan.kind, []).append(s)
    return out


def random_plan_scores(
    support: ActionSupport, records: Sequence[MapRecord], n_random: int, seed: int
) -> np.ndarray:
    """Scores of ``n_random`` random in-range plans per map (the gate's negatives)."""
    scores = plan_scores(support, records, n_random, seed).get("random", [])
    if not scores:
        raise ValueError("no random plan could be made on these maps")
    return np.asarray(scores)
