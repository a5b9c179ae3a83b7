"""Tests of the traffic demand density rho_t(r) (``worldmodel.twin.demand``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from worldmodel.twin.demand import (
    DEMAND_PRESETS,
    DemandConfig,
    DemandModel,
    demand_config,
    demand_weights,
    event_envelope,
)
from worldmodel.twin.profiles import load_default_profiles
from worldmodel.twin.scenario import (
    N_LANDUSE,
    SLOTS_PER_DAY,
    SLOTS_PER_WEEK,
    HotspotEvent,
    LandUse,
    Scenario,
)

G = 40
EXTENT = 2000.0
POP = 20.0  # residents per pixel
QUIET = DemandConfig(noise_std=0.0, weekly_drift_std=0.0)
TUESDAY = SLOTS_PER_DAY  # first slot of Tuesday (slot 0 = Monday 00:00)


def make_scenario(seed: int = 0, events: tuple[HotspotEvent, ...] = (), **kw) -> Scenario:
    """G x G pixels over 2 km; horizontal stripes of every land-use zone; uniform residents."""
    rows = np.arange(G) * N_LANDUSE // G
    landuse = np.repeat(rows[:, None], G, axis=1).astype(np.int8)
    sites = np.array([[500.0, 500.0], [1500.0, 700.0], [1000.0, 1500.0]])
    return Scenario(
        name="synthetic",
        kind="urban",
        seed=seed,
        extent_m=EXTENT,
        site_xy_m=sites,
        site_height_m=np.full(3, 30.0),
        cell_site=np.repeat(np.arange(3), 3),
        init_params=np.tile([40.0, 0.0, 4.0, 4.0], (9, 1)),
        init_active=np.ones(9, dtype=bool),
        cell_capacity=np.full(9, 500.0),
        building_height_m=np.zeros((G, G), np.float32),
        landuse=landuse,
        population=np.full((G, G), POP, np.float32),
        poi=np.zeros((8, 8, 8), np.float32),
        events=events,
        **kw,
    )


def zone_mask(zone: LandUse) -> np.ndarray:
    return (make_scenario().landuse == int(zone)).ravel()


@pytest.fixture(scope="module")
def model() -> DemandModel:
    return DemandModel(make_scenario(seed=3))


def test_scenario_fixture_is_valid() -> None:
    make_scenario().validate()


# ------------------------------------------------------------------------ basics
def test_nonnegative_finite_float32(model: DemandModel) -> None:
    slots = np.array([0, 1, 95, 671, 672, 5000, 10_079, 10_080, 123_456])
    d = model.density_many(slots)
    assert d.shape == (len(slots), G * G) and d.dtype == np.float32
    assert np.isfinite(d).all() and (d >= 0).all()
    one = model.density(10_080)
    assert one.shape == (G * G,) and one.dtype == np.float32
    assert model.total(10_080) == pytest.approx(float(one.sum(dtype=np.float64)))


def test_seed_determinism() -> None:
    slots = np.arange(0, 3 * SLOTS_PER_WEEK, 37)
    a = DemandModel(make_scenario(seed=5)).density_many(slots)
    b = DemandModel(make_scenario(seed=5)).density_many(slots)
    np.testing.assert_array_equal(a, b)
    c = DemandModel(make_scenario(seed=6)).density_many(slots)
    assert np.abs(a - c).max() > 0.01 * a.max()
    d = DemandModel(make_scenario(seed=5), config=DemandConfig(noise_seed=1)).density_many(slots)
    assert np.abs(a - d).max() > 0.01 * a.max()


def test_random_access_equals_sequential() -> None:
    scen = make_scenario(seed=11)
    seq_model = DemandModel(scen)
    slots = np.arange(0, 3 * SLOTS_PER_WEEK + 50)
    seq = np.stack([seq_model.density(int(s)) for s in slots])
    jumpy = DemandModel(scen, config=dataclasses.replace(seq_model.config, cache_weeks=1))
    order = np.random.default_rng(0).permutation(slots)
    for s in order[:400]:  # jump around weeks with a one-week cache
        np.testing.assert_array_equal(jumpy.density(int(s)), seq[s])
    np.testing.assert_array_equal(DemandModel(scen).density_many(order[::-1]), seq[order[::-1]])
    # far horizons work and do not depend on what was asked before
    far = DemandModel(scen).density(20_000)
    seq_model.density(19_999)
    np.testing.assert_array_equal(seq_model.density(20_000), far)


def test_invalid_slots_raise(model: DemandModel) -> None:
    for bad in (-1, 2.0, True, "3", None):
        with pytest.raises(ValueError, match="slot"):
            model.density(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        model.density_many(np.array([3, -2]))
    with pytest.raises(ValueError, match="integers"):
        model.density_many(np.array([0.5]))
    assert model.density_many(np.array([], dtype=np.int64)).shape == (0, G * G)
    assert model.density(np.int64(7)).shape == (G * G,)


def test_config_and_scenario_validation() -> None:
    with pytest.raises(ValueError, match="noise_ar"):
        DemandConfig(noise_ar=1.0)
    with pytest.raises(ValueError, match="noise_std"):
        DemandConfig(noise_std=-0.1)
    with pytest.raises(ValueError, match="slot_minutes"):
        DemandModel(make_scenario(slot_minutes=30))
    with pytest.raises(ValueError, match="event 0"):
        DemandModel(make_scenario(events=(HotspotEvent(100, 100, -5.0, 0, 4, 10.0),)))


# ----------------------------------------------------------------------- physics
def test_weekly_mean_is_residents_times_per_person_demand() -> None:
    """Profiles have mean 1 and weights sum to the residents: weekly mean = d * residents."""
    scen = make_scenario()
    m = DemandModel(scen, config=QUIET)
    totals = m.density_many(np.arange(SLOTS_PER_WEEK)).sum(axis=1, dtype=np.float64)
    expected = scen.demand_mb_per_person_slot * POP * G * G
    assert totals.mean() == pytest.approx(expected, rel=1e-4)
    np.testing.assert_allclose(m.weights.sum(), POP * G * G, rtol=1e-9)


def test_night_below_evening() -> None:
    """Weekday 03-04 h demand is clearly below weekday 20-21 h demand (with default noise)."""
    for seed in (0, 1, 2):
        m = DemandModel(make_scenario(seed=seed))
        for day in range(5):
            night = sum(m.total(day * SLOTS_PER_DAY + 12 + q) for q in range(4))
            evening = sum(m.total(day * SLOTS_PER_DAY + 80 + q) for q in range(4))
            assert night < 0.6 * evening


def test_people_move_between_home_and_work() -> None:
    """Office pixels carry visitor weight and peak on weekday mornings, not on weekends."""
    m = DemandModel(make_scenario(), config=QUIET)
    office, resid = zone_mask(LandUse.OFFICE), zone_mask(LandUse.RESIDENTIAL)
    assert m.weights[office].mean() > 2 * m.weights[resid].mean()
    tue_10h = m.density(TUESDAY + 40)
    sun_10h = m.density(6 * SLOTS_PER_DAY + 40)
    tue_3h = m.density(TUESDAY + 12)
    tue_21h = m.density(TUESDAY + 84)
    assert tue_10h[office].sum() > 1.5 * sun_10h[office].sum()
    assert tue_10h[office].sum() > 4 * tue_3h[office].sum()
    assert tue_21h[resid].sum() > tue_3h[resid].sum() * 3
    # at 10 am on a weekday an office pixel wants more than a residential one
    assert tue_10h[office].mean() > tue_10h[resid].mean()


def test_demand_weights_rules() -> None:
    lu = np.array([[LandUse.OPEN, LandUse.RESIDENTIAL], [LandUse.OFFICE, LandUse.OFFICE]])
    pop = np.array([[0.0, 100.0], [0.0, 0.0]])
    cfg = DemandConfig(office_share=0.5, open_weight=0.2)
    w = demand_weights(pop, lu, cfg)
    raw = np.array([[0.2 * 100.0, 100.0], [25.0, 25.0]])  # open: 0.2 * mean populated pixel
    np.testing.assert_allclose(w, raw * 100.0 / raw.sum())
    np.testing.assert_array_equal(demand_weights(np.zeros((2, 2)), lu, cfg), 0.0)


def test_noise_statistics_and_week_continuity() -> None:
    """Log-noise has the configured std and AR(1) coefficient, also across week boundaries."""
    cfg = DemandConfig(noise_std=0.15, noise_ar=0.8, weekly_drift_std=0.0)
    scen = make_scenario(seed=4)
    slots = np.arange(6 * SLOTS_PER_WEEK)
    noisy = DemandModel(scen, config=cfg).density_many(slots)
    clean = DemandModel(scen, config=QUIET).density_many(slots)
    x = np.log(noisy[:, ::8] / clean[:, ::8]).astype(np.float64)  # one pixel per block column
    x = x[:, : G // 8]
    assert x.std() == pytest.approx(0.15, rel=0.1)
    assert np.exp(x).mean() == pytest.approx(1.0, abs=0.02)
    lag1 = np.mean([np.corrcoef(x[1:, j], x[:-1, j])[0, 1] for j in range(x.shape[1])])
    assert lag1 == pytest.approx(0.8, abs=0.05)
    resid = x[1:] - 0.8 * x[:-1]
    b = 0.15 * np.sqrt(1 - 0.8**2)
    boundary = resid[SLOTS_PER_WEEK - 1 :: SLOTS_PER_WEEK]  # pairs (672k - 1, 672k)
    assert boundary.std() < 1.5 * b  # a fresh draw per week would give ~2.1 b
    # noise is spatially constant within a block and differs between blocks
    row = noisy[100].reshape(G, G) / clean[100].reshape(G, G)
    np.testing.assert_allclose(row[:8, :8], row[0, 0], rtol=1e-5)
    assert abs(row[0, 0] - row[0, 8]) > 1e-4


def test_weekly_periodicity_and_drift() -> None:
    scen = make_scenario(seed=2)
    quiet = DemandModel(scen, config=QUIET)
    np.testing.assert_allclose(quiet.density(500), quiet.density(500 + 3 * SLOTS_PER_WEEK))
    drift = DemandModel(scen, config=DemandConfig(noise_std=0.0, weekly_drift_std=0.05))
    ratio = drift.density(500 + 3 * SLOTS_PER_WEEK) / quiet.density(500)
    office = zone_mask(LandUse.OFFICE)
    np.testing.assert_allclose(ratio[office], ratio[office][0], rtol=1e-5)  # one level per zone
    assert 0.8 < ratio[office][0] < 1.25 and abs(ratio[office][0] - 1) > 1e-4
    # drift is continuous: consecutive slots differ by far less than the week-to-week change
    a, b = drift.density(SLOTS_PER_WEEK - 1), drift.density(SLOTS_PER_WEEK)
    qa, qb = quiet.density(SLOTS_PER_WEEK - 1), quiet.density(SLOTS_PER_WEEK)
    np.testing.assert_allclose(a / qa, b / qb, rtol=2e-3)


def test_event_adds_demand_near_centre_only_during_its_slots() -> None:
    ev = HotspotEvent(
        x_m=1000.0,
        y_m=1000.0,
        radius_m=100.0,
        start_slot=200,
        duration_slots=8,
        extra_per_slot=400.0,
        period_slots=SLOTS_PER_WEEK,
    )
    base = DemandModel(make_scenario(seed=1))
    with_ev = DemandModel(make_scenario(seed=1, events=(ev,)))
    slots = np.arange(150, 260)
    diff = (with_ev.density_many(slots) - base.density_many(slots)).astype(np.float64)
    active = (slots >= 200) & (slots < 208)
    np.testing.assert_allclose(diff[~active], 0.0, atol=1e-3)
    assert (diff[active].sum(axis=1) > 0).all()
    # full strength in the middle, ramps at the ends
    totals = diff.sum(axis=1)
    assert totals[slots == 203][0] == pytest.approx(400.0, rel=1e-3)
    assert totals[slots == 200][0] == pytest.approx(0.25 * 400.0, rel=1e-3)
    assert totals[slots == 207][0] == pytest.approx(0.25 * 400.0, rel=1e-3)
    # near the centre only
    dist = np.linalg.norm(make_scenario().pixel_centres_m() - [1000.0, 1000.0], axis=1)
    peak = diff[slots == 204][0]
    assert peak[dist < 100].sum() > 0.35 * 400.0
    assert peak[dist > 400].sum() < 1e-3 * 400.0
    # repeats a week later
    later = with_ev.density(204 + SLOTS_PER_WEEK) - base.density(204 + SLOTS_PER_WEEK)
    assert later.sum() == pytest.approx(400.0, rel=1e-3)


def test_event_envelope_shapes() -> None:
    once = HotspotEvent(0, 0, 10, start_slot=10, duration_slots=4, extra_per_slot=1, period_slots=0)
    env = event_envelope(once, np.arange(8, 16 + 3 * SLOTS_PER_WEEK))
    np.testing.assert_allclose(env[:8], [0, 0, 0.5, 1, 1, 0.5, 0, 0])
    assert env[8:].sum() == 0
    single = HotspotEvent(0, 0, 10, start_slot=0, duration_slots=1, extra_per_slot=1)
    np.testing.assert_allclose(event_envelope(single, np.array([0, 1, 672, 673])), [1, 0, 1, 0])
    overlap = HotspotEvent(
        0, 0, 10, start_slot=0, duration_slots=8, extra_per_slot=1, period_slots=4
    )
    assert event_envelope(overlap, np.array([5]))[0] == pytest.approx(1.0 + 0.75 / 1.0 * 1.0)


def test_offmap_event_adds_nothing() -> None:
    ev = HotspotEvent(
        x_m=1e6, y_m=1e6, radius_m=50.0, start_slot=0, duration_slots=10, extra_per_slot=100.0
    )
    a = DemandModel(make_scenario(events=(ev,)), config=QUIET).density(5)
    b = DemandModel(make_scenario(), config=QUIET).density(5)
    np.testing.assert_array_equal(a, b)


def test_custom_profiles_are_used() -> None:
    table = load_default_profiles()
    flat = dataclasses.replace(table, shapes=np.ones_like(table.shapes))
    m = DemandModel(make_scenario(), profiles=flat, config=QUIET)
    totals = [m.total(s) for s in (0, 300, 600)]
    np.testing.assert_allclose(totals, totals[0], rtol=1e-5)


# ------------------------------------------------------------------ presets (realistic twin)
REAL = DEMAND_PRESETS["realistic"]


def test_presets_are_named_and_unknown_names_are_refused() -> None:
    assert set(DEMAND_PRESETS) == {"realistic", "smooth"}
    assert demand_config("smooth") == DemandConfig()  # 0.2.0's demand: every new knob off
    assert make_scenario().demand == "realistic"
    assert DemandModel(make_scenario()).config == REAL
    assert DemandModel(make_scenario(demand="smooth")).config == DemandConfig()
    with pytest.raises(ValueError, match="unknown demand preset 'bumpy'"):
        demand_config("bumpy")
    with pytest.raises(ValueError, match="demand='bumpy' is not a demand preset"):
        make_scenario(demand="bumpy").validate()
    for bad in (
        {"hetero_std": -1.0},
        {"hetero_tail": -0.1},
        {"background_share": 1.5},
        {"sessions_per_cell": -1.0},
        {"session_cv": 0.0},
        {"day_std": -0.1},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            DemandConfig(**bad)


def test_realistic_demand_keeps_the_maps_demand_on_average() -> None:
    """Every mechanism has mean 1: a week of the realistic twin carries the smooth twin's total
    demand up to the randomness of a few heavy blocks and sessions."""
    slots = np.arange(SLOTS_PER_WEEK)
    smooth = DemandModel(make_scenario(seed=4, demand="smooth")).density_many(slots).sum()
    totals = [
        DemandModel(make_scenario(seed=s)).density_many(slots).sum(dtype=np.float64) / smooth
        for s in range(4, 12)
    ]
    assert np.mean(totals) == pytest.approx(1.0, abs=0.15)
    w = DemandModel(make_scenario(seed=4)).weights
    np.testing.assert_allclose(w.sum(), G * G * POP, rtol=1e-9)  # heterogeneity keeps the total


def test_realistic_demand_is_heterogeneous_bursty_and_deterministic() -> None:
    slots = np.arange(SLOTS_PER_WEEK)
    real = DemandModel(make_scenario(seed=3)).density_many(slots)
    again = DemandModel(make_scenario(seed=3)).density_many(slots)
    np.testing.assert_array_equal(real, again)  # per-seed determinism
    smooth = DemandModel(make_scenario(seed=3, demand="smooth")).density_many(slots)
    # spread of pixel means (uniform residents: the smooth spread is the zones' visitors only;
    # this 40-pixel map holds just four 24-pixel heterogeneity blocks)
    cv = lambda x: x.mean(0).std() / x.mean(0).mean()  # noqa: E731
    assert cv(real) > 1.3 * cv(smooth)
    # slot-to-slot changes of the map's busiest block are far larger than the smooth twin's
    b = np.argmax(real.mean(0))
    rel = lambda x: np.abs(np.diff(x[:, b])).mean() / x[:, b].mean()  # noqa: E731
    assert rel(real) > 4 * rel(smooth)
    # sessions: quiet places have idle slots
    assert (real == 0).mean() > 0.01 and (smooth == 0).mean() == 0.0


def test_sessions_have_mean_one_and_idle_slots_where_demand_is_low() -> None:
    m = DemandModel(make_scenario(), config=DemandConfig(sessions_per_cell=2.0, session_cv=2.0))
    v = m._base.sum(dtype=np.float64) / 9 / 2.0  # MB per session: 9 cells, 2 sessions each
    low = np.full((SLOTS_PER_WEEK, m._n_blocks), 0.3 * v)  # 0.3 sessions per block and slot
    high = np.full((SLOTS_PER_WEEK, m._n_blocks), 1000 * v)
    f_low, f_high = m._sessions(0, low), m._sessions(0, high)
    assert (f_low == 0).mean() > 0.5 and f_low.mean() == pytest.approx(1.0, abs=0.2)
    assert f_high.mean() == pytest.approx(1.0, abs=0.01) and f_high.std() < 0.2
    zero = m._sessions(0, np.zeros((SLOTS_PER_WEEK, m._n_blocks)))
    assert np.all(zero == 1.0)


def test_session_seed_redraws_the_sessions_only() -> None:
    scen = make_scenario(seed=2)
    a = DemandModel(scen)
    b = DemandModel(scen, config=dataclasses.replace(REAL, session_seed=1))
    np.testing.assert_array_equal(a.weights, b.weights)  # same places
    slots = np.arange(SLOTS_PER_DAY)
    da, db = a.density_many(slots), b.density_many(slots)
    assert not np.array_equal(da, db)
    # the same expected demand: the week totals agree far better than other noise seeds'
    other = DemandModel(scen, config=dataclasses.replace(REAL, noise_seed=1))
    week = np.arange(SLOTS_PER_WEEK)
    tot = [m.density_many(week).sum(0) for m in (a, b, other)]
    assert np.abs(tot[1] - tot[0]).sum() < 0.5 * np.abs(tot[2] - tot[0]).sum()
    smooth = make_scenario(seed=2, demand="smooth")
    cfg = dataclasses.replace(demand_config("smooth"), session_seed=3)
    np.testing.assert_array_equal(
        DemandModel(smooth).density_many(slots), DemandModel(smooth, config=cfg).density_many(slots)
    )
