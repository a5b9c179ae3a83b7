"""The daily memory of a ``MobiWM`` window and the anchor of its output (our extension).

With ``season`` > 0 the model reads ``H = season + H_tok`` slots, but a window of ``T = H + P``
slots has tokens ``[season, T)`` only; each token reads its cell's value ``season`` slots
earlier (which lies in the history because ``P <= season``) and whether the cell was on then
as *memory* (``_memory_features``; with ``season_actions`` also that slot's action features
and their change since), and the output's residual is taken from an *anchor* built from those
values (``_season_anchor``, the one place that tells the ``ModelConfig.season_anchor`` modes
apart): ``z_last + α·(z[t − season] − z[t_last − season])`` (α learnt), or yesterday's value
itself (``"yesterday"``), which does not carry errors from chunk to chunk, or yesterday's value
plus α of today's level over yesterday's (``"damped"``: a chunk's error reaches the next one
multiplied by α < 1), or plus ρᵏ of it at lead ``k`` (``"ar"``: the twin's demand noise is
autoregressive, so today's deviation from yesterday fades slot by slot; ``ρ`` learnt;
``"ar-adjusted"``: today's deviation from yesterday as the coverage prior moves it under
today's actions, so the action effect is not counted twice). ``_delta_pairs`` names the slots
between which the coverage prior's change is taken for that anchor. A window with its memory
split off is a ``SeasonalWindow``; without a daily memory every slot is a token and the anchor
is the last history value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch

from worldmodel.model.config import YESTERDAY_ANCHORS

if TYPE_CHECKING:
    from worldmodel.model.mobiwm import MobiWM


class SeasonalWindow(NamedTuple):
    """A window's token slots, their daily memory and the output's anchor.

    ``z_hist [B, H_tok, N]`` normalised history, ``act_feat [B, T_tok, N, F]`` action features,
    ``active [B, T_tok, N]`` bool, ``slot_of_day`` / ``day_of_week`` / ``od_index [B, T_tok]``
    of the tokens; ``memory [B, T_tok, N, M]`` (``_memory_features``; None without a daily
    memory) and ``anchor [B, P, N]`` (normalised; or ``[B, 1, N]``, the last history value).
    """

    z_hist: torch.Tensor
    act_feat: torch.Tensor
    active: torch.Tensor
    slot_of_day: torch.Tensor
    day_of_week: torch.Tensor
    od_index: torch.Tensor
    memory: torch.Tensor | None
    anchor: torch.Tensor


class SeasonalMixin:
    """The daily-memory window and the seasonal anchor of ``MobiWM`` (pure tensor code)."""

    def _window(
        self: MobiWM,
        z_hist: torch.Tensor,
        act_feat: torch.Tensor,
        active: torch.Tensor,
        slot_of_day: torch.Tensor,
        day_of_week: torch.Tensor,
        od_index: torch.Tensor,
        mem_age: torch.Tensor | None,
        cov_last: torch.Tensor | None,
        season: int,
    ) -> SeasonalWindow:
        """The window as tokens (``_seasonal`` with a ``season``; else all slots, no memory,
        anchored at the last history value)."""
        if season:  # keep the token slots; their values one season earlier become inputs
            return self._seasonal(z_hist, act_feat, active, slot_of_day, day_of_week, od_index,
                                  mem_age, cov_last, season)  # fmt: skip
        return SeasonalWindow(z_hist, act_feat, active, slot_of_day, day_of_week, od_index, None,
                              z_hist[:, -1:, :])  # fmt: skip

    def _seasonal(
        self: MobiWM,
        z_hist: torch.Tensor,
        act_feat: torch.Tensor,
        active: torch.Tensor,
        slot_of_day: torch.Tensor,
        day_of_week: torch.Tensor,
        od_index: torch.Tensor,
        mem_age: torch.Tensor | None = None,
        cov_last: torch.Tensor | None = None,
        season: int | None = None,
    ) -> SeasonalWindow:
        """Split a ``season``-model window (``z_hist [B, H, N]``, the others over ``T = H + P``
        slots) into its token slots ``[season, T)``, their memory (``_memory_features``) and the
        anchor (``_season_anchor``). ``mem_age``, ``cov_last``: see there; ``season``: slots
        from a memory slot to its token (default ``cfg.season``; see ``_core``)."""
        s, h = (self.cfg.season if season is None else season), z_hist.shape[1]
        t_tok = act_feat.shape[1] - s
        src = z_hist[:, :t_tok]  # [B, T - s, N]: value one season before each token
        on = active[:, :t_tok]
        return SeasonalWindow(
            z_hist[:, s:],
            act_feat[:, s:],
            active[:, s:],
            slot_of_day[:, s:],
            day_of_week[:, s:],
            od_index[:, s:],
            self._memory_features(src, on, act_feat, day_of_week, mem_age, s),
            self._season_anchor(src, on, z_hist[:, -1:], h - s, cov_last),
        )

    def _memory_features(
        self: MobiWM,
        src: torch.Tensor,
        on: torch.Tensor,
        act_feat: torch.Tensor,
        day_of_week: torch.Tensor,
        mem_age: torch.Tensor | None,
        season: int,
    ) -> torch.Tensor:
        """Memory ``[B, T − season, N, 2 (+2F) (+1)]`` of each token from its slot one season
        earlier (``src`` normalised traffic and ``on`` flags there, ``[B, T − season, N]``):
        traffic over zero traffic and the active flag[, with ``season_actions`` the action
        features then and their change since][, with ``memory_age > 1`` the age in days, 1 → 0
        and a week → 1, from ``mem_age`` or ``_memory_age``]; 0 where the cell was off."""
        cfg = self.cfg
        zero = self.normalizer.zero_level().to(src.dtype)
        feat = torch.stack([torch.where(on, src - zero, 0.0), on.to(src.dtype)], dim=-1)
        if cfg.season_actions:
            a_then, a_now = act_feat[:, : src.shape[1]], act_feat[:, season:]
            a_mem = torch.cat([a_then, a_now - a_then], dim=-1)
            feat = torch.cat([feat, torch.where(on[..., None], a_mem, 0.0)], dim=-1)
        if cfg.memory_age > 1:
            if mem_age is None:
                mem_age = self._memory_age(day_of_week, on.shape[-1], season)
            # a memory older than any seen in training reads as the oldest seen (a rollout
            # of weeks remembers its warm-up day, months old by the end)
            age = mem_age.clamp(max=cfg.memory_age).to(src.dtype)
            age_feat = (age - 1.0) / (cfg.days_per_week - 1)
            feat = torch.cat([feat, age_feat.unsqueeze(-1)], dim=-1)
        return feat

    def _memory_age(self: MobiWM, day_of_week: torch.Tensor, n: int, season: int) -> torch.Tensor:
        """Default age in days ``[B, T − season, N]`` of each memory slot's value: from the day
        of week of the memory slots and of their tokens (``day_of_week [B, T]``)."""
        week, t_tok = self.cfg.days_per_week, day_of_week.shape[1] - season
        age = (day_of_week[:, season:] - day_of_week[:, :t_tok]).remainder(week)
        return torch.where(age == 0, week, age)[..., None].expand(-1, -1, n)

    # ------------------------------------------------------------------ anchor
    def _season_anchor(
        self: MobiWM,
        src: torch.Tensor,
        on: torch.Tensor,
        z_last: torch.Tensor,
        ht: int,
        cov_last: torch.Tensor | None,
    ) -> torch.Tensor:
        """The anchor ``[B, P, N]`` (normalised) the output's residual is added to, per
        ``season_anchor``, from the values one season earlier (``src`` / ``on``, see
        ``_memory_features``; ``ht`` history tokens) and the last value ``z_last [B, 1, N]``:

        * ``"difference"``: ``z_last + α·(z[t − season] − z[t_last − season])`` where the cell
          was on in both source slots, else ``z_last`` (``α = season_mix``: learnt or fixed).
        * ``"yesterday"``: ``z[t − season]``;
          ``"damped"``: that plus ``α·(z_last − z[t_last − season])`` (0 where the cell was off
          at ``t_last − season``); ``"ar"``: the same with ``ρᵏ`` in place of ``α`` for the
          ``k``-th future slot (``ρ = season_mix`` clamped to [0, 1]); ``"ar-adjusted"``:
          ``"ar"`` with ``z[t_last − season]`` first moved by the coverage prior's change
          ``cov_last [B, 1, N]`` from that slot to ``t_last`` (``_coverage_term``). Each is
          ``z_last`` where the cell was off at ``t − season``.
        """
        mode = self.cfg.season_anchor
        now, on_now = src[:, ht:], on[:, ht:]  # one season before each future slot
        then, on_then = src[:, ht - 1 : ht], on[:, ht - 1 : ht]  # ... before t_last
        if mode not in YESTERDAY_ANCHORS:  # "difference"
            change = torch.where(on_now & on_then, now - then, 0.0)
            return z_last + self.season_mix * change
        anchor = now
        if mode != "yesterday":  # plus a share of today's level change
            if cov_last is not None:  # yesterday as it would be under today's actions
                then = then + self._coverage_term(then, cov_last)
            level = torch.where(on_then, z_last - then, 0.0)
            share = self.season_mix
            if mode in ("ar", "ar-adjusted"):  # ρ^k at lead k = 1..P
                lead = torch.arange(1, anchor.shape[1] + 1, device=src.device)
                share = share.clamp(0.0, 1.0).pow(lead.to(src.dtype))[:, None]
            anchor = anchor + share * level
        return torch.where(on_now, anchor, z_last)

    def _delta_pairs(self: MobiWM, t: int, season: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Window slots ``(target, reference)``, each ``[P]`` (``[P + 1]`` for
        ``"ar-adjusted"``), between which the coverage prior's change is taken: every future
        slot and the slot whose traffic the output anchor reads for it, one season earlier for
        the ``YESTERDAY_ANCHORS``, else the last history slot (per cell, ``_season_anchor``
        falls back to the last slot where a cell was off then); ``"ar-adjusted"`` adds the last
        history slot and the slot one season before it (``season`` slots, see ``_core``)."""
        h, s = t - self.cfg.horizon, season
        fut = torch.arange(h, t, device=self.device)
        if not (s and self.cfg.season_anchor in YESTERDAY_ANCHORS):
            return fut, torch.full_like(fut, h - 1)
        if self.cfg.season_anchor == "ar-adjusted":
            fut = torch.cat([fut, fut.new_tensor([h - 1])])
        return fut, fut - s

    def _split_coverage_delta(
        self: MobiWM, cov_delta: torch.Tensor | None, season: int
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The coverage prior's change ``[B, P (+1), N]`` (``_delta_pairs``) as ``(that of the
        future slots, cov_last)``: ``"ar-adjusted"`` splits off its last pair (the change from
        ``t_last − season`` to ``t_last``, ``[B, 1, N]``), other anchors have none."""
        if cov_delta is not None and season and self.cfg.season_anchor == "ar-adjusted":
            return cov_delta[:, :-1], cov_delta[:, -1:]
        return cov_delta, None
