"""Weekly demand-profile shapes derived from real per-cell traffic traces.

The twin's demand density (``demand.py``) multiplies a per-zone *weekly profile* (672 slots of
15 minutes, mean 1) into its demand weights. This module derives a small table of such
profiles from the MobiFM sample traces (``/work/shared/data/real-traffic``) and ships it as
``assets/demand_profiles.npz`` (+ a human-readable ``.json`` sidecar).

Week convention (used by the whole twin): slot 0 is **Monday 00:00 local time**; days 0-4
are weekdays and days 5-6 the weekend.

Method (``derive_profiles``), per trace file:

1. **Sampling period from the content, not the labels.** The daily period is the lag in
   {24, 48, 96} samples that maximises the autocorrelation of the mean normalised profile.
   ``NJTCH`` is hourly (period 24, one full week). ``NCTCM30`` has period **48**: it is
   30-minute data ("M30") covering only 84 h although its ``time`` labels claim a week of
   hours; read naively as hourly its "trough" lands at ~9-12 h. It is averaged to hourly.
2. **Hour-of-day alignment.** The reference is the first full-week file; its daily mean shape
   must have its trough (3-h circular smoothing) in 2-6 h local, else it is rolled to put the
   trough at 4 h. Every other file is rolled by the hour shift that maximises the correlation
   of its daily mean shape with the reference's. The shifts and correlations go into ``meta``.
3. **Weekend alignment.** The weekend is the pair of consecutive days whose level, relative to
   the other days, varies most across cells (office cells drop, leisure cells rise). The week
   is rolled so that this pair becomes days 5-6.
4. **Cells.** Only full-week traffic-volume files are clustered (a 3.5-day trace has no weekly
   rhythm; such files are used for the alignment cross-check only). User-count files are not
   used by the CLI: attached-but-idle phones make them much flatter than traffic, and demand
   density is traffic. Cells with more than ``MAX_ZERO_FRAC`` zero hours (zeros are night
   hours of quiet cells) or a mean below the 5th percentile are dropped; each week is
   normalised to mean 1, winsorised at ``WINSOR_CAP`` and renormalised.
5. **Clustering.** k-means (k-means++ init, ``N_RESTARTS`` restarts from ``seed``, best
   inertia) on the mean weekday and mean weekend daily shapes (48 features: far less noisy
   than the raw 168 hours, so the partition is stable across seeds); a profile is the mean
   full week of its cluster's cells. Clusters smaller than ``MIN_CLUSTER_FRAC`` of the cells are treated as outliers,
   their cells dropped and the clustering repeated.
6. **Resampling.** Each hourly centroid (values at hour centres) is interpolated to 15-minute
   slot centres with a periodic cubic spline, clipped to ``SHAPE_FLOOR`` and renormalised to
   mean 1.

Zone rule (``assign_zones``): zones pick, in this order, the profile maximising one feature
of the profile's hourly means (mean 1); the first five take a profile no earlier zone took:

* OFFICE: weekday 9-17 h mean / weekend 9-17 h mean (people at work on weekdays);
* RESIDENTIAL: 19-23 h mean over all days (evening at home);
* CAMPUS: 22-02 h mean (late-night peak of student dormitories);
* COMMERCIAL: weekend 10-21 h mean (shopping and leisure on weekend days);
* INDUSTRIAL: weekday 8-18 h mean (daytime shifts; Chinese factories often work 6-7 days);
* OPEN: the largest cluster, shared allowed (the typical city cell: passers-by, visitors).

With the shipped 6-profile table the profile peaking at 01-03 h (a real cluster of ~50
Nanjing cells: nightlife, night shifts or machine traffic) serves no zone; it stays in the
table (named ``unmapped: ...``) for custom zone mappings. Names give the zone(s), the
weekday peak hour and the weekend/weekday ratio of each profile.

Data credit: derived from the MobiFM sample datasets (FIB Lab, Tsinghua University; MIT
licence). The raw files are never copied into the repository.
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from worldmodel.cli import write_atomic, write_text_atomic
from worldmodel.twin.scenario import DAYS_PER_WEEK, N_LANDUSE, SLOTS_PER_WEEK, LandUse

HOURS_PER_WEEK = 24 * DAYS_PER_WEEK
SLOTS_PER_HOUR = SLOTS_PER_WEEK // HOURS_PER_WEEK
WEEKEND_DAYS = (5, 6)
"""Days of the twin's week (Monday = 0) that are weekend days."""

