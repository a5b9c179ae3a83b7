"""Site and cell layouts: the 3GPP hexagonal grid and irregular procedural districts.

Frame: the map is the square ``[0, extent_m]^2`` with ``x`` east and ``y`` north (see
``scenario.py``). Azimuths are *bearings*: degrees clockwise from north (+y), so 0° points
north (+y) and 90° east (+x); a cell at azimuth ``a`` radiates along
``(sin a, cos a)`` in ``(x, y)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree


@dataclass(frozen=True)
class Layout:
    """Sites and cells of a map (metres, bearings in degrees clockwise from north)."""

    extent_m: float  # side of the square map
    site_xy_m: np.ndarray  # [M, 2] float64
    site_height_m: np.ndarray  # [M] float64, antenna height above ground
    cell_site: np.ndarray  # [N] int64, index into sites
    cell_azimuth_deg: np.ndarray  # [N] float64, bearing in [0, 360)
    centre_xy_m: tuple[float, float] | None = None  # dense district centre; None = map centre

    @property
    def n_sites(self) -> int:
        return int(self.site_xy_m.shape[0])

    @property
    def n_cells(self) -> int:
        return int(self.cell_site.shape[0])

    @property
    def centre(self) -> tuple[float, float]:
        """District centre in metres (the map centre unless set)."""
        if self.centre_xy_m is None:
            return (self.extent_m / 2.0, self.extent_m / 2.0)
        return self.centre_xy_m


def nearest_neighbour_m(xy: np.ndarray) -> np.ndarray:
    """[M] distance (m) from each point of ``xy [M, 2]`` to its nearest other point (inf if M<2)."""
    xy = np.asarray(xy, dtype=np.float64)
    if len(xy) < 2:
        return np.full(len(xy), np.inf)
    d, _ = cKDTree(xy).query(xy, k=2)
    return d[:, 1]


# ---------------------------------------------------------------------------- hexagonal
def hex_layout(
    n_rings: int = 2,
    isd_m: float = 500.0,
    *,
    height_m: float = 25.0,
    margin_isd: float = 1.0,
    sector_azimuths_deg: tuple[float, ...] = (30.0, 150.0, 270.0),
) -> Layout:
    """The 3GPP hexagonal layout (TR 38.901 Table 7.8-1): ``1 + 3 r (r + 1)`` sites.

    Sites sit on a triangular lattice with neighbours at bearings 30°, 90°, 150°, ... and
    distance ``isd_m`` (19 sites for 2 rings); each carries one cell per sector azimuth
    (default 30/150/270°, so every sector boresight points at a neighbouring site as in the
    clover-leaf layout: 57 cells). The lattice is centred in a square map that leaves
    ``margin_isd * isd_m`` around the outer ring.
    """
    if n_rings < 0:
        raise ValueError(f"n_rings must be >= 0, got {n_rings}")
    if not isd_m > 0:
        raise ValueError(f"isd_m must be > 0, got {isd_m}")
    r = np.arange(-n_rings, n_rings + 1)
    q, s = np.meshgrid(r, r, indexing="ij")
    q, s = q.ravel(), s.ravel()
    ring = np.maximum(np.maximum(np.abs(q), np.abs(s)), np.abs(q + s))
    keep = ring <= n_rings
    q, s, ring = q[keep], s[keep], ring[keep]
    # lattice vectors: east (bearing 90°) and bearing 30°
    x = isd_m * (q + 0.5 * s)
    y = isd_m * (np.sqrt(3.0) / 2.0) * s
    order = np.lexsort((np.mod(np.arctan2(y, x), 2 * np.pi), ring))
    extent = 2.0 * (n_rings + margin_isd) * isd_m
    if extent <= 0:
        extent = 2.0 * isd_m
    site_xy = np.stack([x[order], y[order]], axis=1) + extent / 2.0
    m = site_xy.shape[0]
    az = np.asarray(sector_azimuths_deg, dtype=np.float64)
    return Layout(
        extent_m=float(extent),
        site_xy_m=site_xy,
        site_height_m=np.full(m, float(height_m)),
        cell_site=np.repeat(np.arange(m, dtype=np.int64), len(az)),
        cell_azimuth_deg=np.tile(np.mod(az, 360.0), m),
    )


# ---------------------------------------------------------------------------- procedural
# Minimum inter-site distance (m) at the district centre and at the edge of the map.
_MIN_DIST_M = {"urban": (220.0, 370.0), "suburb": (760.0, 1000.0)}
_HEIGHT_M = {"urban": (20.0, 45.0), "suburb": (25.0, 40.0)}
_FILL = 0.6  # sites per r(x)^2 at which placement stops (random sequential packing jams ~0.70)


def _min_dist_fn(kind: str, extent_m: float, centre: np.ndarray, scale: float):
    """r(x): minimum distance (m) to existing sites for a candidate at ``x`` [B, 2]."""
    r_core, r_edge = _MIN_DIST_M[kind]
    half = extent_m / 2.0
    reach = 0.8 if kind == "urban" else 1.2

    def r_of(xy: np.ndarray) -> np.ndarray:
        rho = np.hypot(xy[..., 0] - centre[0], xy[..., 1] - centre[1]) / (reach * half)
        t = np.clip(rho, 0.0, 1.0)
        t = t * t * (3.0 - 2.0 * t)  # smoothstep
        return scale * (r_core + (r_edge - r_core) * t)

    return r_of


def _mean_inv_r2(r_of, extent_m: float, n: int = 64) -> float:
    """Mean of 1 / r(x)^2 over the map (1/m^2)."""
    c = (np.arange(n) + 0.5) * extent_m / n
    xx, yy = np.meshgrid(c, c)
    r = r_of(np.stack([xx, yy], axis=-1))
    return float(np.mean(1.0 / r**2))


def _poisson_disc(
    n_target: int, extent_m: float, r_of, r_min: float, rng: np.random.Generator
) -> np.ndarray:
    """Batched random sequential packing: ``n_target`` points at distance >= r(x) apart.

    Candidates are drawn with density proportional to 1/r(x)^2 so every part of the map fills
    at the same pace; a candidate survives when no accepted point or earlier candidate of its
    batch is nearer than its r. If packing stalls, r is shrunk by 5 % (rarely needed).
    """
    margin = 0.15 * r_min
    lo, hi = margin, extent_m - margin
    pts = np.empty((0, 2))
    shrink, acc_rate, stalls = 1.0, 0.5, 0
    for _ in range(10_000):
        need = n_target - len(pts)
        if need <= 0:
            break
        b = int(np.clip(1.5 * need / max(acc_rate, 0.005), 256, 200_000))
        cand = rng.uniform(lo, hi, size=(b, 2))
        rc = shrink * r_of(cand)
        keep = rng.random(b) < (shrink * r_min / rc) ** 2
        cand, rc = cand[keep], rc[keep]
        r_max = float(rc.max()) if len(rc) else 0.0
        if len(pts) and len(cand):
            d, _ = cKDTree(pts).query(cand, k=1, distance_upper_bound=r_max)
            ok = d >= rc
            cand, rc = cand[ok], rc[ok]
        if len(cand) > 1:
            pairs = cKDTree(cand).query_pairs(r_max, output_type="ndarray")
            if len(pairs):
                i, j = pairs[:, 0], pairs[:, 1]
                d = np.hypot(*(cand[i] - cand[j]).T)
                bad = d < np.maximum(rc[i], rc[j])
                drop = np.zeros(len(cand), dtype=bool)
                drop[np.maximum(i, j)[bad]] = True
                cand = cand[~drop]
        cand = cand[:need]
        pts = np.concatenate([pts, cand])
        acc_rate = 0.7 * acc_rate + 0.3 * (len(cand) / b)
        stalls = stalls + 1 if len(cand) < max(1.0, 0.002 * b) else 0
        if stalls >= 3:
            shrink *= 0.95
            stalls = 0
    return pts


def _sector_counts(n_sites: int, n_cells: int, rng: np.random.Generator) -> np.ndarray:
    """Sectors per site: 3 each, with random sites adjusted to 2 or 4 to hit ``n_cells``."""
    counts = np.full(n_sites, 3, dtype=np.int64)
    diff = n_cells - 3 * n_sites
    if diff:
        idx = rng.permutation(n_sites)
        step = 1 if diff > 0 else -1
        for k in range(abs(diff)):
            counts[idx[k % n_sites]] += step
    if (counts < 1).any():
        raise ValueError(f"cannot spread {n_cells} cells over {n_sites} sites")
    return counts


def procedural_layout(
    kind: str,
    n_cells: int | None = None,
    extent_m: float | None = None,
    rng: np.random.Generator | None = None,
) -> Layout:
    """Irregular district layout by Poisson-disc (random sequential) packing of sites.

    Minimum inter-site distance varies in space: ``urban`` 240 m at the district centre to
    420 m at the edge (median nearest-neighbour site distance ~300-450 m), ``suburb`` 760 to
    1,000 m (~850-1,100 m). Give ``n_cells`` (the extent follows from the ISD), ``extent_m``
    (three cells per packed site), or both (the ISD is scaled to fit). Each site gets 3 sectors
    (a few 2 or 4 so that exactly ``n_cells`` cells exist) at ``360/k`` spacing plus a per-site
    rotation and ±15° per-sector jitter; heights urban 20-45 m (taller near the centre), suburb
    25-40 m. The district centre is the map centre shifted by up to 10 % of the extent.
    """
    if kind not in _MIN_DIST_M:
        raise ValueError(f"procedural kind must be 'urban' or 'suburb', got {kind!r}")
    if n_cells is None and extent_m is None:
        raise ValueError("procedural_layout needs n_cells or extent_m")
    if n_cells is not None and n_cells < 1:
        raise ValueError(f"n_cells must be >= 1, got {n_cells}")
    if extent_m is not None and not extent_m > 0:
        raise ValueError(f"extent_m must be > 0, got {extent_m}")
    rng = rng if rng is not None else np.random.default_rng(0)
    off = rng.uniform(-0.1, 0.1, size=2)
    r_core, r_edge = _MIN_DIST_M[kind]

    def centre_for(ext: float) -> np.ndarray:
        return ext * (0.5 + off)

    if extent_m is None:
        n_sites = -(-int(n_cells) // 3)
        # extent^2 * FILL * mean(1/r^2) = n_sites; mean(1/r^2) is scale free in the extent
        unit = _mean_inv_r2(_min_dist_fn(kind, 1.0, centre_for(1.0), 1.0 / 1000.0), 1.0)
        extent = float(np.sqrt(n_sites / (_FILL * unit)) * 1000.0)
        extent = max(extent, 2.0 * r_edge)
        scale = 1.0
    else:
        extent = float(extent_m)
        inv = _mean_inv_r2(_min_dist_fn(kind, extent, centre_for(extent), 1.0), extent)
        capacity = _FILL * extent**2 * inv
        if n_cells is None:
            n_sites = max(1, int(round(capacity)))
            n_cells = 3 * n_sites
            scale = 1.0
        else:
            n_sites = -(-int(n_cells) // 3)
            scale = float(np.sqrt(capacity / n_sites))
    centre = centre_for(extent)
    r_of = _min_dist_fn(kind, extent, centre, scale)
    site_xy = _poisson_disc(n_sites, extent, r_of, scale * r_core, rng)
    m = len(site_xy)
    counts = _sector_counts(m, int(n_cells), rng)
    cell_site = np.repeat(np.arange(m, dtype=np.int64), counts)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sector = np.arange(len(cell_site)) - np.repeat(first, counts)
    rotation = rng.uniform(0.0, 360.0, size=m)
    jitter = rng.uniform(-15.0, 15.0, size=len(cell_site))
    az = np.mod(rotation[cell_site] + sector * 360.0 / counts[cell_site] + jitter, 360.0)
    h_lo, h_hi = _HEIGHT_M[kind]
    u = rng.random(m)
    if kind == "urban":
        prox = 1.0 - np.clip(np.hypot(*(site_xy - centre).T) / (0.8 * extent / 2.0), 0.0, 1.0)
        u = np.clip(0.6 * u + 0.4 * prox + 0.1 * rng.standard_normal(m), 0.0, 1.0)
    heights = h_lo + (h_hi - h_lo) * u
    return Layout(
        extent_m=extent,
        site_xy_m=site_xy,
        site_height_m=heights,
        cell_site=cell_site,
        cell_azimuth_deg=az,
        centre_xy_m=(float(centre[0]), float(centre[1])),
    )
