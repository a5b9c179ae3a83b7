"""Evaluate policies on the twin (and optionally the world model) from identical seeded starts.

    python agents/evaluate.py --policy noop heuristic runs/ppo-20261123-1040 --runs 18
    python agents/evaluate.py --policy mpc --backend twin --also-world-model --runs 18

Every policy runs ``runs`` episodes in one batched env; sub-env ``i`` is reset with seed
``seed + i``, so every policy starts from exactly the same states (start slot, randomised
parameters, twin warm-up). Per episode:

* **steady-state RMSE to target** (MB per slot): RMSE between per-cell traffic and its target
  over the active cells and the slots of the *last half* of the episode (steps
  ``episode_steps // 2 ..``), i.e. after the controller had half a day to act;
* **return**: the sum of the env's rewards over the episode (Eq. 21, plus the shortfall term
  when ``lambda_unserved > 0``);
* mean ``|Δa|`` and mean unserved traffic (MB per slot, twin only);
* with a no-op row on the twin: the share of steps whose unserved traffic exceeds the no-op's
  at the same step of the same seeded episode by more than ``EXCESS_UNSERVED`` (10 % + 1 MB).

Reported as mean ± 95% confidence half-width (Student t, ``runs − 1`` degrees of freedom) as in
the paper's Table 2, plus the RMSE change vs the no-op. Tables go to ``results.json`` and
``results.md`` in ``--out``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python agents/evaluate.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import stats  # noqa: E402

from agents.baselines import BASELINES, Controller, EnvFacts, make_controller  # noqa: E402
from agents.envs import (  # noqa: E402
    EnvState,
    backend_of,
    checkpoint_label,
    find_core,
    make_vector_env,
)
from mobiwm_env.wrappers import ShieldConfig  # noqa: E402
from worldmodel.cli import arg, parse_config, write_json_atomic, write_text_atomic  # noqa: E402

EVAL_SEED = 10_000
"""Default first seed of the evaluation episodes (kept away from training seeds)."""


# ============================================================================ statistics
def mean_ci(values: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Mean, standard deviation and the t-distribution confidence half-width of ``values``."""
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    mean = float(x.mean()) if n else float("nan")
    std = float(x.std(ddof=1)) if n > 1 else 0.0
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * std / np.sqrt(n)) if n > 1 else float("nan")
    return {"mean": mean, "ci95": half, "std": std, "n": int(n)}


@dataclass
class EpisodeMetrics:
    """Per-episode metrics of one policy on one backend (arrays ``[runs]``)."""

    rmse_mb: np.ndarray  # steady-state RMSE to target, MB per slot
    episode_return: np.ndarray  # sum of Eq. 21 rewards
    action_change: np.ndarray  # mean |Δa| per step
    unserved_mb: np.ndarray  # mean unserved traffic per slot (NaN for the world model)
    shortfall_mb: np.ndarray  # mean offered demand − carried traffic per slot (both backends)
    rel_l1: np.ndarray  # Σ|traffic − target| / Σ target over the whole episode
    unserved_steps: np.ndarray | None = None  # [runs, steps] MB per slot (twin only)

    def summary(self) -> dict[str, Any]:
        out = {
            "rmse_mb": mean_ci(self.rmse_mb),
            "return": mean_ci(self.episode_return),
            "action_change": mean_ci(self.action_change),
            "rel_l1": mean_ci(self.rel_l1),
            "per_run": {
                "rmse_mb": self.rmse_mb.tolist(),
                "return": self.episode_return.tolist(),
            },
        }
        if self.unserved_steps is not None and np.isfinite(self.unserved_steps).all():
            out["per_run"]["unserved_steps"] = self.unserved_steps.tolist()
        if np.isfinite(self.unserved_mb).all():
            out["unserved_mb"] = mean_ci(self.unserved_mb)
        out["shortfall_mb"] = mean_ci(self.shortfall_mb)
        return out


