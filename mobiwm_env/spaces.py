"""Observation and action spaces, their layout and the (de)normalisation of parameters.

Action: ``Box(-1, 1, (M*4,), float32)``, cell-major: index ``4*i + j`` is parameter ``j``
(``power_dbm, azimuth_deg, mech_tilt_deg, elec_tilt_deg``) of cell ``i``. It is a per-step
*change*: ``p_new = clip(p_old + a * max_step)`` (azimuth wraps around 360°). Padded cells
(``i >= N``) and switched-off cells ignore their actions. Finite values outside ``[-1, 1]``
are clipped; non-finite values, a wrong shape or a non-numeric dtype raise ``ValueError``.

Observation: a flat ``Box(float32)`` of ``M`` (= ``max_cells``) cells, ``Hh`` =
``history_slots``; blocks in this order (``obs_layout`` gives name → slice)::

    traffic   [M, Hh]  log1p(traffic / scale) clipped to [0, obs_clip], oldest slot first
    params    [M, 5]   power, sin(azimuth), cos(azimuth), mech tilt, elec tilt in [-1, 1]
                       (power and tilts: 2 (p - low) / (high - low) - 1 over the scenario bounds)
    target    [M]      log1p(s* / scale) clipped, s* = target of the latest observed slot
    mask      [M]      1 for a real, active cell; 0 for padding (all its features are 0)
    time      [4]      sin, cos of slot-of-day and of day-of-week of the next slot

``scale`` is ``traffic_scale_mb`` (default: the scenario's mean cell capacity, MB per slot).
The same normalisation is used by both backends.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from worldmodel.twin.scenario import (
    AZIMUTH,
    DAYS_PER_WEEK,
    ELEC_TILT,
    MECH_TILT,
    POWER,
    SLOTS_PER_DAY,
    ParamBounds,
)

PARAM_FEATURES = 5
"""Per-cell parameter features: power, sin(az), cos(az), mech tilt, elec tilt."""
TIME_FEATURES = 4


def obs_shapes(max_cells: int, history_slots: int) -> dict[str, tuple[int, ...]]:
    """Block name → shape of the observation blocks (see the module doc)."""
    m = int(max_cells)
    return {
        "traffic": (m, int(history_slots)),
        "params": (m, PARAM_FEATURES),
        "target": (m,),
        "mask": (m,),
        "time": (TIME_FEATURES,),
    }


def obs_layout(max_cells: int, history_slots: int) -> dict[str, slice]:
    """Block name → slice of the flat observation (see the module doc for each block)."""
    out, start = {}, 0
    for name, shape in obs_shapes(max_cells, history_slots).items():
        size = int(np.prod(shape))
        out[name] = slice(start, start + size)
        start += size
    return out


def obs_size(max_cells: int, history_slots: int) -> int:
    return obs_layout(max_cells, history_slots)["time"].stop


def unflatten_obs(obs: np.ndarray, max_cells: int, history_slots: int) -> dict[str, np.ndarray]:
    """Split observations ``[..., D]`` into named blocks ``[..., *shape]`` (views)."""
    obs = np.asarray(obs)
    shapes = obs_shapes(max_cells, history_slots)
    return {
        name: obs[..., sl].reshape(*obs.shape[:-1], *shapes[name])
        for name, sl in obs_layout(max_cells, history_slots).items()
    }


def observation_space(max_cells: int, history_slots: int, obs_clip: float) -> spaces.Box:
    """The flat, bounded observation space."""
    layout = obs_layout(max_cells, history_slots)
    d = layout["time"].stop
    low = np.full(d, -1.0, dtype=np.float32)
    high = np.ones(d, dtype=np.float32)
    for name in ("traffic", "target", "mask"):
        low[layout[name]] = 0.0
    for name in ("traffic", "target"):
        high[layout[name]] = obs_clip
    return spaces.Box(low=low, high=high, dtype=np.float32)


def action_space(max_cells: int) -> spaces.Box:
    """``Box(-1, 1, (max_cells * 4,), float32)``, cell-major."""
    return spaces.Box(-1.0, 1.0, shape=(int(max_cells) * 4,), dtype=np.float32)


def normalize_params(params: np.ndarray, bounds: ParamBounds) -> np.ndarray:
    """Physical ``[..., 4]`` → features ``[..., 5]`` in ``[-1, 1]`` (see the module doc)."""
    p = np.asarray(params, dtype=np.float64)
    low, high = bounds.low_high()
    out = np.empty(p.shape[:-1] + (PARAM_FEATURES,), dtype=np.float64)
    az = np.deg2rad(p[..., AZIMUTH])
    for k, j in ((0, POWER), (3, MECH_TILT), (4, ELEC_TILT)):
        out[..., k] = 2.0 * (p[..., j] - low[j]) / (high[j] - low[j]) - 1.0
    out[..., 1] = np.sin(az)
    out[..., 2] = np.cos(az)
    return np.clip(out, -1.0, 1.0)


def time_features(slot: np.ndarray) -> np.ndarray:
    """``[..., 4]``: sin, cos of slot-of-day and of day-of-week of absolute ``slot`` (0 = Mon 00:00)."""
    s = np.asarray(slot, dtype=np.int64)
    sod = 2.0 * np.pi * (s % SLOTS_PER_DAY) / SLOTS_PER_DAY
    dow = 2.0 * np.pi * ((s // SLOTS_PER_DAY) % DAYS_PER_WEEK) / DAYS_PER_WEEK
    return np.stack([np.sin(sod), np.cos(sod), np.sin(dow), np.cos(dow)], axis=-1)


def validate_actions(actions: object, shape: tuple[int, ...]) -> np.ndarray:
    """Check an action batch and return it as float64, clipped to ``[-1, 1]``.

    Raises ``ValueError`` for a non-numeric dtype, a wrong shape, or NaN/inf (naming the cell
    and parameter of the first bad value).
    """
    arr = np.asarray(actions)
    if arr.dtype.kind not in "fiu":
        raise ValueError(
            f"action: dtype {arr.dtype} is not a real number type; expected float32 values "
            f"in [-1, 1] of shape {shape}"
        )
    if arr.shape != shape:
        raise ValueError(
            f"action: expected shape {shape} (cell-major, 4 parameters per cell), got {arr.shape}"
        )
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        flat = idx[-1]
        where = f"cell {flat // 4}, parameter {flat % 4}"
        if len(idx) > 1 and shape[0] > 1:
            where += f", env {idx[0]}"
        raise ValueError(
            f"action: non-finite value {arr[idx]} at index {idx} ({where}); actions must be "
            "finite numbers in [-1, 1]"
        )
    return np.clip(arr, -1.0, 1.0)
