"""Urban context of a map: land use, buildings, population, POI, OD flows, facility map, events.

Every raster follows the frame of ``scenario.py``: square map ``[0, extent_m]^2``, ``x`` east,
``y`` north, raster row ``i`` runs south to north (row 0 = southern edge), column ``j`` west to
east. The context grid ``[S, S]`` (POI, OD) and the facility map ``[size, size]`` cover the same
square with the same row convention, so one coordinate normalisation aligns all of them.

All generators are vectorised numpy/scipy and deterministic given their ``rng``.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.special import ndtr

from worldmodel.twin.scenario import (
    N_LANDUSE,
    POI_CATEGORIES,
    SLOTS_PER_WEEK,
    HotspotEvent,
    LandUse,
    Scenario,
)

_OPEN, _RES, _OFF, _COM, _IND, _CAM = (int(z) for z in LandUse)
FACILITY_HEIGHT_NORM_M = 60.0
"""Building height (m) that maps to 1.0 in the facility map (taller buildings are clipped)."""


# ============================================================================ raster helpers
def overlap_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] overlap length (fraction of the map side) of output cell a and input pixel i.

    Both grids tile the same side ``[0, 1]``; rows of ``overlap * n_out`` sum to 1 (area mean),
    columns of ``overlap * n_in`` sum to 1 (mass-preserving aggregation).
    """
    e_in = np.arange(n_in + 1) / n_in
    e_out = np.arange(n_out + 1) / n_out
    lo = np.maximum(e_out[:-1, None], e_in[None, :-1])
    hi = np.minimum(e_out[1:, None], e_in[None, 1:])
    return np.clip(hi - lo, 0.0, None)


def resample_mean(raster: np.ndarray, n: int) -> np.ndarray:
    """Area-weighted mean of a square ``[G, G]`` raster on an ``[n, n]`` grid (up or down)."""
    w = overlap_matrix(raster.shape[0], n) * n
    return w @ np.asarray(raster, dtype=np.float64) @ w.T


def aggregate_sum(raster: np.ndarray, n: int) -> np.ndarray:
    """Mass-preserving sum of a square ``[G, G]`` raster into ``[n, n]`` cells (e.g. residents)."""
    w = overlap_matrix(raster.shape[0], n) * raster.shape[0]
    return w @ np.asarray(raster, dtype=np.float64) @ w.T


def grid_centres_m(extent_m: float, n: int) -> np.ndarray:
    """[n*n, 2] centres (x, y) of an ``[n, n]`` grid over the map, row-major, row 0 = south."""
    c = (np.arange(n) + 0.5) * extent_m / n
    xx, yy = np.meshgrid(c, c)
    return np.stack([xx.ravel(), yy.ravel()], axis=1)


def _interp_matrix(g: int, step: float, n: int, pad: int) -> np.ndarray:
    """[g, n] linear interpolation from a coarse grid (``step`` fine pixels per cell, ``pad``
    cells of margin on each side) to the ``g`` fine pixel centres."""
    pos = (np.arange(g) + 0.5) / step + pad - 0.5
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, n - 2)
    t = pos - i0
    a = np.zeros((g, n))
    rows = np.arange(g)
    a[rows, i0] = 1.0 - t
    a[rows, i0 + 1] = t
    return a


def _smooth_noise(rng: np.random.Generator, g: int, corr_px: float) -> np.ndarray:
    """[g, g] zero-mean unit-std Gaussian random field, white noise smoothed with std corr_px.

    Long correlation lengths are drawn on a coarse grid (corr/3 pixels per cell) and linearly
    interpolated, so the cost is O(g^2) whatever the correlation length.
    """
    corr_px = max(float(corr_px), 0.3)
    if corr_px <= 3.0:
        f = gaussian_filter(rng.standard_normal((g, g)), corr_px, mode="reflect")
    else:
        step, pad = corr_px / 3.0, 10
        n = int(np.ceil(g / step)) + 2 * pad
        coarse = gaussian_filter(rng.standard_normal((n, n)), 3.0, mode="reflect")
        a = _interp_matrix(g, step, n, pad)
        f = a @ coarse @ a.T
    f = f - f.mean()
    sd = f.std()
    return f / sd if sd > 0 else f


