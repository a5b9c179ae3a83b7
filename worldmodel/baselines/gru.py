"""GRU world model: an action-conditioned per-cell GRU encoder/decoder (the paper's ``-WM`` style)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from worldmodel.baselines.interface import Batch
from worldmodel.baselines.learned import (
    CELL_FEATURES,
    BaselineConfig,
    LearnedWorldModel,
    check_unit_interval,
)


@dataclass(frozen=True)
class GRUConfig(BaselineConfig):
    """Architecture of ``GRUWorldModel``. Every field is saved in the checkpoint."""

    hidden: int = 64
    """GRU state width."""
    layers: int = 1
    """Stacked GRU layers (encoder and decoder each)."""
    dropout: float = 0.0
    """Dropout between stacked GRU layers and before the head (training only)."""
    predict_residual: bool = True
    """Each decoded slot predicts the change from the previous slot (normalised space)."""

    positive_fields: ClassVar[tuple[str, ...]] = (
        *BaselineConfig.positive_fields,
        "hidden",
        "layers",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_unit_interval(self, "dropout")


GRU_INPUTS = CELL_FEATURES
"""Per cell per slot: normalised traffic, action features (``normalize_actions``), time."""


class GRUWorldModel(LearnedWorldModel):
    """Action-conditioned per-cell GRU world model (weights shared by all cells).

    Encoder: a GRU over the ``H`` history slots of ``[z_t, action features_t, time_t]`` where
    ``z = normalizer.normalize(traffic)`` (the same ``TrafficNormalizer`` as MobiWM, fitted by
    the trainer) and the action features are ``normalize_actions`` (power, sin/cos azimuth,
    tilts, active flag). Decoder: a GRU stepped over the ``P`` future slots, fed
    ``[z_prev, future action features_t, time_t]`` where ``z_prev`` is its own previous output
    (the last history value for the first step); a linear head gives ``z_t`` (plus ``z_prev``
    with ``predict_residual``). Inactive future slots output the zero-traffic level and feed it
    back. Cells never interact, so padded cells cannot affect real ones; they are skipped.

    Build with ``GRUWorldModel(GRUConfig(...))`` or ``GRUWorldModel(history=8, horizon=4)``.
    """

    config_class = GRUConfig
    cfg: GRUConfig

    def __init__(self, cfg: GRUConfig | None = None, **overrides) -> None:
        super().__init__(cfg, **overrides)
        cfg = self.cfg
        drop = cfg.dropout if cfg.layers > 1 else 0.0
        self.encoder = nn.GRU(GRU_INPUTS, cfg.hidden, cfg.layers, batch_first=True, dropout=drop)
        self.decoder = nn.GRU(GRU_INPUTS, cfg.hidden, cfg.layers, batch_first=True, dropout=drop)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden, 1)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Normalised prediction ``[B, P, N]`` of the last ``P`` slots of a window batch.

        Reads ``traffic[:, :H]`` only, all ``T`` slots of actions, active flags and time.
        Inactive / padded cells hold the normalised zero-traffic value.
        """
        cfg = self.cfg
        h, p = cfg.history, cfg.horizon
        b, n = self.check_batch(batch)
        t = h + p
        dev = self.device
        mask = batch["cell_mask"].to(dev, torch.bool)  # [B, N]
        zero_level = self.normalizer.zero_level().to(dev)
        out = zero_level.expand(b, p, n).clone()
        if not bool(mask.any()):
            return out

        # gather the real cells: [M, T, ...] with M = number of real cells in the batch
        def cells(x: torch.Tensor) -> torch.Tensor:
            return x.to(dev).movedim(1, 2)[mask]  # [B, T, N, ...] -> [M, T, ...]

        traffic = torch.nan_to_num(cells(batch["traffic"][:, :h].to(torch.float32)))
        active = cells(batch["active"].to(torch.bool))  # [M, T]
        feats = self.action_features(cells(batch["actions"].to(torch.float32)), active)
        rows = torch.nonzero(mask, as_tuple=True)[0]
        time = self.time_features(batch["slot_of_day"].to(dev), batch["day_of_week"].to(dev))
        time = time[rows]  # [M, T, 4]

        z_hist = self.normalizer.normalize(traffic)  # [M, H]
        enc_in = torch.cat([z_hist[..., None], feats[:, :h], time[:, :h]], dim=-1)
        _, state = self.encoder(enc_in)
        prev = z_hist[:, -1]
        preds = []
        for j in range(h, t):
            step = torch.cat([prev[:, None, None], feats[:, j : j + 1], time[:, j : j + 1]], -1)
            y, state = self.decoder(step, state)
            z = self.head(self.drop(y[:, 0])).squeeze(-1)
            if cfg.predict_residual:
                z = z + prev
            z = torch.where(active[:, j], z, zero_level)
            preds.append(z)
            prev = z
        pred = torch.stack(preds, dim=1)  # [M, P]
        out = out.movedim(1, 2).clone()  # [B, N, P]
        out[mask] = pred.to(out.dtype)
        return out.movedim(2, 1)
