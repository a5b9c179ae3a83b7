"""Dataset generation: schedules, determinism, splits, and the twin's balance in every map."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from worldmodel.data.format import load_map
from worldmodel.data.generate import (
    PRESETS,
    GenerateConfig,
    MapJob,
    ScenarioSpec,
    generate,
    generate_map,
    main,
    map_seed,
    plan_jobs,
    scenario_of,
    with_demand,
    with_map_counts,
)
from worldmodel.data.schedules import (
    BranchConfig,
    ScheduleConfig,
    SleepConfig,
    branch_schedule,
    night_sleep,
    para_schedule,
    topo_schedule,
)
from worldmodel.twin.scenario import SLOTS_PER_DAY, ParamBounds

TINY = GenerateConfig(
    scenarios=(
        ScenarioSpec("urban", "para", n_cells=12, maps=(1, 0, 1)),
        ScenarioSpec("suburb", "topo", n_cells=9, maps=(1, 0, 0)),
    ),
    n_slots=48,
    facility_px=32,
    ctx_grid=8,
)


def _init(n=50):
    rng = np.random.default_rng(0)
    params = np.stack(
        [
            rng.uniform(40, 46, n),
            rng.uniform(0, 360, n),
            rng.uniform(0, 6, n),
            rng.uniform(2, 8, n),
        ],
        axis=1,
    )
    return params, np.ones(n, dtype=bool)


def test_para_schedule_changes_forty_percent_within_bounds():
    params, active = _init(50)
    bounds = ParamBounds()
    acts, act, changed = para_schedule(params, active, 672, bounds, np.random.default_rng(1))
    moved = (acts != acts[:1]).any(axis=(0, 2))
    assert moved.sum() == len(changed) == 20
    assert set(np.flatnonzero(moved)) == set(changed.tolist())
    assert act.all()
    low, high = bounds.low_high()
    assert (acts[..., [0, 2, 3]] >= low[[0, 2, 3]] - 1e-6).all()
    assert (acts[..., [0, 2, 3]] <= high[[0, 2, 3]] + 1e-6).all()
    # piecewise constant with at least min_hold_slots between changes of one cell
    for c in changed:
        steps = np.flatnonzero((acts[1:, c] != acts[:-1, c]).any(-1)) + 1
        assert (np.diff(steps) >= ScheduleConfig().min_hold_slots).all()


def test_topo_schedule_switches_cells_off_and_inserts_dormant_ones():
    params, active = _init(40)
    active[-4:] = False  # dormant cells to insert
    acts, act, summary = topo_schedule(params, active, 672, ParamBounds(), np.random.default_rng(2))
    assert set(summary["inserted"]) == {36, 37, 38, 39}
    for c in summary["inserted"]:
        assert not act[0, c] and act[-1, c]
    assert len(summary["switched_off"]) >= 1
    for c in summary["switched_off"]:
        assert act[0, c] and not act.all(axis=0)[c]


def test_schedule_config_validation():
    with pytest.raises(ValueError, match="change_fraction"):
        ScheduleConfig(change_fraction=1.5)


def test_map_seeds_differ_across_splits_and_indices():
    spec = TINY.scenarios[0]
    seeds = {map_seed(0, spec, split, i) for split in ("train", "val", "test") for i in range(5)}
    assert len(seeds) == 15
    assert map_seed(0, spec, "train", 0) != map_seed(1, spec, "train", 0)


def test_same_seed_identical_map_different_seed_differs(tmp_path):
    job = plan_jobs(TINY, tmp_path)[0]
    (a,), (b,) = generate_map(TINY, job), generate_map(TINY, job)
    for key, arr in a.arrays().items():
        np.testing.assert_array_equal(arr, getattr(b, key), err_msg=key)
    (other,) = generate_map(TINY, MapJob(job.spec, job.split, job.index, job.seed + 1, job.path))
    assert not np.array_equal(a.traffic, other.traffic)


def test_branch_schedule_overlays_bounded_trials_that_are_undone():
    params, active = _init(30)
    bounds = ParamBounds()
    acts, act, _ = para_schedule(params, active, 400, bounds, np.random.default_rng(3))
    sites = np.arange(30) // 3
    cfg = BranchConfig(site_off_prob=0.3)
    b_acts, b_act, trials = branch_schedule(acts, act, sites, bounds, np.random.default_rng(4), cfg)
    assert len(trials) >= 400 // (cfg.max_slots + cfg.max_gap_slots)
    assert {t["kind"] for t in trials} == {"params", "site_off"}
    inside = np.zeros(400, dtype=bool)
    for t in trials:
        assert cfg.min_slots <= t["stop"] - t["start"] <= cfg.max_slots or t["stop"] == 400
        inside[t["start"] : t["stop"]] = True
        cells = t["cells"]
        seg = slice(t["start"], t["stop"])
        if t["kind"] == "site_off":
            assert len(set(sites[cells])) == 1 and not b_act[seg, cells].any()
        else:
            diff = np.abs(b_acts[seg, cells] - acts[seg, cells])
            diff[..., 1] = np.minimum(diff[..., 1], 360.0 - diff[..., 1])
            assert (diff.max(axis=(0, 2)) > 0).any()
            assert (diff <= np.asarray(cfg.max_offset) + 1e-3).all()
    # outside the trials the branch follows the base exactly
    np.testing.assert_array_equal(b_acts[~inside], acts[~inside])
    np.testing.assert_array_equal(b_act[~inside], act[~inside])
    low, high = bounds.low_high()
    assert (b_acts[..., 0] >= low[0] - 1e-4).all() and (b_acts[..., 0] <= high[0] + 1e-4).all()
    with pytest.raises(ValueError, match="min_slots"):
        BranchConfig(min_slots=5, max_slots=4)


def test_branches_share_demand_and_base_map_is_unchanged(tmp_path):
    cfg = replace(TINY, branches=2)
    job = plan_jobs(cfg, tmp_path)[0]
    assert job.branches == 2 and [p.name for p in job.paths()][1:] == [
        "urban-para-train-000-b1.npz",
        "urban-para-train-000-b2.npz",
    ]
    recs = generate_map(cfg, job)
    (alone,) = generate_map(TINY, plan_jobs(TINY, tmp_path)[0])
    for key, arr in alone.arrays().items():  # branches never perturb the base map
        np.testing.assert_array_equal(arr, getattr(recs[0], key), err_msg=key)
    for v, rec in enumerate(recs[1:], start=1):
        assert rec.metadata["branch_of"] == "urban-para-train-000" and rec.metadata["branch"] == v
        np.testing.assert_array_equal(rec.demand, recs[0].demand)
        np.testing.assert_array_equal(rec.od, recs[0].od)
        assert not np.array_equal(rec.actions, recs[0].actions)
        assert not np.allclose(rec.traffic, recs[0].traffic)
    # before the first trial the branch's traffic equals the base (common random numbers)
    first = min(t["start"] for t in recs[1].metadata["schedule"]["trials"])
    np.testing.assert_allclose(recs[1].traffic[:first], recs[0].traffic[:first], rtol=1e-5)
    # test maps get no branches
    assert all(j.branches == 0 for j in plan_jobs(cfg, tmp_path) if j.split == "test")


def test_generate_writes_valid_maps_manifest_and_resumes(tmp_path):
    manifest = generate(TINY, tmp_path, progress=False)
    assert len(manifest["maps"]) == 3
    rec = load_map(tmp_path / manifest["maps"][0]["file"])
    np.testing.assert_allclose(rec.traffic.sum(1) + rec.unserved, rec.demand, rtol=1e-4)
    assert rec.metadata["builder"]["seed"] == rec.metadata["seed"]
    sc = scenario_of(rec)
    np.testing.assert_allclose(sc.cell_xy_m, rec.cell_xy, atol=1e-3)
    again = generate(TINY, tmp_path, progress=False)
    assert all(r["reused"] for r in again["maps"])
    topo = load_map(tmp_path / "suburb-topo-train-000.npz")
    assert (~topo.active[0]).any() and topo.active.any(axis=0).all()
    assert (topo.traffic[~topo.active] == 0).all()


def test_corrupt_file_is_regenerated(tmp_path):
    generate(TINY, tmp_path, progress=False)
    path = tmp_path / "urban-para-train-000.npz"
    path.write_bytes(b"not a zip")
    manifest = generate(TINY, tmp_path, progress=False)
    row = next(r for r in manifest["maps"] if r["file"] == path.name)
    assert not row["reused"]
    load_map(path)


def test_cli_runs_smoke_preset_with_overrides(tmp_path, capsys):
    assert main(["--preset", "smoke", "--out", str(tmp_path), "--slots", "24", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "maps" in out and "urban-para-train-000.npz" in out
    assert load_map(tmp_path / "urban-para-train-000.npz").n_slots == 24


def test_larger_test_set_keeps_the_preset_test_maps(tmp_path):
    """``--splits test --test-maps N``: only test maps, the preset's first ones unchanged."""
    base = tmp_path / "base"
    generate(TINY, base, progress=False)
    cli = tmp_path / "cli"
    args = ["--preset", "smoke", "--out", str(cli), "--slots", "24", "--quiet"]
    assert main([*args, "--splits", "test", "--test-maps", "2"]) == 0
    assert sorted(p.name for p in cli.glob("*.npz")) == [
        "suburb-topo-test-000.npz", "suburb-topo-test-001.npz",
        "urban-para-test-000.npz", "urban-para-test-001.npz",
    ]  # fmt: skip
    more = tmp_path / "more"
    cfg = with_map_counts(TINY, ("test",), test_maps=2)
    assert [s.maps for s in cfg.scenarios] == [(0, 0, 2), (0, 0, 2)]
    assert [s.maps for s in with_map_counts(TINY, None, 3).scenarios] == [(1, 3, 1), (1, 3, 0)]
    manifest = generate(cfg, more, progress=False)
    assert sorted(r["file"] for r in manifest["maps"]) == [
        "suburb-topo-test-000.npz", "suburb-topo-test-001.npz",
        "urban-para-test-000.npz", "urban-para-test-001.npz",
    ]  # fmt: skip
    a = load_map(base / "urban-para-test-000.npz")
    b = load_map(more / "urban-para-test-000.npz")
    np.testing.assert_array_equal(a.traffic, b.traffic)
    np.testing.assert_array_equal(a.actions, b.actions)
    c = load_map(more / "urban-para-test-001.npz")
    assert c.metadata["seed"] != a.metadata["seed"]
    assert not np.array_equal(c.traffic, a.traffic)
    with pytest.raises(ValueError, match="splits"):
        with_map_counts(TINY, ("tset",))
    with pytest.raises(ValueError, match="test_maps"):
        with_map_counts(TINY, None, None, -1)
    with pytest.raises(SystemExit):
        main(["--preset", "smoke", "--out", str(tmp_path / "x"), "--splits", "tset"])
    with pytest.raises(SystemExit):
        main(["--preset", "smoke", "--out", str(tmp_path / "x"), "--test-maps", "-1"])


