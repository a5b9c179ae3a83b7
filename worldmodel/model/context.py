"""Multi-modal context encoders of MobiWM (§4.3.1) and the per-map ``ContextCache``.

Every encoder returns a map-level vector (Eq. 14: ``h_P``, ``h_O``, ``h_F`` ∈ R^d) *and* a
feature map on the map's grid. The shared positional encoding ``p_spat`` of the grid cells /
pixels is added to each feature map before pooling (Eq. 17). Because the model predicts per
cell, each cell additionally reads its *local* context: the feature maps are sampled at the
cell's position with bilinear ``grid_sample`` (``sample_at_cells``), and the local feature is
added to the global vector before gating. Grids have row 0 at the southern edge and column 0
at the western edge and cover the whole map, the same frame as the cell coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from worldmodel.model.config import ModelConfig
from worldmodel.model.normalize import normalize_counts


def cell_grid_coords(cell_xy_m: torch.Tensor, extent_m: torch.Tensor) -> torch.Tensor:
    """Cell positions ``[B, N, 2]`` (metres) → ``grid_sample`` coordinates in ``[-1, 1]``.

    ``x`` (east) indexes raster columns and ``y`` (north) raster rows, so with
    ``align_corners=False`` the value −1 is the western / southern map edge.
    """
    return 2.0 * cell_xy_m / extent_m[:, None, None] - 1.0


def sample_at_cells(fmap: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear sample of ``fmap [M, C, h, w]`` at ``grid [M, N, 2]`` (``[-1, 1]``) → ``[M, N, C]``."""
    out = F.grid_sample(
        fmap, grid.unsqueeze(2), mode="bilinear", padding_mode="border", align_corners=False
    )
    return out.squeeze(-1).transpose(1, 2)


class POIEncoder(nn.Module):
    """Multi-scale conv POI encoder: 3×3 / 5×5 / 7×7 branches → 1×1 mix (+ ``p_spat`` coarse)
    → GELU → 1×1 → feature map; ``h_P`` is its global average."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d, k = cfg.d_model, cfg.poi_categories
        cb = max(4, d // 4)
        self.log_scale = cfg.count_log_scale
        self.branches = nn.ModuleList(nn.Conv2d(k, cb, s, padding=s // 2) for s in (3, 5, 7))
        self.mix = nn.Conv2d(3 * cb, d, 1)
        self.post = nn.Conv2d(d, d, 1)

    def forward(
        self, poi: torch.Tensor, pe: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``poi [B, S, S, K]`` counts, ``pe [d, S, S]`` or None → (``h_P [B, d]``,
        feature map ``[B, d, S, S]``)."""
        x = normalize_counts(poi, self.log_scale).permute(0, 3, 1, 2)
        x = self.mix(F.gelu(torch.cat([conv(x) for conv in self.branches], dim=1)))
        if pe is not None:
            x = x + pe
        fmap = self.post(F.gelu(x))
        return fmap.mean(dim=(2, 3)), fmap


class FlowTokenizer(nn.Module):
    """OD Flow Tokenizer: per time slice a 5×5 conv → GELU → 1×1 (+ ``p_spat`` coarse, read
    through a 1×1 projection to the tokenizer's ``c = d/4`` channels to keep a week of slices
    cheap) → GELU gives a slice feature map; its pooled value → Linear is the slice token, and
    its value at each cell → Linear is the cell's local in/out-flow feature at that slot."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.d_model
        c = max(8, d // 4)
        self.log_scale = cfg.count_log_scale
        self.conv = nn.Conv2d(2, c, 5, padding=2)
        self.mix = nn.Conv2d(c, c, 1)
        self.pe_proj = nn.Conv2d(d, c, 1) if cfg.use_spe else None
        self.token = nn.Linear(c, d)
        self.cell = nn.Linear(c, d)

    def forward(
        self,
        od: torch.Tensor,
        grid: torch.Tensor,
        pe: torch.Tensor | None,
        chunk: int = 128,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``od [B, T, 2, S, S]``, cell ``grid [B, N, 2]``, ``pe [d, S, S]`` → (slice tokens
        ``[B, T, d]``, per-cell features ``[B, T, N, d]``). Slices are processed ``chunk`` at a
        time so a week of OD does not hold all feature maps in memory."""
        b, t = od.shape[:2]
        n = grid.shape[1]
        pe_c = self.pe_proj(pe[None]) if pe is not None and self.pe_proj is not None else None
        tokens, cells = [], []
        for t0 in range(0, t, chunk):
            sl = od[:, t0 : t0 + chunk]
            tc = sl.shape[1]
            x = normalize_counts(sl, self.log_scale).flatten(0, 1)  # [B·tc, 2, S, S]
            f = self.mix(F.gelu(self.conv(x)))
            if pe_c is not None:
                f = f + pe_c
            f = F.gelu(f)
            tokens.append(self.token(f.mean(dim=(2, 3))).view(b, tc, -1))
            g = grid[:, None].expand(b, tc, n, 2).reshape(b * tc, n, 2)
            cells.append(self.cell(sample_at_cells(f, g)).view(b, tc, n, -1))
        return torch.cat(tokens, dim=1), torch.cat(cells, dim=1)


class ODEncoder(nn.Module):
    """OD Encoder: one learnable query cross-attends over the window's slice tokens → ``h_O``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.n_heads = cfg.n_heads
        self.query = nn.Parameter(torch.randn(d) * 0.02)
        self.norm = nn.LayerNorm(d)
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens [B, T, d]`` (slice tokens + time encoding) → ``h_O [B, d]``."""
        b, t, d = tokens.shape
        h, dk = self.n_heads, d // self.n_heads
        q = self.q(self.query).view(1, h, 1, dk).expand(b, h, 1, dk)
        k, v = self.kv(self.norm(tokens)).view(b, t, 2, h, dk).permute(2, 0, 3, 1, 4).unbind(0)
        o = F.scaled_dot_product_attention(q, k, v)  # [B, h, 1, dk]
        return self.out(o.reshape(b, d))


