"""Tests of the urban context: rasters, POI grid, OD flows, facility map, events."""

from __future__ import annotations

import numpy as np
import pytest

from worldmodel.twin.builders import make_scenario
from worldmodel.twin.context import (
    aggregate_sum,
    building_raster,
    facility_map,
    landuse_fractions,
    landuse_raster,
    od_flows,
    od_model,
    poi_grid,
    population_raster,
    resample_mean,
    sample_events,
    slot_time,
)
from worldmodel.twin.scenario import POI_CATEGORIES, SLOTS_PER_WEEK, LandUse

MON_0300, MON_0900, MON_1300, MON_1800 = 12, 36, 52, 72
SAT_1300 = 5 * 96 + 52


@pytest.fixture(scope="module")
def urban():
    return make_scenario("urban", 1)


@pytest.fixture(scope="module")
def hexmap():
    return make_scenario("hex", 0)


def _dist_from_centre(g: int, extent: float) -> np.ndarray:
    c = (np.arange(g) + 0.5) * extent / g
    return np.hypot(c[None, :] - extent / 2, c[:, None] - extent / 2)


# ------------------------------------------------------------------------------ helpers
def test_resample_and_aggregate_preserve_mean_and_mass():
    rng = np.random.default_rng(0)
    r = rng.random((100, 100))
    for n in (7, 32, 100, 128, 333):
        assert resample_mean(r, n).mean() == pytest.approx(r.mean(), rel=1e-9)
        assert aggregate_sum(r, n).sum() == pytest.approx(r.sum(), rel=1e-9)
        np.testing.assert_allclose(resample_mean(np.ones((100, 100)), n), 1.0)
    np.testing.assert_allclose(
        resample_mean(r, 50), r.reshape(50, 2, 50, 2).mean(axis=(1, 3)), atol=1e-12
    )


def test_slot_time_monday_midnight_origin():
    q, d = slot_time(np.array([0, 36, 95, 96, 671, 672, -1]))
    np.testing.assert_array_equal(q, [0, 36, 95, 0, 95, 0, 95])
    np.testing.assert_array_equal(d, [0, 0, 0, 1, 6, 0, 6])


# ------------------------------------------------------------------------------ rasters
def test_landuse_structure_by_kind():
    g, ext = 160, 4000.0
    lu = landuse_raster("urban", g, ext, np.random.default_rng(0))
    assert lu.dtype == np.int8 and lu.shape == (g, g)
    share = np.bincount(lu.ravel(), minlength=6) / lu.size
    assert all(share[z] > 0 for z in LandUse)  # every zone present in a city
    assert share[LandUse.OPEN] == pytest.approx(0.12, abs=0.02)
    d = _dist_from_centre(g, ext)
    # office core in the middle, industry on the edge
    assert d[lu == LandUse.OFFICE].mean() < 0.6 * d[lu == LandUse.RESIDENTIAL].mean()
    assert d[lu == LandUse.INDUSTRIAL].mean() > d.mean()

    sub = landuse_raster("suburb", g, 8000.0, np.random.default_rng(0))
    s = np.bincount(sub.ravel(), minlength=6) / sub.size
    assert s[LandUse.RESIDENTIAL] + s[LandUse.OPEN] > 0.8
    assert s[LandUse.OPEN] > share[LandUse.OPEN]
    assert s[LandUse.OFFICE] + s[LandUse.COMMERCIAL] < 0.1


def test_buildings_by_zone():
    rng = np.random.default_rng(2)
    lu = landuse_raster("urban", 200, 5000.0, rng)
    h = building_raster("urban", lu, 5000.0, rng)
    assert h.dtype == np.float32 and h.shape == lu.shape
    assert np.all(h[lu == LandUse.OPEN] == 0)
    assert np.all(h >= 0) and h.max() <= 250

    def mean_h(z):
        v = h[lu == z]
        return v[v > 0].mean()

    assert mean_h(LandUse.OFFICE) > mean_h(LandUse.RESIDENTIAL) > mean_h(LandUse.INDUSTRIAL)
    assert 0.2 < (h[lu == LandUse.RESIDENTIAL] > 0).mean() < 0.7


