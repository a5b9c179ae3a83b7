"""Piecewise-constant action schedules for the Para and Topo datasets (paper §5.1.1).

A schedule is a pair ``actions [T, N, 4]`` (physical parameters in effect during each slot)
and ``active [T, N]`` (cell radiating). Para: a fixed cell set of which ``change_fraction``
of cells change parameters at random times — mostly moderate steps an engineer would try,
sometimes large excursions anywhere inside the bounds. Topo: cells are switched off (some come
back later) and dormant cells are inserted (switched on) at random times; a share of the maps
also carry Para changes.

Night sleep (``night_sleep``, both datasets): operators switch a share of cells off in the
small hours to save energy; their users move to the neighbours. Calibrated on the real traces
(``NJTCH``): zero-traffic hours are night hours (1-5 h local) of about 56% of the cells,
whatever their size, about 3 hours a night (0.65 of the cells sleep here: the hours at either
end of a sleep are partly served, so fewer of them are zero).

Branches (counterfactual siblings): ``branch_schedule`` copies a map's schedule and overlays
short *trials* — a random share of cells moved by bounded offsets, or a whole site switched
off — each held for a few hours and then undone. The generator runs the base map and its
branches side by side in one twin with common random numbers (same demand, same fading), so
the traffic difference between a map and its branch is caused by the actions alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worldmodel.twin.scenario import ParamBounds


@dataclass(frozen=True)
class ScheduleConfig:
    """How parameters and topology change over a generated map."""

    change_fraction: float = 0.4  # share of (initially active) cells whose parameters change
    changes_per_cell: float = 3.0  # mean number of changes of a changing cell per week
    min_hold_slots: int = 8  # shortest time between two changes of one cell (2 h)
    excursion_prob: float = 0.15  # share of changes that jump anywhere inside the bounds
    revert_prob: float = 0.25  # share of changes that return to the original parameters
    step_power_db: tuple[float, float] = (1.0, 4.0)  # |moderate step| range per parameter
    step_azimuth_deg: tuple[float, float] = (5.0, 35.0)
    step_mech_tilt_deg: tuple[float, float] = (1.0, 4.0)
    step_elec_tilt_deg: tuple[float, float] = (1.0, 4.0)
    off_fraction: float = 0.08  # Topo: share of cells switched off at some time
    off_return_prob: float = 0.5  # Topo: chance a switched-off cell comes back
    topo_para_prob: float = 0.4  # Topo: share of maps that also carry parameter changes

    def __post_init__(self) -> None:
        for name in ("change_fraction", "excursion_prob", "revert_prob", "off_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"ScheduleConfig.{name}={v} must lie in [0, 1]")
        if self.min_hold_slots < 1:
            raise ValueError(f"ScheduleConfig.min_hold_slots={self.min_hold_slots} must be >= 1")


@dataclass(frozen=True)
class SleepConfig:
    """Night-time energy saving: which cells sleep (radiate nothing) and when."""

    cell_fraction: float = 0.65  # share of cells with energy saving (0 disables it)
    night_prob: float = 0.9  # chance that such a cell sleeps on a given night
    start_hour_probs: tuple[float, ...] = (0.0, 0.48, 0.20, 0.23, 0.09)  # P(start at h = 0, 1..)
    end_hours: tuple[int, int] = (5, 6)  # a sleep ends at 05:00, or at 06:00 ...
    late_end_prob: float = 0.24  # ... with this probability (per cell)

    def __post_init__(self) -> None:
        for name in ("cell_fraction", "night_prob", "late_end_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"SleepConfig.{name}={v} must lie in [0, 1]")
        p = np.asarray(self.start_hour_probs, dtype=np.float64)
        if p.size == 0 or (p < 0).any() or not np.isclose(p.sum(), 1.0):
            raise ValueError(f"SleepConfig.start_hour_probs={self.start_hour_probs} must sum to 1")
        lo, hi = self.end_hours
        if not (p.size - 1 < lo <= hi <= 24):
            raise ValueError(
                f"SleepConfig.end_hours={self.end_hours} must satisfy "
                f"{p.size - 1} < early <= late <= 24 (after the latest start hour)"
            )


def night_sleep(
    active: np.ndarray,
    start_slot: int,
    rng: np.random.Generator,
    cfg: SleepConfig | None = None,
    slots_per_day: int = 96,
) -> np.ndarray:
    """``active [T, N]`` with the night sleeps of ``cfg`` switched off (a new array).

    Row ``t`` is absolute slot ``start_slot + t`` (slot 0 = Monday 00:00). Each of a random
    ``cell_fraction`` of the cells gets a start hour and an end hour; on each night (drawn
    with ``night_prob``) it sleeps from a slot within the start hour to a slot within the end
    hour (uniform, so the hours at either end are partly served).
    """
    cfg = cfg or SleepConfig()
    out = np.array(active, dtype=bool, copy=True)
    t_len, n = out.shape
    k = int(round(cfg.cell_fraction * n))
    if k == 0 or t_len == 0:
        return out
    per_hour = slots_per_day // 24
    cells = np.sort(rng.choice(n, size=k, replace=False))
    start_h = rng.choice(len(cfg.start_hour_probs), size=k, p=cfg.start_hour_probs)
    end_h = np.where(rng.random(k) < cfg.late_end_prob, cfg.end_hours[1], cfg.end_hours[0])
    first_day = start_slot // slots_per_day
    last_day = (start_slot + t_len - 1) // slots_per_day
    for day in range(first_day, last_day + 1):
        sleeps = rng.random(k) < cfg.night_prob
        jitter = rng.integers(0, per_hour, size=(2, k))  # start and end within their hour
        base = day * slots_per_day - start_slot
        a = base + start_h * per_hour + jitter[0]
        b = base + end_h * per_hour + jitter[1]
        for c, lo, hi in zip(cells[sleeps], a[sleeps], b[sleeps], strict=True):
            out[max(lo, 0) : max(min(hi, t_len), 0), c] = False
    return out


def _change_slots(rng: np.random.Generator, n_slots: int, cfg: ScheduleConfig) -> np.ndarray:
    """Sorted change times of one cell, at least ``min_hold_slots`` apart, never at slot 0."""
    k = rng.poisson(cfg.changes_per_cell * n_slots / 672.0)
    k = int(np.clip(k, 1, max(1, (n_slots - 1) // cfg.min_hold_slots)))
    slots = np.sort(rng.choice(np.arange(1, n_slots), size=min(k, n_slots - 1), replace=False))
    keep = [slots[0]]
    for s in slots[1:]:
        if s - keep[-1] >= cfg.min_hold_slots:
            keep.append(s)
    return np.asarray(keep, dtype=np.int64)


def _new_params(
    rng: np.random.Generator,
    current: np.ndarray,
    original: np.ndarray,
    bounds: ParamBounds,
    cfg: ScheduleConfig,
) -> np.ndarray:
    """Next parameters of a changing cell; always differs from ``current``.

    A revert is drawn only when the cell is away from its original parameters; a step that
    the bounds clip back to the current value is drawn again.
    """
    low, high = bounds.low_high()
    steps = (
        cfg.step_power_db,
        cfg.step_azimuth_deg,
        cfg.step_mech_tilt_deg,
        cfg.step_elec_tilt_deg,
    )
    for _ in range(32):
        u = rng.random()
        if u < cfg.revert_prob:
            if np.array_equal(current, original):
                continue
            return original.copy()
        out = current.copy()
        if u < cfg.revert_prob + cfg.excursion_prob:
            j = rng.integers(4)
            out[j] = rng.uniform(low[j], high[j])
        else:
            for j in rng.choice(4, size=rng.integers(1, 3), replace=False):
                out[j] += rng.choice([-1.0, 1.0]) * rng.uniform(*steps[j])
        out = bounds.clip(out)
        if np.abs(out - current).max() > 1e-3:
            return out
    raise RuntimeError("could not draw a parameter change inside the bounds")  # pragma: no cover


def _constant_schedule(
    init_params: np.ndarray, init_active: np.ndarray, n_slots: int
) -> tuple[np.ndarray, np.ndarray]:
    """The initial parameters and active flags held for ``n_slots``: ``[T, N, 4]``, ``[T, N]``."""
    n = init_params.shape[0]
    actions = np.broadcast_to(init_params, (n_slots, n, 4)).astype(np.float32)
    return actions, np.broadcast_to(init_active, (n_slots, n)).copy()


def para_schedule(
    init_params: np.ndarray,
    init_active: np.ndarray,
    n_slots: int,
    bounds: ParamBounds,
    rng: np.random.Generator,
    cfg: ScheduleConfig | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Para schedule; returns ``actions [T, N, 4]``, ``active [T, N]``, changed-cell ids."""
    cfg = cfg or ScheduleConfig()
    actions, active = _constant_schedule(init_params, init_active, n_slots)
    candidates = np.flatnonzero(init_active)
    n_change = int(round(cfg.change_fraction * len(candidates)))
    chosen = np.sort(rng.choice(candidates, size=n_change, replace=False))
    if n_slots < 2:
        return actions, active, chosen[:0]
    for c in chosen:
        current = init_params[c].astype(np.float64)
        for s in _change_slots(rng, n_slots, cfg):
            current = _new_params(rng, current, init_params[c], bounds, cfg)
            actions[s:, c] = current
    return actions, active, chosen


