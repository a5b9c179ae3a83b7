"""Snapshots of envs: ``EnvState`` (everything needed to simulate ``E`` envs forward, taken
from an env and loaded into another core) and ``find_core`` (the ``LoadBalanceCore`` under any
wrapper). Planners (``agents.baselines.MPCController``) and the safety shield
(``mobiwm_env.wrappers.SafetyShield``) simulate candidate actions from such snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mobiwm_env.config import EnvConfig
from mobiwm_env.core import LoadBalanceCore
from mobiwm_env.dynamics import TwinDynamics, WorldModelDynamics
from mobiwm_env.spaces import PARAM_FEATURES, TIME_FEATURES, unflatten_obs
from worldmodel.twin.network import ASSOCIATION_FIELDS, TwinState


def find_core(env: Any) -> LoadBalanceCore:
    """The ``LoadBalanceCore`` under a (vector) env, SB3 adapter or wrapper."""
    seen = 0
    obj = env
    while obj is not None and seen < 16:
        core = obj.__dict__.get("core") if hasattr(obj, "__dict__") else None
        if isinstance(core, LoadBalanceCore):
            return core
        nxt = None
        for attr in ("venv", "env", "unwrapped"):
            cand = getattr(obj, attr, None)
            if cand is not None and cand is not obj:
                nxt = cand
                break
        obj = nxt
        seen += 1
    raise ValueError(f"no mobiwm_env LoadBalanceCore found under {type(env).__name__}")


# ============================================================================ snapshots
@dataclass(frozen=True)
class EnvState:
    """Everything needed to simulate ``E`` envs forward (physical units).

    ``association``: the twin's A3 association state (``ASSOCIATION_FIELDS`` → ``[E, pixels]``)
    when the snapshot comes from a twin-backed env; ``None`` otherwise. A twin-backed core can
    only be loaded from a state that has it (a world-model core ignores it).

    ``active``: the cells on in every sub-env (``LoadBalanceCore.set_active``, e.g. after a site
    failed); a core is switched to it when loaded.

    ``memory``: a world-model env's daily memory (``WorldModelDynamics.memory_state``:
    ``traffic``, ``params``, ``start``) when the snapshot comes from one that has it; ``None``
    otherwise. A world-model core with a daily memory is loaded with it when its length matches,
    else with the last day of ``hist_traffic`` (the observed yesterday: exact for plans shorter
    than a day).
    """

    params: np.ndarray  # [E, N, 4] parameters now
    slot: np.ndarray  # [E] next slot to simulate (absolute)
    hist_traffic: np.ndarray  # [E, W, N] MB per slot, oldest first
    hist_params: np.ndarray  # [E, W, N, 4] parameters of those slots
    association: dict[str, np.ndarray] | None = None
    memory: dict[str, np.ndarray] | None = None
    served_ratio: np.ndarray | None = None  # [E] (LoadBalanceCore.served_ratio); None = 1
    active: np.ndarray | None = None  # [N] cells on (every sub-env); None = the core's own

    @property
    def n_envs(self) -> int:
        return int(self.params.shape[0])

    @classmethod
    def from_env(cls, env: Any) -> EnvState:
        """Exact snapshot of every sub-env of ``env``."""
        core = find_core(env)
        association = memory = None
        if isinstance(core.dynamics, TwinDynamics):
            twin = core.dynamics.twin.get_state()
            association = {name: getattr(twin, name) for name in ASSOCIATION_FIELDS}  # copies
        elif isinstance(core.dynamics, WorldModelDynamics):
            memory = core.dynamics.memory_state()
        return cls(
            core.params.copy(),
            core.slot.copy(),
            core.hist_traffic.copy(),
            core.hist_params.copy(),
            association,
            memory,
            core.served_ratio.copy(),
            core.active.copy(),
        )

    @classmethod
    def from_obs(
        cls, obs: np.ndarray, info: dict[str, Any], config: EnvConfig, n_cells: int, scale: float
    ) -> EnvState:
        """Approximate snapshot from observations and infos only: traffic history from the
        observation (``history_slots`` slots; older slots are zeros, so a world model with a
        daily memory sees none: prefer ``from_env``), parameter history = the parameters now."""
        obs = np.atleast_2d(obs)
        e = obs.shape[0]
        blocks = unflatten_obs(obs, _max_cells(obs, config), config.history_slots)
        traffic = scale * np.expm1(blocks["traffic"][:, :n_cells].astype(np.float64))
        hist = traffic.transpose(0, 2, 1)  # [E, Hh, N]
        w = max(config.warmup_slots, hist.shape[1])
        hist_traffic = np.zeros((e, w, n_cells), dtype=np.float32)
        hist_traffic[:, w - hist.shape[1] :] = hist
        params = np.asarray(info["params"], dtype=np.float64).reshape(e, n_cells, 4)
        hist_params = np.broadcast_to(params.astype(np.float32)[:, None], (e, w, n_cells, 4))
        slot = np.asarray(info["slot"], dtype=np.int64).reshape(e)
        return cls(params, slot, hist_traffic, hist_params.copy())

    def repeat(self, k: int) -> EnvState:
        """Each env repeated ``k`` times (env-major: rows ``i*k .. i*k+k-1`` are env ``i``)."""

        def rows(d: dict[str, np.ndarray] | None) -> dict[str, np.ndarray] | None:
            return None if d is None else {n: np.repeat(a, k, axis=0) for n, a in d.items()}

        return EnvState(
            *(
                np.repeat(a, k, axis=0)
                for a in (self.params, self.slot, self.hist_traffic, self.hist_params)
            ),
            rows(self.association),
            rows(self.memory),
            None if self.served_ratio is None else np.repeat(self.served_ratio, k, axis=0),
            self.active,
        )

    def _memory_for(self, season: int) -> dict[str, np.ndarray]:
        """The daily memory of ``season`` slots to load: the snapshot's own when it has one of
        that length, else the history's last ``season`` slots, ending at ``slot`` (``load_into``
        has checked that the history is long enough: ``season <= warmup_slots``)."""
        mem = self.memory
        if mem is not None and mem["traffic"].shape[1] == season:
            return mem
        return {
            "traffic": self.hist_traffic[:, self.hist_traffic.shape[1] - season :],
            "params": self.hist_params[:, self.hist_params.shape[1] - season :],
            "start": self.slot,
        }

    def load_into(self, core: LoadBalanceCore) -> None:
        """Put ``core`` (``n_envs == E``) into this state; its episodes restart at step 0.

        A twin-backed core also gets the twin's slot, parameters and A3 association state (its
        fast-fading generator is left as it is), so it continues like the snapshotted env. A
        world-model core with a daily memory also gets one (see the class doc): without it the
        model would read a memory left from the core's own past (or zeros). A world-model core
        also gets the snapshot's served share and recalibrates its shortfall demand
        (``LoadBalanceCore.calibrate_demand``: one model step over the whole core, so a planner
        pays one extra batched step per plan).
        """
        if core.n_envs != self.n_envs:
            raise ValueError(f"core has {core.n_envs} envs, the state {self.n_envs}")
        if self.active is not None and not np.array_equal(self.active, core.active):
            core.set_active(np.asarray(self.active, dtype=bool))  # e.g. a site failed
        w = core.hist_traffic.shape[1]
        if self.hist_traffic.shape[1] < w:
            raise ValueError(f"state holds {self.hist_traffic.shape[1]} history slots, need {w}")
        if isinstance(core.dynamics, TwinDynamics):
            if self.association is None:
                raise ValueError(
                    "the core runs the twin but the state has no twin association state "
                    "(take it with EnvState.from_env on a twin-backed env)"
                )
            core.dynamics.twin.set_state(
                TwinState(
                    **self.association,
                    slot=self.slot.astype(np.int64),
                    params=self.params.astype(np.float64),
                    active=np.broadcast_to(core.active, (self.n_envs, core.n_cells)).copy(),
                ),
                rng=False,
            )
        if isinstance(core.dynamics, WorldModelDynamics):
            core.dynamics.load_memory(**self._memory_for(core.dynamics.season))
        core.params = self.params.astype(np.float64).copy()
        core.slot = self.slot.astype(np.int64).copy()
        core.hist_traffic = self.hist_traffic[:, -w:].astype(np.float32).copy()
        core.hist_params = self.hist_params[:, -w:].astype(np.float32).copy()
        core.steps = np.zeros(core.n_envs, dtype=np.int64)
        core.last_reward = np.full(core.n_envs, np.nan)
        core._was_reset[:] = True  # noqa: SLF001  (no public set-state API in mobiwm_env)
        core.served_ratio = (
            np.ones(core.n_envs)
            if self.served_ratio is None
            else np.asarray(self.served_ratio, dtype=np.float64).copy()
        )
        core.calibrate_demand(np.arange(core.n_envs))


def _max_cells(obs: np.ndarray, config: EnvConfig) -> int:
    """``M`` from the observation width: ``D = M * (Hh + 5 + 2) + 4``."""
    per_cell = config.history_slots + PARAM_FEATURES + 2
    return (obs.shape[-1] - TIME_FEATURES) // per_cell