def test_population_by_zone_and_total():
    rng = np.random.default_rng(3)
    ext = 3000.0
    lu = landuse_raster("urban", 120, ext, rng)
    h = building_raster("urban", lu, ext, rng)
    pop = population_raster("urban", lu, h, ext, rng, density_per_km2=15_000.0)
    assert pop.dtype == np.float32 and np.all(pop >= 0)
    assert pop.sum() / (ext / 1000) ** 2 == pytest.approx(15_000.0, rel=1e-4)
    dens = {z: pop[lu == z].mean() for z in LandUse}
    assert dens[LandUse.RESIDENTIAL] > 2 * dens[LandUse.OFFICE]
    assert dens[LandUse.RESIDENTIAL] > 20 * dens[LandUse.OPEN]
    assert dens[LandUse.RESIDENTIAL] > 20 * dens[LandUse.INDUSTRIAL]


@pytest.mark.parametrize("kind, lo, hi", [("urban", 10_000, 25_000), ("suburb", 1_000, 3_000)])
def test_population_density_range_by_kind(kind, lo, hi):
    for seed in range(3):
        sc = make_scenario(kind, seed)
        dens = sc.population.sum() / (sc.extent_m / 1000.0) ** 2
        assert lo <= dens <= hi, (kind, seed, dens)


def test_poi_follows_landuse(urban):
    poi = urban.poi
    assert poi.shape == (32, 32, len(POI_CATEGORIES)) and poi.dtype == np.float32
    assert np.all(poi >= 0) and np.all(poi == np.round(poi))
    frac = landuse_fractions(urban.landuse, 32).reshape(-1, 6)
    p = poi.reshape(-1, len(POI_CATEGORIES))
    k = POI_CATEGORIES.index
    com, off = frac[:, LandUse.COMMERCIAL] > 0.5, frac[:, LandUse.OFFICE] > 0.5
    res, opn = frac[:, LandUse.RESIDENTIAL] > 0.9, frac[:, LandUse.OPEN] > 0.9
    assert p[com, k("shopping")].mean() > 3 * p[res, k("shopping")].mean()
    assert p[off, k("office")].mean() > 5 * p[res, k("office")].mean()
    assert p[res, k("residential")].mean() > p[opn, k("residential")].mean()


def test_poi_grid_is_poisson_around_its_rate():
    lu = np.full((64, 64), LandUse.COMMERCIAL, dtype=np.int8)
    counts = [poi_grid("urban", lu, 2000.0, 8, np.random.default_rng(s)) for s in range(20)]
    mean_shopping = np.mean([c[..., POI_CATEGORIES.index("shopping")].mean() for c in counts])
    assert mean_shopping == pytest.approx(400.0 * (2000.0 / 8 / 1000) ** 2, rel=0.05)


# ------------------------------------------------------------------------------ OD flows
def test_od_shape_nonnegative_and_conserved(urban):
    slots = np.arange(0, 2 * SLOTS_PER_WEEK, 7)
    f = od_flows(urban, slots)
    assert f.shape == (len(slots), 2, 32, 32) and f.dtype == np.float32
    assert np.all(f >= 0) and np.all(np.isfinite(f))
    tot_in, tot_out = f[:, 0].sum(axis=(1, 2)), f[:, 1].sum(axis=(1, 2))
    np.testing.assert_allclose(tot_in, tot_out, rtol=1e-4)
    assert tot_in.min() > 0  # a trickle of trips at every hour


def test_od_morning_commute_into_office(urban):
    frac = landuse_fractions(urban.landuse, urban.ctx_grid)
    office = frac[..., LandUse.OFFICE] > 0.5
    home = frac[..., LandUse.RESIDENTIAL] > 0.9
    assert office.sum() > 0 and home.sum() > 0
    f = od_flows(urban, [MON_0300, MON_0900, MON_1800, SAT_1300 - 4 * 4])
    in_office = f[:, 0][:, office].sum(axis=1)
    out_office = f[:, 1][:, office].sum(axis=1)
    assert in_office[1] > 20 * in_office[0]  # 9:00 vs 3:00
    assert in_office[1] > out_office[1]  # morning: people arrive at work
    assert out_office[2] > in_office[2]  # evening: people leave work
    assert in_office[1] > 2 * in_office[3]  # little commuting on Saturday
    # homes empty in the morning, fill in the evening
    assert f[1, 1][home].sum() > f[1, 0][home].sum()
    assert f[2, 0][home].sum() > f[2, 1][home].sum()


def test_od_weekend_leisure_and_daily_balance(urban):
    frac = landuse_fractions(urban.landuse, urban.ctx_grid)
    leisure = (frac[..., LandUse.COMMERCIAL] + frac[..., LandUse.OPEN]) > 0.6
    f = od_flows(urban, [MON_1300, SAT_1300])
    assert f[1, 0][leisure].sum() > 1.5 * f[0, 0][leisure].sum()
    # over a whole day everyone who left comes back: net in-flow per grid cell ~ 0
    day = od_flows(urban, np.arange(96))
    net = day[:, 0].sum(axis=0) - day[:, 1].sum(axis=0)
    gross = day[:, 0].sum(axis=0) + day[:, 1].sum(axis=0)
    assert np.abs(net).max() <= 1e-3 * gross.max()