CREDIT = "Derived from the MobiFM sample datasets (FIB Lab, Tsinghua University; MIT licence)"
DEFAULT_TRACE_FILES = ("NJTCH.npz", "NCTCM30.npz")
"""Traffic-volume files used by the CLI when they exist in ``--traces`` (user counts are not)."""
ASSET_DIR = Path(__file__).resolve().parent / "assets"
ASSET_STEM = "demand_profiles"

MAX_ZERO_FRAC = 0.2  # drop cells with more zero samples than this fraction
MIN_MEAN_PERCENTILE = 5.0  # drop cells whose mean is below this percentile of the file
WINSOR_CAP = 4.0  # cap of a cell's normalised (mean 1) values before clustering
N_RESTARTS = 32  # k-means restarts; the lowest inertia wins
KMEANS_ITERS = 100
MIN_CLUSTER_FRAC = 0.02  # smaller clusters are outliers: their cells are dropped, re-cluster
SHAPE_FLOOR = 0.02  # minimum value of a 15-minute profile (relative to its mean 1)
TROUGH_OK_HOURS = (2, 6)  # plausible local-time trough of the daily shape (inclusive)
TROUGH_TARGET_HOUR = 4
_PERIOD_CANDIDATES = (24, 48, 96)  # samples per day: hourly, 30-minute, 15-minute

ZONE_ORDER: tuple[LandUse, ...] = (
    LandUse.OFFICE,
    LandUse.RESIDENTIAL,
    LandUse.CAMPUS,
    LandUse.COMMERCIAL,
    LandUse.INDUSTRIAL,
    LandUse.OPEN,
)


# --------------------------------------------------------------------------- table
@dataclass(frozen=True)
class ProfileTable:
    """Weekly demand shapes and the land-use → shape mapping.

    ``shapes``: float32 ``[n_profiles, 672]``, each row mean 1 and > 0 (slot 0 = Monday
    00:00, 15-minute slots); ``zone_profile``: int64 ``[N_LANDUSE]`` profile index of each
    ``LandUse`` zone; ``names``: one descriptive name per profile; ``meta``: provenance.
    """

    shapes: np.ndarray
    zone_profile: np.ndarray
    names: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_profiles(self) -> int:
        return int(self.shapes.shape[0])

    def zone_shapes(self) -> np.ndarray:
        """``[N_LANDUSE, 672]`` float32: the weekly shape of each land-use zone."""
        return self.shapes[self.zone_profile]

    def validate(self, where: str = "ProfileTable") -> None:
        """Raise ``ValueError`` naming ``where`` and the field if anything is malformed."""
        _validate_arrays(self.shapes, self.zone_profile, self.names, where)


