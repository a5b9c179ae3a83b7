"""Make the documentation's pictures into ``docs/img/``.

    python scripts/make_figures.py                       # all three (~3.7 min on 2 CPU cores)
    python scripts/make_figures.py --only heatmap gif    # the env pictures only (~30 s)
    python scripts/make_figures.py --only curve --run runs/ppo-main   # curve of an existing run
    python scripts/make_figures.py --only table1         # from runs/eval-table1 (scripts/table1.sh)
    python scripts/make_figures.py --help

What it makes (every file written atomically: a temporary file in the same folder, then
``os.replace``):

* ``heatmap.png``: one frame of ``gym.make("MobiWM-LoadBalance-v0", render_mode="rgb_array")``
  (the shipped world model; ``--checkpoint`` for another) reset with seed ``--seed`` on a
  Tuesday at 12:00 (``HEATMAP_START_SLOT``), after ``HEATMAP_STEPS`` env steps (hours) of the
  heuristic (``agents.baselines.HeuristicController``): the cell-load heat map with its header
  and colour bar (``mobiwm_env.render``). ~15 s.
* ``episode.gif``: the same env and controller for one ``GIF_STEPS``-step episode (a day from
  Tuesday 08:00), one frame per step plus the reset; the frames share one palette built from the
  renderer's colour map (no dithering), which keeps the file at about 1.3 MB. ~10–30 s.
* ``learning_curve.png``: a PPO run's TensorBoard scalars (``<run>/tb/ppo_<n>``, the latest
  one): the mean episode return (SB3's ``rollout/ep_rew_mean``, raw rewards of the training env)
  and, if logged, the relative L1 distance to the target (``charts/l1_to_target``) against env
  steps. If the run folder holds ``eval.json`` (``agents.evaluate``), the no-op's and the
  heuristic's returns there are drawn as horizontal reference lines, the trained policy's (and
  the warm-start clone's) as points with their 95% CI. Those are judged on the twin: for a run
  trained on the twin they share the curve's axes (the trained policy at the last step); for a
  run trained in a world model they get a panel of their own on the right, as the two
  dynamics' returns are not on one scale (the fast model's are about twice the twin's).
  ``--run DIR`` plots an existing run folder (``agents/train_ppo.py --out DIR``); without it
  the script first trains one into ``--train-out`` (default ``runs/figures-ppo``, replaced if
  it holds an earlier run) with ``TRAIN_ARGS``: the main job's recipe (``agents/train_ppo.py``'s
  defaults: PPO from scratch in the fast world model) cut to 61,440 env steps, seed 0, then 8
  evaluation episodes per policy on the twin: about 2 min on 2 CPU cores (the run is seeded and
  repeats exactly on one machine). ``docs/img/learning_curve.png`` is drawn from the main job's
  run (``--run runs/main-s0``). Plotting alone takes a second or two.

* ``table1.png`` (only when named): Table 1 against the learned world models from an evaluation's
  ``results.json`` (``--eval``, default ``runs/eval-table1/results.json``, written by
  ``scripts/table1.sh``): each model's rollout MAE by day, and its counterfactual R² per plan
  kind. Plotting alone takes a second or two.

* ``calibration.png`` (only when named): the calibration section of an evaluation
  (``--calib-eval``, default ``runs/eval-calibration/results.json``, written by ``python -m
  worldmodel.evaluate ... --sections calibration``): per model with a quantile head, the PIT
  histogram against the seasonal-naive baseline's, coverage of the 50 % and 90 % intervals by
  lead time with the goal bands, and CRPS per scenario.

Runs headless: ``SDL_VIDEODRIVER=dummy`` is set unless already set, matplotlib uses Agg.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python scripts/make_figures.py` from anywhere
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from worldmodel.cli import write_atomic  # noqa: E402

FIGURES = ("heatmap", "gif", "curve", "table1", "calibration")
DEFAULT_FIGURES = ("heatmap", "gif", "curve")
"""Made without ``--only``: ``table1`` and ``calibration`` need an evaluation first."""
DEFAULT_EVAL = ROOT / "runs" / "eval-table1" / "results.json"
DEFAULT_CALIB_EVAL = ROOT / "runs" / "eval-calibration" / "results.json"
PLAN_KINDS = (("random", "all"), ("overpower", "all"), ("site_off", "on"))
"""Counterfactual plan kinds drawn, with the cells they are scored on."""
DEFAULT_OUT = ROOT / "docs" / "img"
DEFAULT_TRAIN_OUT = ROOT / "runs" / "figures-ppo"
ENV_ID = "MobiWM-LoadBalance-v0"
SLOTS_PER_DAY = 96  # 15-min slots; absolute slot 0 = Monday 00:00 of week 0
WEEK1_TUESDAY = 7 * SLOTS_PER_DAY + SLOTS_PER_DAY  # week 0 is the env's warm-up history
HEATMAP_START_SLOT = WEEK1_TUESDAY + 48  # Tuesday 12:00
HEATMAP_STEPS = 6  # → Tuesday 18:00: the evening load builds up
GIF_START_SLOT = WEEK1_TUESDAY + 32  # Tuesday 08:00
GIF_STEPS = 24  # one day, one env step (hour) per frame
TRAIN_ARGS: tuple[str, ...] = (
    "--seed", "0", "--total-timesteps", "61440", "--periodic-every", "12288",
    "--eval-runs", "8", "--eval-baselines", "noop", "heuristic",
    "--no-gif", "--checkpoint-every", "0", "--no-progress",
)  # fmt: skip
"""``agents/train_ppo.py`` arguments of the default run behind the learning curve (~2 min)."""
RETURN_TAG = "rollout/ep_rew_mean"
L1_TAG = "charts/l1_to_target"
IMBALANCE_TAG = "charts/imbalance_mb"


# ============================================================================ env frames
def _make_env(checkpoint: str | None, episode_steps: int) -> Any:
    import gymnasium as gym

    import mobiwm_env  # noqa: F401  (registers the env ids)

    kwargs: dict[str, Any] = {"episode_steps": episode_steps}
    if checkpoint:
        kwargs["checkpoint"] = checkpoint
    return gym.make(ENV_ID, render_mode="rgb_array", **kwargs)


def heuristic_frames(
    steps: int,
    *,
    start_slot: int,
    seed: int = 0,
    checkpoint: str | None = None,
    episode_steps: int | None = None,
) -> list[np.ndarray]:
    """Rendered frames (``[H, W, 3]`` uint8) of the reset and of ``steps`` env steps of the
    heuristic in the world-model env, started at ``start_slot``."""
    from agents.baselines import make_controller

    env = _make_env(checkpoint, max(episode_steps or steps, steps, 1))
    try:
        controller = make_controller("heuristic", env)
        obs, _ = env.reset(seed=seed, options={"start_slot": start_slot})
        frames = [env.render()]
        for _ in range(steps):
            obs, _, terminated, truncated, _ = env.step(controller.predict(obs))
            frames.append(env.render())
            if terminated or truncated:
                break
    finally:
        env.close()
    return frames


def _render_palette() -> Any:
    """A ``P``-mode PIL image whose palette is the renderer's colour map (every other entry),
    its 'unserved' grey, 64 greys (text, lines, background) and the frame background."""
    from PIL import Image

    from mobiwm_env.render import load_colormap

    lut = load_colormap()
    greys = np.repeat(np.linspace(0.0, 255.0, 64).round()[:, None], 3, axis=1)
    colours = np.vstack([lut[:-1:2], lut[-1:], greys, [[18, 18, 24]]]).astype(np.uint8)[:256]
    pal = Image.new("P", (1, 1))
    flat = colours.ravel().tolist()
    pal.putpalette(flat + [0] * (768 - len(flat)))
    return pal


def make_heatmap(
    out: Path,
    *,
    steps: int = HEATMAP_STEPS,
    start_slot: int = HEATMAP_START_SLOT,
    seed: int = 0,
    checkpoint: str | None = None,
) -> Path:
    """``out`` (PNG): the frame after ``steps`` heuristic steps (see the module doc)."""
    from PIL import Image

    frame = heuristic_frames(steps, start_slot=start_slot, seed=seed, checkpoint=checkpoint)[-1]
    image = Image.fromarray(frame)
    return write_atomic(out, lambda p: image.save(p, format="PNG", optimize=True))


def make_gif(
    out: Path,
    *,
    steps: int = GIF_STEPS,
    start_slot: int = GIF_START_SLOT,
    seed: int = 0,
    checkpoint: str | None = None,
    fps: int | None = None,
) -> Path:
    """``out`` (animated GIF): reset + ``steps`` heuristic steps, one shared palette."""
    from PIL import Image

    from mobiwm_env.env import RENDER_FPS

    frames = heuristic_frames(steps, start_slot=start_slot, seed=seed, checkpoint=checkpoint)
    pal = _render_palette()
    images = [Image.fromarray(f).quantize(palette=pal, dither=Image.Dither.NONE) for f in frames]
    duration = int(1000 / (fps or RENDER_FPS))

    def save(p: Path) -> None:
        images[0].save(
            p, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0
        )

    return write_atomic(out, save)


# ============================================================================ learning curve
def train_default_run(out: Path = DEFAULT_TRAIN_OUT, extra: Sequence[str] = ()) -> Path:
    """Train the default run (``TRAIN_ARGS`` + ``extra``) into ``out``, replacing an earlier
    run there (a folder with ``config.json`` or ``tb/``); returns the run folder."""
    from agents import train_ppo

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not ((out / "config.json").exists() or (out / "tb").exists()):
            raise SystemExit(f"{out} exists and is not a PPO run folder; pick another --train-out")
        shutil.rmtree(out)
    return train_ppo.main([*TRAIN_ARGS, *extra, "--out", str(out)])


def training_event_dir(run_dir: Path) -> Path:
    """The TensorBoard folder of the run's PPO training: ``tb/ppo_<n>`` with the largest ``n``
    (SB3 numbers repeated runs into one ``tb``), else ``tb`` itself."""
    tb = Path(run_dir) / "tb"
    runs = [d for d in tb.glob("ppo_*") if d.is_dir() and d.name[4:].isdigit()]
    if runs:
        return max(runs, key=lambda d: int(d.name[4:]))
    if tb.is_dir():
        return tb
    raise FileNotFoundError(f"no TensorBoard logs in {tb} (agents/train_ppo.py writes them)")


def read_scalars(event_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{tag: (steps, values)}`` of every scalar in the event files of ``event_dir`` (not its
    subfolders), sorted by step; the last value wins where a step repeats."""
    from tensorboard.backend.event_processing.event_accumulator import (
        SCALARS,
        EventAccumulator,
    )

    points: dict[str, dict[int, float]] = {}
    for f in sorted(Path(event_dir).glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(f), size_guidance={SCALARS: 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            points.setdefault(tag, {}).update({e.step: e.value for e in acc.Scalars(tag)})
    return {
        tag: (np.array(sorted(d), dtype=np.int64), np.array([d[s] for s in sorted(d)]))
        for tag, d in points.items()
    }


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def run_title(run_dir: Path, record: dict[str, Any] | None) -> str:
    """``PPO (MobiWM, from heuristic) in MobiWM-LoadBalance-v0 (fast, hex57): 9,216 steps,
    16 envs, seed 0`` from the run's ``config.json`` (the folder name without one)."""
    if not record or "config" not in record:
        return f"PPO run {Path(run_dir).name}"
    c = record["config"]
    steps = record.get("timesteps", c.get("total_timesteps"))
    checkpoint = Path(c["checkpoint"]).name if c.get("checkpoint") else "default checkpoint"
    where = ", ".join(x for x in (checkpoint, c.get("scenario")) if x)
    if c.get("env_id", "").endswith("Twin-v0"):
        where = c.get("scenario", "")
    objective = f"λ_Δ={c.get('lambda_delta')}"
    if c.get("lambda_unserved"):
        objective += f", λ_U={c['lambda_unserved']}"
    return (
        f"{record.get('label', 'PPO')} in {c.get('env_id')} ({where})\n"
        f"{steps:,} env steps, {c.get('num_envs')} envs, {c.get('policy')} policy, "
        f"{objective}, seed {c.get('seed')}"
    )


def _eval_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """``[{spec, label, mean, ci95}]``: the twin return of every row of ``eval.json``."""
    rows = []
    for row in result.get("rows", []):
        ret = row.get("twin", {}).get("return", {})
        if "mean" in ret:
            rows.append(
                {
                    "spec": str(row.get("policy")),
                    "label": str(row.get("label", row.get("policy"))),
                    "mean": float(ret["mean"]),
                    "ci95": float(ret.get("ci95", 0.0)),
                }
            )
    return rows


REFERENCE_COLOURS = {"noop": "tab:gray", "heuristic": "tab:orange"}
"""Baselines drawn as horizontal reference lines (``eval.json`` policy spec → colour)."""


def _draw_references(
    ax: Any, rows: list[dict[str, Any]], n: Any, x_points: Sequence[float] | None = None
) -> list[dict[str, Any]]:
    """The baselines of ``rows`` as horizontal lines, the other policies (the warm-start clone,
    the trained policy: last) as points with their 95% CI at ``x_points`` (default: all at
    ``0, 1, ...``); returns those other rows."""
    points = [r for r in rows if r["spec"] not in REFERENCE_COLOURS]
    xs = list(x_points) if x_points is not None else list(range(len(points)))
    for r in rows:
        if r["spec"] in REFERENCE_COLOURS:
            ax.axhline(r["mean"], ls="--", lw=1.4, color=REFERENCE_COLOURS[r["spec"]],
                       label=f"{r['label']} (twin, {n} episodes)")  # fmt: skip
    for i, (r, x) in enumerate(zip(points, xs, strict=False)):
        last = i == len(points) - 1
        ax.errorbar(
            [x], [r["mean"]], yerr=[r["ci95"]], fmt="*" if last else "D",
            ms=12 if last else 6, capsize=4, color="tab:green" if last else "tab:olive",
            label=f"{'trained policy' if last else r['label']} (twin, 95% CI)",
        )  # fmt: skip
    return points


def _twin_panel(tx: Any, rows: list[dict[str, Any]], n: Any) -> None:
    """Every policy of ``eval.json`` judged on the twin: baselines as labelled lines, the
    others as points with their 95% CI, one column each."""
    import textwrap

    points = _draw_references(tx, rows, n)
    tx.set_xlim(-1.4, max(len(points), 1) - 0.5)  # left: room for the line labels
    tx.set_xticks(range(len(points)))
    names = ["trained policy" if i == len(points) - 1 else r["label"] for i, r in enumerate(points)]
    tx.set_xticklabels([textwrap.fill(t, 13) for t in names], fontsize=8)
    for r in rows:
        if r["spec"] in REFERENCE_COLOURS:
            tx.annotate(
                r["label"], (0.02, r["mean"]), xycoords=("axes fraction", "data"),
                xytext=(0, 3), textcoords="offset points", fontsize=8,
                color=REFERENCE_COLOURS[r["spec"]],
            )  # fmt: skip
    tx.margins(y=0.08)
    tx.set_title(f"judged on the twin (eval.json)\n{n} episodes each, 95% CI", fontsize=9)
    tx.set_ylabel("episode return on the twin")
    tx.grid(alpha=0.3, axis="y")


def _save_png(fig: Any, out: Path, dpi: int) -> Path:
    """Write ``fig`` to ``out`` as PNG atomically, then close it."""
    import matplotlib.pyplot as plt

    try:
        return write_atomic(out, lambda p: fig.savefig(p, format="png", dpi=dpi))
    finally:
        plt.close(fig)


def make_learning_curve(run_dir: Path, out: Path, *, dpi: int = 110) -> Path:
    """``out`` (PNG): the return (and relative L1 to target, if logged) of ``run_dir``'s PPO
    training against env steps, with the twin-evaluated references of ``eval.json`` (on the
    same axes for a run trained on the twin, else in a panel of their own: the returns of two
    dynamics are not on one scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    scalars = read_scalars(training_event_dir(run_dir))
    if RETURN_TAG not in scalars:
        raise ValueError(f"{run_dir}: no {RETURN_TAG} scalar in its TensorBoard logs")
    record = _read_json(run_dir / "config.json") or {}
    result = _read_json(run_dir / "eval.json") or {}
    rows = _eval_rows(result)
    n_eval = result.get("runs", "?")
    lower_tag = next((t for t in (L1_TAG, IMBALANCE_TAG) if t in scalars), None)
    trained_in = record.get("trained_in", "the training env")
    side_panel = bool(rows) and trained_in != "twin"

    n_rows = 2 if lower_tag else 1
    fig = plt.figure(figsize=(10.0 if side_panel else 8.0, 6.0 if lower_tag else 4.2))
    grid = fig.add_gridspec(
        n_rows, 2 if side_panel else 1,
        height_ratios=[2.2, 1.0] if lower_tag else [1.0],
        width_ratios=[3.0, 1.0] if side_panel else [1.0],
    )  # fmt: skip
    ax = fig.add_subplot(grid[0, 0])
    steps, ret = scalars[RETURN_TAG]
    ax.plot(steps, ret, "o-", ms=3, lw=1.6, color="tab:blue",
            label=f"PPO during training (in {trained_in})")  # fmt: skip
    if rows and not side_panel:
        _draw_references(ax, rows, n_eval, [float(steps[-1])] * len(rows))
    ax.set_ylabel("episode return\n(mean of the last 100 episodes)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best", framealpha=0.9)
    bottom = ax
    if lower_tag:
        bottom = fig.add_subplot(grid[1, 0], sharex=ax)
        s, v = scalars[lower_tag]
        name = "relative L1 to target" if lower_tag == L1_TAG else "imbalance (MB)"
        bottom.plot(s, v, "o-", ms=3, lw=1.4, color="tab:purple",
                    label=f"{name} (in {trained_in})")  # fmt: skip
        bottom.set_ylabel(name)
        bottom.grid(alpha=0.3)
        bottom.legend(fontsize=8, loc="best")
        ax.tick_params(labelbottom=False)
    bottom.set_xlabel("env steps (all sub-envs)")
    if side_panel:
        _twin_panel(fig.add_subplot(grid[:, 1]), rows, n_eval)
    fig.suptitle(run_title(run_dir, record), fontsize=10)
    fig.tight_layout()

    return _save_png(fig, out, dpi)


# ============================================================================ Table 1
def make_table1(results: Path, out: Path, *, dpi: int = 110) -> Path:
    """``out`` (PNG): each model's rollout MAE by day (left) and counterfactual R² per plan kind
    (right) from a ``worldmodel.evaluate`` ``results.json`` with the rollout section."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = _read_json(Path(results))
    if res is None:
        raise FileNotFoundError(f"{results}: no evaluation results (run scripts/table1.sh)")
    by_day = (res.get("rollout") or {}).get("mae_by_day")
    if not by_day:
        raise ValueError(f"{results}: no rollout section (MAE by day) to draw")
    cf = (res.get("counterfactual") or {}).get("metrics") or {}
    names = list(by_day)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.0, 4.4), width_ratios=[1.3, 1.0])
    for name in names:
        mae = by_day[name]
        bold = res.get("models", {}).get(name, {}).get("kind") == "mobiwm"
        left.plot(np.arange(1, len(mae) + 1), mae, "o-", ms=3, lw=2.6 if bold else 1.3,
                  label=name)  # fmt: skip
    left.set_xlabel("rollout day")
    left.set_ylabel("MAE (MB per cell and slot)")
    left.set_title("week-long rollout from a true warm start", fontsize=9)
    left.grid(alpha=0.3)
    left.legend(fontsize=7, ncol=2)
    learned = [n for n in names if n in cf]
    width = 0.8 / max(1, len(learned))
    for i, name in enumerate(learned):
        r2 = [cf[name].get(kind, {}).get(sel, {}).get("r2", np.nan) for kind, sel in PLAN_KINDS]
        right.bar(np.arange(len(PLAN_KINDS)) + i * width, r2, width, label=name)
    right.set_xticks(np.arange(len(PLAN_KINDS)) + 0.4 - width / 2)
    right.set_xticklabels(["random", "overpower", "site-off\n(neighbours)"])
    right.set_ylim(min(-0.05, right.get_ylim()[0]), 1.0)
    right.axhline(0.0, color="k", lw=0.6)
    right.set_ylabel("R² of the per-cell traffic change")
    right.set_title("counterfactual plans vs the twin", fontsize=9)
    right.grid(alpha=0.3, axis="y")
    right.legend(fontsize=7)
    fig.suptitle(f"Table 1 on {res.get('config', {}).get('data', '?')}", fontsize=10)
    fig.tight_layout()

    return _save_png(fig, out, dpi)


