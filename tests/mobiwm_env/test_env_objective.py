"""Unit tests of the Eq. 21 objective (``mobiwm_env.objective``)."""

from __future__ import annotations

import numpy as np
import pytest

from mobiwm_env import objective


def test_balanced_target_shares_the_total_by_capacity():
    traffic = np.array([[[10.0, 30.0, 0.0]], [[5.0, 5.0, 10.0]]])  # [E=2, P=1, N=3]
    weight = np.array([1.0, 3.0, 0.0])  # cell 2 inactive
    tgt = objective.balanced_target(traffic, weight)
    np.testing.assert_allclose(tgt[0, 0], [10.0, 30.0, 0.0])
    np.testing.assert_allclose(tgt[1, 0], [5.0, 15.0, 0.0])


def test_reward_and_imbalance():
    traffic = np.array([[[10.0, 30.0], [20.0, 20.0]]])  # [1, 2, 2]
    target = np.array([[[20.0, 20.0], [20.0, 20.0]]])
    active = np.array([True, True])
    r, imb = objective.reward(traffic, target, active, np.array([0.5]), 2.0)
    assert imb[0] == pytest.approx(20.0)
    assert r[0] == pytest.approx(-20.0 / 20.0 - 1.0)
    # an inactive cell never counts
    r2, imb2 = objective.reward(traffic, target, np.array([True, False]), np.array([0.0]), 2.0)
    assert imb2[0] == pytest.approx(10.0) and r2[0] == pytest.approx(-0.5)


def test_action_change_wraps_azimuth_and_normalises():
    old = np.array([[[40.0, 355.0, 2.0, 3.0]]])
    new = np.array([[[41.0, 5.0, 2.0, 2.5]]])
    d = objective.action_change(old, new, np.array([1.0, 10.0, 1.0, 1.0]), np.array([True]))
    assert d[0] == pytest.approx((1.0 + 1.0 + 0.0 + 0.5) / 4)


def test_fixed_target_table_rows_by_slot():
    table = np.arange(6.0).reshape(3, 2)
    t = objective.Target.make(table, np.ones(2), np.ones(2, bool))
    out = t(np.zeros((1, 2, 2)), np.array([[4, 5]]))
    np.testing.assert_array_equal(out[0], table[[1, 2]])
    with pytest.raises(ValueError, match="finite and >= 0"):
        objective.Target.make(-table, np.ones(2), np.ones(2, bool))
    with pytest.raises(ValueError, match="unknown target"):
        objective.Target.make("greedy", np.ones(2), np.ones(2, bool))
