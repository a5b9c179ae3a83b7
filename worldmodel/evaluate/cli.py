"""``python -m worldmodel.evaluate``: parse the flags (``EvalConfig``), evaluate, write, print."""

from __future__ import annotations

import sys
import time

import torch

from worldmodel.cli import parse_config
from worldmodel.evaluate.config import EvalConfig
from worldmodel.evaluate.sections import evaluate_models, to_markdown, write_results


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m worldmodel.evaluate`` with ``argv``; ``--help`` shows the package doc."""
    import worldmodel.evaluate as package  # its docstring is the --help description

    cfg = parse_config(
        EvalConfig, argv, description=package.__doc__ or "", prog="python -m worldmodel.evaluate"
    )
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t = time.perf_counter()
    results = evaluate_models(
        cfg.data,
        list(cfg.models),
        cfg.split,
        cfg.quick,
        sections=cfg.sections,
        scenarios=cfg.scenarios or None,
        device=cfg.device,
        progress=cfg.progress,
        seed=cfg.seed,
        cf_random_plans=cfg.cf_random_plans or None,
        stability_slots=cfg.stability_slots or None,
        calib_origins=cfg.calib_origins or None,
        memory=cfg.memory,
        sampled=cfg.sampled,
    )
    results["seconds"]["total"] = round(time.perf_counter() - t, 2)
    j, m = write_results(cfg.out, results)
    print(to_markdown(results))
    print(f"wrote {j} and {m}", file=sys.stderr)
    return 0
