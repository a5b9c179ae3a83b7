"""Evaluate world models on a generated dataset: rollout (Table 1), counterfactuals, stability.

    python -m worldmodel.evaluate --data data/default --models runs/mobiwm-default/best \\
        persistence seasonal --out runs/eval [--split test] [--quick] \\
        [--sections rollout counterfactual stability lead calibration] [--sampled]

``--models`` takes checkpoint folders (MobiWM or a trained baseline, ``NAME=PATH`` to name a
row) and the untrained baselines ``persistence`` and ``seasonal``. ``results.json`` and
``results.md`` (Markdown tables, also printed) are written atomically into ``--out``.

1. **Long-horizon rollout** (paper §5.2, Table 1 layout). Every model warm-starts on the true
   traffic of the first ``W = max_i H_i`` slots of every test map (model ``i`` reads the last
   ``H_i`` of them, so every model predicts the same slots) and rolls out autoregressively over
   the rest of the map with the true action / active sequence; the true traffic after the warm
   start is zeroed before any model sees it. JSD (``metrics.jsd``), MAE, RMSE and NRMSE over
   active real cells, pooled over each scenario's test maps; plus MobiWM's JSD improvement over
   the best baseline per scenario and the MAE per rollout day.
2. **Counterfactual fidelity.** Per map the twin is re-run from slot 0 to ``t0`` (first weekday
   08:00 after the warm start) with the true actions in ``E`` copies, one per plan; then every
   copy holds a plan for ``horizon`` slots: ``none`` (hold the parameters of ``t0``; plus a
   replicate as a sanity check), ``random`` (20–40 % of active cells: power ±3 dB, azimuth
   ±30°, tilts ±3°, clipped to the bounds), ``overpower`` (§5.4a: a few cells at the power
   bound + 3 dB and azimuth ±60°; the twin's bounds are widened) and ``site_off`` (§5.4b: every
   cell of one site switched off). The copies share their fast-fading draws (common random
   numbers, drawn as for a single copy, which also makes the re-run reproduce the dataset), so
   plan deltas are free of fading noise. Every model gets the twin's last ``H`` slots before
   ``t0`` as history and the plan as future actions. Per cell, delta = mean traffic over the
   horizon under the plan minus under ``none``; ``delta_r2`` and ``sign_agreement`` (tol = 1 %
   of the map's mean cell traffic) pooled over cells and maps per plan kind, over the cells
   active under either plan (``all``) and over the cells active under the plan (``on``: for
   ``site_off`` the neighbours that take over the traffic).
3. **Rollout stability.** Every checkpoint model rolls out ``stability_slots`` (10,000) slots
   on one test map from a true warm start: true actions while the map lasts, then held at the
   last values; time indices continue; slot ``s`` reads the OD of map row ``s mod T_map``
   (each window carries its own OD slices, so ``MobiWM.rollout`` sees cache slots
   ``0..T-1`` of the window). Reports NaN / negative values, min / max of the map's total
   traffic per slot relative to the twin's range over the map's week, the share of slots
   outside ``[0.5·min, 1.5·max]`` of that range, weekly means and the drift (mean total of the
   last week / first week).

4. **Error by lead time** (``--sections lead``; opt-in). From ``LEAD_ORIGINS`` forecast
   origins per map (one every ``LEAD_SPACING`` slots from the warm start, so they cover every
   hour of a day) every model reads the true traffic before the origin and rolls out
   ``LEAD_SLOTS`` slots. MAE by lead time ``ℓ`` (slots since the last true slot, 1 = the next
   slot) pooled over origins, maps and active cells, per scenario and over all. Lead 1–P is
   teacher forcing (one chunk from the truth); the curve shows whether a rollout's error keeps
   growing (feedback drift) or levels off once the true recent slots are forgotten.
5. **Calibration** (``--sections calibration``; opt-in; models with a quantile head): coverage
   of the 50 % / 90 % intervals per scenario and lead time, CRPS, sharpness, PIT, the spread's
   rank correlation with the error, against seasonal-naive with empirical quantiles; and the
   out-of-distribution gate's AUROC on the counterfactual plans (``calibration``).

``--sampled`` adds to the rollout section one sampled trajectory of every MobiWM with a quantile
head (``<name>-sampled``): its values spread like real traffic, which the JSD compares.

``--quick``: rollout over at most 192 predicted slots, counterfactuals on the first test map of
each scenario with 2 random plans, a 2,016-slot stability run.
"""

# Every name of the single-file module this package replaced stays importable from here (the
# private helpers as ``X as X`` re-exports).

from __future__ import annotations

