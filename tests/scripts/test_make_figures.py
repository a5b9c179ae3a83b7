"""``scripts/make_figures.py`` on tiny settings: the heat map and the GIF of an untrained world
model, the learning curve of a synthetic TensorBoard log (no training)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from mobiwm_env.render import FRAME_H, FRAME_W  # noqa: E402
from tests.conftest import save_untrained_mobiwm  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_figures.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("make_figures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


mf = _load_script()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return str(save_untrained_mobiwm(tmp_path_factory.mktemp("ckpt") / "mobiwm-debug", 1500.0))


def test_heatmap_is_a_full_frame(tmp_path, checkpoint):
    out = mf.make_heatmap(tmp_path / "img" / "heatmap.png", steps=1, checkpoint=checkpoint)
    assert out == tmp_path / "img" / "heatmap.png"
    assert [p.name for p in out.parent.iterdir()] == ["heatmap.png"]  # no temp file left
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (FRAME_W, FRAME_H)
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.std() > 10  # not blank
    map_area = pixels[60:500, 20:480]
    assert len(np.unique(map_area.reshape(-1, 3), axis=0)) > 20  # a heat map, not one colour


def test_gif_has_one_frame_per_step(tmp_path, checkpoint):
    out = mf.make_gif(tmp_path / "episode.gif", steps=2, checkpoint=checkpoint)
    with Image.open(out) as im:
        assert im.format == "GIF" and im.size == (FRAME_W, FRAME_H)
        assert im.n_frames == 3  # reset + 2 steps


def _synthetic_run(run_dir: Path, trained_in: str) -> Path:
    from torch.utils.tensorboard import SummaryWriter

    rng = np.random.default_rng(0)
    with SummaryWriter(str(run_dir / "tb" / "ppo_1")) as w:  # SB3's layout: tb/<name>_<n>
        for i in range(1, 9):
            step = 768 * i
            w.add_scalar("rollout/ep_rew_mean", -5000.0 + 100.0 * i + rng.normal(0, 20), step)
            w.add_scalar("charts/l1_to_target", 0.8 - 0.02 * i, step)
    with SummaryWriter(str(run_dir / "tb" / "eval")) as w:  # not part of the curve
        w.add_scalar("eval/return", -3000.0, 6144)
    config = {"env_id": "MobiWM-LoadBalance-v0", "checkpoint": "fast", "scenario": "hex57",
              "num_envs": 16, "policy": "shared", "lambda_delta": 1.0, "lambda_unserved": 0.0,
              "seed": 0, "total_timesteps": 6144}  # fmt: skip
    record = {"config": config, "label": "PPO (test)", "trained_in": trained_in,
              "timesteps": 6144}  # fmt: skip
    (run_dir / "config.json").write_text(json.dumps(record))
    rows = [
        {"policy": spec, "label": label, "twin": {"return": {"mean": ret, "ci95": 50.0}}}
        for spec, label, ret in (("noop", "No-op", -5200.0), ("heuristic", "Heuristic", -4300.0),
                                 (str(run_dir), "PPO (test)", -4200.0))
    ]  # fmt: skip
    (run_dir / "eval.json").write_text(json.dumps({"runs": 4, "rows": rows}))
    return run_dir


def test_tensorboard_scalars_of_the_latest_training_run(tmp_path):
    run = _synthetic_run(tmp_path / "run", "MobiWM")
    assert mf.training_event_dir(run) == run / "tb" / "ppo_1"
    scalars = mf.read_scalars(mf.training_event_dir(run))
    steps, values = scalars[mf.RETURN_TAG]
    np.testing.assert_array_equal(steps, 768 * np.arange(1, 9))
    assert values[-1] > values[0]
    assert "eval/return" not in scalars


@pytest.mark.parametrize(("trained_in", "size"), [("MobiWM", (1100, 660)), ("twin", (880, 660))])
def test_learning_curve_png(tmp_path, trained_in, size):
    run = _synthetic_run(tmp_path / "run", trained_in)
    out = mf.make_learning_curve(run, tmp_path / "img" / "learning_curve.png")
    assert [p.name for p in out.parent.iterdir()] == ["learning_curve.png"]
    with Image.open(out) as im:
        im.verify()
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == size  # a side panel for the twin's returns
        assert np.asarray(im.convert("L")).std() > 10


def test_learning_curve_needs_logs(tmp_path):
    with pytest.raises(FileNotFoundError):
        mf.make_learning_curve(tmp_path, tmp_path / "curve.png")
    assert not (tmp_path / "curve.png").exists()


def test_table1_png(tmp_path):
    res = {
        "config": {"data": "data/test12"},
        "models": {"wm": {"kind": "mobiwm"}, "itr": {"kind": "itransformer-wm"}},
        "rollout": {"mae_by_day": {"wm": [250.0, 260.0, 270.0], "itr": [250.0, 300.0, 350.0]}},
        "counterfactual": {
            "metrics": {
                name: {k: {s: {"r2": r2}} for k, s in mf.PLAN_KINDS}
                for name, r2 in (("wm", 0.6), ("itr", 0.1))
            }
        },
    }
    src = tmp_path / "results.json"
    src.write_text(json.dumps(res))
    out = mf.make_table1(src, tmp_path / "img" / "table1.png")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (1210, 484)
        assert np.asarray(im.convert("L")).std() > 10
    with pytest.raises(FileNotFoundError, match="table1.sh"):
        mf.make_table1(tmp_path / "nope.json", tmp_path / "x.png")
    src.write_text(json.dumps({"rollout": {}}))
    with pytest.raises(ValueError, match="no rollout section"):
        mf.make_table1(src, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
