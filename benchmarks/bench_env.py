"""Throughput of the load-balancing envs on the 57-cell hex map, and rendering cost.

    python benchmarks/bench_env.py            # world model & twin, num_envs 1 / 8 / 64
    python benchmarks/bench_env.py --quick    # fewer steps, twin only up to 8 envs

Prints env-steps per second of the natively batched vector env (``gym.make_vec``): "steady"
counts the steps inside episodes (the hot path: one world-model forward / one twin pass per
step), "with resets" also includes the autoreset steps, whose twin warm-ups (cached per start
slot and parameters) make them slower while the cache is cold. Then ms per ``rgb_array``
frame. The world model uses the shipped checkpoint when it exists, else a freshly initialised
``debug``-preset model (said in the output: its speed, not its accuracy, is measured).
Target on a 2-core CPU: >= 1,000 env-steps/s for the world model at 64 envs; < 20 ms/frame.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gymnasium as gym  # noqa: E402
import torch  # noqa: E402

import mobiwm_env  # noqa: E402
from mobiwm_env.config import DEFAULT_CHECKPOINT  # noqa: E402

SCENARIO = "hex57"


def resolve_checkpoint(path: str | None) -> tuple[str, str]:
    """(checkpoint dir, description): the given one, the shipped one, or a debug model."""
    if path:
        return path, f"given checkpoint {path}"
    if (DEFAULT_CHECKPOINT / "config.json").is_file():
        return str(DEFAULT_CHECKPOINT), f"shipped checkpoint {DEFAULT_CHECKPOINT}"
    from worldmodel.model.checkpoint import save_checkpoint
    from worldmodel.model.config import preset
    from worldmodel.model.mobiwm import MobiWM

    torch.manual_seed(0)
    model = MobiWM(preset("debug"))
    model.normalizer.set_stats(200.0, 0.7, 0.8)
    out = Path(tempfile.mkdtemp(prefix="mobiwm-bench-")) / "debug"
    save_checkpoint(model, out)
    return str(out), "DEBUG-preset checkpoint (the shipped one is missing)"


def bench_vector(env_id: str, num_envs: int, steps: int, **kwargs) -> dict[str, float]:
    """Env-steps/s of ``steps`` vector steps (NEXT_STEP autoreset) after one reset."""
    t0 = time.perf_counter()
    envs = gym.make_vec(env_id, num_envs=num_envs, **kwargs)
    make_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    envs.reset(seed=0)
    reset_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (steps, *envs.action_space.shape)).astype(np.float32)
    envs.step(actions[0])  # first call: lazy allocations
    times, resets = [], []
    pending = np.zeros(num_envs, dtype=bool)
    for a in actions[1:]:
        t0 = time.perf_counter()
        _, _, terminated, truncated, _ = envs.step(a)
        times.append(time.perf_counter() - t0)
        resets.append(bool(pending.any()))
        pending = terminated | truncated
    envs.close()
    times_a, resets_a = np.array(times), np.array(resets)
    steady = times_a[~resets_a] if (~resets_a).any() else times_a
    return {
        "make_s": make_s,
        "reset_s": reset_s,
        "steady": num_envs / steady.mean(),
        "overall": num_envs * len(times_a) / times_a.sum(),
        "n_resets": int(resets_a.sum()),
    }


def bench_day_two(ckpt: str, num_envs: int, steps: int) -> dict[str, float]:
    """Steady env-steps/s on day 2 of two-day world-model episodes, per ``memory`` mode (the
    observed memory reads the warm-up's last day from there on)."""
    out = {}
    for memory in ("observed", "predicted"):
        envs = gym.make_vec(mobiwm_env.WORLD_MODEL_ID, num_envs=num_envs, checkpoint=ckpt,
                            memory=memory, episode_steps=48)  # fmt: skip
        envs.reset(seed=0)
        zero = np.zeros(envs.action_space.shape, dtype=np.float32)
        for _ in range(24):  # day 1
            envs.step(zero)
        t0 = time.perf_counter()
        for _ in range(steps):
            envs.step(zero)
        out[memory] = num_envs * steps / (time.perf_counter() - t0)
        envs.close()
    return out


def bench_render(env_id: str, frames: int, **kwargs) -> tuple[float, float]:
    """(ms per frame without parameter change, ms per frame right after a step)."""
    env = gym.make(env_id, render_mode="rgb_array", **kwargs)
    env.reset(seed=0)
    env.render()
    t0 = time.perf_counter()
    for _ in range(frames):
        env.render()
    still = (time.perf_counter() - t0) / frames * 1e3
    after = []
    for _ in range(frames):
        env.step(env.action_space.sample())
        t0 = time.perf_counter()
        env.render()
        after.append(time.perf_counter() - t0)
    env.close()
    return still, float(np.mean(after) * 1e3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer steps; twin up to 8 envs")
    p.add_argument("--checkpoint", default=None, help="world-model checkpoint directory")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    ckpt, ckpt_desc = resolve_checkpoint(args.checkpoint)
    print(f"mobiwm_env benchmark: scenario {SCENARIO}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch thread(s), {os.cpu_count()} CPU(s)")  # fmt: skip
    print(f"world model: {ckpt_desc}")
    wm_steps = 30 if args.quick else 60  # episodes are 24 steps: includes autoresets
    rows = []
    for n in (1, 8, 64):
        rows.append(
            (
                "world model",
                n,
                bench_vector(mobiwm_env.WORLD_MODEL_ID, n, wm_steps, checkpoint=ckpt),
            )
        )
    twin_envs = (1, 8) if args.quick else (1, 8, 64)
    for n in twin_envs:
        steps = 26 if n < 64 else 6
        rows.append(("twin", n, bench_vector(mobiwm_env.TWIN_ID, n, steps)))
    print()
    print(f"{'backend':12s} {'envs':>5s} {'steady steps/s':>15s} {'with resets':>12s} "
          f"{'resets':>6s} {'make s':>7s} {'reset s':>8s}")  # fmt: skip
    for name, n, r in rows:
        print(
            f"{name:12s} {n:5d} {r['steady']:15.1f} {r['overall']:12.1f} {r['n_resets']:6d} "
            f"{r['make_s']:7.2f} {r['reset_s']:8.2f}"
        )
    wm64 = next(r for name, n, r in rows if name == "world model" and n == 64)
    ok = "meets" if wm64["steady"] >= 1000 else "MISSES"
    print(
        f"\nworld model, 64 envs: {wm64['steady']:.0f} steady env-steps/s ({ok} the 1,000 target)"
    )
    day2 = bench_day_two(ckpt, 8, 10 if args.quick else 20)
    print(
        f"world model, 8 envs, day 2 of a two-day episode: {day2['observed']:.1f} env-steps/s "
        f"with the observed memory, {day2['predicted']:.1f} with the predicted one (ratio "
        f"{day2['observed'] / day2['predicted']:.2f})"
    )
    frames = 20 if args.quick else 50
    print()
    print(f"{'rgb_array frame':24s} {'ms (same params)':>17s} {'ms (after a step)':>18s}")
    for name, env_id, kw in (
        ("world model", mobiwm_env.WORLD_MODEL_ID, {"checkpoint": ckpt}),
        ("twin", mobiwm_env.TWIN_ID, {}),
    ):
        still, after = bench_render(env_id, frames, **kw)
        print(f"{name:24s} {still:17.1f} {after:18.1f}")
    print(
        "(target < 20 ms per frame; 'after a step' includes the world model's serving-map refresh)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
