"""Write the coverage prior's closed form, with nothing learnt, as a loadable checkpoint.

    python scripts/closed_form_checkpoint.py --from runs/mobiwm-s-cal/best \
        --calibrate 3 --out runs/closed-form-cal3
    python -m worldmodel.evaluate --data data/default --models closed=runs/closed-form-cal3 \
        --sections counterfactual --out runs/eval-closed-form

Takes a trained coverage-prior checkpoint (for its architecture and traffic normaliser only)
and writes a copy whose prediction head is zeroed, whose ``coverage_gain`` is 1 and whose demand
proxy is the plain POI count (the proxy's MLP zeroed): the model then predicts the anchor's
traffic (yesterday's value for the ``yesterday`` anchor) times ``exp(Δ log share)`` of the
prior (``--calibrate K``: fitted to the anchor slot's traffic with ``K`` steps; 0: the
uncalibrated share change, added in normalised space). It shows what the prior alone explains
of the twin's counterfactual changes (``docs/results.md``).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worldmodel.model import MobiWM, load_checkpoint, save_checkpoint  # noqa: E402


def closed_form(source: str | Path, calibrate: int) -> MobiWM:
    """The closed-form model built from the checkpoint at ``source`` (see the module doc)."""
    src = load_checkpoint(source)
    if not isinstance(src, MobiWM) or src.coverage is None:
        raise ValueError(f"{source}: not a MobiWM checkpoint with the coverage prior")
    model = MobiWM(replace(src.cfg, coverage_calibrate=int(calibrate)))
    model.load_state_dict(src.state_dict())
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.coverage_gain.fill_(1.0)
        if model.coverage.demand is not None:
            model.coverage.demand.fc2.weight.zero_()
            model.coverage.demand.fc2.bias.zero_()
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--from", dest="source", required=True, help="coverage-prior checkpoint")
    p.add_argument("--calibrate", type=int, default=3, help="fitting steps (0: uncalibrated)")
    p.add_argument("--out", required=True, help="checkpoint folder to write")
    args = p.parse_args(argv)
    out = save_checkpoint(closed_form(args.source, args.calibrate), args.out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
