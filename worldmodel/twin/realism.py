"""Realism scorecard: does the twin's per-cell traffic behave like real cells?

One set of statistics, computed by the same code on real traces and on generated maps, on
**hourly traffic per cell** (the twin's 15-minute slots summed to hours; real traces resampled
to hourly as ``profiles.load_trace`` does, so the 30-minute ``NCTCM30`` becomes 84 hours):

| key | statistic | aggregate |
|---|---|---|
| ``cv_means`` | spread of cell means: std / mean across cells | per network |
| ``p90_p10`` | spread of cell means: P90 / P10 | per network |
| ``peak_trough`` | daily profile (hour-of-day mean of x / cell mean), max / min | per network |
| ``hour_change`` | mean abs(x_t - x_{t-1}) / cell mean | median over cells |
| ``day_change`` | mean abs(x_t - x_{t-24}) / cell mean | median over cells |
| ``day_corr`` | Pearson correlation of consecutive days' 24-hour profiles | median over cells |
| ``zero_share`` | share of (cell, hour) with zero traffic | all cells pooled |
| ``acf1`` / ``acf24`` | autocorrelation of the hourly series at lag 1 / 24 h | median over cells |
| ``weekday_weekend`` | mean weekday level / mean weekend level (full weeks only) | median over cells |
| ``value_jsd`` | JSD (base 2) of the histogram of x / cell mean vs the pooled reference | pooled |

A twin scenario's statistics are the median over its maps (each map is one network of 36-60
cells; a real file is one city of 1,000 cells), except ``value_jsd``, whose histogram pools
the cells of all its maps. Cells whose mean is zero are
left out of the normalised statistics, and so are twin cells on air less than half the week
(``MIN_ON_AIR``). A twin hour counts as zero when it is below
``ZERO_REL`` times the map's mean cell-hour (float sums never give exact zeros).

Bounds (``bounds``): every statistic of a twin scenario should lie within ±25% (relative) of
the range the reference traces (the traffic-volume files ``NJTCH`` and ``NCTCM30``) span;
correlations within ±0.1; ``value_jsd`` at most 1.25 times the JSD between the reference
cities themselves; ``weekday_weekend`` from the full-week references only.

CLI::

    python -m worldmodel.twin.realism --traces ../shared/data/real-traffic [--data DIR]
        [--json OUT.json]
"""

from __future__ import annotations

import argparse
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worldmodel.cli import write_json_atomic
from worldmodel.twin.profiles import (
    DEFAULT_TRACE_FILES,
    WEEKEND_DAYS,
    load_trace,
    weekend_data_day,
)
from worldmodel.twin.scenario import DAYS_PER_WEEK, SLOTS_PER_DAY

HOURS_PER_DAY = 24
ZERO_REL = 1e-4
"""A twin cell-hour below this fraction of the map's mean cell-hour counts as zero."""
MIN_ON_AIR = 0.5
"""A twin cell must be active in at least this share of a map's slots to count."""
REL_TOL = 0.25
CORR_TOL = 0.1
HIST_EDGES = np.concatenate([np.linspace(0.0, 6.0, 61), [np.inf]])
"""Bins of x / cell mean for ``value_jsd`` (0.1 wide up to 6, then one overflow bin)."""

STATS: tuple[tuple[str, str, str], ...] = (
    # key, label, kind of bound ("rel", "corr", "max", "rel_full_week")
    ("cv_means", "spread of cell means: CV across cells", "rel"),
    ("p90_p10", "spread of cell means: P90 / P10", "rel"),
    ("peak_trough", "mean daily profile, peak / trough", "rel"),
    ("hour_change", "hour-to-hour change, mean |dx| / cell mean", "rel"),
    ("day_change", "day-to-day change, mean |x_t - x_t-24| / cell mean", "rel"),
    ("day_corr", "correlation of consecutive days' profiles", "corr"),
    ("zero_share", "share of hours with zero traffic (all cells)", "rel"),
    ("acf1", "autocorrelation, lag 1 h", "corr"),
    ("acf24", "autocorrelation, lag 24 h", "corr"),
    ("weekday_weekend", "weekday / weekend level", "rel"),
    ("value_jsd", "JSD of cell-normalised hourly values vs real", "max"),
)
STAT_KEYS = tuple(k for k, _, _ in STATS)


