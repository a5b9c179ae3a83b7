"""What the learned baseline world models share: a typed config, the inputs, the loss, inference.

A learned baseline is an ``nn.Module`` with the trainer's API — ``forward(batch) → [B, P, N]``
normalised traffic (``TrafficNormalizer``, fitted by the trainer), ``loss_from_prediction``,
``loss``, a ``normalizer`` — and the ``WorldModel`` batch interface (``predict_batch`` in MB per
slot, ``rollout_batch`` feeding its predictions back, from ``BatchWorldModel``). Models with
training terms beyond the prediction error (a KL, a latent-consistency loss) compute them in
``forward`` while training and leave them in ``aux_loss`` / ``aux_metrics``;
``loss_from_prediction`` adds them, so the trainer's multi-chunk loss needs nothing else.
Validation runs in eval mode, without them: runs are selected on the prediction error alone.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from worldmodel.baselines.interface import Batch, BatchWorldModel, check_window, future_valid
from worldmodel.model.config import check_config_fields
from worldmodel.model.normalize import (
    ACTION_FEATURES,
    TrafficNormalizer,
    masked_traffic_loss,
    normalize_actions,
)

TIME_FEATURES = 4
"""sin/cos of the slot of day and of the day of week."""
CELL_FEATURES = 1 + ACTION_FEATURES + TIME_FEATURES
"""Per cell per slot: normalised traffic, action features (``normalize_actions``), time."""


@dataclass(frozen=True)
class BaselineConfig:
    """Fields every learned baseline has. Every field is saved in the checkpoint."""

    history: int = 8
    """``H``: history slots the model reads."""
    horizon: int = 4
    """``P``: future slots predicted per chunk."""
    use_actions: bool = True
    """False: the four parameters are hidden from the model (the active flag stays)."""
    loss: str = "mse"
    """Prediction loss in normalised space: ``"mse"`` or ``"huber"``."""
    huber_delta: float = 1.0
    """Transition point of the Huber loss (normalised units)."""
    slots_per_day: int = 96
    """Period of the slot-of-day sin/cos feature."""
    days_per_week: int = 7
    """Period of the day-of-week sin/cos feature."""

    positive_fields: ClassVar[tuple[str, ...]] = (
        "history",
        "horizon",
        "slots_per_day",
        "days_per_week",
    )
    """Integer fields that must be >= 1 (subclasses extend it)."""

    def __post_init__(self) -> None:
        check_config_fields(self)
        name = type(self).__name__
        for field in self.positive_fields:
            if getattr(self, field) < 1:
                raise ValueError(f"{name}: {field} must be >= 1, got {getattr(self, field)}")
        if self.loss not in ("mse", "huber"):
            raise ValueError(f"{name}: loss must be 'mse' or 'huber', got {self.loss!r}")
        if not self.huber_delta > 0:
            raise ValueError(f"{name}: huber_delta must be > 0, got {self.huber_delta}")

    @property
    def window(self) -> int:
        """``T = H + P``: slots of one training window."""
        return self.history + self.horizon

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


def check_non_negative(cfg: Any, *names: str) -> None:
    """``ValueError`` unless every named field is >= 0 (NaN fails)."""
    for name in names:
        v = getattr(cfg, name)
        if not v >= 0:
            raise ValueError(f"{type(cfg).__name__}: {name} must be >= 0, got {v}")


def check_season_context(cfg: Any) -> None:
    """Fields ``season`` (>= 0) and ``context`` of a model that scans the last ``context``
    history slots with each slot's value one ``season`` earlier: ``history >= season + context``."""
    check_non_negative(cfg, "season")
    if cfg.history < cfg.season + cfg.context:
        raise ValueError(
            f"{type(cfg).__name__}: history must be >= season + context = {cfg.season} + "
            f"{cfg.context} = {cfg.season + cfg.context}, got {cfg.history}"
        )


def check_unit_interval(cfg: Any, *names: str) -> None:
    """``ValueError`` unless every named field lies in ``[0, 1)``."""
    for name in names:
        v = getattr(cfg, name)
        if not 0.0 <= v < 1.0:
            raise ValueError(f"{type(cfg).__name__}: {name} must be in [0, 1), got {v}")


@dataclass
class MapInputs:
    """A window batch as dense per-map tensors on the model's device.

    ``z_hist [B, H, N]`` normalised history traffic (non-finite → 0 MB); ``feats [B, T, N, 6]``
    action features (``normalize_actions``; parameters zeroed when the model hides them);
    ``time [B, T, 4]``; ``active [B, T, N]`` and ``mask [B, N]`` (real cells) as bool;
    ``xy [B, N, 2]`` cell positions as fractions of the map's side (zeros when the batch has no
    ``cell_xy``); ``zero [ ]`` the normalised zero-traffic level.
    """

    z_hist: torch.Tensor
    feats: torch.Tensor
    time: torch.Tensor
    active: torch.Tensor
    mask: torch.Tensor
    xy: torch.Tensor
    zero: torch.Tensor

    @property
    def valid(self) -> torch.Tensor:
        """``[B, T, N]`` bool: real cells active in each slot."""
        return self.active & self.mask[:, None, :]


