"""Tests of the baseline world models (persistence, seasonal naive, GRU) and their interface."""

from __future__ import annotations

import json

import pytest
import torch

from tests.worldmodel.baselines.helpers import make_batch
from worldmodel.baselines import (
    BASELINES,
    GRUConfig,
    GRUWorldModel,
    MobiWMAdapter,
    Persistence,
    SeasonalNaive,
    WorldModel,
    align_batch,
    as_world_model,
    build_baseline,
    load_baseline,
    load_world_model,
    save_baseline,
    save_world_model,
    slice_window,
)


def make_gru(seed: int = 0, **cfg: object) -> GRUWorldModel:
    torch.manual_seed(seed)
    model = GRUWorldModel(GRUConfig(hidden=16), **cfg)
    model.normalizer.set_stats(scale=20.0, mean=0.7, std=0.5)
    return model


def with_future_traffic_changed(batch: dict[str, torch.Tensor], h: int) -> dict:
    other = dict(batch)
    other["traffic"] = batch["traffic"].clone()
    other["traffic"][:, h:] = torch.rand_like(batch["traffic"][:, h:]) * 1e4
    return other


# ---------------------------------------------------------------------- naive baselines
def test_persistence_exact() -> None:
    h, p = 3, 4
    batch = make_batch(t=h + p)
    out = Persistence(history=h, horizon=p).predict_batch(batch)
    valid = batch["active"][:, h:] & batch["cell_mask"][:, None]
    want = torch.where(valid, batch["traffic"][:, h - 1 : h].expand(-1, p, -1), 0.0)
    assert out.shape == (2, p, 6)
    assert torch.equal(out, want)
    assert (out[~batch["cell_mask"][:, None].expand_as(out)] == 0).all()


def test_seasonal_exact_and_beyond_one_season() -> None:
    batch = make_batch(t=96 + 4, all_active=True)
    out = SeasonalNaive(horizon=4).predict_batch(batch)
    real = batch["cell_mask"][:, None]
    assert torch.equal(out, torch.where(real, batch["traffic"][:, :4], 0.0))
    # horizon longer than the season: reuses its own predictions
    s, h, p = 3, 4, 7
    batch = make_batch(t=h + p, all_active=True, seed=1)
    out = SeasonalNaive(horizon=p, season=s, history=h).predict_batch(batch)
    tr = batch["traffic"]
    want = [tr[:, 1], tr[:, 2], tr[:, 3], tr[:, 1], tr[:, 2], tr[:, 3], tr[:, 1]]
    assert torch.equal(out, torch.where(real, torch.stack(want, 1), 0.0))
    with pytest.raises(ValueError, match="season"):
        SeasonalNaive(horizon=4, season=96, history=8)


@pytest.mark.parametrize("name", ["persistence", "seasonal", "gru"])
def test_rollout_never_reads_future_traffic(name: str) -> None:
    cfg = {"gru": {"history": 5, "horizon": 3, "hidden": 8}, "seasonal": {"horizon": 3}}
    model = build_baseline(name, **cfg.get(name, {"history": 5, "horizon": 3}))
    if isinstance(model, GRUWorldModel):
        model.normalizer.set_stats(scale=20.0, mean=0.7, std=0.5)
    k = 4
    batch = make_batch(t=model.history + k * model.horizon, seed=2)
    out = model.rollout_batch(batch, k)
    assert out.shape == (2, k * model.horizon, 6)
    other = with_future_traffic_changed(batch, model.history)
    assert torch.equal(out, model.rollout_batch(other, k))
    first = slice_window(batch, 0, model.history + model.horizon)
    first_other = slice_window(other, 0, model.history + model.horizon)
    assert torch.equal(model.predict_batch(first), model.predict_batch(first_other))
    inactive = ~(batch["active"][:, model.history :] & batch["cell_mask"][:, None])
    assert (out[inactive] == 0).all()
    assert (out >= 0).all()


def test_persistence_rollout_feeds_back() -> None:
    h, p, k = 2, 3, 3
    batch = make_batch(t=h + k * p, all_active=True)
    out = Persistence(history=h, horizon=p).rollout_batch(batch, k)
    assert torch.equal(out, batch["traffic"][:, h - 1 : h].expand(-1, k * p, -1))
    with pytest.raises(ValueError, match="expected history"):
        Persistence(history=h, horizon=p).rollout_batch(batch, k + 1)


