"""Tests of ``worldmodel.evaluate`` on the smoke dataset with a tiny untrained MobiWM."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.worldmodel.conftest import fitted_debug_mobiwm
from worldmodel import evaluate as ev
from worldmodel.data.dataset import load_split
from worldmodel.data.generate import scenario_of
from worldmodel.model import MobiWM, preset, save_checkpoint
from worldmodel.twin.scenario import POWER


@pytest.fixture(scope="module")
def smoke(smoke_dataset: Path) -> Path:
    return smoke_dataset


@pytest.fixture(scope="module")
def model(smoke: Path) -> MobiWM:
    return fitted_debug_mobiwm(smoke)


@pytest.fixture(scope="module")
def records(smoke: Path):
    return load_split(smoke, "test")


def test_rollout_section_metrics(smoke: Path, model: MobiWM) -> None:
    res = ev.evaluate_models(
        smoke, [("wm", model), "persistence"], "test", True, sections=("rollout",), progress=False
    )
    ro = res["rollout"]
    assert set(ro["metrics"]) == {"urban-para", "suburb-topo"}
    assert ro["warm_start"] == 8
    for per in ro["metrics"].values():
        assert set(per) == {"wm", "persistence"}
        for m in per.values():
            assert set(m) == {"jsd", "mae", "rmse", "nrmse", "bias_pct"}
            assert all(math.isfinite(v) for v in m.values())
            assert 0.0 <= m["jsd"] <= 1.0
    assert set(ro["improvement_jsd_pct"]["wm"]) == {"urban-para", "suburb-topo"}
    assert ro["improvement_jsd_jackknife"] == {"wm": {}}  # one map per scenario: no jackknife
    assert set(ro["overall"]) == {"wm", "persistence"}
    assert "counterfactual" not in res and res["models"]["wm"]["kind"] == "mobiwm"


def test_rollout_jsd_of_each_map(records, model: MobiWM) -> None:
    """``jsd_per_map``: ``metrics.jsd`` of each map's own rollout; it pools nothing."""
    from worldmodel import metrics

    models = ev.resolve_models([("wm", model), "seasonal"])
    res = ev.rollout_section(records, models, quick=True, progress=False)
    w = res["warm_start"]
    for scen, per in res["jsd_per_map"].items():
        recs = [r for r in records if ev.scenario_name(r) == scen]
        length = res["slots"][scen]
        preds = ev.rollout_predictions(recs, models, w, length)
        for name in ("wm", "seasonal"):
            expect = []
            for p, r in zip(preds[name], recs, strict=True):
                on = r.active[w : w + length]
                expect.append(metrics.jsd(p[on], r.traffic[w : w + length][on]))
            assert per[name] == pytest.approx(expect, rel=1e-12)
            if len(recs) == 1:
                assert per[name][0] == pytest.approx(res["metrics"][scen][name]["jsd"])
    assert "JSD of each map on its own" in ev.to_markdown(
        {"config": {"data": "d", "split": "test", "n_maps": 1, "quick": True, "seed": 0},
         "models": {m.name: m.info() for m in models}, "rollout": res}
    )  # fmt: skip


def test_rollout_never_reads_truth_after_warm_start(records, model: MobiWM) -> None:
    models = ev.resolve_models([("wm", model), "persistence"])
    warm, length = 8, 40
    base = ev.rollout_predictions(records, models, warm, length)
    rng = np.random.default_rng(0)
    perturbed = copy.deepcopy(records)
    for r in perturbed:
        r.traffic[warm:] = rng.uniform(0, 5000, r.traffic[warm:].shape).astype(np.float32)
    again = ev.rollout_predictions(perturbed, models, warm, length)
    for name in base:
        for a, b in zip(base[name], again[name], strict=True):
            assert a.shape == (length, a.shape[1])
            np.testing.assert_array_equal(a, b)
    # ... while the warm start itself does matter
    for r in perturbed:
        r.traffic[warm - 1] += 100.0
    moved = ev.rollout_predictions(perturbed, models, warm, length)
    assert not np.array_equal(moved["persistence"][0], base["persistence"][0])


