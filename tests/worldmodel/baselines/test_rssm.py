"""Tests of the DreamerV3-style RSSM baseline world model (``RSSMWorldModel``)."""

from __future__ import annotations

import pytest
import torch

from tests.worldmodel.baselines.helpers import make_batch
from worldmodel.baselines import (
    RSSMConfig,
    RSSMWorldModel,
    load_world_model,
    save_baseline,
    slice_window,
)
from worldmodel.model.normalize import masked_traffic_loss

H, P = 6, 3
SMALL = {"history": H, "horizon": P, "context": 3, "season": 3, "deter": 16, "hidden": 16}
SMALL.update(groups=4, classes=4)


def make_rssm(seed: int = 0, **cfg: object) -> RSSMWorldModel:
    torch.manual_seed(seed)
    model = RSSMWorldModel(RSSMConfig(**{**SMALL, **cfg}))  # type: ignore[arg-type]
    model.normalizer.set_stats(scale=20.0, mean=0.7, std=0.5)
    return model


def future_garbage(batch: dict[str, torch.Tensor], h: int) -> dict[str, torch.Tensor]:
    other = dict(batch)
    other["traffic"] = batch["traffic"].clone()
    other["traffic"][:, h:] = torch.rand_like(batch["traffic"][:, h:]) * 1e4
    return other


@pytest.mark.parametrize("season", [3, 0])
def test_shapes_zeros_and_determinism(season: int) -> None:
    model = make_rssm(season=season)
    batch = make_batch(t=H + P, seed=1)
    out = model.predict_batch(batch)
    assert out.shape == (2, P, 6)
    valid = batch["active"][:, H:] & batch["cell_mask"][:, None]
    assert (out[~valid] == 0).all() and (out[valid] > 0).any()
    assert torch.isfinite(out).all() and (out >= 0).all()
    assert torch.equal(out, model.predict_batch(batch))
    assert not model.training or model.aux_loss is None
    with pytest.raises(ValueError, match="T=8"):
        model(make_batch(t=H + P - 1))


def test_never_reads_future_traffic() -> None:
    model = make_rssm()
    k = 3
    batch = make_batch(t=H + k * P, seed=2)
    other = future_garbage(batch, H)
    out = model.rollout_batch(batch, k)
    assert out.shape == (2, k * P, 6)
    assert torch.equal(out, model.rollout_batch(other, k))
    first, first_other = slice_window(batch, 0, H + P), slice_window(other, 0, H + P)
    assert torch.equal(model.predict_batch(first), model.predict_batch(first_other))


def test_padded_cells_do_not_affect_real_ones() -> None:
    model = make_rssm().eval()
    batch = make_batch(n_cells=(4, 6), t=H + P, seed=3)
    noisy = {k: v.clone() for k, v in batch.items()}
    pad = ~batch["cell_mask"]  # map 0, cells 4 and 5
    t = H + P
    noisy["traffic"][pad[:, None].expand(-1, t, -1)] = 999.0
    noisy["actions"][pad[:, None, :, None].expand(-1, t, -1, 4)] = 45.0
    noisy["cell_xy"][pad] = 12345.0
    noisy["active"][pad[:, None].expand(-1, t, -1)] = True
    real = batch["cell_mask"][:, None].expand(-1, P, -1)
    with torch.no_grad():
        a, b = model(batch), model(noisy)
    assert torch.equal(a[real], b[real])
    single = {k: v[:1] for k, v in batch.items()}
    for key in ("traffic", "active", "actions"):
        single[key] = single[key][:, :, :4]
    single["cell_mask"], single["cell_xy"] = single["cell_mask"][:, :4], single["cell_xy"][:, :4]
    with torch.no_grad():
        alone = model(single)
    torch.testing.assert_close(alone[0], a[0, :, :4], rtol=1e-5, atol=1e-5)


def test_cells_of_a_map_interact() -> None:
    model = make_rssm()
    batch = make_batch(n_cells=(5, 5), t=H + P, seed=4, all_active=True)
    other = dict(batch, traffic=batch["traffic"].clone())
    other["traffic"][0, :H, 0] = 500.0  # cell 0 of map 0, history only
    a, b = model.predict_batch(batch), model.predict_batch(other)
    assert not torch.allclose(a[0, :, 1:], b[0, :, 1:])  # other cells of map 0 change
    assert torch.equal(a[1], b[1])  # the other map does not


