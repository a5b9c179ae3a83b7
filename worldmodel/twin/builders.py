"""Named scenarios: ``make_scenario(kind, seed)`` and the ``SCENARIOS`` registry.

``kind`` is ``"hex"`` (3GPP 19-site / 57-cell hexagonal grid, ISD 500 m, a mixed city),
``"urban"`` (irregular dense district, ISD ~300-500 m, office core) or ``"suburb"`` (sparse
district, ISD ~0.8-1.5 km, mostly residential and open land). Everything is drawn from
independent streams of ``np.random.SeedSequence(seed)``, so a seed fixes the map, and adding
``extra_cells`` leaves the rest of the map unchanged.

Traffic unit: MB per slot. A macro cell's capacity is ~3,000 MB per 15-min slot
(3,000 MB * 8 / 900 s ~ 27 Mbit/s average cell throughput), +-20 % per cell.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from worldmodel.twin.context import (
    building_raster,
    landuse_raster,
    poi_grid,
    population_raster,
    sample_events,
)
from worldmodel.twin.demand import DEFAULT_DEMAND
from worldmodel.twin.layout import Layout, hex_layout, nearest_neighbour_m, procedural_layout
from worldmodel.twin.scenario import (
    AZIMUTH,
    ELEC_TILT,
    MECH_TILT,
    POWER,
    SLOT_MINUTES_DEFAULT,
    ParamBounds,
    RadioConfig,
    Scenario,
)

KINDS: tuple[str, ...] = ("hex", "urban", "suburb")
DEFAULT_N_CELLS = {"hex": 57, "urban": 120, "suburb": 60}
DEFAULT_PIXEL_M = {"hex": 20.0, "urban": 25.0, "suburb": 50.0}
MAX_GRID_PX = {"hex": 600, "urban": 600, "suburb": 480}
"""Above this many pixels per side the pixel grows (paper-scale districts: ~30 m, ~60 m)."""
UMI_BELOW_ISD_M = 250.0
"""Very dense maps (median nearest-site distance below this) default to UMi path loss."""
CELL_CAPACITY_MB = 3_000.0
"""Mean capacity of a macro cell in MB per 15-min slot (~27 Mbit/s); scaled by slot length."""

# per-kind ranges of the initial antenna parameters
_POWER_DBM = {"hex": (41.0, 45.0), "urban": (40.0, 44.0), "suburb": (43.0, 46.0)}
_MECH_TILT_DEG = {"hex": (0.0, 6.0), "urban": (2.0, 6.0), "suburb": (0.0, 4.0)}
_ELEC_TILT_DEG = {"hex": (3.0, 7.0), "urban": (4.0, 8.0), "suburb": (2.0, 6.0)}
_SITE_HEIGHT_M = {"hex": (20.0, 30.0), "urban": (20.0, 45.0), "suburb": (25.0, 40.0)}

# independent random streams (spawn order is part of the format: append, never reorder)
_STREAMS = ("layout", "landuse", "buildings", "population", "poi", "params", "events", "extra")


def _hex_rings(n_cells: int) -> int:
    for r in range(0, 30):
        n = 3 * (1 + 3 * r * (r + 1))
        if n == n_cells:
            return r
        if n > n_cells:
            break
    valid = [3 * (1 + 3 * r * (r + 1)) for r in range(6)]
    raise ValueError(f"hex n_cells must be 3*(1+3r(r+1)), e.g. {valid}; got {n_cells}")


def _sample_params(
    kind: str, azimuth_deg: np.ndarray, bounds: ParamBounds, rng: np.random.Generator
) -> np.ndarray:
    """[N, 4] initial parameters in PARAM_NAMES order, clipped into ``bounds``."""
    n = len(azimuth_deg)
    p = np.empty((n, 4))
    p[:, POWER] = rng.uniform(*_POWER_DBM[kind], size=n)
    p[:, AZIMUTH] = azimuth_deg
    p[:, MECH_TILT] = rng.uniform(*_MECH_TILT_DEG[kind], size=n)
    p[:, ELEC_TILT] = rng.uniform(*_ELEC_TILT_DEG[kind], size=n)
    return bounds.clip(p)


def _capacity(n: int, slot_minutes: int, rng: np.random.Generator) -> np.ndarray:
    return CELL_CAPACITY_MB * (slot_minutes / 15.0) * rng.uniform(0.8, 1.2, size=n)


def _add_extra_cells(
    layout: Layout, k: int, kind: str, rng: np.random.Generator
) -> tuple[Layout, np.ndarray]:
    """Append ``k`` single-sector sites at random map positions; returns (layout, azimuths)."""
    ext = layout.extent_m
    margin = 0.02 * ext
    xy = rng.uniform(margin, ext - margin, size=(k, 2))
    h = rng.uniform(*_SITE_HEIGHT_M[kind], size=k)
    az = rng.uniform(0.0, 360.0, size=k)
    m = layout.n_sites
    out = Layout(
        extent_m=ext,
        site_xy_m=np.concatenate([layout.site_xy_m, xy]),
        site_height_m=np.concatenate([layout.site_height_m, h]),
        cell_site=np.concatenate([layout.cell_site, m + np.arange(k, dtype=np.int64)]),
        cell_azimuth_deg=np.concatenate([layout.cell_azimuth_deg, az]),
        centre_xy_m=layout.centre_xy_m,
    )
    return out, az


def make_scenario(
    kind: str,
    seed: int = 0,
    *,
    n_cells: int | None = None,
    extent_m: float | None = None,
    grid_px: int | None = None,
    ctx_grid: int = 32,
    bounds: ParamBounds = ParamBounds(),  # noqa: B008 (frozen dataclass)
    radio: RadioConfig | None = None,
    extra_cells: int = 0,
    name: str | None = None,
    demand: str = DEFAULT_DEMAND,
) -> Scenario:
    """Build and validate a ``Scenario`` of ``kind`` in {"hex", "urban", "suburb"}.

    Defaults: hex 57 cells (ISD 500 m, 3 km map, 20 m pixels), urban ~120 cells (25 m pixels),
    suburb ~60 cells (50 m pixels); all UMa. ``n_cells`` / ``extent_m`` size procedural maps
    (the other follows from the ISD); for hex ``n_cells`` picks the ring count and ``extent_m``
    (>= the lattice span) overrides the square size. ``grid_px`` defaults to extent / pixel
    size, at most ``MAX_GRID_PX``. ``extra_cells`` appends that many single-sector cells at
    new random sites with ``init_active=False`` (switched on later by the Topo dataset).
    ``demand`` names the demand preset (``demand.DEMAND_PRESETS``: "realistic" or "smooth").
    """
    if kind not in KINDS:
        raise ValueError(f"unknown scenario kind {kind!r}; expected one of {KINDS}")
    if extra_cells < 0:
        raise ValueError(f"extra_cells must be >= 0, got {extra_cells}")
    if ctx_grid < 1:
        raise ValueError(f"ctx_grid must be >= 1, got {ctx_grid}")
    rngs = {
        s: np.random.default_rng(ss)
        for s, ss in zip(_STREAMS, np.random.SeedSequence(seed).spawn(len(_STREAMS)), strict=True)
    }

    if kind == "hex":
        rings = _hex_rings(n_cells) if n_cells is not None else 2
        layout = hex_layout(rings, 500.0)
        if extent_m is not None:
            span = layout.extent_m - 2 * 500.0  # outermost sites, without the margin
            if extent_m < span:
                raise ValueError(f"hex extent_m={extent_m} is smaller than the lattice span {span}")
            shift = (extent_m - layout.extent_m) / 2.0
            layout = Layout(
                extent_m=float(extent_m),
                site_xy_m=layout.site_xy_m + shift,
                site_height_m=layout.site_height_m,
                cell_site=layout.cell_site,
                cell_azimuth_deg=layout.cell_azimuth_deg,
            )
    else:
        if n_cells is None and extent_m is None:
            n_cells = DEFAULT_N_CELLS[kind]
        layout = procedural_layout(kind, n_cells, extent_m, rngs["layout"])
    extent = layout.extent_m
    if grid_px is None:
        grid_px = int(min(max(round(extent / DEFAULT_PIXEL_M[kind]), 16), MAX_GRID_PX[kind]))
    if grid_px < 2:
        raise ValueError(f"grid_px must be >= 2, got {grid_px}")
    if radio is None:
        isd = float(np.median(nearest_neighbour_m(layout.site_xy_m))) if layout.n_sites > 1 else 1e9
        radio = RadioConfig(environment="UMi" if isd < UMI_BELOW_ISD_M else "UMa")

    landuse = landuse_raster(kind, grid_px, extent, rngs["landuse"], layout.centre)
    buildings = building_raster(kind, landuse, extent, rngs["buildings"])
    population = population_raster(kind, landuse, buildings, extent, rngs["population"])
    poi = poi_grid(kind, landuse, extent, ctx_grid, rngs["poi"])
    events = sample_events(kind, landuse, extent, rngs["events"])

    slot_minutes = SLOT_MINUTES_DEFAULT
    params = _sample_params(kind, layout.cell_azimuth_deg, bounds, rngs["params"])
    capacity = _capacity(layout.n_cells, slot_minutes, rngs["params"])
    active = np.ones(layout.n_cells, dtype=bool)
    if extra_cells:
        rng = rngs["extra"]
        layout, az = _add_extra_cells(layout, extra_cells, kind, rng)
        params = np.concatenate([params, _sample_params(kind, az, bounds, rng)])
        capacity = np.concatenate([capacity, _capacity(extra_cells, slot_minutes, rng)])
        active = np.concatenate([active, np.zeros(extra_cells, dtype=bool)])

    if name is None:
        name = f"{kind}{layout.n_cells}-s{seed}"
    scenario = Scenario(
        name=name,
        kind=kind,
        seed=int(seed),
        extent_m=float(extent),
        site_xy_m=layout.site_xy_m.astype(np.float64),
        site_height_m=layout.site_height_m.astype(np.float64),
        cell_site=layout.cell_site.astype(np.int64),
        init_params=params,
        init_active=active,
        cell_capacity=capacity,
        building_height_m=buildings,
        landuse=landuse,
        population=population,
        poi=poi,
        events=events,
        radio=radio,
        bounds=bounds,
        slot_minutes=slot_minutes,
        demand=demand,
    )
    scenario.validate()
    return scenario


SCENARIOS: dict[str, Callable[[], Scenario]] = {
    "hex57": lambda: make_scenario("hex", 0, name="hex57"),
    "urban": lambda: make_scenario("urban", 1, name="urban"),
    "suburb": lambda: make_scenario("suburb", 2, name="suburb"),
    "urban5000": lambda: make_scenario("urban", 3, n_cells=5000, name="urban5000"),
    "suburb1700": lambda: make_scenario("suburb", 4, n_cells=1700, name="suburb1700"),
}
"""Named scenarios: name -> zero-argument builder. The last two are paper-scale districts."""


def get_scenario(name: str) -> Scenario:
    """Build the registered scenario ``name``; ``ValueError`` listing known names otherwise."""
    try:
        builder = SCENARIOS[name]
    except KeyError:
        raise ValueError(
            f"unknown scenario {name!r}; known scenarios: {', '.join(sorted(SCENARIOS))}"
        ) from None
    return builder()
