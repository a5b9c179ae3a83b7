"""MobiWM's predictive distribution: a quantile head on the frozen network, and its files.

The head reads what the decoder already computed for every future token — the last block's
normalised features ``[B, P, N, d]``, the point prediction ``z`` and the lead time (slots since
the last *observed* slot, capped at ``max_lead_slots``) — and returns ``Q`` quantiles of the
normalised traffic per cell and slot::

    [features ; z ; lead / max_lead] ─► Linear ─► GELU ─► Linear ─► raw [Q]
    median = z + raw[m];  q_{m±k} = median ± τ · Σ_{j≤k} softplus(raw[m±j])   (m: the 0.5 level)

so quantiles never cross, and ``τ`` (``temperature``, fitted on validation maps after the
pinball-loss fit on training maps) widens or narrows every interval about the median. The
normalisation is monotone, so the quantiles map to MB through ``TrafficNormalizer.denormalize``
unchanged (a quantile below zero traffic is 0 MB: a point mass at zero, as the twin's idle cells).

The head is trained after the network, which stays frozen (``python -m worldmodel.uncertainty
.train``); it lives beside the checkpoint in ``uncertainty.safetensors`` + ``uncertainty.json``
so a checkpoint without it loads unchanged and the network's weights are never rewritten.
``uncertainty.json`` also carries ``ActionSupport``: the range of every antenna parameter and of
its changes in the training data, which scores how far a plan leaves the training support (the
out-of-distribution gate), and the gate's threshold fitted on validation plans.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from worldmodel.model.files import write_pair_atomic
from worldmodel.twin.scenario import AZIMUTH, PARAM_NAMES

QUANTILE_LEVELS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5,
                   0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.975, 0.99)  # fmt: skip
"""Default quantile levels: every 5 % plus the 1 / 2.5 / 97.5 / 99 % tails (23 levels)."""
UNCERTAINTY_FORMAT = "mobiwm-uncertainty"
UNCERTAINTY_FORMAT_VERSION = 1
UQ_WEIGHTS = "uncertainty.safetensors"
UQ_CONFIG = "uncertainty.json"


@dataclass(frozen=True)
class UncertaintyConfig:
    """The quantile head and how its output is read.

    * ``levels``: quantile levels (strictly increasing in (0, 1), must hold 0.5).
    * ``hidden``: width of the head's hidden layer.
    * ``max_lead_slots``: lead time (15-min slots) past which the head sees the same lead.
    * ``temperature``: scale of every quantile's distance from the median (1 = as fitted).
    * ``copula_rho``: lag-1 correlation (per cell, between consecutive slots) of the normal
      scores of sampled trajectories (``Forecast.sample``), fitted on validation maps.
    """

    levels: tuple[float, ...] = QUANTILE_LEVELS
    hidden: int = 64
    max_lead_slots: int = 96
    temperature: float = 1.0
    copula_rho: float = 0.0

    def __post_init__(self) -> None:
        lv = tuple(float(x) for x in self.levels)
        object.__setattr__(self, "levels", lv)
        if len(lv) < 3 or any(not 0.0 < x < 1.0 for x in lv):
            raise ValueError(f"levels must be >= 3 probabilities in (0, 1), got {lv}")
        if any(b <= a for a, b in zip(lv, lv[1:], strict=False)):
            raise ValueError(f"levels must be strictly increasing, got {lv}")
        if 0.5 not in lv:
            raise ValueError(f"levels must hold the median 0.5, got {lv}")
        if not isinstance(self.hidden, int) or self.hidden < 1:
            raise ValueError(f"hidden must be an integer >= 1, got {self.hidden!r}")
        if not isinstance(self.max_lead_slots, int) or self.max_lead_slots < 1:
            raise ValueError(f"max_lead_slots must be an integer >= 1, got {self.max_lead_slots!r}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be finite and > 0, got {self.temperature}")
        if not -1.0 < self.copula_rho < 1.0:
            raise ValueError(f"copula_rho must be in (-1, 1), got {self.copula_rho}")

    @property
    def median_index(self) -> int:
        return self.levels.index(0.5)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["levels"] = list(self.levels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "uncertainty config") -> UncertaintyConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
        kw = dict(d)
        if "levels" in kw:
            kw["levels"] = tuple(kw["levels"])
        return cls(**kw)


@dataclass(frozen=True)
class ActionSupport:
    """Where the training data's antenna parameters lie (``PARAM_NAMES`` order, physical).

    ``low`` / ``high [4]``: the smallest and largest value of each parameter; ``change [4]``:
    the 99.9th percentile of a parameter's change between a slot and the same cell up to a day
    earlier (azimuth wrapped to ±180°). ``threshold``: plans with ``score`` above it are out of
    distribution (fitted on validation plans; ``inf`` until fitted).
    """

    low: tuple[float, ...]
    high: tuple[float, ...]
    change: tuple[float, ...]
    threshold: float = math.inf

    def __post_init__(self) -> None:
        for name in ("low", "high", "change"):
            v = tuple(float(x) for x in getattr(self, name))
            if len(v) != len(PARAM_NAMES) or not all(math.isfinite(x) for x in v):
                raise ValueError(f"ActionSupport.{name}: expected {len(PARAM_NAMES)} finite values")
            object.__setattr__(self, name, v)
        if any(h < lo for lo, h in zip(self.low, self.high, strict=True)):
            raise ValueError("ActionSupport: high must be >= low for every parameter")
        if any(c <= 0 for c in self.change):
            raise ValueError("ActionSupport.change must be > 0 for every parameter")

    def score(
        self, plan: torch.Tensor, reference: torch.Tensor, active: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Distance of ``plan [B, T, N, 4]`` (physical) from the training support → ``[B]``.

        Per cell, slot and parameter: how far the value lies outside ``[low, high]`` and how far
        its change from ``reference [B, N, 4]`` (e.g. the last observed slot) exceeds
        ``change``, each in units of ``change``; the plan's score is the largest over cells
        (``active [B, T, N]``: only those count), slots and parameters. 0 = inside the support.
        """
        dt = plan.dtype
        low = torch.tensor(self.low, dtype=dt, device=plan.device)
        high = torch.tensor(self.high, dtype=dt, device=plan.device)
        unit = torch.tensor(self.change, dtype=dt, device=plan.device)
        outside = (low - plan).clamp_min(0) + (plan - high).clamp_min(0)
        delta = plan - reference[:, None]
        wrapped = torch.remainder(delta[..., AZIMUTH] + 180.0, 360.0) - 180.0
        delta = torch.cat([delta[..., :AZIMUTH], wrapped[..., None], delta[..., AZIMUTH + 1 :]], -1)
        jump = (delta.abs() - unit).clamp_min(0)
        per = torch.maximum(outside, jump) / unit  # [B, T, N, 4]
        per = per.amax(dim=-1)
        if active is not None:
            per = torch.where(active.to(torch.bool), per, torch.zeros((), dtype=dt))
        return per.flatten(1).amax(dim=1)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["threshold"] = None if math.isinf(self.threshold) else self.threshold
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ActionSupport:
        kw = dict(d)
        if kw.get("threshold") is None:
            kw["threshold"] = math.inf
        return cls(**kw)


