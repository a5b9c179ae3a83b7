"""MobiWM's daily memory (``ModelConfig.season``): tokens, anchor, padding, rollout."""

from __future__ import annotations

import pytest
import torch

from tests.worldmodel.model.conftest import make_batch, make_model, with_padding_garbage
from worldmodel.model import preset

S, HT, P = 8, 4, 4  # season, history tokens, horizon (a short "day" keeps the test small)
H = S + HT


def _model(**kw: object):
    return make_model(history=H, season=S, horizon=P, **kw).eval()


def _batch(seed: int = 0, **kw: object) -> dict[str, torch.Tensor]:
    return make_batch(history=H, horizon=P, seed=seed, **kw)


def _zero_head(model, mix: float | None = None):
    """Zero the prediction head, so that the output is the anchor; optionally set α."""
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
        if mix is not None:
            model.season_mix.fill_(mix)
    return model


def test_config_bounds() -> None:
    assert preset("debug", history=H, season=S).token_history == HT
    assert preset("debug").token_history == 8  # no season: every history slot is a token
    with pytest.raises(ValueError, match="season=12 needs"):
        preset("debug", history=12, season=12)
    with pytest.raises(ValueError, match="season=2 needs"):
        preset("debug", history=12, season=2, horizon=4)
    with pytest.raises(ValueError, match="season must be >= 0"):
        preset("debug", season=-1)
    with pytest.raises(ValueError, match="season_mix_init"):
        preset("debug", history=H, season=S, season_mix_init=1.5)


def test_zero_head_predicts_the_seasonal_anchor() -> None:
    """With the head zeroed the output is z_last + α·(z[t - S] - z[t_last - S]) exactly."""
    model = _zero_head(_model(), mix=0.8)
    batch = _batch(n_cells=(5, 7), all_active=True)
    z = model.normalizer.normalize(batch["traffic"])
    want = z[:, H - 1 : H] + 0.8 * (z[:, H - S : H - S + P] - z[:, H - 1 - S : H - S])
    out = model(batch)
    real = batch["cell_mask"][:, None, :].expand_as(out)
    torch.testing.assert_close(out[real], want[real])


def test_anchor_falls_back_to_persistence_where_the_cell_was_off() -> None:
    model = _zero_head(_model())
    batch = _batch(n_cells=(6,), all_active=True)
    batch["active"][0, H - S + 1, 2] = False  # off one season before future slot 1
    batch["traffic"][0, H - S + 1, 2] = 0.0
    z = model.normalizer.normalize(batch["traffic"])
    out = model(batch)
    torch.testing.assert_close(out[0, 1, 2], z[0, H - 1, 2])
    assert not torch.isclose(out[0, 0, 2], z[0, H - 1, 2])  # its other slots keep the memory


def test_prediction_reads_the_memory_slots() -> None:
    """Traffic before the token history still matters (it is the memory of the tokens)."""
    model = _model()
    batch = _batch(n_cells=(5,), all_active=True)
    ref = model(batch)
    for slot in (0, H - S + P - 1):
        bumped = {k: v.clone() for k, v in batch.items()}
        bumped["traffic"][:, slot] *= 3.0
        assert (model(bumped) - ref).abs().max() > 1e-4, slot


def test_padded_cells_never_influence_real_cells() -> None:
    model = _model()
    batch = _batch(n_cells=(5, 7), seed=3)
    ref = model(batch)
    out = model(with_padding_garbage(batch))
    real = batch["cell_mask"][:, None, :].expand_as(out)
    assert torch.equal(out[real], ref[real])


