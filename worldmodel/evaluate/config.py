"""Section names, defaults and run settings of ``worldmodel.evaluate``.

Lengths are in twin slots (15 min, ``SLOTS_PER_DAY`` = 96 a day). ``SectionSettings`` holds the
knobs of every section with the ``--quick`` defaults resolved once; ``EvalConfig`` is one CLI run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from worldmodel.cli import arg
from worldmodel.model.mobiwm import MEMORY_MODES
from worldmodel.twin.scenario import SLOTS_PER_DAY, SLOTS_PER_WEEK

SECTIONS = ("rollout", "counterfactual", "stability", "lead", "calibration")
DEFAULT_SECTIONS = ("rollout", "counterfactual", "stability")
"""Sections run when ``--sections`` is not given (``lead`` and ``calibration`` are opt-in)."""
NAIVE_BASELINES = ("persistence", "seasonal")
"""Baselines that need no checkpoint (``--models`` names)."""
PAPER_SCENARIOS = ("urban-para", "urban-topo", "suburb-para", "suburb-topo")
"""Table 1 column order; other scenarios (``hex-para``) follow as extra columns."""
QUICK_ROLLOUT_SLOTS = 2 * SLOTS_PER_DAY  # rollout cap of --quick (predicted slots)
QUICK_STABILITY_SLOTS = 3 * SLOTS_PER_WEEK  # stability rollout of --quick (slots)
STABILITY_SLOTS = 10_000  # stability rollout (slots)
CF_HORIZON = 24  # slots every counterfactual plan is held
CF_RANDOM_PLANS = 4  # random counterfactual plans per map
CF_QUICK_RANDOM_PLANS = 2
LEAD_SLOTS = SLOTS_PER_DAY  # longest lead time of the lead section (slots)
LEAD_ORIGINS = 24  # forecast origins per map, one every LEAD_SPACING slots
QUICK_LEAD_ORIGINS = 6
CALIB_ORIGINS = 8  # forecast origins per map of the calibration section
QUICK_CALIB_ORIGINS = 3


def _ordered_scenarios(names: Sequence[str]) -> list[str]:
    """Table 1 order: ``PAPER_SCENARIOS`` first, then the other scenarios sorted."""
    present = list(dict.fromkeys(names))
    return [s for s in PAPER_SCENARIOS if s in present] + sorted(
        s for s in present if s not in PAPER_SCENARIOS
    )


@dataclass(frozen=True)
class SectionSettings:
    """The knobs of every section for one run, ``--quick`` defaults resolved (``resolve``)."""

    quick: bool = False  # counterfactuals on the first map of each scenario only
    seed: int = 0  # seed of the counterfactual plans
    rollout_max_slots: int | None = None  # predicted slots per scenario (None: the whole map)
    cf_random_plans: int = CF_RANDOM_PLANS  # random plans per map
    cf_horizon: int = CF_HORIZON  # slots every plan is held
    cf_max_maps: int | None = None  # counterfactual maps (None: all chosen)
    stability_slots: int = STABILITY_SLOTS  # length of the stability rollout
    lead_slots: int = LEAD_SLOTS  # longest lead time of the lead section
    lead_origins: int = LEAD_ORIGINS  # forecast origins per map
    calib_origins: int = CALIB_ORIGINS  # forecast origins per map of the calibration section

    @classmethod
    def resolve(
        cls,
        quick: bool = False,
        *,
        seed: int = 0,
        rollout_max_slots: int | None = None,
        cf_random_plans: int | None = None,
        cf_horizon: int = CF_HORIZON,
        cf_max_maps: int | None = None,
        stability_slots: int | None = None,
        lead_slots: int = LEAD_SLOTS,
        lead_origins: int | None = None,
        calib_origins: int | None = None,
    ) -> SectionSettings:
        """Fill the knobs left ``None`` with their defaults (``quick``: the short ones).
        ``stability_slots``, ``lead_origins`` and ``calib_origins`` of 0 also take the default."""
        return cls(
            quick=quick,
            seed=seed,
            rollout_max_slots=rollout_max_slots
            if rollout_max_slots is not None
            else (QUICK_ROLLOUT_SLOTS if quick else None),
            cf_random_plans=cf_random_plans
            if cf_random_plans is not None
            else (CF_QUICK_RANDOM_PLANS if quick else CF_RANDOM_PLANS),
            cf_horizon=cf_horizon,
            cf_max_maps=cf_max_maps,
            stability_slots=stability_slots
            or (QUICK_STABILITY_SLOTS if quick else STABILITY_SLOTS),
            lead_slots=lead_slots,
            lead_origins=lead_origins or (QUICK_LEAD_ORIGINS if quick else LEAD_ORIGINS),
            calib_origins=calib_origins or (QUICK_CALIB_ORIGINS if quick else CALIB_ORIGINS),
        )


@dataclass
class EvalConfig:
    """One evaluation run."""

    data: str = arg("data/default", "dataset folder (with manifest.json)")
    models: tuple[str, ...] = arg(
        (), "checkpoint folders (PATH or NAME=PATH) and/or baselines: persistence seasonal"
    )
    out: str = arg("runs/eval", "output folder for results.json and results.md")
    split: str = arg("test", "dataset split: train | val | test")
    quick: bool = arg(False, "short rollouts, 1 map per scenario for counterfactuals")
    sections: tuple[str, ...] = arg(
        DEFAULT_SECTIONS, f"sections to run: {' '.join(SECTIONS)} (lead, calibration: opt-in)"
    )
    scenarios: tuple[str, ...] = arg((), "only these scenarios (empty = all)")
    seed: int = arg(0, "seed of the counterfactual plans")
    cf_random_plans: int = arg(
        0, f"random plans per map (0 = {CF_RANDOM_PLANS}, quick {CF_QUICK_RANDOM_PLANS})"
    )
    calib_origins: int = arg(
        0,
        f"forecast origins per map of the calibration section (0 = {CALIB_ORIGINS}, quick "
        f"{QUICK_CALIB_ORIGINS})",
    )
    stability_slots: int = arg(
        0, f"stability rollout length (0 = {STABILITY_SLOTS}, quick {QUICK_STABILITY_SLOTS})"
    )
    device: str = arg("cpu", "torch device of the models")
    memory: str = arg(
        "observed",
        "MobiWM's daily memory past the warm start: observed (the warm start's last day) | "
        "predicted (its own predictions a day earlier)",
    )
    sampled: bool = arg(
        False,
        "rollout section: also score one sampled trajectory (<name>-sampled) of every MobiWM "
        "with a quantile head",
    )
    threads: int = arg(0, "torch CPU threads (0 = torch default)")
    progress: bool = arg(True, "show progress bars")

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("--models: give at least one checkpoint folder or baseline name")
        bad = [s for s in self.sections if s not in SECTIONS]
        if bad:
            raise ValueError(f"unknown --sections {bad}; choose from {list(SECTIONS)}")
        if self.memory not in MEMORY_MODES:
            raise ValueError(f"--memory must be one of {list(MEMORY_MODES)}, got {self.memory!r}")
        for name in ("cf_random_plans", "stability_slots", "calib_origins", "threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0")
