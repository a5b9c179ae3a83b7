"""Env throughput: world model (the small fast model and the full one, the env's default) and twin, by number of
envs and by network size, against the fast-environment targets.

    python benchmarks/bench_env.py                 # the whole table (~5 min on 2 cores)
    python benchmarks/bench_env.py --quick         # 1 and 64 envs, 57 and 120 cells
    python benchmarks/bench_env.py --envs 64 --backends fast-compiled twin
    python benchmarks/bench_env.py --envs 64 --cells hex57 --backends fast fast-report fast-sample

Backends: the two shipped world models (``fast``, ``full``; ``mobiwm_env.config``), each also
with ``compile=True`` (``-compiled``: ``torch.compile`` of the model's inference; its first
reset includes the compilation) or with their predictive distribution (``-report``: spread and
gate in ``info``; ``-sample``: traffic drawn from it; ``EnvConfig.uncertainty``), and the twin.
Table 1, per backend × ``num_envs`` (``gym.make_vec``, hex57, random actions in [-1, 1] for
every cell, so every parameter changes every step):

* ``first reset`` / ``reset``: seconds of the first ``reset()`` (cold caches) and of a later
  one at new start slots, each *plus the step after it* (work a reset defers counts);
* ``steady``: env-steps/s and ms per vector step inside episodes;
* ``with resets``: env-steps/s over a whole episode (24 steps) and its autoreset.

Table 2, one env on maps of 57 to 5,000 cells: ms per step and the process's peak resident
memory (each row in a fresh process). Rendering: ms per ``rgb_array`` frame.

Targets (issue "fast environments"; 2 torch threads): world model ≥ 1,000 steady env-steps/s
at 64 envs and ≥ 100 at 1; twin ≥ 150 at 64; a reset of 64 world-model envs ≤ 1 s (the first
≤ 5 s); ``suburb1700`` ≤ 150 ms and ``urban5000`` ≤ 500 ms per world-model step within 4 GB.
Ratios measured in one run are the reliable part: the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gymnasium as gym  # noqa: E402
import torch  # noqa: E402

import mobiwm_env  # noqa: E402
from mobiwm_env import dynamics  # noqa: E402
from mobiwm_env.config import DEFAULT_NAME, SHIPPED_CHECKPOINTS  # noqa: E402

BACKENDS = {
    "fast": (mobiwm_env.WORLD_MODEL_ID, {"checkpoint": "fast"}),
    "full": (mobiwm_env.WORLD_MODEL_ID, {"checkpoint": "full"}),
    "fast-compiled": (mobiwm_env.WORLD_MODEL_ID, {"checkpoint": "fast", "compile": True}),
    "full-compiled": (mobiwm_env.WORLD_MODEL_ID, {"checkpoint": "full", "compile": True}),
    "fast-report": (mobiwm_env.WORLD_MODEL_ID, {"checkpoint": "fast", "uncertainty": "report"}),
    "fast-sample": (mobiwm_env.WORLD_MODEL_ID, {"checkpoint": "fast", "uncertainty": "sample"}),
    "full-report": (mobiwm_env.WORLD_MODEL_ID, {"checkpoint": "full", "uncertainty": "report"}),
    "twin": (mobiwm_env.TWIN_ID, {}),
}
DEFAULT_BACKENDS = ("fast", "full", "fast-compiled", "full-compiled", "twin")
CELLS = {"hex57": 57, "urban": 120, "suburb1700": 1700, "urban5000": 5000}
EPISODE_STEPS = 24


def bench_vector(backend: str, num_envs: int, steady_steps: int) -> dict[str, float]:
    """One row of table 1 (see the module doc)."""
    env_id, kwargs = BACKENDS[backend]
    dynamics._SOURCES.clear()  # a cold first reset: no warm-up run of an earlier row
    envs = gym.make_vec(env_id, num_envs=num_envs, episode_steps=EPISODE_STEPS, **kwargs)
    rng = np.random.default_rng(0)

    def act() -> np.ndarray:
        return rng.uniform(-1, 1, envs.action_space.shape).astype(np.float32)

    t0 = time.perf_counter()
    envs.reset(seed=0)
    envs.step(act())
    first_reset = time.perf_counter() - t0
    times = []
    for _ in range(steady_steps):
        t0 = time.perf_counter()
        envs.step(act())
        times.append(time.perf_counter() - t0)
    steady = float(np.median(times))
    t0 = time.perf_counter()
    envs.reset(seed=1)  # new start slots, warm caches
    envs.step(act())
    reset = time.perf_counter() - t0
    # a whole episode from here: EPISODE_STEPS - 1 more steps, then the autoreset step
    t0 = time.perf_counter()
    for _ in range(EPISODE_STEPS):
        envs.step(act())
    episode = time.perf_counter() - t0
    envs.close()
    return {
        "first_reset_s": first_reset,
        "reset_s": reset,
        "steady": num_envs / steady,
        "steady_ms": steady * 1e3,
        "with_resets": num_envs * EPISODE_STEPS / episode,
    }


def bench_cells(backend: str, scenario: str, steps: int) -> dict[str, float]:
    """One row of table 2, in this process (run it in a fresh one: peak memory)."""
    env_id, kwargs = BACKENDS[backend]
    env = gym.make(env_id, scenario=scenario, **kwargs)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    env.step(env.action_space.sample())
    times = []
    for _ in range(steps):
        a = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        t0 = time.perf_counter()
        env.step(a)
        times.append(time.perf_counter() - t0)
    env.close()
    return {"step_ms": float(np.median(times)) * 1e3, "peak_gb": _peak_rss_gb()}


def _peak_rss_gb() -> float:
    """This process's peak resident memory (``VmHWM``; unlike ``ru_maxrss`` it does not carry
    over the RSS of the parent that forked it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def cells_in_subprocess(backend: str, scenario: str, steps: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--one-cells", backend, scenario, "--steps", str(steps),
           "--threads", str(threads)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_render(backend: str, frames: int) -> float:
    env_id, kwargs = BACKENDS[backend]
    env = gym.make(env_id, render_mode="rgb_array", **kwargs)
    env.reset(seed=0)
    env.render()
    t = []
    for _ in range(frames):
        env.step(env.action_space.sample())
        t0 = time.perf_counter()
        env.render()
        t.append(time.perf_counter() - t0)
    env.close()
    return float(np.mean(t)) * 1e3


def _verdict(value: float, target: float, higher: bool = True) -> str:
    ok = value >= target if higher else value <= target
    return "meets" if ok else "MISSES"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1 and 64 envs; 57 and 120 cells")
    p.add_argument("--backends", nargs="*", default=list(DEFAULT_BACKENDS),
                   choices=list(BACKENDS))  # fmt: skip
    p.add_argument("--envs", nargs="*", type=int, default=None, help="default 1 8 64 256")
    p.add_argument("--cells", nargs="*", default=None, choices=list(CELLS))
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--steps", type=int, default=8, help="steady steps per row")
    p.add_argument("--one-cells", nargs=2, metavar=("BACKEND", "SCENARIO"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.one_cells:
        print(json.dumps(bench_cells(*args.one_cells, steps=args.steps)))
        return 0
    envs = args.envs or ([1, 64] if args.quick else [1, 8, 64, 256])
    cells = args.cells or (["hex57", "urban"] if args.quick else list(CELLS))
    print(f"mobiwm_env benchmark: torch {torch.__version__}, {torch.get_num_threads()} torch "
          f"thread(s), {os.cpu_count()} CPU(s)")  # fmt: skip
    for name, path in SHIPPED_CHECKPOINTS.items():
        mc = json.loads((path / "config.json").read_text())["model_config"]
        default = " [env default]" if name == DEFAULT_NAME else ""
        print(f"  world model '{name}'{default}: {path.name} (d_model {mc['d_model']}, "
              f"{mc['enc_layers']}+{mc['dec_layers']} blocks, neighbours "
              f"{mc.get('spatial_neighbours', 0) or 'all'})")  # fmt: skip

    rows = []
    for backend in args.backends:
        for n in envs:
            r = bench_vector(backend, n, args.steps)
            rows.append((backend, n, r))
            print(f"  {backend:14s} {n:4d} envs: {r['steady']:8.1f} env-steps/s", flush=True)
    print()
    print(f"{'backend':14s} {'envs':>5s} {'steady steps/s':>15s} {'ms/step':>8s} "
          f"{'with resets':>12s} {'first reset s':>14s} {'reset s':>8s}")  # fmt: skip
    for backend, n, r in rows:
        print(f"{backend:14s} {n:5d} {r['steady']:15.1f} {r['steady_ms']:8.1f} "
              f"{r['with_resets']:12.1f} {r['first_reset_s']:14.2f} {r['reset_s']:8.2f}")  # fmt: skip
    print()
    find = {(b, n): r for b, n, r in rows}
    checks = [(("twin", 64), "steady", 150.0, True, "twin, 64 envs, steady env-steps/s")]
    for wm in ("fast", "full", "fast-compiled", "full-compiled"):
        checks += [
            ((wm, 64), "steady", 1000.0, True, f"{wm}, 64 envs, steady env-steps/s"),
            ((wm, 1), "steady", 100.0, True, f"{wm}, 1 env, steady env-steps/s"),
            ((wm, 64), "first_reset_s", 5.0, False, f"{wm}, 64 envs, first reset s"),
            ((wm, 64), "reset_s", 1.0, False, f"{wm}, 64 envs, later reset s"),
        ]
    for key, field, target, higher, label in checks:
        if key in find:
            v = find[key][field]
            print(f"target: {label} = {v:.2f} ({_verdict(v, target, higher)} "
                  f"{'>=' if higher else '<='} {target:g})")  # fmt: skip

    print()
    print(f"{'one env':14s} {'scenario':11s} {'cells':>6s} {'ms/step':>9s} {'peak GB':>8s}")
    limits = {"suburb1700": 150.0, "urban5000": 500.0}
    for backend in args.backends:
        for sc in cells:
            r = cells_in_subprocess(backend, sc, 3 if CELLS[sc] > 1000 else args.steps,
                                    args.threads)  # fmt: skip
            if "error" in r:
                print(f"{backend:14s} {sc:11s} {CELLS[sc]:6d}   failed: {r['error']}")
                continue
            note = ""
            if backend != "twin" and sc in limits:
                ok = r["step_ms"] <= limits[sc] and (sc != "urban5000" or r["peak_gb"] <= 4.0)
                note = f"  ({'meets' if ok else 'MISSES'} <= {limits[sc]:g} ms"
                note += ", 4 GB)" if sc == "urban5000" else ")"
            print(f"{backend:14s} {sc:11s} {CELLS[sc]:6d} {r['step_ms']:9.1f} "
                  f"{r['peak_gb']:8.2f}{note}", flush=True)  # fmt: skip
    print()
    for backend in args.backends:
        print(
            f"rgb_array frame after a step, {backend}: {bench_render(backend, 10):.1f} ms "
            "(target < 20)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