def test_od_random_access_periodic_and_cached(hexmap):
    week = od_flows(hexmap, np.arange(SLOTS_PER_WEEK))
    pick = np.array([5, 300, 671, 36])
    np.testing.assert_allclose(od_flows(hexmap, pick), week[pick], rtol=1e-6)
    np.testing.assert_allclose(od_flows(hexmap, pick + 3 * SLOTS_PER_WEEK), week[pick], rtol=1e-6)
    np.testing.assert_allclose(od_flows(hexmap, [-1]), week[[671]], rtol=1e-6)
    assert od_model(hexmap) is od_model(hexmap)
    other = make_scenario("hex", 1)
    assert od_model(other) is not od_model(hexmap)
    assert not np.allclose(od_flows(other, [36]), week[[36]])


def test_od_scale_is_plausible(urban):
    """Peak-hour cross-grid commuting is a few percent of residents per 15-min slot."""
    f = od_flows(urban, [MON_0900 - 3])  # 8:15, peak
    share = f[0, 0].sum() / urban.population.sum()
    assert 0.005 < share < 0.1


# ------------------------------------------------------------------------------ facility map
def test_facility_map_channels(hexmap):
    fm = facility_map(hexmap)
    assert fm.shape == (2, 128, 128) and fm.dtype == np.float32
    assert fm.min() >= 0.0 and fm.max() <= 1.0
    size = 128
    col = np.floor(hexmap.site_xy_m[:, 0] / hexmap.extent_m * size).astype(int)
    row = np.floor(hexmap.site_xy_m[:, 1] / hexmap.extent_m * size).astype(int)
    np.testing.assert_allclose(fm[1, row, col], 1.0)  # peak 1 at every site pixel
    assert (fm[1] > 0.5).mean() < 0.05  # small blobs
    assert fm[1, 0, 0] < 1e-3  # nothing in the corner (1 ISD from any site)
    # building channel = area mean height / 60 m
    h = np.clip(resample_mean(hexmap.building_height_m, size) / 60.0, 0, 1)
    np.testing.assert_allclose(fm[0], h, atol=1e-6)
    assert fm[0].max() > 0.2


def test_facility_map_row_convention_and_active_sites(hexmap):
    fm = facility_map(hexmap, size=64)
    south = int(np.argmin(hexmap.site_xy_m[:, 1]))
    r = int(hexmap.site_xy_m[south, 1] / hexmap.extent_m * 64)
    assert r < 32 and fm[1, r].max() == pytest.approx(1.0)
    active = np.zeros(hexmap.n_cells, dtype=bool)
    active[hexmap.cell_site == 0] = True  # only the centre site
    fm = facility_map(hexmap, size=64, cell_active=active)
    assert fm[1, 32, 32] == pytest.approx(1.0)
    assert (fm[1] > 0.5).sum() <= 9


def test_facility_map_of_large_grid_is_area_mean():
    sc = make_scenario("urban", 0, grid_px=256)
    fm = facility_map(sc, size=128)
    block = sc.building_height_m.reshape(128, 2, 128, 2).mean(axis=(1, 3)) / 60.0
    np.testing.assert_allclose(fm[0], np.clip(block, 0, 1), atol=1e-6)


# ------------------------------------------------------------------------------ events
def test_events_in_commercial_or_open_at_busy_times():
    for seed in range(10):
        rng = np.random.default_rng(seed)
        g, ext = 100, 3000.0
        lu = landuse_raster("urban", g, ext, rng)
        ev = sample_events("urban", lu, ext, rng)
        assert 1 <= len(ev) <= 3
        for e in ev:
            i, j = int(e.y_m / ext * g), int(e.x_m / ext * g)
            assert lu[i, j] in (LandUse.COMMERCIAL, LandUse.OPEN)
            assert 8 <= e.duration_slots <= 20  # 2-5 h
            dow, hour = e.start_slot // 96, (e.start_slot % 96) / 4
            assert (dow >= 5 and 13 <= hour <= 16) or (dow < 5 and 18 <= hour <= 19.5)
            assert 2_000 < e.extra_per_slot < 10_000
            assert e.period_slots == SLOTS_PER_WEEK and 100 < e.radius_m < 700