# ============================================================================ rollouts
def run_episodes(
    controller: Controller,
    backend: str,
    runs: int,
    seed: int = EVAL_SEED,
    checkpoint: str | Path | None = None,
    env_kwargs: dict[str, Any] | None = None,
    gif_path: str | Path | None = None,
    venv: Any = None,
) -> EpisodeMetrics:
    """Run ``runs`` seeded episodes of ``controller`` on ``backend`` (batched, one env step for
    all runs); optionally save sub-env 0's episode as a heat-map GIF."""
    env_kwargs = dict(env_kwargs or {})
    own = venv is None
    if own:
        venv = make_vector_env(
            backend,
            runs,
            checkpoint,
            render_mode="rgb_array" if gif_path else None,
            **env_kwargs,
        )
    core = find_core(venv)
    steps = core.config.episode_steps
    obs, info = venv.reset(seed=seed)
    controller.reset()
    active = core.active
    frames = [venv.render()] if gif_path else []
    rewards = np.zeros((runs, steps))
    change = np.zeros((runs, steps))
    sq_err = np.zeros(runs)
    count = 0
    abs_err = np.zeros(runs)
    tgt_sum = np.zeros(runs)
    unserved = np.zeros(runs)
    unserved_steps = np.full((runs, steps), np.nan)
    shortfall = np.zeros(runs)
    needs_state = getattr(controller, "name", "") == "mpc"
    for t in range(steps):
        state = EnvState.from_env(venv) if needs_state else None
        action = controller.predict(obs, info, state)
        obs, reward, _, truncated, info = venv.step(action)
        rewards[:, t] = reward
        change[:, t] = info["action_change"]
        diff = np.where(active, info["traffic"] - info["target"], 0.0)  # [E, P, N]
        abs_err += np.abs(diff).sum(axis=(1, 2))
        tgt_sum += np.where(active, info["target"], 0.0).sum(axis=(1, 2))
        unserved += info["unserved"].mean(axis=1) if "unserved" in info else np.nan
        if "unserved" in info:
            unserved_steps[:, t] = info["unserved"].mean(axis=1)
        shortfall += info["shortfall"].mean(axis=1)
        if t >= steps // 2:
            sq_err += (diff**2).sum(axis=(1, 2))
            count += diff.shape[1] * int(active.sum())
        if gif_path:
            frames.append(venv.render())
    if not truncated.all():
        raise RuntimeError("episodes did not end after episode_steps steps")
    if gif_path:
        save_gif(frames, gif_path)
    if own:
        venv.close()
    return EpisodeMetrics(
        rmse_mb=np.sqrt(sq_err / max(count, 1)),
        episode_return=rewards.sum(axis=1),
        action_change=change.mean(axis=1),
        unserved_mb=unserved / steps,
        shortfall_mb=shortfall / steps,
        rel_l1=abs_err / np.maximum(tgt_sum, 1e-9),
        unserved_steps=unserved_steps,
    )