class FacilityEncoder(nn.Module):
    """Visual Tokenizer + Facility Encoder: two stride-2 3×3 convs, adaptive pooling to the fine
    size, 1×1 to ``d`` (+ ``p_spat`` fine) = fine map ``h_Ff``; GELU, average-pool to the
    ``S×S`` context grid, 1×1 (+ ``p_spat`` coarse) = coarse map ``h_Fc``; global vector
    ``h_F`` = MLP of the coarse map's mean."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.d_model
        c1, c2 = max(8, d // 4), max(8, d // 2)
        self.fine_px = cfg.facility_fine_px
        self.stem = nn.Sequential(
            nn.Conv2d(cfg.facility_channels, c1, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1),
            nn.GELU(),
        )
        self.fine_proj = nn.Conv2d(c2, d, 1)
        self.coarse_proj = nn.Conv2d(d, d, 1)
        self.glob = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))

    def forward(
        self,
        facility: torch.Tensor,
        grid_px: int,
        pe_fine: torch.Tensor | None,
        pe_coarse: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``facility [B, C, Hf, Wf]`` in [0, 1] → (``h_F [B, d]``, fine ``[B, d, F, F]``,
        coarse ``[B, d, S, S]``) with ``F = facility_fine_px`` and ``S = grid_px``."""
        x = F.adaptive_avg_pool2d(self.stem(facility), self.fine_px)
        fine = self.fine_proj(x)
        if pe_fine is not None:
            fine = fine + pe_fine
        coarse = self.coarse_proj(F.adaptive_avg_pool2d(F.gelu(fine), grid_px))
        if pe_coarse is not None:
            coarse = coarse + pe_coarse
        return self.glob(coarse.mean(dim=(2, 3))), fine, coarse


@dataclass
class ContextCache:
    """Everything static about a batch of maps, computed once by ``MobiWM.encode_context`` and
    reused for every window / rollout chunk. Padded cells hold zeros. ``None`` where the
    corresponding ablation switch is off.

    The OD tensors cover ``T_od`` slots; cache slot 0 is the week slot ``od_start_week_slot``
    (``day_of_week·Q + slot_of_day``, default 0 = Monday 00:00) and the cache repeats with period
    ``T_od``: a window slot with week slot ``w`` reads cache slot
    ``(w − od_start_week_slot) mod T_od``. That is exact for a week of OD (``T_od = 672``) and for
    a window's own OD; for anything else (e.g. two weeks of non-periodic OD) pass explicit
    ``od_index`` (the cache slot of every window slot) in ``predict``/``rollout``'s ``time``.
    """

    cell_mask: torch.Tensor  # [B, N] bool
    cell_xy_m: torch.Tensor  # [B, N, 2] metres (padded cells at 0)
    extent_m: torch.Tensor  # [B]
    cell_pe: torch.Tensor | None  # [B, N, d] p_spat of each cell
    topo_feat: torch.Tensor | None  # [B, N, K, n_h] TRN geometric embedding e_feat (K = N,
    # or the neighbours of ``neighbours``)
    poi_cond: torch.Tensor | None  # [B, N, d] h_P + POI features at the cell
    fac_cond: torch.Tensor | None  # [B, N, d] h_F + fine + coarse facility features at the cell
    od_tokens: torch.Tensor | None  # [B, T_od, d] OD slice tokens
    od_cell: torch.Tensor | None  # [B, T_od, N, d] OD features at each cell per slot
    od_start_week_slot: torch.Tensor  # [B] int64
    n_od_slots: int  # T_od (0 without OD)
    coverage_geom: torch.Tensor | None = None  # [B, 5, N, S²] coverage prior geometry
    coverage_pixels: torch.Tensor | None = None  # [B, S², 1 + F] coverage demand-proxy inputs
    # coverage log shares already computed (no-grad calls), keyed by row: a cache broadcast
    # from one map (``mobiwm_env``) may share it, a cache whose rows are other maps may not
    coverage_memo: dict | None = None
    # ``spatial_neighbours`` > 0: each cell's neighbours [B, N, K] (``layers.neighbour_index``)
    neighbours: torch.Tensor | None = None
    pair_unit: torch.Tensor | None = None  # [B, N, K, 2] unit vectors of the attention pairs
    # ``coverage_candidates`` > 0: each pixel's K nearest cells [B, S², K] and their geometry
    # [B, 5, S², K] (``CoveragePrior.candidate_geometry``)
    coverage_cand_idx: torch.Tensor | None = None
    coverage_cand_geom: torch.Tensor | None = None

    @property
    def coverage_candidates(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(idx, geometry)`` of the coverage prior's candidate cells, or None (every cell)."""
        if self.coverage_cand_idx is None or self.coverage_cand_geom is None:
            return None
        return self.coverage_cand_idx, self.coverage_cand_geom

    @property
    def batch_size(self) -> int:
        return int(self.cell_mask.shape[0])

    @property
    def n_cells(self) -> int:
        return int(self.cell_mask.shape[1])

    def od_index(
        self, slot_of_day: torch.Tensor, day_of_week: torch.Tensor, slots_per_day: int
    ) -> torch.Tensor:
        """Cache slot of every window slot ``[B, T]`` from its time indices (see class doc)."""
        if self.n_od_slots == 0:
            return torch.zeros_like(slot_of_day)
        week_slot = day_of_week * slots_per_day + slot_of_day
        return torch.remainder(week_slot - self.od_start_week_slot[:, None], self.n_od_slots)
