"""``EnvConfig``: every keyword argument of the load-balancing environments, in one place.

``gym.make("MobiWM-LoadBalance-v0", **kwargs)`` and ``gym.make_vec(..., **kwargs)`` pass their
keyword arguments here (besides ``render_mode``, ``num_envs`` and ``autoreset_mode``); an
unknown keyword or a bad value raises ``ValueError`` naming it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mobiwm_env.uncertainty import UNCERTAINTY_MODES
from worldmodel.twin.scenario import PARAM_NAMES, SLOTS_PER_WEEK, Scenario

DYNAMICS: tuple[str, ...] = ("world_model", "twin")
"""Dynamics backends: the frozen MobiWM checkpoint or the physics twin."""
MEMORY_MODES: tuple[str, ...] = ("observed", "predicted")
"""``EnvConfig.memory`` values: ``MobiWM.rollout``'s daily-memory modes (kept equal by a test;
not imported, so that the config needs no torch)."""
SHORTFALL_REFERENCES: tuple[str, ...] = ("noop", "calibrated", "demand")
"""``EnvConfig.shortfall_reference`` values (world-model backend; the twin always uses the
true demand): the model's no-change rollout plus the twin's unserved traffic
(``mobiwm_env.reference``),
the twin's demand scaled once per episode (``LoadBalanceCore.calibrate_demand``), or the
twin's demand as it is."""
_ASSETS = Path(__file__).resolve().parent / "assets"
SHIPPED_CHECKPOINTS: dict[str, Path] = {
    "fast": _ASSETS / "mobiwm-fast",
    "full": _ASSETS / "mobiwm-full",
}
"""The shipped MobiWM checkpoints by name (``checkpoint="fast"``): ``full`` is the full-size
MobiWM (preset S), ``fast`` the small env model (preset XS, neighbour attention); their
fidelity and speed are in ``docs/results.md``."""
DEFAULT_NAME = "full"
"""The shipped checkpoint ``MobiWM-LoadBalance-v0`` loads unless ``checkpoint=``."""
DEFAULT_CHECKPOINT = SHIPPED_CHECKPOINTS[DEFAULT_NAME]
"""The shipped MobiWM checkpoint used by ``MobiWM-LoadBalance-v0`` unless ``checkpoint=``."""


def resolve_checkpoint(checkpoint: str | Path | None) -> Path:
    """A checkpoint path from ``None`` / ``""`` (the default), a name of
    ``SHIPPED_CHECKPOINTS`` or a path."""
    if checkpoint in (None, ""):
        return DEFAULT_CHECKPOINT
    if isinstance(checkpoint, str) and checkpoint in SHIPPED_CHECKPOINTS:
        return SHIPPED_CHECKPOINTS[checkpoint]
    return Path(checkpoint)


DEFAULT_MAX_STEP: tuple[float, float, float, float] = (1.0, 10.0, 1.0, 1.0)
"""Per-step limits of the four parameters: power 1 dB, azimuth 10°, mech tilt 1°, elec tilt 1°."""


