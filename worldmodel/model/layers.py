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


def zero_padded(x: torch.Tensor, cell_mask: torch.Tensor | None) -> torch.Tensor:
    """Set padded cells of ``x [B, T, N, d]`` (or ``[B, N, d]``) to exactly 0.

    ``cell_mask`` is ``[B, N]`` bool, or None for a batch without padding (``x`` unchanged).
    Uses ``where`` (not a product) so NaN/inf in padding vanish.
    """
    if cell_mask is None:
        return x
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


DENSE_NEIGHBOUR_MAX_CELLS = 256
"""Up to this many cells, attention restricted to neighbours (``spatial_neighbours``) runs as a
dense attention whose mask hides the other cells (faster on a CPU); above it, over gathered
neighbour keys (memory and time linear in the cells). Both give the same result."""


def neighbour_index(cell_xy_m: torch.Tensor, cell_mask: torch.Tensor, k: int) -> torch.Tensor:
    """Each cell's ``K = min(k, N)`` nearest cells ``[B, N, K]`` (itself first, then by
    distance, ties by index), real cells before padded ones, from ``cell_xy_m [B, N, 2]``."""
    b, n, _ = cell_xy_m.shape
    dist = torch.cdist(cell_xy_m, cell_xy_m)
    dist = dist.masked_fill(~cell_mask[:, None, :], float("inf"))
    dist = dist.masked_fill(torch.eye(n, dtype=torch.bool, device=dist.device), -1.0)
    return torch.sort(dist, dim=-1, stable=True).indices[..., : min(int(k), n)]


def at_neighbours(x: torch.Tensor, nb: torch.Tensor | None) -> torch.Tensor:
    """Per-cell ``x [B, N, ...]`` seen from every cell: ``[B, N, K, ...]`` at the neighbours
    ``nb [B, N, K]``, or ``[B, 1, N, ...]`` (all cells, broadcast) when ``nb`` is None."""
    if nb is None:
        return x[:, None]
    rows = torch.arange(x.shape[0], device=x.device)[:, None, None]
    return x[rows, nb]


