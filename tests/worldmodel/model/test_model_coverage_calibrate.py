"""The coverage prior calibrated on the anchor slot's traffic (``ModelConfig.coverage_calibrate``,
``CoveragePrior.calibrated_delta``)."""

from __future__ import annotations

import json

import pytest
import torch

from tests.worldmodel.model.conftest import (
    make_batch,
    make_model,
    prior_inputs,
    with_padding_garbage,
)
from worldmodel.model import load_checkpoint, preset, save_checkpoint
from worldmodel.model.coverage import SHARE_EPS, CoveragePrior, SetProduct, fit_demand
from worldmodel.model.normalize import normalize_actions

S, HT, P = 8, 4, 4  # season, history tokens, horizon
H = S + HT


def _three_cells():
    """Three cells in a row, 800 m apart, on a 3 km map with uniform demand: the middle one
    faces east, the outer ones face the middle."""
    prior = CoveragePrior(0, 0, 5.0, tau_db=4.0, height_m=30.0)
    xy = torch.tensor([[[700.0, 1500.0], [1500.0, 1500.0], [2300.0, 1500.0]]])
    geom = prior.geometry(xy, torch.tensor([3000.0]), 24)
    stacked = torch.stack([geom[k] for k in CoveragePrior.GEOMETRY], dim=1)
    pixels = prior.pixel_features(None, None, 1, 24, torch.device("cpu"))
    return prior, stacked, pixels


def _feat(power=(40.0, 40.0, 40.0), on=(True, True, True)):
    acts = torch.tensor([[[[power[i], az, 6.0, 4.0] for i, az in enumerate((90, 90, 270))]]])
    active = torch.tensor([[list(on)]])
    return normalize_actions(acts, active), active


def test_calibration_fits_the_reference_traffic_and_keeps_the_demand() -> None:
    prior, geom, pixels = _three_cells()
    f, on = _feat()
    y = torch.tensor([[[300.0, 100.0, 600.0]]])
    # the same parameters in both slots: no change, whatever the fit
    same = prior.calibrated_delta(geom, pixels, f, on, y, f, on, 20)
    torch.testing.assert_close(same, torch.zeros_like(same))
    # enough steps: the reference shares match the observed ones (y_hat = w rho)
    w, inv, _, _ = prior.association(geom, f, on)
    rho0 = prior.demand_weights(pixels)
    err = []
    for steps in (0, 1, 3, 200):
        rho = fit_demand(SetProduct(w, inv), rho0, y[0], on[0], steps)[0]
        assert (rho >= 0).all()
        torch.testing.assert_close(rho.sum(), torch.tensor(1.0))  # keeps the total demand
        err.append(float((w[inv[0]] @ rho - y[0, 0] / y.sum()).abs().max()))
    assert err[0] > 0.1 and err[0] > err[1] > err[2] > err[3] and err[3] < 1e-3


def test_zero_steps_is_the_uncalibrated_share_change() -> None:
    prior, geom, pixels = _three_cells()
    f0, on = _feat()
    f1, _ = _feat(power=(40.0, 46.0, 40.0))
    y = torch.tensor([[[300.0, 100.0, 600.0]]])
    got = prior.calibrated_delta(geom, pixels, f0, on, y, f1, on, 0)
    want = prior(geom, pixels, f1, on) - prior(geom, pixels, f0, on)
    torch.testing.assert_close(got, want)
    # a reference slot that carried no traffic leaves the proxy as it is, however many steps
    idle = prior.calibrated_delta(geom, pixels, f0, on, torch.zeros_like(y), f1, on, 5)
    torch.testing.assert_close(idle, want)