class QuantileHead(nn.Module):
    """Quantiles of the normalised traffic from the decoder's features (see module doc)."""

    def __init__(self, d_model: int, cfg: UncertaintyConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or UncertaintyConfig()
        self.d_model = int(d_model)
        q = len(self.cfg.levels)
        self.fc1 = nn.Linear(self.d_model + 2, self.cfg.hidden)
        self.fc2 = nn.Linear(self.cfg.hidden, q)
        # start as a normal-shaped spread of about 0.3 normalised units per standard deviation
        z = torch.special.ndtri(torch.tensor(self.cfg.levels, dtype=torch.float32))
        gaps = torch.diff(z).abs() * 0.3
        m = self.cfg.median_index
        init = torch.zeros(q)
        init[m + 1 :] = torch.log(torch.expm1(gaps[m:]))
        init[:m] = torch.log(torch.expm1(gaps[:m]))
        nn.init.zeros_(self.fc2.weight)
        with torch.no_grad():
            self.fc2.bias.copy_(init)
        self.support: ActionSupport | None = None

    @property
    def levels(self) -> tuple[float, ...]:
        return self.cfg.levels

    def configure(self, **changes: Any) -> QuantileHead:
        """Replace some ``UncertaintyConfig`` fields of this head in place (validated; the
        weights stay) and return it."""
        self.cfg = UncertaintyConfig(**{**self.cfg.to_dict(), **changes})
        return self

    def forward(self, feat: torch.Tensor, z: torch.Tensor, lead: torch.Tensor) -> torch.Tensor:
        """``feat [B, P, N, d]``, point prediction ``z [B, P, N]``, ``lead [B, P]`` slots →
        normalised quantiles ``[B, P, N, Q]`` (non-decreasing along ``Q``)."""
        cap = float(self.cfg.max_lead_slots)
        lead_in = (lead.to(feat.dtype).clamp(0, cap) / cap)[:, :, None, None]
        x = torch.cat([feat, z[..., None], lead_in.expand(*z.shape, 1)], dim=-1)
        raw = self.fc2(nn.functional.gelu(self.fc1(x)))
        m = self.cfg.median_index
        med = z + raw[..., m]
        up = torch.cumsum(nn.functional.softplus(raw[..., m + 1 :]), dim=-1)
        down = torch.flip(
            torch.cumsum(nn.functional.softplus(torch.flip(raw[..., :m], [-1])), -1), [-1]
        )
        tau = self.cfg.temperature
        return torch.cat(
            [med[..., None] - tau * down, med[..., None], med[..., None] + tau * up], dim=-1
        )


def sample_quantiles(q: torch.Tensor, levels: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse CDF: values at probabilities ``u [...]`` of the piecewise-linear quantile
    function through ``(levels [Q], q [..., Q])``; held at the outer quantiles beyond them."""
    lv = levels.to(q.dtype)
    u = u.to(q.dtype).clamp(float(lv[0]), float(lv[-1]))
    idx = torch.searchsorted(lv, u.contiguous(), right=True).clamp(1, len(lv) - 1)
    lo_l, hi_l = lv[idx - 1], lv[idx]
    lo_q = torch.gather(q, -1, (idx - 1)[..., None]).squeeze(-1)
    hi_q = torch.gather(q, -1, idx[..., None]).squeeze(-1)
    w = (u - lo_l) / (hi_l - lo_l)
    return lo_q + w * (hi_q - lo_q)


# ---------------------------------------------------------------------- files
def has_uncertainty(directory: str | os.PathLike[str]) -> bool:
    """Whether a checkpoint directory carries a quantile head."""
    d = Path(directory)
    return (d / UQ_CONFIG).is_file() and (d / UQ_WEIGHTS).is_file()


def save_uncertainty(
    head: QuantileHead, directory: str | os.PathLike[str], extra: dict[str, Any] | None = None
) -> Path:
    """Write ``head`` beside a checkpoint (``uncertainty.safetensors`` / ``.json``), atomically."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    meta = {
        "format": UNCERTAINTY_FORMAT,
        "format_version": UNCERTAINTY_FORMAT_VERSION,
        "kind": "quantile-head",
        "d_model": head.d_model,
        "config": head.cfg.to_dict(),
        "support": head.support.to_dict() if head.support is not None else None,
        "tensors": {k: list(v.shape) for k, v in tensors.items()},
        "extra": extra or {},
    }
    text = json.dumps(meta, indent=2)
    write_pair_atomic(out, tensors, UQ_WEIGHTS, text, UQ_CONFIG, {"format": "pt"})
    return out


def load_uncertainty(
    directory: str | os.PathLike[str], d_model: int, map_location: str | torch.device = "cpu"
) -> QuantileHead:
    """The quantile head beside a checkpoint; ``ValueError`` naming the file on any mismatch."""
    d = Path(directory)
    cfg_path = d / UQ_CONFIG
    try:
        meta = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{cfg_path}: cannot read the uncertainty config: {err}") from err
    if not isinstance(meta, dict) or meta.get("format") != UNCERTAINTY_FORMAT:
        raise ValueError(f"{cfg_path}: not a {UNCERTAINTY_FORMAT} file")
    if meta.get("format_version") != UNCERTAINTY_FORMAT_VERSION:
        raise ValueError(
            f"{cfg_path}: format_version {meta.get('format_version')!r}, this code reads "
            f"{UNCERTAINTY_FORMAT_VERSION}"
        )
    if meta.get("d_model") != d_model:
        raise ValueError(
            f"{cfg_path}: the head was fitted on a network of d_model={meta.get('d_model')}, "
            f"this checkpoint has {d_model}"
        )
    try:
        cfg = UncertaintyConfig.from_dict(meta.get("config") or {}, str(cfg_path))
        support = meta.get("support")
        head = QuantileHead(d_model, cfg)
        head.support = ActionSupport.from_dict(support) if support else None
    except (TypeError, ValueError) as err:
        raise ValueError(f"{cfg_path}: {err}") from err
    try:
        state = load_file(str(d / UQ_WEIGHTS), device=str(map_location))
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{d / UQ_WEIGHTS}: cannot read the head's weights: {err}") from err
    try:
        head.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{d / UQ_WEIGHTS}: weights do not match the head: {err}") from err
    return head.to(map_location).eval()


# ---------------------------------------------------------------------- forecasts
@dataclass(frozen=True)
class Forecast:
    """A rollout's predictive distribution per cell and slot, MB per slot.

    * ``point [B, T, N]``: the network's point prediction (what ``rollout`` returns without
      uncertainty; its loss is the MSE of the log traffic, so it sits near the median).
    * ``quantiles [B, T, N, Q]`` at ``levels`` (non-decreasing along ``Q``; 0 MB for inactive
      and padded cells).
    * ``copula_rho``: lag-1 correlation of the normal scores of ``sample``'s trajectories.
    """

    point: torch.Tensor
    quantiles: torch.Tensor
    levels: tuple[float, ...]
    copula_rho: float = 0.0

    def _level(self, p: float) -> int:
        for i, lv in enumerate(self.levels):
            if abs(lv - p) < 1e-9:
                return i
        raise ValueError(f"level {p:g} is not among the forecast's levels {list(self.levels)}")

    @property
    def median(self) -> torch.Tensor:
        return self.quantiles[..., self._level(0.5)]

    def interval(self, coverage: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The central interval holding ``coverage`` (e.g. 0.9) of the mass: ``(lo, hi)``."""
        if not 0.0 < coverage < 1.0:
            raise ValueError(f"coverage must be in (0, 1), got {coverage}")
        a = (1.0 - coverage) / 2.0
        return self.quantiles[..., self._level(a)], self.quantiles[..., self._level(1.0 - a)]

    def std(self) -> torch.Tensor:
        """Standard deviation ``[B, T, N]`` MB of the distribution the quantiles describe (each
        level stands for the probability mass up to the midpoints with its neighbours)."""
        lv = torch.tensor(self.levels, dtype=torch.float64)
        edges = torch.cat([lv.new_zeros(1), (lv[1:] + lv[:-1]) / 2, lv.new_ones(1)])
        w = torch.diff(edges).to(self.quantiles.dtype)
        mean = (self.quantiles * w).sum(-1)
        var = (self.quantiles.square() * w).sum(-1) - mean.square()
        return var.clamp_min(0).sqrt()

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` trajectories ``[n, B, T, N]`` MB drawn from the marginal quantiles, linked in
        time per cell by a Gaussian AR(1) copula of lag-1 correlation ``copula_rho`` (cells
        independent). Seeded by ``generator`` (a CPU ``torch.Generator``)."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        b, t, c = self.point.shape
        eps = torch.randn((n, b, t, c), generator=generator, dtype=torch.float64)
        rho = float(self.copula_rho)
        if rho:
            s = math.sqrt(1.0 - rho * rho)
            for i in range(1, t):
                eps[:, :, i] = rho * eps[:, :, i - 1] + s * eps[:, :, i]
        u = torch.special.ndtr(eps).to(self.quantiles.device)
        lv = torch.tensor(self.levels, device=self.quantiles.device)
        q = self.quantiles.expand(n, *self.quantiles.shape)
        return sample_quantiles(q, lv, u).to(self.quantiles.dtype)
