"""MobiWM forward / loss: shapes, padding invariance, conditioning, ablations, gradients."""

from __future__ import annotations

import pytest
import torch

from tests.worldmodel.model.conftest import make_batch, make_model, with_padding_garbage
from worldmodel.model import MobiWM, preset
from worldmodel.model.layers import Gate

H, P = 8, 4
ABLATIONS = ("use_trn", "use_spe", "use_gates", "use_facility", "use_od", "use_poi", "use_actions")


def _real(out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return out[batch["cell_mask"][:, None, :].expand_as(out)]


def test_shapes_and_loss() -> None:
    model = make_model()
    batch = make_batch(n_cells=(5, 7, 3))
    out = model(batch)
    assert out.shape == (3, P, 7) and out.dtype == torch.float32 and torch.isfinite(out).all()
    loss, metrics = model.loss(batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert set(metrics) == {"loss", "mse", "mae", "mae_mb", "n_targets"}
    valid = batch["active"][:, H:] & batch["cell_mask"][:, None]
    assert metrics["n_targets"] == float(valid.sum())


def test_padded_cells_never_influence_real_cells() -> None:
    model = make_model().eval()
    batch = make_batch(n_cells=(5, 7), seed=3)
    ref = model(batch)
    garbage = with_padding_garbage(batch)
    pad = ~garbage["cell_mask"]  # [B, N]
    out = model(garbage)
    assert torch.equal(_real(out, batch), _real(ref, batch))
    # padded outputs hold the normalised zero-traffic value
    zero = model.normalizer.zero_level()
    assert torch.equal(out[pad[:, None, :].expand_as(out)], zero.expand(int(pad.sum()) * P))


def test_single_map_equals_its_run_in_a_padded_batch() -> None:
    model = make_model().eval()
    batch = make_batch(n_cells=(4, 9), seed=5)
    out = model(batch)
    single = {}
    for k, v in batch.items():
        v = v[:1]
        if k in ("traffic", "active") or k == "actions":
            v = v[:, :, :4]
        elif k in ("cell_mask", "cell_xy"):
            v = v[:, :4]
        single[k] = v
    alone = model(single)
    torch.testing.assert_close(alone, out[:1, :, :4], atol=1e-5, rtol=0)


def test_future_traffic_is_not_read() -> None:
    model = make_model().eval()
    batch = make_batch(seed=2)
    ref = model(batch)
    leaked = dict(batch, traffic=batch["traffic"].clone())
    leaked["traffic"][:, H:] = 1e5
    assert torch.equal(model(leaked), ref)


def test_inactive_and_padded_cells_get_zero_level() -> None:
    model = make_model().eval()
    batch = make_batch(seed=4)
    out = model(batch)
    off = ~(batch["active"][:, H:] & batch["cell_mask"][:, None])
    assert off.any() and (~off).any()
    assert torch.equal(out[off], model.normalizer.zero_level().expand(int(off.sum())))


@pytest.mark.parametrize("use_actions", [True, False])
def test_future_actions_condition_the_prediction(use_actions: bool) -> None:
    model = make_model(use_actions=use_actions).eval()
    batch = make_batch(seed=6, all_active=True)
    ref = model(batch)
    changed = dict(batch, actions=batch["actions"].clone())
    changed["actions"][:, H:, :, 0] = 30.0 + 46.0 - changed["actions"][:, H:, :, 0]  # power
    changed["actions"][:, H:, :, 1] += 120.0  # azimuth
    out = model(changed)
    if use_actions:
        assert (_real(out, batch) - _real(ref, batch)).abs().max() > 1e-4
    else:  # Static-MobiWM: no action can change the prediction, history actions included
        changed["actions"][:, :H] += 3.0
        assert torch.equal(model(changed), ref)
        assert torch.equal(out, ref)


@pytest.mark.parametrize(
    ("key", "switch"), [("poi", "use_poi"), ("od", "use_od"), ("facility", "use_facility")]
)
def test_context_modalities_condition_the_prediction(key: str, switch: str) -> None:
    batch = make_batch(seed=7)
    changed = dict(batch, **{key: batch[key].flip(-1) * 2.0 + 1.0})
    on = make_model().eval()
    assert (on(changed) - on(batch)).abs().max() > 1e-5
    off = make_model(**{switch: False}).eval()
    assert torch.equal(off(changed), off(batch))
    del changed[key]
    assert torch.equal(off(changed), off(batch))  # the key is not needed at all


@pytest.mark.parametrize("switch", [*ABLATIONS, "all"])
def test_each_ablation_builds_and_runs(switch: str) -> None:
    overrides = {s: False for s in ABLATIONS} if switch == "all" else {switch: False}
    model = make_model(**overrides)
    batch = make_batch(seed=8)
    loss, _ = model.loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.n_parameters() < make_model().n_parameters()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"unused parameters with {overrides}: {no_grad}"


def test_gates_start_negative() -> None:
    model = make_model()
    gates = [m for m in model.modules() if isinstance(m, Gate)]
    assert len(gates) == 4
    for g in gates:
        assert g.gate is not None and float(g.gate.detach()) == model.cfg.gate_init < 0
        assert torch.sigmoid(g.gate) < 0.5
    ungated = make_model(use_gates=False)
    assert all(m.gate is None for m in ungated.modules() if isinstance(m, Gate))


def test_gradients_reach_every_parameter() -> None:
    model = make_model()
    loss, _ = model.loss(make_batch(seed=9))
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not (p.grad != 0).any()]
    assert not dead, f"parameters without gradient: {dead}"


def test_dropout_only_in_training() -> None:
    torch.manual_seed(0)
    model = MobiWM(preset("debug", dropout=0.3))
    batch = make_batch(seed=10)
    model.eval()
    assert torch.equal(model(batch), model(batch))
    model.train()
    assert not torch.equal(model(batch), model(batch))


def test_batch_validation() -> None:
    model = make_model()
    batch = make_batch()
    with pytest.raises(ValueError, match="missing keys"):
        model({k: v for k, v in batch.items() if k != "active"})
    short = dict(batch, traffic=batch["traffic"][:, :-1])
    with pytest.raises(ValueError, match="T=11"):
        model(short)
    with pytest.raises(ValueError, match="actions"):
        model(dict(batch, actions=batch["actions"][..., :3]))


def test_huber_loss_option() -> None:
    batch = make_batch(seed=12)
    mse, m_mse = make_model().loss(batch)
    huber, m_huber = make_model(loss="huber", huber_delta=0.5).loss(batch)
    assert torch.isfinite(huber) and float(huber.detach()) <= float(mse.detach())
    assert m_huber["mse"] == pytest.approx(m_mse["mse"])


def test_antenna_bias_pair_features_follow_the_geometry() -> None:
    from worldmodel.model.layers import AntennaBias
    from worldmodel.model.normalize import normalize_actions

    xy = torch.tensor([[[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]]])  # j east of i, k north of i
    params = torch.tensor(
        [[[40.0, 90.0, 2.0, 4.0], [38.0, 270.0, 4.0, 4.0], [46.0, 0.0, 2.0, 4.0]]]
    )
    feats = normalize_actions(params, torch.tensor([[True, True, False]]))
    x = AntennaBias.pair_features(xy, feats)[0]
    # cell 0 faces east, towards cell 1; cell 1 faces west, back towards cell 0
    torch.testing.assert_close(x[0, 1, :4], torch.tensor([1.0, 0.0, 1.0, 0.0]), atol=1e-6, rtol=0)
    # cell 0 → cell 2 (north): boresight east is 90° clockwise of the direction to cell 2
    assert abs(float(x[0, 2, 0])) < 1e-6 and abs(float(x[0, 2, 1])) == pytest.approx(1.0)
    assert float(x[0, 1, 4]) == pytest.approx((38.0 - 40.0) / 8.0)  # power of j minus i
    assert float(x[0, 1, 5]) == pytest.approx(2.0 / 7.5)  # mech tilt of j minus i
    assert float(x[0, 1, 6]) == 1.0 and float(x[0, 2, 6]) == 0.0  # cell 2 is switched off


def test_antenna_bias_only_with_actions_and_trn() -> None:
    assert make_model().ant_bias is not None
    assert make_model(use_actions=False).ant_bias is None  # Static-MobiWM never sees parameters
    assert make_model(use_trn=False).ant_bias is None
    assert make_model(antenna_bias=False).ant_bias is None