def test_presets_are_consistent():
    assert {"smoke", "default", "paper-scale"} <= set(PRESETS)
    cells = sum(s.n_cells * sum(s.maps) for s in PRESETS["paper-scale"].scenarios)
    assert 31_000 <= cells <= 33_000
    with pytest.raises(ValueError, match="n_slots"):
        replace(TINY, n_slots=0)
    with pytest.raises(ValueError, match="branch_splits"):
        replace(TINY, branch_splits=("training",))


# ------------------------------------------------------------------ night sleep, demand presets
def test_night_sleep_switches_cells_off_only_at_night() -> None:
    t, n = 3 * SLOTS_PER_DAY, 40
    on = np.ones((t, n), bool)
    cfg = SleepConfig(cell_fraction=0.5, night_prob=1.0)
    out = night_sleep(on, 0, np.random.default_rng(0), cfg)
    assert on.all()  # the input is not modified
    off = ~out
    hours = (np.arange(t) % SLOTS_PER_DAY) // 4
    assert not off[(hours < 1) | (hours >= 7)].any()  # nothing outside 01:00-07:00
    assert off[hours == 4].any(axis=0).sum() == 20  # half the cells sleep, every night at 4 h
    again = night_sleep(on, 0, np.random.default_rng(0), cfg)
    np.testing.assert_array_equal(out, again)
    # absolute time: a schedule starting at noon sleeps at the same clock hours
    late = night_sleep(on, SLOTS_PER_DAY // 2, np.random.default_rng(0), cfg)
    assert not (~late)[(((np.arange(t) + SLOTS_PER_DAY // 2) % SLOTS_PER_DAY) // 4) >= 7].any()
    assert np.array_equal(night_sleep(on, 0, np.random.default_rng(0), SleepConfig(0.0)), on)
    with pytest.raises(ValueError, match="cell_fraction"):
        SleepConfig(cell_fraction=1.5)
    with pytest.raises(ValueError, match="start_hour_probs"):
        SleepConfig(start_hour_probs=(0.5, 0.2))
    with pytest.raises(ValueError, match="end_hours"):
        SleepConfig(end_hours=(3, 6))


def test_demand_presets_in_the_generator(tmp_path) -> None:
    smooth = with_demand(TINY, "smooth")
    assert smooth.demand == "smooth" and smooth.sleep.cell_fraction == 0.0
    assert with_demand(smooth, "realistic").sleep == SleepConfig()
    with pytest.raises(ValueError, match="unknown demand preset"):
        replace(TINY, demand="bumpy")
    job = plan_jobs(TINY, tmp_path)[0]
    (rec,) = generate_map(TINY, job)
    assert rec.metadata["builder"]["demand"] == "realistic"
    assert scenario_of(rec).demand == "realistic"
    # realistic Para maps have night sleeps; smooth ones keep every cell on air
    assert not rec.active.all()
    (old,) = generate_map(smooth, plan_jobs(smooth, tmp_path)[0])
    assert old.active.all() and old.metadata["builder"]["demand"] == "smooth"
    # maps from before the presets (no "demand" in the builder) had smooth demand
    del old.metadata["builder"]["demand"]
    assert scenario_of(old).demand == "smooth"
