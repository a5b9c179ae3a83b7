"""Physics of the twin: parameters move traffic the way radio engineering says they should."""

from __future__ import annotations

import numpy as np
import pytest

from tests.worldmodel.twin.conftest import ConstantDemand, make_toy_scenario
from worldmodel.twin.network import NetworkTwin
from worldmodel.twin.scenario import AZIMUTH, ELEC_TILT, MECH_TILT, POWER

CENTRE_SITE = 4  # the middle site of the 3×3 toy grid; its cells are 12, 13, 14
CELL = 12  # centre site, azimuth 0° (north)


def _twin(scenario, demand=None, n_envs=1, seed=0) -> NetworkTwin:
    demand = demand or ConstantDemand(scenario.grid_px**2)
    return NetworkTwin(scenario, n_envs, demand=demand, seed=seed)


def _traffic_with(scenario, cell, param, value, n_slots=2):
    twin = _twin(scenario)
    base = twin.step(n_slots).traffic[0, -1]
    params = scenario.init_params.copy()
    params[cell, param] = value
    twin.set_params(params)
    after = twin.step(n_slots).traffic[0, -1]
    return base, after


def test_power_up_raises_own_traffic_and_lowers_neighbours(toy):
    base, after = _traffic_with(toy, CELL, POWER, 46.0)
    assert after[CELL] > 1.1 * base[CELL]
    others = np.arange(toy.n_cells) != CELL
    assert after[others].sum() < base[others].sum()
    assert (after[others] <= base[others] + 1e-6).all()


def test_power_down_lowers_own_traffic(toy):
    base, after = _traffic_with(toy, CELL, POWER, 30.0)
    assert after[CELL] < 0.8 * base[CELL]


@pytest.mark.parametrize("param,value", [(ELEC_TILT, 12.0), (MECH_TILT, 12.0)])
def test_down_tilt_shrinks_footprint(toy, param, value):
    twin = _twin(toy)
    before_px = (twin.serving_map() == CELL).sum()
    base = twin.step(1).traffic[0, 0, CELL]
    params = toy.init_params.copy()
    params[CELL, param] = value
    twin.set_params(params)
    after = twin.step(2).traffic[0, -1, CELL]
    after_px = (twin.serving_map() == CELL).sum()
    assert after_px < 0.8 * before_px
    assert after < 0.8 * base


def test_mechanical_tilt_effect_falls_off_off_boresight():
    from worldmodel.twin.antenna import antenna_gain_dbi

    zen = 90.0 + np.degrees(np.arctan2(23.5, 300.0))
    on = antenna_gain_dbi(0.0, zen, 0.0, 10.0, 2.0) - antenna_gain_dbi(0.0, zen, 0.0, 0.0, 2.0)
    side = antenna_gain_dbi(90.0, zen, 0.0, 10.0, 2.0) - antenna_gain_dbi(90.0, zen, 0.0, 0.0, 2.0)
    assert abs(on) > 3 * abs(side)
    # electrical tilt acts the same way in every direction
    e_on = antenna_gain_dbi(0.0, zen, 0.0, 0.0, 12.0) - antenna_gain_dbi(0.0, zen, 0.0, 0.0, 2.0)
    e_side = antenna_gain_dbi(90.0, zen, 0.0, 0.0, 12.0) - antenna_gain_dbi(
        90.0, zen, 0.0, 0.0, 2.0
    )
    assert e_on < -3 and e_side < -1


def _footprint_bearing(twin, scenario, cell) -> float:
    served = twin.serving_map().ravel() == cell
    d = scenario.pixel_centres_m()[served] - scenario.cell_xy_m[cell]
    return float(np.degrees(np.arctan2(d[:, 0].mean(), d[:, 1].mean())) % 360.0)