def test_a_louder_cell_wins_the_traffic_its_neighbour_carried() -> None:
    """The middle cell gets louder and takes pixels from its neighbours: its gain is larger when
    the neighbour whose border it takes carried more traffic in the reference slot."""
    prior, geom, pixels = _three_cells()
    f0, on = _feat()
    f1, _ = _feat(power=(40.0, 46.0, 40.0))
    busy_east = prior.calibrated_delta(geom, pixels, f0, on, torch.tensor([[[100.0, 100.0,
                                       900.0]]]), f1, on, 3)  # fmt: skip
    quiet_east = prior.calibrated_delta(geom, pixels, f0, on, torch.tensor([[[100.0, 100.0,
                                        100.0]]]), f1, on, 3)  # fmt: skip
    assert busy_east[0, 0, 1] > quiet_east[0, 0, 1] > 0
    assert (busy_east[0, 0, [0, 2]] < 0).all()
    # switching the east cell off: its demand goes to the others, its own change is 0
    f2, on2 = _feat(on=(True, True, False))
    off = prior.calibrated_delta(geom, pixels, f0, on, torch.tensor([[[100.0, 100.0, 900.0]]]),
                                 f2, on2, 3)  # fmt: skip
    assert off[0, 0, 2] == 0 and off[0, 0, 1] > busy_east[0, 0, 1]
    # shares after the switch-off: the middle and west cells now serve all the demand
    assert torch.exp(off[0, 0, 1]) > 1.0 and torch.exp(off[0, 0, 0]) >= 1.0 - SHARE_EPS


def _model(**kw: object):
    kw = {"coverage_calibrate": 3, "season_anchor": "yesterday", **kw}
    return make_model(history=H, season=S, horizon=P, coverage_prior=True, **kw).eval()


def test_output_is_the_anchor_times_the_calibrated_change() -> None:
    """With the head zeroed the output is yesterday's traffic times ``exp(gain · Δ)`` (and
    yesterday's, or the last slot's, value where the prior sees no change)."""
    model = _model()
    assert float(model.coverage_gain.detach()) == 1.0  # starts at the closed form
    batch = make_batch(n_cells=(6,), history=H, horizon=P, seed=5, all_active=True)
    batch["actions"][0, H:] = batch["actions"][0, H - S : H - S + P]  # yesterday's settings
    batch["actions"][0, H:, 0, 0] += 6.0  # but cell 0 louder
    batch["active"][0, H - S + 1, 2] = False  # off one season before future slot 1
    batch["traffic"][0, H - S + 1, 2] = 0.0
    ctx, z, feat, on = prior_inputs(model, batch, H, gain=0.8)
    ref = torch.arange(H - S, H - S + P)
    delta = model.coverage.calibrated_delta(
        ctx.coverage_geom, ctx.coverage_pixels, feat[:, ref], on[:, ref],
        batch["traffic"][:, ref], feat[:, H:], on[:, H:], 3,
    )  # fmt: skip
    assert delta[0, :, 0].min() > 0 and delta[0, 1, 2] == 0
    norm = model.normalizer
    want = norm.normalize(batch["traffic"][:, ref] * torch.exp(0.8 * delta))
    want[0, 1, 2] = z[0, H - 1, 2]  # anchor falls back to the last slot, no prior change
    torch.testing.assert_close(model(batch), want, rtol=1e-4, atol=1e-4)


def _louder_since_yesterday(seed: int) -> dict[str, torch.Tensor]:
    """A batch whose cell 0 is 6 dB louder from the last history slot on than one season
    earlier; every other setting is yesterday's."""
    batch = make_batch(n_cells=(6,), history=H, horizon=P, seed=seed, all_active=True)
    then = batch["actions"][0, H - 1 - S : H - S + P].clone()
    batch["actions"][0, H - 1 : H + P] = then
    batch["actions"][0, H - 1 :, 0, 0] += 6.0
    return batch


