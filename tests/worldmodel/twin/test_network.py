"""Physics of the twin: parameters move traffic the way radio engineering says they should."""

from __future__ import annotations

from dataclasses import replace

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


# ---------------------------------------------------------------------------- snapshots
def _busy_twin(n_envs=3, seed=11) -> NetworkTwin:
    """Copies with fading, a 2-slot time-to-trigger and different plans: every field of the
    association state (pending A3 targets, TTT counters) is non-trivial."""
    sc = make_toy_scenario(fading_db=1.5, time_to_trigger_slots=2)
    twin = _twin(sc, n_envs=n_envs, seed=seed)
    params = np.stack([sc.init_params] * n_envs)
    params[-1, CELL, POWER] = 46.0
    params[-1, CELL + 1, ELEC_TILT] = 12.0
    active = np.ones((n_envs, sc.n_cells), dtype=bool)
    active[0, 3] = False
    twin.set_params(params, active)
    twin.step(3)
    return twin


def _plan(twin: NetworkTwin, k: int) -> np.ndarray:
    """A ``[E, k, N, 4]`` plan that changes parameters mid-way (sparse link updates)."""
    plan = np.broadcast_to(twin.params[:, None], (twin.n_envs, k, twin.n_cells, 4)).copy()
    plan[:, k // 2 :, CELL, POWER] = 33.0
    plan[0, k // 2 :, 20, AZIMUTH] = 200.0
    return plan


def _assert_states_equal(a, b, rows_a=slice(None), rows_b=slice(None)) -> None:
    for name in ("serving_col", "target_col", "ttt_count", "slot", "params", "active"):
        np.testing.assert_array_equal(
            getattr(a, name)[rows_a], getattr(b, name)[rows_b], err_msg=name
        )


def test_get_state_shapes_and_read_only():
    twin = _busy_twin()
    st = twin.get_state()
    e, p, n = twin.n_envs, twin.n_pixels, twin.n_cells
    assert st.n_envs == e
    for name in ("serving_col", "target_col", "ttt_count"):
        arr = getattr(st, name)
        assert arr.shape == (e, p) and arr.dtype == np.int32
        assert not arr.flags.writeable
    assert st.slot.shape == (e,) and st.slot.dtype == np.int64
    assert st.params.shape == (e, n, 4) and st.params.dtype == np.float64
    assert st.active.shape == (e, n) and st.active.dtype == bool
    assert (st.ttt_count > 0).any() and (st.target_col >= 0).any()  # pending A3 events
    assert (st.slot == 3).all()
    # a copy: stepping the twin does not change the snapshot
    before = st.serving_col.copy()
    twin.step(2)
    np.testing.assert_array_equal(st.serving_col, before)
    one = twin.get_state(1)
    assert one.n_envs == 1
    _assert_states_equal(one, twin.get_state(), rows_b=[1])


def test_set_state_replays_bit_identical_traffic():
    twin = _busy_twin()
    st = twin.get_state()
    plan = _plan(twin, 6)
    first = twin.run(plan)
    end = twin.get_state()
    twin.set_state(st)
    _assert_states_equal(twin.get_state(), st)
    second = twin.run(plan)
    for name in ("traffic", "unserved", "demand", "handovers", "slots"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name), err_msg=name)
    assert first.handovers.sum() > 0
    _assert_states_equal(twin.get_state(), end)
    # the snapshot is complete: a fresh twin (other seed) continues the same way
    fresh = _twin(twin.scenario, n_envs=twin.n_envs, seed=999)
    fresh.set_state(st)
    np.testing.assert_array_equal(fresh.run(plan).traffic, first.traffic)


def test_set_state_subset_leaves_other_copies_untouched():
    twin = _busy_twin()
    st = twin.get_state([2, 0])  # rows in env_ids order
    twin.run(_plan(twin, 4))
    before = twin.get_state()
    rsrp1 = twin.rsrp(1).copy()
    twin.set_state(st, [2, 0])
    after = twin.get_state()
    _assert_states_equal(after, before, rows_a=[1], rows_b=[1])
    np.testing.assert_array_equal(twin.rsrp(1), rsrp1)
    _assert_states_equal(after, st, rows_a=[2, 0])
    assert after.rng_state == before.rng_state  # a subset keeps the shared fading stream
    # rows go to env_ids in order: swap copies 0 and 2
    twin.set_state(st, [0, 2])
    _assert_states_equal(twin.get_state([0, 2]), st)
    _assert_states_equal(twin.get_state(), before, rows_a=[1], rows_b=[1])
    # copies restored together with the shared fading stream replay their traffic
    ref = _busy_twin()
    ref_st = ref.get_state()
    first = ref.step(4).traffic
    ref.run(_plan(ref, 3))
    ref.set_state(ref.get_state([0, 2]), [0, 2], rng=False)  # identity on a subset
    ref.set_state(ref_st, [0, 1, 2])  # all copies, explicit ids: rng not restored by default
    assert ref.get_state().rng_state != ref_st.rng_state
    ref.set_state(ref_st, [0, 1, 2], rng=True)
    np.testing.assert_array_equal(ref.step(4).traffic, first)


def test_set_state_accepts_compact_integer_dtypes():
    twin = _busy_twin()
    st = twin.get_state()
    compact = replace(
        st,
        **{f: getattr(st, f).astype(np.int8) for f in ("serving_col", "target_col", "ttt_count")},
    )
    first = twin.step(3).traffic
    twin.set_state(compact)
    np.testing.assert_array_equal(twin.step(3).traffic, first)


@pytest.mark.parametrize(
    "case,match",
    [
        ("copies", r"holds 1 copies .* env_ids selects 3"),
        ("serving_shape", r"state\.serving_col: expected shape \(3, \d+\)"),
        ("ttt_shape", r"state\.ttt_count: expected shape"),
        ("params_shape", r"state\.params: expected shape \(3, 27, 4\), got \(3, 26, 4\)"),
        ("active_shape", r"state\.active: expected shape \(3, 27\)"),
        ("slot_shape", r"state holds 2 copies"),
        ("column", r"state\.serving_col: candidate columns must lie in \[-1, \d+\)"),
        ("ttt_negative", r"state\.ttt_count: must be >= 0"),
        ("col_dtype", r"state\.target_col: expected integers"),
        ("slot_negative", r"state\.slot: must be >= 0"),
        ("active_dtype", r"state\.active: expected a bool array"),
        ("params_bounds", r"state\.params: power_dbm=60"),
        ("params_nan", r"state\.params: non-finite"),
        ("rng_missing", r"state\.rng_state"),
    ],
)
def test_set_state_bad_state_raises_and_changes_nothing(case, match):
    twin = _busy_twin()
    st = twin.get_state()
    bad, kw = st, {}
    if case == "copies":
        bad = twin.get_state(0)
    elif case == "serving_shape":
        bad = replace(st, serving_col=st.serving_col[:, :-1])
    elif case == "ttt_shape":
        bad = replace(st, ttt_count=st.ttt_count[:, None])
    elif case == "params_shape":
        bad = replace(st, params=st.params[:, :-1])
    elif case == "active_shape":
        bad = replace(st, active=st.active[:, :-1])
    elif case == "slot_shape":
        bad = replace(st, slot=st.slot[:2])
    elif case == "column":
        col = st.serving_col.copy()
        col[1, 5] = twin.n_candidates
        bad = replace(st, serving_col=col)
    elif case == "ttt_negative":
        ttt = st.ttt_count.copy()
        ttt[0, 0] = -1
        bad = replace(st, ttt_count=ttt)
    elif case == "col_dtype":
        bad = replace(st, target_col=st.target_col.astype(np.float32))
    elif case == "slot_negative":
        bad = replace(st, slot=st.slot - 10)
    elif case == "active_dtype":
        bad = replace(st, active=st.active.astype(np.int8))
    elif case == "params_bounds":
        params = st.params.copy()
        params[2, 4, POWER] = 60.0
        bad = replace(st, params=params)
    elif case == "params_nan":
        params = st.params.copy()
        params[0, 1, MECH_TILT] = np.nan
        bad = replace(st, params=params)
    elif case == "rng_missing":
        bad, kw = replace(st, rng_state=None), {"rng": True}
    twin.step(1)  # move away from st, so a partial restore would show
    now = twin.get_state()
    rsrp = twin.rsrp(2).copy()
    with pytest.raises(ValueError, match=match):
        twin.set_state(bad, **kw)
    after = twin.get_state()
    _assert_states_equal(after, now)
    assert after.rng_state == now.rng_state
    np.testing.assert_array_equal(twin.rsrp(2), rsrp)


@pytest.mark.parametrize(
    "env_ids,match",
    [
        ([3], r"env_ids \[3\] out of range \[0, 3\)"),
        ([-1], "out of range"),
        ([0, 0], r"env_ids \[0, 0\] contain duplicates"),
        ([0.5], "env_ids: expected integers"),
        ([[0], [1]], "env_ids: expected an int or a 1-D sequence"),
    ],
)
def test_bad_env_ids_raise(env_ids, match):
    twin = _busy_twin()
    with pytest.raises(ValueError, match=match):
        twin.get_state(env_ids)
    n = len(np.ravel(env_ids))
    st = twin.get_state(list(range(n)) if n <= 3 else None)
    with pytest.raises(ValueError, match=match):
        twin.set_state(st, env_ids)


def test_set_state_rejects_other_objects():
    twin = _busy_twin(n_envs=1)
    with pytest.raises(TypeError, match="TwinState"):
        twin.set_state({"serving_col": np.zeros((1, twin.n_pixels), np.int32)})
