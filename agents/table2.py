"""The paper's Table 2 study in one command: where should an RL agent learn load balancing?

    python agents/table2.py                               # every agent with a checkpoint
    python agents/table2.py --static runs/static-mobiwm-fast/best --gru runs/gru-wm/best
    python agents/table2.py --reuse --out runs/table2     # re-evaluate already trained agents
    python agents/table2.py --jobs 2                      # train / judge two at a time
    python agents/table2.py --warm-start heuristic --learning-rate 1e-4  # agents start from the rule

PPO is trained with the main job's recipe (``agents.train_ppo``'s defaults: same config, seed and
budget for every agent) in

1. MobiWM (``--mobiwm``, default the main job's ``fast`` checkpoint),
2. Static-MobiWM (``--static``: MobiWM without action inputs),
3. the learned baseline world models (``--gru``, ``--itransformer``, ``--rssm``, ``--tdmpc``),
4. the twin itself (the upper bound; ``--no-twin`` to skip),

and every agent, plus the baselines (no-op, random, heuristic, MPC on MobiWM), is judged on the
twin from the same ``--runs`` seeded starts (``agents.evaluate``). A missing checkpoint skips
its agent with the command that trains it (``TRAIN_COMMANDS``: the same data, steps and batch
size as the MobiWM checkpoints, for a fair study).
Output in ``--out``: ``ppo-<agent>/`` run folders, ``table2.json`` and ``table2.md``, and the
measured checks of the targets (RMSE reduction vs no-op, share of the twin-trained gain, MobiWM vs
Static-MobiWM).
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python agents/table2.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from agents.envs import checkpoint_label, resolve_checkpoint  # noqa: E402
from agents.evaluate import (  # noqa: E402
    EVAL_SEED,
    add_relative,
    evaluate_policies,
    write_results,
)
from agents.train_ppo import DEFAULT_TIMESTEPS, PPOConfig, train  # noqa: E402
from mobiwm_env import TWIN_ID, WORLD_MODEL_ID  # noqa: E402
from worldmodel.cli import arg, parse_config  # noqa: E402

_STEPS = "--max-steps 1500 --eval-every 150 --eval-batches 12 --threads 2"
TRAIN_COMMANDS = {
    "static": "python -m worldmodel.train --data data/default --out runs/static-mobiwm "
    "--preset S --ablate actions --history 104 --season 96 --season-anchor yesterday "
    f"--memory-age 6 --pair-weight 2 {_STEPS}",
    "static-fast": "python -m worldmodel.train --data data/default --out runs/static-mobiwm-fast "
    "--preset XS --ablate actions --history 100 --season 96 --horizon 4 --n-chunks 2 "
    "--batch-size 8 --max-steps 3000 --max-minutes 40 --eval-every 300 --eval-batches 12 "
    "--threads 2 --pair-weight 2 --season-anchor yesterday --spatial-neighbours 16 "
    "--memory-age 6 --seed 2",
    **{
        name: f"python -m worldmodel.train --data data/default --out runs/{name}-wm --arch {name} "
        + _STEPS
        for name in ("gru", "itransformer", "rssm", "tdmpc")
    },
}
"""How each world model of the study is trained (``docs/worldmodel.md``). ``static`` is the
full checkpoint's recipe without the actions (Table 1, beside the full MobiWM); ``static-fast`` is
the fast checkpoint's (Table 2, beside the main job's fast MobiWM)."""
WORLD_MODELS = ("mobiwm", "static", "gru", "itransformer", "rssm", "tdmpc")
"""The world models PPO can be trained in here, in table order."""
_PPO = PPOConfig()


@dataclass
class Table2Config:
    """The Table 2 study: PPO trained in three world models and in the twin, judged on the twin."""

    mobiwm: str = arg("fast", "MobiWM checkpoint folder or shipped name (fast | full)")
    static: str = arg(
        "runs/static-mobiwm-fast/best",
        "Static-MobiWM checkpoint ('' = skip; default: the fast recipe without the actions)",
    )
    gru: str = arg("runs/gru-wm/best", "GRU world-model checkpoint ('' = skip)")
    itransformer: str = arg("runs/itransformer-wm/best", "iTransformer-WM checkpoint ('' = skip)")
    rssm: str = arg("runs/rssm-wm/best", "RSSM (DreamerV3-style) checkpoint ('' = skip)")
    tdmpc: str = arg("runs/tdmpc-wm/best", "TD-MPC2-style checkpoint ('' = skip)")
    twin: bool = arg(True, "also train PPO directly in the twin (the upper bound)")
    policy: str = arg(_PPO.policy, "PPO policy: shared | mlp")
    total_timesteps: int = arg(DEFAULT_TIMESTEPS, "PPO env steps per agent")
    num_envs: int = arg(_PPO.num_envs, "sub-envs per PPO run")
    seed: int = arg(0, "PPO seed (same for every agent)")
    scenario: str = arg("hex57", "scenario")
    lambda_delta: float = arg(_PPO.lambda_delta, "λ_Δ of Eq. 21")
    lambda_unserved: float = arg(
        _PPO.lambda_unserved,
        "λ_U of the shortfall term, for training and judging (0 = Eq. 21 exactly)",
    )
    warm_start: str = arg(
        "", "'' | heuristic: every agent clones this controller in its own env before PPO"
    )
    learning_rate: float = arg(_PPO.learning_rate, "PPO learning rate")
    n_epochs: int = arg(_PPO.n_epochs, "PPO epochs per rollout")
    compile: bool = arg(True, "torch.compile MobiWM's inference (as the main job)")
    runs: int = arg(18, "evaluation episodes per policy on the twin")
    eval_seed: int = arg(EVAL_SEED, "first evaluation seed")
    baselines: tuple[str, ...] = arg(
        ("noop", "random", "heuristic", "mpc"), "baselines judged beside the agents"
    )
    mpc_horizon: int = arg(2, "MPC: planning horizon in env steps")
    mpc_candidates: int = arg(16, "MPC: CEM candidates per env")
    mpc_iters: int = arg(2, "MPC: CEM iterations per env step")
    reuse: bool = arg(False, "skip training where ppo-<agent>/model.zip already exists")
    out: str = arg("", "output folder ('' = runs/table2-<timestamp>)")
    threads: int = arg(2, "torch CPU threads (0: torch default; 1 with --jobs 2 on 2 cores)")
    jobs: int = arg(1, "agents trained / policies judged in parallel processes")
    progress: bool = arg(True, "progress bars while training (off when jobs > 1)")

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {self.jobs}")
        if self.runs < 2:
            raise ValueError(f"runs must be >= 2 (confidence intervals), got {self.runs}")


def _train_quiet(cfg: PPOConfig) -> str:
    """``train`` in a worker process, logging only its start and end."""
    t0 = time.perf_counter()
    print(f"[table2] training {cfg.out} ...", flush=True)
    run_dir, _ = train(cfg, log=lambda *a, **k: None)
    print(f"[table2] {cfg.out} done in {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    return str(run_dir)


def _judge(args: tuple) -> dict[str, Any]:
    specs, threads, *rest = args
    if threads:
        torch.set_num_threads(threads)
    return evaluate_policies(specs, *rest)


def _pool(jobs: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"))


def split_specs(specs: list[Any], jobs: int) -> list[list[int]]:
    """Indices of ``specs`` per worker: MPC (by far the slowest) alone where possible, the
    others dealt round-robin to the remaining workers."""
    n = min(jobs, len(specs))
    groups: list[list[int]] = [[] for _ in range(n)]
    slow = [i for i, sp in enumerate(specs) if sp[0] == "mpc"]
    fast = [i for i, sp in enumerate(specs) if sp[0] != "mpc"]
    for k, i in enumerate(slow):
        groups[k % n].append(i)
    free = [g for g in groups if not g] or groups
    for k, i in enumerate(fast):
        free[k % len(free)].append(i)
    return [g for g in groups if g]


def _judge_parallel(specs: list[Any], jobs: int, threads: int, judge_args: tuple) -> dict:
    """``evaluate_policies`` over ``jobs`` processes; rows come back in ``specs`` order."""
    groups = split_specs(specs, jobs)
    with _pool(len(groups)) as pool:
        parts = list(
            pool.map(_judge, [([specs[i] for i in g], threads, *judge_args) for g in groups])
        )
    rows: dict[int, Any] = {}
    for g, part in zip(groups, parts, strict=True):
        rows.update(zip(g, part["rows"], strict=True))
    result = {**parts[0], "rows": [rows[i] for i in range(len(specs))]}
    add_relative(result)
    return result


def agents_of(cfg: Table2Config) -> list[tuple[str, str, str | None]]:
    """``(name, env id, checkpoint)`` of every agent whose world model is available."""
    out: list[tuple[str, str, str | None]] = []
    for name in WORLD_MODELS:
        ckpt = getattr(cfg, name)
        if name != "mobiwm" and not ckpt:
            continue
        path = resolve_checkpoint(ckpt or None)
        if not (path / "config.json").is_file() and not path.is_file():
            key = "static-fast" if name == "static" else name
            hint = TRAIN_COMMANDS.get(key, "the shipped checkpoint is missing")
            print(f"skipping PPO in {name}: no checkpoint at {path} (train it: {hint})")
            continue
        out.append((name, WORLD_MODEL_ID, ckpt or None))
    if cfg.twin:
        out.append(("twin", TWIN_ID, None))
    return out


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """The measured checks of the issue's goals, on the twin: the MobiWM agent's share of the
    twin-trained agent's return gain over no-op (goal ≥ 90%), its RMSE reduction vs no-op, and
    whether its return beats each other world model's agent with non-overlapping 95% intervals
    (``mobiwm_beats_<name>``)."""
    rows = {r["agent"]: r["twin"] for r in result["rows"] if "agent" in r}
    noop = next((r["twin"] for r in result["rows"] if r["policy"] == "noop"), None)
    out: dict[str, Any] = {}
    wm = rows.get("mobiwm")
    if wm is None or noop is None:
        return out
    rmse0 = noop["rmse_mb"]["mean"]
    if rmse0:
        out["mobiwm_rmse_reduction_vs_noop"] = 1 - wm["rmse_mb"]["mean"] / rmse0
    if "twin" in rows and "return" in wm and "return" in noop:
        gain = rows["twin"]["return"]["mean"] - noop["return"]["mean"]
        if gain > 0:
            share = (wm["return"]["mean"] - noop["return"]["mean"]) / gain
            out["mobiwm_share_of_twin_return_gain"] = share
            out["mobiwm_share_ge_90pct"] = bool(share >= 0.9)
    for name in WORLD_MODELS[1:]:
        if name in rows and "return" in wm and "return" in rows[name]:
            a, b = wm["return"], rows[name]["return"]
            out[f"mobiwm_beats_{name}"] = bool(a["mean"] - a["ci95"] > b["mean"] + b["ci95"])
    return out


def plan(
    cfg: Table2Config, out: Path
) -> tuple[PPOConfig, list[tuple[str, str, str]], list[PPOConfig]]:
    """The shared PPO config, ``(name, run folder, label)`` of every agent, and the PPO runs
    still to train (all of them unless ``reuse`` finds a saved ``model.zip``)."""
    base = PPOConfig(
        scenario=cfg.scenario,
        num_envs=cfg.num_envs,
        total_timesteps=cfg.total_timesteps,
        seed=cfg.seed,
        policy=cfg.policy,
        lambda_delta=cfg.lambda_delta,
        lambda_unserved=cfg.lambda_unserved,
        warm_start=cfg.warm_start,
        learning_rate=cfg.learning_rate,
        n_epochs=cfg.n_epochs,
        compile=cfg.compile,
        eval_runs=0,
        threads=cfg.threads,
        progress=cfg.progress and cfg.jobs == 1,
    )
    warm = f" (from {cfg.warm_start})" if cfg.warm_start else ""
    trained: list[tuple[str, str, str]] = []
    todo: list[PPOConfig] = []
    for name, env_id, ckpt in agents_of(cfg):
        run_dir = out / f"ppo-{name}"
        where = "twin (upper bound)" if name == "twin" else checkpoint_label(ckpt)
        label = f"PPO in {where}{warm}"
        if not (cfg.reuse and (run_dir / "model.zip").is_file()):
            ppo = replace(base, env_id=env_id, checkpoint=ckpt or "", out=str(run_dir), label=label)
            todo.append(ppo)
        trained.append((name, str(run_dir), label))
    return base, trained, todo


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(Table2Config, argv, description=__doc__)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out or f"runs/table2-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base, trained, todo = plan(cfg, out)
    t_train = time.perf_counter()
    if cfg.jobs > 1 and len(todo) > 1:
        # the slowest agent (in the twin) first, so the pool ends as early as possible
        todo.sort(key=lambda c: c.env_id != TWIN_ID)
        with _pool(min(cfg.jobs, len(todo))) as pool:
            list(pool.map(_train_quiet, todo))
    else:
        for ppo in todo:
            train(ppo)
    train_seconds = time.perf_counter() - t_train
    print(f"judging {len(trained)} agents and {len(cfg.baselines)} baselines on the twin")
    specs: list[Any] = [(b, None) for b in cfg.baselines] + [(d, lab) for _, d, lab in trained]
    judge_args = (
        ("twin",),
        cfg.runs,
        cfg.eval_seed,
        cfg.mobiwm or None,
        base.env_kwargs(),  # the objective the agents were trained for
        {
            "horizon_steps": cfg.mpc_horizon,
            "n_candidates": cfg.mpc_candidates,
            "n_iters": cfg.mpc_iters,
        },
    )
    if cfg.jobs > 1 and len(specs) > 1:
        result = _judge_parallel(specs, cfg.jobs, cfg.threads, judge_args)
    else:
        result = evaluate_policies(specs, *judge_args)
    for row, (name, _, _) in zip(result["rows"][len(cfg.baselines) :], trained, strict=True):
        row["agent"] = name
    result["targets"] = targets(result)
    result["config"] = cfg
    result["train_seconds"] = train_seconds
    result["total_seconds"] = time.perf_counter() - t0
    checks = ", ".join(
        f"{k} = {v:.3f}" if isinstance(v, float) else f"{k} = {v}"
        for k, v in result["targets"].items()
    )
    js, md = write_results(
        result, out, "table2", "Table 2: PPO trained in world models vs twin",
        footer=f"\nMeasured targets: {checks or 'n/a'}\n",
    )  # fmt: skip
    print(md.read_text(encoding="utf-8"))
    print(f"wrote {js} and {md} ({result['total_seconds'] / 60:.0f} min)")
    return result


if __name__ == "__main__":
    main()