def test_actions_matter_only_when_used() -> None:
    batch = make_batch(t=H + P, seed=5, all_active=True)
    other = dict(batch, actions=batch["actions"].clone())
    other["actions"][:, H:, :, 0] = 46.0  # future power only
    model = make_rssm()
    assert not torch.allclose(model.predict_batch(batch), model.predict_batch(other))
    static = make_rssm(use_actions=False)
    assert torch.equal(static.predict_batch(batch), static.predict_batch(other))


def test_training_terms() -> None:
    model = make_rssm(kl_dyn=0.5, kl_rep=0.1, free_bits=1.0).train()
    batch = make_batch(t=H + P, seed=6)
    torch.manual_seed(0)
    loss, m = model.loss(batch)
    assert {"recon", "kl_dyn", "kl_rep", "mse", "loss"} <= set(m)
    assert loss.requires_grad and torch.isfinite(loss)
    assert m["kl_dyn"] >= 1.0 and m["kl_rep"] >= 1.0 and m["recon"] > 0
    pred_loss = m["mse"]  # loss="mse": the plain prediction loss
    aux = float(loss.detach()) - pred_loss
    assert aux >= (0.5 + 0.1) * 1.0 - 1e-5
    assert aux == pytest.approx(m["recon"] + 0.5 * m["kl_dyn"] + 0.1 * m["kl_rep"], rel=1e-4)
    loss.backward()
    assert model.post[0].weight.grad is not None and model.prior[0].weight.grad is not None
    model.eval()
    with torch.no_grad():
        loss, m = model.loss(batch)
        plain, _ = masked_traffic_loss(model.normalizer, batch, model(batch))
    assert model.aux_loss is None and "recon" not in m
    assert float(loss) == pytest.approx(float(plain))


def test_few_steps_reduce_prediction_error() -> None:
    """Periodic traffic: the seasonal input makes the future predictable."""
    model = make_rssm(seed=1, deter=32, hidden=32)
    batch = make_batch(n_cells=(6, 6, 6, 6), t=H + P, seed=7, all_active=True)
    batch["traffic"] = batch["traffic"][:, torch.arange(H + P) % 3]  # period = season = 3
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.eval()
    with torch.no_grad():
        before = model.loss(batch)[1]["mse"]
    model.train()
    torch.manual_seed(0)
    for _ in range(30):
        loss, _ = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        after = model.loss(batch)[1]["mse"]
    assert after < 0.5 * before, (before, after)


def test_save_load_round_trip(tmp_path) -> None:
    model = make_rssm(seed=3, dropout=0.1)
    batch = make_batch(t=H + P, seed=8)
    save_baseline(model, tmp_path / "rssm")
    loaded = load_world_model(tmp_path / "rssm")
    assert isinstance(loaded, RSSMWorldModel) and loaded.cfg == model.cfg
    assert torch.equal(model.predict_batch(batch), loaded.predict_batch(batch))


def test_default_parameter_count() -> None:
    model = RSSMWorldModel()
    assert abs(model.n_parameters() - 363_831) <= 0.3 * 363_831, model.n_parameters()
    cfg = model.cfg
    assert (cfg.history, cfg.horizon, cfg.context, cfg.season) == (104, 4, 8, 96)


@pytest.mark.parametrize(
    ("cfg", "field"),
    [
        ({"history": 6, "season": 4, "context": 3}, "history"),
        ({"groups": 0}, "groups"),
        ({"classes": 0}, "classes"),
        ({"context": 0}, "context"),
        ({"free_bits": -1.0}, "free_bits"),
        ({"kl_dyn": -0.5}, "kl_dyn"),
        ({"season": -1}, "season"),
        ({"season": 2, "horizon": 4, "history": 12}, "season"),
        ({"unimix": 1.0}, "unimix"),
        ({"dropout": 1.5}, "dropout"),
        ({"deter": 8.5}, "deter"),
    ],
)
def test_bad_config(cfg: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        RSSMConfig(**cfg)
