"""The shared policy's message layer: the factored attention equals the per-edge formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents import policies
from agents.policies import _MessageLayer, neighbour_index


def per_edge_reference(layer: _MessageLayer, h, nbr, geo, beam, valid) -> torch.Tensor:
    """The textbook form: every edge's key and value ``kv(h_j) + geo(e_ij) + beam(b_ij)``."""
    b, m, c = h.shape
    k, nh, d = nbr.shape[1], layer.h, layer.d
    kv = layer.kv(h)[:, nbr] + layer.geo(geo) + layer.beam(beam)  # [B, M, K, 2C]
    key, val = kv.chunk(2, dim=-1)
    q = layer.q(h).reshape(b, m, 1, nh, d)
    logits = (q * key.reshape(b, m, k, nh, d)).sum(-1) / d**0.5
    logits = logits.masked_fill(~valid[..., None], -1e9)
    att = torch.softmax(logits, dim=2) * valid[..., None]
    msg = (att[..., None] * val.reshape(b, m, k, nh, d)).sum(2).reshape(b, m, c)
    out = layer.norm1(h + layer.out(msg))
    return layer.norm2(out + layer.ffn(out))


@pytest.mark.parametrize("dense_max", [256, 0], ids=["dense", "gather"])
def test_message_layer_equals_the_per_edge_formula(monkeypatch, dense_max: int) -> None:
    monkeypatch.setattr(policies, "DENSE_MAX_CELLS", dense_max)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    b, n, m, k, c = 3, 9, 11, 4, 16  # 9 real cells padded to 11
    xy = rng.uniform(0, 2000, (n, 2))
    nbr = torch.as_tensor(neighbour_index(xy, n, m, k))
    layer = _MessageLayer(c, n_heads=2)
    h = torch.randn(b, m, c, requires_grad=True)
    geo = torch.randn(m, k, 3)
    beam = torch.randn(b, m, k, 4)
    valid = nbr != torch.arange(m)[:, None]
    valid = valid[None] & (torch.rand(b, m, k) > 0.2)  # some neighbours switched off
    got = layer(h, nbr, geo, beam, valid)
    want = per_edge_reference(layer, h, nbr, geo, beam, valid)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    g_got = torch.autograd.grad(got.square().sum(), [h, *layer.parameters()])
    g_want = torch.autograd.grad(want.square().sum(), [h, *layer.parameters()])
    for a, w in zip(g_got, g_want, strict=True):
        torch.testing.assert_close(a, w, rtol=1e-4, atol=1e-5)
