"""Normalisation of model inputs: traffic (fitted statistics), actions and counts (fixed).

Traffic ``s`` (MB per slot, ≥ 0) enters the network as ``z = (log1p(s / scale) - mean) / std``.
``scale``, ``mean`` and ``std`` are buffers of ``TrafficNormalizer`` fitted once on training data
(``fit``) and saved with the checkpoint. Actions and counts use fixed affine maps (below), so
nothing else needs fitting.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ACTION_FEATURES = 6
"""Per cell per slot: power, sin(azimuth), cos(azimuth), mech tilt, elec tilt, active flag."""


class TrafficNormalizer(nn.Module):
    """``log1p(traffic / scale)`` standardised with ``mean`` / ``std`` (scalar buffers)."""

    scale: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    fitted: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("mean", torch.tensor(0.0))
        self.register_buffer("std", torch.tensor(1.0))
        self.register_buffer("fitted", torch.tensor(False))

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted)

    @torch.no_grad()
    def fit(
        self, traffic: np.ndarray | torch.Tensor, active: np.ndarray | torch.Tensor | None = None
    ) -> dict[str, float]:
        """Fit the statistics on ``traffic`` (any shape, MB per slot) over ``active`` entries.

        ``scale`` is the median of the positive active traffic (typical cells map to
        ``log1p(1)``); ``mean`` / ``std`` are those of ``log1p(traffic / scale)`` over the active
        entries. Returns the fitted ``{"scale", "mean", "std"}``.
        """
        x = _to_numpy(traffic).astype(np.float64)
        if active is not None:
            a = _to_numpy(active).astype(bool)
            if a.shape != x.shape:
                raise ValueError(f"fit: active shape {a.shape} != traffic shape {x.shape}")
            x = x[a]
        x = x[np.isfinite(x)].ravel()
        if x.size == 0:
            raise ValueError("fit: no finite active traffic values to fit on")
        if (x < 0).any():
            raise ValueError(f"fit: traffic must be >= 0, found {x.min():g}")
        positive = x[x > 0]
        scale = float(np.median(positive)) if positive.size else 1.0
        scale = max(scale, 1e-6)
        y = np.log1p(x / scale)
        mean, std = float(y.mean()), max(float(y.std()), 1e-3)
        self.set_stats(scale, mean, std)
        return {"scale": scale, "mean": mean, "std": std}

    @torch.no_grad()
    def set_stats(self, scale: float, mean: float, std: float) -> None:
        """Set the statistics directly (e.g. from a checkpoint's JSON)."""
        for name, v in (("scale", scale), ("std", std)):
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"normaliser {name} must be finite and > 0, got {v}")
        if not math.isfinite(mean):
            raise ValueError(f"normaliser mean must be finite, got {mean}")
        self.scale.fill_(scale)
        self.mean.fill_(mean)
        self.std.fill_(std)
        self.fitted.fill_(True)

    def stats(self) -> dict[str, float]:
        return {"scale": float(self.scale), "mean": float(self.mean), "std": float(self.std)}

    def normalize(self, traffic: torch.Tensor) -> torch.Tensor:
        """Physical traffic (≥ 0; negatives are clamped to 0) → normalised ``z``, same shape."""
        return (torch.log1p(traffic.clamp_min(0.0) / self.scale) - self.mean) / self.std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised ``z`` → physical traffic ≥ 0, same shape."""
        return (torch.expm1(z * self.std + self.mean) * self.scale).clamp_min(0.0)

    def zero_level(self) -> torch.Tensor:
        """Normalised value of zero traffic (scalar tensor)."""
        return -self.mean / self.std


def normalize_actions(actions: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Physical actions ``[..., 4]`` plus the active flag ``[...]`` → features ``[..., 6]``.

    power → ``(p − 38) / 8``; azimuth → ``(sin, cos)``; mech tilt → ``(t − 7.5) / 7.5``;
    elec tilt → ``(t − 6) / 6``; active → ``0 / 1``. The five parameter features of switched-off
    cells are set to 0 (their parameters carry no information) and non-finite values become 0.
    """
    power, azimuth, mech, elec = actions.unbind(-1)
    rad = torch.deg2rad(azimuth)
    feats = torch.stack(
        [
            (power - 38.0) / 8.0,
            torch.sin(rad),
            torch.cos(rad),
            (mech - 7.5) / 7.5,
            (elec - 6.0) / 6.0,
        ],
        dim=-1,
    )
    on = active.unsqueeze(-1)
    feats = torch.where(on & torch.isfinite(feats), feats, torch.zeros((), dtype=feats.dtype))
    return torch.cat([feats, on.to(feats.dtype)], dim=-1)


