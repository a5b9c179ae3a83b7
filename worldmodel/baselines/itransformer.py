"""iTransformer world model: one token per cell, attention across the cells of a map.

The iTransformer (Liu et al., ICLR 2024, "inverted Transformer") embeds each variate's whole
look-back window as one token and lets self-attention mix the variates. Here the variates are
the cells of a map. A cell's token embeds its ``H`` normalised history traffic values
(``MapInputs.z_hist``), its action features (``normalize_actions``, 6 per slot) over all
``T = H + P`` slots (history and the planned future actions) and its position ``xy``; a linear
embedding of the time features (sin/cos slot of day / day of week) of the last history slot and
the ``P`` future slots is added to every token. ``layers`` pre-norm encoder blocks (multi-head
``scaled_dot_product_attention`` across cells, padded cells masked out as keys; GELU MLP) follow,
and a linear head maps each token to the cell's ``P`` future normalised values.

As in the paper (RevIN-style, ``revin``), each cell's history is standardised by its own mean
and std over its active history slots, and the prediction is mapped back with them.

Differences from the paper: the token also embeds the cell's actions — past and future — and
its position (the paper's tokens carry the series only), so the model is action-conditioned
(``use_actions=False`` hides the four parameters, the active flag stays); time features enter
as an additive embedding instead of extra variate tokens. Reads ``traffic[:, :H]`` only; needs
windows of ``history`` (default 104 = one day + 8 slots) plus ``horizon`` slots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from worldmodel.baselines.interface import Batch
from worldmodel.baselines.learned import (
    TIME_FEATURES,
    BaselineConfig,
    LearnedWorldModel,
    MapInputs,
    check_unit_interval,
)
from worldmodel.model.normalize import ACTION_FEATURES


@dataclass(frozen=True)
class ITransformerConfig(BaselineConfig):
    """Architecture of ``ITransformerWM``. Every field is saved in the checkpoint."""

    history: int = 104
    """``H``: history slots embedded in each cell token (one day + 8 slots)."""
    d_model: int = 128
    """Token width."""
    heads: int = 8
    """Attention heads (``d_model`` must be divisible by it)."""
    layers: int = 2
    """Pre-norm encoder blocks."""
    ff: int = 256
    """Hidden width of each block's MLP."""
    dropout: float = 0.1
    """Dropout on attention weights, block outputs and the MLP (training only)."""
    revin: bool = True
    """Standardise each cell's history by its own mean/std (active slots) and undo it after."""
    revin_eps: float = 1e-5
    """Added to each cell's variance before the square root (normalised units squared)."""

    positive_fields: ClassVar[tuple[str, ...]] = (
        *BaselineConfig.positive_fields,
        "d_model",
        "heads",
        "layers",
        "ff",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_unit_interval(self, "dropout")
        name = type(self).__name__
        if self.d_model % self.heads:
            raise ValueError(
                f"{name}: d_model ({self.d_model}) must be divisible by heads ({self.heads})"
            )
        if not self.revin_eps > 0:
            raise ValueError(f"{name}: revin_eps must be > 0, got {self.revin_eps}")


class _Block(nn.Module):
    """Pre-norm encoder block over tokens ``[B, N, d]``: LN → MHA (SDPA) → +, LN → MLP → +."""

    def __init__(self, d: int, heads: int, ff: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.p = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        """``x [B, N, d]``; ``attn_mask [B, 1, N, N]`` bool (True: query may attend to key)."""
        b, n, d = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B, heads, N, d_head]
        p = self.p if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.mlp(self.norm2(x)))


class ITransformerWM(LearnedWorldModel):
    """Inverted Transformer world model: cells are tokens, attention mixes the cells of a map.

    Build with ``ITransformerWM(ITransformerConfig(...))`` or ``ITransformerWM(history=8, ...)``.
    ``forward(batch) → [B, P, N]`` normalised traffic; padded cells never influence real ones.
    """

    config_class = ITransformerConfig
    cfg: ITransformerConfig

    def __init__(self, cfg: ITransformerConfig | None = None, **overrides: Any) -> None:
        super().__init__(cfg, **overrides)
        cfg = self.cfg
        h, p, d = cfg.history, cfg.horizon, cfg.d_model
        self.embed = nn.Linear(h + cfg.window * ACTION_FEATURES + 2, d)
        self.time_embed = nn.Linear((p + 1) * TIME_FEATURES, d)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            _Block(d, cfg.heads, cfg.ff, cfg.dropout) for _ in range(cfg.layers)
        )
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, p)

    def _standardise(self, x: MapInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """History ``[B, H, N]`` standardised per cell over its active slots (0 elsewhere),
        with the per-cell ``mean`` and ``std`` ``[B, 1, N]`` (identity without ``revin``)."""
        z = x.z_hist
        if not self.cfg.revin:
            one = torch.ones_like(z[:, :1])
            return z, torch.zeros_like(one), one
        valid = x.valid[:, : self.cfg.history].to(z.dtype)
        count = valid.sum(1, keepdim=True)
        mean = (z * valid).sum(1, keepdim=True) / count.clamp_min(1.0)
        mean = torch.where(count > 0, mean, x.zero.to(z.dtype))
        var = (((z - mean) * valid) ** 2).sum(1, keepdim=True) / count.clamp_min(1.0)
        std = torch.sqrt(var + self.cfg.revin_eps)
        return ((z - mean) / std) * valid, mean, std

    def forward(self, batch: Batch) -> torch.Tensor:
        """Normalised prediction ``[B, P, N]`` of the last ``P`` slots of a window batch.

        Reads ``traffic[:, :H]`` only, all ``T`` slots of actions, active flags and time, and
        ``cell_xy`` / ``extent_m`` when present. Inactive / padded cells hold the zero level.
        """
        h = self.cfg.history
        x = self.map_inputs(batch)
        b, n = x.mask.shape
        z, mean, std = self._standardise(x)
        tokens = torch.cat(
            [z.transpose(1, 2), x.feats.transpose(1, 2).reshape(b, n, -1), x.xy], dim=-1
        )
        tokens = torch.where(x.mask[..., None], tokens, torch.zeros((), dtype=tokens.dtype))
        time = self.time_embed(x.time[:, h - 1 :].reshape(b, -1))  # [B, d]
        e = self.drop(self.embed(tokens) + time[:, None])  # [B, N, d]
        # real cells attend to real cells only; each padded cell also to itself (no empty rows)
        eye = torch.eye(n, dtype=torch.bool, device=e.device)
        attn_mask = (x.mask[:, None, :] | eye)[:, None]  # [B, 1, N, N]
        for block in self.blocks:
            e = block(e, attn_mask)
        out = self.head(self.norm(e)).transpose(1, 2)  # [B, P, N]
        return self.finish(out * std + mean, x)