def test_twin_counterfactual(records) -> None:
    rec = records[0]
    sc = scenario_of(rec)
    t0 = ev.pick_t0(rec, 8, 12)
    assert rec.slot_of_day[t0] == 32 and rec.day_of_week[t0] < 5
    plans = ev.make_plans(rec, sc, t0, 1, np.random.default_rng(0))
    kinds = [p.kind for p in plans]
    assert kinds == ["none", "none", "random", "overpower", "site_off"]
    before, after = ev.twin_counterfactual(rec, plans, t0, 12, sc)
    assert before.shape == (5, t0, rec.n_cells) and after.shape == (5, 12, rec.n_cells)
    # common fading: the no-change replicate is identical and the re-run reproduces the map
    np.testing.assert_array_equal(after[1], after[0])
    np.testing.assert_allclose(before[0], rec.traffic[:t0], rtol=1e-5, atol=1e-3)
    off = plans[4].cells
    assert off and (after[4][:, off] == 0).all() and (after[0][:, off] > 0).any()
    assert plans[3].actions[plans[3].cells, POWER].min() > sc.bounds.power_dbm[1]
    assert np.abs(after[3].mean(0) - after[0].mean(0)).max() > 0


def test_counterfactual_section(records, model: MobiWM) -> None:
    models = ev.resolve_models([("wm", model), "persistence"])
    res = ev.counterfactual_section(records, models, quick=True, progress=False, n_random=1)
    assert len(res["maps"]) == 2 and res["twin"]["replicate_max_abs_delta"] == 0.0
    assert all(m["rerun_max_abs_diff"] < 1e-2 for m in res["maps"].values())
    for name in ("wm", "persistence"):
        for kind in ev.PLAN_KINDS:
            for sel in ("all", "on"):
                block = res["metrics"][name][kind][sel]
                assert set(block) == {"r2", "sign", "n_cells"} and math.isfinite(block["r2"])
    per = res["metrics"]["persistence"]
    assert per["random"]["all"]["r2"] <= 0.0
    assert per["overpower"]["all"]["r2"] <= 0.0
    assert per["site_off"]["on"]["r2"] <= 0.0  # the neighbours: persistence sees no change


def test_long_rollout_segments_match(records, model: MobiWM, monkeypatch) -> None:
    (m,) = ev.resolve_models([("wm", model)])
    rec = records[0]
    n = rec.n_slots + 40  # runs past the map's end: actions held, OD wraps
    long, bad = ev.long_rollout(m, rec, n)
    monkeypatch.setattr(ev, "STABILITY_SEGMENT", 8)
    short, _ = ev.long_rollout(m, rec, n)
    assert bad is None and long.shape == (n, rec.n_cells)
    np.testing.assert_allclose(short, long, rtol=1e-4, atol=1e-3)
    stats = ev.stability_stats(long, rec, bad)
    assert stats["any_nan"] is False and stats["slots"] == n
    assert stats["min_ratio"] is not None and stats["drift"] is not None


@pytest.fixture(scope="module")
def memory_model(smoke: Path) -> MobiWM:
    """A tiny MobiWM with a daily memory (a short 8-slot "day") and the yesterday anchor."""
    torch.manual_seed(1)
    m = MobiWM(preset("debug", history=12, season=8, season_anchor="yesterday"))
    train = load_split(smoke, "train")
    m.normalizer.fit(
        np.concatenate([r.traffic.ravel() for r in train]),
        np.concatenate([r.active.ravel() for r in train]),
    )
    return m.eval()


