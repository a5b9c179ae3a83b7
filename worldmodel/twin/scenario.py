"""Scenario: everything static about one map (sites, cells, rasters, context, bounds).

Geographic frame (shared by every raster and coordinate, see DESIGN.md "Context"):
the map is a square of side ``extent_m`` metres with its origin at the south-west corner,
``x`` pointing east and ``y`` north. A raster of shape ``[G, G]`` over the map has row ``i``
(south to north) and column ``j`` (west to east); pixel ``(i, j)`` has its centre at
``x = (j + 0.5) * extent_m / G`` and ``y = (i + 0.5) * extent_m / G``. Row 0 is the *southern*
edge (renderers flip it for display).

Cell parameters are four physical numbers per cell in the order of ``PARAM_NAMES``.
Whether a cell radiates at all is an explicit boolean ``active`` flag (power stays finite).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

import numpy as np

PARAM_NAMES: tuple[str, ...] = ("power_dbm", "azimuth_deg", "mech_tilt_deg", "elec_tilt_deg")
"""Order of the four per-cell antenna parameters everywhere in the project."""
POWER, AZIMUTH, MECH_TILT, ELEC_TILT = range(4)

SLOT_MINUTES_DEFAULT = 15
SLOTS_PER_DAY = 96
DAYS_PER_WEEK = 7
SLOTS_PER_WEEK = SLOTS_PER_DAY * DAYS_PER_WEEK


class LandUse(enum.IntEnum):
    """Land-use zone of a raster pixel; each zone has its own weekly demand profile."""

    OPEN = 0  # parks, water, farmland: little demand
    RESIDENTIAL = 1
    OFFICE = 2
    COMMERCIAL = 3  # shops, malls, restaurants, leisure
    INDUSTRIAL = 4
    CAMPUS = 5  # universities, schools, hospitals


N_LANDUSE = len(LandUse)

POI_CATEGORIES: tuple[str, ...] = (
    "residential",
    "office",
    "shopping",
    "food",
    "leisure",
    "education",
    "transport",
    "health",
)
"""The K = 8 POI categories of the POI grid ``[S, S, K]``, in channel order."""


@dataclass(frozen=True)
class ParamBounds:
    """Hard bounds of the four antenna parameters (physical units).

    Azimuth is circular: any finite angle is accepted and wrapped into ``[0, 360)``.
    """

    power_dbm: tuple[float, float] = (30.0, 46.0)
    mech_tilt_deg: tuple[float, float] = (0.0, 15.0)
    elec_tilt_deg: tuple[float, float] = (0.0, 12.0)

    def low_high(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-parameter ``(low, high)`` arrays of shape ``[4]``; azimuth is ``[0, 360)``."""
        low = np.array([self.power_dbm[0], 0.0, self.mech_tilt_deg[0], self.elec_tilt_deg[0]])
        high = np.array([self.power_dbm[1], 360.0, self.mech_tilt_deg[1], self.elec_tilt_deg[1]])
        return low, high

    def clip(self, params: np.ndarray) -> np.ndarray:
        """Clip ``[..., 4]`` parameters into the bounds and wrap azimuth into ``[0, 360)``."""
        low, high = self.low_high()
        out = np.clip(params, low, high)
        out[..., AZIMUTH] = np.mod(params[..., AZIMUTH], 360.0)
        return out

    def validate(self, params: np.ndarray, what: str = "params") -> np.ndarray:
        """Return ``params`` as float64 ``[..., 4]`` (azimuth wrapped) or raise ``ValueError``.

        The error names the offending cell, parameter and value.
        """
        arr = np.asarray(params, dtype=np.float64)
        if arr.ndim < 1 or arr.shape[-1] != 4:
            raise ValueError(
                f"{what}: expected shape [..., 4] ({', '.join(PARAM_NAMES)}), got {arr.shape}"
            )
        bad = ~np.isfinite(arr)
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{what}: non-finite value {arr[idx]} for {PARAM_NAMES[idx[-1]]} at index {idx[:-1]}"
            )
        low, high = self.low_high()
        for j in (POWER, MECH_TILT, ELEC_TILT):
            col = arr[..., j]
            out = (col < low[j] - 1e-9) | (col > high[j] + 1e-9)
            if out.any():
                idx = tuple(int(i) for i in np.argwhere(out)[0])
                raise ValueError(
                    f"{what}: {PARAM_NAMES[j]}={col[idx]:g} at index {idx} is outside the "
                    f"scenario bounds [{low[j]:g}, {high[j]:g}]"
                )
        arr = arr.copy()
        arr[..., AZIMUTH] = np.mod(arr[..., AZIMUTH], 360.0)
        return arr