def _validate_arrays(
    shapes: np.ndarray, zone_profile: np.ndarray, names: Sequence[str], where: str
) -> None:
    def bad(fld: str, msg: str) -> ValueError:
        return ValueError(f"{where}: field {fld!r} {msg}")

    if shapes.ndim != 2 or shapes.shape[0] < 1 or shapes.shape[1] != SLOTS_PER_WEEK:
        raise bad("shapes", f"has shape {shapes.shape}, expected [n_profiles, {SLOTS_PER_WEEK}]")
    if shapes.dtype != np.float32:
        raise bad("shapes", f"has dtype {shapes.dtype}, expected float32")
    if not np.isfinite(shapes).all():
        raise bad("shapes", "has non-finite values")
    if not (shapes > 0).all():
        raise bad("shapes", "has values <= 0")
    means = shapes.mean(axis=1, dtype=np.float64)
    if not np.allclose(means, 1.0, atol=1e-3):
        raise bad("shapes", f"rows must have mean 1, got {np.round(means, 4).tolist()}")
    if zone_profile.shape != (N_LANDUSE,):
        raise bad("zone_profile", f"has shape {zone_profile.shape}, expected ({N_LANDUSE},)")
    if zone_profile.dtype != np.int64:
        raise bad("zone_profile", f"has dtype {zone_profile.dtype}, expected int64")
    if ((zone_profile < 0) | (zone_profile >= shapes.shape[0])).any():
        raise bad("zone_profile", f"refers to a missing profile: {zone_profile.tolist()}")
    if len(names) != shapes.shape[0]:
        raise bad("names", f"has {len(names)} entries for {shapes.shape[0]} profiles")


# ------------------------------------------------------------------- trace handling
@dataclass
class Trace:
    name: str
    hourly: np.ndarray  # [C, H] float64, hourly samples from the first sample's 00:00
    samples_per_day: int
    hours: int
    raw: np.ndarray  # [C, T] the samples as stored


def _autocorr(p: np.ndarray, lag: int) -> float:
    q = p - p.mean()
    den = float(np.dot(q, q))
    return float(np.dot(q[:-lag], q[lag:]) / den) if den > 0 else 0.0


def load_trace(path: Path) -> Trace:
    """Load one ``npz`` trace (validated), detect its sampling period from the content, resample to hourly."""
    with np.load(path, allow_pickle=False) as z:
        if "data" not in z:
            raise ValueError(f"{path}: missing array 'data'")
        data = np.asarray(z["data"], dtype=np.float64)
    if data.ndim != 2 or data.shape[1] < 48:
        raise ValueError(f"{path}: 'data' has shape {data.shape}, expected [cells, >=48]")
    if not np.isfinite(data).all() or (data < 0).any():
        raise ValueError(f"{path}: 'data' has non-finite or negative values")
    n_t = data.shape[1]
    mean = data.mean(axis=1, keepdims=True)
    ok = mean[:, 0] > 0
    prof = (data[ok] / mean[ok]).mean(axis=0)
    cands = [c for c in _PERIOD_CANDIDATES if n_t >= 2 * c]
    spd = max(cands, key=lambda c: _autocorr(prof, c))
    per_hour = spd // 24
    n_h = n_t // per_hour
    hourly = data[:, : n_h * per_hour].reshape(data.shape[0], n_h, per_hour).mean(axis=2)
    return Trace(path.stem, hourly, spd, n_h, data)


def _daily_shape(hourly_norm: np.ndarray) -> np.ndarray:
    """[24] mean over cells and days of mean-1 normalised hourly data (partial days allowed)."""
    prof = hourly_norm.mean(axis=0)
    h = np.arange(prof.shape[0]) % 24
    return np.array([prof[h == k].mean() for k in range(24)])


def _trough_hour(daily: np.ndarray) -> int:
    smooth = (np.roll(daily, 1) + daily + np.roll(daily, -1)) / 3.0
    return int(np.argmin(smooth))


def _best_shift(daily: np.ndarray, ref: np.ndarray) -> tuple[int, float]:
    """Hour shift ``s`` (0..23) maximising corr(roll(daily, s), ref), and that correlation."""
    corrs = [float(np.corrcoef(np.roll(daily, s), ref)[0, 1]) for s in range(24)]
    s = int(np.argmax(corrs))
    return s, corrs[s]


