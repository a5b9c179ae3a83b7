"""MobiWM inference API: encode_context, predict, rollout."""

from __future__ import annotations

import pytest
import torch

from tests.worldmodel.model.conftest import make_batch, make_model
from worldmodel.model import ContextCache, MobiWM

H, P = 8, 4


def _inputs(batch: dict[str, torch.Tensor]) -> dict:
    """``predict`` arguments equivalent to the window of a training batch (window OD)."""
    week0 = batch["day_of_week"][:, 0] * 96 + batch["slot_of_day"][:, 0]
    context = {k: batch[k] for k in ("poi", "od", "facility", "cell_xy", "extent_m")}
    context["od_start_week_slot"] = week0
    return {
        "history_traffic": batch["traffic"][:, :H],
        "history_actions": batch["actions"][:, :H],
        "future_actions": batch["actions"][:, H:],
        "context": context,
        "mask": {"cell_mask": batch["cell_mask"], "active": batch["active"]},
        "time": {"slot_of_day": batch["slot_of_day"], "day_of_week": batch["day_of_week"]},
    }


def test_predict_matches_forward_and_is_physical() -> None:
    model = make_model()
    batch = make_batch(seed=1)
    pred = model.predict(**_inputs(batch))
    assert model.training  # predict switches to eval and back
    assert pred.shape == (2, P, 7) and not pred.requires_grad
    assert (pred >= 0).all()
    off = ~(batch["active"][:, H:] & batch["cell_mask"][:, None])
    assert off.any() and (pred[off] == 0).all()
    with torch.no_grad():
        ref = model.eval()(batch)
    expected = torch.where(~off, model.normalizer.denormalize(ref), 0.0)
    torch.testing.assert_close(pred, expected, rtol=1e-5, atol=1e-5)


def test_context_cache_equals_dict_context() -> None:
    model = make_model().eval()
    batch = make_batch(seed=2)
    args = _inputs(batch)
    c = args["context"]
    with torch.no_grad():
        cache = model.encode_context(
            c["poi"], c["od"], c["facility"], c["cell_xy"], c["extent_m"], batch["cell_mask"],
            c["od_start_week_slot"],
        )  # fmt: skip
    assert isinstance(cache, ContextCache) and cache.n_od_slots == H + P
    assert torch.equal(model.predict(**dict(args, context=cache)), model.predict(**args))


def test_week_od_cache_indexes_by_week_slot() -> None:
    """A cache of a whole week of OD gives the same prediction as the window's own OD slices."""
    model = make_model().eval()
    batch = make_batch(seed=3, grid=8)
    week_od = torch.rand(2, 7 * 96, 2, 8, 8) * 100.0
    week = batch["day_of_week"] * 96 + batch["slot_of_day"]  # [B, T]
    batch["od"] = week_od[torch.arange(2)[:, None], week]
    args = _inputs(batch)
    window_pred = model.predict(**args)
    week_ctx = dict(args["context"], od=week_od)
    del week_ctx["od_start_week_slot"]  # default 0: the cache starts Monday 00:00
    torch.testing.assert_close(model.predict(**dict(args, context=week_ctx)), window_pred)
    # explicit od_index overrides the time-derived one
    timed = dict(args["time"], od_index=week)
    torch.testing.assert_close(
        model.predict(**dict(args, context=week_ctx, time=timed)), window_pred
    )


def _rollout_case(k: int, seed: int = 4) -> tuple[MobiWM, dict, ContextCache]:
    model = make_model().eval()
    total = H + k * P
    batch = make_batch(seed=seed, history=H, horizon=k * P)
    batch["active"][:, :, 2] = True
    batch["active"][:, H + 3 :, 2] = False  # a cell switched off during the rollout
    cache = model.encode_context(
        batch["poi"], batch["od"], batch["facility"], batch["cell_xy"], batch["extent_m"],
        batch["cell_mask"], batch["day_of_week"][:, 0] * 96 + batch["slot_of_day"][:, 0],
    )  # fmt: skip
    assert batch["traffic"].shape[1] == total
    return model, batch, cache