@dataclass(frozen=True)
class HotspotEvent:
    """A bursty demand event (stadium match, mall sale): extra demand in a Gaussian blob.

    ``extra_per_slot`` is the total extra traffic (map traffic unit) the event adds per slot
    at its peak, spread over a Gaussian of standard deviation ``radius_m``; it ramps up and
    down over the first and last quarter of its duration. Events repeat every ``period_slots``
    slots when that is positive (e.g. weekly), else they happen once.
    """

    x_m: float
    y_m: float
    radius_m: float
    start_slot: int
    duration_slots: int
    extra_per_slot: float
    period_slots: int = SLOTS_PER_WEEK


@dataclass(frozen=True)
class RadioConfig:
    """Radio settings shared by all cells of a map."""

    environment: str = "UMa"  # "UMa" (urban macro) or "UMi" (street canyon micro) path loss
    carrier_ghz: float = 2.6
    ue_height_m: float = 1.5
    q_rxlevmin_dbm: float = -120.0  # cell-selection threshold on RSRP
    a3_hysteresis_db: float = 2.0
    a3_offset_db: float = 1.0
    time_to_trigger_slots: int = 1  # A3 condition must hold this many consecutive slots
    n_subcarriers: int = 1200  # 20 MHz LTE: RSRP = power per resource element
    fast_fading_std_db: float = 1.0  # per-slot i.i.d. fluctuation of each link (ping-pong source)
    shadow_corr_m: float = 50.0  # decorrelation distance of shadow fading
    candidates_per_pixel: int = 24  # nearest cells kept as association candidates per pixel