def test_ar_adjusted_anchor_takes_todays_deviation_from_the_moved_yesterday() -> None:
    """``"ar-adjusted"``: the output is ``(z[t - S] + ρᵏ·(z_last - y'))`` times the prior's
    change, where ``y'`` is yesterday's value at ``t_last`` moved by the prior's change to
    today's settings; ``"ar"`` uses ``z[t_last - S]`` itself and so counts that change twice."""
    model = _model(season_anchor="ar-adjusted")
    batch = _louder_since_yesterday(seed=7)
    ctx, z, feat, on = prior_inputs(model, batch, H, gain=0.8)
    with torch.no_grad():
        model.season_mix.fill_(0.5)
    traffic, norm = batch["traffic"], model.normalizer
    last, then = torch.tensor([H - 1]), torch.tensor([H - 1 - S])
    d_last = model.coverage.calibrated_delta(
        ctx.coverage_geom, ctx.coverage_pixels, feat[:, then], on[:, then], traffic[:, then],
        feat[:, last], on[:, last], 3,
    )  # fmt: skip
    assert d_last[0, 0, 0] > 0  # the louder cell gains demand since yesterday
    moved = norm.normalize(traffic[:, then] * torch.exp(0.8 * d_last))
    ref = torch.arange(H - S, H - S + P)
    d_fut = model.coverage.calibrated_delta(
        ctx.coverage_geom, ctx.coverage_pixels, feat[:, ref], on[:, ref], traffic[:, ref],
        feat[:, H:], on[:, H:], 3,
    )  # fmt: skip
    decay = torch.tensor([0.5, 0.25, 0.125, 0.0625])[None, :, None]
    anchor = z[:, ref] + decay * (z[:, last] - moved)
    want = norm.normalize(norm.denormalize(anchor) * torch.exp(0.8 * d_fut))
    torch.testing.assert_close(model(batch), want, rtol=1e-4, atol=1e-4)

    # today exactly as the prior moves yesterday: no deviation, the yesterday anchor's output
    batch["traffic"][:, H - 1] = norm.denormalize(moved[:, 0])
    yesterday = _model()
    yesterday.load_state_dict(model.state_dict())
    torch.testing.assert_close(model(batch), yesterday(batch), rtol=1e-4, atol=1e-4)
    ar = _model(season_anchor="ar")
    ar.load_state_dict(model.state_dict())
    assert (ar(batch)[0, :, 0] - yesterday(batch)[0, :, 0]).abs().min() > 1e-3


@pytest.mark.parametrize("calibrate", [0, 3])
def test_ar_adjusted_equals_ar_where_the_settings_did_not_change(calibrate: int) -> None:
    model = _model(season_anchor="ar-adjusted", coverage_calibrate=calibrate)
    ar = _model(season_anchor="ar", coverage_calibrate=calibrate)
    batch = _louder_since_yesterday(seed=8)
    prior_inputs(model, batch, H, gain=0.8)
    ar.load_state_dict(model.state_dict())
    assert (model(batch) - ar(batch)).abs().max() > 1e-3  # cell 0 changed: they differ
    batch["actions"][0, H - 1] = batch["actions"][0, H - 1 - S]  # t_last as yesterday
    torch.testing.assert_close(model(batch), ar(batch))


def test_padded_cells_never_influence_real_cells() -> None:
    model = _model(season_actions=True, coverage_daily_demand=True)
    batch = make_batch(n_cells=(5, 7), history=H, horizon=P, seed=3)
    ref = model(batch)
    out = model(with_padding_garbage(batch))
    real = batch["cell_mask"][:, None, :].expand_as(out)
    assert torch.equal(out[real], ref[real])


@pytest.mark.parametrize("daily", [False, True])
def test_gain_and_demand_proxy_learn(daily: bool) -> None:
    model = _model(season_actions=True, coverage_daily_demand=daily).train()
    loss, _ = model.loss(make_batch(n_cells=(4, 6), history=H, horizon=P, seed=4))
    loss.backward()
    assert model.coverage_gain.grad is not None and model.coverage_gain.grad != 0
    assert model.coverage.demand.fc2.weight.grad.abs().sum() > 0


def test_config_checks_round_trip_and_legacy_load(tmp_path) -> None:
    with pytest.raises(ValueError, match="coverage_calibrate needs coverage_prior"):
        preset("debug", coverage_calibrate=3)
    with pytest.raises(ValueError, match="coverage_calibrate must be in"):
        preset("debug", coverage_prior=True, coverage_calibrate=-1)
    with pytest.raises(ValueError, match="iterations must be >= 0"):
        prior, geom, pixels = _three_cells()
        f, on = _feat()
        prior.calibrated_delta(geom, pixels, f, on, torch.ones(1, 1, 3), f, on, -1)
    model = _model(coverage_daily_demand=True)
    with torch.no_grad():
        model.coverage_gain.fill_(0.9)
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "ck"))
    assert loaded.cfg.coverage_calibrate == 3
    batch = make_batch(n_cells=(5,), history=H, horizon=P, seed=8)
    assert torch.equal(loaded(batch), model(batch))
    # a coverage-prior checkpoint written before the option existed loads uncalibrated
    old = make_model(history=H, season=S, horizon=P, coverage_prior=True).eval()
    ck = save_checkpoint(old, tmp_path / "old")
    meta = json.loads((ck / "config.json").read_text())
    del meta["model_config"]["coverage_calibrate"]
    (ck / "config.json").write_text(json.dumps(meta))
    back = load_checkpoint(ck)
    assert back.cfg.coverage_calibrate == 0
    assert torch.equal(back(batch), old(batch))


