"""Compile an ``Intent`` into what the env and the shield run on.

``compile_intent(intent, scenario)`` → ``CompiledIntent``:

* ``env_kwargs``: the env's reward — the balanced target, ``λ_Δ = 1`` and a shortfall weight
  ``λ_U`` of 2 (``balance_load``, ``cap_load``: "balancing" by shedding users never pays) or 4
  (``restore_coverage``: serving the failed site's users is the point);
* ``shield``: a ``ShieldConfig`` — the scope (for ``restore_coverage``: the failed site's
  neighbours within ``NEIGHBOUR_RADIUS`` × the median nearest-site distance, unless the intent
  names a scope), protected cells (and sites' cells), frozen parameters, per-step change limits,
  at most k cells per step, the time window as a week mask, the unserved and load constraints
  (``cap_load``: the cap is the shield's load limit), and the world model of its check;
* ``scope`` / ``protected`` / ``cap`` masks ``[N]`` for reports.

What an intent cannot yet say to the env: a per-cell mix of targets (``cap_load`` keeps the
balanced target everywhere and enforces the cap through the shield only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mobiwm_env.intent import Intent
from mobiwm_env.wrappers import ShieldConfig
from worldmodel.twin.scenario import PARAM_NAMES, Scenario

NEIGHBOUR_RADIUS = 1.6
"""Sites within this many median nearest-site distances of a failed site restore its area."""
LAMBDA_UNSERVED = {"balance_load": 2.0, "cap_load": 2.0, "restore_coverage": 4.0}


@dataclass(frozen=True)
class CompiledIntent:
    """An intent compiled for one scenario (see the module doc)."""

    intent: Intent
    env_kwargs: dict[str, Any]
    shield: ShieldConfig
    scope: np.ndarray  # [N] bool: cells the intent may move
    protected: np.ndarray  # [N] bool
    cap: np.ndarray  # [N] bool: cells whose load is capped (cap_load)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description (what ``agents/plan.py`` prints)."""
        s = self.shield
        return {
            "objective": self.intent.objective,
            "cells_in_scope": int(self.scope.sum()),
            "protected_cells": np.flatnonzero(self.protected).tolist(),
            "frozen_parameters": list(s.frozen),
            "max_step": dict(s.max_step),
            "max_cells_per_step": s.max_cells,
            "time_window": None
            if self.intent.window is None
            else self.intent.window.__dict__ | {"days": list(self.intent.window.days)},
            "max_unserved_pct": s.max_unserved_pct,
            "max_load_ratio": s.max_load_ratio,
            "env_kwargs": self.env_kwargs,
        }


def outage_neighbours(
    scenario: Scenario, site: int, radius: float = NEIGHBOUR_RADIUS
) -> np.ndarray:
    """``[N]`` bool: cells of the sites within ``radius`` × the median nearest-site distance of
    ``site`` (not the site's own cells)."""
    cell_site = np.asarray(scenario.cell_site)
    xy = np.asarray(scenario.cell_xy_m, dtype=np.float64)
    sites = np.unique(cell_site)
    centre = np.stack([xy[cell_site == s].mean(axis=0) for s in sites])
    d = np.linalg.norm(centre[:, None] - centre[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    spacing = float(np.median(d.min(axis=1)))
    i = int(np.flatnonzero(sites == site)[0])
    near = sites[(d[i] <= radius * spacing)]
    return np.isin(cell_site, near)


def compile_intent(
    intent: Intent, scenario: Scenario, checkpoint: str | None = "fast"
) -> CompiledIntent:
    """Check ``intent`` against ``scenario`` and compile it (see the module doc);
    ``checkpoint``: the world model of the shield's check (``None``: hard limits only)."""
    intent.check(scenario)
    n = scenario.n_cells
    protected = intent.protected_mask(scenario)
    scope = intent.scope_mask(scenario)
    if intent.objective == "restore_coverage" and intent.scope.whole_map:
        scope = outage_neighbours(scenario, int(intent.outage_site))
    scope = scope & ~protected
    cap = intent.cap_mask(scenario) if intent.objective == "cap_load" else np.zeros(n, bool)
    c = intent.constraints
    load_cap = c.max_load_ratio
    if intent.objective == "cap_load":
        ratio = float(intent.cap_load_ratio)
        load_cap = ratio if load_cap is None else min(load_cap, ratio)
    frozen = tuple(p for p, f in zip(PARAM_NAMES, intent.frozen_params(), strict=True) if f)
    window = intent.window
    shield = ShieldConfig(
        scope=tuple(int(i) for i in np.flatnonzero(scope)),
        protected=tuple(int(i) for i in np.flatnonzero(protected)),
        frozen=frozen,
        max_step=dict(intent.limits.max_step),
        max_cells=intent.limits.max_cells_per_step,
        week_mask=None if window is None else tuple(bool(x) for x in window.week_mask()),
        checkpoint=checkpoint,
        max_unserved_pct=c.max_unserved_pct,
        max_load_ratio=load_cap,
    )
    env_kwargs = {"lambda_delta": 1.0, "lambda_unserved": LAMBDA_UNSERVED[intent.objective]}
    return CompiledIntent(intent, env_kwargs, shield, scope, protected, cap)
