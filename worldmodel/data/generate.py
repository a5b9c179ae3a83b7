"""Generate the Para and Topo datasets with the twin (paper §5.1.1).

    python -m worldmodel.data.generate --preset default --out data/default
    python -m worldmodel.data.generate --preset smoke --out /tmp/smoke --workers 1
    python -m worldmodel.data.generate --preset default --splits test --test-maps 12 --out data/test12

Each map is one ``.npz`` file (see ``worldmodel.data.format``) named
``{scenario}-{dataset}-{split}-{index:03d}.npz``; ``manifest.json`` lists the maps, their
split and the resolved generator config. Map seeds are derived from the preset seed, the
scenario, the dataset kind, the split and the index, so train, validation and test maps never
share a seed. Existing valid files are kept (re-running resumes an interrupted generation).

Counterfactual branches (``branches > 0``, in the splits of ``branch_splits``): next to map
``X.npz`` the generator writes ``X-b1.npz``, ``X-b2.npz``, ... — the same scenario, demand and
fading (one twin, common random numbers) under the base schedule overlaid with short trials
(``worldmodel.data.schedules.branch_schedule``). Their metadata names the base map
(``branch_of``) and the trials; the trainer pairs a window with the same window of a sibling.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from worldmodel.cli import write_text_atomic
from worldmodel.data.format import DatasetFormatError, MapRecord, load_map, save_map
from worldmodel.data.schedules import (
    BranchConfig,
    ScheduleConfig,
    SleepConfig,
    branch_schedule,
    night_sleep,
    para_schedule,
    topo_schedule,
)
from worldmodel.twin.builders import make_scenario
from worldmodel.twin.demand import DEFAULT_DEMAND, DEMAND_PRESETS, demand_config
from worldmodel.twin.context import facility_map, od_flows
from worldmodel.twin.network import NetworkTwin
from worldmodel.twin.scenario import SLOTS_PER_DAY, SLOTS_PER_WEEK

GENERATOR_VERSION = "0.3.0"
SPLITS = ("train", "val", "test")
DATASETS = ("para", "topo")


@dataclass(frozen=True)
class ScenarioSpec:
    """One scenario family of a dataset: a map kind with its size and dataset kind."""

    kind: str  # "hex", "urban" or "suburb"
    dataset: str  # "para" or "topo"
    n_cells: int | None = None  # None: the builder's default for the kind
    maps: tuple[int, int, int] = (4, 1, 2)  # maps per split (train, val, test)

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.dataset}"


@dataclass(frozen=True)
class GenerateConfig:
    """A whole dataset: scenario families, length, context resolution and schedules."""

    scenarios: tuple[ScenarioSpec, ...]
    n_slots: int = SLOTS_PER_WEEK  # slots per map (672 = one week of 15-min slots)
    start_slot: int = 0  # absolute slot of the first row (0 = Monday 00:00)
    warmup_slots: int = 4  # simulated before the first row so A3 state has settled
    topo_extra_fraction: float = 0.1  # dormant cells added to Topo maps (inserted later)
    facility_px: int = 128
    ctx_grid: int = 32
    seed: int = 0
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    branches: int = 0  # counterfactual siblings per map (in ``branch_splits``)
    branch_splits: tuple[str, ...] = ("train", "val")
    branch: BranchConfig = field(default_factory=BranchConfig)
    demand: str = DEFAULT_DEMAND  # demand preset of the twin (``twin.demand.DEMAND_PRESETS``)
    sleep: SleepConfig = field(default_factory=SleepConfig)  # night energy saving

    def __post_init__(self) -> None:
        demand_config(self.demand)  # a clear error for an unknown preset
        if self.n_slots < 1:
            raise ValueError(f"n_slots must be >= 1, got {self.n_slots}")
        if self.branches < 0:
            raise ValueError(f"branches must be >= 0, got {self.branches}")
        bad = [s for s in self.branch_splits if s not in SPLITS]
        if bad:
            raise ValueError(f"branch_splits {bad} are not splits; choose from {SPLITS}")
        for spec in self.scenarios:
            if spec.kind not in ("hex", "urban", "suburb") or spec.dataset not in DATASETS:
                raise ValueError(f"unknown scenario spec {spec}")


PRESETS: dict[str, GenerateConfig] = {
    # Tiny, for tests: two small maps per family, two days.
    "smoke": GenerateConfig(
        scenarios=(
            ScenarioSpec("urban", "para", n_cells=24, maps=(1, 1, 1)),
            ScenarioSpec("suburb", "topo", n_cells=15, maps=(1, 0, 1)),
        ),
        n_slots=2 * SLOTS_PER_DAY,
        facility_px=64,
        ctx_grid=16,
        branches=1,
    ),
    # The dataset of the shipped checkpoint: the paper's four scenarios plus the hex map.
    "default": GenerateConfig(
        scenarios=(
            ScenarioSpec("urban", "para", n_cells=60, maps=(6, 1, 2)),
            ScenarioSpec("urban", "topo", n_cells=60, maps=(6, 1, 2)),
            ScenarioSpec("suburb", "para", n_cells=36, maps=(6, 1, 2)),
            ScenarioSpec("suburb", "topo", n_cells=36, maps=(6, 1, 2)),
            ScenarioSpec("hex", "para", maps=(4, 1, 2)),
        ),
        branches=3,
    ),
    # Paper scale: 9 districts, ~31,900 cells, one week, Para (benchmark).
    "paper-scale": GenerateConfig(
        scenarios=(
            ScenarioSpec("urban", "para", n_cells=5000, maps=(5, 0, 0)),
            ScenarioSpec("suburb", "para", n_cells=1725, maps=(4, 0, 0)),
        ),
    ),
}


def with_demand(cfg: GenerateConfig, demand: str) -> GenerateConfig:
    """``cfg`` with another demand preset: "smooth" also turns night sleep off (0.2.0's twin)."""
    sleep = SleepConfig() if demand == DEFAULT_DEMAND else replace(cfg.sleep, cell_fraction=0.0)
    return replace(cfg, demand=demand, sleep=sleep)


@dataclass(frozen=True)
class MapJob:
    spec: ScenarioSpec
    split: str
    index: int
    seed: int
    path: Path
    branches: int = 0

    def paths(self) -> list[Path]:
        """The base map's file, then its branches' files (``X-b1.npz``, ...)."""
        stem = self.path.stem
        return [self.path] + [
            self.path.with_name(f"{stem}-b{v}.npz") for v in range(1, self.branches + 1)
        ]


def map_seed(base_seed: int, spec: ScenarioSpec, split: str, index: int) -> int:
    """Deterministic, distinct seed per (preset seed, scenario, dataset, split, index)."""
    kinds = ("hex", "urban", "suburb")
    key = [base_seed, kinds.index(spec.kind), DATASETS.index(spec.dataset), SPLITS.index(split)]
    return int(np.random.SeedSequence([*key, index]).generate_state(1)[0])


def with_map_counts(
    cfg: GenerateConfig,
    splits: tuple[str, ...] | None = None,
    val_maps: int | None = None,
    test_maps: int | None = None,
) -> GenerateConfig:
    """``cfg`` with only the maps of ``splits`` (others get 0) and, if given, ``val_maps`` /
    ``test_maps`` maps per scenario in those splits. Seeds depend on (scenario, split, index)
    only, so a map keeps its seed and content: ``test_maps=12`` of a preset holds the preset's
    test maps plus new ones (a larger held-out set for evaluation)."""
    keep = SPLITS if splits is None else tuple(splits)
    bad = [s for s in keep if s not in SPLITS]
    if bad or not keep:
        raise ValueError(f"splits must be a non-empty subset of {SPLITS}, got {list(keep)}")
    for name, n in (("val_maps", val_maps), ("test_maps", test_maps)):
        if n is not None and (not isinstance(n, int) or n < 0):
            raise ValueError(f"{name} must be an integer >= 0, got {n!r}")
    specs = []
    for spec in cfg.scenarios:
        counts = dict(zip(SPLITS, spec.maps, strict=True))
        counts["val"] = counts["val"] if val_maps is None else val_maps
        counts["test"] = counts["test"] if test_maps is None else test_maps
        specs.append(replace(spec, maps=tuple(counts[s] if s in keep else 0 for s in SPLITS)))
    return replace(cfg, scenarios=tuple(specs))


def plan_jobs(cfg: GenerateConfig, out: Path) -> list[MapJob]:
    jobs = []
    for spec in cfg.scenarios:
        for split, count in zip(SPLITS, spec.maps, strict=True):
            for i in range(count):
                path = out / f"{spec.name}-{split}-{i:03d}.npz"
                seed = map_seed(cfg.seed, spec, split, i)
                n_br = cfg.branches if split in cfg.branch_splits else 0
                jobs.append(MapJob(spec, split, i, seed, path, n_br))
    return jobs


def generate_map(cfg: GenerateConfig, job: MapJob) -> list[MapRecord]:
    """Build the scenario, sample its schedule (and its branches), run the twin, collect the
    context. Returns the base map, then one record per branch (``job.branches``)."""
    spec = job.spec
    rng = np.random.default_rng(job.seed)
    builder = {
        "kind": spec.kind,
        "seed": job.seed,
        "n_cells": spec.n_cells,
        "ctx_grid": cfg.ctx_grid,
        "demand": cfg.demand,
    }
    if spec.dataset == "topo":
        base = make_scenario(**builder)
        builder["extra_cells"] = max(1, int(round(cfg.topo_extra_fraction * base.n_cells)))
    scenario = make_scenario(**builder)
    sc_args = (scenario.init_params, scenario.init_active, cfg.n_slots, scenario.bounds, rng)
    if spec.dataset == "para":
        actions, active, changed = para_schedule(*sc_args, cfg.schedule)
        summary = {"param_changed": changed.tolist()}
    else:
        actions, active, summary = topo_schedule(*sc_args, cfg.schedule)
    if cfg.sleep.cell_fraction > 0:  # own stream: the schedules above do not depend on it
        sleep_rng = np.random.default_rng([job.seed, 0x51EE9])
        active = night_sleep(active, cfg.start_slot, sleep_rng, cfg.sleep)
    plans = [(actions, active, None)]
    branch_rng = np.random.default_rng([job.seed, 0xB7A9C4])  # base map independent of branches
    for _ in range(job.branches):
        plans.append(
            branch_schedule(
                actions, active, scenario.cell_site, scenario.bounds, branch_rng, cfg.branch
            )
        )
    e = len(plans)
    twin = NetworkTwin(scenario, e, seed=job.seed, common_fading=True)
    warm = min(cfg.warmup_slots, cfg.start_slot)
    twin.reset(slot=cfg.start_slot - warm, params=actions[0], active=active[0])
    if warm:
        twin.step(warm)
    out = twin.run(np.stack([p[0] for p in plans]), np.stack([p[1] for p in plans]))
    slots = out.slots[0]
    meta = {
        "name": job.path.stem,
        "scenario": spec.name,
        "builder": builder,
        "kind": spec.kind,
        "dataset": spec.dataset,
        "split": job.split,
        "index": job.index,
        "seed": job.seed,
        "extent_m": scenario.extent_m,
        "grid_px": scenario.grid_px,
        "traffic_unit": scenario.traffic_unit,
        "slot_minutes": scenario.slot_minutes,
        "bounds": asdict(scenario.bounds),
        "radio": asdict(scenario.radio),
        "n_cells": scenario.n_cells,
        "n_sites": scenario.n_sites,
        "residents": float(scenario.population.sum()),
        "schedule": summary,
        "generator_version": GENERATOR_VERSION,
        "generator_config": _config_dict(cfg),
    }
    shared = dict(
        demand=out.demand[0],
        slot=slots.astype(np.int64),
        slot_of_day=(slots % SLOTS_PER_DAY).astype(np.int64),
        day_of_week=((slots // SLOTS_PER_DAY) % 7).astype(np.int64),
        cell_xy=scenario.cell_xy_m.astype(np.float32),
        cell_capacity=scenario.cell_capacity.astype(np.float32),
        poi=scenario.poi.astype(np.float32),
        od=od_flows(scenario, slots).astype(np.float32),
        facility=facility_map(scenario, cfg.facility_px).astype(np.float32),
    )
    records = []
    for v, (acts, act, trials) in enumerate(plans):
        m = dict(meta, handovers=int(out.handovers[v].sum()))
        if v:
            m.update(
                name=job.paths()[v].stem,
                branch_of=job.path.stem,
                branch=v,
                schedule={**summary, "trials": trials},
            )
        records.append(
            MapRecord(
                traffic=out.traffic[v],
                actions=acts.astype(np.float32),
                active=act,
                unserved=out.unserved[v],
                metadata=m,
                **shared,
            )
        )
    return records


def scenario_of(record: MapRecord):
    """Rebuild the twin ``Scenario`` a generated map came from (from its ``builder`` metadata)."""
    builder = record.metadata.get("builder")
    if not isinstance(builder, dict):
        raise ValueError(f"map {record.name!r}: metadata has no 'builder' entry (old generator?)")
    # maps written before demand presets existed (generator 0.2.0 and older) had smooth demand
    return make_scenario(**{"demand": "smooth", **builder})


def _config_dict(cfg: GenerateConfig) -> dict:
    d = asdict(cfg)
    d["scenarios"] = [asdict(s) for s in cfg.scenarios]
    return d


def _reusable(cfg: GenerateConfig, job: MapJob) -> list[MapRecord] | None:
    """The job's existing files when all are valid and match its seed and generator version."""
    recs = []
    for path in job.paths():
        if not path.exists():
            return None
        try:
            rec = load_map(path)
        except DatasetFormatError:
            return None  # corrupt or stale: regenerate
        meta = rec.metadata
        if meta.get("seed") != job.seed or meta.get("generator_version") != GENERATOR_VERSION:
            return None
        recs.append(rec)
    return recs


def _run_job(cfg: GenerateConfig, job: MapJob) -> list[dict]:
    recs = _reusable(cfg, job)
    if recs is not None:
        return [_summary(r, p, job, 0.0, True) for r, p in zip(recs, job.paths(), strict=True)]
    t0 = time.perf_counter()
    recs = generate_map(cfg, job)
    for rec, path in zip(recs, job.paths(), strict=True):
        save_map(rec, path)
    sec = (time.perf_counter() - t0) / len(recs)
    return [_summary(r, p, job, sec, False) for r, p in zip(recs, job.paths(), strict=True)]


def _summary(rec: MapRecord, path: Path, job: MapJob, seconds: float, reused: bool) -> dict:
    demand = float(rec.demand.sum())
    return {
        "file": path.name,
        "scenario": job.spec.name,
        "split": job.split,
        "seed": job.seed,
        "n_cells": rec.n_cells,
        "n_slots": rec.n_slots,
        "mean_cell_traffic": float(rec.traffic[rec.active].mean()) if rec.active.any() else 0.0,
        "unserved_share": float(rec.unserved.sum() / demand) if demand > 0 else 0.0,
        "handovers": int(rec.metadata.get("handovers", 0)),
        "seconds": round(seconds, 2),
        "reused": reused,
        "branch_of": rec.metadata.get("branch_of"),
    }


def _write_json_atomic(path: Path, obj: dict) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2))


def generate(cfg: GenerateConfig, out: str | Path, workers: int = 1, progress: bool = True) -> dict:
    """Generate every map of ``cfg`` into ``out``; returns (and writes) the manifest."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = plan_jobs(cfg, out)
    t0 = time.perf_counter()
    bar = tqdm(total=len(jobs), desc="maps (+branches)", unit="map", disable=not progress)
    rows = []
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_run_job, cfg, j) for j in jobs]
            for fut in futures:
                rows.extend(fut.result())
                bar.update()
    else:
        for job in jobs:
            rows.extend(_run_job(cfg, job))
            bar.update()
    bar.close()
    manifest = {
        "format_version": 1,
        "generator_version": GENERATOR_VERSION,
        "config": _config_dict(cfg),
        "seconds": round(time.perf_counter() - t0, 1),
        "maps": rows,
    }
    _write_json_atomic(out / "manifest.json", manifest)
    return manifest


def print_summary(manifest: dict, file=None) -> None:
    file = file or sys.stdout
    head = (
        f"{'file':34s} {'cells':>5s} {'slots':>5s} {'mean MB/slot':>12s} {'unserved':>8s} {'s':>6s}"
    )
    print(head, file=file)
    for r in manifest["maps"]:
        print(
            f"{r['file']:34s} {r['n_cells']:5d} {r['n_slots']:5d} {r['mean_cell_traffic']:12.1f} "
            f"{100 * r['unserved_share']:7.2f}% {r['seconds']:6.1f}",
            file=file,
        )
    cells = sum(r["n_cells"] for r in manifest["maps"])
    print(f"{len(manifest['maps'])} maps, {cells} cells, {manifest['seconds']} s", file=file)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="default")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--demand",
        choices=sorted(DEMAND_PRESETS),
        default=DEFAULT_DEMAND,
        help="twin demand: 'realistic' (calibrated to real traces, with night sleep) or "
        "'smooth' (0.2.0's twin: no sessions, no night sleep)",
    )
    p.add_argument("--seed", type=int, default=None, help="override the preset seed")
    p.add_argument("--slots", type=int, default=None, help="override slots per map")
    p.add_argument("--workers", type=int, default=1, help="parallel processes")
    p.add_argument(
        "--branches", type=int, default=None, help="override counterfactual branches per map"
    )
    p.add_argument(
        "--splits", nargs="+", choices=SPLITS, default=None,
        help="generate only these splits (default: all)",
    )  # fmt: skip
    for split in ("val", "test"):
        p.add_argument(
            f"--{split}-maps", type=int, default=None, metavar="N",
            help=f"{split} maps per scenario (default: the preset's); the preset's {split} maps "
            "are the first ones, unchanged",
        )  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    cfg = PRESETS[args.preset]
    if args.demand != cfg.demand:
        cfg = with_demand(cfg, args.demand)
    if args.seed is not None:
        cfg = replace(cfg, seed=args.seed)
    if args.slots is not None:
        cfg = replace(cfg, n_slots=args.slots)
    if args.branches is not None:
        cfg = replace(cfg, branches=args.branches)
    if args.splits is not None or args.val_maps is not None or args.test_maps is not None:
        splits = None if args.splits is None else tuple(args.splits)
        try:
            cfg = with_map_counts(cfg, splits, args.val_maps, args.test_maps)
        except ValueError as err:  # one check, in with_map_counts; argparse-style exit 2
            parser.error(
                str(err).replace("val_maps", "--val-maps").replace("test_maps", "--test-maps")
            )
    manifest = generate(cfg, args.out, workers=args.workers, progress=not args.quiet)
    print_summary(manifest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
