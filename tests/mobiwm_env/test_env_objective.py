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


def test_shortfall_term_penalises_shedding_traffic():
    """Shedding 10 MB from the overloaded cell 'balances' Eq. 21, but not with λ_U = 2."""
    active = np.array([True, True])
    weight = np.array([1.0, 1.0])
    demand = np.array([[40.0]])  # [E=1, P=1] MB offered
    served = np.array([[[30.0, 10.0]]])  # everything served, imbalanced
    shed = np.array([[[20.0, 10.0]]])  # 10 MB of cell 0's users left unserved
    scores = {}
    for lam in (0.0, 2.0):
        for name, traffic in (("served", served), ("shed", shed)):
            short = objective.shortfall(traffic, demand)
            target = objective.balanced_target(traffic, weight)
            r, _ = objective.reward(traffic, target, active, np.zeros(1), 0.0, short, lam)
            scores[name, lam] = r[0]
    np.testing.assert_allclose(objective.shortfall(shed, demand), [[10.0]])
    assert scores["shed", 0.0] > scores["served", 0.0]  # Eq. 21's loophole
    assert scores["shed", 2.0] < scores["served", 2.0]  # closed by the shortfall term
    # by hand: L1 = 10, mean(s*) = 15, shortfall 10 → −10/15 − 2·10/15
    assert scores["shed", 2.0] == pytest.approx(-10 / 15 - 2 * 10 / 15)
    with pytest.raises(ValueError, match="needs the shortfall"):
        objective.reward(served, served, active, np.zeros(1), 0.0, None, 1.0)


def test_shortfall_pays_no_bonus_for_traffic_above_demand():
    """A world model predicting more traffic than is offered gets shortfall 0, not a reward."""
    demand = np.array([[40.0, 40.0]])
    over = np.array([[[30.0, 25.0], [20.0, 20.0]]])  # 55 MB predicted > 40 offered; exactly 40
    np.testing.assert_array_equal(objective.shortfall(over, demand), [[0.0, 0.0]])
    active = np.array([True, True])
    target = objective.balanced_target(over, np.ones(2))
    r0, _ = objective.reward(over, target, active, np.zeros(1), 0.0, None, 0.0)
    r2, _ = objective.reward(
        over, target, active, np.zeros(1), 0.0, objective.shortfall(over, demand), 2.0
    )
    np.testing.assert_allclose(r2, r0)  # the term is 0: no bonus


def test_cell_rewards_split_the_reward_over_cells():
    rng = np.random.default_rng(0)
    e, p, n = 3, 4, 5
    traffic = rng.uniform(0, 100, (e, p, n))
    active = np.array([True, True, False, True, True])
    weight = np.where(active, rng.uniform(1, 2, n), 0.0)
    target = objective.balanced_target(traffic, weight)
    old = rng.uniform(0, 10, (e, n, 4))
    new = old + rng.uniform(-1, 1, (e, n, 4))
    step = np.ones(4)
    cell_delta = objective.cell_action_change(old, new, step, active)
    delta = objective.action_change(old, new, step, active)
    np.testing.assert_allclose(cell_delta[:, active].mean(1), delta)
    carried = np.where(active, traffic, 0).sum(-1)
    demand = carried + rng.uniform(-50, 50, (e, p))  # some slots short, some over-served
    short = objective.shortfall(np.where(active, traffic, 0), demand)
    assert (short > 0).any() and (short == 0).any()
    for lam_u in (0.0, 2.0):
        total, _ = objective.reward(traffic, target, active, delta, 3.0, short, lam_u)
        cell = objective.cell_rewards(
            traffic, target, active, cell_delta, 3.0, demand, weight, lam_u
        )
        assert cell.shape == (e, n) and np.all(cell[:, ~active] == 0)
        np.testing.assert_allclose(cell.sum(1), total, rtol=1e-12)
    # a cell's own part: its L1 term, its share of the change penalty, and (short slots only)
    # the demand it answers for minus what it carries
    norm = objective.target_mean(target, active)
    share = weight[0] / weight.sum()
    owed = ((demand * share - traffic[:, :, 0]) * (short > 0)).sum(1)
    own = -np.abs(traffic - target)[:, :, 0].sum(1) / norm - 3.0 * cell_delta[:, 0] / 4
    np.testing.assert_allclose(cell[:, 0], own - 2.0 * owed / norm, rtol=1e-12)
    with pytest.raises(ValueError, match="demand"):
        objective.cell_rewards(traffic, target, active, cell_delta, 1.0, None, None, 1.0)
