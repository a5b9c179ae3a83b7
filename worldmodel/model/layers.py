"""Building blocks of MobiWM: FSTBlock (§4.2), TRN topology bias (Eq. 12–13), the shared
Fourier positional encoding (Eq. 16), the time encoding (Eq. 15) and the gates (Eq. 18).

Token layout everywhere: ``[B, T, N, d]`` (maps, slots, cells, channels). Padded cells are
kept at exactly zero after every residual sub-layer, and spatial attention never attends to
them, so padding cannot influence a real cell.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MASK_VALUE = -1.0e4
"""Additive attention logit of a padded key: finite (no NaN rows), exp() underflows to 0."""


def zero_padded(x: torch.Tensor, cell_mask: torch.Tensor) -> torch.Tensor:
    """Set padded cells of ``x [B, T, N, d]`` (or ``[B, N, d]``) to exactly 0.

    ``cell_mask`` is ``[B, N]`` bool. Uses ``where`` (not a product) so NaN/inf in padding vanish.
    """
    m = cell_mask[:, None, :, None] if x.dim() == 4 else cell_mask[:, :, None]
    return torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))


class MLP(nn.Module):
    """``Linear → GELU → Dropout → Linear`` applied on the last dimension."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.fc2 = nn.Linear(d_hidden, d_out)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(F.gelu(self.fc1(x))))


class FourierPositionalEncoding(nn.Module):
    """Shared spatial encoding ``p_spat(r) = MLP([sin(ω_l r̄), cos(ω_l r̄)]_{l=1..L}) ∈ R^d``.

    ``r̄ ∈ [0, 1]²`` is the coordinate divided by the map side. ``ω_l = 2π f_l`` with ``L``
    log-spaced ``f_l`` from 0.5 to ``max_frequency`` cycles per map side. ONE instance is used for
    cell coordinates, context-grid centres and facility-map pixel centres (Eq. 16), so the same
    place gets the same code in every modality.
    """

    freqs: torch.Tensor

    def __init__(self, n_bands: int, d_model: int, max_frequency: float) -> None:
        super().__init__()
        f = torch.logspace(math.log10(0.5), math.log10(max_frequency), n_bands)
        self.register_buffer("freqs", 2.0 * math.pi * f, persistent=False)
        self.mlp = MLP(4 * n_bands, d_model, d_model)

    def forward(self, xy_norm: torch.Tensor) -> torch.Tensor:
        """``xy_norm [..., 2]`` in map units → ``[..., d]``."""
        ang = xy_norm.unsqueeze(-1) * self.freqs  # [..., 2, L]
        feats = torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1).flatten(-2)  # [..., 4L]
        return self.mlp(feats)

    def grid(self, rows: int, cols: int) -> torch.Tensor:
        """Encoding of the pixel centres of a ``rows × cols`` raster over the map → ``[d, rows,
        cols]`` (row 0 = south, column 0 = west), ready to add to a conv feature map."""
        return self.forward(grid_centres(rows, cols, self.freqs.device)).permute(2, 0, 1)


def grid_centres(rows: int, cols: int, device: torch.device | None = None) -> torch.Tensor:
    """Normalised centres ``[rows, cols, 2]`` as ``(x, y)``: ``x=(j+.5)/cols``, ``y=(i+.5)/rows``."""
    y = (torch.arange(rows, device=device, dtype=torch.float32) + 0.5) / rows
    x = (torch.arange(cols, device=device, dtype=torch.float32) + 0.5) / cols
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    return torch.stack([xx, yy], dim=-1)


class TimeEncoding(nn.Module):
    """``p_temp_t = E_slot(q_t) + E_dow(w_t)`` (Eq. 15), added to state and action tokens."""

    def __init__(self, slots_per_day: int, days_per_week: int, d_model: int) -> None:
        super().__init__()
        self.slot = nn.Embedding(slots_per_day, d_model)
        self.dow = nn.Embedding(days_per_week, d_model)
        nn.init.normal_(self.slot.weight, std=0.02)
        nn.init.normal_(self.dow.weight, std=0.02)

    def forward(self, slot_of_day: torch.Tensor, day_of_week: torch.Tensor) -> torch.Tensor:
        """Integer indices ``[...]`` → ``[..., d]``."""
        return self.slot(slot_of_day) + self.dow(day_of_week)


class Gate(nn.Module):
    """``G_i(h) = σ(g_i) · Linear(LN(h))`` (Eq. 18); without gating just ``Linear(LN(h))``."""

    def __init__(self, d_in: int, d_model: int, gated: bool, init: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_in)
        self.proj = nn.Linear(d_in, d_model)
        self.gate = nn.Parameter(torch.tensor(float(init))) if gated else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.proj(self.norm(h))
        return out if self.gate is None else torch.sigmoid(self.gate) * out