@dataclass(frozen=True)
class Series:
    """Hourly traffic of one network: ``x`` float64 ``[cells, hours]`` >= 0.

    ``start_day`` is the day of week (Monday = 0) of hour 0, which is local midnight;
    ``zero_below`` is the value at or below which an hour counts as zero.
    """

    name: str
    x: np.ndarray
    start_day: int = 0
    zero_below: float = 0.0

    def __post_init__(self) -> None:
        x = np.asarray(self.x)
        if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2 * HOURS_PER_DAY:
            raise ValueError(
                f"{self.name}: hourly traffic must be [cells >= 2, hours >= 48], got {x.shape}"
            )
        if not np.isfinite(x).all() or (x < 0).any():
            raise ValueError(f"{self.name}: hourly traffic must be finite and >= 0")


# ------------------------------------------------------------------ statistics
def _active(x: np.ndarray) -> np.ndarray:
    m = x.mean(axis=1)
    return x[m > 0]


def _daily_blocks(x: np.ndarray) -> np.ndarray:
    """``[cells, days, 24]`` of the full days of ``x``."""
    n_days = x.shape[1] // HOURS_PER_DAY
    return x[:, : n_days * HOURS_PER_DAY].reshape(x.shape[0], n_days, HOURS_PER_DAY)


def _rowwise_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation along the last axis; NaN where either side is constant."""
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(axis=-1) / np.where(den > 0, den, 1.0), np.nan)


def _acf(x: np.ndarray, lag: int) -> np.ndarray:
    """Per-row autocorrelation at ``lag`` (series mean and variance over the whole row)."""
    q = x - x.mean(axis=1, keepdims=True)
    var = (q * q).mean(axis=1)
    cov = (q[:, :-lag] * q[:, lag:]).mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 0, cov / np.where(var > 0, var, 1.0), np.nan)


def value_histogram(x: np.ndarray) -> np.ndarray:
    """Probability histogram (``HIST_EDGES``) of x / cell mean over all active cell-hours."""
    a = _active(np.asarray(x, dtype=np.float64))
    v = (a / a.mean(axis=1, keepdims=True)).ravel()
    h, _ = np.histogram(v, bins=HIST_EDGES)
    return h / max(1, h.sum())


def jsd(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) of two probability vectors."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float((a[nz] * np.log2(a[nz] / m[nz])).sum())

    return 0.5 * kl(p) + 0.5 * kl(q)


def series_stats(s: Series, reference_hist: np.ndarray | None = None) -> dict[str, float]:
    """All statistics of one network (NaN where undefined, e.g. no weekend in the series)."""
    x = np.asarray(s.x, dtype=np.float64)
    means = x.mean(axis=1)
    out: dict[str, float] = {}
    mu = float(means.mean())
    out["cv_means"] = float(means.std() / mu) if mu > 0 else math.nan
    p10, p90 = np.percentile(means, [10, 90])
    out["p90_p10"] = float(p90 / p10) if p10 > 0 else math.inf
    out["zero_share"] = float((x <= s.zero_below).mean())

    a = _active(x)
    m = a.mean(axis=1, keepdims=True)
    days = _daily_blocks(a)
    daily = (days / m[:, :, None]).mean(axis=(0, 1))  # [24], mean over cells and days
    out["peak_trough"] = float(daily.max() / daily.min()) if daily.min() > 0 else math.inf
    out["hour_change"] = float(np.median(np.abs(np.diff(a, axis=1)).mean(axis=1) / m[:, 0]))
    lag = HOURS_PER_DAY
    out["day_change"] = float(np.median(np.abs(a[:, lag:] - a[:, :-lag]).mean(axis=1) / m[:, 0]))
    dc = _rowwise_corr(days[:, :-1], days[:, 1:])  # [C, days - 1]
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # cells with all days constant
        per_cell = np.nanmean(dc, axis=1) if dc.size else np.full(len(a), np.nan)
    ok = np.isfinite(per_cell)
    out["day_corr"] = float(np.median(per_cell[ok])) if ok.any() else math.nan
    out["acf1"] = float(np.nanmedian(_acf(a, 1)))
    out["acf24"] = float(np.nanmedian(_acf(a, lag)))

    n_days = days.shape[1]
    dow = (s.start_day + np.arange(n_days)) % DAYS_PER_WEEK
    weekend = np.isin(dow, WEEKEND_DAYS)
    if n_days >= DAYS_PER_WEEK and weekend.any() and (~weekend).any():
        wd = days[:, ~weekend].mean(axis=(1, 2))
        we = days[:, weekend].mean(axis=(1, 2))
        ok = we > 0
        out["weekday_weekend"] = float(np.median(wd[ok] / we[ok])) if ok.any() else math.nan
    else:
        out["weekday_weekend"] = math.nan
    if reference_hist is not None:
        out["value_jsd"] = jsd(value_histogram(a), reference_hist)
    else:
        out["value_jsd"] = math.nan
    return out


def network_median(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Median of each statistic over the maps of a scenario (NaNs ignored)."""
    out = {}
    for k in STAT_KEYS:
        v = np.array([r[k] for r in rows], dtype=np.float64)
        v = v[~np.isnan(v)]
        out[k] = float(np.median(v)) if v.size else math.nan
    return out