def _normalise_cells(hourly: np.ndarray) -> tuple[np.ndarray, int]:
    """Filter cells (zeros, tiny means), normalise to mean 1, winsorise. Returns (X, n_in)."""
    mean = hourly.mean(axis=1)
    zero_frac = (hourly == 0).mean(axis=1)
    keep = (zero_frac <= MAX_ZERO_FRAC) & (mean > np.percentile(mean, MIN_MEAN_PERCENTILE))
    keep &= mean > 0
    x = hourly[keep] / mean[keep, None]
    x = np.minimum(x, WINSOR_CAP)
    x /= x.mean(axis=1, keepdims=True)
    return x, int(hourly.shape[0])


def weekend_data_day(hourly: np.ndarray) -> int:
    """Data day (0-based) that starts the weekend pair of a ``[cells, 168]`` hourly week."""
    week = np.asarray(hourly, dtype=np.float64)[:, :HOURS_PER_WEEK]
    x, _ = _normalise_cells(week)
    if x.shape[0] < 2:  # the filters left (almost) nothing: use every cell with traffic
        m = week.mean(axis=1)
        x = week[m > 0] / m[m > 0, None]
    if x.shape[0] < 2:
        raise ValueError("weekend_data_day: fewer than two cells with traffic")
    return _weekend_start(x)[0]


def _weekend_start(x: np.ndarray) -> tuple[int, list[float]]:
    """Data day starting the weekend pair: max variance across cells of log(pair / rest)."""
    day = np.log(x.reshape(x.shape[0], DAYS_PER_WEEK, 24).mean(axis=2) + 1e-3)
    scores = []
    for d in range(DAYS_PER_WEEK):
        pair = [d, (d + 1) % DAYS_PER_WEEK]
        rest = [k for k in range(DAYS_PER_WEEK) if k not in pair]
        scores.append(float((day[:, pair].mean(axis=1) - day[:, rest].mean(axis=1)).var()))
    return int(np.argmax(scores)), scores


