"""Tests of the quantile-forecast scores in ``worldmodel.uncertainty.metrics``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats

from worldmodel.uncertainty.metrics import (
    auroc,
    central_interval,
    check_levels,
    covered,
    crps,
    empirical_quantiles,
    interval_width,
    level_weights,
    pinball,
    pit,
    pit_histogram,
    quantile_mean_std,
    spearman,
    threshold_at_fpr,
)

LEVELS_99 = np.arange(1, 100) / 100  # 0.01 .. 0.99
LEVELS_5 = np.array([0.05, 0.25, 0.5, 0.75, 0.95])


def _normal_q(levels: np.ndarray, mu: float = 0.0, sigma: float = 1.0) -> np.ndarray:
    return mu + sigma * stats.norm.ppf(levels)


def _ks_pvalue(values: np.ndarray) -> float:
    return float(stats.kstest(values, "uniform").pvalue)


# --- levels -------------------------------------------------------------------------------------


def test_check_levels_returns_float64() -> None:
    lv = check_levels([0.1, 0.5, 0.9])
    assert lv.dtype == np.float64
    np.testing.assert_array_equal(lv, [0.1, 0.5, 0.9])


@pytest.mark.parametrize(
    ("levels", "match"),
    [
        ([0.5, 0.1, 0.9], "strictly increasing"),
        ([0.1, 0.5, 0.5], "strictly increasing"),
        ([0.0, 0.5], r"inside \(0, 1\)"),
        ([0.5, 1.0], r"inside \(0, 1\)"),
        ([[0.1, 0.5]], "1-D"),
        ([], "non-empty"),
        ([0.1, np.nan], "levels has non-finite"),
    ],
)
def test_check_levels_rejects(levels: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_levels(levels)


def test_bad_levels_rejected_by_scores() -> None:
    with pytest.raises(ValueError, match="levels must be strictly increasing"):
        crps(np.zeros((4, 3)), np.zeros(4), [0.9, 0.5, 0.1])


def test_level_weights() -> None:
    np.testing.assert_allclose(level_weights([0.1, 0.5, 0.9]), [0.3, 0.4, 0.3])
    np.testing.assert_allclose(level_weights([0.3]), [1.0])
    np.testing.assert_allclose(level_weights([0.2, 0.4]), [0.3, 0.7])
    w = level_weights(np.sort(np.random.default_rng(0).uniform(0.01, 0.99, 17)))
    assert w.shape == (17,) and (w > 0).all()
    assert w.sum() == pytest.approx(1.0)


# --- pinball and CRPS ---------------------------------------------------------------------------


def test_pinball_by_hand() -> None:
    levels = [0.1, 0.9]
    q = np.array([[8.0, 8.0], [12.0, 12.0]])
    y = np.array([10.0, 10.0])
    # y above q: τ (y − q); y below q: (1 − τ) (q − y)
    expected = [[0.1 * 2, 0.9 * 2], [0.9 * 2, 0.1 * 2]]
    out = pinball(q, y, levels)
    assert out.dtype == np.float64 and out.shape == (2, 2)
    np.testing.assert_allclose(out, expected)
    assert pinball([3.0], 3.0, [0.5])[0] == 0.0


def test_shape_mismatch_between_q_and_y() -> None:
    with pytest.raises(ValueError, match=r"y shape \(4,\) must equal q shape"):
        pinball(np.zeros((5, 3)), np.zeros(4), [0.1, 0.5, 0.9])
    with pytest.raises(ValueError, match=r"q must have shape \[\.\.\., Q\] with Q = len\(levels\)"):
        crps(np.zeros((5, 2)), np.zeros(5), [0.1, 0.5, 0.9])
    with pytest.raises(ValueError, match="y has non-finite"):
        crps(np.zeros((2, 3)), [0.0, np.inf], [0.1, 0.5, 0.9])
    with pytest.raises(ValueError, match="q has non-finite"):
        pit(np.full((2, 3), np.nan), [0.0, 0.0], [0.1, 0.5, 0.9], np.random.default_rng(0))


def test_crps_normal_matches_closed_form() -> None:
    mu, sigma = 2.0, 3.0
    y = np.array([-6.0, 0.0, 2.0, 3.5, 8.0, 15.0])
    q = np.broadcast_to(_normal_q(LEVELS_99, mu, sigma), (y.size, 99))
    z = (y - mu) / sigma
    exact = sigma * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / np.sqrt(np.pi))
    out = crps(q, y, LEVELS_99)
    assert out.shape == y.shape and out.dtype == np.float64
    np.testing.assert_allclose(out, exact, rtol=0.03)
    # a wrongly located forecast scores worse
    assert (crps(q + 5.0, y, LEVELS_99).mean()) > out.mean()


def test_crps_weights_levels_by_their_mass() -> None:
    # masses 0.3, 0.4, 0.3; pinball 0.1, 0, 0.1 -> 2 * (0.03 + 0.03)
    assert crps([0.0, 1.0, 2.0], 1.0, [0.1, 0.5, 0.9]) == pytest.approx(0.12)
    # masses 0.15, 0.4, 0.45; y below every quantile by 1: pinball 1 − τ
    expected = 2 * (0.15 * 0.9 + 0.4 * 0.8 + 0.45 * 0.1)
    assert crps([[1.0, 1.0, 1.0]], [0.0], [0.1, 0.2, 0.9])[0] == pytest.approx(expected)


def test_crps_point_forecast_is_absolute_error() -> None:
    rng = np.random.default_rng(1)
    point = rng.normal(size=(3, 4))
    y = rng.normal(size=(3, 4))
    # symmetric levels: exactly |y − q|
    q = np.repeat(point[..., None], 99, axis=-1)
    np.testing.assert_allclose(crps(q, y, LEVELS_99), np.abs(y - point), rtol=1e-12)
    # dense asymmetric levels: close to the MAE
    dense = np.linspace(0.002, 0.995, 400)
    q = np.repeat(point[..., None], dense.size, axis=-1)
    assert crps(q, y, dense).mean() == pytest.approx(np.abs(y - point).mean(), rel=0.01)


# --- PIT ----------------------------------------------------------------------------------------


def test_pit_by_hand() -> None:
    levels = np.array([0.25, 0.5, 0.75])
    q = np.array([0.0, 1.0, 2.0])
    n = 4000
    rng = np.random.default_rng(0)
    qq = np.broadcast_to(q, (n, 3))

    def draws(value: float) -> np.ndarray:
        return pit(qq, np.full(n, value), levels, rng)

    assert pit(q, 0.5, levels, rng) == pytest.approx(0.375)  # interpolation
    assert pit(q, 1.5, levels, rng) == pytest.approx(0.625)
    for value, lo, hi in [(-3.0, 0.0, 0.25), (7.0, 0.75, 1.0), (1.0, 0.25, 0.75)]:
        v = draws(value)  # tails and a single tie: uniform over the whole range
        assert v.min() >= lo and v.max() <= hi
        assert v.min() < lo + 0.01 and v.max() > hi - 0.01
        assert v.mean() == pytest.approx((lo + hi) / 2, abs=0.01)
    # several tied quantiles at the bottom: uniform in (0, level above the tie)
    v = pit(np.broadcast_to([0.0, 0.0, 2.0], (n, 3)), np.zeros(n), levels, rng)
    assert v.max() <= 0.75 and v.max() > 0.74 and v.mean() == pytest.approx(0.375, abs=0.01)
    # ties at the top: uniform in (level below the tie, 1)
    v = pit(np.broadcast_to([0.0, 2.0, 2.0], (n, 3)), np.full(n, 2.0), levels, rng)
    assert v.min() >= 0.25 and v.min() < 0.26 and v.mean() == pytest.approx(0.625, abs=0.01)


def test_pit_deterministic_for_a_seed_and_validates_order() -> None:
    q = np.broadcast_to(_normal_q(LEVELS_5), (50, 5))
    y = np.random.default_rng(3).normal(size=50) * 3
    a = pit(q, y, LEVELS_5, np.random.default_rng(7))
    b = pit(q, y, LEVELS_5, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (50,) and ((a >= 0) & (a <= 1)).all()
    with pytest.raises(ValueError, match="q must be non-decreasing"):
        pit([0.0, 2.0, 1.0], 0.5, [0.25, 0.5, 0.75], np.random.default_rng(0))


def test_pit_of_own_samples_is_uniform() -> None:
    n = 20_000
    rng = np.random.default_rng(0)
    y = rng.normal(1.0, 2.0, n)
    q = np.broadcast_to(_normal_q(LEVELS_99, 1.0, 2.0), (n, 99))
    values = pit(q, y, LEVELS_99, rng)
    assert _ks_pvalue(values) > 0.01
    np.testing.assert_allclose(pit_histogram(values), 1.0, atol=0.1)


def test_pit_with_point_mass_at_zero_is_uniform() -> None:
    # traffic-like: zero with probability p0, else exponential(mean 2); levels 0.005 .. 0.995
    levels = np.arange(1, 200) / 200
    p0, n = 0.3025, 20_000
    rng = np.random.default_rng(0)
    y = np.where(rng.random(n) < p0, 0.0, rng.exponential(2.0, n))
    cont = -2.0 * np.log1p(-(np.maximum(levels, p0) - p0) / (1 - p0))
    q_one = np.where(levels <= p0, 0.0, cont)
    assert (q_one == 0).sum() == 60 and (y == 0).mean() > 0.25
    values = pit(np.broadcast_to(q_one, (n, levels.size)), y, levels, rng)
    assert _ks_pvalue(values) > 0.01
    np.testing.assert_allclose(pit_histogram(values), 1.0, atol=0.1)


def test_pit_of_too_narrow_forecast_is_u_shaped() -> None:
    n = 20_000
    rng = np.random.default_rng(2)
    y = rng.normal(size=n)
    q = np.broadcast_to(_normal_q(LEVELS_99, 0.0, 0.5), (n, 99))
    hist = pit_histogram(pit(q, y, LEVELS_99, rng))
    assert hist[0] > 1.5 and hist[-1] > 1.5
    assert (hist[3:7] < 0.9).all()
    assert _ks_pvalue(pit(q, y, LEVELS_99, rng)) < 1e-6


def test_pit_histogram() -> None:
    np.testing.assert_allclose(pit_histogram(np.linspace(0.025, 0.975, 20), bins=10), 1.0)
    hist = pit_histogram(np.full(7, 0.05), bins=5)
    np.testing.assert_allclose(hist, [5.0, 0, 0, 0, 0])
    assert pit_histogram(np.random.default_rng(0).random(999), bins=7).mean() == pytest.approx(1)
    assert pit_histogram([1.0, 0.0], bins=2).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match=r"pit_values must lie in \[0, 1\]"):
        pit_histogram([0.2, 1.2])
    with pytest.raises(ValueError, match="bins must be an integer"):
        pit_histogram([0.2], bins=0)


# --- intervals and moments ----------------------------------------------------------------------


def test_central_interval_width_and_coverage() -> None:
    q = np.arange(2 * 3 * 5, dtype=float).reshape(2, 3, 5)
    lo, hi = central_interval(q, LEVELS_5, 0.9)  # (1 − 0.9)/2 is 0.04999…: within tolerance
    np.testing.assert_array_equal(lo, q[..., 0])
    np.testing.assert_array_equal(hi, q[..., 4])
    lo, hi = central_interval(q, LEVELS_5, 0.5)
    np.testing.assert_array_equal(lo, q[..., 1])
    np.testing.assert_array_equal(hi, q[..., 3])
    np.testing.assert_array_equal(interval_width(q, LEVELS_5, 0.5), np.full((2, 3), 2.0))

    q1 = np.array([[1.0, 2.0, 3.0, 4.0, 5.0]] * 5)
    y = np.array([0.99, 1.0, 3.0, 5.0, 5.01])
    assert covered(q1, y, LEVELS_5, 0.9).tolist() == [False, True, True, True, False]
    assert covered(q1, y, LEVELS_5, 0.5).tolist() == [False, False, True, False, False]


def test_central_interval_missing_level() -> None:
    with pytest.raises(ValueError, match=r"not in levels; available levels: \[0\.05, 0\.25"):
        central_interval(np.zeros(5), LEVELS_5, 0.8)
    with pytest.raises(ValueError, match="coverage must lie in"):
        interval_width(np.zeros(5), LEVELS_5, 1.0)
    with pytest.raises(ValueError, match="y shape"):
        covered(np.zeros((3, 5)), np.zeros(2), LEVELS_5, 0.9)


def test_covered_fraction_of_calibrated_forecast() -> None:
    n = 20_000
    y = np.random.default_rng(4).normal(size=n)
    q = np.broadcast_to(_normal_q(LEVELS_99), (n, 99))
    assert covered(q, y, LEVELS_99, 0.8).mean() == pytest.approx(0.8, abs=0.01)
    assert covered(q * 0.5, y, LEVELS_99, 0.8).mean() < 0.55


def test_quantile_mean_std() -> None:
    mean, std = quantile_mean_std([0.0, 1.0, 2.0], [0.25, 0.5, 0.75])  # masses 3/8, 1/4, 3/8
    assert mean == pytest.approx(1.0) and std == pytest.approx(np.sqrt(0.75))
    mean, std = quantile_mean_std(np.full((4, 5), 3.0), LEVELS_5)
    np.testing.assert_allclose(mean, 3.0)
    np.testing.assert_array_equal(std, 0.0)  # no sqrt of a tiny negative
    mean, std = quantile_mean_std(_normal_q(LEVELS_99, 5.0, 2.0)[None], LEVELS_99)
    assert mean.shape == (1,) and mean[0] == pytest.approx(5.0)
    assert std[0] == pytest.approx(2.0, rel=0.03)


def test_empirical_quantiles() -> None:
    x = np.arange(101, dtype=float)
    np.testing.assert_allclose(empirical_quantiles(x, [0.1, 0.5, 0.95]), [10.0, 50.0, 95.0])
    samples = np.random.default_rng(5).normal(size=(500, 3, 4))
    out = empirical_quantiles(samples, LEVELS_5)
    assert out.shape == (3, 4, 5)
    np.testing.assert_allclose(out[1, 2], np.quantile(samples[:, 1, 2], LEVELS_5))
    out = empirical_quantiles(np.moveaxis(samples, 0, 2), LEVELS_5, axis=2)
    assert out.shape == (3, 4, 5)
    np.testing.assert_allclose(out[1, 2], np.quantile(samples[:, 1, 2], LEVELS_5))
    assert (np.diff(out, axis=-1) >= 0).all()
    with pytest.raises(ValueError, match="no samples"):
        empirical_quantiles(np.zeros((0, 3)), LEVELS_5)


# --- OOD gate: AUROC, Spearman, threshold -------------------------------------------------------


def test_auroc_matches_pairwise_count_with_ties() -> None:
    rng = np.random.default_rng(6)
    pos = rng.integers(0, 6, 57).astype(float) + 0.5
    neg = rng.integers(0, 5, 43).astype(float)
    neg[:10] = 2.5  # ties across the two groups
    diff = pos[:, None] - neg[None, :]
    brute = ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size
    assert auroc(pos, neg) == pytest.approx(brute, abs=1e-12)
    assert auroc(neg, pos) == pytest.approx(1 - brute, abs=1e-12)


def test_auroc_extremes() -> None:
    assert auroc([5.0, 6.0, 7.0], [1.0, 2.0]) == 1.0
    assert auroc([1.0, 2.0], [5.0, 6.0, 7.0]) == 0.0
    assert auroc([3.0, 3.0], [3.0, 3.0, 3.0]) == 0.5
    with pytest.raises(ValueError, match="negative_scores is empty"):
        auroc([1.0], [])
    with pytest.raises(ValueError, match="positive_scores is empty"):
        auroc([], [1.0])


def test_spearman() -> None:
    a = np.random.default_rng(7).normal(size=30)
    assert spearman(a, np.exp(a)) == pytest.approx(1.0)
    assert spearman(a, -(a**3)) == pytest.approx(-1.0)
    assert spearman([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0]) == pytest.approx(0.8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
        assert np.isnan(spearman([1.0, 2.0, 3.0], [4.0, 4.0, 4.0]))
    with pytest.raises(ValueError, match="equal lengths"):
        spearman([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="b has non-finite"):
        spearman([1.0, 2.0], [1.0, np.nan])


def test_threshold_at_fpr() -> None:
    neg = np.random.default_rng(8).integers(0, 40, 200).astype(float)  # many ties
    values = np.unique(neg)
    for fpr in [0.0, 0.01, 0.05, 0.1, 0.29, 0.5, 0.9]:
        t = threshold_at_fpr(neg, fpr)
        assert (neg > t).mean() <= fpr + 1e-12
        smaller = values[values < t]  # any lower threshold flags too many negatives
        if smaller.size:
            assert (neg > smaller[-1]).mean() > fpr
    assert threshold_at_fpr(neg, 0.0) == neg.max()
    assert threshold_at_fpr(np.arange(100.0), 0.05) == 94.0  # 95..99 above: 5 %
    with pytest.raises(ValueError, match=r"fpr must lie in \[0, 1\)"):
        threshold_at_fpr(neg, 1.0)