def make_calibration(results: Path, out: Path, *, dpi: int = 110) -> Path:
    """``out`` (PNG): one row per model of the calibration section of ``results``: PIT
    histograms, coverage by lead time, CRPS per scenario (model vs seasonal quantiles)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = _read_json(Path(results))
    cal = (res or {}).get("calibration") or {}
    if not cal.get("models"):
        raise ValueError(f"{results}: no calibration section with a model to draw")
    models = list(cal["models"])
    fig, axes = plt.subplots(len(models), 3, figsize=(12.0, 3.4 * len(models)), squeeze=False)
    for row, name in zip(axes, models, strict=True):
        per = cal["models"][name]
        base = next(k for k in per if k not in (name, "gate"))
        pit_ax, cov_ax, crps_ax = row
        for who, color in ((name, "C0"), (base, "C7")):
            h = per[who]["all"]["pit_histogram"]
            pit_ax.step(np.arange(len(h) + 1) / len(h), [h[0], *h], where="pre", color=color,
                        lw=2.2 if who == name else 1.2, label=who)  # fmt: skip
        pit_ax.axhline(1.0, color="k", lw=0.6, ls=":")
        pit_ax.set_ylim(0, max(2.0, pit_ax.get_ylim()[1]))
        pit_ax.set_xlabel("PIT")
        pit_ax.set_ylabel("density (1 = calibrated)")
        pit_ax.set_title(f"{name}: PIT histogram", fontsize=9)
        pit_ax.legend(fontsize=7)
        bands = per[name]["all"]["bands"]
        x = np.arange(len(bands))
        for goal, lo, hi in ((0.5, 0.45, 0.55), (0.9, 0.87, 0.93)):
            cov_ax.axhspan(100 * lo, 100 * hi, color="C2", alpha=0.15)
            key = f"coverage{int(goal * 100)}_by_band"
            for who, color in ((name, "C0"), (base, "C7")):
                vals = [np.nan if v is None else 100 * v for v in per[who]["all"][key]]
                cov_ax.plot(x, vals, "o-", color=color, lw=2.2 if who == name else 1.2,
                            label=f"{who} {int(goal * 100)}%")  # fmt: skip
        cov_ax.set_xticks(x)
        cov_ax.set_xticklabels([f"{lo}–{hi}" for lo, hi in bands], fontsize=7)
        cov_ax.set_xlabel("lead time (15-min slots)")
        cov_ax.set_ylabel("coverage (%)")
        cov_ax.set_title("interval coverage by lead (green: goal)", fontsize=9)
        cov_ax.legend(fontsize=6, ncol=2)
        scen = [s for s in cal.get("scenarios", []) if s in per[name]]
        w = 0.4
        for i, (who, color) in enumerate(((name, "C0"), (base, "C7"))):
            crps_ax.bar(np.arange(len(scen)) + i * w, [per[who][s]["crps"] for s in scen], w,
                        color=color, label=who)  # fmt: skip
        crps_ax.set_xticks(np.arange(len(scen)) + w / 2)
        crps_ax.set_xticklabels(scen, fontsize=7, rotation=20)
        crps_ax.set_ylabel("CRPS (MB per cell and slot)")
        crps_ax.set_title("CRPS per scenario (lower is better)", fontsize=9)
        crps_ax.legend(fontsize=7)
    fig.suptitle(f"Calibration on {res.get('config', {}).get('data', '?')}", fontsize=10)
    fig.tight_layout()
    return _save_png(fig, out, dpi)


# ============================================================================ CLI
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", nargs="+", choices=FIGURES, default=list(DEFAULT_FIGURES),
                   help=f"which figures to make (default: {' '.join(DEFAULT_FIGURES)})")  # fmt: skip
    p.add_argument("--eval", type=Path, default=DEFAULT_EVAL,
                   help="results.json of the Table 1 evaluation (for table1)")  # fmt: skip
    p.add_argument("--calib-eval", type=Path, default=DEFAULT_CALIB_EVAL,
                   help="results.json of a calibration evaluation (for calibration)")  # fmt: skip
    p.add_argument("--run", type=Path, default=None,
                   help="PPO run folder for the curve (default: train one, see --train-out)")  # fmt: skip
    p.add_argument("--train-out", type=Path, default=DEFAULT_TRAIN_OUT,
                   help="where the default run is trained (replaced if it holds an earlier run)")  # fmt: skip
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    p.add_argument("--checkpoint", default=None,
                   help="world model of the heat map and the GIF (default: the env's, full)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="reset seed of the heat map and the GIF")
    args = p.parse_args(argv)

    t_all = time.perf_counter()
    for name in FIGURES:
        if name not in args.only:
            continue
        t0 = time.perf_counter()
        if name == "heatmap":
            path = make_heatmap(
                args.out / "heatmap.png", seed=args.seed, checkpoint=args.checkpoint
            )
        elif name == "gif":
            path = make_gif(args.out / "episode.gif", seed=args.seed, checkpoint=args.checkpoint)
        elif name == "table1":
            path = make_table1(args.eval, args.out / "table1.png")
        elif name == "calibration":
            path = make_calibration(args.calib_eval, args.out / "calibration.png")
        else:
            run = args.run if args.run is not None else train_default_run(args.train_out)
            path = make_learning_curve(run, args.out / "learning_curve.png")
        size = path.stat().st_size / 1024
        print(f"wrote {path} ({size:,.0f} KB) in {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"total {time.perf_counter() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
