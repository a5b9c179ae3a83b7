"""The batch interface every world model here shares, and MobiWM's view of it (paper §5.1.2).

A ``WorldModel`` has ``history`` (``H``) and ``horizon`` (``P``) slots,
``predict_batch(batch) → [B, P, N]`` traffic (MB per slot, physical) from a window batch of
``T = H + P`` slots (the data pipeline's graph batch: ``traffic``, ``actions``, ``active``,
``cell_mask``, time and context), and ``rollout_batch(batch, n_chunks) → [B, K·P, N]`` over a
window of ``H + K·P`` slots that feeds its own predictions back as history (Eq. 5). Both read
only ``traffic[:, :H]``: the true traffic after ``H`` is never used. Inactive and padded cells
are predicted as exactly 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

TIME_KEYS: tuple[str, ...] = ("traffic", "actions", "active", "slot_of_day", "day_of_week", "od")
"""Batch keys with a time axis (axis 1); every other key is per map."""

Batch = Mapping[str, torch.Tensor]


# ---------------------------------------------------------------------- interface
@runtime_checkable
class WorldModel(Protocol):
    """What the evaluation pipeline, the env and the planner need from a world model."""

    history: int
    horizon: int

    def predict_batch(self, batch: Batch) -> torch.Tensor:
        """Traffic of slots ``H .. H+P-1`` of the window, MB per slot ``[B, P, N]``."""
        ...

    def rollout_batch(self, batch: Batch, n_chunks: int) -> torch.Tensor:
        """Autoregressive traffic of slots ``H .. H+K·P-1``, MB per slot ``[B, K·P, N]``."""
        ...


def slice_window(batch: Batch, start: int, stop: int) -> dict[str, torch.Tensor]:
    """Slots ``[start, stop)`` of every time-indexed key; per-map keys are shared (``start`` +=)."""
    out: dict[str, torch.Tensor] = {}
    for key, v in batch.items():
        out[key] = v[:, start:stop] if key in TIME_KEYS else v
    if "start" in out and start:
        out["start"] = batch["start"] + start
    return out


def align_batch(batch: Batch, model: WorldModel, n_chunks: int = 1) -> dict[str, torch.Tensor]:
    """Drop leading slots so the window is ``model.history + n_chunks·P`` slots long.

    Lets one loader with the longest history of several models serve all of them: the predicted
    slots (the last ``n_chunks·P``) stay the same for every model.
    """
    need = model.history + n_chunks * model.horizon
    t = int(batch["traffic"].shape[1])
    if t < need:
        raise ValueError(
            f"window has {t} slots; this model needs history {model.history} + {n_chunks} x "
            f"horizon {model.horizon} = {need}"
        )
    return slice_window(batch, t - need, t)


def check_window(batch: Batch, history: int, horizon: int, n_chunks: int = 1) -> tuple[int, int]:
    """Validate the keys every baseline reads; returns ``(B, N)``."""
    for key in ("traffic", "active", "cell_mask"):
        if key not in batch:
            raise ValueError(f"batch is missing key {key!r}")
    traffic = batch["traffic"]
    if traffic.dim() != 3:
        raise ValueError(f"traffic: expected [B, T, N], got {list(traffic.shape)}")
    b, t, n = traffic.shape
    if t != history + n_chunks * horizon:
        raise ValueError(
            f"traffic has T={t} slots; expected history {history} + {n_chunks} x horizon "
            f"{horizon} = {history + n_chunks * horizon}"
        )
    if tuple(batch["active"].shape) != (b, t, n):
        raise ValueError(f"active: expected {[b, t, n]}, got {list(batch['active'].shape)}")
    if tuple(batch["cell_mask"].shape) != (b, n):
        raise ValueError(f"cell_mask: expected {[b, n]}, got {list(batch['cell_mask'].shape)}")
    return b, n


def future_valid(batch: Batch, history: int) -> torch.Tensor:
    """``[B, P, N]`` bool: real cells active in the future slots."""
    return batch["active"][:, history:].to(torch.bool) & batch["cell_mask"][:, None, :].to(
        torch.bool
    )


class BatchWorldModel:
    """Mixin with the default ``rollout_batch``: ``predict_batch`` chunk by chunk (Eq. 5).

    Chunk ``k`` sees the window slots ``[k·P, k·P + H + P)``; its history traffic is the true
    history for ``k = 0`` and the model's own predictions afterwards; the future traffic slots it
    receives are zeros (never the truth). Subclasses define ``history``, ``horizon`` and
    ``predict_batch``.
    """

    history: int
    horizon: int

    def predict_batch(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def rollout_batch(self, batch: Batch, n_chunks: int) -> torch.Tensor:
        if not isinstance(n_chunks, int) or n_chunks < 1:
            raise ValueError(f"n_chunks must be an integer >= 1, got {n_chunks!r}")
        h, p = self.history, self.horizon
        b, n = check_window(batch, h, p, n_chunks)
        traffic = batch["traffic"]
        buffer = traffic[:, :h]
        blank = torch.zeros(b, p, n, dtype=traffic.dtype, device=traffic.device)
        preds = []
        for k in range(n_chunks):
            sub = slice_window(batch, k * p, k * p + h + p)
            sub["traffic"] = torch.cat([buffer, blank], dim=1)
            out = self.predict_batch(sub).to(traffic.dtype)
            preds.append(out)
            buffer = torch.cat([buffer, out], dim=1)[:, -h:]
        return torch.cat(preds, dim=1)


# ---------------------------------------------------------------------- MobiWM adapter
class MobiWMAdapter(BatchWorldModel):
    """``WorldModel`` view of a ``MobiWM``: batch in, ``MobiWM.rollout`` (context encoded once)."""

    def __init__(self, model: nn.Module, memory: str = "observed") -> None:
        from worldmodel.model.mobiwm import MEMORY_MODES, MobiWM

        if not isinstance(model, MobiWM):
            raise TypeError(f"MobiWMAdapter wraps a MobiWM, got {type(model).__name__}")
        if memory not in MEMORY_MODES:
            raise ValueError(f"memory must be one of {MEMORY_MODES}, got {memory!r}")
        self.model = model
        self.memory = memory
        self.history = model.cfg.history
        self.horizon = model.cfg.horizon

    def predict_batch(self, batch: Batch) -> torch.Tensor:
        return self.rollout_batch(batch, 1)

    def rollout_batch(
        self, batch: Batch, n_chunks: int, memory: Any = None, uncertainty: bool = False
    ) -> Any:
        """``MobiWM.rollout`` of the batch; ``memory``: a ``DailyMemory`` that overrides the
        adapter's ``memory`` mode (a rollout continued in segments); ``uncertainty``: return
        the ``Forecast`` (a model with a quantile head)."""
        if not isinstance(n_chunks, int) or n_chunks < 1:
            raise ValueError(f"n_chunks must be an integer >= 1, got {n_chunks!r}")
        h = self.history
        b, _ = check_window(batch, h, self.horizon, n_chunks)
        t = int(batch["traffic"].shape[1])
        context = {k: batch.get(k) for k in ("poi", "od", "facility", "cell_xy", "extent_m")}
        context["cell_mask"] = batch["cell_mask"]
        od_index = torch.arange(t, device=batch["traffic"].device).expand(b, t)
        return self.model.rollout(
            batch["traffic"][:, :h],
            batch["actions"][:, :h],
            batch["actions"][:, h:],
            context,
            {"cell_mask": batch["cell_mask"], "active": batch["active"]},
            {
                "slot_of_day": batch["slot_of_day"],
                "day_of_week": batch["day_of_week"],
                "od_index": od_index,
            },
            n_chunks=n_chunks,
            memory=self.memory if memory is None else memory,
            uncertainty=uncertainty,
        )


def as_world_model(model: Any, memory: str = "observed") -> WorldModel:
    """``model`` itself if it has ``predict_batch``/``rollout_batch``; a ``MobiWM`` wrapped
    (rollouts with the daily ``memory`` mode, see ``MobiWM.rollout``)."""
    if isinstance(model, WorldModel):
        return model
    return MobiWMAdapter(model, memory)
