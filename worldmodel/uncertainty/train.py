"""Fit a quantile head (and the out-of-distribution gate) on a frozen MobiWM checkpoint.

    python -m worldmodel.uncertainty.train --checkpoint mobiwm_env/assets/mobiwm-fast \\
        --data data/default [--out DIR] [--origins 8] [--lead-slots 96] [--epochs 20]

Steps (``worldmodel.uncertainty.fit``): rollout examples from the training maps and the
validation maps; the head fitted by the pinball loss (the network stays frozen); the temperature
and the copula's lag-1 correlation fitted on the validation maps; the action support from the
training maps and the gate's threshold: the largest support distance of random in-range plans
(the counterfactual section's ``random`` kind) on the validation maps. The head is written beside
the checkpoint (``uncertainty.safetensors`` / ``uncertainty.json``; into ``--out`` with a copy
of the network when given), with this run's resolved config and fit figures in its ``extra``;
TensorBoard curves go to ``--logdir``.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldmodel.cli import arg, parse_config, write_json_atomic
from worldmodel.data.dataset import load_split
from worldmodel.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_checkpoint
from worldmodel.model.uncertainty import QuantileHead, UncertaintyConfig, save_uncertainty
from worldmodel.uncertainty.fit import (
    collect_examples,
    fit_copula_rho,
    fit_head,
    fit_support,
    fit_temperature,
)
from worldmodel.uncertainty.gate import random_plan_scores

GATE_TOLERANCE = 0.01
"""Smallest gate threshold (support-distance units: 1 % of a parameter's largest daily change),
so rounding at the parameter bounds never flags an in-range plan."""


@dataclass
class UncertaintyTrainConfig:
    """One fit of a quantile head."""

    checkpoint: str = arg("mobiwm_env/assets/mobiwm-fast", "MobiWM checkpoint folder (frozen)")
    data: str = arg("data/default", "dataset folder (its train and val splits are used)")
    out: str = arg("", "write the checkpoint with its head here (default: beside the checkpoint)")
    logdir: str = arg("", "TensorBoard folder (default runs/uncertainty-<checkpoint name>)")
    origins: int = arg(8, "forecast origins per training map")
    val_origins: int = arg(8, "forecast origins per validation map")
    lead_slots: int = arg(96, "slots rolled out from every origin (the longest lead learnt)")
    keep: float = arg(0.25, "share of the (cell, slot) examples kept")
    hidden: int = arg(64, "width of the head's hidden layer")
    epochs: int = arg(20, "passes over the training examples")
    lr: float = arg(3e-3, "Adam learning rate (cosine decay)")
    batch_size: int = arg(4096, "examples per step")
    gate_plans: int = arg(24, "random in-range plans per validation map for the gate threshold")
    seed: int = arg(0, "seed of the example subsampling, the batches and the plans")
    threads: int = arg(0, "torch CPU threads (0 = torch default)")
    progress: bool = arg(True, "show progress bars")

    def __post_init__(self) -> None:
        for name in ("origins", "val_origins", "lead_slots", "hidden", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        if not 0.0 < self.keep <= 1.0:
            raise ValueError(f"--keep must be in (0, 1], got {self.keep}")
        if not self.lr > 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if self.gate_plans < 1:
            raise ValueError("--gate-plans must be >= 1")


def run(cfg: UncertaintyTrainConfig) -> dict[str, Any]:
    """Fit, save and return the fit summary (also stored in ``uncertainty.json``'s extra)."""
    t0 = time.perf_counter()
    src = Path(cfg.checkpoint)
    model = load_checkpoint(src)
    model.attach_uncertainty(None)
    train = load_split(cfg.data, "train")
    val = load_split(cfg.data, "val")
    if not train or not val:
        raise ValueError(f"{cfg.data}: needs maps in both the train and the val split")
    name = src.resolve().name
    logdir = Path(cfg.logdir or f"runs/uncertainty-{name}")
    writer = _writer(logdir)
    ex_train = collect_examples(model, train, cfg.origins, cfg.lead_slots, cfg.keep, cfg.seed,
                                cfg.progress, "train rollouts")  # fmt: skip
    ex_val = collect_examples(model, val, cfg.val_origins, cfg.lead_slots, cfg.keep,
                              cfg.seed + 1, cfg.progress, "val rollouts")  # fmt: skip
    t_collect = time.perf_counter() - t0
    torch.manual_seed(cfg.seed)
    ucfg = UncertaintyConfig(hidden=cfg.hidden, max_lead_slots=cfg.lead_slots)
    head = QuantileHead(model.cfg.d_model, ucfg)

    def log(tag: str, value: float, step: int) -> None:
        if writer is not None:
            writer.add_scalar(tag, value, step)

    fit = fit_head(head, ex_train, ex_val, cfg.epochs, cfg.lr, cfg.batch_size, cfg.seed,
                   cfg.progress, log)  # fmt: skip
    temp = fit_temperature(head, ex_val)
    model.attach_uncertainty(head)
    rho = fit_copula_rho(model, val, max(2, cfg.val_origins // 2), cfg.lead_slots, cfg.seed,
                         cfg.progress)  # fmt: skip
    head.configure(copula_rho=rho)
    support = fit_support(train)
    scores = random_plan_scores(support, val, cfg.gate_plans, cfg.seed)
    threshold = max(float(np.max(scores)), GATE_TOLERANCE)
    head.support = dataclasses.replace(support, threshold=threshold)
    summary = {
        "config": asdict(cfg),
        "command": " ".join(sys.argv),
        "examples": {"train": len(ex_train), "val": len(ex_val)},
        "fit": {k: v for k, v in fit.items() if k != "curve"},
        "temperature": temp["temperature"],
        "val_pinball_after_temperature": temp["val_pinball"],
        "copula_rho": rho,
        "gate": {
            "val_random_plans": len(scores),
            "threshold": head.support.threshold,
            "score_quantiles": {q: float(np.percentile(scores, q)) for q in (50, 90, 99, 100)},
        },
        "seconds": {"collect": round(t_collect, 1), "total": round(time.perf_counter() - t0, 1)},
    }
    out = Path(cfg.out) if cfg.out else src
    if out.resolve() != src.resolve():
        out.mkdir(parents=True, exist_ok=True)
        for f in (CONFIG_FILE, WEIGHTS_FILE):
            shutil.copy2(src / f, out / f)
    save_uncertainty(head, out, extra=summary)
    write_json_atomic(logdir / "uncertainty_config.json", summary)
    if writer is not None:
        log("val/pinball_after_temperature", temp["val_pinball"], cfg.epochs)
        writer.close()
    return summary


def _writer(logdir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # pragma: no cover - tensorboard is a dependency
        return None
    logdir.mkdir(parents=True, exist_ok=True)
    return SummaryWriter(str(logdir))


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(UncertaintyTrainConfig, argv, description=__doc__ or "",
                       prog="python -m worldmodel.uncertainty.train")  # fmt: skip
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    s = run(cfg)
    print(
        f"head fitted: val pinball {s['val_pinball_after_temperature']:.4f} "
        f"(temperature {s['temperature']}, copula rho {s['copula_rho']:.2f}); gate threshold "
        f"{s['gate']['threshold']:.3f}; {s['examples']['train']:,} training examples; "
        f"{s['seconds']['total']:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