def test_azimuth_rotation_moves_traffic_toward_new_bearing(toy):
    twin = _twin(toy)
    b0 = _footprint_bearing(twin, toy, CELL)
    params = toy.init_params.copy()
    params[CELL, AZIMUTH] = 60.0
    twin.set_params(params)
    twin.step(2)
    b1 = _footprint_bearing(twin, toy, CELL)
    assert abs((b0 + 180) % 360 - 180) < 20  # starts pointing north
    assert 25 < b1 < 90  # footprint turned clockwise toward 60°
    # and the east-facing neighbour of the same site (120°) lost traffic
    base, after = _traffic_with(toy, CELL, AZIMUTH, 60.0)
    assert after[CELL + 1] < base[CELL + 1]


def test_switch_off_moves_traffic_to_neighbours_or_unserved(toy):
    twin = _twin(toy)
    s0 = twin.step(2)
    active = toy.init_active.copy()
    active[CELL] = False
    twin.set_params(active=active)
    s1 = twin.step(2)
    assert s1.traffic[0, -1, CELL] == 0.0
    gained = s1.traffic[0, -1] - s0.traffic[0, -1]
    lost = s0.traffic[0, -1, CELL]
    moved = gained[np.arange(toy.n_cells) != CELL].sum() + (s1.unserved[0, -1] - s0.unserved[0, -1])
    assert moved == pytest.approx(lost, rel=1e-4)
    assert gained[13] > 0 or gained[14] > 0  # the same site's other sectors pick some up


def test_served_plus_unserved_equals_demand_every_slot():
    sc = make_toy_scenario(fading_db=1.5, q_rxlevmin_dbm=-95.0)  # strict threshold: some unserved
    twin = _twin(sc, n_envs=2)
    params = np.stack([sc.init_params, sc.init_params])
    params[1, :, POWER] = 31.0
    twin.set_params(params)
    out = twin.step(6)
    total = out.traffic.sum(-1) + out.unserved
    np.testing.assert_allclose(total, out.demand, rtol=1e-5)
    assert out.unserved[1].sum() > out.unserved[0].sum() > 0


def test_hysteresis_prevents_ping_pong():
    noisy = make_toy_scenario(fading_db=2.0, a3_hysteresis_db=0.0, a3_offset_db=0.0)
    sticky = make_toy_scenario(fading_db=2.0, a3_hysteresis_db=3.0, a3_offset_db=1.0)
    ho_noisy = _twin(noisy).step(8).handovers[0, 1:].mean()
    ho_sticky = _twin(sticky).step(8).handovers[0, 1:].mean()
    assert ho_noisy > 50
    assert ho_sticky < 0.12 * ho_noisy


def test_time_to_trigger_delays_handover():
    sc = make_toy_scenario(time_to_trigger_slots=3)
    twin = _twin(sc)
    twin.step(1)
    before = twin.serving_map().copy()
    params = sc.init_params.copy()
    params[CELL, POWER] = 46.0
    twin.set_params(params)
    out = twin.step(4)
    assert out.handovers[0, 0] == 0 and out.handovers[0, 1] == 0
    assert out.handovers[0, 2] > 0
    assert (twin.serving_map() == CELL).sum() > (before == CELL).sum()


def test_same_seed_identical_different_seed_differs():
    a = _twin(make_toy_scenario(fading_db=1.5, seed=3), seed=7).step(4).traffic
    b = _twin(make_toy_scenario(fading_db=1.5, seed=3), seed=7).step(4).traffic
    c = _twin(make_toy_scenario(fading_db=1.5, seed=4), seed=7).step(4).traffic
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_incremental_update_matches_fresh_build(toy):
    twin = _twin(toy)
    params = toy.init_params.copy()
    params[[3, 12, 20], POWER] = [35.0, 45.0, 31.0]
    params[12, AZIMUTH] = 77.0
    params[20, ELEC_TILT] = 10.0
    changed = twin.set_params(params)
    assert changed[0].sum() == 3
    fresh = _twin(toy)
    fresh.set_params(params)
    np.testing.assert_allclose(twin.rsrp(), fresh.rsrp(), atol=1e-4)
    twin.reset(params=params)
    fresh.reset(params=params)
    np.testing.assert_array_equal(twin.serving_map(), fresh.serving_map())


