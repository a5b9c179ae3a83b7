"""Traffic demand density rho_t(r): traffic per raster pixel per 15-minute slot.

This is the ``rho_t(r)`` of MobiWM Eq. 2: the traffic (``scenario.traffic_unit``, MB) that the
users in pixel ``r`` want to move during slot ``t``; the network model assigns it to cells.

Model, per pixel ``p`` (row-major over the ``[G, G]`` raster) and slot ``t``::

    rho_t(p) = d * w(p) * [(1 - b) shape_z(p)(t mod 672) + b] * drift_z(p)(t)
                 * noise_k(p)(t) * day_k(p)(t) * sessions_k(p)(t) + events_t(p)

The knobs come from a named preset (``DEMAND_PRESETS``, picked by ``Scenario.demand``):
``"realistic"`` (the default, calibrated to real cells by ``twin.realism``) or ``"smooth"``
(0.2.0's demand: no heterogeneity, background, day levels or sessions). ``k(p)`` is the noise
block of pixel ``p``.

* ``d = scenario.demand_mb_per_person_slot``: mean demand of one person per slot (MB).
* ``w(p)``: demand weight (persons). People move between home and work, so residents alone do
  not say where demand is at 11 am. ``w = residents + visitors``: a zone ``z`` among OFFICE,
  COMMERCIAL, CAMPUS, INDUSTRIAL attracts ``share_z * (total residents)`` visitors spread
  uniformly over its pixels; an OPEN pixel attracts ``open_weight`` times the mean residents of
  a populated non-OPEN pixel (park visitors, passers-by). The weights are then scaled so that
  they sum to the total residents: the map's weekly mean demand (before noise, drift and
  events) is ``d * total residents``. Residents and visitors of a pixel follow its zone's
  weekly profile, which moves demand in time (offices are busy on weekday mornings and empty
  at night, homes peak in the evening).
* ``shape_z``: weekly profile (mean 1) of zone ``z`` from ``profiles.ProfileTable``; slot 0
  is Monday 00:00.
* ``drift_z(t)``: per-zone week-to-week level, log-normal (log-std ``weekly_drift_std``, mean
  1) drawn at the start of every week and linearly interpolated within the week.
* ``noise_k(t)``: multiplicative log-normal noise ``exp(x - s^2/2)`` (mean 1), constant over
  blocks of ``noise_block_px`` x ``noise_block_px`` pixels; ``x`` is a stationary AR(1) in
  time with coefficient ``noise_ar`` and standard deviation ``s = noise_std``.
* ``w(p)`` is further multiplied by a static weight per ``hetero_block_px`` block,
  ``exp(hetero_std z + hetero_tail e)`` with ``z`` normal and ``e`` exponential (a log-normal
  body and a Pareto tail), rescaled so the map's total weight is unchanged.
* ``b = background_share``: always-on demand, flat in time.
* ``day_k(t)``: a log-normal level (log-std ``day_std``, mean 1) per block and day.
* ``sessions_k(t)``: demand arrives as sessions. With ``m`` the block's expected demand in the
  slot (everything above) and ``v`` a session's mean volume (the map's mean demand per cell
  and slot over ``sessions_per_cell``), ``N ~ Poisson(m / v)`` sessions of gamma volume (CV
  ``session_cv``) arrive; the factor is their total over ``m`` (mean 1; 0 when none arrive).
* ``events_t``: ``scenario.events`` hot spots (Gaussian blob integrated over pixels and
  normalised over the map; ``extra_per_slot`` MB in total at peak; trapezoid in time).

Random access: everything random is drawn from ``np.random.default_rng`` seeded by
``(scenario.seed, config.noise_seed, stream, week)`` (week 0 for the static weights). The AR(1) of week ``w`` starts from the
state reached by running the chain through week ``w - 1`` from that week's own stationary
initial draw; since ``noise_ar**672 < 2e-3`` for ``noise_ar <= 0.99`` (``1e-65`` at the
default 0.8) the chain is, to that precision, one continuous AR(1) across week boundaries, yet each week is a pure function of
``(seeds, w)``. ``density(slot)`` is therefore identical whatever order slots are asked in;
the last ``cache_weeks`` weeks of noise are cached (a new week costs ~25-50 ms at 150 x 150
pixels; a cached slot ~0.3 ms).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from worldmodel.twin.profiles import ProfileTable, load_default_profiles
from worldmodel.twin.scenario import (
    DAYS_PER_WEEK,
    N_LANDUSE,
    SLOT_MINUTES_DEFAULT,
    SLOTS_PER_DAY,
    SLOTS_PER_WEEK,
    HotspotEvent,
    LandUse,
    Scenario,
)

_STREAM_NOISE = 1
_STREAM_DRIFT = 2
_STREAM_HETERO = 3
_STREAM_DAY = 4
_STREAM_SESSION = 5
_U64 = (1 << 64) - 1


def _erf(x: np.ndarray) -> np.ndarray:
    """Elementwise error function (small arrays; avoids importing scipy)."""
    return np.array([math.erf(float(v)) for v in np.ravel(x)]).reshape(np.shape(x))


@dataclass(frozen=True)
class DemandConfig:
    """Knobs of the demand model (dimensionless unless stated)."""

    noise_std: float = 0.15
    """Std of the log of the multiplicative noise (0.15 ≈ ±15 %); 0 disables noise."""
    noise_block_px: int = 8
    """Noise is constant over square blocks of this many pixels per side."""
    noise_ar: float = 0.8
    """AR(1) coefficient of the log-noise from one slot to the next, in [0, 0.99]."""
    weekly_drift_std: float = 0.05
    """Log-std of the per-zone week-to-week level (0 disables drift)."""
    open_weight: float = 0.2
    """OPEN pixel visitors, relative to the mean residents of a populated non-OPEN pixel."""
    office_share: float = 0.35
    """Visitors of all OFFICE pixels together, as a fraction of the total residents."""
    commercial_share: float = 0.25
    """Visitors of all COMMERCIAL pixels together, fraction of the total residents."""
    campus_share: float = 0.10
    """Visitors of all CAMPUS pixels together, fraction of the total residents."""
    industrial_share: float = 0.10
    """Visitors of all INDUSTRIAL pixels together, fraction of the total residents."""
    hetero_std: float = 0.0
    """Log-std of a static, mean-1 demand weight per ``hetero_block_px`` block (heavy users
    and busy spots: a heavy-tailed spread of cell means); 0 disables it."""
    hetero_tail: float = 0.0
    """Scale of an exponential term added to the log-weight of each block: a Pareto upper tail
    of index ``1 / hetero_tail`` (a few very busy places, as in real networks); 0 = none."""
    hetero_block_px: int = 16
    """Static heterogeneity is constant over square blocks of this many pixels per side."""
    background_share: float = 0.0
    """Share of each pixel's mean demand that is flat in time (always-on apps, machines)."""
    day_std: float = 0.0
    """Log-std of a per-block, per-day level (day-specific events and habits); 0 disables."""
    sessions_per_cell: float = 0.0
    """Sessions: demand arrives as a compound Poisson-gamma process per noise block and slot,
    sized so that a cell of average demand sees this many sessions per slot (networks are
    dimensioned for their load; quiet places get bursts and idle slots); 0 = continuous
    demand (no sessions)."""
    session_cv: float = 1.0
    """Coefficient of variation of one session's volume (gamma distributed, mean 1)."""
    noise_seed: int = 0
    """Mixed with ``scenario.seed``: other demand realisations of the same map."""
    session_seed: int = 0
    """Other draws of the sessions alone (same places, noise and day levels): the demand a
    forecaster cannot know in advance; 0 = the map's own draws."""
    cache_weeks: int = 4
    """How many weeks of noise to keep cached (LRU)."""

    def __post_init__(self) -> None:
        checks = {
            "noise_std": self.noise_std >= 0,
            "noise_block_px": self.noise_block_px >= 1,
            "noise_ar": 0.0 <= self.noise_ar <= 0.99,
            "weekly_drift_std": self.weekly_drift_std >= 0,
            "open_weight": self.open_weight >= 0,
            "office_share": self.office_share >= 0,
            "commercial_share": self.commercial_share >= 0,
            "campus_share": self.campus_share >= 0,
            "industrial_share": self.industrial_share >= 0,
            "cache_weeks": self.cache_weeks >= 1,
            "hetero_std": self.hetero_std >= 0,
            "hetero_block_px": self.hetero_block_px >= 1,
            "hetero_tail": self.hetero_tail >= 0,
            "background_share": 0.0 <= self.background_share <= 1.0,
            "day_std": self.day_std >= 0,
            "sessions_per_cell": self.sessions_per_cell >= 0,
            "session_cv": self.session_cv > 0,
        }
        for name, ok in checks.items():
            value = getattr(self, name)
            if not ok or not math.isfinite(value):
                raise ValueError(f"DemandConfig.{name}={value!r} is out of range")

    def visitor_shares(self) -> dict[LandUse, float]:
        """Visitor share of each workplace zone (fraction of the total residents)."""
        return {
            LandUse.OFFICE: self.office_share,
            LandUse.COMMERCIAL: self.commercial_share,
            LandUse.CAMPUS: self.campus_share,
            LandUse.INDUSTRIAL: self.industrial_share,
        }