def test_rollout_equals_chained_predict_and_trains() -> None:
    model = _model()
    k = 3
    batch = _batch(n_cells=(4, 6), seed=2)
    batch = {  # extend the window to H + k·P slots by repeating the batch's own slots
        key: (torch.cat([v, v[:, -P:].repeat(1, k - 1, *([1] * (v.dim() - 2)))], dim=1)
              if key in ("traffic", "actions", "active", "slot_of_day", "day_of_week", "od")
              else v)
        for key, v in batch.items()
    }  # fmt: skip
    ctx = {key: batch[key] for key in ("poi", "facility", "cell_xy", "extent_m")}
    ctx["od"] = batch["od"]
    time = {key: batch[key] for key in ("slot_of_day", "day_of_week")}
    time["od_index"] = torch.arange(H + k * P).expand(2, -1)
    mask = {"cell_mask": batch["cell_mask"], "active": batch["active"]}
    # chained predict feeds its own predictions back as the memory too: memory="predicted"
    # (the observed memory has its own oracle in test_model_memory.py)
    out = model.rollout(batch["traffic"][:, :H], batch["actions"][:, :H], batch["actions"][:, H:],
                        ctx, mask, time, memory="predicted")  # fmt: skip
    assert out.shape == (2, k * P, 6) and torch.isfinite(out).all() and (out >= 0).all()
    hist, chunks = batch["traffic"][:, :H], []
    for c in range(k):
        s, e = c * P, c * P + H + P
        pred = model.predict(
            hist, batch["actions"][:, s : s + H], batch["actions"][:, s + H : e], ctx,
            {"cell_mask": batch["cell_mask"], "active": batch["active"][:, s:e]},
            {key: v[:, s:e] for key, v in time.items()},
        )  # fmt: skip
        chunks.append(pred)
        hist = torch.cat([hist, pred], dim=1)[:, -H:]
    torch.testing.assert_close(out, torch.cat(chunks, dim=1), rtol=0, atol=0)
    # and the loss trains every parameter, the memory embedding included
    model.train()
    loss, _ = model.loss(_batch(n_cells=(4, 6), seed=4))
    loss.backward()
    assert model.season_embed.weight.grad is not None
    assert model.season_embed.weight.grad.abs().sum() > 0
    assert model.season_mix.grad is not None and model.season_mix.grad != 0


def _predict_and_forward(model, batch: dict, h: int):
    """``predict`` of ``batch``'s last slots from its first ``h``, ``forward`` of the whole
    window as MB (0 where inactive), and ``forward``'s normalised output."""
    week0 = batch["day_of_week"][:, 0] * 96 + batch["slot_of_day"][:, 0]
    ctx = {key: batch[key] for key in ("poi", "od", "facility", "cell_xy", "extent_m")}
    ctx["od_start_week_slot"] = week0
    pred = model.predict(
        batch["traffic"][:, :h], batch["actions"][:, :h], batch["actions"][:, h:], ctx,
        {"cell_mask": batch["cell_mask"], "active": batch["active"]},
        {"slot_of_day": batch["slot_of_day"], "day_of_week": batch["day_of_week"]},
    )  # fmt: skip
    z = model(batch)
    return pred, torch.where(batch["active"][:, h:], model.normalizer.denormalize(z), 0.0), z


def test_forward_equals_predict_and_ignores_memory_od() -> None:
    model = _model()
    batch = _batch(n_cells=(5, 7), seed=6)
    pred, mb, z = _predict_and_forward(model, batch, H)
    torch.testing.assert_close(pred, mb)
    other = {k: v.clone() for k, v in batch.items()}
    other["od"][:, :S] *= 5.0  # OD of memory-only slots is never read
    assert torch.equal(model(other), z)


def test_fixed_mix_is_a_buffer_and_round_trips(tmp_path) -> None:
    from worldmodel.model import load_checkpoint, save_checkpoint

    model = _model(season_mix_init=1.0, season_mix_learnt=False)
    assert "season_mix" not in dict(model.named_parameters())
    assert float(model.season_mix) == 1.0
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "ck"))
    assert float(loaded.season_mix) == 1.0 and not loaded.cfg.season_mix_learnt
    batch = _batch(n_cells=(5,), seed=8)
    assert torch.equal(loaded(batch), model(batch))


