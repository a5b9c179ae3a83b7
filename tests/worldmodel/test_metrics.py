"""Tests of the rollout metrics (JSD, MAE, RMSE, NRMSE) and counterfactual fidelity helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from worldmodel.metrics import (
    bias_pct,
    delta_r2,
    jsd,
    jsd_per_cell,
    leave_one_map_out_jsd,
    mae,
    nrmse,
    rmse,
    rollout_metrics,
    sign_agreement,
)


def _traffic(seed: int, shape: tuple[int, ...] = (3, 20, 6)) -> np.ndarray:
    return np.random.default_rng(seed).gamma(2.0, 10.0, shape)


# ---------------------------------------------------------------------- JSD
def test_jsd_identical_is_zero() -> None:
    x = _traffic(0)
    assert jsd(x, x) == 0.0
    assert jsd_per_cell(x, x) == 0.0


def test_jsd_disjoint_is_one() -> None:
    true = np.random.default_rng(1).uniform(0.5, 1.0, 500)
    pred = np.zeros(500)  # all mass in bin 0, true mass in bins 25..49
    assert jsd(pred, true) == pytest.approx(1.0)
    # over-prediction beyond the true range lands in the overflow bin, which by construction
    # also holds the top 0.5% of the true values: close to, not exactly, 1
    assert 0.95 < jsd(true + 100.0, true) < 1.0


def test_jsd_symmetric() -> None:
    # JSD is symmetric given the bins; the edge comes from `true`, so give both arrays the same
    # 99.5th percentile (their top 2% sit at 100) and swapping them must not change anything
    rng = np.random.default_rng(2)
    a = np.concatenate([np.minimum(rng.gamma(2.0, 10.0, 200), 99.0), np.full(5, 100.0)])
    b = np.concatenate([np.minimum(rng.gamma(3.0, 8.0, 200), 99.0), np.full(5, 100.0)])
    assert np.percentile(a, 99.5) == np.percentile(b, 99.5) == 100.0
    assert 0.0 < jsd(a, b) == pytest.approx(jsd(b, a), abs=1e-12)


def test_jsd_mask_ignores_entries() -> None:
    true = _traffic(4)
    pred = true.copy()
    mask = np.ones_like(true, dtype=bool)
    mask[:, :, -1] = False
    pred[:, :, -1] = 1e6  # garbage where masked out
    assert jsd(pred, true, mask) == 0.0
    assert jsd(pred, true) > 0.0
    # a broadcastable [B, 1, N] mask and a torch mask work the same
    cell_mask = torch.ones(3, 1, 6, dtype=torch.bool)
    cell_mask[..., -1] = False
    assert jsd(torch.as_tensor(pred), torch.as_tensor(true), cell_mask) == 0.0
    assert jsd_per_cell(pred, true, mask) == 0.0


def test_jsd_definition_by_hand() -> None:
    true = np.array([0.0, 1.0, 2.0, 3.0])
    pred = np.array([0.0, 0.0, 2.0, 3.0])
    u = np.percentile(true, 99.5)  # 2.985: 3 bins of width 0.995, then the overflow bin
    assert u == pytest.approx(2.985)
    p_true = np.array([1, 1, 1, 1]) / 4  # 0 -> bin 0, 1 -> bin 1, 2 -> bin 2, 3 > u -> overflow
    p_pred = np.array([2, 0, 1, 1]) / 4
    m = (p_true + p_pred) / 2

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        nz = a > 0
        return float((a[nz] * np.log2(a[nz] / b[nz])).sum())

    want = 0.5 * kl(p_true, m) + 0.5 * kl(p_pred, m)
    assert jsd(pred, true, n_bins=3) == pytest.approx(want)
    assert jsd(pred, true, n_bins=1) == 0.0  # [0, u] is one bin: both 3 + 1 overflow


def test_jsd_all_zero_and_fallback_edge() -> None:
    z = np.zeros(10)
    assert jsd(z, z) == 0.0
    # 99.5th percentile of true is 0 -> edge falls back to the largest value
    assert jsd(np.full(10, 5.0), z) == pytest.approx(1.0)


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float64, 30, elements=st.floats(0, 1e4)),
    arrays(np.float64, 30, elements=st.floats(0, 1e4)),
)
def test_jsd_in_unit_interval(a: np.ndarray, b: np.ndarray) -> None:
    v = jsd(a, b)
    assert 0.0 <= v <= 1.0
    assert 0.0 <= jsd_per_cell(a.reshape(10, 3), b.reshape(10, 3)) <= 1.0


def test_jsd_per_cell_averages_cells() -> None:
    true = _traffic(5, (40, 2))
    pred = true.copy()
    pred[:, 1] = 0.0  # cell 1 fully wrong, cell 0 perfect
    assert jsd_per_cell(pred, true) == pytest.approx(0.5 * jsd(pred[:, 1], true[:, 1]))


def test_jsd_validation() -> None:
    with pytest.raises(ValueError, match="shape"):
        jsd(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="no entries"):
        jsd(np.zeros(3), np.zeros(3), np.zeros(3, dtype=bool))
    with pytest.raises(ValueError, match="broadcast"):
        jsd(np.zeros((2, 3)), np.zeros((2, 3)), np.ones(2, dtype=bool))
    with pytest.raises(ValueError, match="non-finite"):
        jsd(np.array([np.nan, 1.0]), np.ones(2))
    with pytest.raises(ValueError, match="n_bins"):
        jsd(np.ones(2), np.ones(2), n_bins=0)


# ---------------------------------------------------------------------- errors
def test_mae_rmse_nrmse_by_hand() -> None:
    true = np.array([[0.0, 2.0], [4.0, 10.0]])
    pred = np.array([[1.0, 2.0], [1.0, 10.0]])
    assert mae(pred, true) == pytest.approx(1.0)  # (1 + 0 + 3 + 0) / 4
    assert rmse(pred, true) == pytest.approx(math.sqrt(10 / 4))
    assert nrmse(pred, true) == pytest.approx(math.sqrt(10 / 4) / 10.0)
    mask = np.array([[True, True], [False, True]])  # drops the error of 3
    assert mae(pred, true, mask) == pytest.approx(1 / 3)
    assert nrmse(pred, true, mask) == pytest.approx(math.sqrt(1 / 3) / 10.0)
    assert math.isnan(nrmse(pred, np.full_like(true, 2.0)))
    m = rollout_metrics(torch.as_tensor(pred), torch.as_tensor(true), mask)
    assert set(m) == {"jsd", "mae", "rmse", "nrmse", "bias_pct"}
    assert m["mae"] == pytest.approx(1 / 3)
    assert m["bias_pct"] == pytest.approx(100 * (13 - 12) / 12)  # (1+2+10) vs (0+2+10)
    assert bias_pct(pred, true) == pytest.approx(100 * (14 - 16) / 16)
    assert math.isnan(bias_pct(pred, np.zeros_like(true)))
    assert all(isinstance(v, float) for v in m.values())


# ---------------------------------------------------------------------- counterfactuals
def test_delta_r2() -> None:
    true = np.array([-3.0, 1.0, 2.0, 5.0])
    assert delta_r2(true, true) == 1.0
    assert delta_r2(np.zeros(4), true) <= 0.0
    assert delta_r2(np.full(4, true.mean()), true) == pytest.approx(0.0)
    assert delta_r2(0.9 * true, true) > 0.9
    mask = np.array([True, True, True, False])
    pred = true.copy()
    pred[3] = 100.0
    assert delta_r2(pred, true, mask) == 1.0
    assert delta_r2(np.ones(3), np.ones(3)) == 1.0  # constant true, perfect
    assert delta_r2(np.zeros(3), np.ones(3)) == 0.0


def test_sign_agreement() -> None:
    true = np.array([2.0, -1.0, 0.05, -3.0, 4.0])
    pred = np.array([1.0, 1.0, -9.0, -0.1, 0.0])
    # |true| > 0.1: entries 0, 1, 3, 4 -> agree, disagree, agree, zero prediction never agrees
    assert sign_agreement(pred, true, tol=0.1) == pytest.approx(0.5)
    assert sign_agreement(pred, true, tol=0.0) == pytest.approx(2 / 5)
    mask = np.array([True, False, True, True, False])
    assert sign_agreement(pred, true, mask, tol=0.1) == 1.0
    assert math.isnan(sign_agreement(pred, true, tol=10.0))
    with pytest.raises(ValueError, match="tol"):
        sign_agreement(pred, true, tol=-1.0)


def test_leave_one_map_out_jsd() -> None:
    rng = np.random.default_rng(3)
    true = [rng.gamma(2.0, 10.0, 400), rng.gamma(2.0, 30.0, 300), rng.gamma(3.0, 20.0, 350)]
    pred = [t * rng.uniform(0.9, 1.1, t.shape) for t in true]
    pred[2] = true[2] * 1.5  # only map 2 is badly predicted
    out = leave_one_map_out_jsd({"m": pred, "exact": true}, true)["m"]
    assert out.shape == (3,)
    np.testing.assert_array_equal(leave_one_map_out_jsd({"e": true}, true)["e"], 0.0)
    # leaving out map 2 removes the bad map: the lowest JSD by far
    assert out.argmin() == 2 and out[2] < 0.7 * out[:2].min()
    # by hand: the pool without map 0, on the bins of the full pool
    upper = np.percentile(np.concatenate(true), 99.5)
    rest_p, rest_t = np.concatenate(pred[1:]), np.concatenate(true[1:])
    cp = np.bincount(metrics_bin(rest_p, upper), minlength=51)
    ct = np.bincount(metrics_bin(rest_t, upper), minlength=51)
    p, q = cp / cp.sum(), ct / ct.sum()
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        want = 0.5 * (
            np.where(p > 0, p * np.log2(p / m), 0).sum()
            + np.where(q > 0, q * np.log2(q / m), 0).sum()
        )
    assert out[0] == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError, match="maps of predictions"):
        leave_one_map_out_jsd({"m": pred[:2]}, true)
    with pytest.raises(ValueError, match="two maps"):
        leave_one_map_out_jsd({"m": pred[:1]}, true[:1])
    with pytest.raises(ValueError, match="m: every map needs finite"):
        leave_one_map_out_jsd({"m": [pred[0], pred[1], np.full(3, np.nan)]}, true)


def metrics_bin(x: np.ndarray, upper: float) -> np.ndarray:
    """The JSD binning of the metrics module docstring, written out: 50 bins + overflow."""
    idx = np.minimum(np.floor(np.clip(x, 0, None) / upper * 50), 49).astype(int)
    return np.where(x > upper, 50, idx)