from worldmodel import metrics
from worldmodel.baselines import (
    GRUWorldModel,
    MobiWMAdapter,
    Persistence,
    SeasonalNaive,
    WorldModel,
    as_world_model,
    load_world_model,
    slice_window,
)
from worldmodel.cli import arg, parse_config
from worldmodel.data.dataset import collate_maps, load_split, scenario_name
from worldmodel.data.format import MapRecord
from worldmodel.evaluate.batches import _group_by_shape as _group_by_shape
from worldmodel.evaluate.batches import _held as _held
from worldmodel.evaluate.batches import _run_model as _run_model
from worldmodel.evaluate.batches import _shape_key as _shape_key
from worldmodel.evaluate.batches import _warm_memory as _warm_memory
from worldmodel.evaluate.batches import map_item
from worldmodel.evaluate.cli import main
from worldmodel.evaluate.config import (
    CF_HORIZON,
    CF_QUICK_RANDOM_PLANS,
    CF_RANDOM_PLANS,
    DEFAULT_SECTIONS,
    LEAD_ORIGINS,
    LEAD_SLOTS,
    NAIVE_BASELINES,
    PAPER_SCENARIOS,
    QUICK_LEAD_ORIGINS,
    QUICK_ROLLOUT_SLOTS,
    QUICK_STABILITY_SLOTS,
    SECTIONS,
    STABILITY_SLOTS,
    EvalConfig,
    SectionSettings,
)
from worldmodel.evaluate.config import _ordered_scenarios as _ordered_scenarios
from worldmodel.evaluate.counterfactual import (
    CF_START_SLOT_OF_DAY,
    CF_TOL_SHARE,
    OVERPOWER_AZIMUTH_DEG,
    OVERPOWER_CELLS,
    OVERPOWER_DB,
    PLAN_KINDS,
    RANDOM_FRACTION,
    RANDOM_STEP,
    Plan,
    counterfactual_section,
    make_plans,
    model_counterfactual,
    pick_t0,
    run_counterfactual,
    twin_counterfactual,
)
from worldmodel.evaluate.counterfactual import _cf_scores as _cf_scores
from worldmodel.evaluate.lead import (
    LEAD_BANDS,
    LEAD_BATCH,
    LEAD_SPACING,
    lead_bands,
    lead_section,
    run_lead,
)
from worldmodel.evaluate.models import EvalModel, resolve_models
from worldmodel.evaluate.models import _kind as _kind
from worldmodel.evaluate.models import _looks_like_path as _looks_like_path
from worldmodel.evaluate.models import _name_from_path as _name_from_path
from worldmodel.evaluate.report import _clean as _clean
from worldmodel.evaluate.report import _fmt as _fmt
from worldmodel.evaluate.report import _ranked as _ranked
from worldmodel.evaluate.report import _summary as _summary
from worldmodel.evaluate.report import _table as _table
from worldmodel.evaluate.rollout import (
    JSD_TARGET_PCT,
    JSD_Z90,
    rollout_predictions,
    rollout_section,
    run_rollout,
)
from worldmodel.evaluate.rollout import _improvement as _improvement
from worldmodel.evaluate.rollout import _jackknife_improvement as _jackknife_improvement
from worldmodel.evaluate.rollout import _ours_and_baselines as _ours_and_baselines
from worldmodel.evaluate.sections import (
    SECTION_TABLE,
    Section,
    evaluate_models,
    to_markdown,
    write_results,
)
from worldmodel.evaluate.stability import (
    STABILITY_SEGMENT,
    long_rollout,
    run_stability,
    stability_section,
    stability_stats,
)
from worldmodel.model.mobiwm import MEMORY_MODES, DailyMemory
from worldmodel.twin.scenario import AZIMUTH, DAYS_PER_WEEK, POWER, SLOTS_PER_DAY, SLOTS_PER_WEEK

__all__ = [
    "CF_HORIZON",
    "CF_QUICK_RANDOM_PLANS",
    "CF_RANDOM_PLANS",
    "CF_START_SLOT_OF_DAY",
    "CF_TOL_SHARE",
    "DEFAULT_SECTIONS",
    "JSD_TARGET_PCT",
    "JSD_Z90",
    "LEAD_BANDS",
    "LEAD_BATCH",
    "LEAD_ORIGINS",
    "LEAD_SLOTS",
    "LEAD_SPACING",
    "NAIVE_BASELINES",
    "OVERPOWER_AZIMUTH_DEG",
    "OVERPOWER_CELLS",
    "OVERPOWER_DB",
    "PAPER_SCENARIOS",
    "PLAN_KINDS",
    "QUICK_LEAD_ORIGINS",
    "QUICK_ROLLOUT_SLOTS",
    "QUICK_STABILITY_SLOTS",
    "RANDOM_FRACTION",
    "RANDOM_STEP",
    "SECTIONS",
    "SECTION_TABLE",
    "STABILITY_SEGMENT",
    "STABILITY_SLOTS",
    "EvalConfig",
    "EvalModel",
    "Plan",
    "Section",
    "SectionSettings",
    "counterfactual_section",
    "evaluate_models",
    "lead_bands",
    "lead_section",
    "long_rollout",
    "main",
    "make_plans",
    "map_item",
    "model_counterfactual",
    "pick_t0",
    "resolve_models",
    "rollout_predictions",
    "rollout_section",
    "run_counterfactual",
    "run_lead",
    "run_rollout",
    "run_stability",
    "stability_section",
    "stability_stats",
    "to_markdown",
    "twin_counterfactual",
    "write_results",
    # re-exported from the rest of worldmodel (the single-file module had them in scope)
    "AZIMUTH",
    "DAYS_PER_WEEK",
    "MEMORY_MODES",
    "POWER",
    "SLOTS_PER_DAY",
    "SLOTS_PER_WEEK",
    "DailyMemory",
    "GRUWorldModel",
    "MapRecord",
    "MobiWMAdapter",
    "Persistence",
    "SeasonalNaive",
    "WorldModel",
    "arg",
    "as_world_model",
    "collate_maps",
    "load_split",
    "load_world_model",
    "metrics",
    "parse_config",
    "scenario_name",
    "slice_window",
]