DEMAND_PRESETS: dict[str, DemandConfig] = {
    # Calibrated to the real traces (``python -m worldmodel.twin.realism``, with the
    # generator's night sleep): heavy-tailed demand per 24-pixel block (log-normal body,
    # Pareto tail), sessions (bursts; idle slots of quiet places), day-specific levels,
    # cell-scale AR(1) noise and an always-on background share.
    "realistic": DemandConfig(
        noise_std=0.4,
        noise_block_px=16,
        noise_ar=0.5,
        hetero_std=1.0,
        hetero_tail=1.1,
        hetero_block_px=24,
        background_share=0.08,
        day_std=0.08,
        sessions_per_cell=14.0,
        session_cv=3.0,
    ),
    # The demand of 0.2.0 and before: smooth, 3-4x more predictable than real cells.
    "smooth": DemandConfig(),
}
"""Named demand models; ``Scenario.demand`` picks one (``DEFAULT_DEMAND`` unless stated)."""
DEFAULT_DEMAND = "realistic"


def demand_config(name: str) -> DemandConfig:
    """The ``DemandConfig`` of preset ``name``; a clear error for an unknown name."""
    try:
        return DEMAND_PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown demand preset {name!r}; choose one of {sorted(DEMAND_PRESETS)}"
        ) from None