def scenario_stats(maps: Sequence[Series], reference_hist: np.ndarray) -> dict[str, float]:
    """Statistics of a scenario: median over its maps; ``value_jsd`` of all cells pooled."""
    if not maps:
        raise ValueError("scenario_stats: no maps")
    row = network_median([series_stats(s) for s in maps])
    counts = [value_histogram(s.x) * _active(np.asarray(s.x)).size for s in maps]
    pooled = np.sum(counts, axis=0)
    row["value_jsd"] = jsd(pooled / pooled.sum(), reference_hist)
    return row


# ------------------------------------------------------------------ loading
def real_series(path: Path | str) -> Series:
    """A real trace file as hourly traffic (sampling period detected from the content).

    Hour 0 is taken as local midnight (the shipped profiles found no hour shift for either
    city); the day of week is unknown, so ``start_day`` puts the data day whose pair of days
    differs most from the rest (``profiles``' weekend detection) on Saturday for full weeks.
    """
    t = load_trace(Path(path))
    start_day = 0
    if t.hours >= DAYS_PER_WEEK * HOURS_PER_DAY:
        wk = weekend_data_day(t.hourly)
        start_day = (WEEKEND_DAYS[0] - wk) % DAYS_PER_WEEK
    return Series(t.name, t.hourly, start_day=start_day)


