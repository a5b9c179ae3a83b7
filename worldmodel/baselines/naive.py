"""Copies of the past: the untrained baselines of Table 1.

* ``Persistence`` — every future slot repeats the last history value.
* ``SeasonalNaive`` — every future slot repeats the same slot one day (96 slots) earlier.
"""

from __future__ import annotations

from typing import Any

import torch

from worldmodel.baselines.interface import Batch, BatchWorldModel, check_window, future_valid


def check_int(name: str, value: Any, low: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


class Persistence(BatchWorldModel):
    """Every future slot = the cell's traffic in the last history slot (0 if inactive/padded).

    Uses no actions; ``history`` only sets the window length it expects (it reads slot
    ``H − 1``). Rolled out, it repeats that value forever.
    """

    def __init__(self, history: int = 1, horizon: int = 4) -> None:
        self.history = check_int("history", history)
        self.horizon = check_int("horizon", horizon)

    @torch.no_grad()
    def predict_batch(self, batch: Batch) -> torch.Tensor:
        h, p = self.history, self.horizon
        check_window(batch, h, p)
        last = torch.nan_to_num(batch["traffic"][:, h - 1 : h]).clamp_min(0.0)
        out = last.expand(-1, p, -1)
        return torch.where(future_valid(batch, h), out, torch.zeros((), dtype=out.dtype))


class SeasonalNaive(BatchWorldModel):
    """Every future slot = the cell's traffic ``season`` slots (one day) earlier.

    Needs ``history ≥ season`` (default ``history = season = 96``: give it a one-day warm start
    by ``align_batch`` on a window with at least that much history). For ``P > season`` and in
    rollouts it reads its own earlier predictions once the source slot lies beyond the history.
    Inactive / padded cells → 0; a source slot where the cell was off contributes 0. Assumes
    the window's slots are consecutive.
    """

    def __init__(self, horizon: int = 4, season: int = 96, history: int | None = None) -> None:
        self.season = check_int("season", season)
        history = season if history is None else history
        self.history = check_int("history", history)
        if self.history < self.season:
            raise ValueError(f"history ({history}) must be >= season ({season})")
        self.horizon = check_int("horizon", horizon)

    @torch.no_grad()
    def predict_batch(self, batch: Batch) -> torch.Tensor:
        h, p, s = self.history, self.horizon, self.season
        check_window(batch, h, p)
        valid = future_valid(batch, h)
        ext = torch.nan_to_num(batch["traffic"][:, :h]).clamp_min(0.0)
        zero = torch.zeros((), dtype=ext.dtype, device=ext.device)
        for j in range(0, p, s):  # blocks of at most one season
            e = j + min(s, p - j)
            block = ext[:, h + j - s : h + e - s]
            ext = torch.cat([ext, torch.where(valid[:, j:e], block, zero)], dim=1)
        return ext[:, h:]