def topo_schedule(
    init_params: np.ndarray,
    init_active: np.ndarray,
    n_slots: int,
    bounds: ParamBounds,
    rng: np.random.Generator,
    cfg: ScheduleConfig | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, list[int]]]:
    """Topo schedule: switch-offs and insertions (+ Para changes on a share of maps).

    Dormant cells (``init_active == False``) are inserted at random times; of the active
    cells, ``off_fraction`` are switched off, and some return. Returns ``actions``, ``active``
    and a summary ``{"switched_off", "inserted", "param_changed"}`` of cell ids.
    """
    cfg = cfg or ScheduleConfig()
    with_para = rng.random() < cfg.topo_para_prob
    if with_para:
        actions, active, changed = para_schedule(
            init_params, init_active, n_slots, bounds, rng, cfg
        )
    else:
        actions, active = _constant_schedule(init_params, init_active, n_slots)
        changed = np.zeros(0, dtype=np.int64)
    live = np.flatnonzero(init_active)
    dormant = np.flatnonzero(~init_active)
    n_off = max(1, int(round(cfg.off_fraction * len(live)))) if len(live) > 1 else 0
    off = np.sort(rng.choice(live, size=n_off, replace=False))
    for c in off:
        start = int(rng.integers(1, max(2, n_slots - 1)))
        active[start:, c] = False
        if rng.random() < cfg.off_return_prob:
            back = start + int(
                rng.integers(cfg.min_hold_slots, max(cfg.min_hold_slots + 1, 2 * 96))
            )
            active[back:, c] = True
    for c in dormant:
        start = int(rng.integers(1, max(2, n_slots - 1)))
        active[start:, c] = True
    summary = {
        "switched_off": off.tolist(),
        "inserted": dormant.tolist(),
        "param_changed": changed.tolist(),
    }
    return actions, active, summary


