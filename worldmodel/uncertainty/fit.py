"""Fit MobiWM's quantile head on its frozen network, and the out-of-distribution gate.

The head must be calibrated where the model is used: in rollouts, whose error grows with the lead
time. So its training data are rollouts, not teacher-forced windows: from ``n_origins`` forecast
origins per map (spread evenly after the warm start) the frozen network rolls out ``lead_slots``
slots from the true history with the true actions, and every predicted (cell, slot) gives one
example — the decoder's features, the point prediction, the lead time — and its target, the true
traffic. A random share ``keep`` of the examples is kept (neighbouring slots are near copies).

* ``fit_head``: pinball loss over the levels in normalised space (quantiles are equivariant
  under the monotone normalisation, so they are the quantiles in MB too), Adam, the epoch with
  the lowest validation loss kept.
* ``fit_temperature``: one scale of every quantile's distance from the median, the one of
  lowest validation pinball loss on a grid (recalibration on held-out maps).
* ``fit_copula_rho``: lag-1 correlation of the probit of the validation PIT along each cell's
  rollout (what ``Forecast.sample`` uses to link slots).
* ``fit_support`` / ``plan_scores``: the training data's parameter ranges and changes, and the
  support distance of counterfactual plans (the gate's threshold comes from validation plans).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.ndimage import maximum_filter1d, minimum_filter1d
from tqdm.auto import tqdm

from worldmodel.baselines import MobiWMAdapter, slice_window
from worldmodel.data.format import MapRecord
from worldmodel.evaluate.batches import origin_batches
from worldmodel.model.mobiwm import MobiWM
from worldmodel.model.uncertainty import ActionSupport, Forecast, QuantileHead
from worldmodel.twin.scenario import AZIMUTH, SLOTS_PER_DAY
from worldmodel.uncertainty import metrics

ORIGIN_BATCH = 32  # (map, origin) rows per rollout call
CHANGE_QUANTILE = 99.9  # percentile of the training data's parameter changes = the support


# ---------------------------------------------------------------------- rollouts from origins
def origin_rows(
    records: Sequence[MapRecord], warm: int, span: int, n_origins: int, first: int = 0
) -> list[tuple[int, int]]:
    """``n_origins`` forecast origins per map, evenly spread over ``[max(warm, first), n_slots −
    span]`` (rounded to whole slots) → ``[(record index, origin row)]``; maps too short are
    skipped."""
    if n_origins < 1:
        raise ValueError(f"n_origins must be >= 1, got {n_origins}")
    rows = []
    lo = max(warm, first)
    for i, r in enumerate(records):
        last = r.n_slots - span
        if last < lo:
            continue
        origins = np.unique(np.round(np.linspace(lo, last, n_origins)).astype(int))
        rows += [(i, int(o)) for o in origins]
    return rows


def truth_of(
    records: Sequence[MapRecord], job: Sequence[tuple[int, int]], length: int, n_max: int
) -> tuple[np.ndarray, np.ndarray]:
    """True traffic ``[B, length, n_max]`` (MB) after each origin and where it counts (active
    real cells) ``[B, length, n_max]`` bool."""
    y = np.zeros((len(job), length, n_max))
    ok = np.zeros((len(job), length, n_max), dtype=bool)
    for j, (i, o) in enumerate(job):
        rec = records[i]
        y[j, :, : rec.n_cells] = rec.traffic[o : o + length]
        ok[j, :, : rec.n_cells] = rec.active[o : o + length]
    return y, ok


def forecasts(
    model: MobiWM,
    records: Sequence[MapRecord],
    n_origins: int,
    lead_slots: int,
    progress: bool = True,
    desc: str = "forecasts",
    first_origin: int = 0,
) -> Iterator[tuple[list[tuple[int, int]], Forecast, np.ndarray, np.ndarray]]:
    """``model``'s ``Forecast`` of ``lead_slots`` slots from every origin (``origin_rows``, none
    before ``first_origin``), batch by batch: ``(job, forecast cut to lead_slots, truth,
    counts)`` (see ``truth_of``). ``ValueError`` when no origin fits."""
    h, p = model.cfg.history, model.cfg.horizon
    k = -(-lead_slots // p)
    wm = MobiWMAdapter(model)
    rows = origin_rows(records, h, k * p, n_origins, first_origin)
    if not rows:
        raise ValueError(
            f"no forecast origin fits: maps need {max(h, first_origin) + k * p} slots for a "
            f"{lead_slots}-slot rollout"
        )
    n_jobs = -(-len(rows) // ORIGIN_BATCH)
    batches = origin_batches(records, rows, h, k * p, ORIGIN_BATCH)
    for job, batch in tqdm(batches, total=n_jobs, desc=desc, unit="batch", disable=not progress):
        window = slice_window(batch, 0, h + k * p)
        with torch.no_grad():
            fc = wm.rollout_batch(window, k, uncertainty=True)
        fc = Forecast(fc.point[:, :lead_slots].float().cpu(),
                      fc.quantiles[:, :lead_slots].float().cpu(), fc.levels, fc.copula_rho)  # fmt: skip
        y, ok = truth_of(records, job, lead_slots, fc.point.shape[2])
        yield job, fc, y, ok


# ---------------------------------------------------------------------- head examples
class _Recorder(QuantileHead):
    """A quantile head that also keeps every input it sees (the examples of the fit)."""

    def __init__(self, base: QuantileHead) -> None:
        super().__init__(base.d_model, base.cfg)
        self.load_state_dict(base.state_dict())
        self.seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def forward(self, feat: torch.Tensor, z: torch.Tensor, lead: torch.Tensor) -> torch.Tensor:
        self.seen.append((feat, z, lead))
        return super().forward(feat, z, lead)


@dataclass
class HeadExamples:
    """Examples of the head: ``feat [M, d]``, point ``z [M]``, ``lead [M]`` slots and the
    normalised truth ``y [M]`` of active real cells."""

    feat: torch.Tensor
    z: torch.Tensor
    lead: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


def collect_examples(
    model: MobiWM,
    records: Sequence[MapRecord],
    n_origins: int,
    lead_slots: int,
    keep: float,
    seed: int,
    progress: bool = True,
    desc: str = "examples",
) -> HeadExamples:
    """Rollout examples for the head (see the module doc) from ``records``."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    old = model.uncertainty_head
    rec = _Recorder(old if old is not None else QuantileHead(model.cfg.d_model))
    model.attach_uncertainty(rec)
    rng = np.random.default_rng(seed)
    parts: list[tuple[torch.Tensor, ...]] = []
    try:
        for _job, _fc, y, ok in forecasts(model, records, n_origins, lead_slots, progress, desc):
            feat = torch.cat([s[0] for s in rec.seen], dim=1)[:, :lead_slots]
            z = torch.cat([s[1] for s in rec.seen], dim=1)[:, :lead_slots]
            lead = torch.cat([s[2] for s in rec.seen], dim=1)[:, :lead_slots]
            rec.seen.clear()
            sel = ok & (rng.random(ok.shape) < keep)
            m = torch.as_tensor(sel)
            lead_full = lead[:, :, None].expand_as(z)
            yz = model.normalizer.normalize(torch.as_tensor(y, dtype=torch.float32))
            parts.append((feat[m].cpu(), z[m].cpu(), lead_full[m].cpu(), yz[m]))
    finally:
        model.attach_uncertainty(old)
    if not parts:
        raise ValueError("no forecast origin fits in these maps (too short for the rollout)")
    return HeadExamples(*(torch.cat([p[i] for p in parts]) for i in range(4)))


