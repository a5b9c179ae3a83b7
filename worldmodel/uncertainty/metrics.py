"""Scores of probabilistic forecasts given as quantiles (numpy/scipy only).

Conventions, shared by every function:

* ``levels``: 1-D array of ``Q`` probabilities, strictly increasing, each in ``(0, 1)``.
* ``q``: quantile values, shape ``[..., Q]`` (``q[..., i]`` is the forecast quantile at
  ``levels[i]``), in the unit of the truth (e.g. MB per slot for traffic). Quantiles are meant to
  be non-decreasing along the last axis; only :func:`pit` enforces it.
* ``y``: the truth, shape ``[...]`` = ``q.shape[:-1]`` exactly (no broadcasting).

Each level stands for a probability mass (:func:`level_weights`): the interval between the
midpoints to its neighbours, the first reaching down to 0 and the last up to 1. Results are
float64 arrays (floats for the scalar scores). Bad shapes, bad levels and non-finite values
raise ``ValueError`` naming the offending argument.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

LEVEL_TOL = 1e-9
"""How close a requested level (e.g. of a central interval) must be to one of ``levels``."""


def _finite(x: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} has non-finite values (nan or inf)")
    return arr


def check_levels(levels: ArrayLike) -> np.ndarray:
    """``levels`` as a validated float64 1-D array: non-empty, strictly increasing, in (0, 1)."""
    lv = _finite(levels, "levels")
    if lv.ndim != 1 or lv.size == 0:
        raise ValueError(f"levels must be a non-empty 1-D array, got shape {lv.shape}")
    if not ((lv > 0) & (lv < 1)).all():
        raise ValueError(f"levels must lie strictly inside (0, 1), got {lv.tolist()}")
    if not (np.diff(lv) > 0).all():
        raise ValueError(f"levels must be strictly increasing, got {lv.tolist()}")
    return lv


def _check_q(q: ArrayLike, levels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    lv = check_levels(levels)
    qa = _finite(q, "q")
    if qa.ndim == 0 or qa.shape[-1] != lv.size:
        raise ValueError(
            f"q must have shape [..., Q] with Q = len(levels) = {lv.size}, got shape {qa.shape}"
        )
    return qa, lv


def _check_qy(
    q: ArrayLike, y: ArrayLike, levels: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    qa, lv = _check_q(q, levels)
    ya = _finite(y, "y")
    if ya.shape != qa.shape[:-1]:
        raise ValueError(
            f"y shape {ya.shape} must equal q shape without its last (level) axis, "
            f"{qa.shape[:-1]} (q shape {qa.shape})"
        )
    return qa, ya, lv


def level_weights(levels: ArrayLike) -> np.ndarray:
    """Probability mass of each level, shape ``[Q]``, summing to 1: boundaries at the midpoints
    between neighbouring levels, the first level reaching down to 0 and the last up to 1."""
    lv = check_levels(levels)
    edges = np.concatenate([[0.0], (lv[1:] + lv[:-1]) / 2, [1.0]])
    return np.diff(edges)


def pinball(q: ArrayLike, y: ArrayLike, levels: ArrayLike) -> np.ndarray:
    """Quantile (pinball) loss per level, ``max(τ(y−q), (τ−1)(y−q))``, shape ``[..., Q]``,
    same unit as ``y``; 0 when the quantile equals the truth."""
    qa, ya, lv = _check_qy(q, y, levels)
    diff = ya[..., None] - qa
    return np.maximum(lv * diff, (lv - 1.0) * diff)


def crps(q: ArrayLike, y: ArrayLike, levels: ArrayLike) -> np.ndarray:
    """Continuous ranked probability score, shape ``[...]``, same unit as ``y`` (lower is better).

    Quantile-score approximation ``2 Σ_i w_i · pinball_i`` with ``w = level_weights(levels)``
    (CRPS = 2 ∫₀¹ pinball_τ dτ); exact in the limit of dense levels. For a point forecast and
    levels symmetric about 1/2 it equals ``|y − q|``, the absolute error.
    """
    w = level_weights(levels)
    return 2.0 * (pinball(q, y, levels) * w).sum(-1)


def pit(q: ArrayLike, y: ArrayLike, levels: ArrayLike, rng: np.random.Generator) -> np.ndarray:
    """Randomized probability integral transform, shape ``[...]``, values in ``[0, 1]``.

    The forecast CDF is piecewise linear through the points ``(q_i, τ_i)``. If ``y`` lies strictly
    between two consecutive distinct quantiles the PIT is the linear interpolation of ``τ``.
    Below the first quantile it is uniform in ``(0, τ_0)``, above the last uniform in
    ``(τ_{Q−1}, 1)``. If ``y`` equals one or several quantiles (a point mass, e.g. zero traffic)
    it is uniform between the level just below the tie (0 if none) and the level just above it
    (1 if none). ``q`` must be non-decreasing along its last axis. One uniform draw per entry is
    taken from ``rng``, so a seeded generator gives reproducible values. A calibrated forecast
    gives uniform PIT values; an over-confident one a U-shaped histogram.
    """
    qa, ya, lv = _check_qy(q, y, levels)
    if (np.diff(qa, axis=-1) < 0).any():
        raise ValueError("q must be non-decreasing along its last axis (sort it first)")
    yy = ya[..., None]
    n_below = (qa < yy).sum(-1)  # quantiles strictly below y
    n_le = (qa <= yy).sum(-1)  # quantiles at or below y
    ext = np.concatenate([[0.0], lv, [1.0]])  # ext[k] = τ_{k-1}, with τ_{-1} = 0 and τ_Q = 1
    # uniform case (tails or tie): between the level below the tie and the level above it
    lo, hi = ext[n_below], ext[n_le + 1]
    u = rng.random(ya.shape)
    out = lo + u * (hi - lo)
    inner = (n_below == n_le) & (n_below > 0) & (n_below < lv.size)
    k = np.clip(n_below, 1, lv.size - 1)  # q[k-1] < y < q[k] where inner
    q_lo = np.take_along_axis(qa, (k - 1)[..., None], -1)[..., 0]
    q_hi = np.take_along_axis(qa, k[..., None], -1)[..., 0]
    span = np.where(inner, q_hi - q_lo, 1.0)
    interp = lv[k - 1] + (lv[k] - lv[k - 1]) * (ya - q_lo) / span
    return np.clip(np.where(inner, interp, out), 0.0, 1.0)


def pit_histogram(pit_values: ArrayLike, bins: int = 10) -> np.ndarray:
    """Density histogram of PIT values over ``bins`` equal bins of ``[0, 1]``, shape ``[bins]``,
    mean 1 across bins; a perfectly calibrated forecast gives all ones."""
    if not isinstance(bins, int | np.integer) or isinstance(bins, bool) or bins < 1:
        raise ValueError(f"bins must be an integer >= 1, got {bins!r}")
    v = _finite(pit_values, "pit_values").ravel()
    if v.size == 0:
        raise ValueError("pit_values is empty")
    if ((v < 0) | (v > 1)).any():
        raise ValueError("pit_values must lie in [0, 1]")
    counts, _ = np.histogram(v, bins=bins, range=(0.0, 1.0))
    return counts * (bins / v.size)


def _level_index(lv: np.ndarray, level: float) -> int:
    hits = np.flatnonzero(np.abs(lv - level) <= LEVEL_TOL)
    if hits.size == 0:
        raise ValueError(
            f"level {level:.10g} needed for the central interval is not in levels; "
            f"available levels: {lv.tolist()}"
        )
    return int(hits[0])


def central_interval(
    q: ArrayLike, levels: ArrayLike, coverage: float
) -> tuple[np.ndarray, np.ndarray]:
    """Central ``coverage`` interval ``(lo, hi)``, each shape ``[...]``, same unit as ``q``: the
    quantiles at levels ``(1−c)/2`` and ``(1+c)/2``, which must be in ``levels`` (±1e-9)."""
    qa, lv = _check_q(q, levels)
    c = float(coverage)
    if not 0.0 < c < 1.0:
        raise ValueError(f"coverage must lie in (0, 1), got {coverage!r}")
    i_lo, i_hi = _level_index(lv, (1.0 - c) / 2), _level_index(lv, (1.0 + c) / 2)
    return qa[..., i_lo].copy(), qa[..., i_hi].copy()


def covered(q: ArrayLike, y: ArrayLike, levels: ArrayLike, coverage: float) -> np.ndarray:
    """Whether ``lo ≤ y ≤ hi`` for the central ``coverage`` interval, bool array ``[...]``."""
    qa, ya, lv = _check_qy(q, y, levels)
    lo, hi = central_interval(qa, lv, coverage)
    return (lo <= ya) & (ya <= hi)


def interval_width(q: ArrayLike, levels: ArrayLike, coverage: float) -> np.ndarray:
    """Width ``hi − lo`` of the central ``coverage`` interval, shape ``[...]``, unit of ``q``."""
    lo, hi = central_interval(q, levels, coverage)
    return hi - lo


def quantile_mean_std(q: ArrayLike, levels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation, each shape ``[...]``, unit of ``q``, of the discrete
    distribution putting mass ``level_weights(levels)[i]`` on ``q[..., i]``."""
    qa, lv = _check_q(q, levels)
    w = level_weights(lv)
    mean = (w * qa).sum(-1)
    var = (w * qa**2).sum(-1) - mean**2
    return mean, np.sqrt(np.maximum(var, 0.0))


