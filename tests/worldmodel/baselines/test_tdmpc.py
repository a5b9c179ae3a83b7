"""Tests of the TD-MPC2-style latent dynamics baseline (``TDMPCWorldModel``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.worldmodel.baselines.helpers import make_batch
from worldmodel.baselines import TDMPCConfig, TDMPCWorldModel, load_world_model, save_baseline
from worldmodel.baselines.tdmpc import SimNorm, simnorm
from worldmodel.model.normalize import masked_traffic_loss

H, P = 6, 3
SMALL = {"history": H, "horizon": P, "context": 3, "season": 3, "latent": 16, "hidden": 32}


def make_model(seed: int = 0, **cfg: object) -> TDMPCWorldModel:
    """Small model with a random (not zero-initialised) decoder head, so every input shows."""
    torch.manual_seed(seed)
    model = TDMPCWorldModel(TDMPCConfig(**{**SMALL, **cfg}))  # type: ignore[arg-type]
    model.normalizer.set_stats(scale=20.0, mean=0.7, std=0.5)
    head = model.decoder[-1]
    assert isinstance(head, nn.Linear)
    nn.init.normal_(head.weight, std=0.3)
    return model


def future_garbled(batch: dict[str, torch.Tensor], h: int) -> dict[str, torch.Tensor]:
    other = dict(batch)
    other["traffic"] = batch["traffic"].clone()
    other["traffic"][:, h:] = torch.rand_like(batch["traffic"][:, h:]) * 1e4
    return other


def test_shapes_zero_at_padded_and_inactive() -> None:
    model = make_model()
    batch = make_batch(n_cells=(4, 6), t=H + P, seed=1)
    out = model.predict_batch(batch)
    assert out.shape == (2, P, 6)
    assert torch.isfinite(out).all() and (out >= 0).all()
    valid = batch["active"][:, H:] & batch["cell_mask"][:, None]
    assert (out[~valid] == 0).all()
    assert (out[valid] > 0).all()
    assert not batch["cell_mask"][0, 4:].any() and (out[0, :, 4:] == 0).all()


def test_simnorm_groups_sum_to_one() -> None:
    x = torch.randn(5, 7, 24) * 3
    y = simnorm(x, 8)
    assert y.shape == x.shape and (y > 0).all()
    sums = y.reshape(5, 7, 3, 8).sum(-1)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-6)
    assert torch.equal(SimNorm(8)(x), y)
    # the latents of the model are SimNorm'd too
    model = make_model(latent=16, simnorm_dim=4).eval()
    batch = make_batch(t=H + P)
    x = model.map_inputs(batch)
    with torch.no_grad():
        z = model.encoder(model.observe(x.z_hist, x, [H - 1]))
    assert torch.allclose(z.reshape(*z.shape[:-1], 4, 4).sum(-1), torch.ones(1), atol=1e-5)


@pytest.mark.parametrize("season", [3, 2, 0])
def test_never_reads_future_traffic(season: int) -> None:
    model = make_model(season=season)
    batch = make_batch(t=H + P, seed=2)
    assert torch.equal(model.predict_batch(batch), model.predict_batch(future_garbled(batch, H)))
    k = 3
    long = make_batch(t=H + k * P, seed=3)
    out = model.rollout_batch(long, k)
    assert out.shape == (2, k * P, 6)
    assert torch.equal(out, model.rollout_batch(future_garbled(long, H), k))


def test_padded_cells_do_not_affect_real_ones() -> None:
    model = make_model()
    batch = make_batch(n_cells=(4, 6), t=H + P, seed=4)
    other = {k: v.clone() for k, v in batch.items()}
    other["traffic"][0, :, 4:] = 1e3
    other["active"][0, :, 4:] = True
    other["actions"][0, :, 4:] = torch.tensor([46.0, 90.0, 15.0, 12.0])
    other["cell_xy"][0, 4:] = 777.0
    a, b = model.predict_batch(batch), model.predict_batch(other)
    assert torch.allclose(a[:, :, :4], b[:, :, :4], atol=1e-6)
    assert torch.equal(a[1], b[1])
    assert (b[0, :, 4:] == 0).all()


def test_cells_interact_through_the_message() -> None:
    model = make_model()
    batch = make_batch(n_cells=(6, 6), t=H + P, seed=5, all_active=True)
    other = {k: v.clone() for k, v in batch.items()}
    other["traffic"][0, :H, 0] *= 5.0
    a, b = model.predict_batch(batch), model.predict_batch(other)
    assert (a[0, :, 1:] - b[0, :, 1:]).abs().max() > 1e-4
    assert torch.equal(a[1], b[1])  # other maps untouched


def test_actions_matter_only_with_use_actions() -> None:
    batch = make_batch(t=H + P, seed=6, all_active=True)
    other = {k: v.clone() for k, v in batch.items()}
    other["actions"][:, H:] = torch.tensor([30.0, 10.0, 0.0, 0.0])
    model = make_model()
    assert (model.predict_batch(batch) - model.predict_batch(other)).abs().max() > 1e-4
    blind = make_model(use_actions=False)
    assert torch.equal(blind.predict_batch(batch), blind.predict_batch(other))
    off = {k: v.clone() for k, v in batch.items()}
    off["active"][0, H:, 0] = False
    assert blind.predict_batch(off)[0, :, 0].eq(0).all()


def test_aux_loss_in_train_mode_only() -> None:
    model = make_model()
    batch = make_batch(t=H + P, seed=7)
    model.train()
    loss, metrics = model.loss(batch)
    assert {"consistency", "recon"} <= set(metrics)
    assert metrics["consistency"] > 0 and metrics["recon"] > 0
    plain, _ = masked_traffic_loss(model.normalizer, batch, model(batch))
    assert float(loss.detach()) > float(plain.detach()) + 1e-6
    assert loss.requires_grad
    model.eval()
    loss, metrics = model.loss(batch)
    assert model.aux_loss is None and "consistency" not in metrics
    with torch.no_grad():
        plain, _ = masked_traffic_loss(model.normalizer, batch, model(batch))
    assert torch.allclose(loss, plain)


def test_training_reduces_prediction_error() -> None:
    model = make_model(seed=1)
    batch = make_batch(t=H + P, seed=8)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.eval()
    before = model.loss(batch)[1]["mse"]
    model.train()
    for _ in range(30):
        opt.zero_grad()
        loss, _ = model.loss(batch)
        loss.backward()
        opt.step()
    model.eval()
    after = model.loss(batch)[1]["mse"]
    assert after < 0.5 * before


def test_save_and_load_roundtrip(tmp_path) -> None:
    model = make_model(seed=2)
    batch = make_batch(t=H + P, seed=9)
    save_baseline(model, tmp_path / "tdmpc")
    loaded = load_world_model(tmp_path / "tdmpc")
    assert isinstance(loaded, TDMPCWorldModel)
    assert loaded.cfg == model.cfg
    assert torch.equal(loaded.predict_batch(batch), model.predict_batch(batch))


def test_default_parameter_count_near_mobiwm_s() -> None:
    model = TDMPCWorldModel()
    assert model.cfg.history == 104 and model.cfg.season == 96 and model.cfg.latent == 128
    assert 0.7 * 363_831 <= model.n_parameters() <= 1.3 * 363_831


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"history": 5}, "history"),
        ({"latent": 20, "simnorm_dim": 8}, "latent"),
        ({"rho": 0.0}, "rho"),
        ({"rho": 1.5}, "rho"),
        ({"season": -1}, "season"),
        ({"context": 0}, "context"),
        ({"dropout": 1.0}, "dropout"),
        ({"consistency_weight": -1.0}, "consistency_weight"),
        ({"hidden": 2.5}, "hidden"),
    ],
)
def test_bad_config_raises(overrides: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        TDMPCConfig(**{**SMALL, **overrides})
