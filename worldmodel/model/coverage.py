"""Coverage prior (our extension): which share of the map's demand each cell would serve
under a given set of antenna parameters.

The twin gives every pixel's demand to its strongest cell, so a cell's traffic responds to an
action through the area it wins or loses. A learned model has to discover that from data; this
module computes it in closed form from the model's own inputs, once per distinct parameter
set, and the model receives it as one more action feature (``ModelConfig.coverage_prior``).

For map ``b``, cell ``i`` and pixel ``g`` of the ``S × S`` context grid (the POI grid)::

    RSRP_ig = P_i + G(θ', φ'; azimuth_i, mech tilt_i, elec tilt_i) − PL(d_ig)     [dB]
    w_ig    = softmax_i(RSRP_ig / τ)        over the cells active in that slot
    ρ_g     = softmax_g(log1p(POI count_g) + MLP(POI_g, facility_g[, time]))     (Σ_g ρ_g = 1)
    share_i = N_on · Σ_g w_ig ρ_g          (mean 1 over the active cells)
    feature = log(share_i + ε)             (0 for inactive cells)

* ``G``: the twin's TR 38.901 sector antenna (``twin.antenna``: 65° element, 8-element
  vertical array for the electrical tilt, mechanical tilt rotating the pattern), ported to
  torch.
* ``PL``: TR 38.901 UMa NLoS (``max(LoS, NLoS')``) at a nominal antenna height
  (``coverage_height_m``; the model is not told site heights) and 2.6 GHz. Distances are
  clamped to 10 m.
* ``τ`` (``coverage_tau_db``): a soft association that stands in for the shadow fading and the
  A3 hysteresis the model cannot see.
* ``ρ``: a demand proxy learnt end to end (gradients reach it through ``share``); it starts as
  the POI count of each grid cell (the MLP's last layer starts at zero). Without POI it starts
  uniform. With ``daily_demand`` the MLP also reads the slot's time (two daily harmonics and a
  weekend flag), so the proxy can move demand between offices and homes over the day as the
  twin's zone profiles do.

Calibration (``ModelConfig.coverage_calibrate``, ``calibrated_delta``): the POI count is a
rough stand-in for where the demand is. Before the output term is computed, ``fit_demand``
moves ``ρ`` by a few multiplicative (Richardson–Lucy) steps towards a pixel demand under which
every cell's share in the anchor's slot equals the share of the traffic it actually carried.
An antenna change then moves pixels that carry the traffic the cells were seen to carry, not
POI counts. Without learning, this closed form (yesterday's traffic times the calibrated share
change) scores counterfactual R² 0.72 / 0.82 / 0.86 on the evaluation's random / overpower /
site-off plans, against 0.56 / 0.69 / 0.51 uncalibrated (``docs/results.md``).

The association weights carry no gradient (actions are inputs, not parameters). Padded and
inactive cells take no share and get the feature 0, so they cannot influence real cells.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from worldmodel.model.layers import MLP
from worldmodel.model.normalize import normalize_counts
from worldmodel.twin.antenna import AntennaConfig

CARRIER_GHZ = 2.6
UE_HEIGHT_M = 1.5
SHARE_EPS = 1e-2  # floor of the share before the log (1% of a mean cell)
_OFF = -1e9  # association logit of an inactive cell
# a memo is cleared when it would grow past this many entries (about 50 MB at 60 cells)
MEMO_MAX_ENTRIES = 200_000
_WEEK_DEMAND_KEY = "daily demand of every week slot"  # memo entry of ``daily_demand_at``
TIME_FEATURES = 5  # daily demand proxy: sin / cos of 1 and 2 cycles per day, weekend flag


def time_features(
    slot_of_day: torch.Tensor, day_of_week: torch.Tensor, slots_per_day: int
) -> torch.Tensor:
    """``[..., 5]``: two daily harmonics of the slot and a weekend flag (days 5 and 6)."""
    phase = 2.0 * math.pi * slot_of_day.to(torch.float32) / slots_per_day
    return torch.stack(
        [torch.sin(phase), torch.cos(phase), torch.sin(2 * phase), torch.cos(2 * phase),
         (day_of_week >= 5).to(torch.float32)], dim=-1,
    )  # fmt: skip


def pathloss_uma_nlos_db(d2d_m: torch.Tensor, h_bs_m: float, fc_ghz: float = CARRIER_GHZ):
    """TR 38.901 UMa NLoS path loss (dB) ``max(PL_LoS, PL'_NLoS)``, ``d2d`` clamped to 10 m."""
    h_ut = UE_HEIGHT_M
    d2d = d2d_m.clamp_min(10.0)
    d3d = torch.sqrt(d2d**2 + (h_bs_m - h_ut) ** 2)
    d_bp = 4.0 * (h_bs_m - 1.0) * (h_ut - 1.0) * fc_ghz * 1e9 / 299_792_458.0
    log_fc, log_d3d = math.log10(fc_ghz), torch.log10(d3d)
    pl1 = 28.0 + 22.0 * log_d3d + 20.0 * log_fc
    pl2 = 28.0 + 40.0 * log_d3d + 20.0 * log_fc - 9.0 * math.log10(d_bp**2 + (h_bs_m - h_ut) ** 2)
    pl_los = torch.where(d2d <= d_bp, pl1, pl2)
    nlos = 13.54 + 39.08 * log_d3d + 20.0 * log_fc - 0.6 * (h_ut - 1.5)
    return torch.maximum(pl_los, nlos)


def antenna_terms(
    azimuth_rad: torch.Tensor,
    mech_tilt_deg: torch.Tensor,
    elec_tilt_deg: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """Per-cell factors of ``antenna_gain_db`` (``[...]`` each): ``cos_az, sin_az, cos_mt,
    sin_mt`` and the array's steering cosine ``cos(90° + elec tilt)``."""
    mt = torch.deg2rad(mech_tilt_deg)
    steer = torch.cos(torch.deg2rad(90.0 + elec_tilt_deg))
    return torch.cos(azimuth_rad), torch.sin(azimuth_rad), torch.cos(mt), torch.sin(mt), steer


def gain_from_terms(
    cos_b: torch.Tensor,
    sin_b: torch.Tensor,
    cos_z: torch.Tensor,
    sin_z: torch.Tensor,
    terms: tuple[torch.Tensor, ...],
    cfg: AntennaConfig,
) -> torch.Tensor:
    """Gain (dBi) from pixel geometry and ``antenna_terms`` broadcast to the same shape."""
    cos_az, sin_az, cos_mt, sin_mt, steer = terms
    cdp = cos_b * cos_az + sin_b * sin_az  # cos(bearing − azimuth)
    sdp = sin_b * cos_az - cos_b * sin_az
    cos_tl = (cos_mt * cos_z + sin_mt * cdp * sin_z).clamp(-1.0, 1.0)
    theta_l = torch.rad2deg(torch.arccos(cos_tl))
    phi_l = torch.rad2deg(torch.atan2(sin_z * sdp, cos_mt * sin_z * cdp - sin_mt * cos_z))
    a_v = -torch.clamp(12.0 * ((theta_l - 90.0) / cfg.hpbw_v_deg) ** 2, max=cfg.sla_v_db)
    a_h = -torch.clamp(12.0 * (phi_l / cfg.hpbw_h_deg) ** 2, max=cfg.a_max_db)
    element = cfg.element_gain_dbi - torch.clamp(-(a_v + a_h), max=cfg.a_max_db)
    n = cfg.n_vertical
    half = math.pi * cfg.spacing_wavelengths * (cos_tl - steer)
    sin_half = torch.sin(half)
    small = sin_half.abs() < 1e-6
    ratio = torch.where(small, float(n), torch.sin(n * half) / torch.where(small, 1.0, sin_half))
    floor = n * 10.0 ** (cfg.null_fill_db / 10.0)
    return element + 10.0 * torch.log10(ratio * ratio / n + floor)


def antenna_gain_db(
    geom: dict[str, torch.Tensor],
    azimuth_rad: torch.Tensor,
    mech_tilt_deg: torch.Tensor,
    elec_tilt_deg: torch.Tensor,
    cfg: AntennaConfig,
) -> torch.Tensor:
    """Gain (dBi) of every cell towards every pixel: the torch twin of
    ``twin.antenna.antenna_gain_dbi``. ``geom`` holds ``cos_b, sin_b`` (bearing from north) and
    ``cos_z, sin_z`` (zenith) ``[..., G]``; the parameters are ``[...]``."""
    terms = tuple(t[..., None] for t in antenna_terms(azimuth_rad, mech_tilt_deg, elec_tilt_deg))
    return gain_from_terms(geom["cos_b"], geom["sin_b"], geom["cos_z"], geom["sin_z"], terms, cfg)


def decode_params(feat: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Physical ``(power dBm, azimuth rad, mech tilt °, elec tilt °)`` ``[...]`` from the
    normalised action features ``[..., 6]`` (``normalize_actions``)."""
    power = 8.0 * feat[..., 0] + 38.0
    azimuth = torch.atan2(feat[..., 1], feat[..., 2])
    return power, azimuth, 7.5 * feat[..., 3] + 7.5, 6.0 * feat[..., 4] + 6.0


def one_map(x: torch.Tensor) -> bool:
    """Whether the rows of per-map tensor ``x [B, ...]`` are one map: a single row, or one row
    broadcast to all (stride 0, as ``mobiwm_env`` builds its context)."""
    return x.shape[0] == 1 or x.stride(0) == 0


def _week_slot(slot_of_day: torch.Tensor, day_of_week: torch.Tensor, slots_per_day: int):
    """Slot of the week ``[...]``: the memo's time key for a daily demand proxy."""
    return day_of_week * slots_per_day + slot_of_day


def _memo_store(memo: dict, entries: list[tuple[tuple, torch.Tensor]]) -> None:
    """Add ``(key, log shares)`` entries; a memo that would outgrow ``MEMO_MAX_ENTRIES`` is
    cleared first."""
    if len(memo) + len(entries) > MEMO_MAX_ENTRIES:
        memo.clear()
    memo.update(entries)


def _memo_key(row: int, time_key, slot: int, feat: np.ndarray, on: np.ndarray) -> tuple:
    """Memo key of one (batch row, slot): row, week slot (-1 without a daily proxy), the
    slot's action features and active set as bytes."""
    week = -1 if time_key is None else int(time_key[row, slot])
    return (row, week, feat[row, slot].tobytes(), on[row, slot].tobytes())


class SetProduct:
    """Products of every row with the association of its parameter set, without a copy of the
    association per row: ``w [U, N, S²]`` and the set of each row ``sets [R]``."""

    def __init__(self, w: torch.Tensor, sets: torch.Tensor) -> None:
        self.w = w
        self.order = torch.argsort(sets, stable=True)
        self.undo = torch.argsort(self.order)
        counts = torch.bincount(sets, minlength=len(w)).tolist()
        self.groups = [(u, g) for u, g in enumerate(torch.split(self.order, counts)) if len(g)]
        sizes = {len(g) for _, g in self.groups}
        # every used set has the same number of rows (e.g. one set per env, P slots each):
        # one batched matmul instead of one per set
        self.size = sizes.pop() if len(sizes) == 1 and len(self.groups) > 1 else 0
        if self.size:
            used = [u for u, _ in self.groups]
            self.w_used = w if used == list(range(len(w))) else w[used]  # [U', N, S²]

    def served(self, rho: torch.Tensor) -> torch.Tensor:
        """``Σ_g w_ig ρ_rg`` for demand rows ``[R, S²]`` → ``[R, N]``."""
        if self.size:
            grouped = rho[self.order].view(len(self.w_used), self.size, -1)
            return torch.bmm(grouped, self.w_used.transpose(1, 2)).flatten(0, 1)[self.undo]
        return torch.cat([rho[g] @ self.w[u].T for u, g in self.groups])[self.undo]

    def back(self, x: torch.Tensor) -> torch.Tensor:
        """``Σ_i w_ig x_ri`` for cell rows ``[R, N]`` → ``[R, S²]``."""
        if self.size:
            grouped = x[self.order].view(len(self.w_used), self.size, -1)
            return torch.bmm(grouped, self.w_used).flatten(0, 1)[self.undo]
        return torch.cat([x[g] @ self.w[u] for u, g in self.groups])[self.undo]


def fit_demand(
    w: SetProduct, rho: torch.Tensor, traffic: torch.Tensor, on: torch.Tensor, iterations: int
) -> torch.Tensor:
    """Pixel demand ``[R, S²]`` fitted to observed cell traffic by ``iterations``
    multiplicative (Richardson–Lucy) steps ``ρ_g ← ρ_g · Σ_i w_ig y_i / ŷ_i``, ``ŷ = w ρ``.

    ``w``: each row's association (columns sum to 1 over the active cells); ``rho``: the
    starting demand (rows sum to 1); ``traffic [R, N]`` (MB, ≥ 0) and ``on [R, N]``: what the
    cells carried, ``y`` = its shares. Each step keeps ``ρ ≥ 0`` and ``Σ ρ = 1`` and moves
    ``ŷ`` towards ``y``; where no active cell carried traffic ``ρ`` stays as it is.
    """
    y = torch.where(on, traffic.clamp_min(0.0), 0.0)
    total = y.sum(-1, keepdim=True)
    has = total > 0
    y = y / torch.where(has, total, 1.0)
    for _ in range(iterations):
        y_hat = w.served(rho)
        ratio = torch.where(on & (y_hat > 0), y / y_hat.clamp_min(1e-12), 0.0)
        ratio = torch.where(has, ratio, on.to(ratio.dtype))  # no traffic: unchanged
        rho = rho * w.back(ratio)
    return rho


def candidate_weights(
    feat: torch.Tensor,
    on: torch.Tensor,
    idx: torch.Tensor,
    cg: torch.Tensor,
    tau_db: float,
    antenna: AntennaConfig,
) -> torch.Tensor:
    """Association ``w [U, N, S²]`` of ``U`` parameter sets (``feat [U, N, 6]``, ``on [U,
    N]``) over each pixel's ``K`` candidate cells ``idx [1 or U, S², K]`` with their geometry
    ``cg [1 or U, 5, S², K]`` (``CoveragePrior.candidate_geometry``): a softmax of RSRP /
    ``tau_db`` over the candidates, scattered to the cells."""
    u, n, _ = feat.shape
    g, kc = idx.shape[1:]
    flat = idx.reshape(idx.shape[0], g * kc).expand(u, -1)

    def at_candidates(x: torch.Tensor) -> torch.Tensor:  # per-cell [U, N] → [U, G, K]
        return torch.gather(x, 1, flat).view(u, g, kc)

    power, azimuth, mech, elec = decode_params(feat)
    terms = tuple(at_candidates(x) for x in antenna_terms(azimuth, mech, elec))
    gain = gain_from_terms(cg[:, 0], cg[:, 1], cg[:, 2], cg[:, 3], terms, antenna)
    rsrp = at_candidates(power) + gain - cg[:, 4]
    on_k = at_candidates(on.to(torch.uint8)).bool()
    logit = torch.where(on_k, rsrp / tau_db, _OFF)
    wk = torch.softmax(logit, dim=-1) * on_k.to(rsrp.dtype)  # [U, G, K]
    w = rsrp.new_zeros(u, n, g)
    return w.scatter_(1, idx.transpose(1, 2).expand(u, kc, g), wk.transpose(1, 2))


class CoveragePrior(nn.Module):
    """Per-cell log demand share under each slot's parameters (module doc).

    ``poi_categories`` / ``facility_channels``: the demand proxy's inputs (0 = that modality
    is not used); ``tau_db``: association temperature; ``height_m``: nominal antenna height;
    ``daily_demand``: the demand proxy also depends on the time of week.
    """

    GEOMETRY = ("cos_b", "sin_b", "cos_z", "sin_z", "pathloss")
    """Channels of the stacked geometry ``[B, 5, N, S²]`` in a ``ContextCache``."""

    def __init__(
        self,
        poi_categories: int,
        facility_channels: int,
        count_log_scale: float,
        tau_db: float,
        height_m: float,
        daily_demand: bool = False,
        hidden: int = 16,
    ) -> None:
        super().__init__()
        self.tau_db, self.height_m, self.log_scale = float(tau_db), float(height_m), count_log_scale
        self.poi_categories, self.facility_channels = poi_categories, facility_channels
        self.daily_demand = bool(daily_demand)
        self.antenna = AntennaConfig()
        self._compiled: Any = None  # compile_inference: compiled candidate_weights
        n_in = poi_categories + facility_channels + (TIME_FEATURES if daily_demand else 0)
        self.demand = MLP(n_in, hidden, 1) if n_in else None
        if self.demand is not None:
            nn.init.zeros_(self.demand.fc2.weight)
            nn.init.zeros_(self.demand.fc2.bias)

    # ------------------------------------------------------------------ once per map
    def geometry(self, cell_xy_m: torch.Tensor, extent_m: torch.Tensor, side: int) -> dict:
        """Cell→pixel geometry ``[B, N, S²]`` (bearing and zenith trig, path loss dB) for the
        ``side × side`` grid over each map (row-major, rows south → north)."""
        frac = (torch.arange(side, dtype=cell_xy_m.dtype, device=cell_xy_m.device) + 0.5) / side
        c = frac[None, :] * extent_m[:, None]  # [B, S]
        py = c[:, :, None].expand(-1, side, side).reshape(c.shape[0], -1)  # row = y
        px = c[:, None, :].expand(-1, side, side).reshape(c.shape[0], -1)  # column = x
        dx = px[:, None, :] - cell_xy_m[..., 0:1]
        dy = py[:, None, :] - cell_xy_m[..., 1:2]
        d = torch.sqrt(dx * dx + dy * dy).clamp_min(1e-3)
        elev = torch.atan2(torch.full_like(d, self.height_m - UE_HEIGHT_M), d.clamp_min(10.0))
        return {
            "cos_b": dy / d,
            "sin_b": dx / d,
            "cos_z": -torch.sin(elev),  # zenith = 90° + elevation below the horizon
            "sin_z": torch.cos(elev),
            "pathloss": pathloss_uma_nlos_db(d, self.height_m),
        }

    def pixel_features(
        self,
        poi: torch.Tensor | None,
        facility: torch.Tensor | None,
        batch: int,
        side: int,
        device: torch.device,
    ) -> torch.Tensor:
        """Static inputs of the demand proxy ``[B, S², 1 + F]``: the base logit
        ``log1p(POI count)`` (0 without POI), then the normalised POI counts and the facility
        map pooled to the grid. Pass exactly the modalities given at construction
        (``poi_categories`` / ``facility_channels`` > 0)."""
        feats, base = [], torch.zeros(batch, side * side, 1, device=device)
        if self.poi_categories:
            if poi is None:
                raise ValueError("the coverage prior's demand proxy needs poi")
            feats.append(normalize_counts(poi, self.log_scale).reshape(batch, side * side, -1))
            total = torch.nan_to_num(poi, nan=0.0, posinf=0.0).clamp_min(0.0).sum(-1)
            base = torch.log1p(total).reshape(batch, side * side, 1)
        if self.facility_channels:
            if facility is None:
                raise ValueError("the coverage prior's demand proxy needs facility")
            f = F.adaptive_avg_pool2d(torch.nan_to_num(facility), (side, side))
            feats.append(f.permute(0, 2, 3, 1).reshape(batch, side * side, -1))
        return torch.cat([base, *feats], dim=-1)

    def demand_weights(
        self,
        pixels: torch.Tensor,
        slot_of_day: torch.Tensor | None = None,
        day_of_week: torch.Tensor | None = None,
        slots_per_day: int = 96,
    ) -> torch.Tensor:
        """Demand proxy ``ρ`` (sums to 1 over the grid) from ``pixel_features`` ``[B, S², 1 + F]``:
        ``[B, S²]``, or with ``daily_demand`` ``[B, T, S²]`` for the slots ``[B, T]`` given."""
        base, feats = pixels[..., 0], pixels[..., 1:]
        if not self.daily_demand:
            logit = base if self.demand is None else base + self.demand(feats).squeeze(-1)
            return torch.softmax(logit, dim=-1)
        if slot_of_day is None or day_of_week is None:
            raise ValueError("a daily demand proxy needs slot_of_day and day_of_week")
        tf = time_features(slot_of_day, day_of_week, slots_per_day).to(pixels.dtype)  # [B, T, 5]
        b, t, g = tf.shape[0], tf.shape[1], pixels.shape[1]
        x = torch.cat(
            [feats[:, None].expand(b, t, g, feats.shape[-1]), tf[:, :, None].expand(b, t, g, -1)],
            dim=-1,
        )
        return torch.softmax(base[:, None] + self.demand(x).squeeze(-1), dim=-1)

    # ------------------------------------------------------------------ per window
    def forward(
        self,
        geom: torch.Tensor,
        pixels: torch.Tensor,
        act_feat: torch.Tensor,
        active: torch.Tensor,
        slot_of_day: torch.Tensor | None = None,
        day_of_week: torch.Tensor | None = None,
        memo: dict | None = None,
        slots_per_day: int = 96,
        candidates: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``log(share + ε)`` ``[B, T, N]`` (0 for inactive cells) from the stacked geometry
        ``[B, 5, N, S²]`` (``GEOMETRY``), the demand proxy's inputs ``[B, S², 1 + F]``
        (``pixel_features``), the normalised action features ``[B, T, N, 6]``
        (``normalize_actions``), ``active [B, T, N]`` and, for a daily demand proxy, the slots'
        ``slot_of_day`` / ``day_of_week [B, T]``.

        Computed once per distinct (map, parameter set) in the batch: plans are piecewise
        constant, so a window holds only a few. With ``memo`` (a dict kept with the map's
        ``ContextCache``; used only without gradients) the value of every (row, slot key,
        parameters, active set) is also remembered across calls (with a daily proxy: also per
        week slot), so a rollout or an env step computes only the slots it has not seen. A
        memo is valid while the model's weights stay unchanged.
        """
        time_key = None
        if self.daily_demand:
            if slot_of_day is None or day_of_week is None:
                raise ValueError("a daily demand proxy needs slot_of_day and day_of_week")
            time_key = _week_slot(slot_of_day, day_of_week, slots_per_day)
        if memo is not None and not torch.is_grad_enabled():
            return self._memoised(
                geom, pixels, act_feat, active, time_key, memo, slots_per_day, candidates
            )
        demand = self._demand(pixels, time_key, slots_per_day)
        return self._compute(geom, demand, act_feat, active, candidates=candidates)

    def _demand(
        self,
        pixels: torch.Tensor,
        time_key: torch.Tensor | None,
        slots_per_day: int,
        memo: dict | None = None,
    ) -> torch.Tensor:
        if time_key is None:
            return self.demand_weights(pixels)
        sod, dow = time_key % slots_per_day, time_key // slots_per_day
        return self.daily_demand_at(pixels, sod, dow, slots_per_day, memo)

    def daily_demand_at(
        self,
        pixels: torch.Tensor,
        slot_of_day: torch.Tensor,
        day_of_week: torch.Tensor,
        slots_per_day: int,
        memo: dict | None = None,
    ) -> torch.Tensor:
        """``demand_weights`` of a daily proxy for the slots ``[B, T]`` → ``[B, T, S²]``.

        For a context broadcast from one map (``pixels`` with stride 0, as ``mobiwm_env``
        builds it) in a no-gradient call with a ``memo``, the proxy of every slot of the week
        is computed once and kept in the memo (it depends on the time of week only)."""
        if memo is None or torch.is_grad_enabled() or not one_map(pixels):
            return self.demand_weights(pixels, slot_of_day, day_of_week, slots_per_day)
        table = memo.get(_WEEK_DEMAND_KEY)
        if table is None:
            week = torch.arange(7 * slots_per_day, device=pixels.device)[None]
            table = self.demand_weights(
                pixels[:1], week % slots_per_day, week // slots_per_day, slots_per_day
            )[0]  # [W, S²]
            memo[_WEEK_DEMAND_KEY] = table
        return table[_week_slot(slot_of_day, day_of_week, slots_per_day)]

    def _memoised(
        self,
        geom: torch.Tensor,
        pixels: torch.Tensor,
        act_feat: torch.Tensor,
        active: torch.Tensor,
        time_key: torch.Tensor | None,
        memo: dict,
        slots_per_day: int,
        candidates: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        b, t, n, _ = act_feat.shape
        feat_np, on_np = act_feat.cpu().numpy(), active.cpu().numpy()
        tk = time_key.cpu().numpy() if time_key is not None else None
        rows: list[torch.Tensor | None] = []  # the (i, j) slot's log shares, row-major
        missing: list[tuple[int, int, tuple]] = []
        for i in range(b):
            for j in range(t):
                key = _memo_key(i, tk, j, feat_np, on_np)
                hit = memo.get(key)
                if hit is None:
                    missing.append((i, j, key))
                rows.append(hit)
        if missing:
            bi = torch.tensor([x[0] for x in missing], device=act_feat.device)
            tj = torch.tensor([x[1] for x in missing], device=act_feat.device)
            tk = None if time_key is None else time_key[bi, tj][:, None]
            # only the rows not seen yet (one map: its rows are all the same)
            pix = pixels[:1].expand(len(bi), *pixels.shape[1:]) if one_map(pixels) else pixels[bi]
            d = self._demand(pix, tk, slots_per_day, memo)
            new = self._compute(
                geom, d, act_feat[bi, tj][:, None], active[bi, tj][:, None], bi, candidates
            ).unbind(0)
            _memo_store(memo, [(key, new[r][0]) for r, (_, _, key) in enumerate(missing)])
            for r, (i, j, _) in enumerate(missing):
                rows[i * t + j] = new[r][0]
        return torch.stack(rows).view(b, t, n)  # one copy, not one per slot

    def _remember_plain(
        self,
        memo: dict,
        w: SetProduct,
        rho: torch.Tensor,
        act_feat: torch.Tensor,
        active: torch.Tensor,
        slot_of_day: torch.Tensor | None,
        day_of_week: torch.Tensor | None,
        slots_per_day: int,
    ) -> None:
        """Store the uncalibrated log shares of slots ``[B, P]`` with association ``w`` and
        demand rows ``rho [B·P, S²]`` in ``forward``'s memo."""
        b, p, n, _ = act_feat.shape
        n_on = active.sum(-1, keepdim=True).clamp_min(1).to(rho.dtype)
        plain = torch.where(
            active, torch.log(w.served(rho).reshape(b, p, n) * n_on + SHARE_EPS), 0.0
        )
        tk = None
        if self.daily_demand:
            tk = _week_slot(slot_of_day, day_of_week, slots_per_day).cpu().numpy()
        feat_np, on_np = act_feat.cpu().numpy(), active.cpu().numpy()
        keys = [_memo_key(i, tk, j, feat_np, on_np) for i in range(b) for j in range(p)]
        _memo_store(memo, list(zip(keys, plain.reshape(b * p, n).unbind(0), strict=True)))

    def association(
        self,
        geom: torch.Tensor,
        act_feat: torch.Tensor,
        active: torch.Tensor,
        geom_rows: torch.Tensor | None = None,
        candidates: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Soft association of every pixel to the active cells, once per distinct (map,
        parameter set) in ``act_feat [B, T, N, 6]`` / ``active [B, T, N]``.

        Returns ``w [U, N, S²]`` (columns sum to 1 over the set's active cells, 0 for the
        others; no gradient), ``inverse [B·T]`` (the set of each slot), ``on [U, N]`` and
        ``rows [U]`` (a batch row of each set). ``geom_rows [B]``: the geometry row of each
        batch row (default: the same row). A geometry broadcast over its rows (stride 0, as
        ``mobiwm_env`` builds it) holds one map: rows with equal parameters then share a set.
        ``candidates`` (``candidate_geometry``): each pixel weighs only its ``K`` nearest
        cells (``ModelConfig.coverage_candidates``); None: every cell.
        """
        b, t, n, k = act_feat.shape
        rows = torch.arange(b, device=act_feat.device).repeat_interleave(t)
        if one_map(geom):
            g_rows = torch.zeros_like(rows)  # sets are shared between rows
        else:
            g_rows = rows if geom_rows is None else geom_rows[rows]
        key = torch.cat(
            [g_rows[:, None].to(act_feat.dtype), act_feat.reshape(b * t, n * k),
             active.reshape(b * t, n).to(act_feat.dtype)], dim=1,
        )  # fmt: skip
        uniq, inverse = torch.unique(key, dim=0, return_inverse=True)
        mg = uniq[:, 0].long()  # geometry row of each parameter set
        m = torch.empty_like(mg).scatter_(0, inverse, rows)  # a batch row of each set
        feat = uniq[:, 1 : 1 + n * k].reshape(-1, n, k)
        on = uniq[:, 1 + n * k :] > 0.5  # [U, N]
        with torch.no_grad():
            if candidates is not None:
                w = self._candidate_weights(candidates, mg, feat, on)
            else:
                w = self._dense_weights(geom, mg, feat, on)
        return w, inverse, on, m

    def _dense_weights(
        self, geom: torch.Tensor, mg: torch.Tensor, feat: torch.Tensor, on: torch.Tensor
    ) -> torch.Tensor:
        """``w [U, N, S²]`` over every cell. The gain of a cell depends on its own parameters
        only: it is computed once per distinct (map, cell, parameters)."""
        u, n, k = feat.shape
        cells = torch.arange(n, device=feat.device).expand(u, n)
        per_cell = torch.cat(
            [mg[:, None, None].expand(-1, n, 1).to(feat.dtype), cells[..., None].to(feat.dtype),
             feat], dim=-1,
        ).reshape(-1, 2 + k)  # fmt: skip
        cu, cinv = torch.unique(per_cell, dim=0, return_inverse=True)
        cm, cc, cf = cu[:, 0].long(), cu[:, 1].long(), cu[:, 2:]
        g = dict(zip(self.GEOMETRY, geom[cm, :, cc].unbind(1), strict=True))  # [Uc, G]
        power, azimuth, mech, elec = decode_params(cf)
        gain = antenna_gain_db(g, azimuth, mech, elec, self.antenna)
        rsrp = (power[:, None] + gain - g["pathloss"])[cinv].reshape(u, n, -1)
        logit = torch.where(on[..., None], rsrp / self.tau_db, _OFF)
        return torch.softmax(logit, dim=1) * on[..., None].to(rsrp.dtype)

    def _candidate_weights(
        self,
        candidates: tuple[torch.Tensor, torch.Tensor],
        mg: torch.Tensor,
        feat: torch.Tensor,
        on: torch.Tensor,
    ) -> torch.Tensor:
        """``w [U, N, S²]`` with each pixel's weight spread over its ``K`` candidate cells
        only: the gain is computed on ``[U, S², K]`` (not ``[U, N, S²]``), then scattered."""
        idx_all, cgeom_all = candidates  # [B, G, K] cell indices, [B, 5, G, K] geometry
        sel = mg[:1] if bool((mg == mg[0]).all()) else mg  # one map: no per-set copy
        kernel = (
            candidate_weights
            if self._compiled is None or torch.is_grad_enabled()
            else self._compiled
        )
        return kernel(feat, on, idx_all[sel], cgeom_all[sel], self.tau_db, self.antenna)

    def compile_inference(self, enabled: bool = True) -> None:
        """Compute the candidate association (``candidate_weights``) through ``torch.compile``
        in calls without gradients (one fused kernel for the antenna gain, softmax and
        scatter; the number of parameter sets may vary between calls), or eagerly again."""
        self._compiled = torch.compile(candidate_weights, dynamic=True) if enabled else None

    @staticmethod
    def candidate_geometry(
        geom: torch.Tensor, cell_mask: torch.Tensor, k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each pixel's ``k`` nearest real cells (ties by cell index) of the stacked geometry
        ``[B, 5, N, S²]`` → ``(idx [B, S², K], geometry [B, 5, S², K])``, ``K = min(k, N)``.
        Padded cells are never candidates while real ones remain."""
        b, c, n, g = geom.shape
        kc = min(int(k), n)
        dist = geom[:, 4].masked_fill(~cell_mask[:, :, None], float("inf"))  # path loss
        idx = torch.sort(dist, dim=1, stable=True).indices[:, :kc]  # [B, K, G]
        cg = torch.gather(geom, 2, idx[:, None].expand(b, c, kc, g))  # [B, 5, K, G]
        return idx.transpose(1, 2).contiguous(), cg.transpose(2, 3).contiguous()

    def _compute(
        self,
        geom: torch.Tensor,
        demand: torch.Tensor,
        act_feat: torch.Tensor,
        active: torch.Tensor,
        geom_rows: torch.Tensor | None = None,
        candidates: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``forward`` without a memo; ``geom_rows [B]``: the geometry row of each batch row
        (default: the same row)."""
        b, t, n, _ = act_feat.shape
        w, inverse, on, m = self.association(geom, act_feat, active, geom_rows, candidates)
        n_on = on.sum(-1, keepdim=True).clamp_min(1).to(w.dtype)
        if demand.dim() == 2:  # one proxy per map: once per distinct parameter set
            served = torch.einsum("ung,ug->un", w, demand[m])
            log_share = torch.where(on, torch.log(served * n_on + SHARE_EPS), 0.0)
            return log_share[inverse].reshape(b, t, n)
        # one demand row per slot: group the slots by parameter set, so that each set's
        # association weights are read once (no [B·T, N, S²] copy of them)
        flat = demand.reshape(b * t, -1)
        order = torch.argsort(inverse, stable=True)
        groups = torch.split(order, torch.bincount(inverse).tolist())
        parts = [flat[slots] @ w[u].T for u, slots in enumerate(groups)]
        served = torch.cat(parts)[torch.argsort(order)]
        on_all, n_all = on[inverse], n_on[inverse]
        return torch.where(on_all, torch.log(served * n_all + SHARE_EPS), 0.0).reshape(b, t, n)

    # ------------------------------------------------------------------ calibrated change
    def calibrated_delta(
        self,
        geom: torch.Tensor,
        pixels: torch.Tensor,
        feat_ref: torch.Tensor,
        on_ref: torch.Tensor,
        traffic_ref: torch.Tensor,
        feat: torch.Tensor,
        on: torch.Tensor,
        iterations: int,
        slot_of_day: torch.Tensor | None = None,
        day_of_week: torch.Tensor | None = None,
        slots_per_day: int = 96,
        memo: dict | None = None,
        ref_slot_of_day: torch.Tensor | None = None,
        ref_day_of_week: torch.Tensor | None = None,
        candidates: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Change ``[B, P, N]`` of every cell's log share from a reference slot to a target
        slot, with the demand proxy first fitted to the traffic the cells carried in the
        reference slot.

        For each of the ``P`` (reference, target) pairs: reference parameters ``feat_ref
        [B, P, N, 6]`` / ``on_ref [B, P, N]`` and traffic ``traffic_ref [B, P, N]`` (MB, ≥ 0),
        target parameters ``feat`` / ``on``; for a daily proxy the target slots' time ``[B, P]``.
        ``iterations`` steps of ``fit_demand`` move the proxy ``ρ`` towards a pixel demand whose
        reference-slot shares ``ŷ = w ρ`` match the observed shares ``y``; the result
        is ``log(w' ρ + ε) − log(w ρ + ε)`` (shares scaled to mean 1 over the reference slot's
        active cells), 0 where the cell is off in either slot. Gradients reach the demand
        proxy through ``ρ``; the traffic is treated as data. A reference slot without traffic
        leaves the proxy as it is. With ``memo`` (no-gradient calls) the target slots'
        uncalibrated log shares are also stored in it, as ``forward`` would store them, and the
        reference slots' too (a daily proxy needs their time, ``ref_slot_of_day`` /
        ``ref_day_of_week [B, P]``).
        """
        if iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {iterations}")
        b, p, n, _ = feat.shape
        both_feat, both_on = torch.cat([feat_ref, feat], 1), torch.cat([on_ref, on], 1)
        w, inverse, _, _ = self.association(geom, both_feat, both_on, None, candidates)
        inverse = inverse.reshape(b, 2 * p)
        w_ref = SetProduct(w, inverse[:, :p].reshape(-1))
        w_new = SetProduct(w, inverse[:, p:].reshape(-1))
        if self.daily_demand:
            if slot_of_day is None or day_of_week is None:
                raise ValueError("a daily demand proxy needs slot_of_day and day_of_week")
            rho0 = self.daily_demand_at(pixels, slot_of_day, day_of_week, slots_per_day, memo)
        else:
            rho0 = self.demand_weights(pixels)[:, None].expand(b, p, -1)
        rho0 = rho0.reshape(b * p, -1)
        if memo is not None and not torch.is_grad_enabled():
            # both slots' uncalibrated log shares come almost for free: remember them for the
            # feature (``forward``), which then need not compute these sets again
            self._remember_plain(memo, w_new, rho0, feat, on, slot_of_day, day_of_week,
                                 slots_per_day)  # fmt: skip
            if not self.daily_demand or (
                ref_slot_of_day is not None and ref_day_of_week is not None
            ):
                rho_ref = rho0
                if self.daily_demand:
                    rho_ref = self.daily_demand_at(pixels, ref_slot_of_day, ref_day_of_week,
                                                   slots_per_day, memo).reshape(b * p, -1)  # fmt: skip
                self._remember_plain(memo, w_ref, rho_ref, feat_ref, on_ref, ref_slot_of_day,
                                     ref_day_of_week, slots_per_day)  # fmt: skip
        on_r = on_ref.reshape(b * p, n)
        rho = fit_demand(w_ref, rho0, traffic_ref.detach().reshape(b * p, n), on_r, iterations)
        n_on = on_r.sum(-1, keepdim=True).clamp_min(1).to(rho.dtype)
        before = torch.log(w_ref.served(rho) * n_on + SHARE_EPS).reshape(b, p, n)
        after = torch.log(w_new.served(rho) * n_on + SHARE_EPS).reshape(b, p, n)
        return torch.where(on_ref & on, after - before, 0.0)
