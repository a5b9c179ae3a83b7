"""Compare the no-op, the rule-based heuristic and a trained PPO policy on the twin.

    python examples/compare_policies.py                          # newest runs/ppo-*/model.zip
    python examples/compare_policies.py --ppo runs/ppo-20261123-1040 --runs 8

Every policy starts from the same seeded states; the table shows the steady-state RMSE to the
balanced target (MB per slot, last half of each day) and the Eq. 21 return with 95% confidence
intervals (``agents.evaluate``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from agents.evaluate import evaluate_policies, markdown_table  # noqa: E402


def newest_run(root: str = "runs") -> str | None:
    """The newest ``runs/ppo-*`` folder holding a ``model.zip``."""
    runs = sorted(Path(root).glob("ppo-*/model.zip"), key=lambda p: p.stat().st_mtime)
    return str(runs[-1].parent) if runs else None


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ppo", default="", help="PPO run folder or model.zip ('' = newest runs/ppo-*)")
    p.add_argument("--runs", type=int, default=6, help="episodes per policy (default 6)")
    p.add_argument("--seed", type=int, default=10_000, help="first evaluation seed")
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    specs = ["noop", "heuristic"]
    ppo = args.ppo or newest_run()
    if ppo:
        specs.append(ppo)
    else:
        print("no trained PPO policy found (train one: python agents/train_ppo.py)")
    result = evaluate_policies(specs, ("twin",), args.runs, args.seed)
    print()
    print(markdown_table(result, "Policies on the twin"))
    return result


if __name__ == "__main__":
    main()
