"""Baseline world models sharing one batch interface with MobiWM (paper §5.1.2, §5.6).

Every model here follows ``WorldModel``: ``history`` (``H``) and ``horizon`` (``P``) slots,
``predict_batch(batch) → [B, P, N]`` traffic (MB per slot, physical) from a window batch of
``T = H + P`` slots (the data pipeline's graph batch: ``traffic``, ``actions``, ``active``,
``cell_mask``, time and context), and ``rollout_batch(batch, n_chunks) → [B, K·P, N]`` over a
window of ``H + K·P`` slots that feeds its own predictions back as history (Eq. 5). Both read
only ``traffic[:, :H]``: the true traffic after ``H`` is never used. Inactive and padded cells
are predicted as exactly 0.

* ``Persistence`` — every future slot repeats the last history value.
* ``SeasonalNaive`` — every future slot repeats the same slot one day (96 slots) earlier.
* ``GRUWorldModel`` — action-conditioned per-cell GRU encoder/decoder in the style of the
  paper's ``-WM`` baselines; trains with the same ``forward``/``loss`` as ``MobiWM``.
* ``MobiWMAdapter`` — wraps a ``MobiWM`` into this interface (``as_world_model``).

Static-MobiWM is ``MobiWM`` with ``ModelConfig.use_actions=False``, not a class here.
``BASELINES`` / ``build_baseline`` build the baselines by name; ``save_baseline`` /
``load_baseline`` store a ``GRUWorldModel`` in the layout of MobiWM checkpoints
(``model.safetensors`` + ``config.json``); ``save_world_model`` / ``load_world_model`` dispatch
on the model class / the checkpoint's ``format``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from worldmodel.model.checkpoint import (
    CHECKPOINT_FORMAT,
    build_config,
    check_format,
    check_model_config,
    load_checkpoint,
    load_weights,
    read_config_json,
    save_checkpoint,
    write_checkpoint,
)
from worldmodel.model.normalize import (
    ACTION_FEATURES,
    TrafficNormalizer,
    masked_traffic_loss,
    normalize_actions,
)

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


def _check_window(batch: Batch, history: int, horizon: int, n_chunks: int = 1) -> tuple[int, int]:
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


def _future_valid(batch: Batch, history: int) -> torch.Tensor:
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
        b, n = _check_window(batch, h, p, n_chunks)
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


# ---------------------------------------------------------------------- naive baselines
def _check_int(name: str, value: Any, low: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


class Persistence(BatchWorldModel):
    """Every future slot = the cell's traffic in the last history slot (0 if inactive/padded).

    Uses no actions; ``history`` only sets the window length it expects (it reads slot
    ``H − 1``). Rolled out, it repeats that value forever.
    """

    def __init__(self, history: int = 1, horizon: int = 4) -> None:
        self.history = _check_int("history", history)
        self.horizon = _check_int("horizon", horizon)

    @torch.no_grad()
    def predict_batch(self, batch: Batch) -> torch.Tensor:
        h, p = self.history, self.horizon
        _check_window(batch, h, p)
        last = torch.nan_to_num(batch["traffic"][:, h - 1 : h]).clamp_min(0.0)
        out = last.expand(-1, p, -1)
        return torch.where(_future_valid(batch, h), out, torch.zeros((), dtype=out.dtype))


class SeasonalNaive(BatchWorldModel):
    """Every future slot = the cell's traffic ``season`` slots (one day) earlier.

    Needs ``history ≥ season`` (default ``history = season = 96``: give it a one-day warm start
    by ``align_batch`` on a window with at least that much history). For ``P > season`` and in
    rollouts it reads its own earlier predictions once the source slot lies beyond the history.
    Inactive / padded cells → 0; a source slot where the cell was off contributes 0. Assumes
    the window's slots are consecutive.
    """

    def __init__(self, horizon: int = 4, season: int = 96, history: int | None = None) -> None:
        self.season = _check_int("season", season)
        history = season if history is None else history
        self.history = _check_int("history", history)
        if self.history < self.season:
            raise ValueError(f"history ({history}) must be >= season ({season})")
        self.horizon = _check_int("horizon", horizon)

    @torch.no_grad()
    def predict_batch(self, batch: Batch) -> torch.Tensor:
        h, p, s = self.history, self.horizon, self.season
        _check_window(batch, h, p)
        valid = _future_valid(batch, h)
        ext = torch.nan_to_num(batch["traffic"][:, :h]).clamp_min(0.0)
        zero = torch.zeros((), dtype=ext.dtype, device=ext.device)
        for j in range(0, p, s):  # blocks of at most one season
            e = j + min(s, p - j)
            block = ext[:, h + j - s : h + e - s]
            ext = torch.cat([ext, torch.where(valid[:, j:e], block, zero)], dim=1)
        return ext[:, h:]


# ---------------------------------------------------------------------- GRU world model
_CONFIG_TYPES = {int: "int", float: "float", bool: "bool", str: "str"}


@dataclass(frozen=True)
class GRUConfig:
    """Architecture of ``GRUWorldModel``. Every field is saved in the checkpoint."""

    history: int = 8
    """``H``: history slots read by the encoder."""
    horizon: int = 4
    """``P``: future slots decoded per chunk."""
    hidden: int = 64
    """GRU state width."""
    layers: int = 1
    """Stacked GRU layers (encoder and decoder each)."""
    dropout: float = 0.0
    """Dropout between stacked GRU layers and before the head (training only)."""
    use_actions: bool = True
    """False: the four parameters are hidden from the model (the active flag stays), i.e. the
    non-WM variant of the baseline."""
    predict_residual: bool = True
    """Each decoded slot predicts the change from the previous slot (normalised space)."""
    loss: str = "mse"
    """Training loss in normalised space: ``"mse"`` or ``"huber"``."""
    huber_delta: float = 1.0
    """Transition point of the Huber loss (normalised units)."""
    slots_per_day: int = 96
    """Period of the slot-of-day sin/cos feature."""
    days_per_week: int = 7
    """Period of the day-of-week sin/cos feature."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind = f.type if isinstance(f.type, str) else _CONFIG_TYPES[f.type]
            ok = {
                "int": isinstance(value, int) and not isinstance(value, bool),
                "float": isinstance(value, int | float) and not isinstance(value, bool),
                "bool": isinstance(value, bool),
                "str": isinstance(value, str),
            }[kind]
            if not ok:
                raise ValueError(
                    f"GRUConfig.{f.name} must be {kind}, got {type(value).__name__} {value!r}"
                )
        for name in ("history", "horizon", "hidden", "layers", "slots_per_day", "days_per_week"):
            if getattr(self, name) < 1:
                raise ValueError(f"GRUConfig: {name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GRUConfig: dropout must be in [0, 1), got {self.dropout}")
        if self.loss not in ("mse", "huber"):
            raise ValueError(f"GRUConfig: loss must be 'mse' or 'huber', got {self.loss!r}")
        if not self.huber_delta > 0:
            raise ValueError(f"GRUConfig: huber_delta must be > 0, got {self.huber_delta}")

    @property
    def window(self) -> int:
        """``T = H + P``: slots of one training window."""
        return self.history + self.horizon

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