# ---------------------------------------------------------------------- fitting
def pinball_loss(q: torch.Tensor, y: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Mean pinball loss of quantiles ``q [M, Q]`` for the truth ``y [M]``."""
    d = y[:, None] - q
    return torch.maximum(levels * d, (levels - 1) * d).mean()


def _head_out(head: QuantileHead, ex: HeadExamples, sl: slice | torch.Tensor) -> torch.Tensor:
    return head(ex.feat[sl][:, None, None], ex.z[sl][:, None, None], ex.lead[sl][:, None])[:, 0, 0]


def evaluate_head(head: QuantileHead, ex: HeadExamples, batch: int = 65536) -> float:
    """Mean pinball loss of ``head`` on examples (no gradients)."""
    lv = torch.tensor(head.levels)
    total = 0.0
    with torch.no_grad():
        for s in range(0, len(ex), batch):
            sl = slice(s, s + batch)
            total += float(pinball_loss(_head_out(head, ex, sl), ex.y[sl], lv)) * len(ex.y[sl])
    return total / max(len(ex), 1)


def fit_head(
    head: QuantileHead,
    train: HeadExamples,
    val: HeadExamples,
    epochs: int = 20,
    lr: float = 3e-3,
    batch: int = 4096,
    seed: int = 0,
    progress: bool = True,
    log: Any = None,
) -> dict[str, Any]:
    """Fit ``head`` in place by the pinball loss; keeps the epoch of lowest validation loss.

    ``log(tag, value, epoch)`` receives ``train/pinball`` and ``val/pinball``. Returns
    ``{"best_epoch", "val_pinball", "train_pinball", "curve"}``."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    lv = torch.tensor(head.levels)
    best = (evaluate_head(head, val), -1, copy.deepcopy(head.state_dict()))
    curve = []
    bar = tqdm(range(epochs), desc="quantile head", unit="epoch", disable=not progress)
    for ep in bar:
        head.train()
        perm = torch.randperm(len(train), generator=gen)
        run, seen = 0.0, 0
        for s in range(0, len(train), batch):
            idx = perm[s : s + batch]
            loss = pinball_loss(_head_out(head, train, idx), train.y[idx], lv)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            run += float(loss.detach()) * len(idx)
            seen += len(idx)
        sched.step()
        head.eval()
        v = evaluate_head(head, val)
        curve.append({"epoch": ep, "train": run / seen, "val": v})
        if log is not None:
            log("train/pinball", run / seen, ep)
            log("val/pinball", v, ep)
        bar.set_postfix(train=f"{run / seen:.4f}", val=f"{v:.4f}")
        if v < best[0]:
            best = (v, ep, copy.deepcopy(head.state_dict()))
    head.load_state_dict(best[2])
    head.eval()
    return {
        "best_epoch": best[1],
        "val_pinball": best[0],
        "train_pinball": curve[-1]["train"] if curve else None,
        "curve": curve,
    }


def fit_temperature(
    head: QuantileHead, val: HeadExamples, grid: Sequence[float] | None = None
) -> dict[str, Any]:
    """Set ``head``'s temperature to the grid value of lowest validation pinball loss."""
    grid = list(grid) if grid is not None else [round(x, 3) for x in np.arange(0.6, 1.81, 0.05)]
    losses = {}
    for tau in grid:
        head.configure(temperature=float(tau))
        losses[float(tau)] = evaluate_head(head, val)
    tau = min(losses, key=losses.__getitem__)
    head.configure(temperature=tau)
    return {"temperature": tau, "val_pinball": losses[tau], "grid": losses}


def fit_copula_rho(model: MobiWM, records: Sequence[MapRecord], n_origins: int,
                   lead_slots: int, seed: int = 0, progress: bool = True) -> float:  # fmt: skip
    """Lag-1 correlation of ``probit(PIT)`` along each cell's rollout on ``records``, in
    ``[−0.95, 0.95]``."""
    rng = np.random.default_rng(seed)
    levels = np.asarray(model.uncertainty_head.levels)
    num = den_a = den_b = 0.0
    for _job, fc, y, ok in forecasts(model, records, n_origins, lead_slots, progress, "copula"):
        u = metrics.pit(fc.quantiles.double().numpy(), y, levels, rng)
        e = torch.special.ndtri(torch.as_tensor(u).clamp(1e-4, 1 - 1e-4)).numpy()
        pair = ok[:, 1:] & ok[:, :-1]
        a, b = e[:, 1:][pair], e[:, :-1][pair]
        num += float((a * b).sum())
        den_a += float((a * a).sum())
        den_b += float((b * b).sum())
    rho = num / max(np.sqrt(den_a * den_b), 1e-12)
    return float(np.clip(rho, -0.95, 0.95))


def fit_support(records: Sequence[MapRecord]) -> ActionSupport:
    """Parameter ranges (over active slots) and the ``CHANGE_QUANTILE`` percentile of every
    parameter's largest change within a day per cell (sliding range over 97 slots, azimuth
    unwrapped) in ``records``."""
    if not records:
        raise ValueError("fit_support needs at least one map")
    lows, highs, changes = [], [], []
    for r in records:
        a = r.actions.astype(np.float64)  # [T, N, 4]
        on = r.active.astype(bool)
        if on.any():
            lows.append(np.where(on[..., None], a, np.inf).min(axis=(0, 1)))
            highs.append(np.where(on[..., None], a, -np.inf).max(axis=(0, 1)))
        u = a.copy()
        u[..., AZIMUTH] = np.unwrap(a[..., AZIMUTH], period=360.0, axis=0)
        w = SLOTS_PER_DAY + 1
        rng = maximum_filter1d(u, w, axis=0) - minimum_filter1d(u, w, axis=0)
        changes.append(rng.reshape(-1, 4))
    ch = np.percentile(np.concatenate(changes), CHANGE_QUANTILE, axis=0)
    return ActionSupport(
        tuple(np.min(lows, axis=0)), tuple(np.max(highs, axis=0)), tuple(np.maximum(ch, 1e-3))
    )