def test_registry_and_protocol() -> None:
    assert set(BASELINES) == {"persistence", "seasonal", "gru", "itransformer", "rssm", "tdmpc"}
    for name in BASELINES:
        assert isinstance(build_baseline(name), WorldModel)
    assert build_baseline("gru", hidden=12).cfg.hidden == 12
    with pytest.raises(ValueError, match="unknown baseline"):
        build_baseline("lstm")
    with pytest.raises(ValueError, match="hidden_size"):
        build_baseline("gru", hidden_size=3)
    with pytest.raises(ValueError, match="bad keyword"):
        build_baseline("persistence", season=3)


def test_align_batch_crops_leading_slots() -> None:
    batch = make_batch(t=20)
    batch["start"] = torch.tensor([5, 7])
    model = Persistence(history=2, horizon=3)
    sub = align_batch(batch, model, n_chunks=2)
    assert sub["traffic"].shape[1] == 8
    assert torch.equal(sub["traffic"], batch["traffic"][:, 12:])
    assert torch.equal(sub["start"], torch.tensor([17, 19]))
    with pytest.raises(ValueError, match="needs"):
        align_batch(batch, model, n_chunks=7)


# ---------------------------------------------------------------------- GRU
def test_gru_shapes_and_loss() -> None:
    model = make_gru()
    batch = make_batch()
    z = model(batch)
    assert z.shape == (2, 4, 6)
    loss, m = model.loss(batch)
    assert loss.requires_grad and torch.isfinite(loss)
    assert {"loss", "mse", "mae", "mae_mb", "n_targets"} <= set(m)
    out = model.predict_batch(batch)
    valid = batch["active"][:, 8:] & batch["cell_mask"][:, None]
    assert (out[~valid] == 0).all() and (out[valid] > 0).all()
    with pytest.raises(ValueError, match="T=11"):
        model(make_batch(t=11))


def test_gru_padding_invariance() -> None:
    model = make_gru().eval()
    batch = make_batch(n_cells=(3, 6))
    noisy = {k: v.clone() for k, v in batch.items()}
    pad = ~batch["cell_mask"]  # map 0 cells 3..5
    noisy["traffic"][:, :, 3:][pad[:, None, 3:].expand(-1, 12, -1)] = 999.0
    noisy["actions"][pad[:, None, :, None].expand(-1, 12, -1, 4)] = 45.0
    real = batch["cell_mask"][:, None].expand(-1, 4, -1)
    with torch.no_grad():
        a, b = model(batch), model(noisy)
    assert torch.equal(a[real], b[real])
    single = {k: v[:1] for k, v in batch.items()}
    for key in ("traffic", "active"):
        single[key] = single[key][:, :, :3]
    single["actions"] = single["actions"][:, :, :3]
    single["cell_mask"] = single["cell_mask"][:, :3]
    with torch.no_grad():
        alone = model(single)
    torch.testing.assert_close(alone[0], a[0, :, :3], rtol=1e-5, atol=1e-6)


def test_gru_future_actions_change_prediction() -> None:
    model = make_gru()
    batch = make_batch(all_active=True)
    other = dict(batch)
    other["actions"] = batch["actions"].clone()
    other["actions"][:, 8:, :, 0] = 46.0  # future power only
    assert not torch.allclose(model.predict_batch(batch), model.predict_batch(other))
    static = make_gru(use_actions=False)
    assert torch.equal(static.predict_batch(batch), static.predict_batch(other))


def _action_task(seed: int, b: int = 8, n: int = 5, h: int = 4, p: int = 2) -> dict:
    """Traffic is a function of the cell's current power only: 10·exp((power − 38) / 6)."""
    batch = make_batch(n_cells=[n] * b, t=h + p, seed=seed, all_active=True)
    batch["traffic"] = 10.0 * torch.exp((batch["actions"][..., 0] - 38.0) / 6.0)
    return batch