def save_gif(frames: list[np.ndarray], path: str | Path, fps: float = 4.0) -> Path:
    """Write ``rgb_array`` frames as an animated GIF (PIL)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames if f is not None]
    if not images:
        raise ValueError("no frames to save")
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return path


# ============================================================================ policies
def load_policy(
    spec: str,
    env: Any,
    checkpoint: str | Path | None = None,
    seed: int = 0,
    mpc_options: dict[str, Any] | None = None,
) -> Controller:
    """A controller from ``spec``: a baseline name (``BASELINES``), ``mpc:KEY=VALUE,...``
    (MPC with ``MPCController`` options, e.g. ``mpc:risk=std,kappa=1``) or a saved PPO run/zip."""
    name, extra = parse_policy_spec(spec)
    if name in BASELINES:
        options: dict[str, Any] = {}
        if name == "random":
            options["seed"] = seed
        if name == "mpc":
            options = {"checkpoint": checkpoint, "seed": seed, **(mpc_options or {}), **extra}
        elif extra:
            raise ValueError(f"--policy {spec!r}: only mpc takes options")
        return make_controller(name, EnvFacts.from_env(env), **options)
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"--policy {spec!r}: neither a baseline {BASELINES} nor a path")
    from agents.policies import TrainedPolicy

    return TrainedPolicy(path, env=env)


def parse_policy_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"mpc:risk=std,kappa=0.5"`` → ``("mpc", {"risk": "std", "kappa": 0.5})``; numbers are
    parsed as int or float, everything else kept as text. Other specs come back unchanged."""
    if ":" not in spec or Path(spec).exists():
        return spec, {}
    name, _, rest = spec.partition(":")
    options: dict[str, Any] = {}
    for part in filter(None, rest.split(",")):
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise ValueError(f"--policy {spec!r}: options must be KEY=VALUE, got {part!r}")
        for cast in (int, float):
            try:
                options[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            options[key] = value
    return name, options


def policy_label(spec: str, controller: Controller, checkpoint: str | Path | None) -> str:
    name, extra = parse_policy_spec(spec)
    if name == "mpc":
        risk = ""
        r = extra.get("risk", "neutral")
        if r == "std":
            risk = f", mean − {extra.get('kappa', 1.0):g}·std"
        elif r == "cvar":
            risk = f", CVaR {extra.get('alpha', 0.25):g}"
        try:
            return f"MPC (CEM on {checkpoint_label(checkpoint)}{risk})"
        except (FileNotFoundError, ValueError):
            return f"MPC (CEM{risk})"
    names = {"noop": "No-op", "random": "Random", "heuristic": "Heuristic"}
    return names.get(spec, getattr(controller, "name", spec))


def evaluate_policies(
    specs: list[tuple[str, str | None]] | list[str],
    backends: tuple[str, ...] = ("twin",),
    runs: int = 18,
    seed: int = EVAL_SEED,
    checkpoint: str | Path | None = None,
    env_kwargs: dict[str, Any] | None = None,
    mpc_options: dict[str, Any] | None = None,
    gif: tuple[str, Path] | None = None,
    log: Any = print,
    shield: Any = None,
) -> dict[str, Any]:
    """Evaluate every policy spec (or ``(spec, label)``) on every backend; returns the result
    dict (``rows``: one per policy with a summary per backend). ``gif``: ``(spec, path)`` to
    save that policy's first twin episode. A spec ending in ``+shield`` runs that policy inside
    ``mobiwm_env.wrappers.SafetyShield`` with ``shield`` (a ``ShieldConfig``; default one)."""
    from mobiwm_env.wrappers import SafetyShield, ShieldConfig

    rows = []
    env_kwargs = dict(env_kwargs or {})
    for item in specs:
        spec, label = (item, None) if isinstance(item, str) else item
        row: dict[str, Any] = {"policy": spec}
        shielded = spec.endswith(SHIELD_SUFFIX)
        base_spec = spec[: -len(SHIELD_SUFFIX)] if shielded else spec
        for backend in backends:
            gif_path = gif[1] if gif and gif[0] == spec and backend_of(backend) == "twin" else None
            venv = make_vector_env(
                backend,
                runs,
                checkpoint,
                render_mode="rgb_array" if gif_path else None,
                **env_kwargs,
            )
            if shielded:
                venv = SafetyShield(venv, shield or ShieldConfig())
            ctrl = load_policy(base_spec, venv, checkpoint, seed, mpc_options)
            row["label"] = label or policy_label(base_spec, ctrl, checkpoint)
            if shielded:
                row["label"] += " + shield"
            t0 = time.perf_counter()
            metrics = run_episodes(ctrl, backend, runs, seed, venv=venv, gif_path=gif_path)
            venv.close()
            summary = metrics.summary()
            if shielded:
                c = venv.counts
                summary["shield"] = {
                    k: c[k] / max(c["steps"], 1)
                    for k in ("limited", "scaled", "expanded", "reverted")
                }
            summary["seconds"] = time.perf_counter() - t0
            row[backend_of(backend)] = summary
            log(
                f"  {row['label']:<28s} {backend_of(backend):<11s} RMSE "
                f"{summary['rmse_mb']['mean']:8.1f} ± {summary['rmse_mb']['ci95']:5.1f} MB/slot  "
                f"return {summary['return']['mean']:8.1f} ± {summary['return']['ci95']:5.1f}  "
                f"unserved {summary.get('unserved_mb', summary['shortfall_mb'])['mean']:7.1f}  "
                f"({summary['seconds']:.0f} s)"
            )
        rows.append(row)
    result = {
        "runs": runs,
        "seed": seed,
        "backends": [backend_of(b) for b in backends],
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "env_kwargs": {k: v for k, v in env_kwargs.items() if k != "target"},
        "metric_notes": {
            "rmse_mb": "steady-state RMSE between per-cell traffic and target over active cells "
            "and the slots of the last half of each episode, MB per slot",
            "return": "sum of the env's rewards of the episode: Eq. 21, plus the shortfall "
            "term when env_kwargs.lambda_unserved > 0",
            "ci95": "half-width of the 95% confidence interval (Student t, runs-1 dof)",
        },
        "rows": rows,
    }
    add_relative(result)
    return result


SHIELD_SUFFIX = "+shield"
"""A policy spec ending in it runs inside ``mobiwm_env.wrappers.SafetyShield``."""
EXCESS_UNSERVED = (1.1, 1.0)
"""A step sheds more than the no-op when its unserved traffic > 1.1 × the no-op's + 1 MB/slot."""


def add_relative(result: dict[str, Any]) -> None:
    """Add each row's RMSE change vs the no-op row (``rmse_vs_noop``, fraction) per backend,
    and on the twin the share of steps shedding more than the no-op (``excess_unserved_steps``,
    mean ± CI over episodes; ``EXCESS_UNSERVED``)."""
    noop = next((r for r in result["rows"] if r["policy"] == "noop"), None)
    if noop is None:
        return
    factor, margin = EXCESS_UNSERVED
    for row in result["rows"]:
        for backend in result["backends"]:
            if backend in row and backend in noop:
                base = noop[backend]["rmse_mb"]["mean"]
                row[backend]["rmse_vs_noop"] = row[backend]["rmse_mb"]["mean"] / base - 1.0
                ref = noop[backend]["per_run"].get("unserved_steps")
                mine = row[backend]["per_run"].get("unserved_steps")
                if ref is not None and mine is not None:
                    over = np.asarray(mine) > factor * np.asarray(ref) + margin
                    row[backend]["excess_unserved_steps"] = mean_ci(over.mean(axis=1))


def markdown_table(result: dict[str, Any], title: str = "") -> str:
    """The results as a Markdown table (one line per policy and backend)."""
    lines = [f"### {title}", ""] if title else []
    lam_u = float(result.get("env_kwargs", {}).get("lambda_unserved", 0.0) or 0.0)
    ret = "Eq. 21 return" if lam_u == 0 else f"return (Eq. 21 + {lam_u:g}·shortfall)"
    lines += [
        f"{result['runs']} episodes per policy from identical seeded starts (seeds "
        f"{result['seed']}..{result['seed'] + result['runs'] - 1}); mean ± 95% CI (t). "
        "Unserved on a world model (marked ≈) is the model's own estimate: offered demand − "
        "predicted traffic.",
        "",
        f"| policy | judged on | steady-state RMSE (MB/slot) | vs no-op | {ret} | "
        "mean \\|Δa\\| | unserved (MB/slot) | steps shedding > no-op |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        for backend in result["backends"]:
            s = row.get(backend)
            if s is None:
                continue
            rel = s.get("rmse_vs_noop")
            uns = s.get("unserved_mb")
            short = s.get("shortfall_mb")
            if uns is not None:
                unserved = format(uns["mean"], ".1f")
            elif short is not None:
                unserved = "≈" + format(short["mean"], ".1f")
            else:
                unserved = "–"
            ex = s.get("excess_unserved_steps")
            excess = "–" if ex is None else f"{100 * ex['mean']:.1f}% ± {100 * ex['ci95']:.1f}"
            lines.append(
                f"| {row['label']} | {backend.replace('_', ' ')} | "
                f"{s['rmse_mb']['mean']:.1f} ± {s['rmse_mb']['ci95']:.1f} | "
                f"{'' if rel is None else f'{100 * rel:+.1f}%'} | "
                f"{s['return']['mean']:.1f} ± {s['return']['ci95']:.1f} | "
                f"{s['action_change']['mean']:.3f} | "
                f"{unserved} | {excess} |"
            )
    return "\n".join(lines) + "\n"


def write_results(
    result: dict[str, Any],
    out: str | Path,
    stem: str = "results",
    title: str = "",
    footer: str = "",
) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` (the table, then ``footer``) atomically into
    ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    js = write_json_atomic(out / f"{stem}.json", result)
    md = write_text_atomic(out / f"{stem}.md", markdown_table(result, title) + footer)
    return js, md


# ============================================================================ CLI
@dataclass
class EvalConfig:
    """Evaluation of saved policies and baselines."""

    policy: tuple[str, ...] = arg(
        ("noop", "random", "heuristic"),
        f"policies: baseline names {', '.join(BASELINES)} or paths of PPO runs / model zips",
    )
    runs: int = arg(18, "episodes per policy (seeds seed .. seed+runs-1, identical for all)")
    seed: int = arg(EVAL_SEED, "first evaluation seed")
    backend: str = arg("twin", "backend that judges: twin | world_model")
    also_world_model: bool = arg(False, "also evaluate on the world model (--checkpoint)")
    checkpoint: str = arg("", "world-model checkpoint (world-model backend and MPC); '' = shipped")
    scenario: str = arg(
        "hex57", "scenario name (shared policies trained on another map run zero-shot)"
    )
    lambda_delta: float = arg(1.0, "λ_Δ of Eq. 21")
    lambda_unserved: float = arg(0.0, "λ_U of the shortfall term (0 = Eq. 21 exactly)")
    episode_steps: int = arg(24, "env steps (hours) per episode")
    mpc_horizon: int = arg(2, "MPC: planning horizon in env steps")
    mpc_candidates: int = arg(16, "MPC: CEM candidates per env")
    mpc_iters: int = arg(2, "MPC: CEM iterations per env step")
    shield_checkpoint: str = arg("fast", "policies NAME+shield: world model of the shield's check")
    shield_tolerance: float = arg(
        0.1, "shield: allowed extra unserved traffic, share of the no-op's (warm-up estimate)"
    )
    shield_margin: float = arg(1.0, "shield: allowed extra unserved traffic on top, MB per slot")
    gif: str = arg("", "save the first twin episode of this policy spec as a GIF in --out")
    out: str = arg("", "output folder for results.json/.md (default runs/eval-<timestamp>)")
    threads: int = arg(1, "torch CPU threads (1: fastest on a busy 2-core CPU; 0: torch default)")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(EvalConfig, argv, description=__doc__)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out or f"runs/eval-{time.strftime('%Y%m%d-%H%M%S')}")
    backends = (cfg.backend,)
    if cfg.also_world_model and backend_of(cfg.backend) != "world_model":
        backends += ("world_model",)
    ckpt = cfg.checkpoint or None
    print(f"evaluating {list(cfg.policy)} on {list(backends)}, {cfg.runs} runs, seed {cfg.seed}")
    result = evaluate_policies(
        list(cfg.policy),
        backends,
        cfg.runs,
        cfg.seed,
        ckpt,
        {
            "scenario": cfg.scenario,
            "lambda_delta": cfg.lambda_delta,
            "lambda_unserved": cfg.lambda_unserved,
            "episode_steps": cfg.episode_steps,
        },
        {
            "horizon_steps": cfg.mpc_horizon,
            "n_candidates": cfg.mpc_candidates,
            "n_iters": cfg.mpc_iters,
        },
        gif=(cfg.gif, out / "episode.gif") if cfg.gif else None,
        shield=ShieldConfig(
            checkpoint=cfg.shield_checkpoint,
            unserved_tolerance=cfg.shield_tolerance,
            unserved_margin_mb=cfg.shield_margin,
        ),
    )
    result["config"] = cfg
    js, md = write_results(result, out)
    print(md.read_text(encoding="utf-8"))
    print(f"wrote {js} and {md}")
    return result


if __name__ == "__main__":
    main()