def normalize_counts(counts: torch.Tensor, log_scale: float) -> torch.Tensor:
    """Non-negative counts (POI, OD flows) → ``log1p(counts) / log_scale``; NaN/neg → 0."""
    c = torch.nan_to_num(counts, nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0.0)
    return torch.log1p(c) / log_scale


def _to_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _prediction_targets(
    normalizer: TrafficNormalizer, batch: dict[str, torch.Tensor] | object, pred: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The last ``P`` slots of a batch for a prediction ``[B, P, N]``: ``(target_mb,
    target (normalised), valid)``, ``valid`` = real cells active in the target slot."""
    h = batch["traffic"].shape[1] - pred.shape[1]
    target_mb = torch.nan_to_num(batch["traffic"][:, h:].to(pred.device))
    valid = (
        batch["active"][:, h:].to(torch.bool) & batch["cell_mask"][:, None, :].to(torch.bool)
    ).to(pred.device)
    return target_mb, normalizer.normalize(target_mb), valid


def masked_traffic_loss(
    normalizer: TrafficNormalizer,
    batch: dict[str, torch.Tensor] | object,
    pred: torch.Tensor,
    loss: str = "mse",
    huber_delta: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of a normalised prediction ``[B, P, N]`` against the last ``P`` slots of a batch.

    Averaged in normalised space over real cells active in the target slot (``loss`` is
    ``"mse"`` or ``"huber"``). Returns ``(loss, metrics)``; metrics: ``loss``, ``mse``, ``mae``
    (normalised), ``mae_mb`` (MB per slot) and ``n_targets``. Shared by MobiWM, the baseline
    world models and the trainer's multi-chunk loss.
    """
    target_mb, target, valid = _prediction_targets(normalizer, batch, pred)
    diff = torch.where(valid, pred - target, torch.zeros((), dtype=pred.dtype))
    count = valid.sum().clamp_min(1)
    if loss == "huber":
        per = F.huber_loss(diff, torch.zeros_like(diff), delta=huber_delta, reduction="none")
    else:
        per = diff**2
    value = per.sum() / count
    with torch.no_grad():
        err_mb = torch.where(valid, normalizer.denormalize(pred) - target_mb, 0.0).abs()
        metrics = {
            "loss": float(value.detach()),
            "mse": float((diff.detach() ** 2).sum() / count),
            "mae": float(diff.detach().abs().sum() / count),
            "mae_mb": float(err_mb.sum() / count),
            "n_targets": float(valid.sum()),
        }
    return value, metrics


def paired_delta_loss(
    normalizer: TrafficNormalizer,
    batch: dict[str, torch.Tensor] | object,
    pred: torch.Tensor,
    pairs: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Counterfactual pair loss: squared error of the predicted *difference* between two
    batch rows against the true difference, in normalised space.

    ``pairs [M, 2]`` holds row indices ``(a, b)`` of windows that share demand and fading but
    not actions (a map and its branch, same slots), so ``z_a − z_b`` is the effect of the
    actions alone. Averaged over cells that are real and active in both rows' target slots.
    Returns ``(loss, {"pair_mse": ...})``.
    """
    _, target, valid = _prediction_targets(normalizer, batch, pred)
    a, b = pairs[:, 0].to(pred.device), pairs[:, 1].to(pred.device)
    both = valid[a] & valid[b]
    err = (pred[a] - pred[b]) - (target[a] - target[b])
    value = torch.where(both, err, torch.zeros((), dtype=pred.dtype)).pow(2).sum()
    value = value / both.sum().clamp_min(1)
    return value, {"pair_mse": float(value.detach())}