TIME_FEATURES = 4
"""sin/cos of the slot of day and of the day of week."""
GRU_INPUTS = 1 + ACTION_FEATURES + TIME_FEATURES
"""Per cell per slot: normalised traffic, action features (``normalize_actions``), time."""


class GRUWorldModel(nn.Module, BatchWorldModel):
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

    def __init__(self, cfg: GRUConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        if cfg is None:
            cfg = GRUConfig()
        if not isinstance(cfg, GRUConfig):
            raise TypeError(f"GRUWorldModel expects a GRUConfig, got {type(cfg).__name__}")
        unknown = sorted(set(overrides) - set(GRUConfig.field_names()))
        if unknown:
            raise ValueError(
                f"unknown GRUConfig field(s) {unknown}; known: {GRUConfig.field_names()}"
            )
        cfg = dataclasses.replace(cfg, **overrides)
        self.cfg = cfg
        drop = cfg.dropout if cfg.layers > 1 else 0.0
        self.normalizer = TrafficNormalizer()
        self.encoder = nn.GRU(GRU_INPUTS, cfg.hidden, cfg.layers, batch_first=True, dropout=drop)
        self.decoder = nn.GRU(GRU_INPUTS, cfg.hidden, cfg.layers, batch_first=True, dropout=drop)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden, 1)

    # ------------------------------------------------------------------ helpers
    @property
    def history(self) -> int:  # type: ignore[override]
        return self.cfg.history

    @property
    def horizon(self) -> int:  # type: ignore[override]
        return self.cfg.horizon

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _time_features(self, slot_of_day: torch.Tensor, day_of_week: torch.Tensor) -> torch.Tensor:
        a = 2 * math.pi * slot_of_day.to(torch.float32) / self.cfg.slots_per_day
        d = 2 * math.pi * day_of_week.to(torch.float32) / self.cfg.days_per_week
        return torch.stack([a.sin(), a.cos(), d.sin(), d.cos()], dim=-1)  # [B, T, 4]

    # ------------------------------------------------------------------ training API
    def forward(self, batch: Batch) -> torch.Tensor:
        """Normalised prediction ``[B, P, N]`` of the last ``P`` slots of a window batch.

        Reads ``traffic[:, :H]`` only, all ``T`` slots of actions, active flags and time.
        Inactive / padded cells hold the normalised zero-traffic value.
        """
        cfg = self.cfg
        h, p = cfg.history, cfg.horizon
        for key in ("actions", "slot_of_day", "day_of_week"):
            if key not in batch:
                raise ValueError(f"batch is missing key {key!r}")
        b, n = _check_window(batch, h, p)
        t = h + p
        if tuple(batch["actions"].shape) != (b, t, n, 4):
            raise ValueError(
                f"actions: expected {[b, t, n, 4]}, got {list(batch['actions'].shape)}"
            )
        for key in ("slot_of_day", "day_of_week"):
            if tuple(batch[key].shape) != (b, t):
                raise ValueError(f"{key}: expected {[b, t]}, got {list(batch[key].shape)}")
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
        actions = cells(batch["actions"].to(torch.float32))  # [M, T, 4]
        feats = normalize_actions(actions, active)
        if not cfg.use_actions:
            feats = torch.cat([torch.zeros_like(feats[..., :-1]), feats[..., -1:]], dim=-1)
        rows = torch.nonzero(mask, as_tuple=True)[0]
        time = self._time_features(batch["slot_of_day"].to(dev), batch["day_of_week"].to(dev))
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

    def loss_from_prediction(
        self, batch: Batch, pred: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Masked loss of a normalised prediction ``[B, P, N]`` (see ``loss``)."""
        return masked_traffic_loss(
            self.normalizer, batch, pred, self.cfg.loss, self.cfg.huber_delta
        )

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """Masked loss in normalised space over real cells active in the target slot (as
        ``MobiWM.loss``). Returns ``(loss, metrics)`` with ``loss``, ``mse``, ``mae``
        (normalised), ``mae_mb`` (MB per slot) and ``n_targets``."""
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
        valid = _future_valid(batch, self.history).to(z.device)
        return torch.where(valid, self.normalizer.denormalize(z), torch.zeros((), dtype=z.dtype))


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

    def rollout_batch(self, batch: Batch, n_chunks: int, memory: Any = None) -> torch.Tensor:
        """``MobiWM.rollout`` of the batch; ``memory``: a ``DailyMemory`` that overrides the
        adapter's ``memory`` mode (a rollout continued in segments)."""
        if not isinstance(n_chunks, int) or n_chunks < 1:
            raise ValueError(f"n_chunks must be an integer >= 1, got {n_chunks!r}")
        h = self.history
        b, _ = _check_window(batch, h, self.horizon, n_chunks)
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
        )


