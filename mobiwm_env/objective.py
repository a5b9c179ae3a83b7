"""The load-balancing objective of MobiWM §5.6 (Eq. 21), computed in this one place.

Per env step (``P`` simulated slots, ``N`` cells, batched over ``E`` envs)::

    r = -(1 / mean(s*)) * Σ_t ||ŝ_t − s*_t||_1  −  λ_Δ · |Δa|  [ − (λ_U / mean(s*)) · Σ_t u_t ]

* ``ŝ_t [N]``: traffic of slot ``t`` (MB per slot), ``s*_t [N]``: the target of that slot.
* The L1 norm and ``mean(s*)`` run over the *active* cells only (padded and switched-off cells
  never count); ``mean(s*)`` is the mean over the ``P`` slots and the active cells.
  ``imbalance = Σ_t ||ŝ_t − s*_t||_1`` is reported in ``info["imbalance"]`` (MB).
* ``|Δa|``: the mean absolute *normalised* parameter change actually applied this step,
  ``mean_{active i, j} |p_new[i, j] − p_old[i, j]| / max_step[j]`` (azimuth difference wrapped
  to ``(−180°, 180°]``), so ``|Δa| ∈ [0, 1]``: 0 = nothing moved, 1 = every parameter of every
  active cell moved by its full per-step limit. Clipping at the scenario bounds counts as not
  moving. Reported in ``info["action_change"]``.

The bracketed term is our extension, off by default (``λ_U = 0`` is Eq. 21 exactly):
``u_t = max(D_t − Σ_i ŝ_t,i, 0)`` is the *shortfall* of slot ``t``, the map's offered demand
``D_t`` (exogenous, from the twin's demand model, known to both backends) minus the traffic the
cells carry. On the twin it equals the unserved traffic (never negative); on a world model it is
the model's estimate, floored at 0: traffic predicted above the offered demand is a model error,
and without the floor it paid a *bonus* that PPO learned to farm (measured: a policy whose
world-model shortfall was −179 MB/slot; ``docs/agents.md``). It closes a loophole of Eq. 21: the
balanced target shares only the traffic that is *served*, so a policy can "balance" by shrinking
the coverage of busy cells and leaving their users unserved. Under the balanced target, shedding
``x`` MB lowers the L1 term by at most ``2x`` (``x`` at the cell, at most ``x`` more through the
shrunken targets of the others; triangle inequality), so ``λ_U ≥ 2`` makes shedding never pay
(to first order: ``mean(s*)`` shrinks too). Reported in ``info["shortfall"]`` (MB per slot).

Targets (physical units, MB per slot):

* default, ``"balanced"``: each active cell's capacity-weighted share of the map's total
  traffic in that slot, ``s*_t,i = ŝ_t,total · c_i / Σ_active c_j``. It redistributes the
  traffic that actually occurred, so only the *distribution* over cells is judged.
* a user array ``[N]`` (the same target every slot) or ``[T, N]`` (row ``slot mod T``, with
  ``slot`` the absolute slot index: ``T = 96`` gives a daily profile, ``T = 672`` a weekly one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worldmodel.twin.scenario import AZIMUTH

EPS_TARGET_MB = 1e-6
"""Floor of ``mean(s*)`` (MB) so the reward stays finite for an all-zero target."""


@dataclass(frozen=True)
class Target:
    """A per-cell traffic target: the balanced default or a fixed user array.

    ``cell_weight [N]`` holds the capacity of every active cell (0 for inactive ones) and is
    used by the balanced target; ``table [T, N]`` is the user target (``None`` = balanced).
    """

    cell_weight: np.ndarray  # [N] float64
    table: np.ndarray | None = None  # [T, N] float64, MB per slot

    @property
    def kind(self) -> str:
        return "balanced" if self.table is None else "fixed"

    @classmethod
    def make(
        cls,
        target: str | np.ndarray | None,
        cell_capacity: np.ndarray,
        active: np.ndarray,
    ) -> Target:
        """Build from the env kwarg: ``None`` / ``"balanced"`` or an array ``[N]`` / ``[T, N]``."""
        cap = np.asarray(cell_capacity, dtype=np.float64)
        n = cap.shape[0]
        weight = np.where(np.asarray(active, dtype=bool), cap, 0.0)
        if target is None or (isinstance(target, str) and target == "balanced"):
            return cls(weight, None)
        if isinstance(target, str):
            raise ValueError(f"target: unknown target {target!r}; use 'balanced' or an array")
        arr = np.asarray(target, dtype=np.float64)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != n or arr.shape[0] < 1:
            raise ValueError(
                f"target: expected shape [{n}] or [T, {n}] (MB per slot), got {arr.shape}"
            )
        if not np.isfinite(arr).all() or (arr < 0).any():
            raise ValueError("target: values must be finite and >= 0 (MB per slot)")
        return cls(weight, arr.copy())

    def __call__(self, traffic: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """Target ``[E, P, N]`` for ``traffic [E, P, N]`` at absolute ``slots [E, P]``."""
        if self.table is None:
            return balanced_target(traffic, self.cell_weight)
        rows = np.mod(np.asarray(slots, dtype=np.int64), self.table.shape[0])
        return np.broadcast_to(self.table[rows], traffic.shape).copy()


def balanced_target(traffic: np.ndarray, cell_weight: np.ndarray) -> np.ndarray:
    """``[..., N]``: each slot's map total shared over cells in proportion to ``cell_weight [N]``
    (capacity of active cells, 0 elsewhere)."""
    w = np.asarray(cell_weight, dtype=np.float64)
    share = w / max(float(w.sum()), 1e-12)
    return np.asarray(traffic, dtype=np.float64).sum(-1, keepdims=True) * share


def imbalance(traffic: np.ndarray, target: np.ndarray, active: np.ndarray) -> np.ndarray:
    """``Σ_t ||ŝ_t − s*_t||_1`` over active cells: ``[E]`` MB from ``[E, P, N]`` arrays.

    ``active`` is ``[N]`` or ``[E, N]``.
    """
    act = np.asarray(active, dtype=bool)
    act = act[None, None, :] if act.ndim == 1 else act[:, None, :]
    return np.where(act, np.abs(traffic - target), 0.0).sum(axis=(1, 2))


def target_mean(target: np.ndarray, active: np.ndarray) -> np.ndarray:
    """``mean(s*)`` over the slots and active cells of each env: ``[E]`` MB (floored)."""
    act = np.asarray(active, dtype=bool)
    act = act[None, None, :] if act.ndim == 1 else act[:, None, :]
    act = np.broadcast_to(act, target.shape)
    count = np.maximum(act.sum(axis=(1, 2)), 1)
    mean = np.where(act, target, 0.0).sum(axis=(1, 2)) / count
    return np.maximum(mean, EPS_TARGET_MB)


def cell_action_change(
    old_params: np.ndarray, new_params: np.ndarray, max_step: np.ndarray, active: np.ndarray
) -> np.ndarray:
    """Per cell ``mean_j |p_new[i, j] − p_old[i, j]| / max_step[j]``: ``[E, N]`` (0 for
    inactive cells) from ``[E, N, 4]`` physical parameters and ``max_step [4]``."""
    diff = np.asarray(new_params, dtype=np.float64) - np.asarray(old_params, dtype=np.float64)
    diff[..., AZIMUTH] = (diff[..., AZIMUTH] + 180.0) % 360.0 - 180.0
    norm = np.abs(diff) / np.asarray(max_step, dtype=np.float64)
    act = np.asarray(active, dtype=bool)
    act = np.broadcast_to(act if act.ndim == 2 else act[None, :], norm.shape[:2])
    return np.where(act, norm.mean(axis=-1), 0.0)


def action_change(
    old_params: np.ndarray, new_params: np.ndarray, max_step: np.ndarray, active: np.ndarray
) -> np.ndarray:
    """``|Δa|``: mean ``|p_new − p_old| / max_step`` over active cells and the 4 parameters.

    ``old_params``/``new_params`` ``[E, N, 4]`` physical, ``max_step [4]``; returns ``[E]``.
    """
    per_cell = cell_action_change(old_params, new_params, max_step, active)
    act = np.asarray(active, dtype=bool)
    act = np.broadcast_to(act if act.ndim == 2 else act[None, :], per_cell.shape)
    return per_cell.sum(axis=1) / np.maximum(act.sum(axis=1), 1)


def shortfall(traffic: np.ndarray, demand: np.ndarray) -> np.ndarray:
    """``u_t = max(D_t − Σ_i ŝ_t,i, 0)``: ``[E, P]`` MB from ``traffic [E, P, N]`` and
    ``demand [E, P]`` (floored: traffic above the offered demand earns nothing; module doc)."""
    carried = np.asarray(traffic, dtype=np.float64).sum(-1)
    return np.maximum(np.asarray(demand, dtype=np.float64) - carried, 0.0)


def reward(
    traffic: np.ndarray,
    target: np.ndarray,
    active: np.ndarray,
    delta: np.ndarray,
    lambda_delta: float,
    short: np.ndarray | None = None,
    lambda_unserved: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 21 per env (plus the optional shortfall term): returns ``(reward [E], imbalance [E])``.

    ``traffic``/``target`` ``[E, P, N]`` MB, ``active [N]`` or ``[E, N]``, ``delta [E]`` the
    ``|Δa|`` of ``action_change``, ``short [E, P]`` the shortfall ``u_t`` (MB; needed only when
    ``lambda_unserved > 0``).
    """
    imb = imbalance(traffic, target, active)
    norm = target_mean(target, active)
    r = -imb / norm - float(lambda_delta) * np.asarray(delta)
    if lambda_unserved:
        if short is None:
            raise ValueError("reward: lambda_unserved > 0 needs the shortfall [E, P]")
        r = r - float(lambda_unserved) * np.asarray(short, dtype=np.float64).sum(-1) / norm
    return r, imb


