"""Outage compensation: a site fails mid-episode on the twin — who brings its users back?

    python agents/outage.py --site 0 --fail-step 6 --runs 18

Every row runs ``--runs`` seeded episodes of the twin (the same starts for every row); at step
``--fail-step`` every cell of ``--site`` switches off (``LoadBalanceCore.set_active``) and stays
off. Rows:

* ``noop``: nothing moves (also run without the outage: the unserved traffic the outage causes
  is the no-op's with the outage minus without it);
* ``heuristic``: the rule-based load balancer (``agents.baselines``);
* ``mpc``: control-only MPC on the world model (Eq. 21 + 2·shortfall; no intent, no shield);
* ``pipeline``: the intent "restore coverage around site S, keep load balanced" compiled
  (``mobiwm_env.intent_compile``: the failed site's neighbours may move, λ_U = 4) and planned by
  MPC on the world model inside the ``SafetyShield``.

Per episode, over the steps after the failure: the unserved traffic (MB per slot) and the share of
the outage's unserved traffic the row recovers, ``(U_noop − U_row) / (U_noop − U_no outage)``;
mean ± 95% CI over episodes, and pooled. ``results.json`` / ``results.md`` and a GIF of the
pipeline's first episode go to ``--out``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python agents/outage.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from agents.baselines import EnvFacts, make_controller  # noqa: E402
from agents.envs import EnvState, find_core, make_vector_env  # noqa: E402
from agents.evaluate import EVAL_SEED, mean_ci, save_gif  # noqa: E402
from mobiwm_env.dynamics import load_scenario  # noqa: E402
from mobiwm_env.intent_compile import compile_intent  # noqa: E402
from mobiwm_env.intent_text import parse_intent  # noqa: E402
from mobiwm_env.wrappers import SafetyShield  # noqa: E402
from worldmodel.cli import arg, parse_config, write_json_atomic, write_text_atomic  # noqa: E402

ROWS = ("noop", "heuristic", "mpc", "pipeline")
LABELS = {
    "noop": "no-op",
    "heuristic": "heuristic",
    "mpc": "control-only MPC (no intent, no shield)",
    "pipeline": "intent → shielded MPC",
}


@dataclass
class OutageConfig:
    """One outage study."""

    site: int = arg(0, "the site that fails")
    fail_step: int = arg(6, "env step (hour) of the episode at which it fails")
    runs: int = arg(18, "seeded episodes per row (the same starts for every row)")
    seed: int = arg(EVAL_SEED, "first episode seed")
    episode_steps: int = arg(24, "env steps (hours) per episode")
    scenario: str = arg("hex57", "scenario name")
    checkpoint: str = arg("fast", "world model of the planners and of the shield")
    rows: tuple[str, ...] = arg(ROWS, f"rows to run: {' '.join(ROWS)}")
    gif: bool = arg(True, "save the pipeline's first episode as a GIF")
    out: str = arg("", "output folder (default runs/outage-<timestamp>)")
    threads: int = arg(1, "torch CPU threads")

    def __post_init__(self) -> None:
        bad = [r for r in self.rows if r not in ROWS]
        if bad:
            raise ValueError(f"--rows: unknown {bad}; choose from {list(ROWS)}")
        if not 0 <= self.fail_step < self.episode_steps:
            raise ValueError("--fail-step must be in [0, --episode-steps)")
        if self.runs < 2:
            raise ValueError("--runs must be >= 2 (confidence intervals)")


def run_row(row: str, cfg: OutageConfig, outage: bool = True, gif: Path | None = None) -> dict:
    """Episodes of ``row`` → per-episode unserved traffic before / after the failure step."""
    kw: dict[str, Any] = {"lambda_delta": 1.0, "lambda_unserved": 2.0}
    shield = None
    if row == "pipeline":
        text = f"restore coverage around site {cfg.site}, keep load balanced"
        compiled = compile_intent(parse_intent(text), load_scenario(cfg.scenario), cfg.checkpoint)
        kw, shield = dict(compiled.env_kwargs), compiled.shield
    venv = make_vector_env("twin", cfg.runs, None, render_mode="rgb_array" if gif else None,
                           scenario=cfg.scenario, episode_steps=cfg.episode_steps, **kw)  # fmt: skip
    if shield is not None:
        venv = SafetyShield(venv, shield)
    facts = EnvFacts.from_env(venv)
    planner = row in ("mpc", "pipeline")
    if planner:
        ctrl = make_controller("mpc", facts, checkpoint=cfg.checkpoint, seed=cfg.seed)
    else:
        ctrl = make_controller(row, facts)
    core = find_core(venv)
    obs, info = venv.reset(seed=cfg.seed)
    ctrl.reset()
    on = core.active.copy()
    failed = on & (np.asarray(core.scenario.cell_site) != cfg.site)
    before, after = np.zeros(cfg.runs), np.zeros(cfg.runs)
    frames = [venv.render()] if gif else []
    for t in range(cfg.episode_steps):
        if outage and t == cfg.fail_step:
            core.set_active(failed)
        state = EnvState.from_env(venv) if planner else None
        obs, _, _, _, info = venv.step(ctrl.predict(obs, info, state))
        u = info["unserved"].mean(axis=1)
        if t >= cfg.fail_step:
            after += u
        else:
            before += u
        if gif:
            frames.append(venv.render())
    counts = getattr(venv, "counts", None)
    venv.close()
    if gif:
        save_gif(frames, gif)
    return {
        "unserved_before": before / max(cfg.fail_step, 1),
        "unserved_after": after / (cfg.episode_steps - cfg.fail_step),
        "shield": counts,
    }


def summarise(res: dict[str, dict], baseline: dict) -> dict[str, Any]:
    """Recovered share per row against the no-op with and without the outage."""
    u0 = baseline["unserved_after"]
    un = res["noop"]["unserved_after"]
    caused = un - u0
    out = {"caused_mb": mean_ci(caused)}
    for row, r in res.items():
        ua = r["unserved_after"]
        share = (un - ua) / np.where(np.abs(caused) > 1e-9, caused, np.nan)
        ok = np.isfinite(share)
        out[row] = {
            "unserved_after_mb": mean_ci(ua),
            "recovered_share": mean_ci(share[ok]),
            "recovered_share_pooled": float((un - ua).sum() / max(caused.sum(), 1e-9)),
        }
    return out


def table(summary: dict[str, Any], cfg: OutageConfig) -> str:
    c = summary["caused_mb"]
    lines = [
        f"Site {cfg.site} fails at step {cfg.fail_step} of {cfg.episode_steps} on "
        f"{cfg.scenario}; {cfg.runs} seeded episodes per row; the outage leaves "
        f"{c['mean']:.1f} ± {c['ci95']:.1f} MB/slot more unserved under the no-op.",
        "",
        "| row | unserved after the failure (MB/slot) | outage's unserved recovered | pooled |",
        "|---|---:|---:|---:|",
    ]
    for row in ROWS:
        if row not in summary:
            continue
        s = summary[row]
        u, r = s["unserved_after_mb"], s["recovered_share"]
        lines.append(
            f"| {LABELS[row]} | {u['mean']:.1f} ± {u['ci95']:.1f} | "
            f"{100 * r['mean']:.1f}% ± {100 * r['ci95']:.1f} | "
            f"{100 * s['recovered_share_pooled']:.1f}% |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(OutageConfig, argv, description=__doc__)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out or f"runs/outage-{time.strftime('%Y%m%d-%H%M%S')}")
    t0 = time.perf_counter()
    baseline = run_row("noop", cfg, outage=False)
    rows = list(dict.fromkeys(("noop", *cfg.rows)))
    res = {}
    for row in rows:
        gif = out / "outage.gif" if cfg.gif and row == "pipeline" else None
        t = time.perf_counter()
        res[row] = run_row(row, cfg, gif=gif)
        print(f"  {LABELS[row]:<42s} unserved {res[row]['unserved_after'].mean():8.1f} MB/slot "
              f"({time.perf_counter() - t:.0f} s)", flush=True)  # fmt: skip
    summary = summarise(res, baseline)
    md = table(summary, cfg) + f"\n{time.perf_counter() - t0:.0f} s in all.\n"
    print(md)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "config": asdict(cfg),
        "summary": summary,
        "per_run": {
            r: {k: np.asarray(v).tolist() for k, v in d.items() if k != "shield"}
            for r, d in res.items()
        },  # fmt: skip
        "no_outage": {k: np.asarray(v).tolist() for k, v in baseline.items() if k != "shield"},
        "shield": res.get("pipeline", {}).get("shield"),
    }
    write_json_atomic(out / "results.json", result)
    write_text_atomic(out / "results.md", md)
    print(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    return result


if __name__ == "__main__":
    main()
