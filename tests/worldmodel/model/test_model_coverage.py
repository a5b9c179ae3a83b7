"""The coverage prior (``ModelConfig.coverage_prior``, ``worldmodel.model.coverage``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.worldmodel.model.conftest import (
    make_batch,
    make_model,
    prior_inputs,
    with_padding_garbage,
)
from worldmodel.model import load_checkpoint, preset, save_checkpoint
from worldmodel.model.coverage import (
    SHARE_EPS,
    CoveragePrior,
    antenna_gain_db,
    pathloss_uma_nlos_db,
)
from worldmodel.model.normalize import normalize_actions
from worldmodel.twin.antenna import AntennaConfig, antenna_gain_dbi
from worldmodel.twin.propagation import pathloss_db

S, HT, P = 8, 4, 4  # season, history tokens, horizon
H = S + HT


def test_gain_and_path_loss_equal_the_twins() -> None:
    rng = np.random.default_rng(0)
    k = 400
    bear, zen = rng.uniform(0, 360, k), rng.uniform(85, 130, k)
    az, mt, et = rng.uniform(0, 360, k), rng.uniform(0, 15, k), rng.uniform(0, 12, k)
    b, z = np.radians(bear), np.radians(zen)
    geom = {
        "cos_b": torch.tensor(np.cos(b)),
        "sin_b": torch.tensor(np.sin(b)),
        "cos_z": torch.tensor(np.cos(z)),
        "sin_z": torch.tensor(np.sin(z)),
    }
    params = (torch.tensor(np.radians(az)), torch.tensor(mt), torch.tensor(et))
    # parameters [k, 1] against geometry [k, 1]: one link each
    got = antenna_gain_db(
        {n: v[:, None] for n, v in geom.items()}, *params, AntennaConfig()
    ).squeeze(1)
    np.testing.assert_allclose(got.numpy(), antenna_gain_dbi(bear, zen, az, mt, et), atol=1e-9)
    d = rng.uniform(1.0, 5000.0, k)
    want = pathloss_db(d, 30.0, 1.5, 2.6, "UMa", np.zeros(k, dtype=bool))
    np.testing.assert_allclose(pathloss_uma_nlos_db(torch.tensor(d), 30.0).numpy(), want)


def _prior(**kw: object) -> CoveragePrior:
    args = dict(poi_categories=0, facility_channels=0, count_log_scale=5.0, tau_db=4.0,
                height_m=30.0)  # fmt: skip
    args.update(kw)
    return CoveragePrior(**args)


def _two_cells(power=(40.0, 40.0), azimuth=(90.0, 270.0), active=(True, True)):
    """Two cells 1 km apart facing each other on a 3 km map, uniform demand."""
    prior = _prior()
    xy = torch.tensor([[[1000.0, 1500.0], [2000.0, 1500.0]]])
    geom = prior.geometry(xy, torch.tensor([3000.0]), 16)
    stacked = torch.stack([geom[k] for k in CoveragePrior.GEOMETRY], dim=1)
    pixels = prior.pixel_features(None, None, 1, 16, torch.device("cpu"))
    acts = torch.tensor([[[[power[i], azimuth[i], 6.0, 4.0] for i in range(2)]]])
    on = torch.tensor([[list(active)]])
    return prior(stacked, pixels, normalize_actions(acts, on), on)[0, 0]


def test_shares_respond_to_power_azimuth_and_switch_off() -> None:
    base = _two_cells()
    shares = torch.exp(base) - SHARE_EPS
    torch.testing.assert_close(shares.mean(), torch.tensor(1.0))  # mean 1 over active cells
    torch.testing.assert_close(base[0], base[1])  # symmetric layout
    louder = _two_cells(power=(44.0, 40.0))
    assert louder[0] > base[0] and louder[1] < base[1]
    turned = _two_cells(azimuth=(270.0, 270.0))  # cell 0 now faces the map's western edge
    assert turned[0] < base[0] and turned[1] > base[1]
    off = _two_cells(active=(True, False))
    assert off[1] == 0.0
    torch.testing.assert_close(torch.exp(off[0]) - SHARE_EPS, torch.tensor(1.0))


@pytest.mark.parametrize("daily", [False, True])
def test_once_per_distinct_parameter_set_equals_per_slot(daily: bool) -> None:
    """Deduplication over (map, slot) and (map, cell) does not change any value."""
    model = make_model(coverage_prior=True, coverage_daily_demand=daily)
    if daily:  # a proxy that really depends on the time
        torch.nn.init.normal_(model.coverage.demand.fc2.weight, std=1.0)
    batch = make_batch(n_cells=(5, 7), seed=1)
    batch["actions"][:, 3:7] = batch["actions"][:, 3:4]  # a held plan: repeated slots
    ctx = model.encode_context(batch["poi"], batch["od"], batch["facility"], batch["cell_xy"],
                               batch["extent_m"], batch["cell_mask"])  # fmt: skip
    _, feat, on = model._prepare(batch["traffic"], batch["actions"], batch["active"],
                                 ctx.cell_mask)  # fmt: skip
    sod, dow = batch["slot_of_day"], batch["day_of_week"]
    demand = model.coverage.demand_weights(ctx.coverage_pixels, sod, dow)
    assert demand.shape == ((2, 12, 64) if daily else (2, 64))
    torch.testing.assert_close(demand.sum(-1), torch.ones(demand.shape[:-1]))
    if daily:
        assert (demand[:, 0] - demand[:, 6]).abs().max() > 1e-4  # 6 slots later: other weights
    whole = model.coverage(ctx.coverage_geom, ctx.coverage_pixels, feat, on, sod, dow)
    for b in range(2):
        for t in range(feat.shape[1]):
            one = model.coverage(
                ctx.coverage_geom[b : b + 1], ctx.coverage_pixels[b : b + 1],
                feat[b : b + 1, t : t + 1], on[b : b + 1, t : t + 1],
                sod[b : b + 1, t : t + 1], dow[b : b + 1, t : t + 1],
            )  # fmt: skip
            torch.testing.assert_close(whole[b, t], one[0, 0], rtol=1e-5, atol=1e-6)
    assert (whole[~on] == 0).all()
    # the memo (no-grad calls) gives the same values, computes each slot once, and reuses them
    memo: dict = {}
    with torch.no_grad():
        first = model.coverage(ctx.coverage_geom, ctx.coverage_pixels, feat, on, sod, dow,
                               memo)  # fmt: skip
        n_keys = len(memo)
        # the held plan's repeated slots share keys unless each slot has its own demand
        assert n_keys == 2 * feat.shape[1] if daily else n_keys < 2 * feat.shape[1]
        again = model.coverage(ctx.coverage_geom, ctx.coverage_pixels, feat, on, sod, dow,
                               memo)  # fmt: skip
    assert len(memo) == n_keys
    torch.testing.assert_close(first, whole, rtol=1e-5, atol=1e-6)
    assert torch.equal(again, first)
    with torch.no_grad():  # another week slot: a daily proxy must not reuse the memo
        shifted = model.coverage(ctx.coverage_geom, ctx.coverage_pixels, feat, on,
                                 (sod + 48) % 96, dow, memo)  # fmt: skip
    assert (len(memo) > n_keys) == daily
    if daily:
        assert not torch.allclose(shifted, first)


def _model(**kw: object):
    return make_model(history=H, season=S, horizon=P, coverage_prior=True, **kw).eval()


def test_padded_cells_never_influence_real_cells() -> None:
    model = _model(season_anchor="yesterday", season_actions=True)
    batch = make_batch(n_cells=(5, 7), history=H, horizon=P, seed=3)
    ref = model(batch)
    out = model(with_padding_garbage(batch))
    real = batch["cell_mask"][:, None, :].expand_as(out)
    assert torch.equal(out[real], ref[real])


def test_output_term_is_the_share_change_from_the_anchor_slot() -> None:
    """With the head zeroed and ``coverage_gain`` = 1 the output is yesterday's value plus the
    log-share change since yesterday (and the change since the last slot where the cell was off
    yesterday)."""
    model = _model(season_anchor="yesterday")
    batch = make_batch(n_cells=(6,), history=H, horizon=P, seed=5, all_active=True)
    batch["active"][0, H - S + 1, 2] = False  # off one season before future slot 1
    batch["traffic"][0, H - S + 1, 2] = 0.0
    ctx, z, feat, on = prior_inputs(model, batch, H, gain=1.0)
    ls = model.coverage(ctx.coverage_geom, ctx.coverage_pixels, feat, on)
    want = z[:, H - S : H - S + P] + ls[:, H:] - ls[:, H - S : H - S + P]
    want[0, 1, 2] = z[0, H - 1, 2] + ls[0, H + 1, 2] - ls[0, H - 1, 2]
    torch.testing.assert_close(model(batch), want)


@pytest.mark.parametrize("daily", [False, True])
def test_prior_is_read_and_trained(daily: bool) -> None:
    model = _model(season_anchor="yesterday", season_actions=True,
                   coverage_daily_demand=daily).train()  # fmt: skip
    assert model.action_enc.fc1.in_features == 14  # (6 features + log share) and their change
    assert model.season_embed.in_features == 2 + 14
    loss, _ = model.loss(make_batch(n_cells=(4, 6), history=H, horizon=P, seed=4))
    loss.backward()
    assert model.coverage_gain.grad is not None and model.coverage_gain.grad != 0
    assert model.coverage.demand.fc2.weight.grad.abs().sum() > 0  # the demand proxy learns
    assert model.coverage.demand.fc1.in_features == 8 + 2 + (5 if daily else 0)
    # moving one cell's antenna changes the predictions of the others through the prior
    model.eval()
    with torch.no_grad():
        model.coverage_gain.fill_(1.0)
    batch = make_batch(n_cells=(6,), history=H, horizon=P, seed=9, all_active=True)
    moved = {k: v.clone() for k, v in batch.items()}
    moved["actions"][0, H:, 0, 0] += 6.0  # cell 0 louder in the future slots
    delta = model(moved) - model(batch)
    assert delta[0, :, 0].min() > 0 and delta[0, :, 1:].max() < 0


def test_config_checks_and_round_trip(tmp_path) -> None:
    with pytest.raises(ValueError, match="coverage_prior needs use_actions"):
        preset("debug", coverage_prior=True, use_actions=False)
    with pytest.raises(ValueError, match="coverage_tau_db must be > 0"):
        preset("debug", coverage_prior=True, coverage_tau_db=0.0)
    with pytest.raises(ValueError, match="coverage_height_m"):
        preset("debug", coverage_prior=True, coverage_height_m=1.0)
    with pytest.raises(ValueError, match="coverage_daily_demand needs coverage_prior"):
        preset("debug", coverage_daily_demand=True)
    model = _model(season_anchor="yesterday", season_actions=True, coverage_daily_demand=True)
    with torch.no_grad():
        model.coverage_gain.fill_(0.7)
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "ck"))
    assert loaded.cfg.coverage_prior and loaded.cfg.coverage_daily_demand
    assert float(loaded.coverage_gain.detach()) == pytest.approx(0.7)
    batch = make_batch(n_cells=(5,), history=H, horizon=P, seed=8)
    assert torch.equal(loaded(batch), model(batch))
    # a checkpoint written before the option existed loads without the prior
    old = make_model(history=H, season=S, horizon=P).eval()
    ck = save_checkpoint(old, tmp_path / "old")
    meta = json.loads((ck / "config.json").read_text())
    for key in ("coverage_prior", "coverage_tau_db", "coverage_height_m", "coverage_daily_demand"):
        del meta["model_config"][key]
    (ck / "config.json").write_text(json.dumps(meta))
    back = load_checkpoint(ck)
    assert not back.cfg.coverage_prior and back.coverage is None
    assert torch.equal(back(batch), old(batch))