def as_world_model(model: Any, memory: str = "observed") -> WorldModel:
    """``model`` itself if it has ``predict_batch``/``rollout_batch``; a ``MobiWM`` wrapped
    (rollouts with the daily ``memory`` mode, see ``MobiWM.rollout``)."""
    if isinstance(model, WorldModel):
        return model
    return MobiWMAdapter(model, memory)


# ---------------------------------------------------------------------- registry
def _gru(**cfg: Any) -> GRUWorldModel:
    return GRUWorldModel(GRUConfig(), **cfg)


BASELINES: dict[str, Callable[..., WorldModel]] = {
    "persistence": Persistence,
    "seasonal": SeasonalNaive,
    "gru": _gru,
}
"""Baseline constructors by name; keyword arguments as the classes (``gru``: ``GRUConfig``)."""


def build_baseline(name: str, **cfg: Any) -> WorldModel:
    """Build baseline ``name`` (``persistence``, ``seasonal``, ``gru``) with keyword config.

    Raises ``ValueError`` for an unknown name or keyword (naming the accepted ones).
    """
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {sorted(BASELINES)}")
    try:
        return BASELINES[name](**cfg)
    except TypeError as err:
        raise ValueError(
            f"build_baseline({name!r}): bad keyword arguments {sorted(cfg)}: {err}"
        ) from err


