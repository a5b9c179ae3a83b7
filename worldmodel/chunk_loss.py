"""The trainer's multi-chunk loss: windows cut into ``H + P`` chunks, each chunk after the first
reading the model's own predictions as history (Eq. 5), with the counterfactual pair loss, the
pushforward trick and history noise. Shared by MobiWM and the learned baselines (any model with
``forward(batch) → [B, P, N]`` normalised traffic, ``loss_from_prediction`` and ``normalizer``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from worldmodel.model.normalize import paired_delta_loss

WINDOW_KEYS = ("traffic", "actions", "active", "slot_of_day", "day_of_week", "od")
"""Batch entries with a time axis (axis 1); the others are per window."""


def _next_history(sub: Mapping[str, torch.Tensor], pred_mb: torch.Tensor, h: int, p: int):
    """The history of the chunk after ``sub``: its last ``H − P`` history slots, then the
    ``P`` predicted ones (MB)."""
    return torch.cat([sub["traffic"][:, p:h], pred_mb], dim=1)[:, -h:]


def chunk_batch(batch: Mapping[str, torch.Tensor], k: int, h: int, p: int, history=None) -> dict:
    """The ``k``-th ``H + P`` sub-window of a multi-chunk batch; optional replaced history."""
    a, b = k * p, k * p + h + p
    out = {}
    for key, v in batch.items():
        if key in WINDOW_KEYS:
            out[key] = v[:, a:b]
        else:
            out[key] = v
    if history is not None:
        out["traffic"] = torch.cat([history, out["traffic"][:, h:]], dim=1)
    return out


def perturb_history(
    batch: Mapping[str, torch.Tensor],
    pairs: torch.Tensor | None,
    sigma: float,
    history: int,
    rng: np.random.Generator,
) -> dict[str, torch.Tensor]:
    """``batch`` with its first ``history`` traffic slots multiplied by ``exp(σ·n)``.

    ``n = (offset + jitter) / √2``: a standard-normal offset per (window, cell) and a jitter per
    (window, slot, cell), so the history looks like a rollout that drifted and is noisy. Targets
    are untouched. The second window of each pair in ``pairs [M, 2]`` gets the first one's
    noise, so a pair's difference is still caused by the actions alone.
    """
    traffic = batch["traffic"]
    b, _, n = traffic.shape
    noise = (rng.standard_normal((b, 1, n)) + rng.standard_normal((b, history, n))) / math.sqrt(2)
    if pairs is not None and len(pairs) > 0:
        p = pairs.cpu().numpy()
        noise[p[:, 1]] = noise[p[:, 0]]
    factor = torch.from_numpy(np.exp(sigma * noise)).to(traffic)
    out = dict(batch)
    out["traffic"] = torch.cat([traffic[:, :history] * factor, traffic[:, history:]], dim=1)
    return out


def skip_slots(batch: Mapping[str, torch.Tensor], n: int) -> dict:
    """``batch`` without its first ``n`` slots (a later start of the same windows)."""
    return {k: (v[:, n:] if k in WINDOW_KEYS else v) for k, v in batch.items()}


def free_rollout(
    model: nn.Module, batch: Mapping[str, torch.Tensor], n_chunks: int, h: int, p: int
) -> dict:
    """The pushforward trick: roll ``n_chunks`` chunks from the true history without gradient
    and return the batch that starts ``n_chunks·P`` slots later, its history traffic made of
    the last true slots followed by those predictions (MB)."""
    if n_chunks == 0:
        return dict(batch)
    core = model.module if hasattr(model, "module") else model
    hist = None
    with torch.no_grad():
        for k in range(n_chunks):
            sub = chunk_batch(batch, k, h, p, hist)
            hist = _next_history(sub, core.normalizer.denormalize(model(sub)), h, p)
    out = skip_slots(batch, n_chunks * p)
    out["traffic"] = torch.cat([hist, out["traffic"][:, h:]], dim=1)
    return out


def multi_chunk_loss(
    model: nn.Module,
    batch: Mapping[str, torch.Tensor],
    n_chunks: int,
    h: int,
    p: int,
    pairs: torch.Tensor | None = None,
    pair_weight: float = 0.0,
    free_chunks: int = 0,
):
    """Sum of per-chunk losses; chunk ``k`` reads the model's own previous predictions.

    With ``pairs [M, 2]`` (rows of sibling windows) and ``pair_weight > 0`` every chunk adds
    ``pair_weight · paired_delta_loss`` (the error of the predicted action effect). With
    ``free_chunks > 0`` the batch holds that many more chunks first, rolled out without
    gradient or loss (``free_rollout``).
    """
    core = model.module if hasattr(model, "module") else model
    batch = free_rollout(model, batch, free_chunks, h, p)
    total, metrics, hist = 0.0, {}, None
    use_pairs = pairs is not None and len(pairs) > 0 and pair_weight > 0
    for k in range(n_chunks):
        sub = chunk_batch(batch, k, h, p, hist)
        pred = model(sub)
        loss, m = core.loss_from_prediction(sub, pred)
        if pairs is not None and len(pairs) > 0:
            pair_loss, pm = paired_delta_loss(core.normalizer, sub, pred, pairs)
            m.update(pm)
            if use_pairs:
                loss = loss + pair_weight * pair_loss
                m["loss"] = float(loss.detach())
        total = total + loss
        for key, v in m.items():
            metrics[f"{key}_c{k}"] = v
        if k + 1 < n_chunks:
            hist = _next_history(sub, core.normalizer.denormalize(pred), h, p)
    metrics["loss"] = float(total.detach()) / n_chunks
    if pairs is not None and len(pairs) > 0:
        metrics["pair_mse"] = sum(metrics[f"pair_mse_c{k}"] for k in range(n_chunks)) / n_chunks
    return total / n_chunks, metrics