def empirical_quantiles(x: ArrayLike, levels: ArrayLike, axis: int = 0) -> np.ndarray:
    """Quantiles at ``levels`` of the samples ``x`` along ``axis`` (``np.quantile``, linear), with
    the level axis last: shape of ``x`` without ``axis``, plus ``[Q]``; unit of ``x``."""
    lv = check_levels(levels)
    xa = _finite(x, "x")
    if xa.ndim == 0:
        raise ValueError("x must have at least one axis of samples")
    try:
        n = xa.shape[axis]
    except IndexError:
        raise ValueError(f"axis {axis} out of range for x of shape {xa.shape}") from None
    if n == 0:
        raise ValueError(f"x has no samples along axis {axis} (shape {xa.shape})")
    return np.moveaxis(np.quantile(xa, lv, axis=axis), 0, -1)


def _scores(x: ArrayLike, name: str) -> np.ndarray:
    v = _finite(x, name).ravel()
    if v.size == 0:
        raise ValueError(f"{name} is empty")
    return v


def auroc(positive_scores: ArrayLike, negative_scores: ArrayLike) -> float:
    """Area under the ROC curve: probability that a positive scores above a negative, ties
    counting 1/2 (Mann–Whitney U / (n_pos · n_neg)); in [0, 1], 0.5 for no separation."""
    pos = _scores(positive_scores, "positive_scores")
    neg = _scores(negative_scores, "negative_scores")
    ranks = stats.rankdata(np.concatenate([pos, neg]))
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2
    return float(u / (pos.size * neg.size))


