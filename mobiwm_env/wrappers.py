"""``SafetyShield``: guardrails around any policy of a load-balancing vector env.

Every proposed action goes through two stages before the env applies it:

1. **Hard limits** (always): cells outside the ``scope`` and ``protected`` cells do not move,
   ``frozen`` parameters do not move anywhere, each parameter's change is capped at
   ``max_step`` (physical units per step; the env's own limit and bounds still apply), at most
   ``max_cells`` cells change per step (the ones with the largest normalised change), and
   nothing moves in a step that starts outside ``week_mask`` (the intent's time window).
2. **Model check** (with a world-model ``checkpoint``): the limited action and the same action
   scaled by each ``line_search`` fraction are simulated one env step in the world model from an
   exact snapshot of every sub-env (``mobiwm_env.state.EnvState``), beside a **reference**: the
   sub-env's parameters at its episode's start held (what the no-op policy would have). The
   offered demand is the same for both, so the traffic a candidate *sheds* is the reference's
   predicted carried traffic minus its own (MB per slot, floored at 0). A candidate is safe when
   it sheds at most ``unserved_tolerance`` × the no-op's unserved traffic (the env's warm-up share
   of the demand left unserved, ``LoadBalanceCore.served_ratio``) + ``unserved_margin_mb`` (or at
   most ``max_unserved_pct`` % of the demand, if that is looser), no cell's load ratio exceeds
   ``max(max_load_ratio, the reference's largest)``, and (with a quantile head) its
   out-of-distribution score is at most the gate's threshold. The largest safe fraction is
   applied; if none is safe, the action restricted to the cells whose own change is predicted
   safe (``per_cell``: each cell's change is also simulated alone, and cells are kept, the least
   shedding first, while the summed estimate stays within the allowance); then the same
   fractions of the action's *expanding* part (power up, tilts
   up: the changes that grow a cell's coverage, so neighbours take over users instead of losing
   them) are tried; then the shield **reverts**: it moves every cell back toward the reference
   parameters by at most one step (line search again), or holds still.

   Comparing each candidate with the reference *in the same model* cancels the model's common
   errors (its bias, and the slot-to-slot noise of the offered demand, which the model does not
   predict); the predictive spread of a cell's traffic is common to both too, so it is not
   added as a margin — the model's uncertainty enters through the gate.

Each step's ``info`` gains ``shield_fraction [E]`` (the share of the limited action applied: 1 =
unchanged, 0 = held still or reverted), ``shield_limited [E]`` (cell-parameters the hard limits
changed), ``shield_reverted [E]`` and ``shield_predicted_shed [E]`` (MB per slot the applied
candidate is predicted to shed against the reference); ``SafetyShield.counts`` sums the interventions over the wrapper's life.
Rejections are what ``agents`` log to TensorBoard (``shield/*``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium.vector import VectorWrapper

from mobiwm_env.config import resolve_checkpoint
from mobiwm_env.core import LoadBalanceCore
from mobiwm_env.state import EnvState, find_core
from worldmodel.twin.scenario import AZIMUTH, PARAM_NAMES, SLOTS_PER_WEEK


@dataclass(frozen=True)
class ShieldConfig:
    """The shield's limits and its model check (see the module doc)."""

    scope: tuple[int, ...] | None = None  # cells allowed to move (None: every cell)
    protected: tuple[int, ...] = ()  # cells that never move
    frozen: tuple[str, ...] = ()  # parameters (PARAM_NAMES) that never move
    max_step: dict[str, float] = dataclasses.field(default_factory=dict)  # physical / step
    max_cells: int | None = None  # cells changed per step at most
    week_mask: tuple[bool, ...] | None = None  # [672] slots of the week actions may be taken
    checkpoint: str | None = "fast"  # world model of the check (None: hard limits only)
    line_search: tuple[float, ...] = (1.0, 0.5, 0.25)  # fractions of the action tried
    unserved_tolerance: float = 0.1  # relative to the reference's predicted shortfall
    unserved_margin_mb: float = 1.0  # MB per slot on top of it
    max_unserved_pct: float | None = None  # absolute allowance: % of the offered demand
    max_load_ratio: float | None = None  # no cell above (unless the reference is)
    use_gate: bool = True  # reject candidates the out-of-distribution gate flags
    per_cell: bool = True  # also try the action on the cells predicted safe one by one

    def __post_init__(self) -> None:
        unknown = sorted(set(self.frozen) - set(PARAM_NAMES))
        if unknown:
            raise ValueError(f"frozen: unknown parameters {unknown}; use {PARAM_NAMES}")
        unknown = sorted(set(self.max_step) - set(PARAM_NAMES))
        if unknown:
            raise ValueError(f"max_step: unknown parameters {unknown}; use {PARAM_NAMES}")
        if any(not (v > 0) for v in self.max_step.values()):
            raise ValueError(f"max_step: every limit must be > 0, got {self.max_step}")
        if self.week_mask is not None and len(self.week_mask) != SLOTS_PER_WEEK:
            raise ValueError(
                f"week_mask: expected {SLOTS_PER_WEEK} flags, got {len(self.week_mask)}"
            )
        if self.max_cells is not None and self.max_cells < 1:
            raise ValueError(f"max_cells must be >= 1, got {self.max_cells}")
        ls = tuple(float(x) for x in self.line_search)
        if not ls or any(not 0.0 < x <= 1.0 for x in ls):
            raise ValueError(f"line_search: fractions in (0, 1], got {self.line_search}")
        object.__setattr__(self, "line_search", tuple(sorted(set(ls), reverse=True)))
        for name in ("unserved_tolerance", "unserved_margin_mb"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_unserved_pct is not None and not 0 <= self.max_unserved_pct <= 100:
            raise ValueError(f"max_unserved_pct must be in [0, 100], got {self.max_unserved_pct}")
        if self.max_load_ratio is not None and not self.max_load_ratio > 0:
            raise ValueError(f"max_load_ratio must be > 0, got {self.max_load_ratio}")


class SafetyShield(VectorWrapper):
    """Hard limits and a world-model check around the actions of a load-balancing vector env
    (``gym.make_vec("MobiWM-LoadBalance-…", ...)``); see the module doc."""

    def __init__(self, env: Any, config: ShieldConfig | None = None) -> None:
        super().__init__(env)
        self.config = config or ShieldConfig()
        self.core: LoadBalanceCore = find_core(env)
        core, cfg = self.core, self.config
        n, e = core.n_cells, core.n_envs
        self._movable = np.ones(n, dtype=bool)
        if cfg.scope is not None:
            self._movable[:] = False
            self._movable[_cells(cfg.scope, n, "scope")] = True
        self._movable[_cells(cfg.protected, n, "protected")] = False
        self._param_on = np.array([p not in cfg.frozen for p in PARAM_NAMES])
        env_step = np.asarray(core.max_step, dtype=np.float64)
        cap = np.array([cfg.max_step.get(p, np.inf) for p in PARAM_NAMES])
        self._frac_cap = np.minimum(cap / env_step, 1.0)  # of a normalised action of ±1
        self._reference = core.params.copy()
        self._planner: LoadBalanceCore | None = None
        self.counts = {"steps": 0, "limited": 0, "scaled": 0, "expanded": 0, "reverted": 0}
        self._e, self._n = e, n

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: Any = None, options: Any = None) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._reference = self.core.params.copy()
        return obs, info

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        core = self.core
        fresh = core.steps == 0  # episodes that (auto)reset since the last step
        self._reference[fresh] = core.params[fresh]
        act, limited = self.limit(actions)
        fraction = np.ones(self._e)
        reverted = np.zeros(self._e, dtype=bool)
        predicted = np.full(self._e, np.nan)
        expanded = np.zeros(self._e, dtype=bool)
        if self.config.checkpoint is not None:
            act, fraction, expanded, reverted, predicted = self.check(act)
        obs, reward, terminated, truncated, info = self.env.step(act.reshape(self._e, -1))
        info = dict(info)
        info["shield_fraction"] = fraction
        info["shield_limited"] = limited
        info["shield_reverted"] = reverted
        info["shield_expanded"] = expanded
        info["shield_predicted_shed"] = predicted
        self.counts["steps"] += self._e
        self.counts["limited"] += int((limited > 0).sum())
        self.counts["scaled"] += int((fraction < 1).sum())
        self.counts["reverted"] += int(reverted.sum())
        self.counts["expanded"] += int(expanded.sum())
        return obs, reward, terminated, truncated, info

    # ------------------------------------------------------------------ stages
    def limit(self, actions: Any) -> tuple[np.ndarray, np.ndarray]:
        """Hard limits: ``(actions [E, M, 4], cell-parameters changed per env [E])``."""
        core = self.core
        m = core.max_cells
        a = np.asarray(actions, dtype=np.float32).reshape(self._e, m, 4).copy()
        before = a.copy()
        n = self._n
        a[:, :n] *= self._movable[None, :, None]
        a[:, :, ~self._param_on] = 0.0
        a[:, :n] = np.clip(a[:, :n], -self._frac_cap, self._frac_cap)
        if self.config.week_mask is not None:
            allowed = np.asarray(self.config.week_mask, dtype=bool)[core.slot % SLOTS_PER_WEEK]
            a[~allowed] = 0.0
        k = self.config.max_cells
        if k is not None and k < n:
            size = np.abs(a[:, :n]).max(axis=2)  # [E, N]
            order = np.argsort(-size, axis=1, kind="stable")
            drop = np.zeros_like(size, dtype=bool)
            np.put_along_axis(drop, order[:, k:], True, axis=1)
            a[:, :n][drop] = 0.0
        changed = (np.abs(a - before) > 1e-9).sum(axis=(1, 2))
        return a, changed

    def check(
        self, act: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Model check and line search (see the module doc) → ``(actions, fraction, expanded,
        reverted, predicted shed traffic)``, each per env."""
        cfg, core = self.config, self.core
        e = self._e
        revert = self._revert_action()
        fracs = list(cfg.line_search)
        grow = _expanding(act)
        cands = (
            [act * f for f in fracs]
            + [grow * f for f in fracs]
            + [revert * f for f in fracs]
            + [np.zeros_like(act)]
        )
        c = len(cands)
        n = self._n
        singles = np.zeros((e, n if cfg.per_cell else 0, *act.shape[1:]), dtype=act.dtype)
        if cfg.per_cell:
            idx = np.arange(n)
            singles[:, idx, idx] = act[:, :n]  # row i: only cell i's change
        rows = np.concatenate([np.stack(cands, axis=1), singles], axis=1)
        carried_all, load_all, ood_all = self._simulate(rows)  # [E, C + N + 1], ref last
        keep = np.r_[np.arange(c), rows.shape[1]]  # the candidates and the reference
        carried, load = carried_all[:, keep], load_all[:, keep]
        ood = None if ood_all is None else ood_all[:, keep]
        shed = np.maximum(carried[:, -1:] - carried, 0.0)  # [E, C + 1], MB per slot
        ref_load = load[:, -1]
        demand = core.offered_demand(core.slot[:, None] + np.arange(core.slots_per_step))
        demand = demand.mean(axis=1)
        noop_unserved = (1.0 - core.served_ratio) * demand
        allowed = cfg.unserved_tolerance * noop_unserved + cfg.unserved_margin_mb
        if cfg.max_unserved_pct is not None:
            allowed = np.maximum(allowed, cfg.max_unserved_pct / 100.0 * demand)
        ok = shed[:, :c] <= allowed[:, None]
        if cfg.max_load_ratio is not None:
            ok &= load[:, :c] <= np.maximum(cfg.max_load_ratio, ref_load)[:, None] + 1e-9
        if ood is not None:
            ok &= ood[:, :c] <= self._threshold
        ok[:, -1] = True  # holding still is always allowed
        if cfg.per_cell:  # the cells whose own change is predicted safe, greedily
            sel, sel_ok, sel_shed = self._selective(act, carried_all, c, allowed, ood_all)
            nf = len(fracs)
            cands.insert(nf, sel)
            ok = np.concatenate([ok[:, :nf], sel_ok[:, None], ok[:, nf:]], axis=1)
            shed = np.concatenate([shed[:, :nf], sel_shed[:, None], shed[:, nf:]], axis=1)
            c += 1
        pick = ok.argmax(axis=1)  # the first safe candidate: largest fraction, then revert
        out = np.stack(cands, axis=1)[np.arange(e), pick]
        nf = len(fracs)
        sel = 1 if cfg.per_cell else 0  # the selective candidate sits after the fractions
        fraction = np.array(fracs + [0.0] * (c - nf))[pick]
        if sel:  # the share of the action's cells kept
            moving = np.abs(act).max(axis=2) > 0
            kept = np.abs(cands[nf]).max(axis=2) > 0
            share = kept.sum(axis=1) / np.maximum(moving.sum(axis=1), 1)
            fraction = np.where(pick == nf, share, fraction)
        expanded = (pick >= nf + sel) & (pick < 2 * nf + sel)
        reverted = (pick >= 2 * nf + sel) & (pick < 3 * nf + sel)
        return out, fraction, expanded, reverted, shed[np.arange(e), pick]

    # ------------------------------------------------------------------ helpers
    def _selective(
        self,
        act: np.ndarray,
        carried: np.ndarray,
        c: int,
        allowed: np.ndarray,
        ood: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The action restricted to the cells whose own change is safe: each cell's marginal
        shed (its single-cell row against holding still) is added, smallest first, to holding
        still's shed while the sum stays within ``allowed`` (cells flagged by the gate are
        left out). Returns ``(action [E, M, 4], safe [E], predicted shed [E])``; the sum is
        an estimate (the cells' effects are taken as additive)."""
        e, n = self._e, self._n
        ref, hold = carried[:, -1], carried[:, c - 1]
        single = carried[:, c : c + n]  # [E, N]
        marginal = hold[:, None] - single  # > 0: the cell's change sheds
        moving = np.abs(act[:, :n]).max(axis=2) > 0
        marginal = np.where(moving, marginal, np.inf)
        if ood is not None:
            marginal = np.where(ood[:, c : c + n] <= self._threshold, marginal, np.inf)
        order = np.argsort(marginal, axis=1, kind="stable")
        sorted_m = np.take_along_axis(marginal, order, axis=1)
        base = np.maximum(ref - hold, 0.0)
        total = base[:, None] + np.cumsum(np.where(np.isfinite(sorted_m), sorted_m, 0.0), 1)
        take_sorted = np.isfinite(sorted_m) & ((total <= allowed[:, None]) | (sorted_m <= 0))
        take_sorted &= np.cumprod(take_sorted, axis=1).astype(bool)  # a prefix of the order
        take = np.zeros((e, n), dtype=bool)
        np.put_along_axis(take, order, take_sorted, axis=1)
        out = act.copy()
        out[:, :n] *= take[..., None]
        shed = base + np.where(take, np.where(np.isfinite(marginal), marginal, 0.0), 0.0).sum(1)
        return out, take.any(axis=1), np.maximum(shed, 0.0)

    def _revert_action(self) -> np.ndarray:
        """The normalised action that moves every movable cell one step toward its reference
        parameters (azimuth the short way round), ``[E, M, 4]``."""
        core = self.core
        delta = self._reference - core.params  # [E, N, 4]
        delta[..., AZIMUTH] = (delta[..., AZIMUTH] + 180.0) % 360.0 - 180.0
        a = np.zeros((self._e, core.max_cells, 4), dtype=np.float32)
        step = np.asarray(core.max_step, dtype=np.float64)
        a[:, : self._n] = np.clip(delta / step, -1.0, 1.0)
        a[:, : self._n] *= self._movable[None, :, None] * self._param_on[None, None, :]
        return np.clip(a, -self._frac_cap, self._frac_cap)

    def _planner_core(self, rows: int) -> LoadBalanceCore:
        if self._planner is None or self._planner.n_envs != rows:
            base = self.core.config
            uq = "report" if self._has_head() else "off"
            cfg = dataclasses.replace(
                base,
                dynamics="world_model",
                checkpoint=str(resolve_checkpoint(self.config.checkpoint)),
                uncertainty=uq,
            )
            self._planner = LoadBalanceCore(cfg, rows)
        return self._planner

    def _has_head(self) -> bool:
        from worldmodel.model.uncertainty import has_uncertainty

        return has_uncertainty(resolve_checkpoint(self.config.checkpoint))

    @property
    def _threshold(self) -> float:
        pred = getattr(self._planner.dynamics, "predictive", None) if self._planner else None
        return pred.threshold if pred is not None else np.inf

    def _simulate(self, cands: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """One world-model step of candidates ``[E, C, M, 4]`` plus the reference (the episode's
        start parameters, held) → mean predicted carried traffic (MB per slot, all cells), the
        largest load ratio, and the out-of-distribution score, each ``[E, C + 1]`` (``None``
        without a quantile head)."""
        core = self.core
        e, c = cands.shape[:2]
        rows = e * (c + 1)
        planner = self._planner_core(rows)
        state = EnvState.from_env(self.env).repeat(c + 1)
        ref = np.arange(e) * (c + 1) + c  # env-major rows: each env's last row is its reference
        params = state.params.copy()
        params[ref] = self._reference
        state = dataclasses.replace(state, params=params)
        state.load_into(planner)
        pred = getattr(planner.dynamics, "predictive", None)
        if pred is not None and pred.enabled:
            pred.reference[:] = np.repeat(self._reference, c + 1, axis=0)
        acts = np.zeros((e, c + 1, core.max_cells, 4), dtype=np.float32)
        acts[:, :c] = cands
        _, _, _, info = planner.step(acts.reshape(rows, -1))
        traffic = info["traffic"]
        carried = traffic.sum(axis=2).mean(axis=1)
        cap = np.asarray(core.scenario.cell_capacity, dtype=np.float64)
        load = (traffic / cap).max(axis=(1, 2))
        ood = info.get("ood_score") if self.config.use_gate else None
        shape = (e, c + 1)
        return (carried.reshape(shape), load.reshape(shape),
                None if ood is None else np.asarray(ood).reshape(shape))  # fmt: skip


def _expanding(act: np.ndarray) -> np.ndarray:
    """The part of normalised actions ``[E, M, 4]`` that grows a cell's coverage: power up,
    tilts up (less down-tilt), azimuth as proposed; the shrinking changes set to 0."""
    out = act.copy()
    out[..., 0] = np.maximum(out[..., 0], 0.0)
    out[..., 2:] = np.minimum(out[..., 2:], 0.0)
    return out


def _cells(cells: Any, n: int, name: str) -> np.ndarray:
    idx = np.asarray(list(cells), dtype=np.int64)
    bad = idx[(idx < 0) | (idx >= n)]
    if bad.size:
        raise ValueError(f"{name}: cells {bad.tolist()} do not exist (the scenario has 0–{n - 1})")
    return idx
