"""``MobiWM``'s autoregressive rollout (paper Eq. 5) and its daily memory across chunks.

``RolloutMixin`` (mixed into ``MobiWM``) gives ``predict`` / ``rollout`` and the checks of
their inputs (``_rollout_inputs``; ``_check_slots`` is shared with ``forward``). A chunk's
window is ``H`` history slots and ``P`` future slots; each chunk's prediction becomes history
of the next. With a daily memory (``season`` > 0) the window's first ``H + P − season`` slots
are only read as memory of the tokens one season later (``seasonal``), and a window is cut to
those memory slots and the tokens (``_compact_slots``) when that is shorter. In a rollout
longer than a day the memory of a slot past the warm start is, by default, the *observed*
traffic (and actions) of the same slot on the warm start's last day, per cell where that cell
was on then (``rollout(memory="observed")``, a ``DailyMemory`` table); ``memory="predicted"``
reads the model's own predictions one season earlier instead, so every day's bias is carried
into the next (measured: +7 % total traffic by day 5 of a week-long rollout).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from worldmodel.model.context import ContextCache
from worldmodel.model.uncertainty import Forecast, QuantileHead

if TYPE_CHECKING:
    from worldmodel.model.mobiwm import MobiWM

ArrayLike = torch.Tensor | np.ndarray

MEMORY_MODES = ("observed", "predicted")
"""String values of ``rollout(memory=...)``."""


@dataclass(frozen=True)
class DailyMemory:
    """Observed traffic of one season (a day) that a rollout's daily memory reads.

    * ``traffic [B, S, N]`` MB, ``actions [B, S, N, 4]`` (physical), ``active [B, S, N]`` bool:
      ``S = season`` consecutive observed slots.
    * ``offset``: slots from the table's first slot to the call's first history slot; an
      ``int`` for every row, or one integer per row (``[B]`` tensor or array: envs that
      started at different slots).

    The memory of a window slot ``a`` (0 = first history slot) that lies after the table
    (``a + offset >= S``) is table row ``(a + offset) mod S`` (the same phase of the season)
    where the cell was on in that row; other slots and cells read the window itself.
    """

    traffic: torch.Tensor
    actions: torch.Tensor
    active: torch.Tensor
    offset: int | torch.Tensor

    @property
    def season(self) -> int:
        return int(self.traffic.shape[1])

    @classmethod
    def of_history(
        cls, traffic: torch.Tensor, actions: torch.Tensor, active: torch.Tensor, season: int
    ) -> DailyMemory:
        """The last ``season`` slots of a history (``traffic [B, H, N]``, ``actions [B, H, N,
        4]``, ``active [B, H, N]``), seen from that history's first slot."""
        h = traffic.shape[1]
        return cls(traffic[:, h - season :], actions[:, h - season :], active[:, h - season :],
                   season - h)  # fmt: skip


@dataclass(frozen=True)
class RolloutInputs:
    """``rollout``'s inputs checked and on the model's device (``T = H + K·P`` slots).

    ``history [B, H, N]`` MB, ``history_actions [B, H, N, 4]`` and ``actions [B, T, N, 4]``
    (physical; history then future), ``active [B, T, N]`` bool, ``slot_of_day`` /
    ``day_of_week`` / ``od_index [B, T]``, the encoded ``context`` and ``n_chunks = K``.
    """

    history: torch.Tensor
    history_actions: torch.Tensor
    actions: torch.Tensor
    active: torch.Tensor
    slot_of_day: torch.Tensor
    day_of_week: torch.Tensor
    od_index: torch.Tensor
    context: ContextCache
    n_chunks: int


def check_shape(name: str, x: torch.Tensor, shape: tuple[int | None, ...]) -> None:
    """Raise ``ValueError`` unless ``x.shape`` matches ``shape`` (None = any size)."""
    ok = x.dim() == len(shape) and all(
        s is None or s == xs for s, xs in zip(shape, x.shape, strict=True)
    )
    if not ok:
        want = ", ".join("*" if s is None else str(s) for s in shape)
        raise ValueError(f"{name}: expected shape [{want}], got {list(x.shape)}")


