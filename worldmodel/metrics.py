"""Rollout metrics of paper §5.1.3 (JSD, MAE, NRMSE) plus RMSE and counterfactual fidelity.

Every function takes numpy arrays or torch tensors (converted to float64 numpy) of one common
shape, e.g. traffic ``[B, T, N]`` or ``[T, N]`` in the map's traffic unit (MB per slot), and an
optional boolean ``mask`` broadcastable to that shape (``cell_mask[:, None, :]`` keeps the real
cells of a padded batch). Metrics pool every entry where ``mask`` is True; a mask that selects
nothing, mismatched shapes or non-finite selected values raise ``ValueError``.

**JSD** (``jsd``), exactly: pool the selected predicted values ``x`` and true values ``y``. Let
``u`` be the 99.5th percentile of ``y`` (``numpy.percentile``, linear interpolation); if
``u <= 0`` (almost all true traffic is zero) ``u`` is the largest value of ``x`` and ``y``, and
if that is also ``<= 0`` every value is 0 and the JSD is 0. Histogram both with ``n_bins``
equal-width bins over ``[0, u]`` (bin ``k`` is ``[k·u/n, (k+1)·u/n)``, the last one closed,
negative values go to bin 0) plus one overflow bin for values ``> u``, so ``n_bins + 1`` bins in
all. With ``p``, ``q`` the normalised histograms and ``m = (p + q) / 2``,
``JSD = ½ KL(p‖m) + ½ KL(q‖m)`` with base-2 logarithms, so it lies in ``[0, 1]``: 0 for equal
histograms, 1 for histograms without common bins. The edge comes from the true values only so
that every model is scored on the same bins, and the 99.5th percentile (rather than the
maximum) keeps one outlier from squeezing all mass into the first bins.
"""

from __future__ import annotations

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor  # nested lists and scalars work too

UPPER_PERCENTILE = 99.5
"""Percentile of the true values that sets the upper edge of the JSD bins."""


def _to_numpy(x: ArrayLike, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise ValueError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def _mask(mask: ArrayLike | None, shape: tuple[int, ...]) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    m = np.asarray(mask)
    if m.dtype != np.bool_:
        if not np.issubdtype(m.dtype, np.number) or not np.isin(m, (0, 1)).all():
            raise ValueError(f"mask: expected booleans (or 0/1), got dtype {m.dtype}")
        m = m.astype(bool)
    try:
        return np.broadcast_to(m, shape)
    except ValueError:
        raise ValueError(
            f"mask: shape {m.shape} does not broadcast to the data shape {shape}"
        ) from None


def _pair(
    pred: ArrayLike,
    true: ArrayLike,
    mask: ArrayLike | None,
    names: tuple[str, str] = ("pred", "true"),
) -> tuple[np.ndarray, np.ndarray]:
    """Selected entries of ``pred`` and ``true`` as two 1-D float64 arrays (validated)."""
    p = _to_numpy(pred, names[0])
    t = _to_numpy(true, names[1])
    if p.shape != t.shape:
        raise ValueError(f"{names[0]} shape {p.shape} != {names[1]} shape {t.shape}")
    m = _mask(mask, p.shape)
    p, t = p[m], t[m]
    if p.size == 0:
        raise ValueError("mask selects no entries")
    for name, arr in zip(names, (p, t), strict=True):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} has non-finite values where mask is True")
    return p, t


def _bin_index(values: np.ndarray, upper: np.ndarray | float, n_bins: int) -> np.ndarray:
    """Bin of each value: ``n_bins`` equal bins over ``[0, upper]`` + overflow bin ``n_bins``."""
    upper = np.asarray(upper, dtype=np.float64)
    safe = np.where(upper > 0, upper, 1.0)
    with np.errstate(over="ignore"):  # a tiny edge can overflow to inf: clipped just below
        idx = np.floor(np.clip(values, 0.0, None) / safe * n_bins)
    idx = np.minimum(idx, n_bins - 1).astype(np.int64)
    return np.where(values > upper, n_bins, idx)


def _jsd_from_counts(cp: np.ndarray, ct: np.ndarray) -> np.ndarray:
    """Base-2 JSD between count vectors along the last axis (rows need positive sums)."""
    p = cp / cp.sum(-1, keepdims=True)
    q = ct / ct.sum(-1, keepdims=True)
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0).sum(-1)
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0).sum(-1)
    return np.clip(0.5 * (kl_p + kl_q), 0.0, 1.0)


def _check_bins(n_bins: int) -> None:
    if not isinstance(n_bins, int | np.integer) or isinstance(n_bins, bool) or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1, got {n_bins!r}")