class LearnedWorldModel(nn.Module, BatchWorldModel):
    """Base of the trainable baselines: config handling, inputs, loss and inference.

    Subclasses set ``config_class`` and implement ``forward(batch) → [B, P, N]`` normalised
    traffic with the zero level (``MapInputs.zero``) at inactive and padded cells; while
    training they may set ``aux_loss`` (a scalar added to the prediction loss) and
    ``aux_metrics``. Build with ``Model(Config(...))`` or ``Model(history=8, ...)``.
    """

    config_class: ClassVar[type[BaselineConfig]] = BaselineConfig

    def __init__(self, cfg: BaselineConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        cls = self.config_class
        if cfg is None:
            cfg = cls()
        if not isinstance(cfg, cls):
            raise TypeError(
                f"{type(self).__name__} expects a {cls.__name__}, got {type(cfg).__name__}"
            )
        unknown = sorted(set(overrides) - set(cls.field_names()))
        if unknown:
            raise ValueError(
                f"unknown {cls.__name__} field(s) {unknown}; known: {cls.field_names()}"
            )
        self.cfg = dataclasses.replace(cfg, **overrides)
        self.normalizer = TrafficNormalizer()
        self.aux_loss: torch.Tensor | None = None
        self.aux_metrics: dict[str, float] = {}

    # ------------------------------------------------------------------ helpers
    @property
    def history(self) -> int:  # type: ignore[override]
        return self.cfg.history

    @property
    def horizon(self) -> int:  # type: ignore[override]
        return self.cfg.horizon

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def time_features(self, slot_of_day: torch.Tensor, day_of_week: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` slot of day and day of week → ``[B, T, 4]`` sin/cos features."""
        a = 2 * math.pi * slot_of_day.to(torch.float32) / self.cfg.slots_per_day
        d = 2 * math.pi * day_of_week.to(torch.float32) / self.cfg.days_per_week
        return torch.stack([a.sin(), a.cos(), d.sin(), d.cos()], dim=-1)

    def check_batch(self, batch: Batch) -> tuple[int, int]:
        """Validate a window batch of ``H + P`` slots; returns ``(B, N)``."""
        h, p = self.cfg.history, self.cfg.horizon
        for key in ("actions", "slot_of_day", "day_of_week"):
            if key not in batch:
                raise ValueError(f"batch is missing key {key!r}")
        b, n = check_window(batch, h, p)
        t = h + p
        if tuple(batch["actions"].shape) != (b, t, n, 4):
            raise ValueError(
                f"actions: expected {[b, t, n, 4]}, got {list(batch['actions'].shape)}"
            )
        for key in ("slot_of_day", "day_of_week"):
            if tuple(batch[key].shape) != (b, t):
                raise ValueError(f"{key}: expected {[b, t]}, got {list(batch[key].shape)}")
        return b, n

    def action_features(self, actions: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """``normalize_actions``, with the parameter features zeroed when the model hides them."""
        feats = normalize_actions(actions, active)
        if not self.cfg.use_actions:
            feats = torch.cat([torch.zeros_like(feats[..., :-1]), feats[..., -1:]], dim=-1)
        return feats

    def map_inputs(self, batch: Batch) -> MapInputs:
        """The batch as dense normalised tensors on the model's device (``MapInputs``)."""
        b, n = self.check_batch(batch)
        h = self.cfg.history
        dev = self.device
        traffic = torch.nan_to_num(batch["traffic"][:, :h].to(dev, torch.float32))
        active = batch["active"].to(dev, torch.bool)
        mask = batch["cell_mask"].to(dev, torch.bool)
        feats = self.action_features(batch["actions"].to(dev, torch.float32), active)
        time = self.time_features(batch["slot_of_day"].to(dev), batch["day_of_week"].to(dev))
        if "cell_xy" in batch and "extent_m" in batch:
            extent = batch["extent_m"].to(dev, torch.float32).reshape(b, 1, 1).clamp_min(1.0)
            xy = torch.nan_to_num(batch["cell_xy"].to(dev, torch.float32)) / extent
        else:
            xy = torch.zeros(b, n, 2, device=dev)
        return MapInputs(
            z_hist=self.normalizer.normalize(traffic),
            feats=feats,
            time=time,
            active=active,
            mask=mask,
            xy=xy,
            zero=self.normalizer.zero_level().to(dev),
        )

    def finish(self, z: torch.Tensor, x: MapInputs) -> torch.Tensor:
        """Prediction ``[B, P, N]`` with the zero level at inactive / padded future slots."""
        h = self.cfg.history
        return torch.where(x.valid[:, h:], z, x.zero)

    # ------------------------------------------------------------------ training API
    def forward(self, batch: Batch) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss_from_prediction(
        self, batch: Batch, pred: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Masked prediction loss of a normalised ``[B, P, N]`` (``masked_traffic_loss``), plus
        the auxiliary terms of the last training ``forward`` (their metrics merged in)."""
        loss, metrics = masked_traffic_loss(
            self.normalizer, batch, pred, self.cfg.loss, self.cfg.huber_delta
        )
        if self.training and self.aux_loss is not None:
            loss = loss + self.aux_loss
            metrics.update(self.aux_metrics)
            metrics["loss"] = float(loss.detach())
        return loss, metrics

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss over real cells active in the target slots. Returns ``(loss, metrics)`` with
        ``loss``, ``mse``, ``mae`` (normalised), ``mae_mb`` (MB per slot) and ``n_targets``."""
        return self.loss_from_prediction(batch, self(batch))

    # ------------------------------------------------------------------ inference API
    def predict_batch(self, batch: Batch) -> torch.Tensor:
        """Traffic ``[B, P, N]`` MB per slot (exactly 0 for inactive / padded cells); no
        gradients, dropout off."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                z = self(batch)
        finally:
            self.train(was_training)
        valid = future_valid(batch, self.history).to(z.device)
        return torch.where(valid, self.normalizer.denormalize(z), torch.zeros((), dtype=z.dtype))