def test_set_product_equals_the_gathered_association() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.rand(3, 4, 10, generator=g)
    sets = torch.tensor([2, 0, 2, 1, 0, 2])
    prod = SetProduct(w, sets)
    rho, x = torch.rand(6, 10, generator=g), torch.rand(6, 4, generator=g)
    torch.testing.assert_close(prod.served(rho), torch.einsum("rng,rg->rn", w[sets], rho))
    torch.testing.assert_close(prod.back(x), torch.einsum("rng,rn->rg", w[sets], x))


def test_memo_holds_the_future_shares_and_changes_no_value(monkeypatch) -> None:
    """Without gradients the calibrated change leaves the future slots' plain log shares in
    the memo, so the feature computes only the other slots; the output is unchanged."""
    model = _model(season_actions=True, coverage_daily_demand=True)
    torch.nn.init.normal_(model.coverage.demand.fc2.weight, std=1.0)  # a time-dependent proxy
    batch = make_batch(n_cells=(5, 7), history=H, horizon=P, seed=6)
    with_grad = model(batch)  # no memo
    rows: list[int] = []
    compute = model.coverage._compute

    def spy(geom, demand, act_feat, *args, **kw):
        rows.append(act_feat.shape[0] * act_feat.shape[1])
        return compute(geom, demand, act_feat, *args, **kw)

    monkeypatch.setattr(model.coverage, "_compute", spy)
    with torch.no_grad():
        memoised = model(batch)
    torch.testing.assert_close(memoised, with_grad, rtol=1e-5, atol=1e-5)
    # the feature reads 2 · (tokens) slots per map; 2 · P of them were left by the prior
    assert rows == [2 * (2 * (HT + P) - 2 * P)]


def test_closed_form_checkpoint_script(tmp_path) -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "scripts" / "closed_form_checkpoint.py"
    spec = importlib.util.spec_from_file_location("closed_form_checkpoint", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    trained = _model(season_actions=True, coverage_daily_demand=True)
    torch.nn.init.normal_(trained.coverage.demand.fc2.weight, std=1.0)
    src = save_checkpoint(trained, tmp_path / "trained")
    assert script.main(["--from", str(src), "--calibrate", "2", "--out", str(tmp_path / "cf")]) == 0
    closed = load_checkpoint(tmp_path / "cf")
    assert closed.cfg.coverage_calibrate == 2 and float(closed.coverage_gain.detach()) == 1.0
    # nothing learnt: the output is yesterday's traffic where the settings did not change
    batch = make_batch(n_cells=(5,), history=H, horizon=P, seed=2, all_active=True)
    batch["actions"][0, H:] = batch["actions"][0, H - S : H - S + P]
    want = closed.normalizer.normalize(batch["traffic"][:, H - S : H - S + P])
    torch.testing.assert_close(closed(batch), want, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="coverage prior"):
        script.closed_form(save_checkpoint(make_model().eval(), tmp_path / "plain"), 3)


def test_set_product_with_equal_groups_uses_one_batched_product() -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.rand(4, 3, 10, generator=g)
    sets = torch.tensor([3, 1, 1, 3, 0, 0])  # set 2 unused; 2 rows each
    prod = SetProduct(w, sets)
    assert prod.size == 2
    rho, x = torch.rand(6, 10, generator=g), torch.rand(6, 3, generator=g)
    torch.testing.assert_close(prod.served(rho), torch.einsum("rng,rg->rn", w[sets], rho))
    torch.testing.assert_close(prod.back(x), torch.einsum("rng,rn->rg", w[sets], x))