def test_long_rollout_segments_keep_the_observed_memory(records, memory_model, monkeypatch):
    (obs,) = ev.resolve_models([("wm", memory_model)])
    (pred,) = ev.resolve_models([("wm", memory_model)], memory="predicted")
    assert obs.wm.memory == "observed" and pred.wm.memory == "predicted"
    rec = records[0]
    n = 60
    long, bad = ev.long_rollout(obs, rec, n)
    long_pred, _ = ev.long_rollout(pred, rec, n)
    monkeypatch.setattr(ev, "STABILITY_SEGMENT", 8)  # shorter than H: the table's offset moves
    short, _ = ev.long_rollout(obs, rec, n)
    short_pred, _ = ev.long_rollout(pred, rec, n)
    assert bad is None and long.shape == (n, rec.n_cells)
    np.testing.assert_allclose(short, long, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(short_pred, long_pred, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(long[:8], long_pred[:8])  # memory still in the warm start
    assert np.abs(long[8:] - long_pred[8:]).max() > 1e-3


def test_memory_mode_is_validated_and_recorded(smoke: Path, memory_model) -> None:
    with pytest.raises(ValueError, match="memory must be one of"):
        ev.resolve_models([("wm", memory_model)], memory="yesterday")
    with pytest.raises(ValueError, match="--memory must be one of"):
        ev.EvalConfig(models=("seasonal",), memory="none")
    res = ev.evaluate_models(smoke, [("wm", memory_model)], quick=True, sections=("rollout",),
                             progress=False, memory="predicted")  # fmt: skip
    assert res["config"]["memory"] == "predicted"


def test_cli_writes_results(smoke: Path, model: MobiWM, tmp_path: Path, capsys) -> None:
    ckpt = save_checkpoint(model, tmp_path / "ckpt" / "best")
    out = tmp_path / "eval"
    argv = [
        "--data",
        str(smoke),
        "--models",
        f"tiny={ckpt}",
        "persistence",
        "seasonal",
        "--out",
        str(out),
        "--quick",
        "--no-progress",
        "--stability-slots",
        "64",
        "--cf-random-plans",
        "1",
    ]
    assert ev.main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["models"]) == {"tiny", "persistence", "seasonal"}
    assert res["rollout"]["warm_start"] == 96
    assert set(res["stability"]["metrics"]) == {"tiny"}
    assert res["counterfactual"]["metrics"]["seasonal"]["random"]["all"]["r2"] <= 0.0
    md = (out / "results.md").read_text()
    for head in (
        "## Summary",
        "## 1. Long-horizon rollout",
        "## 2. Counterfactual",
        "## 3. Rollout stability",
    ):
        assert head in md
    bias_row = md.split("Total-traffic bias")[1].split("| tiny |")[1].split("\n")[0]
    assert (
        bias_row.split("|")[-2].strip() == f"{res['rollout']['overall']['tiny']['bias_pct']:+.2f}"
    )
    summary = md.split("## Summary")[1].split("## 1.")[0]
    tiny_row = next(line for line in summary.splitlines() if line.startswith("| tiny |"))
    jsd = res["rollout"]["overall"]["tiny"]["jsd"]
    assert tiny_row.split("|")[3].strip("*<u>/ ") == ev._fmt(jsd)
    assert "urban-para JSD" in capsys.readouterr().out
    assert not list(out.glob(".*.tmp"))


def test_cli_help(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        ev.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--models" in text and "--sections" in text and "--quick" in text


def test_bad_model_specs(smoke: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="persistance"):
        ev.resolve_models(["persistance"])
    missing = tmp_path / "runs" / "nope" / "best"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        ev.resolve_models([str(missing)])
    with pytest.raises(ValueError, match="seasnal"):
        ev.main(["--data", str(smoke), "--models", "seasnal", "--out", str(tmp_path / "o")])
    with pytest.raises(ValueError, match="plots"):
        ev.evaluate_models(smoke, ["persistence"], sections=("rollout", "plots"))


def test_rollout_jackknife_of_the_improvement(records, model: MobiWM) -> None:
    """Two copies of the test maps: the leave-one-out replicates are the point estimate itself
    (a copy is left), so se = 0; with one map perturbed the interval opens."""
    recs = records + [copy.deepcopy(r) for r in records]
    for i, r in enumerate(recs[len(records) :]):
        r.metadata = {**r.metadata, "name": f"{r.name}-copy{i}"}
    models = ev.resolve_models([("wm", model), "persistence", "seasonal"])
    ro = ev.rollout_section(recs, models, progress=False, max_slots=48)
    for scen, jk in ro["improvement_jsd_jackknife"]["wm"].items():
        pct = ro["improvement_jsd_pct"]["wm"][scen]["pct"]
        assert jk["n_maps"] == 2 and jk["se"] == pytest.approx(0.0, abs=1e-9)
        assert jk["lo90"] == pytest.approx(pct) and jk["min_leave_one_out"] == pytest.approx(pct)
    recs[-1].traffic = recs[-1].traffic * 1.7
    ro = ev.rollout_section(recs, models, progress=False, max_slots=48)
    jk = ro["improvement_jsd_jackknife"]["wm"][ev.scenario_name(recs[-1])]
    pct = ro["improvement_jsd_pct"]["wm"][ev.scenario_name(recs[-1])]["pct"]
    assert jk["se"] > 0 and jk["lo90"] < pct < jk["hi90"]


def test_rollout_improvement_over_the_best_learned_baseline(records, model: MobiWM) -> None:
    """The learned-baseline improvement ignores the naive copies: with a GRU-WM row it equals the
    improvement over that row alone; without a learned row it is empty."""
    from worldmodel.baselines import GRUWorldModel

    torch.manual_seed(0)
    gru = GRUWorldModel(hidden=8)
    gru.normalizer.set_stats(scale=20.0, mean=0.7, std=0.5)
    recs = records + [copy.deepcopy(r) for r in records]
    for i, r in enumerate(recs[len(records) :]):
        r.metadata = {**r.metadata, "name": f"{r.name}-copy{i}"}
    models = ev.resolve_models([("wm", model), ("g", gru), "seasonal"])
    assert [m.kind for m in models] == ["mobiwm", "gru-wm", "naive"]
    ro = ev.rollout_section(recs, models, progress=False, max_slots=48)
    for scen, per in ro["metrics"].items():
        got = ro["improvement_jsd_learned_pct"]["wm"][scen]
        want = 100.0 * (per["g"]["jsd"] - per["wm"]["jsd"]) / per["g"]["jsd"]
        assert got["best_baseline"] == "g" and got["pct"] == pytest.approx(want)
        assert ro["improvement_jsd_learned_jackknife"]["wm"][scen]["n_maps"] == 2
    alone = ev.rollout_section(recs, [models[0], models[2]], progress=False, max_slots=48)
    assert alone["improvement_jsd_learned_pct"] == {}
    assert alone["improvement_jsd_learned_jackknife"] == {}


def test_lead_section_matches_direct_forecasts(records, model: MobiWM) -> None:
    """Lead ℓ of origin o scores slot o + ℓ − 1: persistence against the last true value, the
    model's first chunk against one prediction from the true history (teacher forcing)."""
    models = ev.resolve_models([("wm", model), "persistence"])
    lead, n_org = 12, 3
    res = ev.lead_section(records, models, progress=False, lead_slots=lead, n_origins=n_org)
    warm = max(m.history for m in models)
    assert res["origins"] == [warm, warm + 4, warm + 8]
    wm = models[0].wm
    err = {n: np.zeros(lead) for n in ("wm", "persistence")}
    cnt = np.zeros(lead)
    for i, rec in enumerate(records):
        for o in res["origins"]:
            t = rec.traffic[o : o + lead].astype(np.float64)
            a = rec.active[o : o + lead]
            # rolled out chunk by chunk (horizon 4): each chunk repeats the previous chunk's
            # last slot, which is 0 where the cell was off (e.g. asleep at night)
            last = np.empty_like(t)
            src = rec.traffic[o - 1].astype(np.float64)
            for c in range(0, lead, 4):
                last[c : c + 4] = src
                src = np.where(a[min(c + 3, lead - 1)], src, 0.0)
            err["persistence"] += np.where(a, np.abs(last - t), 0).sum(1)
            rows = np.arange(o - wm.history, o + wm.horizon)
            hist = np.where(rows[:, None] < o, rec.traffic[rows], 0.0)
            item = ev.map_item(rec, rows, hist, rec.actions[rows], rec.active[rows], i)
            with torch.no_grad():
                p = wm.predict_batch(ev.collate_maps([item]))[0, :, : rec.n_cells].numpy()
            err["wm"][: wm.horizon] += np.where(
                a[: wm.horizon], np.abs(p - t[: wm.horizon]), 0
            ).sum(1)
            cnt += a.sum(1)
    np.testing.assert_allclose(res["overall"]["persistence"], err["persistence"] / cnt, rtol=1e-6)
    h = wm.horizon
    np.testing.assert_allclose(res["overall"]["wm"][:h], err["wm"][:h] / cnt[:h], rtol=1e-5)
    assert len(res["overall"]["wm"]) == lead and set(res["mae_by_lead"]) == {
        "urban-para",
        "suburb-topo",
    }
    assert ev.lead_bands(res["overall"]["wm"], ((1, 4), (5, 12), (9, 16))) == [
        pytest.approx(np.mean(res["overall"]["wm"][:4])),
        pytest.approx(np.mean(res["overall"]["wm"][4:12])),
        None,
    ]
    short = ev.lead_section(records, models, progress=False, lead_slots=200, n_origins=1)
    assert set(short["skipped"]) == {"urban-para", "suburb-topo"} and not short["overall"]


def test_cli_lead_section(smoke: Path, model: MobiWM, tmp_path: Path) -> None:
    ckpt = save_checkpoint(model, tmp_path / "ckpt" / "best")
    out = tmp_path / "eval"
    argv = ["--data", str(smoke), "--models", f"tiny={ckpt}", "persistence", "--out", str(out)]
    assert ev.main([*argv, "--quick", "--no-progress", "--sections", "lead"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res) >= {"lead"} and "rollout" not in res
    assert len(res["lead"]["overall"]["tiny"]) == ev.LEAD_SLOTS
    md = (out / "results.md").read_text()
    assert "## 4. Error by lead time" in md and "| tiny |" in md.split("## 4.")[1]