def pair_geometry(
    cell_xy_m: torch.Tensor, nb: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance ``[B, N, K]`` (metres) and unit vector ``[B, N, K, 2]`` from cell ``i`` to cell
    ``j`` for ``cell_xy_m [B, N, 2]``, over ``j`` in the neighbours ``nb [B, N, K]`` (None:
    every cell, ``K = N``); coincident cells (sectors of one site) get ``(0, 0)``."""
    delta = at_neighbours(cell_xy_m, nb) - cell_xy_m[:, :, None, :]  # [B, i, j, 2]: j - i
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

    def features(self, cell_xy_m: torch.Tensor, nb: torch.Tensor | None = None) -> torch.Tensor:
        """Geometric part ``e_feat``: ``cell_xy_m [B, N, 2]`` (metres) → ``[B, N, K, n_h]`` over
        the neighbours ``nb [B, N, K]`` (None: every cell, ``K = N``).

        Depends only on the geometry, so it is computed once per map (``ContextCache``).
        """
        dist, unit = pair_geometry(cell_xy_m, nb)
        bearing = torch.stack([unit[..., 1], unit[..., 0]], dim=-1)  # (sin α, cos α), α from east
        d_feat = torch.log1p(dist / self.distance_scale_m).unsqueeze(-1)
        return self.dist(d_feat) + self.bearing(bearing)

    def forward(
        self,
        feat: torch.Tensor,
        cell_mask: torch.Tensor,
        active: torch.Tensor,
        nb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``feat [B, N, K, n_h]``, ``cell_mask``/``active`` ``[B, N]`` bool, neighbours ``nb
        [B, N, K]`` (None: every cell) → bias ``[B, n_h, N, K]``."""
        m = cell_mask.long()
        a = (active & cell_mask).long()
        m_j, a_j = at_neighbours(m, nb), at_neighbours(a, nb)
        combo = m[:, :, None] * 8 + m_j * 4 + a[:, :, None] * 2 + a_j
        e_mask = self.mask(self.combos)[combo]  # [B, N, K, n_h]
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

    def forward(
        self,
        cell_xy_m: torch.Tensor,
        act_feat: torch.Tensor,
        nb: torch.Tensor | None = None,
        unit: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``cell_xy_m [B, N, 2]`` metres, ``act_feat [B, N, 6]`` (one slot), neighbours ``nb
        [B, N, K]`` (None: every cell) → ``[B, n_h, N, K]``. ``unit``: the pairs' unit vectors
        ``pair_geometry(cell_xy_m, nb)[1]`` when already known (they are static per map)."""
        return self.ffn(self.pair_features(cell_xy_m, act_feat, nb, unit)).permute(0, 3, 1, 2)

    @staticmethod
    def pair_features(
        cell_xy_m: torch.Tensor,
        act_feat: torch.Tensor,
        nb: torch.Tensor | None = None,
        unit: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The pair features ``x_ij`` (class doc), ``[B, N, K, 7]``."""
        if unit is None:
            _, unit = pair_geometry(cell_xy_m, nb)
        feat_j = at_neighbours(act_feat, nb)  # [B, N, K or 1, 6]
        bx, by = act_feat[..., 1, None], act_feat[..., 2, None]  # boresight (east, north)
        bx_j, by_j = feat_j[..., 1], feat_j[..., 2]
        ux, uy = unit[..., 0], unit[..., 1]
        dot_i = bx * ux + by * uy  # i's boresight towards j
        crs_i = bx * uy - by * ux
        dot_j = -(bx_j * ux + by_j * uy)  # j's boresight towards i (u_ji = -u_ij)
        crs_j = -(bx_j * uy - by_j * ux)
        power, tilt = act_feat[..., 0, None], act_feat[..., 3, None] + act_feat[..., 4, None]
        on = act_feat[..., 5, None]
        return torch.stack(
            [
                dot_i,
                crs_i,
                dot_j,
                crs_j,
                feat_j[..., 0] - power,
                feat_j[..., 3] + feat_j[..., 4] - tilt,
                on * feat_j[..., 5],
            ],
            dim=-1,
        )


def attention_mask(
    bias: torch.Tensor | None,
    cell_mask: torch.Tensor,
    n_heads: int,
    nb: torch.Tensor | None = None,
    dense: bool = True,
) -> torch.Tensor:
    """Float additive mask for spatial attention: ``bias [B, n_h, N, K]`` (TRN over the
    neighbours ``nb [B, N, K]``, or every cell when ``nb`` is None; None for zeros), replaced
    by ``MASK_VALUE`` for padded keys. ``[B, n_h, N, N]``, with ``MASK_VALUE`` for every
    non-neighbour when ``dense`` (``FSTBlock`` without ``nb``); else ``[B, n_h, N, K]``.
    """
    b, n = cell_mask.shape
    k = n if nb is None else nb.shape[-1]
    if bias is None:
        bias = torch.zeros(b, n_heads, n, k, device=cell_mask.device)
    key_ok = at_neighbours(cell_mask, nb)[:, None]  # [B, 1, N, K] or [B, 1, 1, N]
    masked = bias.masked_fill(~key_ok, MASK_VALUE)
    if nb is None or not dense:
        return masked
    full = masked.new_full((b, n_heads, n, n), MASK_VALUE)
    return full.scatter_(3, nb[:, None].expand(b, n_heads, n, k), masked)


def expand_over_time(mask: torch.Tensor, t: int) -> torch.Tensor:
    """``[B, n_h, N, N]`` → ``[B·T, n_h, N, N]`` (one copy per slot, made once per block stack:
    SDPA's fused CPU kernel takes a contiguous 4-D mask, and is slower on a broadcast one)."""
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

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, queries: int = 0
    ) -> torch.Tensor:
        """``x [M, L, d]``; ``attn_mask`` broadcastable to ``[M, n_h, L, L]``; ``queries`` > 0:
        only the last ``queries`` positions ask (no mask), ``[M, queries, d]``."""
        m, length, d = x.shape
        qkv = self.qkv(x).view(m, length, 3, self.n_heads, d // self.n_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # [M, n_h, L, d_k]
        drop = self.dropout if self.training else 0.0
        if queries:
            o = F.scaled_dot_product_attention(q[:, :, -queries:], k, v, dropout_p=drop)
            return self.out(o.transpose(1, 2).reshape(m, queries, d))
        if attn_mask is not None and attn_mask.shape == (m, self.n_heads, length, length):
            # a full mask (spatial attention): one batched matmul pair, about twice as fast on
            # a CPU as SDPA's fused kernel at these short lengths; the same result
            c = d // self.n_heads
            flat = (m * self.n_heads, length, c)
            scores = torch.baddbmm(
                attn_mask.reshape(-1, length, length), q.reshape(flat),
                k.reshape(flat).transpose(1, 2), alpha=c**-0.5,
            )  # fmt: skip
            attn = F.dropout(torch.softmax(scores, dim=-1), drop) if drop else scores.softmax(-1)
            o = torch.bmm(attn, v.reshape(flat)).view(m, self.n_heads, length, c)
        else:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=drop)
        return self.out(o.transpose(1, 2).reshape(m, length, d))

    def over_neighbours(
        self, x: torch.Tensor, bias: torch.Tensor, nb: torch.Tensor
    ) -> torch.Tensor:
        """Attention of each cell over its neighbours only: ``x [B, T, N, d]``, ``bias [B, n_h,
        N, K]`` (``attention_mask(..., dense=False)``), ``nb [B, N, K]`` → ``[B, T, N, d]``.
        Time and memory grow with ``N · K``, not ``N²``."""
        b, t, n, d = x.shape
        nh, c = self.n_heads, d // self.n_heads
        qkv = self.qkv(x).view(b, t, n, 3, nh, c).permute(3, 1, 4, 0, 2, 5)
        q, kk, v = qkv.unbind(0)  # [T, n_h, B, N, d_k]
        flat = nb + torch.arange(b, device=x.device)[:, None, None] * n  # [B, N, K] of B·N
        # keys and values gathered straight into the layout SDPA reads: [T, n_h, B, N, K, d_k]
        k_nb = kk.reshape(t, nh, b * n, c)[:, :, flat]
        v_nb = v.reshape(t, nh, b * n, c)[:, :, flat]
        mask = bias.permute(1, 0, 2, 3)[None, :, :, :, None, :]  # [1, n_h, B, N, 1, K]
        drop = self.dropout if self.training else 0.0
        o = F.scaled_dot_product_attention(q.unsqueeze(-2), k_nb, v_nb, attn_mask=mask,
                                           dropout_p=drop)  # fmt: skip
        return self.out(o.squeeze(-2).permute(2, 0, 3, 1, 4).reshape(b, t, n, d))


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
        self,
        x: torch.Tensor,
        spatial_mask: torch.Tensor,
        cell_mask: torch.Tensor | None,
        nb: torch.Tensor | None = None,
        last: int = 0,
    ) -> torch.Tensor:
        """``x [B, T, N, d]``; ``spatial_mask [B·T, n_h, N, N]`` (``expand_over_time`` of
        ``attention_mask``), or with the neighbours ``nb [B, N, K]`` the ``[B, n_h, N, K]`` bias
        of ``attention_mask(..., dense=False)``; ``cell_mask [B, N]`` (None: no padded cells)
        → ``[B, T, N, d]``. ``last`` > 0: only the last ``last`` slots are wanted (the last
        block of a stack whose output is read there): ``[B, last, N, d]``, the same values,
        without the temporal queries and FFN of the other slots."""
        b, t, n, d = x.shape
        if nb is None:
            h = self.spatial(self.norm_s(x).reshape(b * t, n, d), spatial_mask).view(b, t, n, d)
        else:
            h = self.spatial.over_neighbours(self.norm_s(x), spatial_mask, nb)
        x = zero_padded(x + self.drop(h), cell_mask)
        xt = self.norm_t(x).transpose(1, 2).reshape(b * n, t, d)
        t_out = last or t
        h = self.temporal(xt, queries=last).view(b, n, t_out, d).transpose(1, 2)
        x = zero_padded(x[:, t - t_out :] + self.drop(h), cell_mask)
        x = zero_padded(x + self.drop(self.ffn(self.norm_f(x))), cell_mask)
        return x
