"""Environment construction for the agents, for any world-model checkpoint, and env snapshots.

* ``make_vector_env`` / ``make_sb3_env``: ``gym.make_vec`` of the twin or of a world model given
  by its checkpoint. MobiWM checkpoints (also Static-MobiWM, i.e. ``--ablate actions``) go
  through the env's own world-model backend. Checkpoints of the learned baselines
  (``worldmodel.baselines``, format ``mobiwm-baseline-checkpoint``) are not accepted by
  ``mobiwm_env``'s backend, which loads MobiWM checkpoints only; for them the env is built with
  the twin backend and its dynamics are replaced by ``BaselineDynamics`` (same interface), and
  its shortfall term gets the same no-change reference as on MobiWM
  (``mobiwm_env.reference``: the baseline's own rollout under the base parameters).
* ``EnvState`` / ``find_core`` (from ``mobiwm_env.state``, re-exported): an exact snapshot of
  ``E`` envs (parameters, next slot, traffic and parameter history) that a planner can load into
  a batched core (``EnvState.load_into``) to simulate candidate action sequences.

``backend`` is ``"world_model"`` / ``"twin"`` or a Gymnasium id.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

import mobiwm_env
from mobiwm_env.config import EnvConfig, resolve_checkpoint
from mobiwm_env.core import LoadBalanceCore
from mobiwm_env.dynamics import DynamicsStep
from mobiwm_env.reference import NoChangeReference
from mobiwm_env.sb3 import SB3VecEnv
from mobiwm_env.state import EnvState, find_core  # noqa: F401  (re-exported for the agents)
from worldmodel.twin.scenario import DAYS_PER_WEEK, SLOTS_PER_DAY, Scenario

BACKENDS = {"world_model": mobiwm_env.WORLD_MODEL_ID, "twin": mobiwm_env.TWIN_ID}
"""Backend name → Gymnasium id."""
BASELINE_FORMAT = "mobiwm-baseline-checkpoint"
BASELINE_LABELS = {"gru": "GRU", "itransformer": "iTransformer", "rssm": "RSSM", "tdmpc": "TD-MPC2"}
"""Display names of the learned baselines (``model_class`` in their checkpoints)."""


def env_id_of(backend: str) -> str:
    """Gymnasium id of ``backend`` (a backend name or already an id)."""
    if backend in BACKENDS:
        return BACKENDS[backend]
    if backend in BACKENDS.values():
        return backend
    raise ValueError(f"unknown backend/env id {backend!r}; use one of {sorted(BACKENDS)} or ids")


def backend_of(env_id: str) -> str:
    """``"world_model"`` or ``"twin"`` for a backend name or Gymnasium id."""
    eid = env_id_of(env_id)
    return next(k for k, v in BACKENDS.items() if v == eid)


def checkpoint_format(checkpoint: str | Path | None) -> str:
    """``"mobiwm"`` (MobiWM / Static-MobiWM) or ``"baseline"`` (a learned baseline) from
    ``config.json``."""
    path = resolve_checkpoint(checkpoint)
    directory = path.parent if path.is_file() else path
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(
            f"world-model checkpoint {str(path)!r}: no config.json (train one with "
            "`python -m worldmodel.train`, or pass --checkpoint PATH)"
        )
    fmt = json.loads(cfg_path.read_text(encoding="utf-8")).get("format")
    return "baseline" if fmt == BASELINE_FORMAT else "mobiwm"


def checkpoint_label(checkpoint: str | Path | None) -> str:
    """Short description of a world-model checkpoint: MobiWM, Static-MobiWM or a baseline's
    (``GRU-WM``, ``iTransformer-WM``, ``RSSM-WM``, ``TD-MPC2-WM``; ``Static-`` without actions)."""
    path = resolve_checkpoint(checkpoint)
    directory = path.parent if path.is_file() else path
    meta = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    if meta.get("format") == BASELINE_FORMAT:
        cfg = meta.get("model_config", meta.get("config", {}))
        name = BASELINE_LABELS.get(meta.get("model_class", "gru"), str(meta.get("model_class")))
        return f"{name}-WM" if cfg.get("use_actions", True) else f"Static-{name}"
    use_actions = meta.get("model_config", {}).get("use_actions", True)
    return "MobiWM" if use_actions else "Static-MobiWM"


# ============================================================================ baseline dynamics
class BaselineDynamics:
    """``mobiwm_env`` dynamics backed by a learned ``worldmodel.baselines`` world model (GRU,
    iTransformer, RSSM or TD-MPC2 style).

    Same interface as ``mobiwm_env.dynamics.WorldModelDynamics``: ``step`` is one
    ``rollout_batch`` call for all ``E`` envs; unserved traffic is not modelled (NaN).
    """

    name = "world_model"

    def __init__(self, scenario: Scenario, n_envs: int, checkpoint: str | Path) -> None:
        from worldmodel.baselines import load_world_model

        self.scenario = scenario
        self.n_envs = int(n_envs)
        self.checkpoint = str(checkpoint)
        self.model = load_world_model(checkpoint, map_location="cpu")
        self.history = int(self.model.history)
        self.horizon = int(self.model.horizon)
        self.active = scenario.init_active.copy()
        self._cell_xy = torch.as_tensor(scenario.cell_xy_m.astype(np.float32))
        self._extent = float(scenario.extent_m)
        from mobiwm_env.dynamics import ServingMapper

        self._mapper = ServingMapper(scenario)

    def reset(self, env_ids, slots, params, warmups, seed) -> None:
        pass  # deterministic and stateless

    def step(self, params, hist_traffic, hist_params, slots, n_slots) -> DynamicsStep:
        h, p = self.history, self.horizon
        k = max(1, math.ceil(int(n_slots) / p))
        e, n = params.shape[0], params.shape[1]
        t = h + k * p
        fut = np.broadcast_to(params.astype(np.float32)[:, None], (e, k * p, n, 4))
        actions = np.concatenate([hist_params[:, -h:].astype(np.float32), fut], axis=1)
        traffic = np.zeros((e, t, n), dtype=np.float32)
        traffic[:, :h] = hist_traffic[:, -h:]
        abs_slots = slots[:, None] + np.arange(-h, k * p)[None, :]
        batch = {
            "traffic": torch.as_tensor(traffic),
            "actions": torch.as_tensor(np.ascontiguousarray(actions)),
            "active": torch.as_tensor(np.broadcast_to(self.active, (e, t, n)).copy()),
            "cell_mask": torch.ones(e, n, dtype=torch.bool),
            "slot_of_day": torch.as_tensor(abs_slots % SLOTS_PER_DAY),
            "day_of_week": torch.as_tensor((abs_slots // SLOTS_PER_DAY) % DAYS_PER_WEEK),
            "cell_xy": self._cell_xy.expand(e, n, 2),
            "extent_m": torch.full((e,), self._extent),
        }
        with torch.no_grad():
            out = self.model.rollout_batch(batch, k)
        pred = out[:, : int(n_slots)].cpu().numpy().astype(np.float64)
        pred = np.where(self.active, np.maximum(pred, 0.0), 0.0)
        return DynamicsStep(pred, np.full((e, int(n_slots)), np.nan))

    def serving_map(self, env: int, params: np.ndarray, slot: int) -> np.ndarray:
        return self._mapper(params, self.active, slot)

    def close(self) -> None:
        pass


def _install_baseline_dynamics(core: LoadBalanceCore, checkpoint: str | Path) -> None:
    """Replace a core's twin dynamics by a learned baseline world model (see module doc)."""
    dyn = BaselineDynamics(core.scenario, core.n_envs, checkpoint)
    if dyn.history > core.config.warmup_slots:
        raise ValueError(
            f"the world model reads H={dyn.history} slots but warmup_slots="
            f"{core.config.warmup_slots}"
        )
    core.dynamics = dyn
    core.models_unserved = False
    if core.config.shortfall_mode == "noop":  # the same objective as on MobiWM (reference.py)
        core.use_reference(
            NoChangeReference(
                core,
                checkpoint=checkpoint,
                install=lambda c: _install_baseline_dynamics(c, checkpoint),
            )
        )