def test_yesterday_anchor_is_yesterdays_value() -> None:
    """``season_anchor="yesterday"``: with the head zeroed the output is z[t - S], and z_last
    where the cell was off one season earlier; α is not a parameter."""
    model = _zero_head(_model(season_anchor="yesterday"))
    assert "season_mix" not in dict(model.named_parameters())
    batch = _batch(n_cells=(5, 7), all_active=True)
    batch["active"][1, H - S + 2, 3] = False  # off one season before future slot 2
    batch["traffic"][1, H - S + 2, 3] = 0.0
    z = model.normalizer.normalize(batch["traffic"])
    want = z[:, H - S : H - S + P].clone()
    want[1, 2, 3] = z[1, H - 1, 3]
    out = model(batch)
    real = batch["cell_mask"][:, None, :].expand_as(out)
    torch.testing.assert_close(out[real], want[real])
    with pytest.raises(ValueError, match="season_anchor"):
        preset("debug", history=H, season=S, season_anchor="tomorrow")
    with pytest.raises(ValueError, match="Static-MobiWM must never see actions"):
        preset("debug", history=H, season=S, season_actions=True, use_actions=False)


def test_memory_actions_are_read_and_trained() -> None:
    """``season_actions``: the actions of memory-only slots change the prediction (without the
    option they are never read), padding stays invariant, and their weights get a gradient."""
    batch = _batch(n_cells=(5, 7), seed=9)
    other = {k: v.clone() for k, v in batch.items()}
    other["actions"][:, 0, :, 0] += 6.0  # power one season before the first history token
    other["actions"][:, H - S + 1, :, 2] -= 3.0  # tilt one season before future slot 1
    with_mem = _model(season_anchor="yesterday", season_actions=True)
    assert with_mem.season_embed.in_features == 2 + 12
    assert (with_mem(other) - with_mem(batch)).abs().max() > 1e-4
    without = _model(season_anchor="yesterday")
    assert torch.equal(without(other), without(batch))
    ref = with_mem(batch)
    real = batch["cell_mask"][:, None, :].expand_as(ref)
    assert torch.equal(with_mem(with_padding_garbage(batch))[real], ref[real])
    with_mem.train()
    loss, _ = with_mem.loss(_batch(n_cells=(4, 6), seed=4))
    loss.backward()
    grad = with_mem.season_embed.weight.grad
    assert grad is not None and grad[:, 2:].abs().sum() > 0


def test_new_memory_options_round_trip_and_default_for_old_checkpoints(tmp_path) -> None:
    import json

    from worldmodel.model import load_checkpoint, save_checkpoint

    model = _model(season_anchor="yesterday", season_actions=True)
    ck = save_checkpoint(model, tmp_path / "ck")
    loaded = load_checkpoint(ck)
    assert (loaded.cfg.season_anchor, loaded.cfg.season_actions) == ("yesterday", True)
    batch = _batch(n_cells=(5,), seed=8)
    assert torch.equal(loaded(batch), model(batch))
    # a checkpoint written before the options existed loads with the original anchor
    old = _model()
    ck_old = save_checkpoint(old, tmp_path / "old")
    cfg_path = ck_old / "config.json"
    meta = json.loads(cfg_path.read_text())
    del meta["model_config"]["season_anchor"], meta["model_config"]["season_actions"]
    cfg_path.write_text(json.dumps(meta))
    back = load_checkpoint(ck_old)
    assert (back.cfg.season_anchor, back.cfg.season_actions) == ("difference", False)
    assert torch.equal(back(batch), old(batch))


def _check_level_anchor(anchor: str, mix: float, share: torch.Tensor):
    """With the head zeroed, ``anchor``'s output is z[t - S] + share·(z_last - z[t_last - S])
    (``share`` per future slot); returns the model (α = ``mix``) and its batch."""
    model = _zero_head(_model(season_anchor=anchor), mix=mix)
    assert "season_mix" in dict(model.named_parameters())
    batch = _batch(n_cells=(5, 7), all_active=True)
    z = model.normalizer.normalize(batch["traffic"])
    yest, level = z[:, H - S : H - S + P], z[:, H - 1 : H] - z[:, H - 1 - S : H - S]
    out = model(batch)
    real = batch["cell_mask"][:, None, :].expand_as(out)
    torch.testing.assert_close(out[real], (yest + share * level)[real])
    return model, batch


