"""Tests of the iTransformer world model (``ITransformerWM``)."""

from __future__ import annotations

import pytest
import torch

from tests.worldmodel.baselines.helpers import make_batch
from worldmodel.baselines import (
    ITransformerConfig,
    ITransformerWM,
    load_world_model,
    save_baseline,
    slice_window,
)

H, P = 8, 4
SMALL = {"history": H, "horizon": P, "d_model": 16, "heads": 2, "layers": 1, "ff": 32}


def make_model(seed: int = 0, **cfg: object) -> ITransformerWM:
    torch.manual_seed(seed)
    model = ITransformerWM(ITransformerConfig(**{**SMALL, **cfg}))  # type: ignore[arg-type]
    model.normalizer.set_stats(scale=20.0, mean=0.7, std=0.5)
    return model


def clone(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in batch.items()}


def test_shapes_zeros_and_finite() -> None:
    model = make_model()
    batch = make_batch(t=H + P)
    z = model(batch)
    assert z.shape == (2, P, 6)
    out = model.predict_batch(batch)
    assert out.shape == (2, P, 6)
    valid = batch["active"][:, H:] & batch["cell_mask"][:, None]
    assert (~valid).any() and (out[~valid] == 0).all()
    assert torch.isfinite(out).all() and (out >= 0).all()
    assert model.aux_loss is None
    with pytest.raises(ValueError, match="T=11"):
        model(make_batch(t=H + P - 1))


@pytest.mark.parametrize("revin", [True, False])
def test_never_reads_future_traffic(revin: bool) -> None:
    model = make_model(revin=revin)
    k = 3
    batch = make_batch(t=H + k * P, seed=2)
    garbage = clone(batch)
    garbage["traffic"][:, H:] = torch.rand_like(batch["traffic"][:, H:]) * 1e4
    out = model.rollout_batch(batch, k)
    assert out.shape == (2, k * P, 6)
    assert torch.equal(out, model.rollout_batch(garbage, k))
    first, first_g = slice_window(batch, 0, H + P), slice_window(garbage, 0, H + P)
    assert torch.equal(model.predict_batch(first), model.predict_batch(first_g))


def test_padded_cells_do_not_affect_real_ones() -> None:
    model = make_model(dropout=0.0).eval()
    batch = make_batch(n_cells=(4, 6), t=H + P)
    noisy = clone(batch)
    noisy["traffic"][0, :, 4:] = 999.0
    noisy["actions"][0, :, 4:] = 45.0
    noisy["cell_xy"][0, 4:] = 5000.0
    noisy["active"][0, :, 4:] = True
    real = batch["cell_mask"][:, None].expand(-1, P, -1)
    with torch.no_grad():
        a, b = model(batch), model(noisy)
    assert torch.equal(a[real], b[real])
    # the padded map alone, without padding, gives the same prediction
    alone = {k: v[:1] for k, v in batch.items()}
    for key in ("traffic", "active", "actions"):
        alone[key] = alone[key][:, :, :4]
    alone["cell_mask"] = alone["cell_mask"][:, :4]
    alone["cell_xy"] = alone["cell_xy"][:, :4]
    with torch.no_grad():
        single = model(alone)
    torch.testing.assert_close(single[0], a[0, :, :4], rtol=1e-5, atol=1e-5)


def test_cells_interact() -> None:
    model = make_model().eval()
    batch = make_batch(t=H + P, all_active=True)
    other = clone(batch)
    other["traffic"][0, :H, 0] = 200.0 * torch.rand(H)  # cell 0 of map 0
    a, b = model.predict_batch(batch), model.predict_batch(other)
    assert not torch.allclose(a[0, :, 1], b[0, :, 1])  # another cell of the same map
    assert torch.equal(a[1], b[1])  # maps do not interact


def test_future_actions() -> None:
    batch = make_batch(t=H + P, all_active=True)
    other = clone(batch)
    other["actions"][:, H:, :, 0] = 46.0  # future power only
    model = make_model()
    assert not torch.allclose(model.predict_batch(batch), model.predict_batch(other))
    static = make_model(use_actions=False)
    other["actions"][:, :, :, 1:] = 10.0  # all parameters, every slot
    assert torch.equal(static.predict_batch(batch), static.predict_batch(other))


def test_training_reduces_loss() -> None:
    model = make_model(seed=1, dropout=0.0)
    batch = make_batch(n_cells=(5, 6, 4), t=H + P, seed=3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss, metrics = model.loss(batch)
        assert torch.isfinite(loss) and metrics["n_targets"] > 0
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0], losses


def test_save_load_round_trip(tmp_path) -> None:  # noqa: ANN001
    model = make_model(seed=4, revin=False, layers=2)
    path = save_baseline(model, tmp_path / "itransformer")
    loaded = load_world_model(path)
    assert isinstance(loaded, ITransformerWM)
    assert loaded.cfg == model.cfg
    batch = make_batch(t=H + P)
    assert torch.equal(loaded.predict_batch(batch), model.predict_batch(batch))


def test_default_size_and_forward() -> None:
    cfg = ITransformerConfig()
    assert (cfg.history, cfg.horizon, cfg.d_model, cfg.heads, cfg.layers) == (104, 4, 128, 8, 2)
    model = ITransformerWM(cfg)
    model.normalizer.set_stats(scale=20.0, mean=0.7, std=0.5)
    assert abs(model.n_parameters() - 363_831) <= 0.3 * 363_831, model.n_parameters()
    out = model.predict_batch(make_batch(t=108))
    assert out.shape == (2, 4, 6) and torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("cfg", "field"),
    [
        ({"d_model": 30, "heads": 8}, "d_model"),
        ({"layers": 0}, "layers"),
        ({"dropout": 1.0}, "dropout"),
        ({"ff": 0}, "ff"),
        ({"revin_eps": 0.0}, "revin_eps"),
        ({"revin": 1}, "revin"),
    ],
)
def test_bad_config(cfg: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ITransformerConfig(**cfg)
    with pytest.raises(ValueError, match=field):
        ITransformerWM(**cfg)