def test_rollout_equals_chained_predict() -> None:
    k = 3
    model, batch, cache = _rollout_case(k)
    time = {"slot_of_day": batch["slot_of_day"], "day_of_week": batch["day_of_week"]}
    mask = {"cell_mask": batch["cell_mask"], "active": batch["active"]}
    out = model.rollout(
        batch["traffic"][:, :H], batch["actions"][:, :H], batch["actions"][:, H:], cache, mask,
        time, n_chunks=k,
    )  # fmt: skip
    assert out.shape == (2, k * P, 7) and (out >= 0).all()
    assert (out[:, 3:, 2] == 0).all()  # switched off from slot H + 3 on

    hist, chunks = batch["traffic"][:, :H], []
    for c in range(k):
        s, e = c * P, c * P + H + P
        pred = model.predict(
            hist,
            batch["actions"][:, s : s + H],
            batch["actions"][:, s + H : e],
            cache,
            {"cell_mask": batch["cell_mask"], "active": batch["active"][:, s:e]},
            {
                "slot_of_day": batch["slot_of_day"][:, s:e],
                "day_of_week": batch["day_of_week"][:, s:e],
            },
        )
        chunks.append(pred)
        hist = torch.cat([hist, pred], dim=1)[:, -H:]
    torch.testing.assert_close(out, torch.cat(chunks, dim=1), rtol=0, atol=0)


def test_rollout_feeds_predictions_back() -> None:
    """Chunk 2 depends on chunk 1's prediction, not on the (ignored) true traffic."""
    model, batch, cache = _rollout_case(2, seed=5)
    time = {"slot_of_day": batch["slot_of_day"], "day_of_week": batch["day_of_week"]}
    mask = {"active": batch["active"]}
    args = (batch["actions"][:, :H], batch["actions"][:, H:], cache, mask, time)
    base = model.rollout(batch["traffic"][:, :H], *args)
    bumped = batch["traffic"][:, :H].clone()
    bumped[:, -1] *= 3.0
    out = model.rollout(bumped, *args)
    assert (out[:, P:] - base[:, P:]).abs().max() > 1e-4


def test_rollout_validation() -> None:
    model, batch, cache = _rollout_case(2)
    time = {"slot_of_day": batch["slot_of_day"], "day_of_week": batch["day_of_week"]}
    hist, h_act, f_act = batch["traffic"][:, :H], batch["actions"][:, :H], batch["actions"][:, H:]
    with pytest.raises(ValueError, match="n_chunks"):
        model.rollout(hist, h_act, f_act[:, :-1], cache, None, time)
    with pytest.raises(ValueError, match="n_chunks"):
        model.rollout(hist, h_act, f_act, cache, None, time, n_chunks=3)
    with pytest.raises(ValueError, match="history_traffic has H=7"):
        model.rollout(hist[:, 1:], h_act, f_act, cache, None, time)
    bad_time = dict(time, slot_of_day=time["slot_of_day"] + 96)
    with pytest.raises(ValueError, match="slot_of_day"):
        model.rollout(hist, h_act, f_act, cache, None, bad_time)
    with pytest.raises(ValueError, match="slot_of_day"):
        model.rollout(
            hist, h_act, f_act, cache, None, dict(time, slot_of_day=time["slot_of_day"][:, 1:])
        )
    with pytest.raises(ValueError, match="context is for"):
        model.rollout(
            hist[:1], h_act[:1], f_act[:1], cache, None, {k: v[:1] for k, v in time.items()}
        )
    wrong_mask = {"cell_mask": torch.ones_like(batch["cell_mask"])}
    with pytest.raises(ValueError, match="cell_mask"):
        model.rollout(hist, h_act, f_act, cache, wrong_mask, time)
    nan_hist = hist.clone()
    nan_hist[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        model.rollout(nan_hist, h_act, f_act, cache, None, time)


def test_predict_accepts_numpy() -> None:
    model = make_model()
    args = _inputs(make_batch(seed=6))
    as_np = {
        k: ({kk: vv.numpy() for kk, vv in v.items()} if isinstance(v, dict) else v.numpy())
        for k, v in args.items()
    }
    torch.testing.assert_close(model.predict(**as_np), model.predict(**args))
