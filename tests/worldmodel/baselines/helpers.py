"""Window batches for the baseline tests."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from worldmodel.twin.scenario import POI_CATEGORIES


def make_batch(
    n_cells: Sequence[int] = (4, 6),
    t: int = 12,
    seed: int = 0,
    all_active: bool = False,
    grid: int = 4,
    facility_px: int = 16,
) -> dict[str, torch.Tensor]:
    """Valid graph batch of ``len(n_cells)`` maps over ``t`` slots, padded to ``max(n_cells)``."""
    g = torch.Generator().manual_seed(seed)
    b, n = len(n_cells), max(n_cells)
    cell_mask = torch.zeros(b, n, dtype=torch.bool)
    for i, k in enumerate(n_cells):
        cell_mask[i, :k] = True
    active = cell_mask[:, None, :].expand(b, t, n).clone()
    if not all_active:
        active &= torch.rand(b, t, n, generator=g) > 0.15
    traffic = torch.where(active, torch.rand(b, t, n, generator=g) * 50.0 + 1.0, 0.0)
    actions = torch.stack(
        [
            30.0 + 16.0 * torch.rand(b, t, n, generator=g),
            360.0 * torch.rand(b, t, n, generator=g),
            15.0 * torch.rand(b, t, n, generator=g),
            12.0 * torch.rand(b, t, n, generator=g),
        ],
        dim=-1,
    )
    actions = torch.where(cell_mask[:, None, :, None], actions, 0.0)
    week = (torch.randint(0, 672, (b, 1), generator=g) + torch.arange(t)) % 672
    return {
        "traffic": traffic,
        "actions": actions,
        "active": active,
        "cell_mask": cell_mask,
        "cell_xy": torch.rand(b, n, 2, generator=g) * 1000.0 * cell_mask[..., None],
        "extent_m": torch.full((b,), 1000.0),
        "slot_of_day": week % 96,
        "day_of_week": week // 96,
        "poi": torch.rand(b, grid, grid, len(POI_CATEGORIES), generator=g) * 5.0,
        "od": torch.rand(b, t, 2, grid, grid, generator=g) * 100.0,
        "facility": torch.rand(b, 2, facility_px, facility_px, generator=g),
    }
