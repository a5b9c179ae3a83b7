"""The section table: a ``(name, run, render)`` triple per section, in report order.

``evaluate_models`` runs the chosen sections of the table, ``to_markdown`` renders the ones in a
result, ``write_results`` writes both (``results.json``, ``results.md``). Times are seconds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from worldmodel.cli import write_text_atomic
from worldmodel.data.dataset import load_split
from worldmodel.data.format import MapRecord
from worldmodel.evaluate.calibration import render_calibration, run_calibration
from worldmodel.evaluate.config import DEFAULT_SECTIONS, SECTIONS, SectionSettings
from worldmodel.evaluate.counterfactual import run_counterfactual
from worldmodel.evaluate.lead import run_lead
from worldmodel.evaluate.models import EvalModel, resolve_models, sampled_rows
from worldmodel.evaluate.report import (
    _clean,
    render_counterfactual,
    render_header,
    render_lead,
    render_rollout,
    render_seconds,
    render_stability,
    render_summary,
)
from worldmodel.evaluate.rollout import run_rollout
from worldmodel.evaluate.stability import run_stability

RunFn = Callable[[Sequence[MapRecord], Sequence[EvalModel], SectionSettings, bool], dict[str, Any]]
"""``run(records, models, settings, progress)`` → the section's JSON-ready results."""
RenderFn = Callable[[dict[str, Any], list[str], str], list[str]]
"""``render(section results, model names, traffic unit)`` → Markdown lines."""


@dataclass(frozen=True)
class Section:
    """One section of the evaluation: how it runs and how it is reported."""

    name: str
    run: RunFn
    render: RenderFn


SECTION_TABLE: tuple[Section, ...] = (
    Section("rollout", run_rollout, render_rollout),
    Section("counterfactual", run_counterfactual, render_counterfactual),
    Section("stability", run_stability, render_stability),
    Section("lead", run_lead, render_lead),
    Section("calibration", run_calibration, render_calibration),
)
if tuple(s.name for s in SECTION_TABLE) != SECTIONS:
    raise RuntimeError("SECTION_TABLE must list the SECTIONS in order")


def evaluate_models(
    data_root: str | Path,
    model_specs: Sequence[Any],
    split: str = "test",
    quick: bool = False,
    *,
    sections: Sequence[str] = DEFAULT_SECTIONS,
    scenarios: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    seed: int = 0,
    cf_random_plans: int | None = None,
    cf_max_maps: int | None = None,
    stability_slots: int | None = None,
    calib_origins: int | None = None,
    rollout_max_slots: int | None = None,
    memory: str = "observed",
    sampled: bool = False,
) -> dict[str, Any]:
    """Run the chosen ``sections`` for every model on ``split`` of ``data_root``; returns the
    JSON-ready results (``config``, ``models``, one entry per section, ``seconds``). MobiWM
    rollouts use the daily ``memory`` mode (``MobiWM.rollout``). ``sampled``: the rollout
    section also scores one sampled trajectory of every MobiWM with a quantile head
    (``<name>-sampled`` rows, ``SampledMobiWM``; seeded by ``seed``)."""
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        raise ValueError(f"unknown section(s) {bad}; choose from {list(SECTIONS)}")
    models = resolve_models(model_specs, device, memory=memory)
    records = load_split(data_root, split, list(scenarios) if scenarios else None)
    if not records:
        raise ValueError(f"{data_root}: no maps in split {split!r}")
    results: dict[str, Any] = {
        "config": {
            "data": str(data_root),
            "split": split,
            "quick": quick,
            "sections": list(sections),
            "scenarios": list(scenarios) if scenarios else None,
            "seed": seed,
            "memory": memory,
            "n_maps": len(records),
            "traffic_unit": records[0].metadata.get("traffic_unit", "?"),
        },
        "models": {m.name: m.info() for m in models},
        "seconds": {},
    }
    settings = SectionSettings.resolve(
        quick,
        seed=seed,
        rollout_max_slots=rollout_max_slots,
        cf_random_plans=cf_random_plans,
        cf_max_maps=cf_max_maps,
        stability_slots=stability_slots,
        calib_origins=calib_origins,
    )
    extra = sampled_rows(models, seed) if sampled else []
    if sampled and not extra:
        raise ValueError("--sampled: no MobiWM row carries a quantile head")
    results["models"].update({m.name: m.info() for m in extra})
    results["config"]["sampled"] = sampled
    for section in SECTION_TABLE:
        if section.name in sections:
            t = time.perf_counter()
            rows = [*models, *extra] if section.name == "rollout" else models
            results[section.name] = section.run(records, rows, settings, progress)
            results["seconds"][section.name] = round(time.perf_counter() - t, 2)
    return results


def to_markdown(results: dict[str, Any]) -> str:
    """The results as Markdown tables."""
    unit = results["config"].get("traffic_unit", "?")
    names = list(results["models"])
    md = render_header(results)
    md += render_summary(results, names)
    for section in SECTION_TABLE:
        res = results.get(section.name)
        if res:
            md += section.render(res, names, unit)
    md += render_seconds(results)
    return "\n".join(md) + "\n"


def write_results(out: str | Path, results: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``results.json`` and ``results.md`` into ``out`` atomically; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    j, m = out / "results.json", out / "results.md"
    write_text_atomic(j, json.dumps(_clean(results), indent=2, allow_nan=False) + "\n")
    write_text_atomic(m, to_markdown(results))
    return j, m
