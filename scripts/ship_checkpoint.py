"""Copy a trained MobiWM checkpoint into the package and record its metrics on test maps.

    python scripts/ship_checkpoint.py --name fast --run runs/mobiwm-xs --eval runs/eval/results.json
    python scripts/ship_checkpoint.py --name full --run runs/mobiwm-s --eval ...

Writes the shipped checkpoint ``--name`` (``fast``: the small env model, ``full``: the full
MobiWM; ``mobiwm_env.config.SHIPPED_CHECKPOINTS``), ``model.safetensors`` + ``config.json``. The
JSON's ``extra.test_metrics`` holds the evaluation's Table-1 rollout metrics (from
``python -m worldmodel.evaluate``), and ``extra.reference_check`` a small, quickly
recomputable rollout on one held-out map (``hex-para-test-000``, regenerated from its seed),
which ``tests/mobiwm_env/test_shipped_checkpoint.py`` re-runs and compares.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mobiwm_env.config import SHIPPED_CHECKPOINTS  # noqa: E402
from worldmodel.cli import write_json_atomic  # noqa: E402
from worldmodel.data.generate import (  # noqa: E402
    GenerateConfig,
    ScenarioSpec,
    generate,
    with_demand,
)
from worldmodel.evaluate import evaluate_models  # noqa: E402
from worldmodel.model.checkpoint import load_checkpoint  # noqa: E402
from worldmodel.twin.demand import DEFAULT_DEMAND, DEMAND_PRESETS  # noqa: E402

REFERENCE = {"scenario": "hex-para", "map": "hex-para-test-000", "rollout_slots": 96}
"""The reference check: the default preset's first hex-para test map, a one-day rollout."""


def reference_config(demand: str = DEFAULT_DEMAND) -> GenerateConfig:
    """Generates exactly the default preset's ``hex-para-test-000`` (same seed derivation) on
    the twin with demand preset ``demand``."""
    cfg = GenerateConfig(scenarios=(ScenarioSpec("hex", "para", maps=(0, 0, 1)),))
    return with_demand(cfg, demand)


def training_demand(checkpoint: Path) -> str:
    """The demand preset of the data a shipped checkpoint was checked on (0.2.0: smooth)."""
    cfg = json.loads((Path(checkpoint) / "config.json").read_text())
    return cfg.get("extra", {}).get("reference_check", {}).get("demand", "smooth")


def reference_metrics(checkpoint: Path, demand: str | None = None) -> dict:
    """Rollout metrics of ``checkpoint`` on the reference map (warm start as in evaluate);
    ``demand`` defaults to the one recorded with the checkpoint."""
    demand = training_demand(checkpoint) if demand is None else demand
    with tempfile.TemporaryDirectory() as tmp:
        generate(reference_config(demand), tmp, progress=False)
        res = evaluate_models(
            tmp,
            [str(checkpoint)],
            "test",
            sections=("rollout",),
            progress=False,
            rollout_max_slots=REFERENCE["rollout_slots"],
        )
    metrics = res["rollout"]["metrics"][REFERENCE["scenario"]]
    return next(iter(metrics.values()))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="training run folder (uses best/)")
    p.add_argument("--eval", type=Path, required=True, help="results.json of worldmodel.evaluate")
    p.add_argument("--name", choices=sorted(SHIPPED_CHECKPOINTS), required=True)
    p.add_argument(
        "--demand",
        choices=sorted(DEMAND_PRESETS),
        default=DEFAULT_DEMAND,
        help="demand preset of the twin the model was trained on (for the reference check)",
    )
    args = p.parse_args()
    args.dest = SHIPPED_CHECKPOINTS[args.name]
    src = args.run / "best"
    load_checkpoint(src)  # validates before anything is copied
    results = json.loads(args.eval.read_text())
    tmp_dest = args.dest.with_name(args.dest.name + ".tmp")
    shutil.rmtree(tmp_dest, ignore_errors=True)
    shutil.copytree(src, tmp_dest)
    cfg_path = tmp_dest / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["extra"]["test_metrics"] = {
        "source": str(args.eval),
        "split": results["config"].get("split", "test"),
        # the rollout's daily memory (results written before the option rolled out "predicted")
        "memory": results["config"].get("memory", "predicted"),
        "rollout": results.get("rollout", {}).get("metrics", {}),
        "counterfactual": results.get("counterfactual", {}).get("metrics", {}),
        "stability": results.get("stability", {}).get("models", results.get("stability", {})),
    }
    write_json_atomic(cfg_path, cfg)
    metrics = reference_metrics(tmp_dest, args.demand)
    cfg["extra"]["reference_check"] = {**REFERENCE, "demand": args.demand, "metrics": metrics}
    write_json_atomic(cfg_path, cfg)
    load_checkpoint(tmp_dest)
    shutil.rmtree(args.dest, ignore_errors=True)
    tmp_dest.rename(args.dest)
    size = sum(f.stat().st_size for f in args.dest.iterdir()) / 1e6
    print(f"shipped {src} -> {args.dest} ({size:.2f} MB)")
    print(json.dumps(cfg["extra"]["reference_check"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