@pytest.mark.parametrize(
    "bad,match",
    [
        ("nan", "non-finite"),
        ("shape", "expected shape"),
        ("power", "power_dbm"),
        ("tilt", "elec_tilt_deg"),
    ],
)
def test_bad_params_raise_clear_error(toy, bad, match):
    twin = _twin(toy)
    params = toy.init_params.copy()
    if bad == "nan":
        params[5, MECH_TILT] = np.nan
    elif bad == "shape":
        params = params[:, :3]
    elif bad == "power":
        params[5, POWER] = 60.0
    else:
        params[5, ELEC_TILT] = -1.0
    with pytest.raises(ValueError, match=match):
        twin.set_params(params)


def test_bad_active_and_env_ids_raise(toy):
    twin = _twin(toy)
    with pytest.raises(ValueError, match="bool"):
        twin.set_params(active=np.ones(toy.n_cells))
    with pytest.raises(ValueError, match="out of range"):
        twin.reset(env_ids=[3])
    with pytest.raises(ValueError, match="n_slots"):
        twin.step(0)


def test_batched_copies_are_independent(toy):
    twin = _twin(toy, n_envs=3)
    params = np.stack([toy.init_params] * 3)
    params[1, CELL, POWER] = 46.0
    twin.set_params(params)
    out = twin.step(2).traffic
    np.testing.assert_array_equal(out[0], out[2])
    assert out[1, -1, CELL] > out[0, -1, CELL]
    single = _twin(toy)
    single.set_params(params[1])
    np.testing.assert_allclose(single.step(2).traffic[0], out[1], rtol=1e-6)


def test_run_plays_a_plan_like_manual_steps(toy):
    plan = np.broadcast_to(toy.init_params, (6, toy.n_cells, 4)).copy()
    plan[3:, CELL, POWER] = 46.0
    a = _twin(toy).run(plan)
    manual = _twin(toy)
    first = manual.step(3)
    manual.set_params(plan[3])
    second = manual.step(3)
    np.testing.assert_allclose(a.traffic[0, :3], first.traffic[0])
    np.testing.assert_allclose(a.traffic[0, 3:], second.traffic[0])
    assert a.slots[0].tolist() == list(range(6))


def test_insert_cell_takes_traffic(toy):
    twin = _twin(toy)
    before = twin.step(1)
    new = twin.insert_cells([[250.0, 250.0]], [30.0], [[46.0, 45.0, 0.0, 2.0]])
    after = twin.step(2)
    assert new.tolist() == [toy.n_cells]
    assert after.traffic.shape[-1] == toy.n_cells + 1
    assert after.traffic[0, -1, new[0]] > 0
    total_after = after.traffic[0, -1].sum() + after.unserved[0, -1]
    np.testing.assert_allclose(total_after, before.demand[0, 0], rtol=1e-5)
    assert after.unserved[0, -1] <= before.unserved[0, 0]


def test_common_fading_copies_differ_only_by_their_plans():
    sc = make_toy_scenario(fading_db=2.0)
    twin = NetworkTwin(sc, 2, demand=ConstantDemand(sc.grid_px**2), seed=5, common_fading=True)
    same = twin.step(6).traffic
    np.testing.assert_array_equal(same[0], same[1])
    single = NetworkTwin(sc, 1, demand=ConstantDemand(sc.grid_px**2), seed=5)
    np.testing.assert_array_equal(single.step(6).traffic[0], same[0])
    independent = NetworkTwin(sc, 2, demand=ConstantDemand(sc.grid_px**2), seed=5)
    out = independent.step(6).traffic
    assert not np.array_equal(out[0], out[1])