def _memory_offset(offset: Any, batch: int, device: torch.device) -> int | torch.Tensor:
    """A ``DailyMemory.offset`` checked: an ``int``, or ``[batch]`` integers as a tensor."""
    if isinstance(offset, int | np.integer) and not isinstance(offset, bool):
        return int(offset)
    if isinstance(offset, np.ndarray | torch.Tensor | list | tuple):
        arr = torch.as_tensor(offset)
        if arr.dtype == torch.bool or arr.is_floating_point() or arr.is_complex():
            raise ValueError(f"memory.offset must be integers, got dtype {arr.dtype}")
        if arr.shape != (batch,):
            raise ValueError(
                f"memory.offset: expected an int or one integer per row [{batch}], got shape "
                f"{tuple(arr.shape)}"
            )
        return arr.to(device=device, dtype=torch.long)
    raise ValueError(f"memory.offset must be an integer or [B] integers, got {offset!r}")


class RolloutMixin:
    """``predict`` / ``rollout`` of ``MobiWM`` and the daily memory of their chunks."""

    def predict(
        self: MobiWM,
        history_traffic: ArrayLike,
        history_actions: ArrayLike,
        future_actions: ArrayLike,
        context: ContextCache | Mapping[str, Any],
        mask: Mapping[str, ArrayLike] | None,
        time: Mapping[str, ArrayLike],
    ) -> torch.Tensor:
        """Traffic of the next ``P`` slots, MB per slot ``[B, P, N]`` (≥ 0; exactly 0 for
        inactive and padded cells). No gradients; dropout off.

        * ``history_traffic [B, H, N]`` MB; ``history_actions [B, H, N, 4]``;
          ``future_actions [B, P, N, 4]`` (physical, ``PARAM_NAMES`` order).
        * ``context``: a ``ContextCache`` from ``encode_context``, or a mapping with ``poi``,
          ``od`` (``[B, T_od, 2, S, S]``), ``facility``, ``cell_xy``, ``extent_m`` and
          optionally ``od_start_week_slot`` (then encoded here, once).
        * ``mask``: ``cell_mask [B, N]`` (default: the context's) and ``active [B, H+P, N]``
          (default all on).
        * ``time``: ``slot_of_day`` and ``day_of_week`` ``[B, H+P]``; optional ``od_index
          [B, H+P]`` (cache slot of each window slot, default from the time indices).
        """
        return self.rollout(
            history_traffic, history_actions, future_actions, context, mask, time, n_chunks=1
        )

    def rollout(
        self: MobiWM,
        history_traffic: ArrayLike,
        history_actions: ArrayLike,
        future_actions: ArrayLike,
        context: ContextCache | Mapping[str, Any],
        mask: Mapping[str, ArrayLike] | None,
        time: Mapping[str, ArrayLike],
        n_chunks: int | None = None,
        memory: str | DailyMemory = "observed",
        uncertainty: bool = False,
        lead_offset: int | ArrayLike = 0,
    ) -> torch.Tensor | Forecast:
        """Autoregressive rollout (Eq. 5) over ``K`` chunks → traffic ``[B, K·P, N]`` MB.

        As ``predict``, with ``future_actions [B, K·P, N, 4]`` and ``active`` / time / ``od_index``
        over ``H + K·P`` slots. Each chunk's prediction becomes history of the next; the time
        indices and active flags of every future slot come from the caller.

        ``memory`` (models with a daily memory; no effect on the first ``season`` predicted
        slots): ``"observed"`` — a slot past the warm start remembers the same slot on the
        history's last day (observed), per cell where the cell was on then;
        ``"predicted"`` — its own prediction one season earlier; a ``DailyMemory`` — that
        table for the slots after it (continuing a rollout in segments).

        ``uncertainty`` (a model with a quantile head, ``attach_uncertainty``): return a
        ``Forecast`` — the same point prediction plus quantiles per cell and slot. The head
        reads each slot's lead time, ``lead_offset`` (an int or ``[B]``: slots already
        predicted since the last observed one, e.g. by an env's earlier steps) + its position
        in the rollout (1 = the first predicted slot), so the spread grows with the horizon.
        """
        h, p = self.cfg.history, self.cfg.horizon
        head = self.uncertainty_head if uncertainty else None
        if uncertainty and head is None:
            raise ValueError(
                "rollout(uncertainty=True) needs a quantile head: train one with `python -m "
                "worldmodel.uncertainty.train` and load the checkpoint that carries it"
            )
        with self._eval_mode():
            inp = self._rollout_inputs(history_traffic, history_actions, future_actions,
                                       context, mask, time, n_chunks)  # fmt: skip
            hist, active, ctx = inp.history, inp.active, inp.context
            b, _, n = hist.shape
            k = inp.n_chunks
            table = self._memory_table(memory, hist, inp.history_actions, active[:, :h])
            full = torch.cat([hist, hist.new_zeros(b, k * p, n)], dim=1)  # [B, H+K·P, N]
            keep, season = self._compact_slots(h + p)
            if head is not None:
                quant = hist.new_zeros(b, k * p, n, len(head.levels))
                lead0 = self._lead_offset(lead_offset, b)
            for c in range(k):
                s, e = c * p, c * p + h + p
                win, win_act, win_on = full[:, s : s + h], inp.actions[:, s:e], active[:, s:e]
                times = (inp.slot_of_day[:, s:e], inp.day_of_week[:, s:e], inp.od_index[:, s:e])
                if keep is not None:  # only the memory slots and the tokens
                    win, win_act, win_on = win[:, keep[:-p]], win_act[:, keep], win_on[:, keep]
                    times = tuple(x[:, keep] for x in times)
                win, win_act, win_on, age = self._with_memory(
                    win, win_act, win_on, s, table, h + p - self.cfg.season
                )
                z_hist, act_feat, act_w = self._prepare(win, win_act, win_on, ctx.cell_mask)
                out = self._core(z_hist, act_feat, act_w, times[0], times[1], ctx, times[2],
                                 age, season, features=head is not None)  # fmt: skip
                z = out[0] if head is not None else out
                valid = act_w[:, -p:]  # already & cell_mask
                full[:, s + h : e] = torch.where(valid, self.normalizer.denormalize(z), 0.0)
                if head is not None:
                    lead = lead0[:, None] + (s + 1 + torch.arange(p, device=z.device))[None]
                    qz = self.normalizer.denormalize(head(out[1], z, lead))
                    quant[:, s : s + p] = torch.where(valid[..., None], qz, 0.0)
            if head is None:
                return full[:, h:]
            cfg = head.cfg
            return Forecast(full[:, h:], quant, cfg.levels, cfg.copula_rho)

    # ------------------------------------------------------------------ uncertainty
    @property
    def uncertainty_head(self: MobiWM) -> QuantileHead | None:
        """The attached quantile head (``attach_uncertainty``), or None."""
        return self.__dict__.get("_uq_head")

    def attach_uncertainty(self: MobiWM, head: QuantileHead | None) -> None:
        """Attach a quantile head fitted on this network (None detaches it). It is kept
        outside the module tree: the network's ``state_dict`` and checkpoint are unchanged, and
        ``model.to(device)`` does not move it — it is put on the model's device here, so
        attach (or re-attach) it after moving the model."""
        if head is not None:
            if not isinstance(head, QuantileHead):
                raise TypeError(f"expected a QuantileHead, got {type(head).__name__}")
            if head.d_model != self.cfg.d_model:
                raise ValueError(
                    f"the head reads d_model={head.d_model} features, the network has "
                    f"{self.cfg.d_model}"
                )
            head = head.to(self.device).eval()
        self.__dict__["_uq_head"] = head

    def _lead_offset(self: MobiWM, offset: int | ArrayLike, batch: int) -> torch.Tensor:
        """``rollout``'s ``lead_offset`` as ``[B]`` non-negative integers."""
        arr = torch.as_tensor(offset, device=self.device)
        if arr.is_floating_point() or arr.dtype == torch.bool or arr.dim() > 1:
            raise ValueError(f"lead_offset must be an int or [B] integers, got {offset!r}")
        arr = arr.to(torch.long).expand(batch) if arr.dim() == 0 else arr.to(torch.long)
        if arr.shape != (batch,) or bool((arr < 0).any()):
            raise ValueError(f"lead_offset: expected an int or [{batch}] integers >= 0")
        return arr

    def _rollout_inputs(
        self: MobiWM,
        history_traffic: ArrayLike,
        history_actions: ArrayLike,
        future_actions: ArrayLike,
        context: ContextCache | Mapping[str, Any],
        mask: Mapping[str, ArrayLike] | None,
        time: Mapping[str, ArrayLike],
        n_chunks: int | None,
    ) -> RolloutInputs:
        """``rollout``'s arguments checked (``ValueError`` naming the input) and completed:
        the context encoded, ``active`` all on and ``od_index`` from the time by default."""
        cfg = self.cfg
        hist = self._tensor(history_traffic, torch.float32)
        if hist.dim() != 3:
            raise ValueError(f"history_traffic: expected [B, H, N], got {tuple(hist.shape)}")
        b, h, n = hist.shape
        if h != cfg.history:
            raise ValueError(f"history_traffic has H={h} slots, the model expects {cfg.history}")
        h_act = self._tensor(history_actions, torch.float32)
        f_act = self._tensor(future_actions, torch.float32)
        check_shape("history_actions", h_act, (b, h, n, 4))
        if f_act.dim() != 4 or f_act.shape[0] != b or f_act.shape[2:] != (n, 4):
            raise ValueError(
                f"future_actions: expected [{b}, K·P, {n}, 4], got {tuple(f_act.shape)}"
            )
        p = cfg.horizon
        k = f_act.shape[1] // p if n_chunks is None else int(n_chunks)
        if k < 1 or f_act.shape[1] != k * p:
            raise ValueError(
                f"future_actions has {f_act.shape[1]} slots; expected n_chunks·P = {k}·{p}"
            )
        total = h + k * p
        mask = mask or {}
        ctx = self._as_cache(context, mask.get("cell_mask"))
        if (ctx.batch_size, ctx.n_cells) != (b, n):
            raise ValueError(
                f"context is for {ctx.batch_size} maps × {ctx.n_cells} cells, inputs have {b} × {n}"
            )
        if mask.get("cell_mask") is not None:
            cm = self._tensor(mask["cell_mask"], torch.bool)
            check_shape("cell_mask", cm, (b, n))
            if not torch.equal(cm, ctx.cell_mask):
                raise ValueError("mask['cell_mask'] differs from the context's cell_mask")
        active = (
            self._tensor(mask["active"], torch.bool)
            if mask.get("active") is not None
            else torch.ones(b, total, n, dtype=torch.bool, device=self.device)
        )
        slot = self._tensor(time["slot_of_day"], torch.long)
        dow = self._tensor(time["day_of_week"], torch.long)
        self._check_slots(b, total, n, None, active, slot, dow, ranges=True)
        if time.get("od_index") is not None:
            od_index = self._tensor(time["od_index"], torch.long)
            check_shape("od_index", od_index, (b, total))
            if ctx.n_od_slots and (od_index.min() < 0 or od_index.max() >= ctx.n_od_slots):
                raise ValueError(f"od_index must be in [0, {ctx.n_od_slots})")
        else:
            od_index = ctx.od_index(slot, dow, cfg.slots_per_day)
        if not bool(torch.isfinite(hist).logical_or(~ctx.cell_mask[:, None, :]).all()):
            raise ValueError("history_traffic has non-finite values in real cells")
        actions = torch.cat([h_act, f_act], dim=1)  # [B, H+K·P, N, 4]
        return RolloutInputs(hist, h_act, actions, active, slot, dow, od_index, ctx, k)

    def _check_slots(
        self: MobiWM,
        b: int,
        t: int,
        n: int,
        actions: torch.Tensor | None,
        active: torch.Tensor,
        slot_of_day: torch.Tensor,
        day_of_week: torch.Tensor,
        ranges: bool = False,
    ) -> None:
        """``ValueError`` unless a window's per-slot inputs cover ``b`` maps × ``t`` slots ×
        ``n`` cells: ``actions [B, T, N, 4]`` (None: not checked), ``active [B, T, N]``,
        ``slot_of_day`` / ``day_of_week [B, T]``, and, with ``ranges``, the time indices lie
        in ``[0, slots_per_day)`` / ``[0, days_per_week)``."""
        if actions is not None:
            check_shape("actions", actions, (b, t, n, 4))
        check_shape("active", active, (b, t, n))
        check_shape("slot_of_day", slot_of_day, (b, t))
        check_shape("day_of_week", day_of_week, (b, t))
        if not ranges:
            return
        if slot_of_day.min() < 0 or slot_of_day.max() >= self.cfg.slots_per_day:
            raise ValueError(f"slot_of_day must be in [0, {self.cfg.slots_per_day})")
        if day_of_week.min() < 0 or day_of_week.max() >= self.cfg.days_per_week:
            raise ValueError(f"day_of_week must be in [0, {self.cfg.days_per_week})")

    def _as_cache(
        self: MobiWM, context: ContextCache | Mapping[str, Any], cell_mask: ArrayLike | None = None
    ) -> ContextCache:
        """``context`` as a ``ContextCache``: as is, or a mapping of raw inputs encoded."""
        if isinstance(context, ContextCache):
            return context
        if not isinstance(context, Mapping):
            raise TypeError(f"context must be a ContextCache or a mapping, got {type(context)}")
        for key in ("cell_xy", "extent_m"):
            if key not in context:
                raise ValueError(f"context is missing {key!r}")
        return self.encode_context(
            context.get("poi"),
            context.get("od"),
            context.get("facility"),
            context["cell_xy"],
            context["extent_m"],
            context.get("cell_mask", cell_mask),
            context.get("od_start_week_slot"),
        )

    # ------------------------------------------------------------------ daily memory
    def _compact_slots(self: MobiWM, t: int) -> tuple[torch.Tensor | None, int | None]:
        """The slots of a ``t``-slot window the model reads (with a daily memory: the memory
        slots ``[0, m)`` and the tokens ``[season, t)``, ``m = t − season``) and the season of
        that compact window (``m``); ``(None, None)`` when it would not be shorter."""
        s = self.cfg.season
        m = t - s
        if not s or 2 * m >= t:
            return None, None
        keep = torch.cat([torch.arange(m), torch.arange(s, t)]).to(self.device)
        return keep, m

    def _memory_table(
        self: MobiWM,
        memory: str | DailyMemory,
        hist: torch.Tensor,
        h_act: torch.Tensor,
        h_active: torch.Tensor,
    ) -> DailyMemory | None:
        """The daily-memory table of a rollout (None: every slot reads the window itself)."""
        s = self.cfg.season
        if isinstance(memory, DailyMemory):
            b, n = hist.shape[0], hist.shape[2]
            if not s:
                raise ValueError("memory: a DailyMemory needs a model with a daily memory")
            check_shape("memory.traffic", memory.traffic, (b, s, n))
            check_shape("memory.actions", memory.actions, (b, s, n, 4))
            check_shape("memory.active", memory.active, (b, s, n))
            if not bool(torch.isfinite(memory.traffic).all()) or bool((memory.traffic < 0).any()):
                raise ValueError("memory.traffic must be finite and >= 0")
            table = DailyMemory(
                memory.traffic.to(hist), memory.actions.to(hist),
                memory.active.to(device=hist.device, dtype=torch.bool),
                _memory_offset(memory.offset, b, hist.device),
            )  # fmt: skip
            return table
        if memory not in MEMORY_MODES:
            raise ValueError(
                f"memory must be one of {MEMORY_MODES} or a DailyMemory, got {memory!r}"
            )
        if memory == "predicted" or not s:
            return None
        return DailyMemory.of_history(hist, h_act, h_active, s)

    def _with_memory(
        self: MobiWM,
        traffic: torch.Tensor,
        actions: torch.Tensor,
        active: torch.Tensor,
        start: int,
        table: DailyMemory | None,
        m: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """A chunk's window (``traffic [B, H, N]``, ``actions`` / ``active`` over ``H + P``,
        first slot ``start`` of the rollout; or its compact form, ``_compact_slots``) with its
        ``m`` memory slots (the first ``H + P − season``) read from ``table`` where they lie
        after it and the table's cell was on; plus the memory's age in days ``[B, m, N]``
        (None: one day everywhere)."""
        if table is None:
            return traffic, actions, active, None
        offset = torch.as_tensor(table.offset, device=traffic.device).reshape(-1, 1)  # [1 or B, 1]
        a = torch.arange(start, start + m, device=traffic.device)[None] + offset
        if int(a.max()) < table.season:
            return traffic, actions, active, None
        row = a % table.season  # [1 or B, M]
        rows = torch.arange(traffic.shape[0], device=traffic.device)[:, None]
        mem_t, mem_a, mem_on = (
            table.traffic[rows, row],
            table.actions[rows, row],
            table.active[rows, row],
        )
        use = (a >= table.season)[:, :, None] & mem_on  # [B, M, N]
        age = torch.where(use, 1 + (a // table.season)[:, :, None], 1)
        mem_t = torch.where(use, mem_t, traffic[:, :m])
        mem_a = torch.where(use[..., None], mem_a, actions[:, :m])
        mem_on = active[:, :m] | use
        return (
            torch.cat([mem_t, traffic[:, m:]], dim=1),
            torch.cat([mem_a, actions[:, m:]], dim=1),
            torch.cat([mem_on, active[:, m:]], dim=1),
            age,
        )