def jsd(pred: ArrayLike, true: ArrayLike, mask: ArrayLike | None = None, n_bins: int = 50) -> float:
    """Jensen–Shannon divergence (base 2, in ``[0, 1]``) between the value distributions of
    ``pred`` and ``true`` pooled over the masked entries; binning as in the module docstring."""
    _check_bins(n_bins)
    x, y = _pair(pred, true, mask)
    upper = float(np.percentile(y, UPPER_PERCENTILE))
    if upper <= 0:
        upper = float(max(x.max(), y.max()))
        if upper <= 0:
            return 0.0
    cx = np.bincount(_bin_index(x, upper, n_bins), minlength=n_bins + 1).astype(np.float64)
    cy = np.bincount(_bin_index(y, upper, n_bins), minlength=n_bins + 1).astype(np.float64)
    return float(_jsd_from_counts(cx, cy))


def leave_one_map_out_jsd(
    preds: dict[str, list[ArrayLike]], true: list[ArrayLike], n_bins: int = 50
) -> dict[str, np.ndarray]:
    """Pooled JSD of every model with each map left out in turn → ``{model: [n_maps]}``.

    ``true[i]`` and ``preds[model][i]`` are map ``i``'s selected values (any shape, flattened);
    entry ``i`` pools every map but ``i``. The bins stay those of the full pool (edge = 99.5th
    percentile of all true values), so a leave-out is the total count minus one map's. The
    input of a jackknife: it keeps n − 1 distinct maps in every replicate, where a bootstrap
    draw repeats maps, and a pooled JSD depends on how many distinct maps' errors can cancel.
    """
    _check_bins(n_bins)
    if len(true) < 2:
        raise ValueError(f"need at least two maps to leave one out, got {len(true)}")

    def flat(arrs: list[ArrayLike], name: str) -> list[np.ndarray]:
        out = [_to_numpy(a, name).ravel().astype(np.float64) for a in arrs]
        if any(a.size == 0 or not np.isfinite(a).all() for a in out):
            raise ValueError(f"{name}: every map needs finite values, at least one")
        return out

    ys = flat(true, "true")
    upper = float(np.percentile(np.concatenate(ys), UPPER_PERCENTILE))
    if upper <= 0:
        upper = max(float(max(y.max() for y in ys)), 1e-12)

    def counts(arrs: list[np.ndarray]) -> np.ndarray:
        return np.stack(
            [np.bincount(_bin_index(a, upper, n_bins), minlength=n_bins + 1) for a in arrs]
        ).astype(np.float64)

    ct = counts(ys)
    out = {}
    for name, maps in preds.items():
        if len(maps) != len(ys):
            raise ValueError(f"{name}: {len(maps)} maps of predictions for {len(ys)} true maps")
        cp = counts(flat(maps, name))
        out[name] = _jsd_from_counts(cp.sum(0) - cp, ct.sum(0) - ct)
    return out


def jsd_per_cell(
    pred: ArrayLike, true: ArrayLike, mask: ArrayLike | None = None, n_bins: int = 50
) -> float:
    """Mean over cells of the JSD between each cell's predicted and true time series.

    Arrays are ``[..., T, N]``: axis ``-2`` is time, every index of the other axes is one cell
    (e.g. ``[B, T, N]`` has ``B·N`` cells). Each cell uses the binning rule of ``jsd`` on its own
    masked values (edge from its own true values); cells with no masked entry are skipped.
    """
    _check_bins(n_bins)
    p = _to_numpy(pred, "pred")
    t = _to_numpy(true, "true")
    if p.shape != t.shape:
        raise ValueError(f"pred shape {p.shape} != true shape {t.shape}")
    if p.ndim < 2:
        raise ValueError(f"jsd_per_cell: expected [..., T, N], got shape {p.shape}")
    m = _mask(mask, p.shape)

    def cells(a: np.ndarray) -> np.ndarray:  # [..., T, N] -> [T, C]
        return np.moveaxis(a, -2, 0).reshape(a.shape[-2], -1)

    p, t, m = cells(p), cells(t), cells(m)
    keep = m.any(0)
    if not keep.any():
        raise ValueError("mask selects no entries")
    p, t, m = p[:, keep], t[:, keep], m[:, keep]
    if not (np.isfinite(p[m]).all() and np.isfinite(t[m]).all()):
        raise ValueError("pred or true has non-finite values where mask is True")
    upper = np.nanpercentile(np.where(m, t, np.nan), UPPER_PERCENTILE, axis=0)  # [C]
    fallback = np.maximum(np.where(m, p, 0.0).max(0), np.where(m, t, 0.0).max(0))
    upper = np.where(upper > 0, upper, fallback)
    n_cells = p.shape[1]
    width = n_bins + 1
    col = np.broadcast_to(np.arange(n_cells), p.shape)[m] * width

    def counts(a: np.ndarray) -> np.ndarray:
        idx = _bin_index(a, np.broadcast_to(upper, a.shape), n_bins)[m] + col
        return np.bincount(idx, minlength=n_cells * width).reshape(n_cells, width).astype(float)

    per = _jsd_from_counts(counts(p), counts(t))
    per = np.where(upper > 0, per, 0.0)  # all-zero cell: identical distributions
    return float(per.mean())