# ============================================================================ construction
def env_kwargs_for(backend: str, checkpoint: str | Path | None, **kwargs: Any) -> dict[str, Any]:
    """Keyword arguments of ``gym.make_vec`` for ``backend`` (drops ``checkpoint`` for the twin)."""
    out = dict(kwargs)
    if backend_of(backend) == "world_model" and checkpoint not in (None, ""):
        out["checkpoint"] = str(checkpoint)
    return out


def make_vector_env(
    backend: str,
    num_envs: int,
    checkpoint: str | Path | None = None,
    autoreset_mode: AutoresetMode = AutoresetMode.NEXT_STEP,
    render_mode: str | None = None,
    **kwargs: Any,
) -> gym.vector.VectorEnv:
    """The natively batched env of ``backend``; ``checkpoint`` may be any world-model checkpoint
    (MobiWM, Static-MobiWM or a learned baseline). ``kwargs``: ``EnvConfig`` fields."""
    eid = env_id_of(backend)
    baseline = backend_of(eid) == "world_model" and checkpoint_format(checkpoint) == "baseline"
    if baseline:
        eid = mobiwm_env.TWIN_ID
    venv = gym.make_vec(
        eid,
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        autoreset_mode=autoreset_mode,
        render_mode=render_mode,
        **env_kwargs_for(eid, checkpoint, **kwargs),
    )
    if baseline:
        _install_baseline_dynamics(find_core(venv), resolve_checkpoint(checkpoint))
    return venv


def make_sb3_env(
    backend: str,
    num_envs: int,
    checkpoint: str | Path | None = None,
    wrap: Callable[[Any], Any] | None = None,
    **kwargs: Any,
) -> SB3VecEnv:
    """``make_vector_env`` in SAME_STEP autoreset mode wrapped for Stable-Baselines3;
    ``wrap`` (e.g. ``SafetyShield``) wraps the Gymnasium vector env first."""
    venv = make_vector_env(
        backend, num_envs, checkpoint, autoreset_mode=AutoresetMode.SAME_STEP, **kwargs
    )
    return SB3VecEnv(venv if wrap is None else wrap(venv))


def make_core(
    config: EnvConfig, n_envs: int, checkpoint: str | Path | None = None
) -> LoadBalanceCore:
    """A batched world-model core with ``config``'s spaces and objective, for planning."""
    fmt = checkpoint_format(checkpoint)
    ckpt = str(resolve_checkpoint(checkpoint))
    if fmt == "baseline":
        core = LoadBalanceCore(dataclasses.replace(config, dynamics="twin"), n_envs)
        _install_baseline_dynamics(core, ckpt)
        return core
    return LoadBalanceCore(
        dataclasses.replace(config, dynamics="world_model", checkpoint=ckpt), n_envs
    )