@dataclass(frozen=True)
class BranchConfig:
    """Trials that a counterfactual branch overlays on its base schedule."""

    min_slots: int = 4  # shortest trial (1 h)
    max_slots: int = 32  # longest trial (8 h)
    max_gap_slots: int = 16  # pause between two trials is uniform in [0, max_gap_slots]
    cell_fraction: tuple[float, float] = (0.1, 0.4)  # share of active cells a trial moves
    param_prob: float = 0.6  # chance that each parameter of a moved cell changes
    max_offset: tuple[float, float, float, float] = (4.0, 40.0, 4.0, 4.0)  # dB, °, °, °
    site_off_prob: float = 0.15  # share of trials that switch one whole site off instead

    def __post_init__(self) -> None:
        if not 1 <= self.min_slots <= self.max_slots:
            raise ValueError(
                f"BranchConfig needs 1 <= min_slots <= max_slots, got {self.min_slots}, "
                f"{self.max_slots}"
            )
        if self.max_gap_slots < 0:
            raise ValueError(f"BranchConfig.max_gap_slots={self.max_gap_slots} must be >= 0")
        lo, hi = self.cell_fraction
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"BranchConfig.cell_fraction={self.cell_fraction} must be in (0, 1]")
        for name in ("param_prob", "site_off_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"BranchConfig.{name}={v} must lie in [0, 1]")


def branch_schedule(
    actions: np.ndarray,
    active: np.ndarray,
    cell_site: np.ndarray,
    bounds: ParamBounds,
    rng: np.random.Generator,
    cfg: BranchConfig | None = None,
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """A counterfactual branch of the schedule ``actions [T, N, 4]``, ``active [T, N]``.

    Trials follow one another over the whole map: each starts at slot ``s`` (never 0), lasts
    ``[min_slots, max_slots]`` slots and either adds a per-cell offset (uniform in
    ``±max_offset``, each parameter with probability ``param_prob``) to the base parameters of a
    random share of the cells active at ``s`` (clipped into ``bounds``; azimuth wraps), or
    switches off every cell of one site. After a trial the cells follow the base again.
    Returns ``(actions, active, trials)``; ``trials`` lists ``{start, stop, kind, cells}``.
    """
    cfg = cfg or BranchConfig()
    t_len, n = active.shape
    out_a = np.array(actions, dtype=np.float32, copy=True)
    out_on = np.array(active, dtype=bool, copy=True)
    step = np.asarray(cfg.max_offset, dtype=np.float64)
    sites = np.asarray(cell_site)
    trials: list[dict] = []
    s = 1 + int(rng.integers(0, cfg.max_gap_slots + 1))
    while s < t_len:
        stop = min(t_len, s + int(rng.integers(cfg.min_slots, cfg.max_slots + 1)))
        on = np.flatnonzero(active[s])
        if len(on) == 0:
            s = stop
            continue
        if rng.random() < cfg.site_off_prob:
            site = int(rng.choice(np.unique(sites[on])))
            cells = np.flatnonzero(sites == site)
            out_on[s:stop, cells] = False
            kind = "site_off"
        else:
            k = max(1, int(round(rng.uniform(*cfg.cell_fraction) * len(on))))
            cells = np.sort(rng.choice(on, size=min(k, len(on)), replace=False))
            which = rng.random((len(cells), 4)) < cfg.param_prob
            which[np.arange(len(cells)), rng.integers(0, 4, len(cells))] = True
            offset = np.where(which, rng.uniform(-1.0, 1.0, (len(cells), 4)) * step, 0.0)
            moved = out_a[s:stop, cells].astype(np.float64) + offset[None]
            out_a[s:stop, cells] = bounds.clip(moved).astype(np.float32)
            kind = "params"
        trials.append({"start": s, "stop": stop, "kind": kind, "cells": cells.tolist()})
        s = stop + int(rng.integers(0, cfg.max_gap_slots + 1))
    return out_a, out_on, trials