def mae(pred: ArrayLike, true: ArrayLike, mask: ArrayLike | None = None) -> float:
    """Mean absolute error over the masked entries (traffic unit)."""
    x, y = _pair(pred, true, mask)
    return float(np.abs(x - y).mean())


def rmse(pred: ArrayLike, true: ArrayLike, mask: ArrayLike | None = None) -> float:
    """Root mean squared error over the masked entries (traffic unit)."""
    x, y = _pair(pred, true, mask)
    return float(np.sqrt(np.square(x - y).mean()))


def nrmse(pred: ArrayLike, true: ArrayLike, mask: ArrayLike | None = None) -> float:
    """RMSE / (max(true) − min(true)) over the masked entries (dimensionless, §5.1.3).

    NaN when the masked true values are constant (zero range).
    """
    x, y = _pair(pred, true, mask)
    span = float(y.max() - y.min())
    if span <= 0:
        return float("nan")
    return float(np.sqrt(np.square(x - y).mean()) / span)


def bias_pct(pred: ArrayLike, true: ArrayLike, mask: ArrayLike | None = None) -> float:
    """Total-traffic bias ``100 · (Σ pred − Σ true) / Σ true`` (%) over the masked entries.

    Positive = over-predicts. A level error that JSD sees in every map (it does not cancel when
    maps are pooled, unlike errors of opposite sign). NaN when the true total is 0.
    """
    x, y = _pair(pred, true, mask)
    total = float(y.sum())
    return float("nan") if total == 0 else 100.0 * (float(x.sum()) - total) / total


def rollout_metrics(
    pred: ArrayLike, true: ArrayLike, mask: ArrayLike | None = None, n_bins: int = 50
) -> dict[str, float]:
    """``{"jsd", "mae", "rmse", "nrmse", "bias_pct"}`` of a rollout over the masked entries."""
    x, y = _pair(pred, true, mask)  # validate once; the metrics below see 1-D arrays
    return {
        "jsd": jsd(x, y, n_bins=n_bins),
        "mae": mae(x, y),
        "rmse": rmse(x, y),
        "nrmse": nrmse(x, y),
        "bias_pct": bias_pct(x, y),
    }


def delta_r2(pred_delta: ArrayLike, true_delta: ArrayLike, mask: ArrayLike | None = None) -> float:
    """Coefficient of determination of predicted vs true per-cell traffic changes.

    ``*_delta`` are the traffic under a plan minus the traffic under the no-change plan (any
    common shape, e.g. ``[N]`` per cell or ``[B, T, N]``). ``R² = 1 − SS_res / SS_tot`` with
    ``SS_res = Σ (pred − true)²`` and ``SS_tot = Σ (true − mean(true))²`` over the masked
    entries: 1 is perfect, ≤ 0 is no better than predicting the mean change (a zero prediction
    scores ≤ 0). If ``SS_tot = 0`` the result is 1.0 for a perfect prediction and 0.0 otherwise.
    """
    x, y = _pair(pred_delta, true_delta, mask, ("pred_delta", "true_delta"))
    ss_res = float(np.square(x - y).sum())
    ss_tot = float(np.square(y - y.mean()).sum())
    if ss_tot <= 0:
        return 1.0 if ss_res == 0 else 0.0
    return 1.0 - ss_res / ss_tot


def sign_agreement(
    pred_delta: ArrayLike,
    true_delta: ArrayLike,
    mask: ArrayLike | None = None,
    tol: float = 0.0,
) -> float:
    """Share of entries whose predicted change has the sign of the true change.

    Only entries with ``|true_delta| > tol`` (traffic unit) count; a predicted change of exactly
    0 never agrees. NaN when no entry qualifies.
    """
    if not np.isfinite(tol) or tol < 0:
        raise ValueError(f"tol must be finite and >= 0, got {tol}")
    x, y = _pair(pred_delta, true_delta, mask, ("pred_delta", "true_delta"))
    big = np.abs(y) > tol
    if not big.any():
        return float("nan")
    return float((np.sign(x[big]) == np.sign(y[big])).mean())
