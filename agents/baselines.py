"""Baseline controllers for load balancing, one interface for every policy.

Every controller has ``reset()`` (new episodes) and ``predict(obs, info=None, state=None) ->
action``: ``obs`` is one observation ``[D]`` or a batch ``[E, D]`` (either backend: they share
spaces), ``info`` the env's info (a dict of ``[E, ...]`` arrays for a vector env),
``state`` an optional exact ``agents.envs.EnvState`` (only the planner uses it). The action has
the shape of the env's action space (``[M*4]`` or ``[E, M*4]``, values in ``[-1, 1]``).

* ``NoOpController``: zero action, i.e. keep every parameter.
* ``RandomController``: uniform random actions (seeded).
* ``HeuristicController``: what an engineer would write: down-tilt and lower the power of
  overloaded cells (traffic above target), and the opposite on under-loaded cells next to an
  overloaded one; a proportional rule with a dead band.
* ``MPCController``: model-predictive control on a world model: the cross-entropy method over
  action sequences of ``horizon_steps`` env steps, all candidates of all envs simulated in one
  batched world-model core per step (``EnvState.load_into``), scored with Eq. 21 (the env's
  ``objective`` through the core), warm-started from the previous plan shifted by one step.
  Risk-aware (``risk="std"`` or ``"cvar"``): every candidate is rolled out ``risk_samples``
  times with traffic drawn from the model's predictive distribution (common random numbers
  across candidates) and scored by ``mean − κ·std`` or the CVaR (mean of the worst ``α``
  share) of its sampled returns.

Build any of them by name with ``make_controller(name, env, **options)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

import mobiwm_env
from agents.envs import EnvState, find_core, make_core
from mobiwm_env.config import EnvConfig
from worldmodel.twin.scenario import ELEC_TILT, MECH_TILT, PARAM_NAMES, POWER


# ============================================================================ env facts
@dataclass(frozen=True)
class EnvFacts:
    """What controllers need to know about an env (shared by both backends)."""

    config: EnvConfig
    n_cells: int  # N real cells of the scenario
    max_cells: int  # M cells in the spaces (≥ N)
    traffic_scale_mb: float  # observation traffic normaliser (MB per slot)
    cell_xy_m: np.ndarray  # [N, 2] metres
    cell_site: np.ndarray  # [N] site index
    active: np.ndarray  # [N] bool

    @classmethod
    def from_env(cls, env: Any) -> EnvFacts:
        core = find_core(env)
        sc = core.scenario
        return cls(
            core.config,
            int(core.n_cells),
            int(core.max_cells),
            float(core.traffic_scale_mb),
            np.asarray(sc.cell_xy_m, dtype=np.float64),
            np.asarray(sc.cell_site, dtype=np.int64),
            np.asarray(core.active, dtype=bool),
        )

    @property
    def action_dim(self) -> int:
        return self.max_cells * 4

    def blocks(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        """Named observation blocks of ``obs [E, D]`` (``mobiwm_env.spaces``)."""
        return mobiwm_env.unflatten_obs(obs, self.max_cells, self.config.history_slots)

    def neighbours(self, radius_factor: float = 1.6) -> np.ndarray:
        """``[N, N]`` bool: cells of the same site and of sites within ``radius_factor`` ×
        the median nearest-site distance (no self loops)."""
        xy = self.cell_xy_m
        d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
        other = self.cell_site[:, None] != self.cell_site[None]
        nearest = np.where(other, d, np.inf).min(axis=1)
        finite = nearest[np.isfinite(nearest)]
        radius = radius_factor * (float(np.median(finite)) if finite.size else 1.0)
        adj = d <= radius
        np.fill_diagonal(adj, False)
        return adj & self.active[:, None] & self.active[None]


class Controller(Protocol):
    """The interface every policy (baseline or trained) follows."""

    name: str

    def reset(self) -> None: ...

    def predict(
        self, obs: np.ndarray, info: dict[str, Any] | None = None, state: EnvState | None = None
    ) -> np.ndarray: ...


def _batched(obs: np.ndarray) -> tuple[np.ndarray, bool]:
    obs = np.asarray(obs, dtype=np.float32)
    return (obs[None], True) if obs.ndim == 1 else (obs, False)


# ============================================================================ simple ones
class NoOpController:
    """Zero action: every parameter stays where it is."""

    name = "noop"

    def __init__(self, facts: EnvFacts) -> None:
        self.facts = facts

    def reset(self) -> None:
        pass

    def predict(self, obs, info=None, state=None) -> np.ndarray:
        o, single = _batched(obs)
        act = np.zeros((o.shape[0], self.facts.action_dim), dtype=np.float32)
        return act[0] if single else act


class RandomController:
    """Uniform random actions in ``[-scale, scale]`` (seeded)."""

    name = "random"

    def __init__(self, facts: EnvFacts, seed: int = 0, scale: float = 1.0) -> None:
        self.facts = facts
        self.seed = int(seed)
        self.scale = float(scale)
        self.rng = np.random.default_rng(self.seed)

    def reset(self) -> None:
        pass

    def predict(self, obs, info=None, state=None) -> np.ndarray:
        o, single = _batched(obs)
        act = self.rng.uniform(-self.scale, self.scale, (o.shape[0], self.facts.action_dim))
        act = act.astype(np.float32)
        return act[0] if single else act


class HeuristicController:
    """Proportional rule on the relative load error ``e = (traffic − target) / target`` of the
    latest observed slot, per cell, with dead band ``deadband``:

    * overloaded cell (``e > deadband``): electrical down-tilt and power down by
      ``gain · (e − deadband)`` (in units of the per-step limit, clipped to 1);
    * under-loaded cell (``e < −deadband``) with an overloaded neighbour: up-tilt and power up
      by ``gain · min(−e − deadband, worst neighbour overload)``.
    """

    name = "heuristic"

    def __init__(
        self,
        facts: EnvFacts,
        gain: float = 1.0,
        deadband: float = 0.1,
        use_power: bool = True,
        use_tilt: bool = True,
        use_mech_tilt: bool = False,
        radius_factor: float = 1.6,
    ) -> None:
        self.facts = facts
        self.gain = float(gain)
        self.deadband = float(deadband)
        self.use_power, self.use_tilt, self.use_mech_tilt = use_power, use_tilt, use_mech_tilt
        self.adj = facts.neighbours(radius_factor).astype(np.float64)

    def reset(self) -> None:
        pass

    def load_error(self, obs: np.ndarray) -> np.ndarray:
        """``[E, N]`` relative load error of the latest observed slot (0 for inactive cells)."""
        f = self.facts
        b = f.blocks(obs)
        n, scale = f.n_cells, f.traffic_scale_mb
        traffic = scale * np.expm1(b["traffic"][:, :n, -1].astype(np.float64))
        target = scale * np.expm1(b["target"][:, :n].astype(np.float64))
        err = (traffic - target) / np.maximum(target, 1e-6)
        return np.where(f.active, np.clip(err, -1.0, 4.0), 0.0)

    def predict(self, obs, info=None, state=None) -> np.ndarray:
        o, single = _batched(obs)
        f = self.facts
        e = self.load_error(o)
        over = np.maximum(e - self.deadband, 0.0)
        under = np.maximum(-e - self.deadband, 0.0)
        nbr_over = (self.adj[None] * over[:, None, :]).max(axis=-1)  # [E, N]
        push = np.minimum(self.gain * over, 1.0)  # shrink the overloaded cell
        pull = np.minimum(self.gain * np.minimum(under, nbr_over), 1.0)  # grow a neighbour
        u = push - pull  # >0: down-tilt / power down
        act = np.zeros((o.shape[0], f.max_cells, 4), dtype=np.float32)
        if self.use_tilt:
            act[:, : f.n_cells, ELEC_TILT] = u
        if self.use_mech_tilt:
            act[:, : f.n_cells, MECH_TILT] = u
        if self.use_power:
            act[:, : f.n_cells, POWER] = -u
        act = act.reshape(o.shape[0], -1)
        return act[0] if single else act


# ============================================================================ MPC
class MPCController:
    """Cross-entropy-method MPC on a world model (see the module doc).

    Per ``predict`` and env: ``n_iters`` rounds of ``n_candidates`` action sequences of
    ``horizon_steps`` env steps sampled around the plan (Gaussian, ``std`` starting at
    ``init_std``), clipped to ``[-1, 1]``; candidate 0 is the current plan and, in the first
    round, candidate 1 the no-op and candidate 2 the heuristic's action held over the horizon
    (``heuristic_prior``). Each round is ``horizon_steps`` batched world-model steps for
    ``E × n_candidates`` rollouts; the score is the sum of Eq. 21 rewards. The plan becomes the
    mean of the ``n_elites`` best; the first action of the best sequence seen is returned and
    the plan is shifted one step for the next call. Only the parameters in ``plan_params`` move.

    ``state`` (exact snapshot) is used when given; otherwise the state is rebuilt from the
    observation and info (traffic history from the observation, parameter history assumed
    constant), which works with either backend's outputs.
    """

    name = "mpc"

    def __init__(
        self,
        facts: EnvFacts,
        checkpoint: str | Path | None = None,
        horizon_steps: int = 2,
        n_candidates: int = 16,
        n_iters: int = 2,
        n_elites: int = 4,
        init_std: float = 0.5,
        min_std: float = 0.05,
        plan_params: tuple[str, ...] = ("power_dbm", "mech_tilt_deg", "elec_tilt_deg"),
        heuristic_prior: bool = True,
        seed: int = 0,
        risk: str = "neutral",
        kappa: float = 1.0,
        alpha: float = 0.25,
        risk_samples: int = 8,
    ) -> None:
        if risk not in RISK_MEASURES:
            raise ValueError(f"risk must be one of {RISK_MEASURES}, got {risk!r}")
        if not (np.isfinite(kappa) and kappa >= 0):
            raise ValueError(f"kappa must be a finite number >= 0, got {kappa!r}")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        if risk != "neutral" and (not isinstance(risk_samples, int) or risk_samples < 2):
            raise ValueError(f"risk_samples must be an integer >= 2, got {risk_samples!r}")
        if n_candidates < 2 or not 1 <= n_elites <= n_candidates:
            raise ValueError("need n_candidates >= 2 and 1 <= n_elites <= n_candidates")
        unknown = sorted(set(plan_params) - set(PARAM_NAMES))
        if unknown:
            raise ValueError(f"plan_params: unknown {unknown}; use {PARAM_NAMES}")
        self.facts = facts
        self.checkpoint = checkpoint
        self.horizon_steps = int(horizon_steps)
        self.n_candidates = int(n_candidates)
        self.n_iters = int(n_iters)
        self.n_elites = int(n_elites)
        self.init_std = float(init_std)
        self.min_std = float(min_std)
        self.param_mask = np.array([p in plan_params for p in PARAM_NAMES], dtype=np.float32)
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.prior = HeuristicController(facts) if heuristic_prior else None
        self.risk, self.kappa, self.alpha = risk, float(kappa), float(alpha)
        self.risk_samples = int(risk_samples) if risk != "neutral" else 1
        self._calls = 0
        self._core = None
        self._plan: np.ndarray | None = None  # [E, Hs, N, 4]

    def reset(self) -> None:
        self._plan = None
        self._calls = 0

    def _planner_core(self, rows: int):
        if self._core is None or self._core.n_envs != rows:
            cfg = self.facts.config
            if self.risk != "neutral":
                cfg = dataclasses.replace(cfg, uncertainty="sample")
            self._core = make_core(cfg, rows, self.checkpoint)
        return self._core

    def score(self, state: EnvState, candidates: np.ndarray) -> np.ndarray:
        """Score ``[E, C]`` of ``candidates [E, C, Hs, N, 4]`` from ``state``: the sum of Eq. 21
        rewards, or its risk measure over ``risk_samples`` sampled rollouts."""
        f = self.facts
        e, c, hs, n = candidates.shape[:4]
        s = self.risk_samples
        rows = e * c * s
        core = self._planner_core(rows)
        state.repeat(c * s).load_into(core)
        if s > 1:
            self._common_draws(core, s)
        total = np.zeros(rows)
        for h in range(hs):
            act = np.zeros((e * c, f.max_cells, 4), dtype=np.float32)
            act[:, :n] = candidates[:, :, h].reshape(e * c, n, 4)
            act = np.repeat(act, s, axis=0)
            _, reward, _, _ = core.step(act.reshape(rows, -1))
            total += reward
        returns = total.reshape(e, c, s)
        if self.risk == "std":
            return returns.mean(axis=2) - self.kappa * returns.std(axis=2)
        if self.risk == "cvar":
            k = max(1, int(np.ceil(self.alpha * s)))
            return np.sort(returns, axis=2)[:, :, :k].mean(axis=2)
        return returns[:, :, 0]

    def _common_draws(self, core: Any, s: int) -> None:
        """Seed the planner's sampled rollouts so that every candidate of an env sees the same
        ``s`` draws (common random numbers: candidates differ by their actions only)."""
        gen = core.dynamics.generator
        gen.manual_seed(self.seed * 1_000_003 + self._calls)
        self._calls += 1
        core.dynamics.predictive.common_draws(s, core.params, gen)

    def predict(self, obs, info=None, state=None) -> np.ndarray:
        o, single = _batched(obs)
        f = self.facts
        e, n, hs, c = o.shape[0], f.n_cells, self.horizon_steps, self.n_candidates
        if state is None:
            if info is None:
                raise ValueError("MPCController.predict needs info (params, slot) or state")
            state = EnvState.from_obs(o, info, f.config, n, f.traffic_scale_mb)
        if self._plan is None or self._plan.shape[0] != e:
            plan = np.zeros((e, hs, n, 4), dtype=np.float32)
        else:  # warm start: shift by one step
            plan = np.concatenate([self._plan[:, 1:], np.zeros_like(self._plan[:, :1])], axis=1)
        std = np.full_like(plan, self.init_std)
        mask = self.param_mask
        best_seq = plan.copy()
        best = np.full(e, -np.inf)
        for it in range(self.n_iters):
            noise = self.rng.standard_normal((e, c, hs, n, 4)).astype(np.float32)
            cand = np.clip(plan[:, None] + std[:, None] * noise, -1.0, 1.0) * mask
            cand[:, 0] = np.clip(plan, -1.0, 1.0) * mask
            if it == 0:
                cand[:, 1] = 0.0
                if self.prior is not None and c > 2:
                    prior = self.prior.predict(o).reshape(e, f.max_cells, 4)[:, :n]
                    cand[:, 2] = prior[:, None] * mask
            score = self.score(state, cand)
            order = np.argsort(-score, axis=1)
            elites = np.take_along_axis(cand, order[:, : self.n_elites, None, None, None], axis=1)
            plan = elites.mean(axis=1)
            std = np.maximum(elites.std(axis=1), self.min_std)
            top = score[np.arange(e), order[:, 0]]
            better = top > best
            best = np.where(better, top, best)
            best_seq[better] = cand[np.arange(e), order[:, 0]][better]
        self._plan = best_seq
        act = np.zeros((e, f.max_cells, 4), dtype=np.float32)
        act[:, :n] = best_seq[:, 0]
        act = act.reshape(e, -1)
        return act[0] if single else act


# ============================================================================ registry
RISK_MEASURES = ("neutral", "std", "cvar")
"""``MPCController(risk=...)``: expected return, ``mean − κ·std`` or CVaR of sampled returns."""
BASELINES = ("noop", "random", "heuristic", "mpc")


def make_controller(name: str, env_or_facts: Any, **options: Any) -> Controller:
    """Baseline controller ``name`` (one of ``BASELINES``) for an env (or ``EnvFacts``)."""
    facts = env_or_facts if isinstance(env_or_facts, EnvFacts) else EnvFacts.from_env(env_or_facts)
    classes = {
        "noop": NoOpController,
        "random": RandomController,
        "heuristic": HeuristicController,
        "mpc": MPCController,
    }
    if name not in classes:
        raise ValueError(f"unknown controller {name!r}; choose one of {BASELINES}")
    return classes[name](facts, **options)
