"""The coverage-prior stage of ``MobiWM`` (``coverage_prior``, our extension).

Every slot's action features gain a seventh, the cell's log share of the map's demand under that
slot's parameters (``coverage.CoveragePrior``: closed form from the twin's antenna pattern and
UMa path loss with a soft strongest-cell association over a learnt demand proxy on the POI
grid), and the output adds ``coverage_gain ·`` that share's change from the anchor's slot
(learnt, starts at 0). The model then no longer has to discover from data how an antenna change
moves cell borders. With ``coverage_calibrate`` the change is computed after the demand proxy
has been fitted to the cells' traffic in the anchor's slot, and it multiplies the anchor's
traffic by ``exp(coverage_gain · Δ)`` (``coverage_gain`` starts at 1: the closed form's
prediction). The slots between which the change is taken are ``SeasonalMixin._delta_pairs``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from worldmodel.model.context import ContextCache
from worldmodel.model.coverage import CoveragePrior
from worldmodel.model.rollout import ArrayLike

if TYPE_CHECKING:
    from worldmodel.model.mobiwm import MobiWM


class CoverageMixin:
    """The coverage prior's context, ``_core``'s coverage stage and the coverage term of
    ``MobiWM``'s output."""

    def _encode_coverage(
        self: MobiWM,
        poi: ArrayLike | None,
        facility: ArrayLike | None,
        xy: torch.Tensor,
        extent: torch.Tensor,
        mask: torch.Tensor,
        side: int,
    ) -> tuple[torch.Tensor | None, ...]:
        """The coverage prior's cell geometry (0 for padded cells, which never take a share),
        pixel features on the ``side × side`` grid, and with ``coverage_candidates`` each
        pixel's candidate cells and their geometry (``CoveragePrior``); all None without it."""
        if self.coverage is None:
            return None, None, None, None
        geom = self.coverage.geometry(xy, extent, side)
        real = mask[:, :, None]
        cov_geom = torch.stack(
            [torch.where(real, geom[k], 0.0) for k in CoveragePrior.GEOMETRY], dim=1
        )
        p_in = self._tensor(poi, torch.float32) if self.coverage.poi_categories else None
        f_in = self._tensor(facility, torch.float32) if self.coverage.facility_channels else None
        pixels = self.coverage.pixel_features(p_in, f_in, xy.shape[0], side, self.device)
        cand_idx = cand_geom = None
        if self.cfg.coverage_candidates:
            cand_idx, cand_geom = self.coverage.candidate_geometry(
                cov_geom, mask, self.cfg.coverage_candidates
            )
        return cov_geom, pixels, cand_idx, cand_geom

    def _coverage_features(
        self: MobiWM,
        ctx: ContextCache,
        z_hist: torch.Tensor,
        act_feat: torch.Tensor,
        active: torch.Tensor,
        slot_of_day: torch.Tensor,
        day_of_week: torch.Tensor,
        season: int,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The action features ``[B, T, N, F]`` with the prior's log demand share appended
        (``_log_share``), and the prior's change ``[B, P (+1), N]`` between the
        ``_delta_pairs``; ``(act_feat, None)`` without the prior. ``z_hist [B, H, N]``
        normalised, time ``[B, T]``, ``season`` as in ``_core``."""
        if self.coverage is None:
            return act_feat, None
        if ctx.coverage_geom is None or ctx.coverage_pixels is None:
            raise ValueError("this context was encoded without the coverage prior")
        times = (slot_of_day, day_of_week, season)
        if self.cfg.coverage_calibrate:  # first: it leaves the future slots' shares in the memo
            cov_delta = self._calibrated_delta(ctx, z_hist, act_feat, active, *times)
            log_share = self._log_share(ctx, act_feat, active, *times)
        else:
            log_share = self._log_share(ctx, act_feat, active, *times)
            cov_delta = self._coverage_delta(log_share, active, season)
        return torch.cat([act_feat, log_share.unsqueeze(-1)], dim=-1), cov_delta

    def _coverage_term(self: MobiWM, base: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """What the coverage prior's log-share change ``delta`` adds to normalised traffic
        ``base`` (same shape): calibrated, the change of ``base``'s traffic times ``exp(gain ·
        Δ)`` in normalised space (0 where the prior sees no change; ``base`` floored at zero
        traffic); else ``gain · Δ``."""
        if not self.cfg.coverage_calibrate:
            return self.coverage_gain * delta
        norm = self.normalizer
        floor = base.clamp_min(norm.zero_level().to(base.dtype))
        scaled = norm.denormalize(floor) * torch.exp(self.coverage_gain * delta)
        return torch.where(delta != 0, norm.normalize(scaled) - floor, 0.0)

    def _log_share(
        self: MobiWM,
        ctx: ContextCache,
        act_feat: torch.Tensor,
        active: torch.Tensor,
        slot_of_day: torch.Tensor,
        day_of_week: torch.Tensor,
        season: int,
    ) -> torch.Tensor:
        """The coverage prior's log share ``[B, T, N]`` of the slots the model reads: all of
        them, or with a daily memory the tokens and their memory slots (others hold 0)."""
        s, t = season, act_feat.shape[1]
        idx = torch.arange(t, device=act_feat.device)
        if s and t > 2 * (t - s):
            idx = torch.cat([idx[: t - s], idx[s:]])
        part = self.coverage(
            ctx.coverage_geom, ctx.coverage_pixels, act_feat[:, idx], active[:, idx],
            slot_of_day[:, idx], day_of_week[:, idx], ctx.coverage_memo, self.cfg.slots_per_day,
            ctx.coverage_candidates,
        )  # fmt: skip
        if len(idx) == t:
            return part
        return part.new_zeros(act_feat.shape[:3]).index_copy(1, idx, part)

    def _calibrated_delta(
        self: MobiWM,
        ctx: ContextCache,
        z_hist: torch.Tensor,
        act_feat: torch.Tensor,
        active: torch.Tensor,
        slot_of_day: torch.Tensor,
        day_of_week: torch.Tensor,
        season: int,
    ) -> torch.Tensor:
        """The coverage prior's change ``[B, P (+1), N]`` between the ``_delta_pairs``, with
        the demand proxy fitted to the traffic of each reference slot (``calibrated_delta``)."""
        tgt, ref = self._delta_pairs(act_feat.shape[1], season)
        return self.coverage.calibrated_delta(
            ctx.coverage_geom, ctx.coverage_pixels, act_feat[:, ref], active[:, ref],
            self.normalizer.denormalize(z_hist[:, ref]), act_feat[:, tgt], active[:, tgt],
            self.cfg.coverage_calibrate, slot_of_day[:, tgt], day_of_week[:, tgt],
            self.cfg.slots_per_day, ctx.coverage_memo, slot_of_day[:, ref], day_of_week[:, ref],
            ctx.coverage_candidates,
        )  # fmt: skip

    def _coverage_delta(
        self: MobiWM, log_share: torch.Tensor, active: torch.Tensor, season: int
    ) -> torch.Tensor:
        """Change ``[B, P (+1), N]`` of the coverage prior's log share between the
        ``_delta_pairs``: of every future slot from the slot the output's anchor is read at (the
        same slot one season earlier for the ``YESTERDAY_ANCHORS`` where the cell was on then,
        else the last history slot). 0 where the cell is off in either slot."""
        h = log_share.shape[1] - self.cfg.horizon
        tgt, ref = self._delta_pairs(log_share.shape[1], season)
        fut, on_fut = log_share[:, tgt], active[:, tgt]
        last, on_last = log_share[:, h - 1 : h], active[:, h - 1 : h]
        delta = torch.where(on_fut & on_last, fut - last, 0.0)
        then, on_then = log_share[:, ref], active[:, ref]
        return torch.where(on_then, torch.where(on_fut, fut - then, 0.0), delta)
