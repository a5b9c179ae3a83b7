"""Fitting the quantile head and the gate on the smoke dataset, the CLI, and the calibration
section of ``worldmodel.evaluate`` (tiny untrained MobiWM)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.worldmodel.conftest import fitted_debug_mobiwm
from worldmodel.data.dataset import load_split
from worldmodel.evaluate.calibration import SEASONAL_NAME, run_calibration, seasonal_quantiles
from worldmodel.evaluate.config import SectionSettings
from worldmodel.evaluate.models import resolve_models
from worldmodel.model import save_checkpoint
from worldmodel.model.checkpoint import load_checkpoint
from worldmodel.model.uncertainty import QUANTILE_LEVELS, QuantileHead, UncertaintyConfig
from worldmodel.uncertainty import fit as uf
from worldmodel.uncertainty.gate import plan_scores
from worldmodel.uncertainty.train import main as train_main

LEAD = 24


@pytest.fixture(scope="module")
def smoke(smoke_dataset: Path) -> Path:
    return smoke_dataset


@pytest.fixture(scope="module")
def ckpt(smoke: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(fitted_debug_mobiwm(smoke), tmp_path_factory.mktemp("ckpt") / "wm")


def test_origins_spread_after_the_warm_start(smoke: Path) -> None:
    recs = load_split(smoke, "test")
    rows = uf.origin_rows(recs, 8, LEAD, 4)
    assert len(rows) == 4 * len(recs)
    for i, o in rows:
        assert 8 <= o <= recs[i].n_slots - LEAD
    assert {o for _, o in uf.origin_rows(recs, 8, LEAD, 3, first=100)} >= {100}
    assert uf.origin_rows(recs, 8, 10_000, 4) == []


def test_examples_and_fit_lower_the_pinball_loss(smoke: Path, ckpt: Path) -> None:
    model = load_checkpoint(ckpt)
    train, val = load_split(smoke, "train"), load_split(smoke, "val")
    ex = uf.collect_examples(model, train, 4, LEAD, 0.5, 0, progress=False)
    ex_val = uf.collect_examples(model, val, 4, LEAD, 1.0, 1, progress=False)
    assert model.uncertainty_head is None  # the recorder is detached again
    assert ex.feat.shape == (len(ex), model.cfg.d_model)
    assert int(ex.lead.min()) >= 1 and int(ex.lead.max()) <= LEAD
    torch.manual_seed(0)
    head = QuantileHead(model.cfg.d_model, UncertaintyConfig(max_lead_slots=LEAD))
    before = uf.evaluate_head(head, ex_val)
    out = uf.fit_head(head, ex, ex_val, epochs=6, batch=256, progress=False)
    assert out["val_pinball"] < 0.8 * before
    temp = uf.fit_temperature(head, ex_val, grid=[0.5, 1.0, 2.0])
    assert temp["val_pinball"] == min(temp["grid"].values())
    assert head.cfg.temperature == temp["temperature"]


def test_support_and_plan_scores(smoke: Path) -> None:
    train, test = load_split(smoke, "train"), load_split(smoke, "test")
    s = uf.fit_support(train + test)
    for lo, hi in zip(s.low, s.high, strict=True):
        assert lo <= hi
    sc = plan_scores(s, test, 6, seed=0, warm=8)
    assert set(sc) == {"none", "random", "overpower", "site_off"}
    assert max(sc["none"]) < 0.05  # the maps' own parameters lie inside
    assert min(sc["overpower"]) > max(sc["random"])  # power above the training maximum


def test_train_cli_writes_a_head_the_checkpoint_loads(
    smoke: Path, ckpt: Path, tmp_path: Path
) -> None:
    out = tmp_path / "with-head"
    argv = ["--checkpoint", str(ckpt), "--data", str(smoke), "--out", str(out),
            "--logdir", str(tmp_path / "tb"), "--origins", "3", "--val-origins", "3",
            "--lead-slots", str(LEAD), "--epochs", "3", "--batch-size", "512",
            "--gate-plans", "4", "--no-progress"]  # fmt: skip
    assert train_main(argv) == 0
    model = load_checkpoint(out)
    head = model.uncertainty_head
    assert head is not None and head.support is not None
    assert head.support.threshold >= 0.01
    assert -1.0 < head.cfg.copula_rho < 1.0
    meta = json.loads((out / "uncertainty.json").read_text())
    assert meta["extra"]["config"]["origins"] == 3
    assert (tmp_path / "tb" / "uncertainty_config.json").is_file()
    assert any((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert not (ckpt / "uncertainty.json").exists()  # the source checkpoint is untouched
    with pytest.raises(ValueError, match="keep"):
        train_main(argv + ["--keep", "0"])


def test_seasonal_quantiles_copy_yesterday(smoke: Path) -> None:
    recs = load_split(smoke, "test")
    o = 120
    point, q = seasonal_quantiles(recs, [(0, o)], 8, recs[0].n_cells, np.array(QUANTILE_LEVELS))
    assert np.allclose(point[0], recs[0].traffic[o - 96 : o - 96 + 8])
    assert (np.diff(q, axis=-1) >= 0).all() and (q >= 0).all()
    with pytest.raises(ValueError, match="no day of history"):
        seasonal_quantiles(recs, [(0, 50)], 8, recs[0].n_cells, np.array(QUANTILE_LEVELS))


def test_calibration_section(smoke: Path, ckpt: Path, tmp_path: Path) -> None:
    recs = load_split(smoke, "test")
    settings = SectionSettings.resolve(lead_slots=LEAD, calib_origins=2)
    plain = resolve_models([f"wm={ckpt}"], "cpu")
    assert "skipped" in run_calibration(recs, plain, settings, progress=False)
    model = load_checkpoint(ckpt)
    model.attach_uncertainty(QuantileHead(model.cfg.d_model))
    res = run_calibration(recs, resolve_models([("wm", model)], "cpu"), settings, False)
    rows = res["models"]["wm"]
    assert set(rows) >= {"wm", SEASONAL_NAME}
    for name in ("wm", SEASONAL_NAME):
        allr = rows[name]["all"]
        assert allr["n"] > 0
        assert 0.0 <= allr["coverage50"] <= allr["coverage90"] <= 1.0
        assert allr["crps"] > 0 and allr["width90"] >= allr["width50"] >= 0
        assert sum(allr["pit_histogram"]) == pytest.approx(10.0)
        assert len(allr["coverage90_by_band"]) == len(allr["bands"])
    assert "gate" not in rows  # no support fitted


def test_sampled_rollout_rows(smoke: Path, ckpt: Path, tmp_path: Path) -> None:
    from worldmodel.evaluate import evaluate_models

    model = load_checkpoint(ckpt)
    model.attach_uncertainty(QuantileHead(model.cfg.d_model))

    def run(seed: int) -> dict:
        return evaluate_models(smoke, [("wm", model), "seasonal"], "test", True,
                               sections=("rollout",), progress=False, seed=seed,
                               sampled=True)  # fmt: skip

    a, b, c = run(0), run(0), run(1)
    per = a["rollout"]["metrics"]["urban-para"]
    assert set(per) == {"wm", "seasonal", "wm-sampled"}
    assert per["wm-sampled"]["mae"] != per["wm"]["mae"]  # a draw, not the point prediction
    assert b["rollout"]["metrics"]["urban-para"]["wm-sampled"] == per["wm-sampled"]  # seeded
    assert c["rollout"]["metrics"]["urban-para"]["wm-sampled"] != per["wm-sampled"]
    assert "wm-sampled" in a["rollout"]["improvement_jsd_pct"]
    assert a["models"]["wm-sampled"]["kind"] == "mobiwm"
    with pytest.raises(ValueError, match="quantile head"):
        evaluate_models(smoke, [f"wm={ckpt}"], "test", True, sections=("rollout",),
                        progress=False, sampled=True)  # fmt: skip
