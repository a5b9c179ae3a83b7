"""TR 38.901 §7.4 path loss (UMa, UMi street canyon), LoS probability and shadow fading.

Distances in metres, heights in metres, carrier frequency in GHz, losses in dB.
LoS probability follows TR 38.901 Table 7.4.2-1 and is lowered by the local building
density of the user's pixel (a raster-driven clutter factor); the LoS state of each
(site, pixel) link is then drawn once per scenario with a counter-based hash so that it
is reproducible whatever the order of computation. Shadow fading is log-normal,
spatially correlated (Gaussian-filtered fields with the environment's decorrelation
distance), partly shared between sites (correlation 0.5, as TR 36.942 assumes), and fixed
per scenario.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter, uniform_filter

C_M_PER_S = 299_792_458.0
_SF_STD_DB = {("UMa", True): 4.0, ("UMa", False): 6.0, ("UMi", True): 4.0, ("UMi", False): 7.82}


def _check_env(environment: str) -> None:
    if environment not in ("UMa", "UMi"):
        raise ValueError(f"environment must be 'UMa' or 'UMi', got {environment!r}")


def breakpoint_distance_m(h_bs_m, h_ut_m, fc_ghz: float) -> np.ndarray:
    """Effective breakpoint distance d'_BP with an effective environment height of 1 m."""
    return 4.0 * (np.asarray(h_bs_m) - 1.0) * (h_ut_m - 1.0) * fc_ghz * 1e9 / C_M_PER_S


def pathloss_db(
    d2d_m: np.ndarray,
    h_bs_m: np.ndarray,
    h_ut_m: float,
    fc_ghz: float,
    environment: str,
    los: np.ndarray,
) -> np.ndarray:
    """Path loss (dB) per TR 38.901 Table 7.4.1-1; ``los`` selects the LoS or NLoS formula.

    ``d2d_m`` is clamped to at least 10 m (the model's validity range).
    """
    _check_env(environment)
    d2d = np.maximum(d2d_m, 10.0)
    d3d = np.sqrt(d2d**2 + (h_bs_m - h_ut_m) ** 2)
    d_bp = breakpoint_distance_m(h_bs_m, h_ut_m, fc_ghz)
    log_fc = np.log10(fc_ghz)
    log_d3d = np.log10(d3d)
    if environment == "UMa":
        pl1 = 28.0 + 22.0 * log_d3d + 20.0 * log_fc
        pl2 = (
            28.0 + 40.0 * log_d3d + 20.0 * log_fc - 9.0 * np.log10(d_bp**2 + (h_bs_m - h_ut_m) ** 2)
        )
        nlos_prime = 13.54 + 39.08 * log_d3d + 20.0 * log_fc - 0.6 * (h_ut_m - 1.5)
    else:
        pl1 = 32.4 + 21.0 * log_d3d + 20.0 * log_fc
        pl2 = (
            32.4 + 40.0 * log_d3d + 20.0 * log_fc - 9.5 * np.log10(d_bp**2 + (h_bs_m - h_ut_m) ** 2)
        )
        nlos_prime = 35.3 * log_d3d + 22.4 + 21.3 * log_fc - 0.3 * (h_ut_m - 1.5)
    pl_los = np.where(d2d <= d_bp, pl1, pl2)
    return np.where(los, pl_los, np.maximum(pl_los, nlos_prime))


def los_probability(d2d_m: np.ndarray, environment: str, clutter: np.ndarray | float = 0.0):
    """TR 38.901 LoS probability (h_UT ≤ 13 m), scaled by ``1 - clutter`` (clutter ∈ [0, 1])."""
    _check_env(environment)
    d = np.maximum(d2d_m, 1.0)
    d1 = 63.0 if environment == "UMa" else 36.0
    p = np.where(d <= 18.0, 1.0, 18.0 / d + np.exp(-d / d1) * (1.0 - 18.0 / d))
    return p * (1.0 - np.clip(clutter, 0.0, 1.0))


def shadow_std_db(environment: str, los: np.ndarray) -> np.ndarray:
    """Shadow-fading standard deviation (dB) for LoS / NLoS links."""
    _check_env(environment)
    return np.where(los, _SF_STD_DB[(environment, True)], _SF_STD_DB[(environment, False)])


def clutter_from_buildings(building_height_m: np.ndarray, radius_px: int = 2) -> np.ndarray:
    """Local built-up fraction in a (2r+1)² window, in [0, 1] ([G, G] → [G, G])."""
    built = (building_height_m > 0).astype(np.float32)
    return uniform_filter(built, size=2 * radius_px + 1, mode="nearest")


def hash_uniform(seed: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Counter-based uniform numbers in [0, 1) from integer keys (splitmix64 finaliser).

    Reproducible per (seed, a, b) regardless of evaluation order or array layout.
    """
    with np.errstate(over="ignore"):
        z = (
            np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)
            ^ np.asarray(a, dtype=np.uint64) * np.uint64(0xBF58476D1CE4E5B9)
            ^ np.asarray(b, dtype=np.uint64) * np.uint64(0x94D049BB133111EB)
        )
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


class ShadowField:
    """Spatially correlated unit-variance shadowing fields, fixed per scenario seed.

    Site ``s`` sees ``sqrt(rho)·F_common + sqrt(1-rho)·F_{s mod n_fields}`` shifted by a
    per-site random offset (toroidally), so every site gets its own correlated field
    while only ``n_fields + 1`` rasters are generated.
    """

    def __init__(
        self,
        grid_px: int,
        pixel_m: float,
        corr_m: float,
        seed: int,
        n_fields: int = 8,
        site_corr: float = 0.5,
    ) -> None:
        rng = np.random.default_rng([seed, 0x5AD0])
        sigma_px = max(corr_m / pixel_m, 0.3)
        fields = rng.standard_normal((n_fields + 1, grid_px, grid_px)).astype(np.float32)
        for f in fields:
            f[:] = gaussian_filter(f, sigma=sigma_px, mode="wrap")
            f /= f.std() + 1e-12
        self.fields = fields
        self.grid_px = grid_px
        self.seed = seed
        self.rho = site_corr

    def sample(self, site_uid: np.ndarray, pixel_idx: np.ndarray) -> np.ndarray:
        """Unit-variance shadowing of links (site ``site_uid`` → raster pixel ``pixel_idx``)."""
        g = self.grid_px
        site_uid = np.asarray(site_uid, dtype=np.int64)
        rows, cols = np.divmod(np.asarray(pixel_idx, dtype=np.int64), g)
        k = site_uid % (len(self.fields) - 1) + 1
        dy = (hash_uniform(self.seed, site_uid, 1) * g).astype(np.int64)
        dx = (hash_uniform(self.seed, site_uid, 2) * g).astype(np.int64)
        own = self.fields[k, (rows + dy) % g, (cols + dx) % g]
        common = self.fields[0, rows, cols]
        return np.sqrt(self.rho) * common + np.sqrt(1.0 - self.rho) * own