def cell_rewards(
    traffic: np.ndarray,
    target: np.ndarray,
    active: np.ndarray,
    cell_delta: np.ndarray,
    lambda_delta: float,
    demand: np.ndarray | None = None,
    cell_weight: np.ndarray | None = None,
    lambda_unserved: float = 0.0,
) -> np.ndarray:
    """The reward of ``reward`` split over the cells: ``[E, N]``, 0 for inactive cells, summing
    over cells to ``reward(...)[0]`` (with ``short = shortfall(traffic, demand)``).

    Cell ``i`` gets its own L1 term ``−Σ_t |ŝ_t,i − s*_t,i| / mean(s*)``, its share of the change
    penalty ``−λ_Δ · d_i / n`` (``d_i`` of ``cell_action_change``, ``n`` active cells) and its
    part of the shortfall term: in every slot where the map falls short (``u_t > 0``),
    ``−λ_U (w_i D_t − ŝ_t,i) / mean(s*)``, the demand it is responsible for (its capacity share
    ``w_i`` of ``cell_weight``) minus the traffic it carries. These parts sum to
    ``−λ_U u_t / mean(s*)`` exactly, and a cell that sheds traffic its neighbours do not pick up
    pays for it itself. For multi-agent learners that credit each cell (or neighbourhood) with
    its own part (``agents.cell_ppo``).

    ``demand [E, P]`` MB (the offered demand of ``shortfall``) and ``cell_weight [N]`` are
    needed only when ``lambda_unserved > 0``.
    """
    act = np.asarray(active, dtype=bool)
    act2 = np.broadcast_to(act if act.ndim == 2 else act[None, :], np.shape(cell_delta))
    norm = target_mean(target, active)[:, None]
    n = np.maximum(act2.sum(axis=1, keepdims=True), 1)
    traffic = np.asarray(traffic, dtype=np.float64)
    l1 = np.where(act2[:, None, :], np.abs(traffic - target), 0.0).sum(axis=1)
    r = -l1 / norm - float(lambda_delta) * np.asarray(cell_delta) / n
    if lambda_unserved:
        if demand is None or cell_weight is None:
            raise ValueError("cell_rewards: lambda_unserved > 0 needs demand and cell_weight")
        w = np.where(act2, np.asarray(cell_weight, dtype=np.float64), 0.0)
        w = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)  # [E, N]
        dem = np.asarray(demand, dtype=np.float64)  # [E, P]
        carried = np.where(act2[:, None, :], traffic, 0.0)
        short = dem > carried.sum(-1)  # u_t > 0
        owed = (dem[:, :, None] * w[:, None, :] - carried) * short[:, :, None]  # [E, P, N]
        r = r - float(lambda_unserved) * owed.sum(axis=1) / norm
    return np.where(act2, r, 0.0)