def _smooth(raster: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur (std ``sigma_px``) of a square raster; coarse-grid for large sigma."""
    g = raster.shape[0]
    if sigma_px <= 4.0:
        return gaussian_filter(np.asarray(raster, dtype=np.float64), sigma_px, mode="nearest")
    k = sigma_px / 4.0  # fine pixels per coarse cell
    n = max(2, int(np.ceil(g / k)))
    coarse = resample_mean(raster, n)
    coarse = gaussian_filter(coarse, sigma_px / (g / n), mode="nearest")
    a = _interp_matrix(g, g / n, n, 0)
    return a @ coarse @ a.T


def _top(score: np.ndarray, mask: np.ndarray, n_pick: int) -> np.ndarray:
    """Boolean raster: the ``n_pick`` highest-score pixels among ``mask``."""
    out = np.zeros(score.shape, dtype=bool)
    idx = np.flatnonzero(mask)
    n_pick = int(min(max(n_pick, 0), idx.size))
    if n_pick == 0:
        return out
    vals = score.ravel()[idx]
    best = idx[np.argpartition(-vals, n_pick - 1)[:n_pick]]
    out.ravel()[best] = True
    return out


def _pixel_coords_m(g: int, extent_m: float) -> np.ndarray:
    """[g] pixel-centre coordinates (m) along one axis."""
    return (np.arange(g) + 0.5) * extent_m / g


# ============================================================================ kind profiles
@dataclass(frozen=True)
class _Profile:
    """Per-kind parameters of the context generators (zone tuples in ``LandUse`` order)."""

    core_share: float  # OFFICE + COMMERCIAL core, share of the map
    office_in_core: float  # OFFICE share inside the core
    core_radius_frac: float  # main core radius / half extent ...
    core_radius_max_m: float  # ... but at most this (large maps get sub-centres instead)
    subcentre_area_km2: float  # one secondary centre per this much map area
    open_share: float  # parks, water, fields
    industrial_share: float
    campus_share: float
    campus_corr_m: float  # size of campus blobs
    local_commercial_share: float  # neighbourhood shopping centres outside the core
    park_corr_m: float
    industrial_corr_m: float
    coverage: tuple[float, ...]  # probability that a pixel holds a building, per zone
    height_m: tuple[float, ...]  # mean building height per zone
    core_height_boost: float  # heights grow by (1 + boost) at the district centre
    pop_weight: tuple[float, ...]  # relative residents per pixel, per zone
    density_per_km2: tuple[float, float]  # range of the map-average residents per km^2
    poi_scale: float  # multiplies the POI densities


_PROFILES: dict[str, _Profile] = {
    "urban": _Profile(
        core_share=0.16,
        office_in_core=0.6,
        core_radius_frac=0.35,
        core_radius_max_m=1800.0,
        subcentre_area_km2=30.0,
        open_share=0.12,
        industrial_share=0.07,
        campus_share=0.05,
        campus_corr_m=150.0,
        local_commercial_share=0.04,
        park_corr_m=200.0,
        industrial_corr_m=350.0,
        coverage=(0.0, 0.45, 0.65, 0.6, 0.45, 0.35),
        height_m=(0.0, 18.0, 45.0, 20.0, 10.0, 15.0),
        core_height_boost=0.8,
        pop_weight=(0.01, 1.0, 0.15, 0.35, 0.02, 0.25),
        density_per_km2=(13_000.0, 20_000.0),
        poi_scale=1.0,
    ),
    "hex": _Profile(
        core_share=0.10,
        office_in_core=0.55,
        core_radius_frac=0.4,
        core_radius_max_m=1200.0,
        subcentre_area_km2=30.0,
        open_share=0.15,
        industrial_share=0.08,
        campus_share=0.04,
        campus_corr_m=150.0,
        local_commercial_share=0.04,
        park_corr_m=200.0,
        industrial_corr_m=350.0,
        coverage=(0.0, 0.4, 0.6, 0.55, 0.45, 0.35),
        height_m=(0.0, 15.0, 35.0, 18.0, 10.0, 14.0),
        core_height_boost=0.5,
        pop_weight=(0.01, 1.0, 0.15, 0.35, 0.02, 0.25),
        density_per_km2=(9_000.0, 14_000.0),
        poi_scale=0.8,
    ),
    "suburb": _Profile(
        core_share=0.03,
        office_in_core=0.25,
        core_radius_frac=0.2,
        core_radius_max_m=700.0,
        subcentre_area_km2=60.0,
        open_share=0.40,
        industrial_share=0.08,
        campus_share=0.02,
        campus_corr_m=200.0,
        local_commercial_share=0.02,
        park_corr_m=500.0,
        industrial_corr_m=600.0,
        coverage=(0.0, 0.25, 0.45, 0.4, 0.4, 0.3),
        height_m=(0.0, 8.0, 15.0, 10.0, 9.0, 12.0),
        core_height_boost=0.2,
        pop_weight=(0.01, 1.0, 0.15, 0.35, 0.02, 0.25),
        density_per_km2=(1_500.0, 2_500.0),
        poi_scale=0.35,
    ),
}


def _profile(kind: str) -> _Profile:
    if kind not in _PROFILES:
        raise ValueError(f"unknown kind {kind!r}; expected one of {sorted(_PROFILES)}")
    return _PROFILES[kind]


def centrality(landuse: np.ndarray, extent_m: float, sigma_m: float = 600.0) -> np.ndarray:
    """[G, G] in [0, 1]: OFFICE+COMMERCIAL share blurred over ``sigma_m``, divided by its max.

    1 in the heart of the densest centre, ~0 far from any centre; drives building heights and
    residential density.
    """
    core = np.isin(landuse, (_OFF, _COM)).astype(np.float64)
    c = _smooth(core, sigma_m / (extent_m / landuse.shape[0]))
    top = c.max()
    return np.clip(c / top, 0.0, 1.0) if top > 0 else c


# ============================================================================ rasters
def landuse_raster(
    kind: str,
    grid_px: int,
    extent_m: float,
    rng: np.random.Generator,
    centre_xy_m: tuple[float, float] | None = None,
) -> np.ndarray:
    """[G, G] int8 ``LandUse`` zones from smoothed random fields.

    Zones are allotted in order with target map shares (see ``_PROFILES``): an OFFICE core
    ringed by COMMERCIAL around the district centre ``centre_xy_m`` (default: map centre; its
    radius is capped, so large maps also get secondary centres, one per ~30 km^2), parks
    (OPEN), INDUSTRIAL patches toward the map edge, CAMPUS blobs, small neighbourhood
    COMMERCIAL centres, and RESIDENTIAL everywhere else. ``urban``: dense core; ``suburb``:
    mostly RESIDENTIAL and OPEN with a small commercial centre; ``hex``: a mixed city.
    """
    p = _profile(kind)
    g = int(grid_px)
    px = extent_m / g
    half = extent_m / 2.0
    total = g * g
    cx, cy = (half, half) if centre_xy_m is None else centre_xy_m
    c = _pixel_coords_m(g, extent_m)
    d = np.hypot(c[None, :] - cx, c[:, None] - cy) / half  # distance from centre / half extent

    # centres: the main one plus secondary ones on large maps
    r0 = min(p.core_radius_frac * half, p.core_radius_max_m)
    n_sub = int(extent_m**2 / 1e6 // p.subcentre_area_km2)
    sub_xy = rng.uniform(0.1 * extent_m, 0.9 * extent_m, size=(n_sub, 2))
    sub_r = r0 * rng.uniform(0.3, 0.6, size=n_sub)
    prox = np.exp(-((d * half / r0) ** 2))
    for (sx, sy), sr in zip(sub_xy, sub_r, strict=True):  # a handful of centres
        ds = np.hypot(c[None, :] - sx, c[:, None] - sy)
        prox = np.maximum(prox, np.exp(-((ds / sr) ** 2)))
    disc_share = np.pi * (r0**2 + np.sum(sub_r**2)) / extent_m**2
    core_share = min(p.core_share, 1.5 * disc_share)

    zones = np.full((g, g), _RES, dtype=np.int8)
    free = np.ones((g, g), dtype=bool)
    core_score = prox + 0.25 * _smooth_noise(rng, g, 0.5 * r0 / px)
    core = _top(core_score, free, round(core_share * total))
    office_score = prox + 0.3 * _smooth_noise(rng, g, 0.25 * r0 / px)
    office = _top(office_score, core, round(p.office_in_core * core.sum()))
    zones[core] = _COM
    zones[office] = _OFF
    free &= ~core

    park_score = _smooth_noise(rng, g, p.park_corr_m / px) + 0.3 * np.minimum(d, 1.5)
    park = _top(park_score, free, round(p.open_share * total))
    zones[park] = _OPEN
    free &= ~park

    ind_score = _smooth_noise(rng, g, p.industrial_corr_m / px) + 1.5 * np.clip(d - 0.5, 0, 1)
    ind = _top(ind_score, free, round(p.industrial_share * total))
    zones[ind] = _IND
    free &= ~ind

    campus_score = _smooth_noise(rng, g, p.campus_corr_m / px) - 0.5 * np.abs(d - 0.55)
    campus = _top(campus_score, free, round(p.campus_share * total))
    zones[campus] = _CAM
    free &= ~campus

    local = _top(_smooth_noise(rng, g, 80.0 / px), free, round(p.local_commercial_share * total))
    zones[local] = _COM
    return zones


def building_raster(
    kind: str, landuse: np.ndarray, extent_m: float, rng: np.random.Generator
) -> np.ndarray:
    """[G, G] float32 building height (m) per pixel, 0 where no building.

    A pixel holds a building with the zone's coverage probability (block-correlated, ~1.2 px);
    its height is the zone mean (tall office core, mid-rise residential, low industrial, nothing
    in OPEN) raised toward dense centres (``centrality``), times log-normal noise (sigma 0.35),
    clipped to 3-250 m.
    """
    p = _profile(kind)
    g = landuse.shape[0]
    coverage = np.asarray(p.coverage)[landuse]
    mean_h = np.asarray(p.height_m)[landuse]
    has = ndtr(_smooth_noise(rng, g, 1.2)) < coverage
    boost = 1.0 + p.core_height_boost * np.sqrt(centrality(landuse, extent_m))
    h = mean_h * boost * np.exp(0.35 * _smooth_noise(rng, g, 3.0) - 0.06)
    return np.where(has & (mean_h > 0), np.clip(h, 3.0, 250.0), 0.0).astype(np.float32)


def population_raster(
    kind: str,
    landuse: np.ndarray,
    building_height_m: np.ndarray,
    extent_m: float,
    rng: np.random.Generator,
    density_per_km2: float | None = None,
) -> np.ndarray:
    """[G, G] float32 residents per pixel.

    Relative weight per zone (RESIDENTIAL 1, COMMERCIAL 0.35, CAMPUS 0.25, OFFICE 0.15,
    INDUSTRIAL 0.02, OPEN 0.01), denser near centres for ``urban``/``hex``, higher on built
    pixels, with smooth log-normal noise; scaled so the map average is ``density_per_km2``
    (default drawn from: urban 13-20k, hex 9-14k, suburb 1.5-2.5k residents per km^2).
    """
    p = _profile(kind)
    g = landuse.shape[0]
    px = extent_m / g
    if density_per_km2 is None:
        density_per_km2 = float(rng.uniform(*p.density_per_km2))
    cen = centrality(landuse, extent_m, sigma_m=1000.0)
    cen = 0.6 + 0.8 * np.sqrt(cen) if kind != "suburb" else 0.9 + 0.2 * cen
    w = np.asarray(p.pop_weight)[landuse] * cen
    w = w * (0.5 + 0.5 * (building_height_m > 0)) * np.exp(0.4 * _smooth_noise(rng, g, 150 / px))
    total = density_per_km2 * (extent_m / 1000.0) ** 2
    return (w * (total / w.sum())).astype(np.float32)


# POI densities (per km^2 of each zone) in POI_CATEGORIES order:
# residential, office, shopping, food, leisure, education, transport, health
_POI_DENSITY_KM2 = np.array(
    [
        [2.0, 1.0, 2.0, 4.0, 15.0, 1.0, 3.0, 0.5],  # OPEN
        [60.0, 10.0, 60.0, 80.0, 15.0, 10.0, 10.0, 8.0],  # RESIDENTIAL
        [10.0, 250.0, 80.0, 200.0, 25.0, 5.0, 30.0, 10.0],  # OFFICE
        [15.0, 60.0, 400.0, 350.0, 60.0, 5.0, 30.0, 15.0],  # COMMERCIAL
        [3.0, 60.0, 5.0, 15.0, 2.0, 2.0, 8.0, 2.0],  # INDUSTRIAL
        [15.0, 10.0, 20.0, 40.0, 20.0, 60.0, 8.0, 25.0],  # CAMPUS
    ]
)
assert _POI_DENSITY_KM2.shape == (N_LANDUSE, len(POI_CATEGORIES))


def landuse_fractions(landuse: np.ndarray, n: int) -> np.ndarray:
    """[n, n, N_LANDUSE] area fraction of every zone inside each context-grid cell."""
    return np.stack([resample_mean(landuse == z, n) for z in range(N_LANDUSE)], axis=-1)


def poi_grid(
    kind: str, landuse: np.ndarray, extent_m: float, ctx_grid: int, rng: np.random.Generator
) -> np.ndarray:
    """[S, S, K] float32 POI counts per context-grid cell, Poisson with land-use-mix rates."""
    frac = landuse_fractions(landuse, ctx_grid)
    cell_km2 = (extent_m / ctx_grid / 1000.0) ** 2
    rate = frac @ _POI_DENSITY_KM2 * (cell_km2 * _profile(kind).poi_scale)
    return rng.poisson(rate).astype(np.float32)


# ============================================================================ OD flows
def slot_time(slots: np.ndarray, slots_per_day: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """(slot-of-day, day-of-week) of absolute slots; slot 0 is Monday 00:00 (dow 0 = Monday)."""
    s = np.mod(np.asarray(slots, dtype=np.int64), 7 * slots_per_day)
    return s % slots_per_day, s // slots_per_day


def _day_profile(slots_per_day: int, peaks: tuple[tuple[float, float, float], ...]) -> np.ndarray:
    """[slots_per_day] mixture of circular Gaussians (weight, mean h, std h), summing to 1."""
    h = (np.arange(slots_per_day) + 0.5) * 24.0 / slots_per_day
    out = np.zeros(slots_per_day)
    for w, mu, sd in peaks:
        dh = np.abs(h - mu)
        dh = np.minimum(dh, 24.0 - dh)
        out += w * np.exp(-0.5 * (dh / sd) ** 2) / sd
    out /= out.sum()
    night_floor = 0.01  # a trickle of trips at every hour
    return (1.0 - night_floor) * out + night_floor / slots_per_day


# Daily trip rates per resident (Mon..Sun) and day profiles for the four OD modes:
# commute out (home -> work), commute back, leisure out (home -> leisure), leisure back.
_COMMUTE_RATE = np.array([0.45, 0.45, 0.45, 0.45, 0.43, 0.12, 0.08])
_LEISURE_RATE = np.array([0.15, 0.15, 0.15, 0.16, 0.22, 0.45, 0.40])
_WEEKDAY_PEAKS = (
    ((0.9, 8.25, 0.85), (0.1, 13.0, 3.0)),  # commute out
    ((0.9, 18.0, 1.1), (0.1, 22.0, 2.0)),  # commute back
    ((0.35, 12.25, 0.75), (0.65, 19.25, 1.2)),  # leisure out
    ((0.35, 13.5, 0.75), (0.65, 21.75, 1.2)),  # leisure back
)
_WEEKEND_PEAKS = (
    ((1.0, 9.5, 1.5),),
    ((1.0, 17.5, 2.0),),
    ((1.0, 12.5, 2.2),),
    ((1.0, 18.5, 2.2),),
)
OD_D0_M = 1000.0
"""Distance offset d0 (m) of the gravity weight mass_i * mass_j / (d_ij + d0)^2."""


@dataclass(frozen=True)
class ODModel:
    """Separable OD model of one scenario: flows(t) = sum_m coef[t, m] * base[m].

    ``base [4, 2, S, S]``: in-flow (channel 0) and out-flow (channel 1) per grid cell of each
    mode if every resident made that trip once; ``coef [slots_per_week, 4]``: share of residents
    making the trip in each slot of the week. Trips that start and end in the same grid cell
    count in neither channel, so sum(in) == sum(out) for every slot.
    """

    base: np.ndarray
    coef: np.ndarray

    def flows(self, slots: np.ndarray) -> np.ndarray:
        """[len(slots), 2, S, S] float32 people per slot."""
        sow = np.mod(np.asarray(slots, dtype=np.int64).ravel(), self.coef.shape[0])
        return np.einsum("tm,mcij->tcij", self.coef[sow], self.base).astype(np.float32)


def _gravity_in_out(
    origin: np.ndarray, attract: np.ndarray, dist_m: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Production-constrained gravity trips T_ij = P_i A_j f(d_ij) / sum_k A_k f(d_ik).

    Returns (in-flow [S^2], out-flow [S^2]) excluding intra-cell trips.
    """
    w = attract[None, :] / (dist_m + OD_D0_M) ** 2
    t = w * (origin / np.maximum(w.sum(axis=1), 1e-30))[:, None]
    np.fill_diagonal(t, 0.0)
    return t.sum(axis=0), t.sum(axis=1)


def build_od_model(scenario: Scenario) -> ODModel:
    """Gravity commute/leisure model from the scenario's population, POI and land use."""
    s = scenario.ctx_grid
    origin = aggregate_sum(scenario.population, s).ravel()
    poi = scenario.poi.reshape(s * s, -1).astype(np.float64)
    cat = {name: poi[:, k] for k, name in enumerate(POI_CATEGORIES)}
    frac = landuse_fractions(scenario.landuse, s).reshape(s * s, -1)
    cell_km2 = (scenario.extent_m / s / 1000.0) ** 2
    work = (
        cat["office"]
        + 0.8 * cat["education"]
        + 0.5 * cat["health"]
        + 0.3 * cat["shopping"]
        + 0.2 * cat["food"]
        + 0.1 * cat["transport"]
        + 50.0 * cell_km2 * (frac[:, _IND] + frac[:, _OFF] + frac[:, _CAM])
    )
    leisure = (
        cat["shopping"]
        + cat["food"]
        + 2.0 * cat["leisure"]
        + 40.0 * cell_km2 * (frac[:, _OPEN] + frac[:, _COM])
    )
    work = work + 1e-3 * max(work.mean(), 1e-9)
    leisure = leisure + 1e-3 * max(leisure.mean(), 1e-9)
    xy = grid_centres_m(scenario.extent_m, s)
    dist = np.hypot(xy[:, None, 0] - xy[None, :, 0], xy[:, None, 1] - xy[None, :, 1])
    in_w, out_w = _gravity_in_out(origin, work, dist)
    in_l, out_l = _gravity_in_out(origin, leisure, dist)
    shape = (s, s)
    base = np.stack(
        [
            np.stack([in_w, out_w]),  # commute out: home -> work
            np.stack([out_w, in_w]),  # commute back: the same trips reversed
            np.stack([in_l, out_l]),
            np.stack([out_l, in_l]),
        ]
    ).reshape(4, 2, *shape)

    spd = max(1, 1440 // int(scenario.slot_minutes))
    coef = np.zeros((7, spd, 4))
    for m in range(4):
        wk = _day_profile(spd, _WEEKDAY_PEAKS[m])
        we = _day_profile(spd, _WEEKEND_PEAKS[m])
        rate = _COMMUTE_RATE if m < 2 else _LEISURE_RATE
        for dow in range(7):
            coef[dow, :, m] = rate[dow] * (wk if dow < 5 else we)
    return ODModel(base=base, coef=coef.reshape(7 * spd, 4))


_OD_CACHE: dict[int, tuple[weakref.ref, tuple[int, ...], ODModel]] = {}


def od_model(scenario: Scenario) -> ODModel:
    """The scenario's ``ODModel``, built once and cached (assumes its arrays are not mutated)."""
    key = (id(scenario.population), id(scenario.poi), id(scenario.landuse))
    hit = _OD_CACHE.get(id(scenario))
    if hit is not None and hit[0]() is scenario and hit[1] == key:
        return hit[2]
    model = build_od_model(scenario)
    for k in [k for k, v in _OD_CACHE.items() if v[0]() is None]:
        del _OD_CACHE[k]
    if len(_OD_CACHE) >= 32:
        _OD_CACHE.pop(next(iter(_OD_CACHE)))
    _OD_CACHE[id(scenario)] = (weakref.ref(scenario), key, model)
    return model


def od_flows(scenario: Scenario, slots: np.ndarray) -> np.ndarray:
    """[len(slots), 2, S, S] float32 per-grid in-flow (channel 0) and out-flow (1), people/slot.

    Gravity commute model (``build_od_model``): residents (population summed to the S x S
    grid) travel to work destinations (office/education/health POIs, OFFICE/CAMPUS/INDUSTRIAL
    land) in the weekday morning and back in the evening, and to leisure destinations
    (shopping/food/leisure POIs, COMMERCIAL/OPEN land) at lunch, in the evening and, mostly,
    on weekend afternoons; weight mass_i * mass_j / (d_ij + 1 km)^2. Slot 0 is Monday 00:00;
    ``1440 / slot_minutes`` slots per day; the pattern repeats weekly. Random access, cached.
    """
    return od_model(scenario).flows(slots)


# ============================================================================ facility map
def facility_map(
    scenario: Scenario, size: int = 128, cell_active: np.ndarray | None = None
) -> np.ndarray:
    """[2, size, size] float32 facility image in [0, 1], row 0 = south (scenario frame).

    Channel 0: building height, area-averaged to ``size x size`` and divided by 60 m (clipped).
    Channel 1: base-station layout, a Gaussian blob (sigma 1.5 px) of value exactly 1 at the
    pixel of every site (composited by maximum). With ``cell_active [N]`` only sites with at
    least one active cell are drawn; by default every site is.
    """
    out = np.zeros((2, size, size), dtype=np.float32)
    h = resample_mean(scenario.building_height_m, size) / FACILITY_HEIGHT_NORM_M
    out[0] = np.clip(h, 0.0, 1.0)
    xy = scenario.site_xy_m
    if cell_active is not None:
        on = np.zeros(scenario.n_sites, dtype=bool)
        on[scenario.cell_site[np.asarray(cell_active, dtype=bool)]] = True
        xy = xy[on]
    if len(xy):
        col = np.clip(np.floor(xy[:, 0] / scenario.extent_m * size), 0, size - 1).astype(int)
        row = np.clip(np.floor(xy[:, 1] / scenario.extent_m * size), 0, size - 1).astype(int)
        sigma, r = 1.5, 5
        off = np.arange(-r, r + 1)
        dr, dc = np.meshgrid(off, off, indexing="ij")
        val = np.exp(-(dr**2 + dc**2) / (2 * sigma**2)).ravel()
        rr = (row[:, None] + dr.ravel()[None, :]).ravel()
        cc = (col[:, None] + dc.ravel()[None, :]).ravel()
        vv = np.broadcast_to(val, (len(row), val.size)).ravel()
        ok = (rr >= 0) & (rr < size) & (cc >= 0) & (cc < size)
        np.maximum.at(out[1], (rr[ok], cc[ok]), vv[ok].astype(np.float32))
    return out


# ============================================================================ events
_EVENT_PEAK_MB = {"urban": 2_000.0, "hex": 2_000.0, "suburb": 1_200.0}


def sample_events(
    kind: str, landuse: np.ndarray, extent_m: float, rng: np.random.Generator
) -> tuple[HotspotEvent, ...]:
    """1-3 weekly bursty events (stadium match, mall sale) in COMMERCIAL or OPEN zones.

    Each lasts 2-5 h (8-20 slots of 15 min), on a weekend afternoon (start 13:00-16:00) or a
    weekday evening (start 18:00-19:30), with a Gaussian footprint of 150-400 m (x1.5 in the
    suburb) and ``extra_per_slot`` of 2-4 times a busy cell's peak traffic (~2,000 MB per slot
    in the city, 1,200 MB in the suburb). Repeats weekly.
    """
    _profile(kind)
    g = landuse.shape[0]
    px = extent_m / g
    cand = np.flatnonzero((landuse == _COM) | (landuse == _OPEN))
    if cand.size == 0:
        cand = np.arange(g * g)
    n = int(rng.integers(1, 4))
    events = []
    for _ in range(n):
        k = int(rng.choice(cand))
        x = (k % g + rng.uniform(0.0, 1.0)) * px
        y = (k // g + rng.uniform(0.0, 1.0)) * px
        if rng.random() < 0.5:
            dow, hour = int(rng.integers(5, 7)), rng.uniform(13.0, 16.0)
        else:
            dow, hour = int(rng.integers(0, 5)), rng.uniform(18.0, 19.5)
        radius = rng.uniform(150.0, 400.0) * (1.5 if kind == "suburb" else 1.0)
        events.append(
            HotspotEvent(
                x_m=float(x),
                y_m=float(y),
                radius_m=float(radius),
                start_slot=int(dow * 96 + round(hour * 4)),
                duration_slots=int(rng.integers(8, 21)),
                extra_per_slot=float(rng.uniform(2.0, 4.0) * _EVENT_PEAK_MB[kind]),
                period_slots=SLOTS_PER_WEEK,
            )
        )
    return tuple(sorted(events, key=lambda e: e.start_slot))