# -------------------------------------------------------------------------- k-means
def _kmeans(x: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ init. Returns (centroids [k, D], labels [n])."""
    n = x.shape[0]
    sq = (x * x).sum(axis=1)
    cent = np.empty((k, x.shape[1]))
    cent[0] = x[rng.integers(n)]
    d2 = ((x - cent[0]) ** 2).sum(axis=1)
    for j in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
        cent[j] = x[rng.choice(n, p=p)]
        d2 = np.minimum(d2, ((x - cent[j]) ** 2).sum(axis=1))
    labels = np.full(n, -1)
    for _ in range(KMEANS_ITERS):
        dist = sq[:, None] - 2.0 * x @ cent.T + (cent * cent).sum(axis=1)[None, :]
        new = np.argmin(dist, axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        for j in range(k):
            members = labels == j
            if members.any():
                cent[j] = x[members].mean(axis=0)
            else:  # re-seed an empty cluster at the worst-fitted point
                far = int(np.argmax(dist[np.arange(n), labels]))
                cent[j] = x[far]
    return cent, labels


def cluster_features(x: np.ndarray) -> np.ndarray:
    """``[n, 48]`` clustering features of mean-1 weeks ``[n, 168]`` (Monday first).

    The mean weekday daily shape and the mean weekend daily shape: averaging over days removes
    most of the hour-to-hour noise that makes k-means on raw weeks unstable.
    """
    w = x.reshape(x.shape[0], DAYS_PER_WEEK, 24)
    return np.concatenate([w[:, :5].mean(axis=1), w[:, 5:].mean(axis=1)], axis=1)


def _cluster(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Best-of-restarts k-means on ``cluster_features`` with outlier-cluster removal.

    Returns (centroids = member means of the full weeks ``[k, 168]``, sizes ``[k]``, n_out).
    """
    if x.shape[0] < k:
        raise ValueError(f"only {x.shape[0]} usable cells for {k} profiles")
    n_out = 0
    for _ in range(4):
        f = cluster_features(x)
        rng = np.random.default_rng(seed)
        best: tuple[float, np.ndarray] | None = None
        for _r in range(N_RESTARTS):
            cent, lab = _kmeans(f, k, rng)
            inertia = float(((f - cent[lab]) ** 2).sum())
            if best is None or inertia < best[0]:
                best = (inertia, lab)
        assert best is not None
        lab = best[1]
        sizes = np.bincount(lab, minlength=k)
        tiny = sizes < max(2, int(np.ceil(MIN_CLUSTER_FRAC * x.shape[0])))
        if not tiny.any():
            return np.stack([x[lab == j].mean(axis=0) for j in range(k)]), sizes, n_out
        drop = tiny[lab]
        n_out += int(drop.sum())
        x = x[~drop]
        if x.shape[0] < k:
            break
    raise ValueError(f"k-means with k={k} keeps producing tiny clusters; use fewer profiles")


# ---------------------------------------------------------------- features / zones
def centroid_features(hourly: np.ndarray) -> dict[str, float]:
    """Zone-rule features of one hourly weekly shape ``[168]`` (mean 1, Monday 00:00 first)."""
    w = hourly.reshape(DAYS_PER_WEEK, 24)
    wd, we = w[:5], w[5:]
    return {
        "office_ratio": float(wd[:, 9:17].mean() / we[:, 9:17].mean()),
        "evening": float(w[:, 19:23].mean()),
        "late_night": float(w[:, [22, 23, 0, 1]].mean()),
        "weekend_day": float(we[:, 10:21].mean()),
        "night": float(w[:, 0:6].mean()),
        "weekday_day": float(wd[:, 8:18].mean()),
        "std": float(hourly.std()),
        "weekend_weekday_ratio": float(we.mean() / wd.mean()),
        "weekday_peak_hour": int(np.argmax(wd.mean(axis=0))),
    }


_ZONE_FEATURE: dict[LandUse, tuple[str, bool]] = {  # (feature maximised, prefer unused)
    LandUse.OFFICE: ("office_ratio", True),
    LandUse.RESIDENTIAL: ("evening", True),
    LandUse.CAMPUS: ("late_night", True),
    LandUse.COMMERCIAL: ("weekend_day", True),
    LandUse.INDUSTRIAL: ("weekday_day", True),
    LandUse.OPEN: ("cell_share", False),
}


def assign_zones(features: Sequence[dict[str, float]]) -> np.ndarray:
    """Greedy zone → profile mapping (see module docstring). Returns int64 ``[N_LANDUSE]``.

    ``features``: one ``centroid_features`` dict per profile plus ``"cell_share"`` (fraction
    of the clustered cells in that profile's cluster).
    """
    k = len(features)
    zone_profile = np.full(N_LANDUSE, -1, dtype=np.int64)
    used: set[int] = set()
    for zone in ZONE_ORDER:
        name, prefer_unused = _ZONE_FEATURE[zone]
        unused = [i for i in range(k) if i not in used]
        cands = unused if (prefer_unused and unused) else list(range(k))
        best = max(cands, key=lambda i: (features[i][name], -i))
        zone_profile[int(zone)] = best
        used.add(best)
    return zone_profile


def _profile_names(zone_profile: np.ndarray, feats: Sequence[dict[str, float]]) -> tuple[str, ...]:
    """``"<zones>: weekday peak HHh, we/wd R"`` per profile (``unmapped`` when no zone uses it)."""
    names = []
    for i, f in enumerate(feats):
        zones = [z.name.lower() for z in ZONE_ORDER if zone_profile[int(z)] == i]
        names.append(
            f"{'+'.join(zones) or 'unmapped'}: weekday peak {int(f['weekday_peak_hour']):02d}h, "
            f"we/wd {f['weekend_weekday_ratio']:.2f}"
        )
    return tuple(names)


def hourly_means(shape: np.ndarray) -> np.ndarray:
    """``[672]`` 15-minute profile → ``[168]`` hourly means (float64)."""
    return np.asarray(shape, dtype=np.float64).reshape(HOURS_PER_WEEK, SLOTS_PER_HOUR).mean(axis=1)


def resample_hourly_to_slots(hourly: np.ndarray) -> np.ndarray:
    """Periodic cubic spline from ``[168]`` hourly means to ``[672]`` 15-minute slots (mean 1)."""
    from scipy.interpolate import CubicSpline  # lazy: only needed to derive the table

    t_h = np.arange(HOURS_PER_WEEK + 1) + 0.5  # hour centres, closed for periodicity
    y = np.append(hourly, hourly[0])
    spline = CubicSpline(t_h, y, bc_type="periodic")
    t_s = (np.arange(SLOTS_PER_WEEK) + 0.5) / SLOTS_PER_HOUR
    t_s = np.where(t_s < 0.5, t_s + HOURS_PER_WEEK, t_s)
    v = np.maximum(spline(t_s), SHAPE_FLOOR)
    v = v / v.mean()
    v = np.maximum(v, SHAPE_FLOOR)
    return v / v.mean()


# --------------------------------------------------------------------------- derive
def derive_profiles(
    trace_paths: Sequence[Path], n_profiles: int = 6, seed: int = 0
) -> ProfileTable:
    """Derive the profile table from traffic-volume traces (see module docstring)."""
    if n_profiles < 1:
        raise ValueError(f"n_profiles must be >= 1, got {n_profiles}")
    paths = [Path(p) for p in trace_paths]
    if not paths:
        raise ValueError("derive_profiles: no trace files given")
    traces = [load_trace(p) for p in paths]
    full = [t for t in traces if t.hours >= HOURS_PER_WEEK]
    if not full:
        raise ValueError(f"none of {[p.name for p in paths]} covers a full week of hours")
    ref = full[0]
    norm = {t.name: _normalise_cells(t.hourly[:, : min(t.hours, HOURS_PER_WEEK)]) for t in traces}
    ref_daily = _daily_shape(norm[ref.name][0])
    ref_trough = _trough_hour(ref_daily)
    lo, hi = TROUGH_OK_HOURS
    ref_shift = 0 if lo <= ref_trough <= hi else (TROUGH_TARGET_HOUR - ref_trough) % 24
    ref_daily = np.roll(ref_daily, ref_shift)

    cities: dict[str, dict[str, Any]] = {}
    weeks = []
    for t in traces:
        x, n_in = norm[t.name]
        daily = _daily_shape(x)
        if t is ref:
            shift, corr = ref_shift, 1.0
        else:
            shift, corr = _best_shift(daily, ref_daily)
        naive = _daily_shape(_normalise_cells(_naive_hourly(t))[0])
        info: dict[str, Any] = {
            "samples_per_day": t.samples_per_day,
            "hours_covered": t.hours,
            "naive_label_trough_hour": _trough_hour(naive),
            "trough_hour_before_shift": _trough_hour(daily),
            "hour_shift": int(shift),
            "daily_shape_corr_with_reference": round(corr, 4),
            "n_cells_in": n_in,
            "n_cells_kept": int(x.shape[0]),
            "used_for_clustering": t.hours >= HOURS_PER_WEEK,
        }
        if t.hours >= HOURS_PER_WEEK:
            weeks.append(np.roll(x, shift, axis=1))
        cities[t.name] = info

    x = np.concatenate(weeks, axis=0)
    wk_start, wk_scores = _weekend_start(x)
    day_roll = (WEEKEND_DAYS[0] - wk_start) % DAYS_PER_WEEK
    x = np.roll(x, 24 * day_roll, axis=1)

    cent, sizes, n_out = _cluster(x, n_profiles, seed)
    order = np.argsort(-sizes, kind="stable")
    cent, sizes = cent[order], sizes[order]
    cent = np.maximum(cent, 0.0)
    cent /= cent.mean(axis=1, keepdims=True)
    shapes = np.stack([resample_hourly_to_slots(c) for c in cent]).astype(np.float32)
    shapes /= shapes.mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
    feats = [centroid_features(hourly_means(s)) for s in shapes]
    for f, n in zip(feats, sizes, strict=True):
        f["cell_share"] = float(n / sizes.sum())
    zone_profile = assign_zones(feats)
    names = _profile_names(zone_profile, feats)

    cross = {}
    for t in traces:
        if t.hours < HOURS_PER_WEEK:
            cross[t.name] = _daily_cross_check(norm[t.name][0], cities[t.name]["hour_shift"], cent)

    meta: dict[str, Any] = {
        "source_files": [p.name for p in paths],
        "reference_file": ref.name,
        "cities": cities,
        "weekend_data_days": [wk_start, (wk_start + 1) % DAYS_PER_WEEK],
        "weekend_scores": [round(s, 4) for s in wk_scores],
        "day_roll": int(day_roll),
        "week_convention": "slot 0 = Monday 00:00 local; days 5-6 weekend; 15-minute slots",
        "n_cells_clustered": int(x.shape[0] - n_out),
        "n_outlier_cells": n_out,
        "cluster_sizes": sizes.tolist(),
        "features": [{k: round(v, 4) for k, v in f.items()} for f in feats],
        "cross_check_daily_assignment_share": cross,
        "method": (
            "content-detected sampling period -> hourly; trough/correlation hour alignment; "
            f"weekend alignment; cells with <= {MAX_ZERO_FRAC} zeros and mean > "
            f"p{MIN_MEAN_PERCENTILE:g}; mean-1, winsorised at {WINSOR_CAP}; k-means++ "
            f"({N_RESTARTS} restarts, outlier clusters < {MIN_CLUSTER_FRAC} removed); periodic "
            f"cubic spline to 15 min, floor {SHAPE_FLOOR}"
        ),
        "n_profiles": n_profiles,
        "seed": seed,
        "credit": CREDIT,
    }
    table = ProfileTable(shapes, zone_profile, names, meta)
    table.validate("derive_profiles")
    return table


def _naive_hourly(t: Trace) -> np.ndarray:
    """The raw samples read as if hourly (what the ``time`` labels claim), for the record."""
    return t.raw[:, :HOURS_PER_WEEK]


def _daily_cross_check(x: np.ndarray, shift: int, cent: np.ndarray) -> list[float]:
    """Share of a short trace's cells whose daily shape is nearest each centroid's daily shape."""
    h = np.arange(x.shape[1]) % 24
    daily = np.stack([x[:, h == k].mean(axis=1) for k in range(24)], axis=1)
    daily = np.roll(daily, shift, axis=1)
    daily /= daily.mean(axis=1, keepdims=True)
    cd = cent.reshape(cent.shape[0], DAYS_PER_WEEK, 24).mean(axis=1)
    nearest = np.argmin(((daily[:, None, :] - cd[None]) ** 2).sum(axis=2), axis=1)
    share = np.bincount(nearest, minlength=cent.shape[0]) / max(1, x.shape[0])
    return [round(float(s), 4) for s in share]


# ---------------------------------------------------------------------------- I/O
def _sidecar(table: ProfileTable) -> dict[str, Any]:
    return {
        "credit": CREDIT,
        "names": list(table.names),
        "zone_profile": {z.name: int(table.zone_profile[int(z)]) for z in LandUse},
        "meta": table.meta,
    }


def save_profiles(table: ProfileTable, out_dir: Path | str) -> Path:
    """Write ``demand_profiles.npz`` + ``.json`` into ``out_dir`` atomically; return the npz."""
    table.validate("save_profiles")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    npz = out / f"{ASSET_STEM}.npz"
    arrays = {
        "shapes": table.shapes.astype(np.float32),
        "zone_profile": table.zone_profile.astype(np.int64),
        "names": np.array(table.names, dtype=np.str_),
        "meta_json": np.array(json.dumps(table.meta, sort_keys=True), dtype=np.str_),
    }
    write_atomic(npz, lambda tmp: np.savez_compressed(tmp, **arrays))
    text = json.dumps(_sidecar(table), indent=1, sort_keys=False) + "\n"
    write_text_atomic(out / f"{ASSET_STEM}.json", text)
    return npz


def load_profiles(path_npz: Path | str) -> ProfileTable:
    """Load and validate a profile table; ``ValueError`` names the file and the field."""
    path = Path(path_npz)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read profile table ({e})") from e
    for key in ("shapes", "zone_profile", "names"):
        if key not in arrays:
            raise ValueError(f"{path}: field {key!r} is missing")
    shapes, zone_profile = arrays["shapes"], arrays["zone_profile"]
    names = tuple(str(s) for s in np.atleast_1d(arrays["names"]))
    _validate_arrays(shapes, zone_profile, names, str(path))
    meta: dict[str, Any] = {}
    if "meta_json" in arrays:
        try:
            meta = json.loads(str(arrays["meta_json"]))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: field 'meta_json' is not valid JSON ({e})") from e
    return ProfileTable(shapes, zone_profile, names, meta)


@functools.lru_cache(maxsize=1)
def load_default_profiles() -> ProfileTable:
    """The shipped table ``worldmodel/twin/assets/demand_profiles.npz`` (cached)."""
    return load_profiles(ASSET_DIR / f"{ASSET_STEM}.npz")


# ---------------------------------------------------------------------------- CLI
def default_trace_paths(traces_dir: Path | str) -> list[Path]:
    """The traffic-volume files of ``DEFAULT_TRACE_FILES`` present in ``traces_dir``."""
    d = Path(traces_dir)
    paths = [d / f for f in DEFAULT_TRACE_FILES if (d / f).is_file()]
    if not paths:
        raise FileNotFoundError(f"{d}: none of {DEFAULT_TRACE_FILES} found")
    return paths


def summary(table: ProfileTable) -> str:
    """A short text table: name, cells, weekday peak hour, weekend/weekday ratio, zones."""
    sizes = table.meta.get("cluster_sizes", [None] * table.n_profiles)
    rows = [f"{'#':>2} {'name':<45} {'cells':>5} {'wd peak h':>9} {'we/wd':>6}  zones"]
    for i in range(table.n_profiles):
        f = centroid_features(hourly_means(table.shapes[i]))
        zones = ",".join(z.name for z in LandUse if table.zone_profile[int(z)] == i)
        rows.append(
            f"{i:>2} {table.names[i]:<45} {sizes[i] if sizes[i] is not None else '-':>5} "
            f"{f['weekday_peak_hour']:>9} {f['weekend_weekday_ratio']:>6.2f}  {zones}"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", type=Path, required=True, help="folder with the MobiFM .npz files")
    ap.add_argument("--out", type=Path, default=ASSET_DIR, help="output folder for the asset")
    ap.add_argument("--n-profiles", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    paths = default_trace_paths(args.traces)
    table = derive_profiles(paths, n_profiles=args.n_profiles, seed=args.seed)
    for name, info in table.meta["cities"].items():
        print(
            f"{name}: {info['samples_per_day']} samples/day, {info['hours_covered']} h, "
            f"hour shift {info['hour_shift']} (corr {info['daily_shape_corr_with_reference']}), "
            f"trough {info['trough_hour_before_shift']} h (naive labels: "
            f"{info['naive_label_trough_hour']} h), cells {info['n_cells_kept']}/"
            f"{info['n_cells_in']}, clustered: {info['used_for_clustering']}"
        )
    print(
        f"weekend = data days {table.meta['weekend_data_days']}, day roll {table.meta['day_roll']}"
    )
    print(summary(table))
    npz = save_profiles(table, args.out)
    print(f"wrote {npz} and {npz.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
