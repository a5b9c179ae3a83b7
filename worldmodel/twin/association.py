"""Cell association: strongest cell above Qrxlevmin, handover by the A3 event with hysteresis.

Each demand pixel behaves like one user equipment. Functions work on a batch of ``E``
independent networks (sub-environments) over the same ``P`` pixels with ``K`` candidate cells
per pixel; mean RSRP is ``[E, P, K]`` dBm with ``-inf`` for switched-off cells. Serving state
is a candidate *column* (0..K-1) or ``-1`` for unserved.

Rules per slot (3GPP TS 36.331 A3 / TS 36.304 S-criterion, at slot granularity):
1. An unserved pixel camps on its strongest candidate if that is ≥ Qrxlevmin.
2. A served pixel whose serving RSRP fell below Qrxlevmin (cell off, tilt, power cut)
   re-selects at once: the strongest candidate if ≥ Qrxlevmin, else it becomes unserved.
3. Otherwise it hands over to the strongest neighbour only once that neighbour has beaten
   the serving cell by ``hysteresis + offset`` dB for ``time_to_trigger`` consecutive slots.

Measurements fluctuate from slot to slot (fast fading): the two strongest candidates by mean
RSRP and the serving cell each get an independent Gaussian perturbation per slot. Weaker
candidates cannot win in practice, so this costs ``O(E·P)`` per slot instead of ``O(E·P·K)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class A3State:
    """Per-pixel association state for ``E`` networks (all ``[E, P]`` int32)."""

    serving_col: np.ndarray  # candidate column, -1 = unserved
    target_col: np.ndarray  # candidate that currently satisfies A3, -1 = none
    ttt_count: np.ndarray  # consecutive slots the A3 condition has held for target_col

    @classmethod
    def empty(cls, n_envs: int, n_pixels: int) -> A3State:
        shape = (n_envs, n_pixels)
        return cls(
            serving_col=np.full(shape, -1, dtype=np.int32),
            target_col=np.full(shape, -1, dtype=np.int32),
            ttt_count=np.zeros(shape, dtype=np.int32),
        )


def top2(rsrp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Columns and values of the two strongest candidates, strongest first (``[E, P, 2]``)."""
    if rsrp.shape[-1] == 1:
        cols = np.zeros(rsrp.shape[:-1] + (2,), dtype=np.int32)
        vals = np.concatenate([rsrp, np.full_like(rsrp, -np.inf)], axis=-1)
        return cols, vals
    part = np.argpartition(-rsrp, 1, axis=-1)[..., :2]
    vals = np.take_along_axis(rsrp, part, axis=-1)
    swap = vals[..., 1] > vals[..., 0]
    part[swap] = part[swap][:, ::-1]
    vals[swap] = vals[swap][:, ::-1]
    return part.astype(np.int32), vals


def strongest(top_cols: np.ndarray, top_vals: np.ndarray, q_rxlevmin_dbm: float) -> np.ndarray:
    """Strongest candidate column per pixel ``[E, P]``, ``-1`` where none reaches Qrxlevmin."""
    return np.where(top_vals[..., 0] >= q_rxlevmin_dbm, top_cols[..., 0], -1).astype(np.int32)


def a3_step(
    state: A3State,
    top_cols: np.ndarray,
    top_vals: np.ndarray,
    serving_rsrp: np.ndarray,
    q_rxlevmin_dbm: float,
    hysteresis_db: float,
    offset_db: float,
    time_to_trigger: int,
    fading: np.ndarray | None = None,
) -> np.ndarray:
    """Advance the association by one slot in place; returns A3 handovers per network ``[E]``.

    ``top_cols/top_vals [E, P, 2]`` from ``top2`` of the mean RSRP; ``serving_rsrp [E, P]`` the
    mean RSRP of the serving column (``-inf`` when unserved); ``fading [3, E, P]`` dB added to
    the strongest, second strongest and (if it is neither) the serving candidate.
    """
    v1, v2 = top_vals[..., 0], top_vals[..., 1]
    c1, c2 = top_cols[..., 0], top_cols[..., 1]
    serving = state.serving_col
    sv = serving_rsrp
    if fading is not None:
        v1, v2 = v1 + fading[0], v2 + fading[1]
        sv = np.where(serving == c1, v1, np.where(serving == c2, v2, sv + fading[2]))
    served = serving >= 0
    sv = np.where(served, sv, -np.inf)
    second_wins = v2 > v1
    best = np.where(second_wins, c2, c1)
    best_rsrp = np.where(second_wins, v2, v1)

    lost = ~served | (sv < q_rxlevmin_dbm)  # rules 1 and 2: immediate (re)selection
    reselect = np.where(best_rsrp >= q_rxlevmin_dbm, best, -1)
    a3 = ~lost & (best != serving) & (best_rsrp > sv + hysteresis_db + offset_db)
    same_target = a3 & (state.target_col == best)
    count = np.where(same_target, state.ttt_count + 1, a3.astype(np.int32))
    handover = a3 & (count >= time_to_trigger)

    state.serving_col = np.where(lost, reselect, np.where(handover, best, serving)).astype(np.int32)
    pending = a3 & ~handover
    state.target_col = np.where(pending, best, -1).astype(np.int32)
    state.ttt_count = np.where(pending, count, 0).astype(np.int32)
    return handover.sum(axis=1)