def map_series(path: Path | str) -> Series:
    """One generated map's traffic as hourly per-cell sums of whole hours.

    Cells on air for less than ``MIN_ON_AIR`` of the slots (a Topo map's cells inserted late
    or removed early) are left out: for most of the week they were not part of the network.
    """
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in ("traffic", "slot", "active") if k not in z]
        if missing:
            raise ValueError(f"{path}: not a generated map, missing arrays {missing}")
        traffic = np.asarray(z["traffic"], dtype=np.float64)
        slots = np.asarray(z["slot"], dtype=np.int64)
        active = np.asarray(z["active"], dtype=bool)
    traffic = traffic[:, active.mean(axis=0) >= MIN_ON_AIR]
    per_hour = SLOTS_PER_DAY // HOURS_PER_DAY
    midnights = np.flatnonzero(slots % SLOTS_PER_DAY == 0)
    if midnights.size == 0:
        raise ValueError(f"{path}: no slot at local midnight, cannot align hours")
    first = int(midnights[0])
    tr = traffic[first:]
    n_h = tr.shape[0] // per_hour
    hourly = tr[: n_h * per_hour].reshape(n_h, per_hour, -1).sum(axis=1).T  # [N, H]
    start_day = int((slots[first] // SLOTS_PER_DAY) % DAYS_PER_WEEK)
    zero_below = ZERO_REL * float(hourly.mean())
    return Series(Path(path).stem, hourly, start_day=start_day, zero_below=zero_below)


def scenario_of(path: Path) -> str:
    """``urban-para`` from ``urban-para-test-003.npz`` (the maps' file-name convention)."""
    parts = path.stem.split("-")
    return "-".join(parts[:2])


# ------------------------------------------------------------------ scorecard
@dataclass(frozen=True)
class Scorecard:
    """Rows of statistics (real files and twin scenarios), bounds and pass/fail of twin rows."""

    real: dict[str, dict[str, float]]
    twin: dict[str, dict[str, float]]
    bounds: dict[str, tuple[float, float]]
    reference: tuple[str, ...]

    def passes(self, row: dict[str, float]) -> dict[str, bool]:
        out = {}
        for k in STAT_KEYS:
            lo, hi = self.bounds.get(k, (math.nan, math.nan))
            v = row[k]
            out[k] = bool(np.isfinite(lo) and lo <= v <= hi) if not np.isnan(v) else False
        return out

    def to_dict(self) -> dict:
        return {
            "reference": list(self.reference),
            "bounds": {k: list(v) for k, v in self.bounds.items()},
            "real": self.real,
            "twin": self.twin,
            "pass": {name: self.passes(row) for name, row in self.twin.items()},
        }


def bounds_from(
    reference_rows: Sequence[dict[str, float]], city_jsd: float = math.nan
) -> dict[str, tuple[float, float]]:
    """Acceptance interval of every statistic from the reference rows (see module docstring).

    ``city_jsd``: the largest ``jsd`` between the reference traces' value histograms.
    """
    out: dict[str, tuple[float, float]] = {}
    for key, _, kind in STATS:
        v = np.array([r[key] for r in reference_rows], dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size == 0:
            out[key] = (math.nan, math.nan)
        elif kind == "corr":
            out[key] = (float(v.min()) - CORR_TOL, float(v.max()) + CORR_TOL)
        elif kind == "max":
            out[key] = (0.0, city_jsd * (1.0 + REL_TOL))
        else:
            out[key] = (float(v.min()) * (1.0 - REL_TOL), float(v.max()) * (1.0 + REL_TOL))
    return out


def scorecard(
    trace_paths: Sequence[Path], map_paths: Sequence[Path] = (), reference: Sequence[str] = ()
) -> Scorecard:
    """Statistics of every real trace and of every scenario among ``map_paths``.

    ``reference``: the trace names (file stems) that define the bounds and the pooled value
    histogram; by default those of ``DEFAULT_TRACE_FILES`` that are present.
    """
    if not trace_paths:
        raise ValueError("scorecard: no real trace files given")
    real = [real_series(p) for p in trace_paths]
    names = [s.name for s in real]
    ref = tuple(reference) or tuple(
        Path(f).stem for f in DEFAULT_TRACE_FILES if Path(f).stem in names
    )
    missing = [r for r in ref if r not in names]
    if missing or not ref:
        raise ValueError(f"scorecard: reference traces {missing or list(ref)} not among {names}")
    ref_series = [s for s in real if s.name in ref]
    hists = [value_histogram(s.x) for s in ref_series]
    pooled = np.mean(hists, axis=0)
    city_jsd = max(
        (jsd(a, b) for i, a in enumerate(hists) for b in hists[i + 1 :]), default=math.nan
    )
    real_rows = {s.name: series_stats(s, pooled) for s in real}
    groups: dict[str, list[Series]] = {}
    for p in sorted(Path(m) for m in map_paths):
        groups.setdefault(scenario_of(p), []).append(map_series(p))
    twin_rows = {name: scenario_stats(series, pooled) for name, series in groups.items()}
    bounds = bounds_from([real_rows[r] for r in ref], city_jsd)
    return Scorecard(real_rows, twin_rows, bounds, ref)


def _fmt(key: str, v: float) -> str:
    if np.isnan(v):
        return "n/a"
    if np.isinf(v):
        return "inf"
    if key == "zero_share":
        return f"{100 * v:.1f}%"
    if key == "value_jsd":
        return f"{v:.4f}"
    return f"{v:.2f}" if abs(v) < 100 else f"{v:.0f}"


def format_table(card: Scorecard) -> str:
    """Markdown table: statistics × (real files, twin scenarios), bounds, twin pass counts."""
    cols = list(card.real) + list(card.twin)
    head = ["statistic", *cols, "bounds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    passes = {n: card.passes(r) for n, r in card.twin.items()}
    for key, label, _ in STATS:
        cells = [_fmt(key, card.real[c][key]) for c in card.real]
        for c in card.twin:
            mark = "" if np.isnan(card.twin[c][key]) else (" ✓" if passes[c][key] else " ✗")
            cells.append(_fmt(key, card.twin[c][key]) + mark)
        lo, hi = card.bounds[key]
        b = "n/a" if np.isnan(lo) else f"{_fmt(key, lo)} – {_fmt(key, hi)}"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {b} |")
    if card.twin:
        score = [f"{n}: {sum(p.values())}/{len(p)}" for n, p in passes.items()]
        lines.append("")
        lines.append("twin rows within bounds: " + ", ".join(score))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", type=Path, required=True, help="folder with the real .npz traces")
    ap.add_argument("--data", type=Path, help="a generated dataset folder (maps *.npz)")
    ap.add_argument("--json", type=Path, help="also write the scorecard as JSON here")
    ap.add_argument(
        "--fail-outside",
        action="store_true",
        help="exit with status 1 when a twin statistic lies outside its bounds",
    )
    args = ap.parse_args(argv)
    if not args.traces.is_dir():
        ap.error(f"--traces {args.traces}: not a folder")
    traces = sorted(args.traces.glob("*.npz"))
    if not traces:
        ap.error(f"--traces {args.traces}: no .npz trace files")
    maps: list[Path] = []
    if args.data is not None:
        if not args.data.is_dir():
            ap.error(f"--data {args.data}: not a folder")
        maps = sorted(args.data.glob("*.npz"))
        if not maps:
            ap.error(f"--data {args.data}: no generated maps (*.npz)")
    card = scorecard(traces, maps)
    print(format_table(card))
    if args.json is not None:
        write_json_atomic(args.json, card.to_dict())
        print(f"wrote {args.json}")
    if args.fail_outside:
        ok = all(all(p.values()) for p in (card.passes(r) for r in card.twin.values()))
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
