"""The world model's predictive distribution inside the env (``EnvConfig.uncertainty``).

* ``"off"`` (default): the point prediction, as before; no extra info.
* ``"report"``: the point prediction, plus ``info["traffic_std"] [E, P, N]`` (MB, the standard
  deviation of the model's predictive distribution of each slot's traffic) and
  ``info["ood_score"] [E]`` (support distance of the parameters now from those of the episode's
  last observed slot; above ``info["ood_threshold"]`` the plan has left the training data).
* ``"sample"``: as ``"report"``, but the traffic is *drawn* from the predictive distribution
  (seeded by ``reset(seed=...)``), slots linked per cell by the head's AR(1) Gaussian copula:
  stochastic dynamics for training policies that must cope with the model's uncertainty.

Both need a checkpoint with a quantile head (``python -m worldmodel.uncertainty.train``). The
lead time the head reads is the number of slots the env has predicted since its reset, so the
spread grows over an episode as the model's error does.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

UNCERTAINTY_MODES = ("off", "report", "sample")
"""``EnvConfig.uncertainty`` values (see the module doc)."""


class PredictiveState:
    """Per-env state of the predictive distribution: lead time, reference parameters, and the
    copula's last normal score per cell (``"sample"``)."""

    def __init__(self, model: Any, mode: str, n_envs: int, n_cells: int, checkpoint: str) -> None:
        if mode not in UNCERTAINTY_MODES:
            raise ValueError(f"uncertainty must be one of {UNCERTAINTY_MODES}, got {mode!r}")
        self.mode = mode
        self.head = model.uncertainty_head if mode != "off" else None
        if mode != "off" and self.head is None:
            raise ValueError(
                f"uncertainty={mode!r} needs a checkpoint with a quantile head; {checkpoint} has "
                f"none: fit one with `python -m worldmodel.uncertainty.train --checkpoint "
                f"{checkpoint}`"
            )
        self.lead = np.zeros(n_envs, dtype=np.int64)
        self.reference = np.zeros((n_envs, n_cells, 4), dtype=np.float64)
        self.eps = np.zeros((n_envs, n_cells))
        self.crn_period = 0  # > 0: rows r and r + k·period share their draws (planners)
        self._frozen = False

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Steps inside return the point prediction and leave the lead time and the copula
        untouched (the core's one-step demand calibration at reset)."""
        self._frozen = True
        try:
            yield
        finally:
            self._frozen = False

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    @property
    def threshold(self) -> float:
        s = self.head.support if self.head is not None else None
        return float(s.threshold) if s is not None else math.inf

    def reset(self, env_ids: np.ndarray, params: np.ndarray, generator: Any) -> None:
        """Start the episodes of ``env_ids``: lead 0, reference ``params [k, N, 4]``, and a
        stationary first normal score per cell."""
        import torch

        ids = np.asarray(env_ids, dtype=np.int64)
        self.lead[ids] = 0
        self.reference[ids] = params
        if self.mode == "sample":
            draw = torch.randn((len(ids), self.eps.shape[1]), generator=generator)
            self.eps[ids] = draw.double().numpy()

    def common_draws(self, period: int, params: np.ndarray, generator: Any) -> None:
        """Restart every row at lead 0 from ``params [E, N, 4]`` with draws shared by rows ``r``
        and ``r + k·period`` (a planner's candidates of one env: common random numbers)."""
        import torch

        e, c = self.eps.shape
        if period < 1 or e % period:
            raise ValueError(f"period must divide the {e} rows, got {period}")
        self.crn_period = int(period)
        self.lead[:] = 0
        self.reference[:] = params
        base = torch.randn((period, c), generator=generator, dtype=torch.float64).numpy()
        self.eps = np.tile(base, (e // period, 1))

    def step(
        self, forecast: Any, params: np.ndarray, active: np.ndarray, n_slots: int, generator: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(traffic [E, n, N], traffic_std [E, n, N], ood_score [E])`` of one env step from
        the rollout's ``Forecast``; advances the lead time by ``n_slots``."""
        import torch

        from worldmodel.model.uncertainty import sample_quantiles

        q = forecast.quantiles[:, :n_slots]
        std = forecast.std()[:, :n_slots].double().cpu().numpy()
        if self.mode == "sample" and not self._frozen:
            u = self._uniforms(n_slots, generator)
            lv = torch.tensor(forecast.levels, dtype=q.dtype, device=q.device)
            traffic = sample_quantiles(q, lv, torch.as_tensor(u, device=q.device))
        else:
            traffic = forecast.point[:, :n_slots]
        traffic = traffic.double().cpu().numpy()
        ood = np.full(len(self.lead), np.nan)
        s = self.head.support
        if s is not None:
            plan = torch.as_tensor(params, dtype=torch.float64)[:, None]
            on = torch.as_tensor(np.broadcast_to(active, params.shape[:2]).copy())[:, None]
            ood = s.score(plan, torch.as_tensor(self.reference), on).numpy()
        if not self._frozen:
            self.lead += int(n_slots)
        return traffic, std, ood

    def _uniforms(self, n_slots: int, generator: Any) -> np.ndarray:
        """``[E, n, N]`` uniforms of the AR(1) copula continuing ``eps`` (with ``crn_period``,
        every row repeats the draws of row ``r mod period``)."""
        import torch

        e, c = self.eps.shape
        rows = self.crn_period if 0 < self.crn_period < e else e
        rho = float(self.head.cfg.copula_rho)
        s = math.sqrt(1.0 - rho * rho)
        new = torch.randn((rows, n_slots, c), generator=generator, dtype=torch.float64).numpy()
        if rows < e:
            new = np.tile(new, (-(-e // rows), 1, 1))[:e]
        out = np.empty((e, n_slots, c))
        prev = self.eps
        for t in range(n_slots):
            prev = rho * prev + s * new[:, t]
            out[:, t] = prev
        self.eps = prev
        return torch.special.ndtr(torch.as_tensor(out)).numpy()
