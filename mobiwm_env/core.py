"""``LoadBalanceCore``: the batched state machine behind the single and the vector env.

All state is ``[E, ...]`` arrays (``E`` envs, ``N`` scenario cells, ``M`` = ``max_cells`` ≥
``N`` in the spaces); one ``step`` is one backend call for all envs, no per-env Python loop.

Episode start (``reset``), for each reset env, everything drawn from that env's generator:

1. start slot: ``options["start_slot"]`` or uniform over step boundaries of weeks
   ``1..start_weeks`` (absolute slots; 0 = Monday 00:00 of week 0);
2. base parameters: ``options["params"]`` ``[N, 4]`` or the scenario's initial parameters;
3. history: the twin runs the ``warmup_slots`` slots before the start under the base
   parameters (``dynamics.HistorySource``) — for *both* backends, so the world-model env and
   the twin env start from identical states;
4. if ``randomize_params`` (default on, unless ``options["params"]`` is given), each active
   cell's parameters are moved by ``U(-1, 1) · init_noise_steps · max_step`` (clipped, azimuth
   wrapped) *after* the warm-up: the network ran under the base parameters and the agent
   takes over just after a random reconfiguration. ``options["randomize_params"]`` overrides.

Then every ``step`` applies the action (``spaces`` module doc), advances ``slots_per_step``
slots with the backend, and scores them with Eq. 21 (``objective``; plus the optional shortfall
term, with the map's offered demand from ``dynamics.DemandTotals`` on the twin and, on a world
model, from ``EnvConfig.shortfall_reference``: by default the model's own no-change rollout,
``reference.NoChangeReference``).
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from mobiwm_env import objective
from mobiwm_env.config import EnvConfig, resolve_checkpoint
from mobiwm_env.dynamics import (
    DemandTotals,
    Dynamics,
    TwinDynamics,
    WorldModelDynamics,
    history_source,
    load_scenario,
)
from mobiwm_env.reference import NoChangeReference
from mobiwm_env.spaces import (
    action_space,
    normalize_params,
    obs_layout,
    observation_space,
    time_features,
    validate_actions,
)
from worldmodel.twin.scenario import AZIMUTH, SLOTS_PER_DAY, SLOTS_PER_WEEK

RESET_OPTIONS = ("start_slot", "params", "randomize_params")
"""Keys accepted in ``reset(options=...)``."""
INFO_KEYS = (
    "traffic",
    "target",
    "params",
    "imbalance",
    "unserved",
    "shortfall",
    "action_change",
    "cell_reward",
    "slot",
    "step",
)
"""Keys of every step and reset info (see ``LoadBalanceCore.step``); ``unserved``: twin only."""


class LoadBalanceCore:
    """``E`` load-balancing envs on one scenario with one dynamics backend."""

    def __init__(self, config: EnvConfig, n_envs: int = 1) -> None:
        if not isinstance(n_envs, int | np.integer) or n_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1, got {n_envs!r}")
        self.config = cfg = config
        self.n_envs = e = int(n_envs)
        self.scenario = sc = load_scenario(cfg.scenario, cfg.demand)
        self.n_cells = n = sc.n_cells
        self.max_cells = m = n if cfg.max_cells is None else int(cfg.max_cells)
        if m < n:
            raise ValueError(f"max_cells={m} is smaller than the scenario's {n} cells")
        self.slots_per_step = cfg.slots_per_step
        self.active = sc.init_active.copy()
        self.max_step = np.asarray(cfg.max_step, dtype=np.float64)
        self.low, self.high = sc.bounds.low_high()
        self.traffic_scale_mb = float(
            cfg.traffic_scale_mb
            if cfg.traffic_scale_mb is not None
            else np.mean(sc.cell_capacity[self.active] if self.active.any() else sc.cell_capacity)
        )
        self.target = objective.Target.make(cfg.target, sc.cell_capacity, self.active)
        self.source = history_source(sc, cfg.warmup_slots)
        self.demand_totals = DemandTotals(self.source.twin.demand)
        if cfg.dynamics == "twin":
            self.dynamics: Dynamics = TwinDynamics(sc, e, self.source)
        else:
            ckpt = resolve_checkpoint(cfg.checkpoint)
            self.dynamics = WorldModelDynamics(
                sc,
                e,
                ckpt,
                cfg.warmup_slots,
                cfg.device,
                memory=cfg.memory,
                compile=cfg.compile,
                uncertainty=cfg.uncertainty,
            )
        self.observation_space = observation_space(m, cfg.history_slots, cfg.obs_clip)
        self.action_space = action_space(m)
        self.layout = obs_layout(m, cfg.history_slots)
        w = cfg.warmup_slots
        self.params = np.broadcast_to(sc.init_params, (e, n, 4)).astype(np.float64)
        self.slot = np.full(e, w, dtype=np.int64)  # next slot to simulate
        self.steps = np.zeros(e, dtype=np.int64)
        self.hist_traffic = np.zeros((e, w, n), dtype=np.float32)
        self.hist_params = np.zeros((e, w, n, 4), dtype=np.float32)
        self.last_reward = np.full(e, np.nan)
        self.models_unserved = cfg.dynamics == "twin"
        self._was_reset = np.zeros(e, dtype=bool)
        self.served_ratio = np.ones(e)
        """``[E]`` share of the offered demand the twin served over the last day of each env's
        warm-up (``Warmup.traffic`` / (traffic + unserved))."""
        self.demand_scale = np.ones(e)
        """``[E]`` factor on the twin's demand in the shortfall term: 1 on the twin; on a world
        model set by ``calibrate_demand`` (at reset with ``shortfall_reference="calibrated"``,
        and for loaded snapshots)."""
        self.reference: NoChangeReference | None = None
        """World model, ``shortfall_reference="noop"``: the per-start no-change references."""
        self.offered = np.full((e, 0), np.nan)
        """``[E, L]`` offered demand (MB) of each episode slot from ``reference`` (NaN: use
        the scaled demand, e.g. after a snapshot was loaded)."""
        if not self.models_unserved and cfg.shortfall_mode == "noop":
            self.use_reference(NoChangeReference(self))
        self.episode_start = np.full(e, w, dtype=np.int64)
        """``[E]`` start slot of each env's episode."""
        self._random_starts: np.ndarray | None = None  # (random_starts, computed once)

    # ------------------------------------------------------------------ reset
    def _start_slot(self, rng: np.random.Generator, options: dict[str, Any]) -> int:
        cfg = self.config
        if options.get("start_slot") is not None:
            start = options["start_slot"]
            if not isinstance(start, int | np.integer) or isinstance(start, bool):
                raise ValueError(f"options['start_slot'] must be an int, got {start!r}")
            if start < cfg.warmup_slots:
                raise ValueError(
                    f"options['start_slot']={start} must be >= warmup_slots={cfg.warmup_slots}; "
                    f"add {SLOTS_PER_WEEK} for the same time of the week"
                )
            return int(start)
        pool = self.random_starts()
        return int(pool[int(rng.integers(len(pool)))])

    def random_starts(self) -> np.ndarray:
        """Every start slot a reset may draw: step boundaries of weeks ``1..start_weeks``."""
        if self._random_starts is None:
            cfg = self.config
            per_week = SLOTS_PER_WEEK // cfg.slots_per_step
            week, step = np.divmod(np.arange(per_week * cfg.start_weeks), per_week)
            self._random_starts = (1 + week) * SLOTS_PER_WEEK + step * cfg.slots_per_step
        return self._random_starts

    def _base_params(self, options: dict[str, Any]) -> np.ndarray:
        if options.get("params") is None:
            return self.scenario.init_params.astype(np.float64)
        arr = np.asarray(options["params"], dtype=np.float64)
        if arr.shape != (self.n_cells, 4):
            raise ValueError(
                f"options['params']: expected shape ({self.n_cells}, 4) (physical power_dbm, "
                f"azimuth_deg, mech_tilt_deg, elec_tilt_deg), got {arr.shape}"
            )
        return self.scenario.bounds.validate(arr, what="options['params']")

    def _apply_change(self, params: np.ndarray, change: np.ndarray) -> np.ndarray:
        """``params + change`` for active cells, clipped to the bounds (azimuth wrapped)."""
        new = params + np.where(self.active[:, None], change, 0.0)
        az = np.mod(new[..., AZIMUTH], 360.0)
        new = np.clip(new, self.low, self.high)
        new[..., AZIMUTH] = az
        return new

    def reset(
        self,
        env_ids: np.ndarray,
        rngs: list[np.random.Generator],
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Start new episodes in ``env_ids``; returns their ``(obs [k, D], info)``."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(RESET_OPTIONS))
        if unknown:
            raise ValueError(f"unknown reset option(s) {unknown}; valid options: {RESET_OPTIONS}")
        idx = np.asarray(env_ids, dtype=np.int64)
        cfg, n = self.config, self.n_cells
        base = self._base_params(options)
        randomize = options.get("randomize_params")
        if randomize is None:
            randomize = cfg.randomize_params and options.get("params") is None
        starts = np.empty(len(idx), dtype=np.int64)
        params = np.empty((len(idx), n, 4))
        seed = 0
        for j, rng in enumerate(rngs):
            starts[j] = self._start_slot(rng, options)
            noise = rng.uniform(-1.0, 1.0, size=(n, 4)) * cfg.init_noise_steps * self.max_step
            params[j] = self._apply_change(base, noise) if randomize else base
            s = int(rng.integers(1 << 62))
            seed = s if j == 0 else seed
        warmups = self.source.get_many(starts.tolist(), base, self.active)
        self.dynamics.reset(idx, starts, params, warmups, seed)
        self.params[idx] = params
        self.slot[idx] = starts
        self.steps[idx] = 0
        self.hist_traffic[idx] = np.stack([w.traffic for w in warmups])
        self.hist_params[idx] = base.astype(np.float32)
        self.last_reward[idx] = np.nan
        self._was_reset[idx] = True
        day = min(SLOTS_PER_DAY, cfg.warmup_slots)
        served = np.array([float(w.traffic[-day:].sum()) for w in warmups])
        unserved_day = np.array([float(w.unserved[-day:].sum()) for w in warmups])
        self.served_ratio[idx] = served / np.maximum(served + unserved_day, 1e-9)
        self.episode_start[idx] = starts
        self.demand_scale[idx] = 1.0
        if self.reference is not None and options.get("params") is None:
            pool = self.random_starts()
            if options.get("start_slot") is None and 4 * self.n_envs >= len(pool):
                self.reference.get(pool)  # many envs: every start at once, in a few batches
            self.offered[idx] = self.reference.get(starts)
        elif self.reference is not None or cfg.shortfall_mode == "calibrated":
            self.calibrate_demand(idx)  # (own base parameters: the references assume the map's)

        p = cfg.slots_per_step
        traffic = self.hist_traffic[idx, -p:].astype(np.float64)
        if traffic.shape[1] < p:  # warm-up shorter than one step
            traffic = np.concatenate(
                [np.zeros((len(idx), p - traffic.shape[1], n)), traffic], axis=1
            )
        slots = starts[:, None] - p + np.arange(p)[None, :]
        target = self.target(traffic, slots)
        _, imb = objective.reward(traffic, target, self.active, np.zeros(len(idx)), 0.0)
        short = objective.shortfall(traffic, self.offered_demand(slots, idx))
        unserved = np.stack([w.unserved[-p:] for w in warmups]).astype(np.float64)
        if unserved.shape[1] < p:
            unserved = np.concatenate([np.zeros((len(idx), p - unserved.shape[1])), unserved], 1)
        info = {
            "traffic": traffic,
            "target": target,
            "params": params.copy(),
            "imbalance": imb,
            "unserved": unserved,
            "shortfall": short,
            "action_change": np.zeros(len(idx)),
            "cell_reward": np.zeros((len(idx), n)),
            "slot": starts.copy(),
            "step": np.zeros(len(idx), dtype=np.int64),
        }
        if not self.models_unserved:
            del info["unserved"]
        return self.observe(idx), info

    def use_reference(self, reference: NoChangeReference | None) -> None:
        """Score the shortfall against ``reference`` from the next reset on (``None``: the
        twin's demand); for a core whose dynamics were replaced after construction."""
        self.reference = reference
        length = self.config.episode_steps * self.slots_per_step
        self.offered = np.full((self.n_envs, length if reference is not None else 0), np.nan)

    def offered_demand(self, slots: np.ndarray, env_ids: np.ndarray | None = None) -> np.ndarray:
        """The shortfall term's offered demand ``[k, P]`` (MB per slot) of absolute ``slots
        [k, P]`` of ``env_ids`` (all by default): the no-change reference where the env has one
        for the slot, else the twin's demand times ``demand_scale``."""
        idx = np.arange(self.n_envs) if env_ids is None else np.asarray(env_ids, dtype=np.int64)
        s = np.asarray(slots, dtype=np.int64)
        demand = self.demand_totals(s) * self.demand_scale[idx, None]
        if self.reference is None:
            return demand
        k = s - self.episode_start[idx, None]
        inside = (k >= 0) & (k < self.offered.shape[1])
        ref = np.take_along_axis(self.offered[idx], np.clip(k, 0, self.offered.shape[1] - 1), 1)
        return np.where(inside & np.isfinite(ref), ref, demand)

    def calibrate_demand(self, env_ids: np.ndarray) -> None:
        """Set ``demand_scale`` of ``env_ids`` so that the world model, keeping the parameters
        it starts from for one step, leaves the share ``1 − served_ratio`` of the (scaled)
        demand unserved: ``κ = Σ ŝ₀ / (served_ratio · Σ D₀)`` over the step's slots. Their
        no-change references are dropped (the state is no longer the one they were computed
        for: ``EnvState.load_into``), so the scaled demand is used from now on.

        The model's carried traffic is biased (−8% for the full model, −19% for the fast one on
        the test maps; ``docs/results.md``), so against the raw demand its shortfall is mostly
        that bias, thousands of MB per slot where the twin leaves hundreds unserved. Scaled, it
        starts each episode at the twin's level. It does not stay there: the model's total
        drifts over the day's rollout, so the episode's mean shortfall of a no-op is still far
        above the twin's (``docs/results.md``). Costs one world-model step per reset. A no-op on
        the twin and with ``shortfall_reference="demand"``.
        """
        idx = np.asarray(env_ids, dtype=np.int64)
        self.offered[idx] = np.nan
        if self.models_unserved or self.config.shortfall_mode == "demand" or not idx.size:
            self.demand_scale[idx] = 1.0
            return
        p = self.slots_per_step
        pred = getattr(self.dynamics, "predictive", None)
        with pred.frozen() if pred is not None else contextlib.nullcontext():
            out = self.dynamics.step(self.params, self.hist_traffic, self.hist_params, self.slot, p)
        carried = out.traffic[idx].sum(axis=(1, 2))
        slots = self.slot[idx, None] + np.arange(p)[None, :]
        demand = self.demand_totals(slots).sum(axis=1)
        scale = carried / np.maximum(self.served_ratio[idx] * demand, 1e-9)
        self.demand_scale[idx] = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)

    def set_active(self, active: np.ndarray) -> None:
        """Switch cells on/off in every sub-env from the next step on (``active [N]`` bool),
        e.g. a site failing mid-episode: the dynamics, the balanced target's cell weights and
        every mask follow (a world model also encodes its map context again). It holds until
        set again (resets keep it)."""
        a = np.asarray(active)
        if a.dtype != bool or a.shape != (self.n_cells,):
            raise ValueError(f"active: expected {self.n_cells} bools, got {a.dtype} {a.shape}")
        if not a.any():
            raise ValueError("active: at least one cell must stay on")
        set_dyn = getattr(self.dynamics, "set_active", None)
        if set_dyn is None:
            raise ValueError(f"the {type(self.dynamics).__name__} backend cannot switch cells")
        set_dyn(a)
        self.active = a.copy()
        # (episodes under way keep their references, so the outage's loss counts as shortfall;
        # the next resets get references of the new set of cells: ``NoChangeReference.key``)
        self.target = objective.Target.make(
            self.config.target, self.scenario.cell_capacity, self.active
        )

    # ------------------------------------------------------------------ step
    def step(
        self, actions: object
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Apply ``actions [E, M*4]`` and advance every env one step.

        Returns ``(obs [E, D], reward [E], truncated [E], info)`` with info arrays:
        ``traffic [E, P, N]`` MB of the slots just simulated, ``target [E, P, N]`` MB,
        ``params [E, N, 4]`` physical parameters now, ``imbalance [E]`` MB (the L1 term),
        ``unserved [E, P]`` MB (twin backend only: the world model does not model coverage,
        so the key is absent), ``shortfall [E, P]`` MB (offered demand − carried traffic,
        floored at 0: the unserved traffic on the twin, the model's estimate of it on a world
        model), ``action_change [E]`` (|Δa|), ``cell_reward [E, N]`` (the reward split over
        the cells, ``objective.cell_rewards``: ``cell_reward.sum(1)`` is the reward),
        ``slot [E]`` (next slot to simulate), ``step [E]``
        (steps done in the episode); with ``EnvConfig.uncertainty`` on, ``traffic_std [E, P,
        N]`` MB, ``ood_score [E]`` and ``ood_threshold [E]`` (``mobiwm_env.uncertainty``).
        """
        if not self._was_reset.all():
            missing = np.flatnonzero(~self._was_reset).tolist()
            raise RuntimeError(f"step() before reset() for env(s) {missing}")
        e, m, n, p = self.n_envs, self.max_cells, self.n_cells, self.slots_per_step
        act = validate_actions(actions, (e, m * 4)).reshape(e, m, 4)[:, :n]
        old = self.params
        new = self._apply_change(old, act * self.max_step)
        cell_delta = objective.cell_action_change(old, new, self.max_step, self.active)
        delta = objective.action_change(old, new, self.max_step, self.active)
        out = self.dynamics.step(new, self.hist_traffic, self.hist_params, self.slot, p)
        traffic = out.traffic
        slots = self.slot[:, None] + np.arange(p)[None, :]
        target = self.target(traffic, slots)
        demand = self.offered_demand(slots)
        short = objective.shortfall(traffic, demand)
        reward, imb = objective.reward(
            traffic,
            target,
            self.active,
            delta,
            self.config.lambda_delta,
            short,
            self.config.lambda_unserved,
        )
        cell_reward = objective.cell_rewards(
            traffic,
            target,
            self.active,
            cell_delta,
            self.config.lambda_delta,
            demand,
            self.target.cell_weight,
            self.config.lambda_unserved,
        )
        w = self.hist_traffic.shape[1]
        newp = np.broadcast_to(new.astype(np.float32)[:, None], (e, p, n, 4))
        self.hist_traffic = np.concatenate([self.hist_traffic, traffic.astype(np.float32)], 1)[
            :, -w:
        ]
        self.hist_params = np.concatenate([self.hist_params, newp], 1)[:, -w:]
        self.params = new
        self.slot = self.slot + p
        self.steps += 1
        self.last_reward = reward
        truncated = self.steps >= self.config.episode_steps
        info = {
            "traffic": traffic,
            "target": target,
            "params": new.copy(),
            "imbalance": imb,
            "unserved": out.unserved,
            "shortfall": short,
            "action_change": delta,
            "cell_reward": cell_reward,
            "slot": self.slot.copy(),
            "step": self.steps.copy(),
        }
        if not self.models_unserved:
            del info["unserved"]
        if out.traffic_std is not None:
            info["traffic_std"] = out.traffic_std
            info["ood_score"] = out.ood_score
            info["ood_threshold"] = np.full(e, self.dynamics.predictive.threshold)
        return self.observe(), reward, truncated, info

    # ------------------------------------------------------------------ observation
    def observe(self, env_ids: np.ndarray | None = None) -> np.ndarray:
        """Observations ``[k, D]`` float32 of ``env_ids`` (all by default); see ``spaces``."""
        idx = slice(None) if env_ids is None else np.asarray(env_ids, dtype=np.int64)
        cfg, n, m = self.config, self.n_cells, self.max_cells
        hist = self.hist_traffic[idx]
        k = hist.shape[0]
        clip, scale = cfg.obs_clip, self.traffic_scale_mb
        mask = self.active.astype(np.float64)
        pad = ((0, 0), (0, m - n))

        h = np.log1p(np.maximum(hist[:, -cfg.history_slots :], 0.0) / scale)
        traffic = np.clip(h, 0.0, clip).transpose(0, 2, 1) * mask[None, :, None]
        params = normalize_params(self.params[idx], self.scenario.bounds) * mask[None, :, None]
        slot = self.slot[idx]
        tgt = self.target(hist[:, -1:].astype(np.float64), (slot - 1)[:, None])[:, 0]
        target = np.clip(np.log1p(tgt / scale), 0.0, clip) * mask
        blocks = [
            np.pad(traffic.reshape(k, -1), ((0, 0), (0, (m - n) * cfg.history_slots))),
            np.pad(params.reshape(k, -1), ((0, 0), (0, (m - n) * params.shape[-1]))),
            np.pad(target, pad),
            np.pad(np.broadcast_to(mask, (k, n)), pad),
            time_features(slot),
        ]
        return np.concatenate(blocks, axis=1).astype(np.float32)

    # ------------------------------------------------------------------ views
    def load_ratio(self, env: int = 0) -> np.ndarray:
        """``[N]`` traffic / capacity of the latest simulated slot of ``env``."""
        return self.hist_traffic[env, -1].astype(np.float64) / self.scenario.cell_capacity

    def serving_map(self, env: int = 0) -> np.ndarray:
        """``[G, G]`` serving cell per pixel of ``env`` under its current parameters."""
        return self.dynamics.serving_map(env, self.params[env], int(self.slot[env]))

    def info_rows(self, info: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
        """The entries of ``rows`` of a batched info dict."""
        return {k: v[rows] for k, v in info.items()}

    def close(self) -> None:
        self.dynamics.close()