def demand_weights(population: np.ndarray, landuse: np.ndarray, config: DemandConfig) -> np.ndarray:
    """Per-pixel demand weight (persons, float64, same shape as ``population``).

    Residents plus zone visitors (see module docstring), scaled to sum to the residents.
    """
    pop = np.asarray(population, dtype=np.float64)
    lu = np.asarray(landuse)
    total = float(pop.sum())
    w = pop.copy()
    if total <= 0:
        return w
    for zone, share in config.visitor_shares().items():
        mask = lu == int(zone)
        n = int(mask.sum())
        if n and share > 0:
            w[mask] += share * total / n
    open_mask = lu == int(LandUse.OPEN)
    populated = (~open_mask) & (pop > 0)
    if open_mask.any() and populated.any() and config.open_weight > 0:
        w[open_mask] += config.open_weight * float(pop[populated].mean())
    return w * (total / float(w.sum()))


def _blocks(grid: int, block_px: int) -> tuple[int, np.ndarray]:
    """(number of blocks, ``[G*G]`` block index of every pixel) for square ``block_px`` blocks."""
    nb = -(-grid // block_px)
    idx = np.arange(grid) // block_px
    return nb * nb, (idx[:, None] * nb + idx[None, :]).ravel().astype(np.intp)


def _event_blob(ev: HotspotEvent, grid: int, extent_m: float) -> np.ndarray:
    """``[G*G]`` float32 Gaussian mass per pixel (erf-integrated), normalised to sum 1 on the map."""
    edges = np.linspace(0.0, extent_m, grid + 1)
    s = math.sqrt(2.0) * ev.radius_m
    mx = np.diff(0.5 * _erf((edges - ev.x_m) / s))  # along columns (x, east)
    my = np.diff(0.5 * _erf((edges - ev.y_m) / s))  # along rows (y, north)
    blob = np.outer(my, mx).ravel()
    tot = float(blob.sum())
    if tot < 1e-12:  # the blob lies entirely off the map
        return np.zeros(grid * grid, dtype=np.float32)
    return (blob / tot).astype(np.float32)


def event_envelope(ev: HotspotEvent, slots: np.ndarray) -> np.ndarray:
    """``[len(slots)]`` float64 in [0, 1] (summed over overlapping repeats): event intensity.

    Trapezoid over ``duration_slots`` evaluated at slot centres: linear ramp up over the first
    quarter, flat, linear ramp down over the last quarter. Occurrences start at
    ``start_slot + k * period_slots`` for ``k >= 0`` (only ``k = 0`` if ``period_slots <= 0``).
    """
    u = np.asarray(slots, dtype=np.int64) - int(ev.start_slot)
    dur = int(ev.duration_slots)
    q = dur / 4.0

    def ramp(v: np.ndarray) -> np.ndarray:
        r = np.minimum((v + 0.5) / q, (dur - v - 0.5) / q)
        return np.where((v >= 0) & (v < dur), np.clip(r, 0.0, 1.0), 0.0)

    if ev.period_slots <= 0:
        return ramp(u)
    per = int(ev.period_slots)
    out = np.zeros(u.shape, dtype=np.float64)
    k_last = np.floor_divide(u, per)
    for j in range(-(-dur // per)):  # occurrences that may still be running
        k = k_last - j
        out += np.where(k >= 0, ramp(u - k * per), 0.0)
    return out


class DemandModel:
    """Traffic demand density of one scenario; ``density(slot)`` is ``[G*G]`` MB per pixel.

    ``config`` defaults to the scenario's named preset (``DEMAND_PRESETS[scenario.demand]``).
    """

    def __init__(
        self,
        scenario: Scenario,
        profiles: ProfileTable | None = None,
        config: DemandConfig | None = None,
    ) -> None:
        self.scenario = scenario
        self.config = config = config if config is not None else demand_config(scenario.demand)
        self.profiles = profiles = profiles if profiles is not None else load_default_profiles()
        profiles.validate("DemandModel profiles")
        if scenario.slot_minutes != SLOT_MINUTES_DEFAULT:
            raise ValueError(
                f"scenario {scenario.name!r}: slot_minutes={scenario.slot_minutes}, the demand "
                f"profiles are at {SLOT_MINUTES_DEFAULT}-minute slots"
            )
        g = scenario.grid_px
        lu = np.asarray(scenario.landuse)
        pop = np.asarray(scenario.population, dtype=np.float64)
        if lu.shape != (g, g) or pop.shape != (g, g):
            raise ValueError(
                f"scenario {scenario.name!r}: landuse {lu.shape} / population "
                f"{pop.shape} must both be ({g}, {g})"
            )
        if not np.isfinite(pop).all() or (pop < 0).any():
            raise ValueError(f"scenario {scenario.name!r}: population must be finite and >= 0")
        if ((lu < 0) | (lu >= N_LANDUSE)).any():
            raise ValueError(
                f"scenario {scenario.name!r}: landuse values outside 0..{N_LANDUSE - 1}"
            )
        d = float(scenario.demand_mb_per_person_slot)
        if not (math.isfinite(d) and d >= 0):
            raise ValueError(f"scenario {scenario.name!r}: demand_mb_per_person_slot={d}")

        self.grid = g
        self.n_pixels = g * g
        seed = int(scenario.seed) & _U64
        self._entropy = (seed, int(config.noise_seed) & _U64)
        w = demand_weights(pop, lu, config).ravel()  # persons, float64
        if (config.hetero_std > 0 or config.hetero_tail > 0) and w.sum() > 0:
            n_h, hetero_px = _blocks(g, config.hetero_block_px)
            rng = self._rng(_STREAM_HETERO, 0)
            log_w = config.hetero_std * rng.standard_normal(n_h)
            log_w += config.hetero_tail * rng.standard_exponential(n_h)
            hw = w * np.exp(log_w)[hetero_px]
            w = hw * (w.sum() / hw.sum())  # the map's total weight is kept
        self.weights = w
        self._base = (self.weights * d).astype(np.float32)  # MB per slot at profile value 1
        self._zone_px = lu.ravel().astype(np.intp)
        self._zone_shapes = profiles.zone_shapes().astype(np.float64)  # [Z, 672]
        self._n_blocks, self._block_px = _blocks(g, config.noise_block_px)
        bz = np.bincount(
            self._block_px * N_LANDUSE + self._zone_px,
            weights=self.weights * d,
            minlength=self._n_blocks * N_LANDUSE,
        )
        self._block_zone_base = bz.reshape(self._n_blocks, N_LANDUSE)  # MB per slot, float64

        self._events: list[tuple[HotspotEvent, np.ndarray]] = []
        for i, ev in enumerate(scenario.events):
            ok = (
                all(math.isfinite(float(v)) for v in (ev.x_m, ev.y_m, ev.radius_m))
                and math.isfinite(float(ev.extra_per_slot))
                and ev.radius_m > 0
                and ev.duration_slots >= 1
                and ev.extra_per_slot >= 0
                and ev.start_slot >= 0
            )
            if not ok:
                raise ValueError(f"scenario {scenario.name!r}: event {i} is invalid: {ev}")
            blob = _event_blob(ev, g, scenario.extent_m) * np.float32(ev.extra_per_slot)
            self._events.append((ev, blob))

        self._cache: OrderedDict[int, tuple[np.ndarray | None, np.ndarray]] = OrderedDict()

    # ------------------------------------------------------------------ random parts
    def _rng(self, stream: int, week: int, *extra: int) -> np.random.Generator:
        return np.random.default_rng([*self._entropy, stream, week, *extra])

    def _ar_chain(self, week: int, x_prev: np.ndarray | None) -> np.ndarray:
        """``[672, B]`` AR(1) log-noise of ``week``, continuing from ``x_prev`` (else stationary)."""
        c = self.config
        rng = self._rng(_STREAM_NOISE, week)
        x0 = rng.standard_normal(self._n_blocks) * c.noise_std
        eps = rng.standard_normal((SLOTS_PER_WEEK, self._n_blocks))
        x = x0 if x_prev is None else x_prev
        a = c.noise_ar
        eps *= c.noise_std * math.sqrt(1.0 - a * a)
        for t in range(SLOTS_PER_WEEK):  # loop over time only, vectorised over blocks
            x = a * x + eps[t]
            eps[t] = x
        return eps

    def _drift_anchor(self, week: int) -> np.ndarray:
        s = self.config.weekly_drift_std
        z = self._rng(_STREAM_DRIFT, week).standard_normal(N_LANDUSE)
        return np.exp(s * z - 0.5 * s * s)

    def _zone_values(self, within: np.ndarray, drift: np.ndarray) -> np.ndarray:
        """``[len(within), Z]`` float64: each zone's demand factor at slots of the week."""
        b = self.config.background_share
        f = (within / SLOTS_PER_WEEK)[:, None]
        shape = self._zone_shapes[:, within].T
        if b > 0:
            shape = (1.0 - b) * shape + b
        return shape * ((1.0 - f) * drift[0] + f * drift[1])

    def _sessions(self, week: int, mean_mb: np.ndarray) -> np.ndarray:
        """``[672, B]`` factor (mean 1) turning block demand ``mean_mb`` into sessions.

        Compound Poisson-gamma: ``N ~ Poisson(mean_mb / v)`` sessions of gamma volume (mean
        ``v`` = the map's mean demand per active cell and slot / ``sessions_per_cell``, CV
        ``session_cv``); their sum is exactly ``Gamma(N k, v / k)`` with ``k = session_cv**-2``.
        Blocks without demand keep factor 1.
        """
        c = self.config
        n_cells = max(1, int(np.count_nonzero(self.scenario.init_active)))
        v = float(self._base.sum(dtype=np.float64)) / n_cells / c.sessions_per_cell
        # session_seed 0 keeps the key without it: the map's own draws
        rng = self._rng(_STREAM_SESSION, week, *([c.session_seed] if c.session_seed else []))
        lam = mean_mb / v
        n = rng.poisson(lam)
        k = 1.0 / (c.session_cv * c.session_cv)
        total = rng.gamma(n * k, 1.0 / k)  # in sessions of mean volume 1
        return np.where(lam > 0, total / np.where(lam > 0, lam, 1.0), 1.0)

    def _week(self, week: int) -> tuple[np.ndarray | None, np.ndarray]:
        """(block factor ``[672, B]`` float32 or None, drift anchors ``[2, Z]``), LRU-cached.

        The block factor multiplies the AR(1) noise, the per-day levels and the sessions.
        """
        hit = self._cache.get(week)
        if hit is not None:
            self._cache.move_to_end(week)
            return hit
        c = self.config
        factor = None
        if c.noise_std > 0:
            x_prev = None
            if week > 0:
                x_prev = self._ar_chain(week - 1, None)[-1]
            x = self._ar_chain(week, x_prev)
            factor = np.exp(x - 0.5 * c.noise_std**2)
        if c.day_std > 0:
            z = self._rng(_STREAM_DAY, week).standard_normal((DAYS_PER_WEEK, self._n_blocks))
            day = np.exp(c.day_std * z - 0.5 * c.day_std**2)[
                np.arange(SLOTS_PER_WEEK) // SLOTS_PER_DAY
            ]
            factor = day if factor is None else factor * day
        if c.weekly_drift_std > 0:
            drift = np.stack([self._drift_anchor(week), self._drift_anchor(week + 1)])
        else:
            drift = np.ones((2, N_LANDUSE))
        if c.sessions_per_cell > 0 and self._base.sum() > 0:
            mean_mb = self._zone_values(np.arange(SLOTS_PER_WEEK), drift) @ self._block_zone_base.T
            if factor is not None:
                mean_mb = mean_mb * factor
            sess = self._sessions(week, mean_mb)
            factor = sess if factor is None else factor * sess
        entry = (None if factor is None else factor.astype(np.float32), drift)
        self._cache[week] = entry
        while len(self._cache) > c.cache_weeks:
            self._cache.popitem(last=False)
        return entry

    # ----------------------------------------------------------------------- public
    @staticmethod
    def _check_slots(slots: np.ndarray) -> np.ndarray:
        arr = np.asarray(slots)
        if arr.ndim != 1:
            raise ValueError(f"slots must be a 1-D array of slot indices, got shape {arr.shape}")
        if arr.size and (arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"slots must be integers, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
        if arr.size and arr.min() < 0:
            raise ValueError(f"slots must be >= 0, got {int(arr.min())}")
        return arr

    def density_many(self, slots: np.ndarray) -> np.ndarray:
        """``[len(slots), G*G]`` float32 demand (MB per pixel per slot) for integer ``slots``."""
        s = self._check_slots(slots)
        out = np.empty((s.size, self.n_pixels), dtype=np.float32)
        if s.size == 0:
            return out
        weeks, within = np.divmod(s, SLOTS_PER_WEEK)
        for w in np.unique(weeks):
            idx = np.flatnonzero(weeks == w)
            noise, drift = self._week(int(w))
            t = within[idx]
            rows = self._zone_values(t, drift).astype(np.float32)[:, self._zone_px]
            rows *= self._base
            if noise is not None:
                rows *= noise[t][:, self._block_px]
            out[idx] = rows
        for ev, blob in self._events:
            env = event_envelope(ev, s)
            on = np.flatnonzero(env > 0)
            if on.size:
                out[on] += env[on, None].astype(np.float32) * blob
        return out

    def density(self, slot: int) -> np.ndarray:
        """``[G*G]`` float32 >= 0: demand of each pixel (row-major) in ``slot``, in MB."""
        if isinstance(slot, bool) or not isinstance(slot, int | np.integer):
            raise ValueError(f"slot must be a non-negative int, got {slot!r}")
        if slot < 0:
            raise ValueError(f"slot must be >= 0, got {slot}")
        return self.density_many(np.array([slot], dtype=np.int64))[0]

    def total(self, slot: int) -> float:
        """Total demand of the map in ``slot`` (MB)."""
        return float(self.density(slot).sum(dtype=np.float64))
