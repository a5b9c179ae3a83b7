"""Twin benchmarks: step time on the 57-cell hex map, and paper-scale Para generation.

    python benchmarks/bench_twin.py                 # hex step times (seconds)
    python benchmarks/bench_twin.py --paper-scale   # + 9 districts, ~31,900 cells, 672 slots

The last hex row is the vectorised environment's step: 64 copies, every parameter of every
cell changing (a random walk within the bounds), then 4 slots; it also prints env-steps/s.

Prints tables; numbers go into docs/results.md. Ratios measured in one run are the reliable
part (the machines are shared and noisy).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worldmodel.twin.builders import get_scenario  # noqa: E402
from worldmodel.twin.network import NetworkTwin  # noqa: E402
from worldmodel.twin.scenario import POWER  # noqa: E402


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def bench_hex(repeats: int) -> None:
    sc = get_scenario("hex57")
    print(
        f"hex57: {sc.n_cells} cells, {sc.grid_px}x{sc.grid_px} px, K={sc.radio.candidates_per_pixel}"
    )
    print(f"{'n_envs':>6s} {'case':>22s} {'ms/slot':>9s} {'ms/slot/env':>12s}")
    for n_envs in (1, 8):
        twin = NetworkTwin(sc, n_envs, seed=0)
        rng = np.random.default_rng(0)

        def none_changing(twin=twin):
            twin.step(1)

        def all_changing(twin=twin, rng=rng, n_envs=n_envs):
            p = np.broadcast_to(sc.init_params, (n_envs, sc.n_cells, 4)).copy()
            p[..., POWER] = rng.uniform(38, 46, size=p.shape[:2])
            twin.set_params(p)
            twin.step(1)

        for name, fn in (("none changing", none_changing), ("all 57 changing", all_changing)):
            dt = _time(fn, repeats)
            print(f"{n_envs:6d} {name:>22s} {1e3 * dt:9.2f} {1e3 * dt / n_envs:12.2f}")
    bench_env_step(sc, max(3, repeats // 4))


def bench_env_step(sc, repeats: int, n_envs: int = 64, n_slots: int = 4) -> None:
    """The vector env's twin step: all params of all 64 copies change, then ``n_slots`` slots."""
    twin = NetworkTwin(sc, n_envs, seed=0)
    rng = np.random.default_rng(0)
    step = np.array([1.0, 10.0, 1.0, 1.0])  # the env's default max_step per parameter

    def all_params(twin=twin):
        p = twin.params + rng.uniform(-1.0, 1.0, twin.params.shape) * step
        twin.set_params(sc.bounds.clip(p))
        twin.step(n_slots)

    dt = _time(all_params, repeats)
    name = f"all params, {n_slots} slots"
    print(
        f"{n_envs:6d} {name:>22s} {1e3 * dt / n_slots:9.2f} {1e3 * dt / n_slots / n_envs:12.2f}"
        f"   -> {n_envs / dt:.0f} env-steps/s"
    )


def bench_paper_scale(workers: int) -> None:
    from worldmodel.data.generate import PRESETS, generate

    cfg = PRESETS["paper-scale"]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        manifest = generate(cfg, tmp, workers=workers, progress=True)
        dt = time.perf_counter() - t0
    cells = sum(r["n_cells"] for r in manifest["maps"])
    slots = cfg.n_slots
    peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    peak_child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    print(f"paper scale: {len(manifest['maps'])} districts, {cells} cells, {slots} slots")
    print(f"{'wall s':>8s} {'cells*slots/s':>14s} {'peak RSS GiB (main, largest worker)':>36s}")
    print(f"{dt:8.1f} {cells * slots / dt:14.0f} {peak_self:17.2f} {peak_child:18.2f}")
    for r in manifest["maps"]:
        print(f"  {r['file']:36s} {r['n_cells']:6d} cells {r['seconds']:7.1f} s")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--paper-scale", action="store_true")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    bench_hex(args.repeats)
    if args.paper_scale:
        bench_paper_scale(args.workers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
