"""The daily memory of a rollout past the warm start: ``rollout(memory=...)``, ``DailyMemory``."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.worldmodel.model.conftest import make_batch, make_model
from worldmodel.model.mobiwm import DailyMemory

S, HT, P = 8, 4, 4  # season (a short "day"), history tokens, horizon
H = S + HT
K = 6  # chunks: 24 predicted slots = three seasons
TIME_KEYS = ("traffic", "actions", "active", "slot_of_day", "day_of_week", "od")


def _model(**kw: object):
    """A ``yesterday``-anchored model whose "day" is the season (``slots_per_day = S``)."""
    return make_model(
        history=H, season=S, horizon=P, season_anchor="yesterday", slots_per_day=S, **kw
    ).eval()


def _long_batch(seed: int = 0, all_active: bool = True, n_cells=(5, 7)):
    """A batch of ``H + K·P`` slots: random traffic and actions everywhere (each slot its own)."""
    parts = [make_batch(n_cells, history=H, horizon=P, seed=seed, all_active=all_active)]
    for c in range(1, K):
        parts.append(make_batch(n_cells, history=0, horizon=P, seed=seed + 100 + c,
                                all_active=all_active))  # fmt: skip
    batch = dict(parts[0])
    for key in TIME_KEYS:
        batch[key] = torch.cat([p[key] for p in parts], dim=1)
    t = H + K * P
    week = (batch["slot_of_day"][:, :1] + torch.arange(t)) % (7 * S)
    batch["slot_of_day"], batch["day_of_week"] = week % S, week // S
    return batch


def _args(batch, start: int = 0, k: int = K):
    """``rollout`` arguments for ``k`` chunks whose history starts at slot ``start``."""
    h_end, end = start + H, start + H + k * P
    ctx = {key: batch[key] for key in ("poi", "facility", "cell_xy", "extent_m")}
    ctx["od"] = batch["od"]
    time = {key: batch[key][:, start:end] for key in ("slot_of_day", "day_of_week")}
    time["od_index"] = torch.arange(start, end).expand(batch["traffic"].shape[0], -1)
    mask = {"cell_mask": batch["cell_mask"], "active": batch["active"][:, start:end]}
    return (batch["traffic"][:, start:h_end], batch["actions"][:, start:h_end],
            batch["actions"][:, h_end:end], ctx, mask, time)  # fmt: skip


def test_modes_agree_for_one_season_then_differ() -> None:
    model, batch = _model(), _long_batch()
    obs = model.rollout(*_args(batch))
    pred = model.rollout(*_args(batch), memory="predicted")
    assert obs.shape == pred.shape == (2, K * P, 7)
    assert torch.equal(obs[:, :S], pred[:, :S])  # memory still inside the warm start
    real = batch["cell_mask"][:, None, :]
    assert (obs[:, S:] - pred[:, S:]).abs().amax(dim=(0, 2)).min() > 1e-4
    assert torch.equal(model.rollout(*_args(batch)), obs)  # deterministic
    assert (obs[~real.expand_as(obs)] == 0).all()


@pytest.mark.parametrize("memory_age", [1, 3])
def test_observed_memory_equals_chained_predict_on_the_observed_day(memory_age: int) -> None:
    """Oracle: predict chunk by chunk, writing into each window's memory slots (the first
    ``H + P - S``) that lie past the warm start the traffic, actions, active flags and day of
    week of the warm start's slot of the same phase (``t - S·m``, the latest one before
    ``H``); with ``memory_age > 1`` the model reads the memory's age from that day of week."""
    model, batch = _model(memory_age=memory_age), _long_batch(seed=3)
    out = model.rollout(*_args(batch))
    traffic = batch["traffic"].clone()
    traffic[:, H:] = 0.0
    acts, active = batch["actions"].clone(), batch["active"].clone()
    ctx = _args(batch)[3]
    for c in range(K):
        s = c * P
        win_t, win_a, win_on = traffic[:, s : s + H].clone(), acts[:, s : s + H + P].clone(), \
            active[:, s : s + H + P].clone()  # fmt: skip
        dow = batch["day_of_week"][:, s : s + H + P].clone()
        for j in range(H + P - S):
            t = s + j
            if t >= H:
                src = t - S * ((t - H) // S + 1)
                assert H - S <= src < H and (t - src) % S == 0
                win_t[:, j], win_a[:, j], win_on[:, j] = traffic[:, src], acts[:, src], True
                dow[:, j] = batch["day_of_week"][:, src]
        time = {"slot_of_day": batch["slot_of_day"][:, s : s + H + P], "day_of_week": dow}
        time["od_index"] = torch.arange(s, s + H + P).expand(2, -1)
        chunk = model.predict(win_t, win_a[:, :H], win_a[:, H:], ctx,
                              {"cell_mask": batch["cell_mask"], "active": win_on}, time)  # fmt: skip
        traffic[:, s + H : s + H + P] = chunk
    torch.testing.assert_close(out, traffic[:, H:], rtol=0, atol=0)


def test_cells_off_on_the_observed_day_fall_back_to_the_window() -> None:
    model = _model()
    batch = _long_batch(seed=5)
    win_t = torch.rand(2, H, 7) * 40
    win_a, win_on = batch["actions"][:, : H + P], torch.ones(2, H + P, 7, dtype=torch.bool)
    table = DailyMemory(torch.full((2, S, 7), 99.0), torch.zeros(2, S, 7, 4),
                        torch.ones(2, S, 7, dtype=torch.bool), offset=S)  # fmt: skip
    table.active[1, 3, 2] = False
    win_on[0, 2, 1] = False  # off in the window's own memory slot: on in the table's
    m = H + P - S  # memory slots
    t, a, on, age = model._with_memory(win_t, win_a, win_on, 0, table, m)
    assert torch.equal(t[:, m:], win_t[:, m:]) and torch.equal(a[:, m:], win_a[:, m:])
    assert t[1, 3, 2] == win_t[1, 3, 2] and torch.equal(a[1, 3, 2], win_a[1, 3, 2])
    keep = torch.ones(2, m, 7, dtype=torch.bool)
    keep[1, 3, 2] = False
    assert (t[:, :m][keep] == 99.0).all() and (a[:, :m][keep] == 0.0).all() and on.all()
    assert (age[keep] == 2).all() and age[1, 3, 2] == 1  # the table is one day older
    # slots not yet past the table read the window
    early = dataclasses.replace(table, offset=S - 3)
    t2, _, _, _ = model._with_memory(win_t, win_a, win_on, 0, early, m)
    assert torch.equal(t2[:, :3], win_t[:, :3]) and (t2[0, 3:m] == 99.0).all()


def test_a_rollout_continued_with_its_daily_memory_equals_one_rollout() -> None:
    model, batch = _model(), _long_batch(seed=7)
    whole = model.rollout(*_args(batch))
    k1 = 4  # first segment: 16 slots, longer than H
    first = model.rollout(*_args(batch, 0, k1))
    cont = batch["traffic"].clone()
    cont[:, H : H + k1 * P] = first
    table = DailyMemory(batch["traffic"][:, H - S : H], batch["actions"][:, H - S : H],
                        batch["active"][:, H - S : H], offset=k1 * P - (H - S))  # fmt: skip
    args = list(_args(dict(batch, traffic=cont), k1 * P, K - k1))
    second = model.rollout(*args, memory=table)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, rtol=0, atol=0)
    assert not torch.equal(model.rollout(*args, memory="observed"), second)