def pair_geometry(cell_xy_m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance ``[B, N, N]`` (metres) and unit vector ``[B, N, N, 2]`` from cell ``i`` to cell
    ``j`` for ``cell_xy_m [B, N, 2]``; coincident cells (sectors of one site) get ``(0, 0)``."""
    delta = cell_xy_m[:, None, :, :] - cell_xy_m[:, :, None, :]  # [B, i, j, 2]: j - i
    dist = torch.sqrt((delta**2).sum(-1) + 1e-12)
    far = (dist > 1e-3).unsqueeze(-1)
    unit = torch.where(far, delta / dist.unsqueeze(-1), torch.zeros((), dtype=delta.dtype))
    return dist, unit


class TopologyBias(nn.Module):
    """Topology Representation Network (TRN, §4.2.2): per-pair, per-head attention bias.

    ``e_feat_ij = FFN_dist(log1p(d_ij / d0)) + FFN_bear(sin α_ij, cos α_ij) ∈ R^{n_h}`` from the
    distance ``d_ij`` (metres) and bearing ``α_ij`` from cell ``i`` to cell ``j`` (both FFNs are
    shared by all pairs, blocks and layers). ``e_mask_ij = FFN_mask(m_i, m_j, a_i, a_j)`` from the
    cell masks and active flags of the pair. Eq. 12's "outer product ⊗" of two ``n_h``-vectors
    that must give ``n_h`` numbers is read as its diagonal, the per-head (Hadamard) product
    ``E_topo[i, j, h] = e_feat_ij[h] · e_mask_ij[h]``: the pair's status scales each head's
    geometric bias (e.g. a head can ignore switched-off neighbours or attend to them).
    Coincident cells (sectors of one site) get bearing features ``(0, 0)``.
    """

    combos: torch.Tensor

    def __init__(self, n_heads: int, hidden: int, distance_scale_m: float) -> None:
        super().__init__()
        self.distance_scale_m = distance_scale_m
        self.dist = MLP(1, hidden, n_heads)
        self.bearing = MLP(2, hidden, n_heads)
        self.mask = MLP(4, hidden, n_heads)
        # the 16 possible (m_i, m_j, a_i, a_j): FFN_mask is evaluated on these and gathered
        bits = torch.tensor([[(c >> s) & 1 for s in (3, 2, 1, 0)] for c in range(16)])
        self.register_buffer("combos", bits.float(), persistent=False)

    def features(self, cell_xy_m: torch.Tensor) -> torch.Tensor:
        """Geometric part ``e_feat``: ``cell_xy_m [B, N, 2]`` (metres) → ``[B, N, N, n_h]``.

        Depends only on the geometry, so it is computed once per map (``ContextCache``).
        """
        dist, unit = pair_geometry(cell_xy_m)
        bearing = torch.stack([unit[..., 1], unit[..., 0]], dim=-1)  # (sin α, cos α), α from east
        d_feat = torch.log1p(dist / self.distance_scale_m).unsqueeze(-1)
        return self.dist(d_feat) + self.bearing(bearing)

    def forward(
        self, feat: torch.Tensor, cell_mask: torch.Tensor, active: torch.Tensor
    ) -> torch.Tensor:
        """``feat [B, N, N, n_h]``, ``cell_mask``/``active`` ``[B, N]`` bool → bias
        ``[B, n_h, N, N]``."""
        m = cell_mask.long()
        a = (active & cell_mask).long()
        combo = m[:, :, None] * 8 + m[:, None, :] * 4 + a[:, :, None] * 2 + a[:, None, :]
        e_mask = self.mask(self.combos)[combo]  # [B, N, N, n_h]
        return (feat * e_mask).permute(0, 3, 1, 2)


class AntennaBias(nn.Module):
    """Action-aware extension of the TRN: an extra per-pair, per-head bias from where the two
    antennas point and how strong they are.

    For the pair ``(i, j)`` with unit vector ``u_ij`` from cell ``i`` to cell ``j`` and boresight
    vectors ``b = (sin az, cos az)`` (azimuth clockwise from north, x east, y north)::

        x_ij = [b_i·u_ij, b_i×u_ij, b_j·u_ji, b_j×u_ji,
                (p_j − p_i)_norm, (mt_j + et_j − mt_i − et_i)_norm, on_i·on_j]
        bias_ij = FFN_ant(x_ij) ∈ R^{n_h}

    i.e. whether ``i`` faces ``j``, whether ``j`` faces ``i``, and their power and tilt
    differences: what decides where the border between two cells lies. The geometric TRN bias
    (distance, bearing) cannot express this because it never sees the parameters. The last
    layer starts near zero, so an untrained ``AntennaBias`` adds almost nothing. Features come from
    ``normalize_actions`` (switched-off cells have all-zero features).
    """

    def __init__(self, n_heads: int, hidden: int) -> None:
        super().__init__()
        self.ffn = MLP(7, hidden, n_heads)
        last = [m for m in self.ffn.modules() if isinstance(m, nn.Linear)][-1]
        nn.init.normal_(last.weight, std=1e-3)
        nn.init.zeros_(last.bias)

    def forward(self, cell_xy_m: torch.Tensor, act_feat: torch.Tensor) -> torch.Tensor:
        """``cell_xy_m [B, N, 2]`` metres, ``act_feat [B, N, 6]`` (one slot) → ``[B, n_h, N, N]``."""
        return self.ffn(self.pair_features(cell_xy_m, act_feat)).permute(0, 3, 1, 2)

    @staticmethod
    def pair_features(cell_xy_m: torch.Tensor, act_feat: torch.Tensor) -> torch.Tensor:
        """The pair features ``x_ij`` (class doc), ``[B, N, N, 7]``."""
        _, unit = pair_geometry(cell_xy_m)
        bx, by = act_feat[..., 1], act_feat[..., 2]  # sin az, cos az: boresight (east, north)
        ux, uy = unit[..., 0], unit[..., 1]
        dot_i = bx[:, :, None] * ux + by[:, :, None] * uy  # i's boresight towards j
        crs_i = bx[:, :, None] * uy - by[:, :, None] * ux
        dot_j = -(
            bx[:, None, :] * ux + by[:, None, :] * uy
        )  # j's boresight towards i (u_ji = -u_ij)
        crs_j = -(bx[:, None, :] * uy - by[:, None, :] * ux)
        power, tilt = act_feat[..., 0], act_feat[..., 3] + act_feat[..., 4]
        on = act_feat[..., 5]
        return torch.stack(
            [
                dot_i,
                crs_i,
                dot_j,
                crs_j,
                power[:, None, :] - power[:, :, None],
                tilt[:, None, :] - tilt[:, :, None],
                on[:, :, None] * on[:, None, :],
            ],
            dim=-1,
        )


def attention_mask(
    bias: torch.Tensor | None, cell_mask: torch.Tensor, n_heads: int
) -> torch.Tensor:
    """Float additive mask ``[B, n_h, N, N]`` for spatial attention.

    ``bias`` (TRN, or None for zeros) everywhere, replaced by ``MASK_VALUE`` for padded keys.
    """
    b, n = cell_mask.shape
    if bias is None:
        bias = torch.zeros(b, n_heads, n, n, device=cell_mask.device)
    key_pad = ~cell_mask[:, None, None, :]
    return bias.masked_fill(key_pad, MASK_VALUE)


def expand_over_time(mask: torch.Tensor, t: int) -> torch.Tensor:
    """``[B, n_h, N, N]`` → ``[B·T, n_h, N, N]`` (one copy per slot, as SDPA wants 4-D)."""
    b, h, n, _ = mask.shape
    return mask.unsqueeze(1).expand(b, t, h, n, n).reshape(b * t, h, n, n)


class _SelfAttention(nn.Module):
    """Multi-head self-attention over dim -2 of ``[..., L, d]`` with SDPA."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x [M, L, d]``; ``attn_mask`` broadcastable to ``[M, n_h, L, L]``."""
        m, length, d = x.shape
        qkv = self.qkv(x).view(m, length, 3, self.n_heads, d // self.n_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # [M, n_h, L, d_k]
        drop = self.dropout if self.training else 0.0
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=drop)
        return self.out(o.transpose(1, 2).reshape(m, length, d))


class FSTBlock(nn.Module):
    """Factorised spatio-temporal block (Eq. 9–11), pre-LN residual sub-layers:

    ``X' = X + SpatialAttn(LN X)`` (cells attend to cells in the same slot, with the topology
    bias and the padding mask), ``X'' = X' + TemporalAttn(LN X')`` (each cell's slots attend to
    each other, non-causal), ``X_out = X'' + FFN(LN X'')``. Padded cells are zeroed after each.
    """

    def __init__(self, d_model: int, n_heads: int, ffn_mult: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.norm_s = nn.LayerNorm(d_model)
        self.spatial = _SelfAttention(d_model, n_heads, dropout)
        self.norm_t = nn.LayerNorm(d_model)
        self.temporal = _SelfAttention(d_model, n_heads, dropout)
        self.norm_f = nn.LayerNorm(d_model)
        self.ffn = MLP(d_model, ffn_mult * d_model, d_model, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, spatial_mask: torch.Tensor, cell_mask: torch.Tensor
    ) -> torch.Tensor:
        """``x [B, T, N, d]``; ``spatial_mask [B·T, n_h, N, N]`` (``expand_over_time`` of
        ``attention_mask``); ``cell_mask [B, N]`` → ``[B, T, N, d]``."""
        b, t, n, d = x.shape
        h = self.spatial(self.norm_s(x).reshape(b * t, n, d), spatial_mask).view(b, t, n, d)
        x = zero_padded(x + self.drop(h), cell_mask)
        xt = self.norm_t(x).transpose(1, 2).reshape(b * n, t, d)
        h = self.temporal(xt).view(b, n, t, d).transpose(1, 2)
        x = zero_padded(x + self.drop(h), cell_mask)
        x = zero_padded(x + self.drop(self.ffn(self.norm_f(x))), cell_mask)
        return x