# ---------------------------------------------------------------------- checkpoints
BASELINE_FORMAT = "mobiwm-baseline-checkpoint"
BASELINE_FORMAT_VERSION = 1
_BASELINE_CLASSES: dict[str, tuple[type[nn.Module], type]] = {"gru": (GRUWorldModel, GRUConfig)}


def save_baseline(
    model: GRUWorldModel, path_dir: str | os.PathLike[str], extra: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` to directory ``path_dir``: ``model.safetensors`` (``state_dict``, the
    normaliser included) and ``config.json`` (``format``, ``format_version``, ``model_class``,
    ``model_config``, ``normalizer``, ``tensors``, ``n_parameters``, ``extra``). Atomic writes."""
    names = {cls: name for name, (cls, _) in _BASELINE_CLASSES.items()}
    if type(model) not in names:
        raise TypeError(f"save_baseline expects one of {sorted(names.values())}, got {type(model)}")
    header = {"model_class": names[type(model)]}
    return write_checkpoint(
        model, path_dir, BASELINE_FORMAT, BASELINE_FORMAT_VERSION, extra, "save_baseline", header
    )


def load_baseline(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> nn.Module:
    """Load a ``save_baseline`` directory (or a file inside it) → model in eval mode.

    Raises ``FileNotFoundError`` / ``ValueError`` naming the file on a missing file, corrupt
    JSON, wrong format or version, unknown class, config or tensors that do not match the code.
    """
    cfg_path, meta = read_config_json(path)
    check_format(cfg_path, meta, BASELINE_FORMAT, BASELINE_FORMAT_VERSION)
    kind = meta.get("model_class")
    if kind not in _BASELINE_CLASSES:
        raise ValueError(
            f"{cfg_path}: unknown model_class {kind!r}; known {sorted(_BASELINE_CLASSES)}"
        )
    model_cls, cfg_cls = _BASELINE_CLASSES[kind]
    mc = check_model_config(cfg_path, meta, cfg_cls.field_names())
    model = model_cls(build_config(cfg_path, cfg_cls, mc))
    return load_weights(model, cfg_path.parent, meta, map_location)


def save_world_model(
    model: Any, path_dir: str | os.PathLike[str], extra: dict[str, Any] | None = None
) -> Path:
    """Save a ``MobiWM`` (``save_checkpoint``) or a trainable baseline (``save_baseline``)."""
    from worldmodel.model.mobiwm import MobiWM

    if isinstance(model, MobiWMAdapter):
        model = model.model
    if isinstance(model, MobiWM):
        return save_checkpoint(model, path_dir, extra=extra)
    return save_baseline(model, path_dir, extra=extra)


def load_world_model(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Any:
    """Load any world-model checkpoint by its ``format``: ``MobiWM`` for MobiWM checkpoints,
    the baseline module otherwise (wrap with ``as_world_model`` for the batch interface)."""
    cfg_path, meta = read_config_json(path)
    fmt = meta.get("format")
    if fmt == CHECKPOINT_FORMAT:
        return load_checkpoint(cfg_path.parent, map_location)
    if fmt == BASELINE_FORMAT:
        return load_baseline(cfg_path.parent, map_location)
    raise ValueError(
        f"{cfg_path}: unknown checkpoint format {fmt!r}; expected "
        f"{CHECKPOINT_FORMAT!r} or {BASELINE_FORMAT!r}"
    )
