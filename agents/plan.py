"""Intent to plan: parse an operator's intent, plan under the safety shield, judge on the twin.

    python agents/plan.py --intent "balance load in sites 3–9 from 18:00 to 22:00, keep \\
        unserved below 1%, do not touch site 4"
    python agents/plan.py --intent-file intent.json --policy runs/ppo-x --runs 8

The intent (``mobiwm_env.intent_text`` grammar, or a JSON file of ``mobiwm_env.intent.Intent``)
is compiled for the scenario (``mobiwm_env.intent_compile``): the reward weights of the env and
the ``SafetyShield`` configuration. The planner — MPC on the world model (``--policy mpc``, the
default) or a trained PPO policy (a run folder) — then acts on the twin through the shield, from
the same seeded starts as the no-op (a time-windowed intent's episodes start when its window
opens; outside the window the shield holds every cell still). Printed and written to ``--out``: the before (no-op) / after
table of imbalance (MB per slot), unserved traffic (MB per slot), overloaded cell-slots (load
ratio above the intent's limit, else 1), cells changed by the end of the episode, the shield's
interventions, and a GIF of the first planned episode.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python agents/plan.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from agents.baselines import EnvFacts, make_controller  # noqa: E402
from agents.envs import EnvState, find_core, make_vector_env  # noqa: E402
from agents.evaluate import EVAL_SEED, load_policy, mean_ci, save_gif  # noqa: E402
from mobiwm_env.dynamics import load_scenario  # noqa: E402
from mobiwm_env.intent import Intent  # noqa: E402
from mobiwm_env.intent_compile import CompiledIntent, compile_intent  # noqa: E402
from mobiwm_env.intent_text import parse_intent  # noqa: E402
from mobiwm_env.wrappers import SafetyShield  # noqa: E402
from worldmodel.cli import arg, parse_config, write_json_atomic, write_text_atomic  # noqa: E402
from worldmodel.twin.scenario import SLOTS_PER_DAY, SLOTS_PER_WEEK  # noqa: E402


@dataclass
class PlanConfig:
    """One intent, planned and judged."""

    intent: str = arg("", "the intent in English (see mobiwm_env.intent_text)")
    intent_file: str = arg("", "or a JSON file of an Intent")
    scenario: str = arg("hex57", "scenario name")
    policy: str = arg("mpc", "planner: mpc (CEM on the world model) or a PPO run folder / zip")
    checkpoint: str = arg("fast", "world model of the planner and of the shield's check")
    runs: int = arg(4, "seeded episodes (the no-op runs the same ones)")
    seed: int = arg(EVAL_SEED, "first episode seed")
    episode_steps: int = arg(24, "env steps (hours) per episode")
    gif: bool = arg(True, "save the first planned episode as a GIF")
    out: str = arg("", "output folder (default runs/plan-<timestamp>)")
    threads: int = arg(1, "torch CPU threads")

    def __post_init__(self) -> None:
        if bool(self.intent) == bool(self.intent_file):
            raise ValueError("give exactly one of --intent and --intent-file")
        if self.runs < 1 or self.episode_steps < 1:
            raise ValueError("--runs and --episode-steps must be >= 1")


def read_intent(cfg: PlanConfig) -> Intent:
    return parse_intent(cfg.intent) if cfg.intent else Intent.load(cfg.intent_file)


def run_plan(
    compiled: CompiledIntent,
    policy: str | None,
    cfg: PlanConfig,
    gif_path: Path | None = None,
) -> dict[str, Any]:
    """Episodes of ``policy`` (``None``: the no-op, unshielded) on the twin → per-episode KPIs."""
    kw = dict(compiled.env_kwargs, scenario=cfg.scenario, episode_steps=cfg.episode_steps)
    venv = make_vector_env("twin", cfg.runs, None,
                           render_mode="rgb_array" if gif_path else None, **kw)  # fmt: skip
    if policy is not None:
        venv = SafetyShield(venv, compiled.shield)
        ctrl = load_policy(policy, venv, cfg.checkpoint, cfg.seed)
    else:
        ctrl = make_controller("noop", EnvFacts.from_env(venv))
    core = find_core(venv)
    obs, info = venv.reset(seed=cfg.seed, options=start_options(compiled.intent))
    ctrl.reset()
    start = core.params.copy()
    cap = np.asarray(core.scenario.cell_capacity, dtype=np.float64)
    limit = compiled.shield.max_load_ratio or 1.0
    imbalance, unserved, overloaded = (np.zeros(cfg.runs) for _ in range(3))
    frames = [venv.render()] if gif_path else []
    needs_state = getattr(ctrl, "name", "") == "mpc"
    end = start
    for _step in range(cfg.episode_steps):
        state = EnvState.from_env(venv) if needs_state else None
        obs, _, _, _, info = venv.step(ctrl.predict(obs, info, state))
        p = info["traffic"].shape[1]
        imbalance += info["imbalance"] / p
        unserved += info["unserved"].mean(axis=1)
        overloaded += ((info["traffic"] / cap > limit) & core.active).sum(axis=(1, 2))
        if gif_path:
            frames.append(venv.render())
        end = info["params"]
    changed = (np.abs(end - start) > 1e-6).any(axis=2).sum(axis=1)
    counts = getattr(venv, "counts", None)
    venv.close()
    if gif_path:
        save_gif(frames, gif_path)
    steps = cfg.episode_steps
    return {
        "imbalance_mb": imbalance / steps,
        "unserved_mb": unserved / steps,
        "overloaded_cell_slots": overloaded,
        "changed_cells": changed.astype(float),
        "shield": None if counts is None else {k: int(v) for k, v in counts.items()},
    }


def start_options(intent: Intent) -> dict[str, Any] | None:
    """Episodes of a time-windowed intent start when its window opens, on its first day in week
    1 (week 0 is the warm-up); others start at random slots."""
    w = intent.window
    if w is None:
        return None
    return {"start_slot": SLOTS_PER_WEEK + w.days[0] * SLOTS_PER_DAY + int(w.start_hour * 4)}


KPIS = (
    ("imbalance_mb", "imbalance (MB/slot)"),
    ("unserved_mb", "unserved (MB/slot)"),
    ("overloaded_cell_slots", "overloaded cell-slots"),
    ("changed_cells", "cells changed"),
)


def kpi_table(before: dict[str, Any], after: dict[str, Any], label: str) -> str:
    lines = [f"| KPI (mean ± 95% CI over episodes) | before (no-op) | after ({label} + shield) |",
             "|---|---:|---:|"]  # fmt: skip
    for key, name in KPIS:
        b, a = mean_ci(before[key]), mean_ci(after[key])
        lines.append(
            f"| {name} | {b['mean']:.1f} ± {b['ci95']:.1f} | {a['mean']:.1f} ± {a['ci95']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(PlanConfig, argv, description=__doc__)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out or f"runs/plan-{time.strftime('%Y%m%d-%H%M%S')}")
    intent = read_intent(cfg)
    compiled = compile_intent(intent, load_scenario(cfg.scenario), cfg.checkpoint)
    print(f"intent: {intent.to_json(None)}")
    t0 = time.perf_counter()
    before = run_plan(compiled, None, cfg)
    after = run_plan(compiled, cfg.policy, cfg, out / "plan.gif" if cfg.gif else None)
    label = "MPC" if cfg.policy == "mpc" else Path(cfg.policy).name
    table = kpi_table(before, after, label)
    c = after["shield"] or {}
    n = max(c.get("steps", 0), 1)
    note = (
        f"\nShield: {100 * c.get('scaled', 0) / n:.0f}% of steps scaled back, "
        f"{100 * c.get('expanded', 0) / n:.0f}% reduced to their expanding part, "
        f"{100 * c.get('reverted', 0) / n:.0f}% reverted toward the start; "
        f"{cfg.runs} episodes from seed {cfg.seed}, {time.perf_counter() - t0:.0f} s.\n"
    )
    print(table + note)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "config": asdict(cfg),
        "intent": intent.to_dict(),
        "compiled": compiled.summary(),
        "before": {k: np.asarray(v).tolist() for k, v in before.items() if k != "shield"},
        "after": {k: (np.asarray(v).tolist() if k != "shield" else v) for k, v in after.items()},
    }
    write_json_atomic(out / "plan.json", result)
    write_text_atomic(out / "plan.md", table + note)
    print(f"wrote {out / 'plan.json'}, {out / 'plan.md'}" + (", plan.gif" if cfg.gif else ""))
    return result


if __name__ == "__main__":
    main()
