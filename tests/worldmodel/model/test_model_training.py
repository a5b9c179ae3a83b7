"""A tiny synthetic task where future traffic depends on the future power: MobiWM learns it."""

from __future__ import annotations

import time

import torch

from tests.worldmodel.model.conftest import make_batch
from worldmodel.model import MobiWM, preset

STEPS = 150


def _task_batch(gen: torch.Generator, n_maps: int = 4, n_cells: int = 6) -> dict[str, torch.Tensor]:
    """Traffic of each future slot = the cell's base level × exp(0.8 · (power − 38) / 8)."""
    batch = make_batch(
        n_cells=[n_cells] * n_maps, grid=8, facility_px=16, all_active=True,
        seed=int(torch.randint(0, 2**30, (1,), generator=gen)),
    )  # fmt: skip
    h = 8
    base = 5.0 + 45.0 * torch.rand(n_maps, 1, n_cells, generator=gen)
    noise = 1.0 + 0.05 * torch.randn(n_maps, h, n_cells, generator=gen)
    power = batch["actions"][:, h:, :, 0]
    batch["traffic"] = torch.cat([base * noise, base * torch.exp(0.8 * (power - 38.0) / 8.0)], 1)
    return batch


def test_training_learns_future_action_effect() -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    model = MobiWM(preset("debug", facility_fine_px=8))
    fit_batch = _task_batch(gen)
    model.normalizer.fit(fit_batch["traffic"], fit_batch["active"])
    eval_batch = _task_batch(torch.Generator().manual_seed(123))
    with torch.no_grad():
        initial = float(model.eval().loss(eval_batch)[0])
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    start = time.perf_counter()
    for _ in range(STEPS):
        loss, _ = model.loss(_task_batch(gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
    elapsed = time.perf_counter() - start
    with torch.no_grad():
        final = float(model.eval().loss(eval_batch)[0])
    print(f"synthetic task: loss {initial:.4f} -> {final:.4f} in {STEPS} steps ({elapsed:.1f} s)")
    assert final < 0.2 * initial
