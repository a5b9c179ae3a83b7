"""MobiWM: the mobile-network world model (paper §4), its loss, ``predict`` and ``rollout``.

Data flow of one chunk (``H`` history slots, ``P`` future slots, ``T = H + P``)::

    traffic[:H] ─normalise─► Linear ─(+p_temp +p_spat(cell))─► L_e × FSTBlock ─► LN = Z_H
    [Z_H ; future queries q + p_temp + p_spat(cell)]                       (B, T, N, d)
        + G_A(h_A) + G_P(h_P + POI@cell) + G_F(h_F + facility@cell) + G_O(h_O + OD_t + OD_t@cell)
        ─► L_d × FSTBlock ─► last P slots ─► LN ─► Linear ─(+ last history value)─► z [B, P, N]

Decisions where the paper is silent (see also the module docs of ``layers`` and ``context``):

* Decoder queries: ``P`` future tokens (one learned vector + time encoding of the future slot +
  the cell's ``p_spat``) are appended to the ``H`` encoded tokens; the decoder runs over all
  ``H + P`` slots and the last ``P`` are read out (Eq. 7).
* Action tokens (``action_deltas``): each slot's action features concatenated with their
  difference from the last history slot, so the decoder sees the planned change directly.
* Conditions (Eq. 19) are added once, to the decoder input, for all ``H + P`` tokens. The
  action condition is time-aligned: history actions on history tokens, future actions on
  future tokens (Eq. 8). The state encoder sees traffic only (Eq. 6). POI and facility
  conditions are per cell (global vector + the feature maps sampled at the cell); the OD
  condition is per cell and slot (window vector ``h_O`` + the slot's token + the slot's OD
  features at the cell). The window's OD includes its future slots: OD is exogenous context.
* Topology bias: computed once per forward and shared by all blocks; the encoder uses the
  active flags (and, with ``antenna_bias``, the parameters) of the last history slot, the
  decoder those of the last future slot.
* Output: the change from the last history value in normalised space (``predict_residual``);
  cells that are inactive in a future slot, and padded cells, get the normalised value of zero
  traffic (``predict`` / ``rollout`` return exactly 0 MB for them).
* Daily memory (``season`` > 0, our extension; the paper's H is a few slots): the model reads
  ``H = season + H_tok`` slots, but only the last ``H_tok`` become tokens. Every token (history
  and future) adds an embedding of its cell's normalised traffic ``season`` slots earlier and
  whether the cell was on then, and the residual is taken from the seasonal anchor
  ``z_last + α·(z[t − season] − z[t_last − season])`` (α learnt), or from yesterday's value
  itself (``season_anchor="yesterday"``), which does not carry errors from chunk to chunk, or
  from yesterday's value plus α of today's level over yesterday's (``"damped"``: a chunk's error
  reaches the next one multiplied by α < 1), or plus ρᵏ of it at lead ``k`` (``"ar"``: the
  twin's demand noise is autoregressive, so today's deviation from yesterday fades slot by slot;
  ``ρ`` learnt; ``"ar-adjusted"``: today's deviation from yesterday as the coverage prior
  moves it under today's actions, so the action effect is not counted twice). With
  ``season_actions`` the memory also holds
  that slot's action features and their change since. In a rollout longer than a day the
  memory of a slot past the warm start is, by default, the *observed* traffic (and actions)
  of the same slot on the warm start's last day, per cell where that cell was on then
  (``rollout(memory="observed")``, ``DailyMemory``); ``memory="predicted"`` reads the model's
  own predictions one season earlier instead, so every day's bias is carried into the next
  (measured: +7 % total traffic by day 5 of a week-long rollout). Without the memory a
  few-slot history cannot tell one cell's daily shape from another's, and a week-long rollout
  lost to copying yesterday (``docs/RESULTS.md``).
* Coverage prior (``coverage_prior``, our extension; ``coverage.CoveragePrior``): every slot's
  action features gain a seventh, the cell's log share of the map's demand under that slot's
  parameters (closed form from the twin's antenna pattern and UMa path loss with a soft
  strongest-cell association over a learnt demand proxy on the POI grid), and the output adds
  ``coverage_gain ·`` that share's change from the anchor's slot (learnt, starts at 0). The
  model then no longer has to discover from data how an antenna change moves cell borders.
  With ``coverage_calibrate`` the change is computed after the demand proxy has been fitted
  to the cells' traffic in the anchor's slot, and it multiplies the anchor's traffic by
  ``exp(coverage_gain · Δ)`` (``coverage_gain`` starts at 1: the closed form's prediction).
* Padding: padded cells' inputs are replaced by zeros on entry, their tokens are zeroed after
  every sub-layer, and spatial attention masks them as keys, so they cannot influence real
  cells (bit-identical real outputs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from worldmodel.model.config import BATCH_KEYS, YESTERDAY_ANCHORS, ModelConfig
from worldmodel.model.context import (
    ContextCache,
    FacilityEncoder,
    FlowTokenizer,
    ODEncoder,
    POIEncoder,
    cell_grid_coords,
    sample_at_cells,
)
from worldmodel.model.coverage import CoveragePrior
from worldmodel.model.layers import (
    DENSE_NEIGHBOUR_MAX_CELLS,
    MLP,
    AntennaBias,
    FourierPositionalEncoding,
    FSTBlock,
    Gate,
    TimeEncoding,
    TopologyBias,
    attention_mask,
    expand_over_time,
    neighbour_index,
    pair_geometry,
    zero_padded,
)
from worldmodel.model.normalize import (
    ACTION_FEATURES,
    TrafficNormalizer,
    masked_traffic_loss,
    normalize_actions,
)

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


class MobiWM(nn.Module):
    """Action-conditioned world model of per-cell traffic (paper Eq. 3, 5–20)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if not isinstance(cfg, ModelConfig):
            raise TypeError(f"MobiWM expects a ModelConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        d, nh = cfg.d_model, cfg.n_heads
        self.normalizer = TrafficNormalizer()
        self.time_enc = TimeEncoding(cfg.slots_per_day, cfg.days_per_week, d)
        self.spe = (
            FourierPositionalEncoding(cfg.n_fourier_bands, d, cfg.max_frequency)
            if cfg.use_spe
            else None
        )
        self.trn = TopologyBias(nh, cfg.topo_hidden, cfg.distance_scale_m) if cfg.use_trn else None
        use_ant = cfg.antenna_bias and cfg.use_trn and cfg.use_actions
        self.ant_bias = AntennaBias(nh, cfg.topo_hidden) if use_ant else None

        def blocks(n: int) -> nn.ModuleList:
            return nn.ModuleList(FSTBlock(d, nh, cfg.ffn_mult, cfg.dropout) for _ in range(n))

        self.state_embed = nn.Linear(1, d)
        # daily memory: (traffic one season earlier, its cell was active[, that slot's action
        # features and their change since]) of every token
        # action features per slot: normalize_actions' 6 (+ the coverage prior's log share)
        n_feat = ACTION_FEATURES + (1 if cfg.coverage_prior else 0)
        n_mem = 2 + (2 * n_feat if cfg.season_actions else 0) + (cfg.memory_age > 1)
        self.season_embed = nn.Linear(n_mem, d) if cfg.season else None
        # anchor weight α (see ModelConfig.season_anchor; unused by the 'yesterday' anchor)
        mix = torch.tensor(float(cfg.season_mix_init)) if cfg.season else None
        if mix is not None and cfg.season_mix_learnt and cfg.season_anchor != "yesterday":
            self.season_mix = nn.Parameter(mix)
        else:
            self.register_buffer("season_mix", mix)  # fixed α (None without a season)
        self.encoder = blocks(cfg.enc_layers)
        self.enc_norm = nn.LayerNorm(d)
        self.future_query = nn.Parameter(torch.randn(d) * 0.02)
        self.decoder = blocks(cfg.dec_layers)
        self.dec_norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 1)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

        def gate() -> Gate:
            return Gate(d, d, cfg.use_gates, cfg.gate_init)

        n_act = n_feat * (2 if cfg.action_deltas else 1)
        self.action_enc = MLP(n_act, d, d) if cfg.use_actions else None
        self.coverage = (
            CoveragePrior(
                cfg.poi_categories if cfg.use_poi else 0,
                cfg.facility_channels if cfg.use_facility else 0,
                cfg.count_log_scale,
                cfg.coverage_tau_db,
                cfg.coverage_height_m,
                cfg.coverage_daily_demand,
            )
            if cfg.coverage_prior
            else None
        )
        # weight of the coverage prior's log-share change in the output (starts at 0, or at the
        # closed form's change, 1, when the prior is calibrated on the anchor's traffic)
        gain0 = 1.0 if cfg.coverage_calibrate else 0.0
        self.coverage_gain = nn.Parameter(torch.tensor(gain0)) if cfg.coverage_prior else None
        self.gate_action = gate() if cfg.use_actions else None
        self.poi_enc = POIEncoder(cfg) if cfg.use_poi else None
        self.gate_poi = gate() if cfg.use_poi else None
        self.flow_tok = FlowTokenizer(cfg) if cfg.use_od else None
        self.od_enc = ODEncoder(cfg) if cfg.use_od else None
        self.gate_od = gate() if cfg.use_od else None
        self.fac_enc = FacilityEncoder(cfg) if cfg.use_facility else None
        self.gate_fac = gate() if cfg.use_facility else None
        self._compiled: Any = None  # compile_inference: the compiled _network

    # ------------------------------------------------------------------ helpers
    @property
    def device(self) -> torch.device:
        return self.future_query.device

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @contextlib.contextmanager
    def _eval_mode(self) -> Iterator[None]:
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.train(was_training)

    def _tensor(self, x: ArrayLike, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(x, dtype=dtype, device=self.device)

    def compile_inference(self, enabled: bool = True) -> None:
        """Run inference (``predict``, ``rollout``; eval mode without gradients) through
        ``torch.compile`` of the network after the coverage prior (``_network``), or back in
        eager mode (``enabled=False``). Training is never compiled.

        Each new input shape compiles once (tens of seconds on a CPU; the inductor cache on
        disk shortens it in later processes), then a step costs less: it pays for long runs of
        one shape, e.g. the env's rollouts in PPO. Results equal eager mode within float32
        rounding."""
        self._compiled = torch.compile(self._network, dynamic=False) if enabled else None
        if self.coverage is not None:
            self.coverage.compile_inference(enabled)

    # ------------------------------------------------------------------ context
    def encode_context(
        self,
        poi: ArrayLike | None,
        od_all_slots: ArrayLike | None,
        facility: ArrayLike | None,
        cell_xy: ArrayLike,
        extent_m: ArrayLike,
        cell_mask: ArrayLike | None = None,
        od_start_week_slot: ArrayLike | None = None,
    ) -> ContextCache:
        """Encode the static context of ``B`` maps once.

        ``poi [B, S, S, K]``, ``od_all_slots [B, T_od, 2, S, S]`` (every slot of the horizon of
        interest, e.g. a week; tokenised once), ``facility [B, C, Hf, Wf]``, ``cell_xy [B, N, 2]``
        metres, ``extent_m [B]`` metres, ``cell_mask [B, N]`` bool (default all real),
        ``od_start_week_slot [B]`` week slot of ``od_all_slots[:, 0]`` (default 0 = Monday 00:00).
        Inputs of disabled modalities may be None. Gradients flow when called in training.
        """
        cfg = self.cfg
        xy = self._tensor(cell_xy, torch.float32)
        if xy.dim() != 3 or xy.shape[-1] != 2:
            raise ValueError(f"cell_xy: expected [B, N, 2], got {tuple(xy.shape)}")
        b, n = xy.shape[:2]
        extent = self._tensor(extent_m, torch.float32).reshape(-1)
        if extent.shape != (b,):
            raise ValueError(f"extent_m: expected [{b}], got {tuple(extent.shape)}")
        if not bool((extent > 0).all()):
            raise ValueError("extent_m must be > 0")
        mask = (
            torch.ones(b, n, dtype=torch.bool, device=self.device)
            if cell_mask is None
            else self._tensor(cell_mask, torch.bool)
        )
        _check("cell_mask", mask, (b, n))
        xy = torch.where(mask[..., None], torch.nan_to_num(xy), 0.0)
        grid = cell_grid_coords(xy, extent)
        xy_norm = xy / extent[:, None, None]
        cell_pe = zero_padded(self.spe(xy_norm), mask) if self.spe is not None else None
        nb = neighbour_index(xy, mask, cfg.spatial_neighbours) if cfg.spatial_neighbours else None
        topo = self.trn.features(xy, nb) if self.trn is not None else None

        def pe_grid(rows: int, cols: int) -> torch.Tensor | None:
            return self.spe.grid(rows, cols) if self.spe is not None else None

        poi_cond = fac_cond = od_tokens = od_cell = None
        n_od = 0
        grid_side = cfg.ctx_grid  # side S of the coarse facility map: the POI / OD grid
        if self.poi_enc is not None:
            if poi is None:
                raise ValueError("poi is required (use_poi=True)")
            p = self._tensor(poi, torch.float32)
            _check("poi", p, (b, None, None, cfg.poi_categories))
            grid_side = int(p.shape[1])
            h, fmap = self.poi_enc(p, pe_grid(p.shape[1], p.shape[2]))
            poi_cond = zero_padded(h[:, None] + sample_at_cells(fmap, grid), mask)
        if self.flow_tok is not None:
            if od_all_slots is None:
                raise ValueError("od is required (use_od=True)")
            o = self._tensor(od_all_slots, torch.float32)
            _check("od", o, (b, None, 2, None, None))
            if o.shape[1] < 1:
                raise ValueError("od must cover at least one slot")
            grid_side = int(o.shape[3])
            od_tokens, cells = self.flow_tok(o, grid, pe_grid(o.shape[3], o.shape[4]))
            od_cell = zero_padded(cells, mask)
            n_od = int(o.shape[1])
        if self.fac_enc is not None:
            if facility is None:
                raise ValueError("facility is required (use_facility=True)")
            f = self._tensor(facility, torch.float32)
            _check("facility", f, (b, cfg.facility_channels, None, None))
            fp, s = cfg.facility_fine_px, grid_side
            h, fine, coarse = self.fac_enc(f, s, pe_grid(fp, fp), pe_grid(s, s))
            local = sample_at_cells(fine, grid) + sample_at_cells(coarse, grid)
            fac_cond = zero_padded(h[:, None] + local, mask)
        cov_geom = cov_pixels = cand_idx = cand_geom = None
        if self.coverage is not None:
            geom = self.coverage.geometry(xy, extent, grid_side)
            real = mask[:, :, None]  # padded cells: zero geometry (they never take a share)
            cov_geom = torch.stack(
                [torch.where(real, geom[k], 0.0) for k in CoveragePrior.GEOMETRY], dim=1
            )
            p_in = self._tensor(poi, torch.float32) if self.coverage.poi_categories else None
            f_in = (
                self._tensor(facility, torch.float32) if self.coverage.facility_channels else None
            )
            cov_pixels = self.coverage.pixel_features(p_in, f_in, b, grid_side, self.device)
            if cfg.coverage_candidates:
                cand_idx, cand_geom = self.coverage.candidate_geometry(
                    cov_geom, mask, cfg.coverage_candidates
                )
        start = (
            torch.zeros(b, dtype=torch.long, device=self.device)
            if od_start_week_slot is None
            else self._tensor(od_start_week_slot, torch.long).reshape(b)
        )
        return ContextCache(
            cell_mask=mask,
            cell_xy_m=xy,
            extent_m=extent,
            cell_pe=cell_pe,
            topo_feat=topo,
            neighbours=nb,
            pair_unit=pair_geometry(xy, nb)[1] if self.ant_bias is not None else None,
            poi_cond=poi_cond,
            fac_cond=fac_cond,
            od_tokens=od_tokens,
            od_cell=od_cell,
            od_start_week_slot=start,
            n_od_slots=n_od,
            coverage_geom=cov_geom,
            coverage_pixels=cov_pixels,
            coverage_memo={} if self.coverage is not None else None,
            coverage_cand_idx=cand_idx,
            coverage_cand_geom=cand_geom,
        )

    # ------------------------------------------------------------------ core
    def _core(
        self,
        z_hist: torch.Tensor,
        act_feat: torch.Tensor,
        active: torch.Tensor,
        slot_of_day: torch.Tensor,
        day_of_week: torch.Tensor,
        ctx: ContextCache,
        od_index: torch.Tensor,
        mem_age: torch.Tensor | None = None,
        season: int | None = None,
    ) -> torch.Tensor:
        """Normalised history ``[B, H, N]``, action features ``[B, T, N, 6]``, ``active
        [B, T, N]``, time ``[B, T]``, context, OD cache slots ``[B, T]`` → normalised ``[B, P, N]``.

        Inputs of padded cells must already be sanitised (zeros / False). ``mem_age [B, T -
        season, N]``: age in days of each memory slot's value (``memory_age > 1``; default:
        from the day of week of the memory slots and their tokens). ``season``: slots from a
        memory slot to its token in this window (default ``cfg.season``); a *compact* window
        holds only the memory slots and the tokens (``season = T − cfg.season``), which is all
        the model reads (``rollout`` passes one).
        """
        cfg = self.cfg
        season = cfg.season if season is None else int(season)
        mask = ctx.cell_mask
        cov_delta = None
        if self.coverage is not None:  # one more action feature: the log demand share
            if ctx.coverage_geom is None or ctx.coverage_pixels is None:
                raise ValueError("this context was encoded without the coverage prior")
            if cfg.coverage_calibrate:  # first: it leaves the future slots' shares in the memo
                cov_delta = self._calibrated_delta(ctx, z_hist, act_feat, active, slot_of_day,
                                                   day_of_week, season)  # fmt: skip
                log_share = self._log_share(ctx, act_feat, active, slot_of_day, day_of_week,
                                            season)  # fmt: skip
            else:
                log_share = self._log_share(ctx, act_feat, active, slot_of_day, day_of_week,
                                            season)  # fmt: skip
                cov_delta = self._coverage_delta(log_share, active, season)
            act_feat = torch.cat([act_feat, log_share.unsqueeze(-1)], dim=-1)
        pad = None if bool(mask.all()) else mask  # blocks skip the zeroing without padding
        if mem_age is None and season and cfg.memory_age > 1:  # one graph for compile
            mem_age = self._memory_age(day_of_week, z_hist.shape[-1], season)
        network = self._network
        if self._compiled is not None and not (self.training or torch.is_grad_enabled()):
            network = self._compiled
        return network(z_hist, act_feat, active, slot_of_day, day_of_week, ctx, od_index,
                       mem_age, season, cov_delta, pad)  # fmt: skip

    def _network(
        self,
        z_hist: torch.Tensor,
        act_feat: torch.Tensor,
        active: torch.Tensor,
        slot_of_day: torch.Tensor,
        day_of_week: torch.Tensor,
        ctx: ContextCache,
        od_index: torch.Tensor,
        mem_age: torch.Tensor | None,
        season: int,
        cov_delta: torch.Tensor | None,
        pad: torch.Tensor | None,
    ) -> torch.Tensor:
        """``_core`` after the coverage prior: the daily memory, encoder, decoder and head.

        Pure tensor code without data-dependent Python branches (``pad``: the cell mask, or
        None when no cell is padded), so ``compile_inference`` can hand it to
        ``torch.compile``."""
        cfg = self.cfg
        mask = ctx.cell_mask
        cov_last = None  # "ar-adjusted": the prior's change from t_last - season to t_last
        if cov_delta is not None and season and cfg.season_anchor == "ar-adjusted":
            cov_delta, cov_last = cov_delta[:, :-1], cov_delta[:, -1:]  # _delta_pairs' last
        seas_in, anchor = None, z_hist[:, -1:, :]
        if season:  # keep the token slots; their values one season earlier become inputs
            z_hist, act_feat, active, slot_of_day, day_of_week, od_index, seas_in, anchor = (
                self._seasonal(
                    z_hist,
                    act_feat,
                    active,
                    slot_of_day,
                    day_of_week,
                    od_index,
                    mem_age,
                    cov_last,
                    season,
                )
            )
        b, h, n = z_hist.shape
        t = act_feat.shape[1]
        p_temp = self.time_enc(slot_of_day, day_of_week)  # [B, T, d]
        cell_pe = ctx.cell_pe[:, None] if ctx.cell_pe is not None else 0.0
        seas = self.season_embed(seas_in) if seas_in is not None else None  # [B, T, N, d]

        # state encoder (Eq. 6)
        x = self.state_embed(z_hist.unsqueeze(-1)) + p_temp[:, :h, None] + cell_pe
        if seas is not None:
            x = x + seas[:, :h]
        x = zero_padded(x, mask)
        nb = ctx.neighbours  # spatial attention over each cell's neighbours (None: all cells)
        gather = nb if nb is not None and n > DENSE_NEIGHBOUR_MAX_CELLS else None

        def spatial_mask(slot: int, slots: int) -> torch.Tensor:
            m = self._spatial_mask(ctx, active[:, slot], act_feat[:, slot], gather is None)
            return m if gather is not None else expand_over_time(m, slots)

        enc_mask_t = spatial_mask(h - 1, h)
        for blk in self.encoder:
            x = blk(x, enc_mask_t, pad, gather)
        z_h = zero_padded(self.enc_norm(x), mask)

        # decoder input: encoded history + future queries, plus gated conditions (Eq. 19)
        fut = (self.future_query + p_temp[:, h:, None] + cell_pe).expand(b, t - h, n, -1)
        if seas is not None:
            fut = fut + seas[:, h:]
        y = torch.cat([z_h, fut], dim=1)  # [B, T, N, d]
        cond: torch.Tensor | float = 0.0
        if self.action_enc is not None:
            a_in = act_feat
            if cfg.action_deltas:
                a_in = torch.cat([act_feat, act_feat - act_feat[:, h - 1 : h]], dim=-1)
            h_a = self.action_enc(a_in) + p_temp[:, :, None]  # Eq. 8
            cond = cond + self.gate_action(h_a)
        if self.gate_poi is not None:
            cond = cond + self.gate_poi(ctx.poi_cond)[:, None]
        if self.gate_fac is not None:
            cond = cond + self.gate_fac(ctx.fac_cond)[:, None]
        if self.gate_od is not None:
            rows = torch.arange(b, device=z_hist.device)[:, None]
            tok = ctx.od_tokens[rows, od_index]  # [B, T, d]
            h_o = self.od_enc(tok + p_temp)  # [B, d]
            od_local = ctx.od_cell[rows, od_index]  # [B, T, N, d]
            cond = cond + self.gate_od(h_o[:, None, None] + tok[:, :, None] + od_local)
        y = zero_padded(y + cond, mask)

        # state decoder (Eq. 7) and head (Eq. 20)
        dec_mask_t = spatial_mask(t - 1, t)
        for i, blk in enumerate(self.decoder):  # only the future slots are read at the end
            y = blk(y, dec_mask_t, pad, gather, last=t - h if i == len(self.decoder) - 1 else 0)
        out = self.head(self.dec_norm(y[:, -(t - h) :])).squeeze(-1)  # [B, P, N]
        if cfg.predict_residual:
            out = out + anchor
        if cov_delta is not None:
            out = out + self._coverage_term(anchor, cov_delta)
        valid = active[:, h:] & mask[:, None, :]
        return torch.where(valid, out, self.normalizer.zero_level().to(out.dtype))

    def _coverage_term(self, base: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
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

    def _seasonal(
        self,
        z_hist: torch.Tensor,
        act_feat: torch.Tensor,
        active: torch.Tensor,
        slot_of_day: torch.Tensor,
        day_of_week: torch.Tensor,
        od_index: torch.Tensor,
        mem_age: torch.Tensor | None = None,
        cov_last: torch.Tensor | None = None,
        season: int | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """Split a ``season``-model window into its token slots and their daily memory.

        The window's ``T = H + P`` slots: tokens are slots ``[season, T)``; token ``j`` reads the
        value of slot ``j`` (``season`` slots earlier), which lies in the history because
        ``P <= season``. Returns the inputs sliced to the tokens, the memory features
        ``[B, T - season, N, 2 (+12)]`` (normalised traffic, active flag[, action features
        then and their change since]; 0 where the cell was off) and the anchor ``[B, P, N]``:
        ``"difference"``: ``z_last + α·(z[t - season] - z[t_last - season])`` (``α =
        season_mix``: learnt or fixed, see ``ModelConfig``) where the cell was on in both source
        slots, else ``z_last``; ``"yesterday"``: ``z[t - season]`` where the cell was on then,
        else ``z_last``; ``"damped"``: that plus ``α·(z_last - z[t_last - season])`` where the
        cell was also on at ``t_last - season``; ``"ar"``: the same with ``ρᵏ`` in place of
        ``α`` for the ``k``-th future slot (``ρ = season_mix`` clamped to [0, 1]);
        ``"ar-adjusted"``: ``"ar"`` with ``z[t_last - season]`` first moved by the coverage
        prior's change ``cov_last [B, 1, N]`` from that slot to ``t_last`` (``_coverage_term``).
        ``season``: as in ``_core``.
        """
        s, h = (self.cfg.season if season is None else season), z_hist.shape[1]
        ht = h - s  # history tokens
        t_tok = act_feat.shape[1] - s
        src = z_hist[:, :t_tok]  # [B, T - s, N]: value one season before each token
        on = active[:, :t_tok]
        zero = self.normalizer.zero_level().to(src.dtype)
        seas_in = torch.stack([torch.where(on, src - zero, 0.0), on.to(src.dtype)], dim=-1)
        if self.cfg.season_actions:
            a_then, a_now = act_feat[:, :t_tok], act_feat[:, s:]
            a_mem = torch.cat([a_then, a_now - a_then], dim=-1)
            seas_in = torch.cat([seas_in, torch.where(on[..., None], a_mem, 0.0)], dim=-1)
        if self.cfg.memory_age > 1:  # the memory's age in days: 1 → 0, a week → 1
            if mem_age is None:
                mem_age = self._memory_age(day_of_week, on.shape[-1], s)
            # a memory older than any seen in training reads as the oldest seen (a rollout
            # of weeks remembers its warm-up day, months old by the end)
            age = mem_age.clamp(max=self.cfg.memory_age).to(src.dtype)
            feat = (age - 1.0) / (self.cfg.days_per_week - 1)
            seas_in = torch.cat([seas_in, feat.unsqueeze(-1)], dim=-1)
        z_last = z_hist[:, -1:]
        if self.cfg.season_anchor in YESTERDAY_ANCHORS:
            anchor = src[:, ht:]
            if self.cfg.season_anchor != "yesterday":  # plus a share of today's level change
                then = src[:, ht - 1 : ht]
                if cov_last is not None:  # yesterday as it would be under today's actions
                    then = then + self._coverage_term(then, cov_last)
                level = torch.where(on[:, ht - 1 : ht], z_last - then, 0.0)
                share = self.season_mix
                if self.cfg.season_anchor.startswith("ar"):  # ρ^k at lead k = 1..P
                    lead = torch.arange(1, anchor.shape[1] + 1, device=src.device)
                    share = share.clamp(0.0, 1.0).pow(lead.to(src.dtype))[:, None]
                anchor = anchor + share * level
            anchor = torch.where(on[:, ht:], anchor, z_last)
        else:
            both = on[:, ht:] & on[:, ht - 1 : ht]
            change = torch.where(both, src[:, ht:] - src[:, ht - 1 : ht], 0.0)
            anchor = z_last + self.season_mix * change
        return (
            z_hist[:, s:],
            act_feat[:, s:],
            active[:, s:],
            slot_of_day[:, s:],
            day_of_week[:, s:],
            od_index[:, s:],
            seas_in,
            anchor,
        )

    def _memory_age(self, day_of_week: torch.Tensor, n: int, season: int) -> torch.Tensor:
        """Default age in days ``[B, T − season, N]`` of each memory slot's value: from the day
        of week of the memory slots and of their tokens (``day_of_week [B, T]``)."""
        week, t_tok = self.cfg.days_per_week, day_of_week.shape[1] - season
        age = (day_of_week[:, season:] - day_of_week[:, :t_tok]).remainder(week)
        return torch.where(age == 0, week, age)[..., None].expand(-1, -1, n)

    def _log_share(
        self,
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

    def _delta_pairs(self, t: int, season: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Window slots ``(target, reference)``, each ``[P]`` (``[P + 1]`` for
        ``"ar-adjusted"``), between which the coverage prior's change is taken: every future
        slot and the slot whose traffic the output anchor reads for it, one season earlier for
        the ``YESTERDAY_ANCHORS``, else the last history slot (per cell, ``_seasonal`` falls
        back to the last slot where a cell was off then); ``"ar-adjusted"`` adds the last
        history slot and the slot one season before it (``season`` slots, see ``_core``)."""
        h, s = t - self.cfg.horizon, season
        fut = torch.arange(h, t, device=self.device)
        if not (s and self.cfg.season_anchor in YESTERDAY_ANCHORS):
            return fut, torch.full_like(fut, h - 1)
        if self.cfg.season_anchor == "ar-adjusted":
            fut = torch.cat([fut, fut.new_tensor([h - 1])])
        return fut, fut - s

    def _calibrated_delta(
        self,
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
        self, log_share: torch.Tensor, active: torch.Tensor, season: int
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

    def _spatial_mask(
        self, ctx: ContextCache, active: torch.Tensor, act_feat: torch.Tensor, dense: bool = True
    ) -> torch.Tensor:
        """Additive spatial-attention mask from the TRN bias (plus the antenna bias from the
        action features ``[B, N, 6]`` of the same slot), the padding mask and, with
        ``spatial_neighbours``, the neighbour restriction (``attention_mask``'s ``dense``)."""
        nb = ctx.neighbours
        bias = (
            self.trn(ctx.topo_feat, ctx.cell_mask, active, nb)
            if self.trn is not None and ctx.topo_feat is not None
            else None
        )
        if bias is not None and self.ant_bias is not None:
            bias = bias + self.ant_bias(ctx.cell_xy_m, act_feat, nb, ctx.pair_unit)
        return attention_mask(bias, ctx.cell_mask, self.cfg.n_heads, nb, dense)

    # ------------------------------------------------------------------ training API
    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Normalised prediction ``[B, P, N]`` of the last ``P`` slots of a ``WorldBatch``.

        Reads ``traffic[:, :H]`` only (never the targets), all ``T`` slots of actions, active
        flags, time and OD. Inactive / padded cells hold the normalised zero-traffic value.
        """
        cfg = self.cfg
        optional = {"poi": cfg.use_poi, "od": cfg.use_od, "facility": cfg.use_facility}
        missing = [k for k in BATCH_KEYS if k not in batch and optional.get(k, True)]
        if missing:
            raise ValueError(f"batch is missing keys {missing}")
        traffic = batch["traffic"]
        if traffic.dim() != 3:
            raise ValueError(f"traffic: expected [B, T, N], got {tuple(traffic.shape)}")
        b, t, n = traffic.shape
        if t != cfg.window:
            raise ValueError(
                f"traffic has T={t} slots, the model expects history {cfg.history} + horizon "
                f"{cfg.horizon} = {cfg.window}"
            )
        _check("actions", batch["actions"], (b, t, n, 4))
        _check("active", batch["active"], (b, t, n))
        _check("slot_of_day", batch["slot_of_day"], (b, t))
        _check("day_of_week", batch["day_of_week"], (b, t))
        od = batch.get("od")
        if cfg.use_od:
            _check("od", od, (b, t, 2, None, None))
        # only the token slots' OD is read: the first `season` slots are memory only
        s = cfg.season
        od_index = torch.arange(t, device=self.device).sub(s).clamp_min(0).expand(b, t)
        if od is not None and s:
            od = od[:, s:]
        ctx = self.encode_context(
            batch.get("poi"), od, batch.get("facility"), batch["cell_xy"], batch["extent_m"],
            batch["cell_mask"],
        )  # fmt: skip
        z_hist, act_feat, active = self._prepare(
            traffic[:, : cfg.history], batch["actions"], batch["active"], ctx.cell_mask
        )
        return self._core(
            z_hist, act_feat, active, batch["slot_of_day"], batch["day_of_week"], ctx, od_index
        )

    def _prepare(
        self,
        history_traffic: torch.Tensor,
        actions: torch.Tensor,
        active: torch.Tensor,
        cell_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sanitise padded cells and normalise: → ``z_hist``, action features, ``active``."""
        m = cell_mask[:, None, :]
        zero = torch.zeros((), dtype=history_traffic.dtype, device=history_traffic.device)
        traffic = torch.where(m, torch.nan_to_num(history_traffic), zero)
        active = active.to(torch.bool) & m
        acts = torch.where(m[..., None], actions, zero)
        return self.normalizer.normalize(traffic), normalize_actions(acts, active), active

    def loss(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Masked loss in normalised space over real cells that are active in the target slot.

        Returns ``(loss, metrics)``; metrics: ``loss``, ``mse``, ``mae`` (normalised) and
        ``mae_mb`` (physical, MB per slot), ``n_targets``.
        """
        return self.loss_from_prediction(batch, self(batch))

    def loss_from_prediction(
        self, batch: Mapping[str, torch.Tensor], pred: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``loss`` of an already computed normalised prediction ``[B, P, N]``."""
        return masked_traffic_loss(
            self.normalizer, batch, pred, self.cfg.loss, self.cfg.huber_delta
        )

    # ------------------------------------------------------------------ inference API
    def predict(
        self,
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
        self,
        history_traffic: ArrayLike,
        history_actions: ArrayLike,
        future_actions: ArrayLike,
        context: ContextCache | Mapping[str, Any],
        mask: Mapping[str, ArrayLike] | None,
        time: Mapping[str, ArrayLike],
        n_chunks: int | None = None,
        memory: str | DailyMemory = "observed",
    ) -> torch.Tensor:
        """Autoregressive rollout (Eq. 5) over ``K`` chunks → traffic ``[B, K·P, N]`` MB.

        As ``predict``, with ``future_actions [B, K·P, N, 4]`` and ``active`` / time / ``od_index``
        over ``H + K·P`` slots. Each chunk's prediction becomes history of the next; the time
        indices and active flags of every future slot come from the caller.

        ``memory`` (models with a daily memory; no effect on the first ``season`` predicted
        slots): ``"observed"`` — a slot past the warm start remembers the same slot on the
        history's last day (observed), per cell where the cell was on then;
        ``"predicted"`` — its own prediction one season earlier; a ``DailyMemory`` — that
        table for the slots after it (continuing a rollout in segments).
        """
        cfg = self.cfg
        with self._eval_mode():
            hist = self._tensor(history_traffic, torch.float32)
            if hist.dim() != 3:
                raise ValueError(f"history_traffic: expected [B, H, N], got {tuple(hist.shape)}")
            b, h, n = hist.shape
            if h != cfg.history:
                raise ValueError(
                    f"history_traffic has H={h} slots, the model expects {cfg.history}"
                )
            h_act = self._tensor(history_actions, torch.float32)
            f_act = self._tensor(future_actions, torch.float32)
            _check("history_actions", h_act, (b, h, n, 4))
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
            ctx = self._as_cache(context, (mask or {}).get("cell_mask"))
            if (ctx.batch_size, ctx.n_cells) != (b, n):
                raise ValueError(
                    f"context is for {ctx.batch_size} maps × {ctx.n_cells} cells, inputs have {b} × {n}"
                )
            mask = mask or {}
            if mask.get("cell_mask") is not None:
                cm = self._tensor(mask["cell_mask"], torch.bool)
                _check("cell_mask", cm, (b, n))
                if not torch.equal(cm, ctx.cell_mask):
                    raise ValueError("mask['cell_mask'] differs from the context's cell_mask")
            if mask.get("active") is not None:
                active = self._tensor(mask["active"], torch.bool)
                _check("active", active, (b, total, n))
            else:
                active = torch.ones(b, total, n, dtype=torch.bool, device=self.device)
            slot = self._tensor(time["slot_of_day"], torch.long)
            dow = self._tensor(time["day_of_week"], torch.long)
            _check("slot_of_day", slot, (b, total))
            _check("day_of_week", dow, (b, total))
            if slot.min() < 0 or slot.max() >= cfg.slots_per_day:
                raise ValueError(f"slot_of_day must be in [0, {cfg.slots_per_day})")
            if dow.min() < 0 or dow.max() >= cfg.days_per_week:
                raise ValueError(f"day_of_week must be in [0, {cfg.days_per_week})")
            if time.get("od_index") is not None:
                od_index = self._tensor(time["od_index"], torch.long)
                _check("od_index", od_index, (b, total))
                if ctx.n_od_slots and (od_index.min() < 0 or od_index.max() >= ctx.n_od_slots):
                    raise ValueError(f"od_index must be in [0, {ctx.n_od_slots})")
            else:
                od_index = ctx.od_index(slot, dow, cfg.slots_per_day)
            real = ctx.cell_mask[:, None, :]
            if not bool(torch.isfinite(hist).logical_or(~real).all()):
                raise ValueError("history_traffic has non-finite values in real cells")

            actions = torch.cat([h_act, f_act], dim=1)  # [B, H+K·P, N, 4]
            table = self._memory_table(memory, hist, h_act, active[:, :h])
            full = torch.cat([hist, hist.new_zeros(b, k * p, n)], dim=1)  # [B, H+K·P, N]
            keep, season = self._compact_slots(h + p)
            for c in range(k):
                s, e = c * p, c * p + h + p
                win, win_act, win_on = full[:, s : s + h], actions[:, s:e], active[:, s:e]
                times = (slot[:, s:e], dow[:, s:e], od_index[:, s:e])
                if keep is not None:  # only the memory slots and the tokens
                    win, win_act, win_on = win[:, keep[:-p]], win_act[:, keep], win_on[:, keep]
                    times = tuple(x[:, keep] for x in times)
                win, win_act, win_on, age = self._with_memory(
                    win, win_act, win_on, s, table, h + p - cfg.season
                )
                z_hist, act_feat, act_w = self._prepare(win, win_act, win_on, ctx.cell_mask)
                z = self._core(
                    z_hist, act_feat, act_w, times[0], times[1], ctx, times[2], age, season
                )
                valid = act_w[:, -p:]  # already & cell_mask
                full[:, s + h : e] = torch.where(valid, self.normalizer.denormalize(z), 0.0)
            return full[:, h:]

    def _compact_slots(self, t: int) -> tuple[torch.Tensor | None, int | None]:
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
        self,
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
            _check("memory.traffic", memory.traffic, (b, s, n))
            _check("memory.actions", memory.actions, (b, s, n, 4))
            _check("memory.active", memory.active, (b, s, n))
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
        self,
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

    def _as_cache(
        self, context: ContextCache | Mapping[str, Any], cell_mask: ArrayLike | None = None
    ) -> ContextCache:
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


def _check(name: str, x: torch.Tensor, shape: tuple[int | None, ...]) -> None:
    """Raise ``ValueError`` unless ``x.shape`` matches ``shape`` (None = any size)."""
    ok = x.dim() == len(shape) and all(
        s is None or s == xs for s, xs in zip(shape, x.shape, strict=True)
    )
    if not ok:
        want = ", ".join("*" if s is None else str(s) for s in shape)
        raise ValueError(f"{name}: expected shape [{want}], got {list(x.shape)}")