def test_damped_anchor_adds_a_share_of_todays_level_change() -> None:
    """``"damped"``: z[t - S] + α·(z_last - z[t_last - S]); α = 1 equals the difference anchor."""
    model, batch = _check_level_anchor("damped", 0.3, torch.tensor(0.3))
    diff = _model()
    diff.load_state_dict(model.state_dict())
    with torch.no_grad():
        model.season_mix.fill_(1.0)
        diff.season_mix.fill_(1.0)
    torch.testing.assert_close(model(batch), diff(batch))


def test_ar_anchor_decays_todays_level_change_by_lead() -> None:
    """``"ar"``: z[t - S] + ρ^k·(z_last - z[t_last - S]) at lead k; ρ is clamped to [0, 1]."""
    decay = torch.tensor([0.5, 0.25, 0.125, 0.0625])[None, :, None]
    model, batch = _check_level_anchor("ar", 0.5, decay)
    # ρ = 1 keeps today's whole level change at every lead: the damped anchor with α = 1
    damped = _model(season_anchor="damped")
    damped.load_state_dict(model.state_dict())
    with torch.no_grad():
        model.season_mix.fill_(1.7)  # clamped to 1
        damped.season_mix.fill_(1.0)
    torch.testing.assert_close(model(batch), damped(batch))
    # the level term needs the cell on at t_last - S; else the anchor is yesterday alone
    batch["active"][0, H - 1 - S, 3] = False
    with torch.no_grad():
        model.season_mix.fill_(0.5)
    z = model.normalizer.normalize(batch["traffic"])
    torch.testing.assert_close(model(batch)[0, :, 3], z[0, H - S : H - S + P, 3])


def test_ar_adjusted_anchor_without_the_coverage_prior_is_the_ar_anchor() -> None:
    model, ar = _model(season_anchor="ar-adjusted"), _model(season_anchor="ar")
    ar.load_state_dict(model.state_dict())
    batch = _batch(n_cells=(5, 7))
    assert torch.equal(model(batch), ar(batch))


def test_ar_anchor_learns_its_decay() -> None:
    model = _model(season_anchor="ar").train()
    batch = _batch(n_cells=(5,), all_active=True)
    model(batch).square().mean().backward()
    assert model.season_mix.grad is not None and model.season_mix.grad.abs() > 0


@pytest.mark.parametrize(
    "options",
    [
        dict(season=96, season_anchor="yesterday", season_actions=True, memory_age=3),
        dict(season=8, season_anchor="ar-adjusted", coverage_prior=True, coverage_calibrate=2),
        dict(season=8, coverage_prior=True, coverage_daily_demand=True),
    ],
)
def test_compact_rollout_window_equals_the_full_forward(options: dict) -> None:
    """``predict`` reads a compact window (memory slots and tokens only) when that is shorter
    than the full one; it equals ``forward`` on the full window."""
    options = dict(options)
    s, ht, p = options.pop("season"), 2, 2  # 2 * (H_tok + P) < H + P: compact
    h = s + ht
    model = make_model(history=h, season=s, horizon=p, **options).eval()
    assert model._compact_slots(h + p)[1] == ht + p
    batch = make_batch(n_cells=(5, 7), history=h, horizon=p, seed=8)
    pred, mb, _ = _predict_and_forward(model, batch, h)
    torch.testing.assert_close(pred, mb, rtol=1e-5, atol=1e-4)


def test_memories_older_than_any_in_training_read_as_the_oldest() -> None:
    s, ht, p = 96, 2, 2
    model = make_model(history=s + ht, season=s, horizon=p, season_anchor="yesterday",
                       memory_age=3).eval()  # fmt: skip
    batch = make_batch(n_cells=(5,), history=s + ht, horizon=p, seed=9)
    zh, feat, on = model._prepare(batch["traffic"][:, : s + ht], batch["actions"],
                                  batch["active"], torch.ones(1, 5, dtype=torch.bool))  # fmt: skip
    args = (zh, feat, on, batch["slot_of_day"], batch["day_of_week"], torch.zeros_like(
        batch["slot_of_day"]))  # fmt: skip

    def memory_input(age: int) -> torch.Tensor:
        mem_age = torch.full((1, ht + p, 5), age)
        return model._seasonal(*args, mem_age=mem_age)[6]

    assert torch.equal(memory_input(3), memory_input(40))
    assert not torch.equal(memory_input(2), memory_input(3))
