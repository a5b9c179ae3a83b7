"""Synthetic, valid ``WorldBatch`` builders for the MobiWM tests (per the batch contract)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch

from worldmodel.model import MobiWM, ModelConfig, preset

BatchFactory = Callable[..., dict[str, torch.Tensor]]


def make_batch(
    n_cells: Sequence[int] = (5, 7),
    history: int = 8,
    horizon: int = 4,
    grid: int = 8,
    facility_px: int = 32,
    n_pad: int | None = None,
    seed: int = 0,
    extent_m: float = 2000.0,
    all_active: bool = False,
) -> dict[str, torch.Tensor]:
    """Random but valid batch of ``len(n_cells)`` maps padded to ``max(n_cells)`` (or ``n_pad``).

    Padded cells hold garbage-free zeros; some real cells are switched off at random slots
    (with ~0 traffic) unless ``all_active``.
    """
    g = torch.Generator().manual_seed(seed)
    b, t = len(n_cells), history + horizon
    n = n_pad or max(n_cells)
    cell_mask = torch.zeros(b, n, dtype=torch.bool)
    for i, k in enumerate(n_cells):
        cell_mask[i, :k] = True
    active = torch.ones(b, t, n, dtype=torch.bool)
    if not all_active:
        active &= torch.rand(b, t, n, generator=g) > 0.1
    active &= cell_mask[:, None, :]
    traffic = torch.rand(b, t, n, generator=g) * 50.0 + 1.0
    traffic = torch.where(active, traffic, torch.zeros(()))
    actions = torch.stack(
        [
            30.0 + 16.0 * torch.rand(b, t, n, generator=g),
            720.0 * torch.rand(b, t, n, generator=g) - 180.0,
            15.0 * torch.rand(b, t, n, generator=g),
            12.0 * torch.rand(b, t, n, generator=g),
        ],
        dim=-1,
    )
    actions = torch.where(cell_mask[:, None, :, None], actions, torch.zeros(()))
    start = torch.randint(0, 7 * 96, (b,), generator=g)
    week = (start[:, None] + torch.arange(t)[None, :]) % (7 * 96)
    extent = torch.full((b,), extent_m)
    cell_xy = torch.rand(b, n, 2, generator=g) * extent_m
    cell_xy = torch.where(cell_mask[..., None], cell_xy, torch.zeros(()))
    return {
        "traffic": traffic,
        "actions": actions,
        "active": active,
        "cell_mask": cell_mask,
        "cell_xy": cell_xy,
        "extent_m": extent,
        "slot_of_day": week % 96,
        "day_of_week": week // 96,
        "poi": torch.poisson(torch.rand(b, grid, grid, 8, generator=g) * 3.0, generator=g),
        "od": torch.rand(b, t, 2, grid, grid, generator=g) * 100.0,
        "facility": torch.rand(b, 2, facility_px, facility_px, generator=g),
    }


def prior_inputs(model: MobiWM, batch: dict[str, torch.Tensor], history: int, gain: float):
    """Zero ``model``'s prediction head and set its ``coverage_gain`` (so that its output is the
    anchor plus the coverage prior's term only), and return the map context and the prepared
    inputs ``(ctx, z, action features, active)`` of ``batch``'s first ``history`` slots."""
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.coverage_gain.fill_(gain)
    ctx = model.encode_context(batch["poi"], batch["od"], batch["facility"], batch["cell_xy"],
                               batch["extent_m"], batch["cell_mask"])  # fmt: skip
    z, feat, on = model._prepare(batch["traffic"][:, :history], batch["actions"], batch["active"],
                                 ctx.cell_mask)  # fmt: skip
    return ctx, z, feat, on


def with_padding_garbage(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy of ``batch`` whose padded cells hold garbage in every per-cell input (huge and
    non-finite traffic and actions, active flags on, far-away positions); real cells are
    untouched, so a model's real outputs must not change."""
    out = {k: v.clone() for k, v in batch.items()}
    pad = ~out["cell_mask"]  # [B, N]
    pad_t = pad[:, None, :].expand(-1, out["traffic"].shape[1], -1)
    n_pad = int(pad_t.sum())
    out["traffic"][pad_t] = torch.tensor([1e6, float("nan")]).repeat(n_pad)[:n_pad]
    out["actions"][pad_t] = torch.tensor([99.0, -1e4, 1e3, float("inf")])
    out["active"][pad_t] = True
    out["cell_xy"][pad] = torch.tensor([1e7, -5.0])
    return out


def make_model(seed: int = 0, **overrides: object) -> MobiWM:
    """Tiny ``debug`` model with fitted-looking normaliser statistics."""
    torch.manual_seed(seed)
    cfg: ModelConfig = preset("debug", **overrides)
    model = MobiWM(cfg)
    model.normalizer.set_stats(scale=20.0, mean=0.7, std=0.5)
    return model


@pytest.fixture
def batch_factory() -> BatchFactory:
    return make_batch


@pytest.fixture
def model_factory() -> Callable[..., MobiWM]:
    return make_model
