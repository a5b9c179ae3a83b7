"""Tests of the site/cell layouts (hexagonal 3GPP grid and procedural districts)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from worldmodel.twin.layout import hex_layout, nearest_neighbour_m, procedural_layout


def _boresight(az_deg: np.ndarray) -> np.ndarray:
    """Unit vectors (x east, y north) of bearings measured clockwise from north."""
    a = np.radians(az_deg)
    return np.stack([np.sin(a), np.cos(a)], axis=-1)


# ------------------------------------------------------------------------------ hex
def test_hex_default_is_19_sites_57_cells_isd_500():
    lay = hex_layout()
    assert lay.n_sites == 19 and lay.n_cells == 57
    nn = nearest_neighbour_m(lay.site_xy_m)
    np.testing.assert_allclose(nn, 500.0, atol=1e-6)
    np.testing.assert_allclose(lay.site_height_m, 25.0)
    for m in range(lay.n_sites):
        az = np.sort(lay.cell_azimuth_deg[lay.cell_site == m])
        np.testing.assert_allclose(az, [30.0, 150.0, 270.0])


@pytest.mark.parametrize("rings, sites", [(0, 1), (1, 7), (2, 19), (3, 37)])
def test_hex_site_count_per_ring(rings, sites):
    lay = hex_layout(rings, 400.0)
    assert lay.n_sites == sites == 1 + 3 * rings * (rings + 1)
    assert lay.n_cells == 3 * sites


def test_hex_is_centred_with_one_isd_margin():
    lay = hex_layout(2, 500.0)
    assert lay.extent_m == pytest.approx(3000.0)
    np.testing.assert_allclose(lay.site_xy_m.mean(axis=0), [1500.0, 1500.0], atol=1e-6)
    assert lay.site_xy_m[0] == pytest.approx([1500.0, 1500.0])  # centre site first
    assert lay.site_xy_m.min() == pytest.approx(500.0)  # outer ring 1 ISD from the edge
    assert lay.site_xy_m.max() == pytest.approx(2500.0)


def test_hex_sector_boresight_points_at_a_neighbour_site():
    """Clover-leaf layout: an interior site's sectors aim at neighbouring sites 1 ISD away."""
    lay = hex_layout(2, 500.0)
    centre_cells = np.flatnonzero(lay.cell_site == 0)
    target = lay.site_xy_m[0] + 500.0 * _boresight(lay.cell_azimuth_deg[centre_cells])
    d = np.linalg.norm(target[:, None, :] - lay.site_xy_m[None, :, :], axis=-1).min(axis=1)
    np.testing.assert_allclose(d, 0.0, atol=1e-6)


def test_hex_rejects_bad_arguments():
    with pytest.raises(ValueError):
        hex_layout(-1)
    with pytest.raises(ValueError):
        hex_layout(2, 0.0)


# ------------------------------------------------------------------------------ procedural
@pytest.mark.parametrize(
    "kind, n_cells, lo, hi", [("urban", 600, 300.0, 600.0), ("suburb", 240, 800.0, 1500.0)]
)
def test_procedural_isd_range_by_kind(kind, n_cells, lo, hi):
    for seed in range(3):
        lay = procedural_layout(kind, n_cells=n_cells, rng=np.random.default_rng(seed))
        assert lay.n_cells == n_cells
        med = float(np.median(nearest_neighbour_m(lay.site_xy_m)))
        assert lo <= med <= hi, (kind, seed, med)


def test_procedural_urban_is_denser_near_centre():
    lay = procedural_layout("urban", n_cells=1500, rng=np.random.default_rng(4))
    nn = nearest_neighbour_m(lay.site_xy_m)
    r = np.linalg.norm(lay.site_xy_m - np.asarray(lay.centre), axis=1) / (lay.extent_m / 2)
    assert np.median(nn[r < 0.3]) < 0.85 * np.median(nn[r > 0.7])


def test_procedural_cells_sectors_heights_and_bounds():
    for kind, (h_lo, h_hi) in (("urban", (20.0, 45.0)), ("suburb", (25.0, 40.0))):
        lay = procedural_layout(kind, n_cells=301, rng=np.random.default_rng(7))
        assert lay.n_cells == 301
        assert lay.cell_site.dtype == np.int64
        assert np.all(np.diff(lay.cell_site) >= 0)
        per_site = np.bincount(lay.cell_site, minlength=lay.n_sites)
        assert per_site.min() >= 2 and per_site.max() <= 4
        assert (per_site == 3).mean() > 0.9
        assert np.all((lay.cell_azimuth_deg >= 0) & (lay.cell_azimuth_deg < 360))
        assert np.all((lay.site_height_m >= h_lo) & (lay.site_height_m <= h_hi))
        assert np.all((lay.site_xy_m > 0) & (lay.site_xy_m < lay.extent_m))
        # three-sector sites: sectors ~120 deg apart (each jittered by at most 15 deg)
        for m in np.flatnonzero(per_site == 3)[:20]:
            az = np.sort(lay.cell_azimuth_deg[lay.cell_site == m])
            gaps = np.diff(np.concatenate([az, az[:1] + 360.0]))
            assert np.all(np.abs(gaps - 120.0) <= 30.0 + 1e-9)


def test_procedural_extent_or_cells_or_both():
    rng = np.random.default_rng(1)
    lay = procedural_layout("urban", extent_m=4000.0, rng=rng)
    assert lay.extent_m == 4000.0 and lay.n_cells == 3 * lay.n_sites > 30
    lay = procedural_layout("suburb", n_cells=90, extent_m=4000.0, rng=rng)
    assert lay.extent_m == 4000.0 and lay.n_cells == 90
    with pytest.raises(ValueError):
        procedural_layout("urban", rng=rng)
    with pytest.raises(ValueError):
        procedural_layout("rural", n_cells=10, rng=rng)


def test_procedural_deterministic_and_seed_dependent():
    a = procedural_layout("urban", n_cells=150, rng=np.random.default_rng(11))
    b = procedural_layout("urban", n_cells=150, rng=np.random.default_rng(11))
    c = procedural_layout("urban", n_cells=150, rng=np.random.default_rng(12))
    np.testing.assert_array_equal(a.site_xy_m, b.site_xy_m)
    np.testing.assert_array_equal(a.cell_azimuth_deg, b.cell_azimuth_deg)
    assert a.site_xy_m.shape != c.site_xy_m.shape or not np.allclose(a.site_xy_m, c.site_xy_m)


def test_procedural_places_2000_sites_fast():
    t0 = time.perf_counter()
    lay = procedural_layout("urban", n_cells=6000, rng=np.random.default_rng(0))
    assert time.perf_counter() - t0 < 2.0
    assert lay.n_sites == 2000 and lay.n_cells == 6000
    # extent follows from the ISD: ~2000 sites at ~400 m -> roughly 15-22 km
    assert 15_000 < lay.extent_m < 22_000
