"""A small, fully controlled scenario for physics tests of the twin."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from worldmodel.twin.scenario import LandUse, RadioConfig, Scenario


class ConstantDemand:
    """Uniform demand: ``mb_per_pixel`` in every pixel and slot (isolates the radio physics)."""

    def __init__(self, n_pixels: int, mb_per_pixel: float = 1.0) -> None:
        self.n_pixels = n_pixels
        self.mb = mb_per_pixel

    def density_many(self, slots: np.ndarray) -> np.ndarray:
        return np.full((len(np.atleast_1d(slots)), self.n_pixels), self.mb, dtype=np.float32)


def make_toy_scenario(
    sites_per_side: int = 3,
    isd_m: float = 500.0,
    pixel_m: float = 25.0,
    fading_db: float = 0.0,
    seed: int = 0,
    **radio_kw,
) -> Scenario:
    """A square grid of 3-sector sites (azimuths 0/120/240°), uniform residential land use."""
    extent = isd_m * (sites_per_side + 1)
    g = int(round(extent / pixel_m))
    c = isd_m * (np.arange(sites_per_side) + 1.0)
    xx, yy = np.meshgrid(c, c)
    sites = np.stack([xx.ravel(), yy.ravel()], axis=1)
    m = len(sites)
    cell_site = np.repeat(np.arange(m), 3)
    az = np.tile([0.0, 120.0, 240.0], m)
    params = np.stack([np.full(3 * m, 40.0), az, np.full(3 * m, 2.0), np.full(3 * m, 4.0)], 1)
    radio = replace(RadioConfig(), fast_fading_std_db=fading_db, **radio_kw)
    return Scenario(
        name="toy",
        kind="urban",
        seed=seed,
        extent_m=float(extent),
        site_xy_m=sites,
        site_height_m=np.full(m, 25.0),
        cell_site=cell_site,
        init_params=params,
        init_active=np.ones(3 * m, dtype=bool),
        cell_capacity=np.full(3 * m, 3000.0),
        building_height_m=np.zeros((g, g), dtype=np.float32),
        landuse=np.full((g, g), int(LandUse.RESIDENTIAL), dtype=np.int8),
        population=np.full((g, g), 10.0, dtype=np.float32),
        poi=np.zeros((8, 8, 8), dtype=np.float32),
        radio=radio,
    )


@pytest.fixture
def toy() -> Scenario:
    return make_toy_scenario()


@pytest.fixture
def const_demand(toy: Scenario) -> ConstantDemand:
    return ConstantDemand(toy.grid_px**2)
