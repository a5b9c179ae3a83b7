"""Episode histories (``dynamics.HistorySource``): one continuous twin run serves every start
slot; a warm-up is a pure function of (scenario, start, parameters, active flags)."""

from __future__ import annotations

import numpy as np
import pytest

from mobiwm_env.dynamics import TRACE_STEP, HistorySource, load_scenario
from worldmodel.twin.scenario import SLOTS_PER_WEEK

W = 16  # a short warm-up keeps the runs small


@pytest.fixture(scope="module")
def scenario():
    return load_scenario("hex57")


def _source(scenario) -> HistorySource:
    return HistorySource(scenario, W)


def test_histories_are_slices_of_one_run_and_order_does_not_matter(scenario) -> None:
    p, a = scenario.init_params, scenario.init_active
    starts = [SLOTS_PER_WEEK + 40, SLOTS_PER_WEEK + 4, SLOTS_PER_WEEK + 8, 2 * SLOTS_PER_WEEK]
    one = _source(scenario).get_many(starts, p, a)
    # slots s .. s+3 of the run appear in both the history of s + 4 and that of s + 8
    h4, h8 = one[1], one[2]
    np.testing.assert_array_equal(h8.traffic[-8:-4], h4.traffic[-4:])
    np.testing.assert_array_equal(h8.unserved[-8:-4], h4.unserved[-4:])
    assert h4.traffic.shape == (W, scenario.n_cells) and (h4.traffic >= 0).all()
    # asked one at a time, in another order, from a new source: the same warm-ups
    other = _source(scenario)
    for s, want in reversed(list(zip(starts, one, strict=True))):
        got = other.get(s, p, a)
        np.testing.assert_array_equal(got.traffic, want.traffic)
        for name, arr in want.a3_state.items():
            np.testing.assert_array_equal(got.a3_state[name], arr)
    assert other.get(starts[0], p, a) is other.get(starts[0], p, a)  # cached


def test_starts_outside_the_run_get_a_run_of_their_own(scenario) -> None:
    p, a = scenario.init_params, scenario.init_active
    src = _source(scenario)
    early = W + 1  # before the run's first start, and off the step grid
    odd = SLOTS_PER_WEEK + TRACE_STEP + 1
    w_early, w_odd = src.get_many([early, odd], p, a)
    assert w_early.traffic.shape == (W, scenario.n_cells)
    again = _source(scenario).get(early, p, a)
    np.testing.assert_array_equal(again.traffic, w_early.traffic)  # pure function of the start
    assert w_odd.traffic.shape == (W, scenario.n_cells)
    with pytest.raises(ValueError, match="warmup_slots"):
        src.get(W - 1, p, a)


def test_other_parameters_run_under_their_own_settings(scenario) -> None:
    a = scenario.init_active
    loud = scenario.init_params.copy()
    loud[0, 0] = scenario.bounds.power_dbm[1]
    src = _source(scenario)
    s = SLOTS_PER_WEEK + 48
    base, louder = src.get(s, scenario.init_params, a), src.get(s, loud, a)
    assert louder.traffic[:, 0].sum() > base.traffic[:, 0].sum()  # cell 0 wins traffic
    np.testing.assert_array_equal(louder.params, loud)


def test_a_map_too_large_to_keep_every_state_runs_again_for_a_start_behind_it(
    scenario, monkeypatch
) -> None:
    import mobiwm_env.dynamics as dyn

    monkeypatch.setattr(dyn, "TRACE_STATE_BUDGET_MB", 0.0)  # keep only the states asked for
    p, a = scenario.init_params, scenario.init_active
    late, early = SLOTS_PER_WEEK + 64, SLOTS_PER_WEEK + 8
    src = _source(scenario)
    w_late = src.get(late, p, a)
    w_early = src.get(early, p, a)  # behind the run: it runs again from its start
    ref = _source(scenario).get_many([early, late], p, a)  # one pass, in order
    np.testing.assert_array_equal(w_early.traffic, ref[0].traffic)
    np.testing.assert_array_equal(w_late.traffic, ref[1].traffic)
    for name, arr in ref[0].a3_state.items():
        np.testing.assert_array_equal(w_early.a3_state[name], arr)
