"""Tests of the named scenario builders."""

from __future__ import annotations

import time

import numpy as np
import pytest

from worldmodel.twin.builders import SCENARIOS, get_scenario, make_scenario
from worldmodel.twin.layout import nearest_neighbour_m
from worldmodel.twin.scenario import (
    AZIMUTH,
    ELEC_TILT,
    MECH_TILT,
    POWER,
    ParamBounds,
    RadioConfig,
)

_ARRAYS = ("site_xy_m", "init_params", "cell_capacity", "building_height_m", "landuse", "poi")


@pytest.mark.parametrize("kind", ["hex", "urban", "suburb"])
def test_deterministic_per_seed_and_seeds_differ(kind):
    a, b, c = make_scenario(kind, 3), make_scenario(kind, 3), make_scenario(kind, 4)
    for name in (*_ARRAYS, "population"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.events == b.events
    assert not np.array_equal(a.population, c.population)
    assert not np.array_equal(a.landuse, c.landuse)


def test_hex57():
    sc = get_scenario("hex57")
    assert sc.name == "hex57" and sc.kind == "hex"
    assert sc.n_cells == 57 and sc.n_sites == 19
    np.testing.assert_allclose(nearest_neighbour_m(sc.site_xy_m), 500.0, atol=1e-6)
    np.testing.assert_allclose(
        np.sort(sc.init_params[:, AZIMUTH].reshape(19, 3), axis=1), [[30, 150, 270]] * 19
    )
    assert sc.radio.environment == "UMa"
    assert sc.pixel_m == pytest.approx(20.0) and sc.grid_px == 150
    assert sc.extent_m == pytest.approx(3000.0)


@pytest.mark.parametrize(
    "kind, cells, pixel", [("hex", 57, 20.0), ("urban", 120, 25.0), ("suburb", 60, 50.0)]
)
def test_defaults(kind, cells, pixel):
    sc = make_scenario(kind, 0)
    sc.validate()
    assert sc.n_cells == cells
    assert sc.pixel_m == pytest.approx(pixel, rel=0.05)
    assert sc.ctx_grid == 32 and sc.poi.shape == (32, 32, 8)
    assert sc.init_active.dtype == bool and sc.init_active.all()
    assert sc.traffic_unit == "MB" and sc.slot_minutes == 15
    assert sc.demand_mb_per_person_slot == 0.5
    assert 1 <= len(sc.events) <= 3
    assert sc.building_height_m.dtype == np.float32 and sc.population.dtype == np.float32


def test_initial_parameters_are_realistic_and_in_bounds():
    urban, suburb = make_scenario("urban", 0), make_scenario("suburb", 0)
    for sc in (urban, suburb, make_scenario("hex", 0)):
        p = sc.init_params
        assert np.all((p[:, POWER] >= 40) & (p[:, POWER] <= 46))
        assert np.all((p[:, MECH_TILT] >= 0) & (p[:, MECH_TILT] <= 6))
        assert np.all((p[:, ELEC_TILT] >= 2) & (p[:, ELEC_TILT] <= 8))
        assert np.all((p[:, AZIMUTH] >= 0) & (p[:, AZIMUTH] < 360))
        sc.bounds.validate(p)
        cap = sc.cell_capacity
        assert np.all((cap >= 0.8 * 3000) & (cap <= 1.2 * 3000)) and cap.std() > 0
    assert suburb.init_params[:, POWER].mean() > urban.init_params[:, POWER].mean()
    assert urban.init_params[:, ELEC_TILT].mean() > suburb.init_params[:, ELEC_TILT].mean()


def test_custom_bounds_grid_and_radio():
    bounds = ParamBounds(power_dbm=(30.0, 41.0), elec_tilt_deg=(0.0, 5.0))
    radio = RadioConfig(environment="UMi")
    sc = make_scenario("urban", 2, grid_px=64, ctx_grid=16, bounds=bounds, radio=radio)
    assert sc.grid_px == 64 and sc.ctx_grid == 16
    assert sc.bounds == bounds and sc.radio.environment == "UMi"
    assert sc.init_params[:, POWER].max() <= 41.0 and sc.init_params[:, ELEC_TILT].max() <= 5
    sc = make_scenario("suburb", 2, n_cells=30, extent_m=4000.0)
    assert sc.n_cells == 30 and sc.extent_m == 4000.0


def test_extra_cells_are_inactive_inside_and_leave_map_unchanged():
    base = make_scenario("urban", 5)
    ext = make_scenario("urban", 5, extra_cells=7)
    n = base.n_cells
    assert ext.n_cells == n + 7 and ext.n_sites == base.n_sites + 7
    assert ext.init_active[:n].all() and not ext.init_active[n:].any()
    new_sites = ext.cell_site[n:]
    assert len(np.unique(new_sites)) == 7 and new_sites.min() >= base.n_sites
    xy = ext.cell_xy_m[n:]
    assert np.all((xy > 0) & (xy < ext.extent_m))
    ext.bounds.validate(ext.init_params[n:])
    assert np.all(ext.cell_capacity[n:] > 0)
    for name in _ARRAYS:
        a, b = getattr(base, name), getattr(ext, name)
        np.testing.assert_array_equal(a, b[: len(a)] if name in _ARRAYS[:3] else b)
    np.testing.assert_array_equal(base.population, ext.population)


def test_hex_options_and_errors():
    sc = make_scenario("hex", 0, n_cells=21)
    assert sc.n_sites == 7
    sc = make_scenario("hex", 0, extent_m=4000.0)
    np.testing.assert_allclose(sc.site_xy_m.mean(axis=0), [2000.0, 2000.0], atol=1e-6)
    with pytest.raises(ValueError, match="hex n_cells"):
        make_scenario("hex", 0, n_cells=50)
    with pytest.raises(ValueError, match="unknown scenario kind"):
        make_scenario("rural", 0)
    with pytest.raises(ValueError):
        make_scenario("urban", 0, extra_cells=-1)


def test_registry_and_unknown_name():
    for name in ("hex57", "urban", "suburb"):
        assert name in SCENARIOS
    sc = get_scenario("suburb")
    assert sc.kind == "suburb" and sc.seed == 2 and sc.name == "suburb"
    assert get_scenario("urban").seed == 1
    with pytest.raises(ValueError) as err:
        get_scenario("atlantis")
    msg = str(err.value)
    assert "atlantis" in msg
    for name in SCENARIOS:
        assert name in msg


def test_paper_scale_district_builds_fast():
    t0 = time.perf_counter()
    sc = make_scenario("urban", 3, n_cells=5000)
    dt = time.perf_counter() - t0
    assert sc.n_cells == 5000
    assert 15_000 <= sc.extent_m <= 18_500
    assert 25.0 <= sc.pixel_m <= 31.0
    assert dt < 5.0
    nbytes = sum(getattr(sc, k).nbytes for k in ("building_height_m", "landuse", "population"))
    assert nbytes < 64 * 2**20