def test_per_row_offsets_equal_each_row_with_its_own_offset() -> None:
    """Rows that started at different slots (vectorised envs) carry one offset each."""
    model, batch = _model(memory_age=3), _long_batch(seed=9)
    table = DailyMemory(batch["traffic"][:, H - S : H], batch["actions"][:, H - S : H],
                        batch["active"][:, H - S : H], offset=0)  # fmt: skip
    offsets = [S - H + 5, 2 * S + 3]  # row 0: still partly in the window; row 1: 2 days on
    args = _args(batch, 0, 2)
    both = model.rollout(*args, memory=dataclasses.replace(table, offset=torch.tensor(offsets)))
    for row, off in enumerate(offsets):
        alone = model.rollout(*args, memory=dataclasses.replace(table, offset=off))
        torch.testing.assert_close(both[row], alone[row], rtol=0, atol=0)
    plain = model.rollout(*args, memory=dataclasses.replace(table, offset=offsets[0]))
    assert not torch.equal(both[1], plain[1])  # the offsets really differ per row
    as_array = dataclasses.replace(table, offset=__import__("numpy").array(offsets))
    torch.testing.assert_close(model.rollout(*args, memory=as_array), both, rtol=0, atol=0)
    for bad, match in (([1, 2, 3], "one integer per row"), (torch.tensor([1.0, 2.0]), "integers")):
        with pytest.raises(ValueError, match=match):
            model.rollout(*args, memory=dataclasses.replace(table, offset=bad))