@dataclass
class Scenario:
    """Static description of one map. All arrays are numpy; all coordinates in metres.

    Shapes: ``N`` cells, ``M`` sites, ``G`` demand-raster pixels per side, ``S`` context-grid
    cells per side, ``K = len(POI_CATEGORIES)``.
    """

    name: str
    kind: str  # "hex", "urban" or "suburb"
    seed: int
    extent_m: float  # side of the square map
    site_xy_m: np.ndarray  # [M, 2] float64
    site_height_m: np.ndarray  # [M] float64, antenna height above ground
    cell_site: np.ndarray  # [N] int64, index into sites
    init_params: np.ndarray  # [N, 4] float64, PARAM_NAMES order
    init_active: np.ndarray  # [N] bool
    cell_capacity: np.ndarray  # [N] float64, traffic units per slot
    building_height_m: np.ndarray  # [G, G] float32, 0 where no building
    landuse: np.ndarray  # [G, G] int8, LandUse values
    population: np.ndarray  # [G, G] float32, residents per pixel (demand weight)
    poi: np.ndarray  # [S, S, K] float32, POI counts per context-grid cell
    events: tuple[HotspotEvent, ...] = ()
    radio: RadioConfig = field(default_factory=RadioConfig)
    bounds: ParamBounds = field(default_factory=ParamBounds)
    slot_minutes: int = SLOT_MINUTES_DEFAULT
    traffic_unit: str = "MB"  # traffic per cell per slot is in this unit
    demand_mb_per_person_slot: float = 0.5  # mean demand of one resident per slot
    demand: str = "realistic"  # demand preset (``demand.DEMAND_PRESETS``): realistic / smooth

    # ----------------------------------------------------------------- derived
    @property
    def n_cells(self) -> int:
        return int(self.cell_site.shape[0])

    @property
    def n_sites(self) -> int:
        return int(self.site_xy_m.shape[0])

    @property
    def grid_px(self) -> int:
        return int(self.population.shape[0])

    @property
    def pixel_m(self) -> float:
        return self.extent_m / self.grid_px

    @property
    def ctx_grid(self) -> int:
        return int(self.poi.shape[0])

    @property
    def cell_xy_m(self) -> np.ndarray:
        """[N, 2] cell (antenna) positions: the position of each cell's site."""
        return self.site_xy_m[self.cell_site]

    @property
    def cell_height_m(self) -> np.ndarray:
        return self.site_height_m[self.cell_site]

    def pixel_centres_m(self) -> np.ndarray:
        """[G*G, 2] pixel centres in row-major order (row = south→north)."""
        g = self.grid_px
        c = (np.arange(g) + 0.5) * self.pixel_m
        xx, yy = np.meshgrid(c, c)  # xx varies along columns, yy along rows
        return np.stack([xx.ravel(), yy.ravel()], axis=1)

    def with_bounds(self, bounds: ParamBounds) -> Scenario:
        """A copy with other parameter bounds (e.g. to test beyond the training range)."""
        return replace(self, bounds=bounds)

    def validate(self) -> None:
        """Check shapes, dtypes, finiteness and bounds; raise ``ValueError`` naming the field."""
        n, m, g = self.n_cells, self.n_sites, self.grid_px

        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(f"scenario {self.name!r}: {msg}")

        need(
            self.kind in ("hex", "urban", "suburb"),
            f"kind must be hex/urban/suburb, got {self.kind}",
        )
        from worldmodel.twin.demand import DEMAND_PRESETS

        need(
            self.demand in DEMAND_PRESETS,
            f"demand={self.demand!r} is not a demand preset ({sorted(DEMAND_PRESETS)})",
        )
        need(
            np.isfinite(self.extent_m) and self.extent_m > 0,
            f"extent_m={self.extent_m} must be > 0",
        )
        need(self.site_xy_m.shape == (m, 2), f"site_xy_m shape {self.site_xy_m.shape} != ({m}, 2)")
        need(self.site_height_m.shape == (m,), f"site_height_m shape {self.site_height_m.shape}")
        need(self.cell_site.shape == (n,), f"cell_site shape {self.cell_site.shape} != ({n},)")
        need(n > 0, "has no cells")
        need(
            bool(((self.cell_site >= 0) & (self.cell_site < m)).all()),
            "cell_site refers to a site that does not exist",
        )
        need(self.init_params.shape == (n, 4), f"init_params shape {self.init_params.shape}")
        need(self.init_active.shape == (n,), f"init_active shape {self.init_active.shape}")
        need(self.init_active.dtype == bool, f"init_active dtype {self.init_active.dtype} != bool")
        need(self.cell_capacity.shape == (n,), f"cell_capacity shape {self.cell_capacity.shape}")
        need(bool((self.cell_capacity > 0).all()), "cell_capacity must be > 0")
        for name in ("building_height_m", "landuse", "population"):
            arr = getattr(self, name)
            need(arr.shape == (g, g), f"{name} shape {arr.shape} != ({g}, {g})")
        need(self.population.min() >= 0, "population must be >= 0")
        need(
            self.poi.ndim == 3 and self.poi.shape[2] == len(POI_CATEGORIES),
            f"poi shape {self.poi.shape} != [S, S, {len(POI_CATEGORIES)}]",
        )
        for name in ("site_xy_m", "site_height_m", "building_height_m", "population", "poi"):
            need(bool(np.isfinite(getattr(self, name)).all()), f"{name} has non-finite values")
        need(
            bool(((self.site_xy_m >= 0) & (self.site_xy_m <= self.extent_m)).all()),
            "a site lies outside the map",
        )
        self.bounds.validate(self.init_params, what=f"scenario {self.name!r} init_params")
