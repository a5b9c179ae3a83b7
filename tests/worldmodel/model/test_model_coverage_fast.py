"""The coverage prior's fast paths: candidate cells (``coverage_candidates``), parameter sets
shared between the rows of a one-map context, and the week's demand table."""

from __future__ import annotations

import pytest
import torch

from tests.worldmodel.model.conftest import make_batch, make_model
from worldmodel.model.coverage import CoveragePrior


def _inputs(model, batch):
    ctx = model.encode_context(batch["poi"], batch["od"], batch["facility"], batch["cell_xy"],
                               batch["extent_m"], batch["cell_mask"])  # fmt: skip
    _, feat, on = model._prepare(batch["traffic"], batch["actions"], batch["active"],
                                 ctx.cell_mask)  # fmt: skip
    return ctx, feat, on


def test_candidates_pick_the_nearest_real_cells_and_all_of_them_equal_the_dense_prior() -> None:
    model = make_model(coverage_prior=True)
    batch = make_batch(n_cells=(5, 7), seed=2)
    ctx, feat, on = _inputs(model, batch)
    geom, mask = ctx.coverage_geom, ctx.cell_mask
    idx, cgeom = CoveragePrior.candidate_geometry(geom, mask, 3)
    assert idx.shape == (2, geom.shape[-1], 3) and cgeom.shape == (2, 5, geom.shape[-1], 3)
    assert not (~mask[0][idx[0]]).any()  # map 0 has 5 real cells: padded cells never chosen
    # the candidates are the 3 smallest path losses of each pixel, in order
    pl = geom[:, 4].masked_fill(~mask[:, :, None], float("inf"))
    best = pl.sort(dim=1).values[:, :3].transpose(1, 2)
    torch.testing.assert_close(cgeom[:, 4], best)
    # K = every cell: the same association as the dense path
    dense, inv_d, on_d, _ = model.coverage.association(geom, feat, on)
    every = CoveragePrior.candidate_geometry(geom, mask, 99)
    cand, inv_c, on_c, _ = model.coverage.association(geom, feat, on, None, every)
    assert torch.equal(inv_d, inv_c) and torch.equal(on_d, on_c)
    torch.testing.assert_close(cand, dense, rtol=1e-5, atol=1e-6)
    # K < N: each pixel's weight sums to 1 over its active candidates, 0 elsewhere
    few, inv, on_u, _ = model.coverage.association(geom, feat, on, None, (idx, cgeom))
    sets_with_on = on_u.any(-1)
    torch.testing.assert_close(few.sum(1)[sets_with_on], torch.ones_like(few.sum(1)[sets_with_on]))
    rows = torch.arange(2).repeat_interleave(feat.shape[1])
    for u in range(len(few)):
        r = int(rows[(inv == u).nonzero()[0, 0]])
        outside = torch.ones_like(few[u], dtype=torch.bool)
        outside.scatter_(0, idx[r].T, False)
        assert (few[u][outside] == 0).all()


def test_a_candidate_model_runs_round_trips_and_its_config_is_checked(tmp_path) -> None:
    from worldmodel.model import load_checkpoint, preset, save_checkpoint

    with pytest.raises(ValueError, match="coverage_candidates"):
        preset("debug", coverage_candidates=4)  # needs the coverage prior
    with pytest.raises(ValueError, match="coverage_candidates"):
        preset("debug", coverage_prior=True, coverage_candidates=-1)
    model = make_model(coverage_prior=True, coverage_candidates=3).eval()
    batch = make_batch(n_cells=(5, 7), seed=4)
    out = model(batch)
    assert out.shape == (2, 4, 7) and torch.isfinite(out).all()
    save_checkpoint(model, tmp_path / "ck")
    back = load_checkpoint(tmp_path / "ck")
    assert back.cfg.coverage_candidates == 3
    assert torch.equal(back(batch), out)
    dense = make_model(coverage_prior=True).eval()
    assert not torch.allclose(dense(batch), out)  # candidates do change the prior


@pytest.mark.parametrize("candidates", [0, 3])
def test_one_map_broadcast_to_many_rows_shares_sets_and_equals_separate_rows(
    candidates: int,
) -> None:
    """A context broadcast from one map (stride 0, as the env builds it) merges equal
    parameter sets of different rows; the values equal those of a plain per-row context."""
    model = make_model(coverage_prior=True, coverage_daily_demand=True,
                       coverage_candidates=candidates)  # fmt: skip
    torch.nn.init.normal_(model.coverage.demand.fc2.weight, std=1.0)
    batch = make_batch(n_cells=(6,), seed=5, all_active=True)
    ctx, feat, on = _inputs(model, batch)
    rows = 4
    feat4, on4 = feat.expand(rows, -1, -1, -1).clone(), on.expand(rows, -1, -1).clone()
    feat4[1, 2:5] = feat4[1, 2:5].flip(-2)  # row 1 differs in a few slots
    sod = batch["slot_of_day"].expand(rows, -1)
    dow = batch["day_of_week"].expand(rows, -1)
    geom_b = ctx.coverage_geom.expand(rows, -1, -1, -1)  # stride 0
    pix_b = ctx.coverage_pixels.expand(rows, -1, -1)
    cand_b = None
    if candidates:
        cand_b = tuple(c.expand(rows, *c.shape[1:]) for c in ctx.coverage_candidates)
    geom_c, pix_c = geom_b.contiguous(), pix_b.contiguous()  # the same maps, not shared
    cand_c = None if cand_b is None else tuple(c.contiguous() for c in cand_b)
    shared = model.coverage.association(geom_b, feat4, on4, None, cand_b)[0]
    separate = model.coverage.association(geom_c, feat4, on4, None, cand_c)[0]
    assert len(shared) < len(separate)  # rows 0, 2, 3 hold the same sets
    with torch.no_grad():
        memo: dict = {}
        got = model.coverage(geom_b, pix_b, feat4, on4, sod, dow, memo, 96, cand_b)
        want = model.coverage(geom_c, pix_c, feat4, on4, sod, dow, None, 96, cand_c)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        # the week's demand table of a one-map context equals the proxy computed per slot
        table = model.coverage.daily_demand_at(pix_b, sod, dow, 96, memo)
        direct = model.coverage.demand_weights(pix_c, sod, dow, 96)
        torch.testing.assert_close(table, direct, rtol=1e-5, atol=1e-7)
        assert any(isinstance(v, torch.Tensor) and v.shape[0] == 7 * 96 for v in memo.values())