def test_memory_validation() -> None:
    model, batch = _model(), _long_batch()
    args = _args(batch, 0, 1)
    with pytest.raises(ValueError, match="memory must be one of"):
        model.rollout(*args, memory="yesterday")
    good = DailyMemory(torch.ones(2, S, 7), torch.zeros(2, S, 7, 4),
                       torch.ones(2, S, 7, dtype=torch.bool), offset=S)  # fmt: skip
    model.rollout(*args, memory=good)
    with pytest.raises(ValueError, match="memory.traffic"):
        model.rollout(*args, memory=dataclasses.replace(good, traffic=torch.ones(2, S - 1, 7)))
    with pytest.raises(ValueError, match="memory.actions"):
        model.rollout(*args, memory=dataclasses.replace(good, actions=torch.zeros(2, S, 7, 3)))
    with pytest.raises(ValueError, match="finite and >= 0"):
        model.rollout(*args, memory=dataclasses.replace(good, traffic=-torch.ones(2, S, 7)))
    with pytest.raises(ValueError, match="offset must be an integer"):
        model.rollout(*args, memory=dataclasses.replace(good, offset=1.5))
    plain = make_model(history=8, horizon=P).eval()
    pb = make_batch((5, 7), history=8, horizon=P)
    p_args = (pb["traffic"][:, :8], pb["actions"][:, :8], pb["actions"][:, 8:],
              {k: pb[k] for k in ("poi", "od", "facility", "cell_xy", "extent_m")},
              {"cell_mask": pb["cell_mask"], "active": pb["active"]},
              {k: pb[k] for k in ("slot_of_day", "day_of_week")})  # fmt: skip
    torch.testing.assert_close(plain.rollout(*p_args), plain.rollout(*p_args, memory="predicted"))
    with pytest.raises(ValueError, match="needs a model with a daily memory"):
        plain.rollout(*p_args, memory=good)


def test_the_memory_age_is_an_input() -> None:
    """``memory_age > 1``: the same memory values read as older change the prediction; a
    one-day memory in a batch reads as age 1 (the model's default input)."""
    model = _model(memory_age=3)
    batch = make_batch((5, 7), history=H, horizon=P, seed=4, all_active=True)
    week = (batch["slot_of_day"][:, :1] + torch.arange(H + P)) % (7 * S)
    batch["slot_of_day"], batch["day_of_week"] = week % S, week // S
    base = model(batch)
    older = dict(batch, day_of_week=batch["day_of_week"].clone())
    older["day_of_week"][:, : H + P - S] = (older["day_of_week"][:, : H + P - S] - 2) % 7
    assert (model(older) - base).abs().max() > 1e-4  # three days old instead of one
    z = model.normalizer.normalize(batch["traffic"][:, :H])
    ctx = model.encode_context(batch["poi"], batch["od"], batch["facility"], batch["cell_xy"],
                               batch["extent_m"], batch["cell_mask"])  # fmt: skip
    from worldmodel.model.normalize import normalize_actions

    feat = normalize_actions(batch["actions"], batch["active"])
    od_index = torch.arange(H + P).expand(2, -1)
    one = torch.ones(2, H + P - S, 7, dtype=torch.long)
    args = (z, feat, batch["active"], batch["slot_of_day"], batch["day_of_week"], ctx, od_index)
    torch.testing.assert_close(model._core(*args, one), model._core(*args))
    assert (model._core(*args, 3 * one) - model._core(*args)).abs().max() > 1e-4
    with pytest.raises(ValueError, match="memory_age must be in"):
        _model(memory_age=7)
    with pytest.raises(ValueError, match="one-day memory"):
        make_model(history=H, season=S, horizon=P, memory_age=2)  # slots_per_day 96 != S
