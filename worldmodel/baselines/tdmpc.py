"""TD-MPC2-style latent dynamics world model (Hansen et al., ICLR 2024) for per-cell traffic.

Each cell of a map has its own latent state; weights are shared by all cells. The model reads
the normalised history traffic ``traffic[:, :H]`` (``TrafficNormalizer``), the action features
of every slot (``normalize_actions``), the time features and the cell positions.

* Observation of a cell at slot ``t``: its last ``context`` normalised traffic values up to
  ``t``; with ``season > 0`` the value one season before slot ``t + 1`` (the slot predicted
  next); the time features of ``t``; the cell position ``xy``.
* Encoder ``h``: MLP (Linear → LayerNorm → Mish, as TD-MPC2) of [observation, action features
  of ``t``] → latent ``z_t`` of ``latent`` dims, normalised by SimNorm (softmax over groups of
  ``simnorm_dim``).
* Dynamics ``d``: MLP of [``z_t``, action features and time of ``t + 1``, the seasonal value
  for ``t + 1``, the map message] → ``z_{t+1}`` (SimNorm). The message is the mean of ``z_t``
  over the map's real cells (padded cells excluded), so cells interact (mean field).
* Decoder: MLP ``z_t`` → normalised traffic of slot ``t`` as a residual from the last history
  value ``z_hist[:, -1]`` (its last layer is zero-initialised, as TD-MPC2's reward and Q heads,
  so an untrained model predicts persistence).

Prediction: ``z_{H-1} = h(obs_{H-1})``, ``d`` rolled over the ``P`` future slots with their
actions, each latent decoded; deterministic, never reads ``traffic[:, H:]``. Seasonal values
of future slots (``season <= P``) come from the model's own predictions.

Training (``aux_loss``, train mode only) reads the window's future truth ``traffic[:, H:]``
that the trainer provides: TD-MPC2's multi-step latent consistency
``consistency_weight · Σ_k rho^k · mean ||z_{H+k} − sg(h(obs_{H+k}))||²`` (mean over latent
dims, as the reference code's ``mse_loss``, and over real active cells) and a decoding loss
``recon_weight · mean (dec(h(obs_t)) − z_t)²`` of the encoder's own latents for the last
history slot and the ``P`` future slots (the last history slot alone would be trivial with the
residual decoder). The prediction error itself comes from the trainer's loss.

Departures from TD-MPC2: no reward, value or policy heads (no planning) — a traffic decoder
instead; per-cell latents coupled by a mean-field map message; no target encoder network
(TD-MPC2 also uses the online encoder under ``no_grad``); no dropout by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from worldmodel.baselines.interface import Batch
from worldmodel.baselines.learned import (
    TIME_FEATURES,
    BaselineConfig,
    LearnedWorldModel,
    MapInputs,
    check_non_negative,
    check_season_context,
    check_unit_interval,
)
from worldmodel.model.normalize import ACTION_FEATURES


@dataclass(frozen=True)
class TDMPCConfig(BaselineConfig):
    """Architecture and training terms of ``TDMPCWorldModel``. Saved in the checkpoint."""

    history: int = 104
    """``H``: history slots; must be >= ``season + context``."""
    context: int = 8
    """Traffic values up to slot ``t`` in the observation of slot ``t``."""
    season: int = 96
    """Seasonal lag in slots (0: no seasonal input)."""
    latent: int = 128
    """Latent dims per cell (a multiple of ``simnorm_dim``)."""
    simnorm_dim: int = 8
    """Group size of SimNorm (softmax per group)."""
    hidden: int = 256
    """Width of the MLPs' hidden layers."""
    layers: int = 2
    """Hidden layers of each MLP (encoder, dynamics, decoder)."""
    dropout: float = 0.0
    """Dropout after each hidden Linear (training only)."""
    rho: float = 0.5
    """Temporal discount of the consistency loss, in (0, 1]."""
    consistency_weight: float = 20.0
    """Weight of the latent consistency loss (TD-MPC2's coefficient)."""
    recon_weight: float = 1.0
    """Weight of the decoding loss of the encoder's latents."""

    positive_fields: ClassVar[tuple[str, ...]] = (
        *BaselineConfig.positive_fields,
        "context",
        "latent",
        "simnorm_dim",
        "hidden",
        "layers",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_unit_interval(self, "dropout")
        name = type(self).__name__
        check_season_context(self)
        if self.latent % self.simnorm_dim:
            raise ValueError(
                f"{name}: latent must be a multiple of simnorm_dim {self.simnorm_dim}, "
                f"got {self.latent}"
            )
        if not 0.0 < self.rho <= 1.0:
            raise ValueError(f"{name}: rho must be in (0, 1], got {self.rho}")
        check_non_negative(self, "consistency_weight", "recon_weight")


def simnorm(x: torch.Tensor, group: int) -> torch.Tensor:
    """SimNorm: softmax over consecutive groups of ``group`` features of the last axis."""
    shape = x.shape
    return F.softmax(x.reshape(*shape[:-1], -1, group), dim=-1).reshape(shape)


class SimNorm(nn.Module):
    """TD-MPC2's simplicial normalisation (``simnorm``) as a module."""

    def __init__(self, group: int) -> None:
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return simnorm(x, self.group)


def mlp(d_in: int, d_out: int, cfg: TDMPCConfig, simnorm_out: bool) -> nn.Sequential:
    """``layers`` × (Linear → Dropout → LayerNorm → Mish), then Linear (→ LayerNorm → SimNorm)."""
    mods: list[nn.Module] = []
    d = d_in
    for _ in range(cfg.layers):
        mods += [nn.Linear(d, cfg.hidden), nn.Dropout(cfg.dropout), nn.LayerNorm(cfg.hidden)]
        mods.append(nn.Mish())
        d = cfg.hidden
    mods.append(nn.Linear(d, d_out))
    if simnorm_out:
        mods += [nn.LayerNorm(d_out), SimNorm(cfg.simnorm_dim)]
    return nn.Sequential(*mods)


class TDMPCWorldModel(LearnedWorldModel):
    """TD-MPC2-style per-cell latent dynamics with a mean-field map message (module docstring).

    Build with ``TDMPCWorldModel(TDMPCConfig(...))`` or ``TDMPCWorldModel(history=8, ...)``.
    """

    config_class = TDMPCConfig
    cfg: TDMPCConfig

    def __init__(self, cfg: TDMPCConfig | None = None, **overrides: object) -> None:
        super().__init__(cfg, **overrides)
        cfg = self.cfg
        seasonal = 1 if cfg.season > 0 else 0
        obs = cfg.context + seasonal + TIME_FEATURES + 2
        self.encoder = mlp(obs + ACTION_FEATURES, cfg.latent, cfg, simnorm_out=True)
        dyn_in = 2 * cfg.latent + ACTION_FEATURES + TIME_FEATURES + seasonal
        self.dynamics = mlp(dyn_in, cfg.latent, cfg, simnorm_out=True)
        self.decoder = mlp(cfg.latent, 1, cfg, simnorm_out=False)
        nn.init.zeros_(self.decoder[-1].weight)
        nn.init.zeros_(self.decoder[-1].bias)

    # ------------------------------------------------------------------ parts
    def observe(self, seq: torch.Tensor, x: MapInputs, slots: list[int]) -> torch.Tensor:
        """Encoder inputs ``[B, S, N, D]`` of window ``slots`` from normalised traffic
        ``seq [B, L, N]`` (window slots ``0 .. L-1``): context, seasonal value, time, xy and the
        slot's action features."""
        cfg = self.cfg
        b, _, n = seq.shape
        at = torch.tensor(slots, device=seq.device)
        idx = at[:, None] - torch.arange(cfg.context - 1, -1, -1, device=seq.device)
        parts = [seq[:, idx].permute(0, 1, 3, 2)]  # [B, S, N, C]
        if cfg.season > 0:
            parts.append(seq[:, at + 1 - cfg.season, :, None])
        parts.append(x.time[:, at, None, :].expand(-1, -1, n, -1))
        parts.append(x.xy[:, None].expand(-1, len(slots), -1, -1))
        parts.append(x.feats[:, at])
        return torch.cat(parts, dim=-1)

    def decode(self, z: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """Normalised traffic ``[..., N]`` of latents ``[..., N, latent]`` (residual on ``base``)."""
        return self.decoder(z).squeeze(-1) + base

    def step(
        self, z: torch.Tensor, x: MapInputs, j: int, seasonal: torch.Tensor | None
    ) -> torch.Tensor:
        """Latents ``[B, N, latent]`` of slot ``j`` from those of slot ``j - 1``."""
        real = x.mask[..., None].to(z.dtype)
        msg = (z * real).sum(1, keepdim=True) / real.sum(1, keepdim=True).clamp_min(1.0)
        n = z.shape[1]
        parts = [z, x.feats[:, j], x.time[:, j, None, :].expand(-1, n, -1)]
        if seasonal is not None:
            parts.append(seasonal[..., None])
        parts.append(msg.expand(-1, n, -1))
        return self.dynamics(torch.cat(parts, dim=-1))

    # ------------------------------------------------------------------ forward
    def forward(self, batch: Batch) -> torch.Tensor:
        """Normalised prediction ``[B, P, N]`` of the last ``P`` slots of a window batch.

        Reads ``traffic[:, :H]`` only for the prediction; in train mode the auxiliary terms
        also read the future truth ``traffic[:, H:]`` (``aux_loss``, ``aux_metrics``).
        """
        cfg = self.cfg
        h, p, s = cfg.history, cfg.horizon, cfg.season
        x = self.map_inputs(batch)
        seq = x.z_hist
        base = seq[:, -1]
        valid = x.valid
        z = self.encoder(self.observe(seq, x, [h - 1]))[:, 0]
        latents, preds = [], []
        for k in range(p):
            j = h + k
            z = self.step(z, x, j, seq[:, j - s] if s > 0 else None)
            pred = self.decode(z, base)
            latents.append(z)
            preds.append(pred)
            if 0 < s <= p:  # later seasonal inputs may need this slot's prediction
                seq = torch.cat([seq, torch.where(valid[:, j], pred, x.zero)[:, None]], dim=1)
        if self.training:
            self.aux_terms(batch, x, torch.stack(latents, dim=1))
        else:
            self.aux_loss = None
            self.aux_metrics = {}
        return self.finish(torch.stack(preds, dim=1), x)

    def aux_terms(self, batch: Batch, x: MapInputs, latents: torch.Tensor) -> None:
        """Set ``aux_loss`` / ``aux_metrics`` (``consistency``, ``recon``) from the rolled
        latents ``[B, P, N, latent]`` and the window's future truth (training only)."""
        cfg = self.cfg
        h, p = cfg.history, cfg.horizon
        future = torch.nan_to_num(batch["traffic"][:, h:].to(self.device, torch.float32))
        truth = torch.cat([x.z_hist, self.normalizer.normalize(future)], dim=1)  # [B, T, N]
        enc = self.encoder(self.observe(truth, x, list(range(h - 1, h + p))))  # [B, P+1, N, L]
        valid = x.valid[:, h - 1 :].to(latents.dtype)  # [B, P+1, N]
        err = (latents - enc[:, 1:].detach()).pow(2).mean(-1)  # [B, P, N]
        per_step = (err * valid[:, 1:]).sum((0, 2)) / valid[:, 1:].sum((0, 2)).clamp_min(1.0)
        weights = cfg.rho ** torch.arange(p, device=err.device, dtype=err.dtype)
        consistency = (weights * per_step).sum()
        recon_err = (self.decode(enc, x.z_hist[:, None, -1]) - truth[:, h - 1 :]).pow(2)
        recon = (recon_err * valid).sum() / valid.sum().clamp_min(1.0)
        self.aux_loss = cfg.consistency_weight * consistency + cfg.recon_weight * recon
        self.aux_metrics = {
            "consistency": float(consistency.detach()),
            "recon": float(recon.detach()),
        }