@dataclass(frozen=True)
class EnvConfig:
    """Configuration of one load-balancing environment (shared by all its sub-envs)."""

    dynamics: str = "world_model"
    """``"world_model"`` (frozen MobiWM) or ``"twin"`` (physics digital twin)."""
    scenario: str | Scenario = "hex57"
    """A name of ``worldmodel.twin.builders.SCENARIOS`` ("hex57", "urban", "suburb", ...) or a
    ``Scenario`` object."""
    demand: str | None = "realistic"
    """Demand preset of a named scenario (``worldmodel.twin.demand.DEMAND_PRESETS``):
    ``"realistic"`` (calibrated to real traces; the shipped checkpoints were trained on it) or
    ``"smooth"`` (0.2.0's twin); ``None`` keeps the scenario's own. A ``Scenario`` object
    always keeps its own."""
    checkpoint: str | Path | None = None
    """World-model checkpoint directory, or the name of a shipped one (``"fast"``, ``"full"``:
    ``SHIPPED_CHECKPOINTS``); ``None`` = the shipped default (``DEFAULT_NAME``). Ignored by the
    twin backend."""
    memory: str = "observed"
    """World-model backend with a daily memory: what a slot more than a day into an episode
    remembers as "the same slot yesterday" (``MobiWM.rollout``): ``"observed"`` = the same slot
    on the warm-up's last day (as the evaluation's rollouts), ``"predicted"`` = the model's own
    prediction a day earlier (it drifts over several days). No effect on one-day episodes."""
    uncertainty: str = "off"
    """World-model backend: ``"off"`` (the point prediction), ``"report"`` (plus
    ``info["traffic_std"]``, ``info["ood_score"]`` and ``info["ood_threshold"]``) or
    ``"sample"`` (traffic drawn from the predictive distribution, seeded); the last two need a
    checkpoint with a quantile head (``mobiwm_env.uncertainty``). Ignored by the twin."""
    max_cells: int | None = None
    """Cells in the observation/action spaces (≥ the scenario's N; extra cells are padding,
    masked in the observation and ignored in the action). ``None`` = the scenario's N."""
    slots_per_step: int = 4
    """``P``: slots (15 min each) simulated by one env step; 4 = one hour."""
    episode_steps: int = 24
    """Env steps per episode (24 × 1 h = one day); the env truncates itself, never terminates."""
    history_slots: int = 8
    """Slots of traffic history in the observation."""
    warmup_slots: int = 104
    """Slots the twin runs before the start slot to produce the initial history. Must be ≥
    ``history_slots`` and ≥ the world model's history ``H`` (the shipped checkpoint reads 104
    slots: one day of memory plus 8); keep it equal for both backends (the default is) so they
    start from identical states."""
    max_step: tuple[float, float, float, float] = DEFAULT_MAX_STEP
    """Change of ``(power_dbm, azimuth_deg, mech_tilt_deg, elec_tilt_deg)`` for an action of
    ±1 (also accepts a dict keyed by those names)."""
    lambda_delta: float = 10.0
    """``λ_Δ`` of Eq. 21: weight of the mean normalised parameter change ``|Δa| ∈ [0, 1]``.
    The L1 term is of order ``P · N · (relative error)`` (≈ 50-150 per step on hex57), so the
    default makes moving every parameter by its full limit cost about a tenth of it."""
    lambda_unserved: float = 0.0
    """``λ_U``: weight of the shortfall term (offered demand − carried traffic, MB, normalised
    like the L1 term); 0 = Eq. 21 exactly; ≥ 2 makes "balancing" by leaving users unserved
    never pay under the balanced target; see ``objective``."""
    shortfall_reference: str = "auto"
    """World-model backend: the offered demand the shortfall term measures carried traffic
    against (``mobiwm_env.reference``): ``"auto"`` (``"noop"`` when ``lambda_unserved > 0``,
    else ``"calibrated"``: the shortfall is then only reported, and the reference's rollouts
    are not worth their reset time), ``"noop"`` (the model's own no-change rollout from the
    episode's start plus the twin's unserved traffic under the same parameters: the model's
    bias and drift cancel, and a no-change policy's shortfall is the twin's), ``"calibrated"``
    (the twin's demand scaled once per episode so that the first step matches the twin's
    served share; 0.4.0–0.6.0's default, it drifts) or ``"demand"`` (the twin's demand as is:
    mostly the model's bias). The twin ignores it (its shortfall is the true unserved
    traffic)."""
    target: Any = None
    """``None``/``"balanced"`` (capacity-weighted share of each slot's total traffic) or an
    array ``[N]`` / ``[T, N]`` of MB per slot (row ``slot mod T``); see ``objective``."""
    traffic_scale_mb: float | None = None
    """Traffic normaliser of the observation, ``log1p(traffic / scale)``; ``None`` = the
    scenario's mean cell capacity (so ``scale`` is one full cell-slot)."""
    obs_clip: float = 5.0
    """Upper bound of the normalised traffic/target features (``log1p(x / scale)`` clipped)."""
    randomize_params: bool = True
    """At reset, perturb the base parameters (after the warm-up, see ``core``) by up to
    ``init_noise_steps`` per-step limits per parameter, uniformly, per active cell."""
    init_noise_steps: float = 3.0
    """Size of the reset perturbation in units of ``max_step``."""
    start_weeks: int = 1
    """Random start slots are drawn on step boundaries (multiples of ``slots_per_step``) over
    weeks ``1..start_weeks`` (week 0 is left for the warm-up)."""
    device: str = "cpu"
    """Torch device of the world model."""
    compile: bool = False
    """Run the world model's inference through ``torch.compile`` (``MobiWM.compile_inference``):
    the first step of a new batch shape compiles (about 10–60 s on a CPU; inductor keeps a cache
    on disk for later processes), later steps run about 1.1–1.4× faster (``docs/results.md``).
    Pays for long runs, not for a few episodes. Ignored by the twin."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Reserved for forward compatibility; must be empty."""

    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(f"EnvConfig: {msg}")

        need(
            self.dynamics in DYNAMICS, f"dynamics must be one of {DYNAMICS}, got {self.dynamics!r}"
        )
        from worldmodel.twin.demand import DEMAND_PRESETS

        need(
            self.demand is None or self.demand in DEMAND_PRESETS,
            f"demand must be None or one of {sorted(DEMAND_PRESETS)}, got {self.demand!r}",
        )
        need(
            self.memory in MEMORY_MODES,
            f"memory must be one of {MEMORY_MODES}, got {self.memory!r}",
        )
        need(
            isinstance(self.scenario, str | Scenario),
            f"scenario must be a name or a Scenario, got {type(self.scenario).__name__}",
        )
        for name in ("slots_per_step", "episode_steps", "history_slots", "warmup_slots"):
            value = getattr(self, name)
            need(
                isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= 1,
                f"{name} must be an int >= 1, got {value!r}",
            )
        need(
            self.warmup_slots >= self.history_slots,
            f"warmup_slots={self.warmup_slots} must be >= history_slots={self.history_slots}",
        )
        need(
            self.max_cells is None or (isinstance(self.max_cells, int) and self.max_cells >= 1),
            f"max_cells must be None or an int >= 1, got {self.max_cells!r}",
        )
        object.__setattr__(self, "max_step", _parse_max_step(self.max_step))
        if str(self.device) != "cpu":  # (torch is imported only for another device)
            from worldmodel.devices import resolve_device

            try:
                resolve_device(str(self.device))
            except ValueError as err:
                raise ValueError(f"EnvConfig: {err}") from None
        need(isinstance(self.compile, bool), f"compile must be a bool, got {self.compile!r}")
        need(
            self.shortfall_reference in ("auto", *SHORTFALL_REFERENCES),
            f"shortfall_reference must be 'auto' or one of {SHORTFALL_REFERENCES}, "
            f"got {self.shortfall_reference!r}",
        )
        for name in ("lambda_delta", "lambda_unserved", "init_noise_steps"):
            value = getattr(self, name)
            need(
                isinstance(value, int | float) and np.isfinite(value) and value >= 0,
                f"{name} must be a finite number >= 0, got {value!r}",
            )
        need(
            self.traffic_scale_mb is None
            or (np.isfinite(self.traffic_scale_mb) and self.traffic_scale_mb > 0),
            f"traffic_scale_mb must be None or > 0, got {self.traffic_scale_mb!r}",
        )
        need(np.isfinite(self.obs_clip) and self.obs_clip > 0, "obs_clip must be > 0")
        need(
            isinstance(self.start_weeks, int) and self.start_weeks >= 1,
            f"start_weeks must be an int >= 1, got {self.start_weeks!r}",
        )
        need(
            self.slots_per_step <= SLOTS_PER_WEEK,
            f"slots_per_step must be <= {SLOTS_PER_WEEK}",
        )
        need(
            self.uncertainty in UNCERTAINTY_MODES,
            f"uncertainty must be one of {UNCERTAINTY_MODES}, got {self.uncertainty!r}",
        )
        need(not self.extra, f"unknown options {sorted(self.extra)}")

    @property
    def shortfall_mode(self) -> str:
        """``shortfall_reference`` with ``"auto"`` resolved (``SHORTFALL_REFERENCES``)."""
        if self.shortfall_reference != "auto":
            return self.shortfall_reference
        return "noop" if self.lambda_unserved > 0 else "calibrated"

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> EnvConfig:
        """Build from env keyword arguments; unknown keys raise ``ValueError`` listing valid ones."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise ValueError(
                f"unknown environment keyword(s) {unknown}; valid keywords: {sorted(names)}"
            )
        return cls(**kwargs)


def _parse_max_step(value: Any) -> tuple[float, float, float, float]:
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(PARAM_NAMES))
        if unknown:
            raise ValueError(f"max_step: unknown parameter(s) {unknown}; use {PARAM_NAMES}")
        merged = dict(zip(PARAM_NAMES, DEFAULT_MAX_STEP, strict=True))
        merged.update(value)
        value = [merged[k] for k in PARAM_NAMES]
    if not isinstance(value, Sequence | np.ndarray) or len(value) != 4:
        raise ValueError(f"max_step: expected 4 numbers {PARAM_NAMES} or a dict, got {value!r}")
    out = tuple(float(v) for v in value)
    if not all(np.isfinite(v) and v > 0 for v in out):
        raise ValueError(f"max_step: every limit must be finite and > 0, got {out}")
    return out  # type: ignore[return-value]