def test_gru_learns_action_to_traffic() -> None:
    torch.manual_seed(0)
    model = GRUWorldModel(history=4, horizon=2, hidden=24)
    model.normalizer.fit(_action_task(100)["traffic"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    test = _action_task(999)
    with torch.no_grad():
        before = float(model.loss(test)[0])
    for step in range(60):
        loss, _ = model.loss(_action_task(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(model.loss(test)[0])
    assert after < 0.1 * before, (before, after)


def test_gru_save_load_round_trip(tmp_path) -> None:
    model = make_gru(seed=3, layers=2, dropout=0.1)
    batch = make_batch()
    path = save_baseline(model, tmp_path / "gru", extra={"note": "test"})
    loaded = load_baseline(path)
    assert isinstance(loaded, GRUWorldModel) and not loaded.training
    assert loaded.cfg == model.cfg
    assert torch.equal(loaded.predict_batch(batch), model.predict_batch(batch))
    assert torch.equal(
        loaded.rollout_batch(make_batch(t=16), 2), model.rollout_batch(make_batch(t=16), 2)
    )
    assert isinstance(load_world_model(path / "config.json"), GRUWorldModel)
    meta = json.loads((path / "config.json").read_text())
    assert meta["model_class"] == "gru" and meta["extra"] == {"note": "test"}
    assert save_world_model(model, tmp_path / "gru2").is_dir()

    meta["model_config"]["kernel"] = 3
    (path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="unknown keys \\['kernel'\\]"):
        load_baseline(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt JSON"):
        load_baseline(path)
    with pytest.raises(FileNotFoundError):
        load_baseline(tmp_path / "missing")
    (tmp_path / "gru2" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt safetensors"):
        load_baseline(tmp_path / "gru2")


def _edit_config(path, edit) -> None:  # noqa: ANN001
    meta = json.loads((path / "config.json").read_text())
    edit(meta)
    (path / "config.json").write_text(json.dumps(meta))


def _edit_tensors(path, edit) -> None:  # noqa: ANN001
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(path / "model.safetensors"))


@pytest.mark.parametrize(
    ("edit_config", "edit_tensors", "message"),
    [
        (lambda m: m.update(format_version=2), None, "format_version 2 is not supported"),
        (lambda m: m.update(format="other"), None, "'format' is 'other'"),
        (lambda m: m.update(model_class="lstm"), None, "unknown model_class 'lstm'"),
        (lambda m: m["model_config"].pop("hidden"), None, r"missing keys \['hidden'\]"),
        (lambda m: m["model_config"].update(hidden="16"), None, "invalid model_config"),
        (lambda m: m["model_config"].update(hidden=8), None, r"shape/dtype mismatch\): "),
        (lambda m: m["normalizer"].update(std=2.0), None, "normaliser std is 0.5"),
        (lambda m: m["normalizer"].update(mean="x"), None, "normaliser mean"),
        (None, lambda t: t.pop("head.weight"), r"missing \['head.weight'\], unexpected \[\]"),
        (None, lambda t: t.update(x=torch.zeros(1)), r"unexpected \['x'\]"),
        (None, lambda t: t["head.weight"].fill_(float("nan")), r"non-finite values in \['head"),
    ],
)
def test_corrupt_baseline_checkpoint_names_the_problem(
    tmp_path,
    edit_config,
    edit_tensors,
    message: str,  # noqa: ANN001
) -> None:
    path = save_baseline(make_gru(seed=1), tmp_path / "gru")
    meta = json.loads((path / "config.json").read_text())
    assert list(meta)[:4] == ["format", "format_version", "model_class", "model_config"]
    if edit_config is not None:
        _edit_config(path, edit_config)
    if edit_tensors is not None:
        _edit_tensors(path, edit_tensors)
    with pytest.raises(ValueError, match=message) as err:
        load_baseline(path)
    assert str(path) in str(err.value)


def test_load_world_model_rejects_unknown_format(tmp_path) -> None:
    path = save_baseline(make_gru(), tmp_path / "gru")
    _edit_config(path, lambda m: m.update(format="mystery"))
    with pytest.raises(ValueError, match="unknown checkpoint format 'mystery'"):
        load_world_model(path)
    (path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object, got list"):
        load_world_model(path / "model.safetensors")
    (path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="checkpoint config not found"):
        load_world_model(path)


# ---------------------------------------------------------------------- MobiWM in the same interface
def test_mobiwm_adapter_matches_forward() -> None:
    from worldmodel.model import MobiWM, preset

    torch.manual_seed(0)
    model = MobiWM(preset("debug", history=4, horizon=2, ctx_grid=4, facility_px=16))
    model.normalizer.set_stats(scale=20.0, mean=0.7, std=0.5)
    wm = as_world_model(model)
    assert isinstance(wm, MobiWMAdapter) and isinstance(wm, WorldModel)
    batch = make_batch(t=6)
    model.eval()
    with torch.no_grad():
        want = model.normalizer.denormalize(model(batch))
    valid = batch["active"][:, 4:] & batch["cell_mask"][:, None]
    torch.testing.assert_close(wm.predict_batch(batch), torch.where(valid, want, 0.0))
    long = make_batch(t=10, seed=4)
    out = wm.rollout_batch(long, 3)
    assert out.shape == (2, 6, 6)
    assert torch.equal(out, wm.rollout_batch(with_future_traffic_changed(long, 4), 3))
