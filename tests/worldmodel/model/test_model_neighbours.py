"""Spatial attention over each cell's neighbours (``ModelConfig.spatial_neighbours``)."""

from __future__ import annotations

import pytest
import torch

import worldmodel.model.mobiwm as mobiwm_mod
from tests.worldmodel.model.conftest import make_batch, make_model, with_padding_garbage
from worldmodel.model.layers import FSTBlock, attention_mask, neighbour_index


def test_neighbour_index_is_self_first_then_nearest_real_cells() -> None:
    xy = torch.tensor([[[0.0, 0.0], [10.0, 0.0], [0.0, 0.0], [500.0, 0.0], [30.0, 0.0]]])
    mask = torch.tensor([[True, True, True, True, False]])
    nb = neighbour_index(xy, mask, 3)
    assert nb.shape == (1, 5, 3)
    assert nb[0, 0].tolist() == [0, 2, 1]  # itself, the co-sited cell, then 10 m away
    assert nb[0, 2].tolist() == [2, 0, 1]
    assert nb[0, 3].tolist() == [3, 1, 0]  # the padded cell 4 (30 m) is never a neighbour
    assert neighbour_index(xy, mask, 99).shape == (1, 5, 5)


def test_a_block_reads_only_the_neighbours_in_both_implementations() -> None:
    torch.manual_seed(0)
    b, t, n, d = 2, 3, 9, 16
    block = FSTBlock(d, 2, 2, 0.0).eval()
    xy = torch.rand(b, n, 2) * 1000
    mask = torch.ones(b, n, dtype=torch.bool)
    nb = neighbour_index(xy, mask, 4)
    bias = torch.randn(b, 2, n, 4)
    x = torch.randn(b, t, n, d)
    dense_mask = attention_mask(bias, mask, 2, nb, dense=True)
    dense = block(x, dense_mask.repeat_interleave(t, 0), None)
    gathered = block(x, attention_mask(bias, mask, 2, nb, dense=False), None, nb)
    torch.testing.assert_close(gathered, dense, rtol=1e-5, atol=1e-5)
    # moving a cell that is no neighbour of cell 0 leaves cell 0's output unchanged
    far = next(j for j in range(n) if j not in nb[0, 0].tolist())
    x2 = x.clone()
    x2[0, :, far] += 5.0
    out2 = block(x2, attention_mask(bias, mask, 2, nb, dense=False), None, nb)
    # (the temporal sub-layer only mixes a cell's own slots)
    torch.testing.assert_close(out2[0, :, 0], gathered[0, :, 0])
    assert not torch.allclose(out2[0, :, far], gathered[0, :, far])


def test_every_cell_as_neighbour_equals_all_pairs_attention() -> None:
    batch = make_batch(n_cells=(5, 7), seed=1)
    full = make_model(seed=3).eval()
    every = make_model(seed=3, spatial_neighbours=7).eval()
    every.load_state_dict(full.state_dict())
    torch.testing.assert_close(every(batch), full(batch), rtol=1e-5, atol=1e-5)


def test_gathered_and_dense_neighbour_paths_agree_and_padding_is_inert(monkeypatch) -> None:
    model = make_model(seed=2, spatial_neighbours=3, coverage_prior=True).eval()
    batch = make_batch(n_cells=(5, 7), seed=2)
    dense = model(batch)
    monkeypatch.setattr(mobiwm_mod, "DENSE_NEIGHBOUR_MAX_CELLS", 0)
    gathered = model(batch)
    torch.testing.assert_close(gathered, dense, rtol=1e-5, atol=1e-5)
    padded = model(with_padding_garbage(batch))
    real = batch["cell_mask"][:, None, :].expand_as(dense)
    torch.testing.assert_close(padded[real], gathered[real], rtol=1e-6, atol=1e-6)
    everyone = make_model(seed=2, coverage_prior=True).eval()
    assert not torch.allclose(everyone(batch), dense)  # 3 of up to 7 cells: a real change


def test_config_checks() -> None:
    from worldmodel.model import preset

    with pytest.raises(ValueError, match="spatial_neighbours"):
        preset("debug", spatial_neighbours=-2)
    assert preset("XS", spatial_neighbours=16).spatial_neighbours == 16