def spearman(a: ArrayLike, b: ArrayLike) -> float:
    """Spearman rank correlation of two 1-D arrays of equal length (≥ 2), in [-1, 1]; nan when
    either is constant."""
    aa, ba = _finite(a, "a"), _finite(b, "b")
    for name, arr in (("a", aa), ("b", ba)):
        if arr.ndim != 1 or arr.size < 2:
            raise ValueError(f"{name} must be 1-D with at least 2 values, got shape {arr.shape}")
    if aa.size != ba.size:
        raise ValueError(f"a and b must have equal lengths, got {aa.size} and {ba.size}")
    if (aa == aa[0]).all() or (ba == ba[0]).all():
        return float("nan")
    return float(stats.spearmanr(aa, ba).statistic)


def threshold_at_fpr(negative_scores: ArrayLike, fpr: float) -> float:
    """Smallest threshold ``t`` (unit of the scores) such that the fraction of negative scores
    strictly above ``t`` is ≤ ``fpr`` (in [0, 1)); flag out-of-distribution where ``score > t``."""
    neg = np.sort(_scores(negative_scores, "negative_scores"))
    f = float(fpr)
    if not 0.0 <= f < 1.0:
        raise ValueError(f"fpr must lie in [0, 1), got {fpr!r}")
    k = min(int(np.floor(f * neg.size + 1e-9)), neg.size - 1)  # most negatives allowed above t
    return float(neg[neg.size - k - 1])
