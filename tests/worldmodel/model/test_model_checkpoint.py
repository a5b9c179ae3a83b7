"""Checkpoints: safetensors + JSON round trip, and clear errors on every kind of mismatch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.worldmodel.model.conftest import make_batch, make_model
from worldmodel.model import MobiWM, load_checkpoint, read_checkpoint_config, save_checkpoint
from worldmodel.model.checkpoint import CONFIG_FILE, LEGACY_DEFAULTS, WEIGHTS_FILE
from worldmodel.model.config import preset

EXTRA = {"data": {"maps": 3, "dataset": "para"}, "metrics": {"val/mae": 1.5}, "command": "x"}


@pytest.fixture
def saved(tmp_path: Path) -> tuple[MobiWM, Path]:
    model = make_model(seed=3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # not the init: a round trip must restore weights
    model.normalizer.set_stats(scale=12.5, mean=0.3, std=0.9)
    path = save_checkpoint(model, tmp_path / "ckpt", extra=EXTRA)
    return model, path


def test_round_trip_gives_identical_outputs(saved: tuple[MobiWM, Path]) -> None:
    model, path = saved
    assert sorted(p.name for p in path.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    loaded = load_checkpoint(path)
    assert loaded.cfg == model.cfg and not loaded.training
    assert loaded.normalizer.stats() == pytest.approx(model.normalizer.stats())
    assert loaded.normalizer.is_fitted
    batch = make_batch(seed=11)
    with torch.no_grad():
        assert torch.equal(loaded(batch), model.eval()(batch))
    meta = read_checkpoint_config(path / CONFIG_FILE)  # a file inside the directory works too
    assert meta["extra"] == EXTRA and meta["n_parameters"] == model.n_parameters()
    assert load_checkpoint(path / WEIGHTS_FILE).cfg == model.cfg


def test_ablation_round_trip(tmp_path: Path) -> None:
    model = make_model(use_actions=False, use_od=False, use_gates=False)
    loaded = load_checkpoint(save_checkpoint(model, tmp_path))
    assert loaded.cfg == model.cfg and loaded.flow_tok is None and loaded.action_enc is None


def _edit_json(path: Path, edit) -> None:  # noqa: ANN001
    meta = json.loads((path / CONFIG_FILE).read_text())
    edit(meta)
    (path / CONFIG_FILE).write_text(json.dumps(meta))


def test_corrupt_json(saved: tuple[MobiWM, Path]) -> None:
    _, path = saved
    (path / CONFIG_FILE).write_text('{"format": "mobiwm-checkpoint", ')
    with pytest.raises(ValueError, match=r"config\.json: corrupt JSON"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(format_version=99), "format_version 99"),
        (lambda m: m.update(format="other"), "'format'"),
        (lambda m: m["model_config"].update(n_layers=3), r"unknown keys \['n_layers'\]"),
        (lambda m: m["model_config"].pop("d_model"), r"missing keys \['d_model'\]"),
        (lambda m: m["model_config"].update(d_model="16"), "d_model must be int"),
        (lambda m: m["model_config"].update(n_heads=3), "invalid model_config"),
        (lambda m: m.update(normalizer={"scale": 1.0}), "normalizer"),
        (lambda m: m["normalizer"].update(mean=5.0), "normaliser mean"),
    ],
)
def test_config_mismatch(saved: tuple[MobiWM, Path], edit, message: str) -> None:  # noqa: ANN001
    _, path = saved
    _edit_json(path, edit)
    with pytest.raises(ValueError, match=message) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_architecture_mismatch_names_the_tensors(saved: tuple[MobiWM, Path]) -> None:
    _, path = saved
    _edit_json(path, lambda m: m["model_config"].update(d_model=24))
    with pytest.raises(
        ValueError, match=r"shape/dtype mismatch\): future_query: file \[16\]"
    ) as err:
        load_checkpoint(path)
    assert WEIGHTS_FILE in str(err.value)


def test_wrong_tensor_shape(saved: tuple[MobiWM, Path]) -> None:
    _, path = saved
    tensors = load_file(str(path / WEIGHTS_FILE))
    tensors["head.weight"] = torch.zeros(1, 17)
    save_file(tensors, str(path / WEIGHTS_FILE))
    with pytest.raises(ValueError, match=r"head\.weight: file \[1, 17\]"):
        load_checkpoint(path)


def test_missing_and_unexpected_tensors(saved: tuple[MobiWM, Path]) -> None:
    _, path = saved
    tensors = load_file(str(path / WEIGHTS_FILE))
    del tensors["normalizer.mean"]
    tensors["extra.weight"] = torch.zeros(2)
    save_file(tensors, str(path / WEIGHTS_FILE))
    with pytest.raises(ValueError, match=r"missing \['normalizer.mean'\], unexpected \['extra"):
        load_checkpoint(path)


def test_corrupt_safetensors(saved: tuple[MobiWM, Path]) -> None:
    _, path = saved
    data = (path / WEIGHTS_FILE).read_bytes()
    (path / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt safetensors"):
        load_checkpoint(path)
    (path / WEIGHTS_FILE).write_bytes(b"\x00" * 7)
    with pytest.raises(ValueError, match="corrupt safetensors"):
        load_checkpoint(path)


def test_missing_files(tmp_path: Path, saved: tuple[MobiWM, Path]) -> None:
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nowhere")
    _, path = saved
    (path / WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=WEIGHTS_FILE):
        load_checkpoint(path)


def test_extra_must_be_json(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="JSON-serialisable"):
        save_checkpoint(make_model(), tmp_path, extra={"bad": object()})
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_overwrite_is_atomic_and_leaves_no_temp_files(saved: tuple[MobiWM, Path]) -> None:
    model, path = saved
    save_checkpoint(model, path, extra={"again": True})
    assert sorted(p.name for p in path.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    assert read_checkpoint_config(path)["extra"] == {"again": True}


def test_no_pickle_in_model_code() -> None:
    root = Path(__file__).resolve().parents[3] / "worldmodel" / "model"
    for src in root.glob("*.py"):
        text = src.read_text()
        for banned in ("torch.save", "torch.load", "import pickle"):
            assert banned not in text, f"{src.name} uses {banned}"


def test_checkpoint_from_before_a_feature_loads_without_it(tmp_path: Path) -> None:
    """A checkpoint written before ``action_deltas`` / ``antenna_bias`` existed lacks those
    keys and the tensors of ``antenna_bias``; it loads as the model it was (features off)."""
    torch.manual_seed(0)
    old = MobiWM(preset("debug", action_deltas=False, antenna_bias=False))
    path = save_checkpoint(old, tmp_path / "old")
    meta = json.loads((path / "config.json").read_text())
    for key in LEGACY_DEFAULTS:
        del meta["model_config"][key]
    (path / "config.json").write_text(json.dumps(meta))
    loaded = load_checkpoint(path)
    assert not loaded.cfg.action_deltas and not loaded.cfg.antenna_bias
    for k, v in old.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
