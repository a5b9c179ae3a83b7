"""MobiWM: the mobile-network world model (paper §4): construction, network and loss.

``MobiWM`` mixes in ``rollout.RolloutMixin`` (``predict``, ``rollout`` and the daily memory
across chunks), ``seasonal.SeasonalMixin`` (a window's daily memory and the output's anchor)
and ``prior.CoverageMixin`` (the coverage-prior stage); this module holds the rest: the
modules, ``encode_context``, ``_core`` (coverage features → ``_network``: encode, conditions,
decode) and ``forward`` / ``loss``.

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
  ``H = season + H_tok`` slots, but only the last ``H_tok`` become tokens; every token adds an
  embedding of its cell's traffic one season earlier and its output's residual is taken from a
  seasonal anchor (``seasonal``). In a rollout longer than a day the memory of a slot past the
  warm start is read from the warm start's last day or from the model's own predictions
  (``rollout``). Without the memory a few-slot history cannot tell one cell's daily shape from
  another's, and a week-long rollout lost to copying yesterday (``docs/changelog.md``).
* Coverage prior (``coverage_prior``, our extension; ``prior``): every slot's action features
  gain the cell's log share of the map's demand under that slot's parameters, and the output
  adds the effect of that share's change from the anchor's slot.
* Padding: padded cells' inputs are replaced by zeros on entry, their tokens are zeroed after
  every sub-layer, and spatial attention masks them as keys, so they cannot influence real
  cells (bit-identical real outputs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from worldmodel.model.config import BATCH_KEYS, ModelConfig
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
from worldmodel.model.prior import CoverageMixin
from worldmodel.model.rollout import (
    MEMORY_MODES,
    ArrayLike,
    DailyMemory,
    RolloutMixin,
    check_shape,
)
from worldmodel.model.seasonal import SeasonalMixin, SeasonalWindow

__all__ = ["MEMORY_MODES", "DailyMemory", "MobiWM"]

CellPE = torch.Tensor | float
"""A cell's positional encoding ``[B, 1, N, d]`` broadcast over slots, or 0.0 without one."""


class MobiWM(RolloutMixin, SeasonalMixin, CoverageMixin, nn.Module):
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
        xy, extent, mask = self._cell_inputs(cell_xy, extent_m, cell_mask)
        b = xy.shape[0]
        grid = cell_grid_coords(xy, extent)
        xy_norm = xy / extent[:, None, None]
        cell_pe = zero_padded(self.spe(xy_norm), mask) if self.spe is not None else None
        nb = neighbour_index(xy, mask, cfg.spatial_neighbours) if cfg.spatial_neighbours else None
        topo = self.trn.features(xy, nb) if self.trn is not None else None
        poi_cond, poi_side = self._encode_poi(poi, grid, mask)
        od_tokens, od_cell, n_od, od_side = self._encode_od(od_all_slots, grid, mask)
        # side S of the coarse facility map and of the coverage prior's grid: the OD / POI grid
        side = next((s for s in (od_side, poi_side) if s is not None), cfg.ctx_grid)
        fac_cond = self._encode_facility(facility, grid, mask, side)
        cov_geom, cov_pixels, cand_idx, cand_geom = self._encode_coverage(
            poi, facility, xy, extent, mask, side
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

    def _cell_inputs(
        self, cell_xy: ArrayLike, extent_m: ArrayLike, cell_mask: ArrayLike | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Checked cell positions ``[B, N, 2]`` m (padded cells and NaN at 0), map extents
        ``[B]`` m (> 0) and cell mask ``[B, N]`` bool (default all real)."""
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
        check_shape("cell_mask", mask, (b, n))
        return torch.where(mask[..., None], torch.nan_to_num(xy), 0.0), extent, mask

    def _pe_grid(self, rows: int, cols: int) -> torch.Tensor | None:
        """``p_spat`` of a ``rows × cols`` grid ``[d, rows, cols]`` (None without it)."""
        return self.spe.grid(rows, cols) if self.spe is not None else None

    def _encode_poi(
        self, poi: ArrayLike | None, grid: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor | None, int | None]:
        """POI condition ``[B, N, d]`` (``h_P`` + the feature map at each cell, ``grid [B, N,
        2]`` in ``[-1, 1]``) and the POI grid's side ``S``; ``(None, None)`` without POI."""
        if self.poi_enc is None:
            return None, None
        if poi is None:
            raise ValueError("poi is required (use_poi=True)")
        p = self._tensor(poi, torch.float32)
        check_shape("poi", p, (mask.shape[0], None, None, self.cfg.poi_categories))
        h, fmap = self.poi_enc(p, self._pe_grid(p.shape[1], p.shape[2]))
        return zero_padded(h[:, None] + sample_at_cells(fmap, grid), mask), int(p.shape[1])

    def _encode_od(
        self, od: ArrayLike | None, grid: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, int, int | None]:
        """OD slot tokens ``[B, T_od, d]``, each cell's flow features ``[B, T_od, N, d]``, the
        number of slots ``T_od`` and the OD grid's side ``S``; ``(None, None, 0, None)``
        without OD."""
        if self.flow_tok is None:
            return None, None, 0, None
        if od is None:
            raise ValueError("od is required (use_od=True)")
        o = self._tensor(od, torch.float32)
        check_shape("od", o, (mask.shape[0], None, 2, None, None))
        if o.shape[1] < 1:
            raise ValueError("od must cover at least one slot")
        tokens, cells = self.flow_tok(o, grid, self._pe_grid(o.shape[3], o.shape[4]))
        return tokens, zero_padded(cells, mask), int(o.shape[1]), int(o.shape[3])

    def _encode_facility(
        self, facility: ArrayLike | None, grid: torch.Tensor, mask: torch.Tensor, side: int
    ) -> torch.Tensor | None:
        """Facility condition ``[B, N, d]`` (``h_F`` + the fine and the ``side × side`` coarse
        feature maps at each cell); None without facilities."""
        if self.fac_enc is None:
            return None
        if facility is None:
            raise ValueError("facility is required (use_facility=True)")
        f = self._tensor(facility, torch.float32)
        check_shape("facility", f, (mask.shape[0], self.cfg.facility_channels, None, None))
        fp = self.cfg.facility_fine_px
        h, fine, coarse = self.fac_enc(f, side, self._pe_grid(fp, fp), self._pe_grid(side, side))
        local = sample_at_cells(fine, grid) + sample_at_cells(coarse, grid)
        return zero_padded(h[:, None] + local, mask)

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
        features: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Normalised history ``[B, H, N]``, action features ``[B, T, N, 6]``, ``active
        [B, T, N]``, time ``[B, T]``, context, OD cache slots ``[B, T]`` → normalised ``[B, P, N]``.

        Inputs of padded cells must already be sanitised (zeros / False). ``mem_age [B, T -
        season, N]``: age in days of each memory slot's value (``memory_age > 1``; default:
        from the day of week of the memory slots and their tokens). ``season``: slots from a
        memory slot to its token in this window (default ``cfg.season``); a *compact* window
        holds only the memory slots and the tokens (``season = T − cfg.season``), which is all
        the model reads (``rollout`` passes one). ``features``: also return the decoder's
        normalised features of the future tokens ``[B, P, N, d]`` (the quantile head's input).
        """
        season = self.cfg.season if season is None else int(season)
        act_feat, cov_delta = self._coverage_features(ctx, z_hist, act_feat, active, slot_of_day,
                                                      day_of_week, season)  # fmt: skip
        mask = ctx.cell_mask
        pad = None if bool(mask.all()) else mask  # blocks skip the zeroing without padding
        if mem_age is None and season and self.cfg.memory_age > 1:  # one graph for compile
            mem_age = self._memory_age(day_of_week, z_hist.shape[-1], season)
        network = self._network
        if self._compiled is not None and not (self.training or torch.is_grad_enabled()):
            network = self._compiled
        return network(z_hist, act_feat, active, slot_of_day, day_of_week, ctx, od_index,
                       mem_age, season, cov_delta, pad, features)  # fmt: skip

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
        features: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``_core`` after the coverage prior: the daily memory, encoder, decoder and head.

        Pure tensor code without data-dependent Python branches (``pad``: the cell mask, or
        None when no cell is padded), so ``compile_inference`` can hand it to
        ``torch.compile``."""
        cov_delta, cov_last = self._split_coverage_delta(cov_delta, season)
        win = self._window(z_hist, act_feat, active, slot_of_day, day_of_week, od_index,
                           mem_age, cov_last, season)  # fmt: skip
        p_temp = self.time_enc(win.slot_of_day, win.day_of_week)  # [B, T, d]
        cell_pe = ctx.cell_pe[:, None] if ctx.cell_pe is not None else 0.0
        seas = self.season_embed(win.memory) if win.memory is not None else None  # [B, T, N, d]
        nb = ctx.neighbours  # spatial attention over each cell's neighbours (None: all cells)
        gather = nb if nb is not None and win.z_hist.shape[2] > DENSE_NEIGHBOUR_MAX_CELLS else None
        z_h = self._encode(win, ctx, p_temp, cell_pe, seas, pad, gather)
        y = self._decoder_input(z_h, win, ctx, p_temp, cell_pe, seas)
        return self._decode(y, win, ctx, pad, gather, cov_delta, features)

    def _encode(
        self,
        win: SeasonalWindow,
        ctx: ContextCache,
        p_temp: torch.Tensor,
        cell_pe: CellPE,
        seas: torch.Tensor | None,
        pad: torch.Tensor | None,
        gather: torch.Tensor | None,
    ) -> torch.Tensor:
        """State encoder (Eq. 6): the history tokens (+ ``p_temp [B, T, d]``, ``p_spat`` and
        the memory embedding ``seas [B, T, N, d]``) → ``Z_H [B, H, N, d]``."""
        h = win.z_hist.shape[1]
        x = self.state_embed(win.z_hist.unsqueeze(-1)) + p_temp[:, :h, None] + cell_pe
        if seas is not None:
            x = x + seas[:, :h]
        x = zero_padded(x, ctx.cell_mask)
        enc_mask_t = self._block_mask(ctx, win, h - 1, h, gather)
        for blk in self.encoder:
            x = blk(x, enc_mask_t, pad, gather)
        return zero_padded(self.enc_norm(x), ctx.cell_mask)

    def _decoder_input(
        self,
        z_h: torch.Tensor,
        win: SeasonalWindow,
        ctx: ContextCache,
        p_temp: torch.Tensor,
        cell_pe: CellPE,
        seas: torch.Tensor | None,
    ) -> torch.Tensor:
        """Decoder input ``[B, T, N, d]``: the encoded history ``z_h`` and the future queries
        (``future_query`` + ``p_temp`` + ``p_spat`` + memory), plus the gated conditions."""
        b, h, n = win.z_hist.shape
        t = win.act_feat.shape[1]
        fut = (self.future_query + p_temp[:, h:, None] + cell_pe).expand(b, t - h, n, -1)
        if seas is not None:
            fut = fut + seas[:, h:]
        y = torch.cat([z_h, fut], dim=1)  # [B, T, N, d]
        return zero_padded(y + self._conditions(win, ctx, p_temp), ctx.cell_mask)

    def _conditions(
        self, win: SeasonalWindow, ctx: ContextCache, p_temp: torch.Tensor
    ) -> torch.Tensor | float:
        """Sum of the gated conditions (Eq. 19) on every token, ``[B, T, N, d]`` (0.0 with
        none): actions (time-aligned, Eq. 8), POI, facility and OD (window ``h_O`` + the
        slot's token + its flow features at the cell)."""
        b, h = win.z_hist.shape[:2]
        cond: torch.Tensor | float = 0.0
        if self.action_enc is not None:
            a_in = win.act_feat
            if self.cfg.action_deltas:
                a_in = torch.cat([a_in, a_in - a_in[:, h - 1 : h]], dim=-1)
            h_a = self.action_enc(a_in) + p_temp[:, :, None]  # Eq. 8
            cond = cond + self.gate_action(h_a)
        if self.gate_poi is not None:
            cond = cond + self.gate_poi(ctx.poi_cond)[:, None]
        if self.gate_fac is not None:
            cond = cond + self.gate_fac(ctx.fac_cond)[:, None]
        if self.gate_od is not None:
            rows = torch.arange(b, device=win.z_hist.device)[:, None]
            tok = ctx.od_tokens[rows, win.od_index]  # [B, T, d]
            h_o = self.od_enc(tok + p_temp)  # [B, d]
            od_local = ctx.od_cell[rows, win.od_index]  # [B, T, N, d]
            cond = cond + self.gate_od(h_o[:, None, None] + tok[:, :, None] + od_local)
        return cond

    def _decode(
        self,
        y: torch.Tensor,
        win: SeasonalWindow,
        ctx: ContextCache,
        pad: torch.Tensor | None,
        gather: torch.Tensor | None,
        cov_delta: torch.Tensor | None,
        features: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """State decoder (Eq. 7) and head (Eq. 20): normalised ``[B, P, N]`` = the change read
        from the last ``P`` tokens + the anchor (+ the coverage term); the zero-traffic value
        where a cell is off or padded. ``features``: also the normalised decoder features of
        those tokens ``[B, P, N, d]``."""
        h, t = win.z_hist.shape[1], win.act_feat.shape[1]
        dec_mask_t = self._block_mask(ctx, win, t - 1, t, gather)
        for i, blk in enumerate(self.decoder):  # only the future slots are read at the end
            y = blk(y, dec_mask_t, pad, gather, last=t - h if i == len(self.decoder) - 1 else 0)
        feat = self.dec_norm(y[:, -(t - h) :])  # [B, P, N, d]
        out = self.head(feat).squeeze(-1)  # [B, P, N]
        if self.cfg.predict_residual:
            out = out + win.anchor
        if cov_delta is not None:
            out = out + self._coverage_term(win.anchor, cov_delta)
        valid = win.active[:, h:] & ctx.cell_mask[:, None, :]
        out = torch.where(valid, out, self.normalizer.zero_level().to(out.dtype))
        return (out, feat) if features else out

    def _block_mask(
        self,
        ctx: ContextCache,
        win: SeasonalWindow,
        slot: int,
        slots: int,
        gather: torch.Tensor | None,
    ) -> torch.Tensor:
        """The spatial mask of a block stack from window slot ``slot``'s active flags and
        actions (``_spatial_mask``), over ``slots`` slots unless ``gather``-ed."""
        m = self._spatial_mask(ctx, win.active[:, slot], win.act_feat[:, slot], gather is None)
        return m if gather is not None else expand_over_time(m, slots)

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
        self._check_batch(batch)
        b, t = batch["traffic"].shape[:2]
        od = batch.get("od")
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
            batch["traffic"][:, : cfg.history], batch["actions"], batch["active"], ctx.cell_mask
        )
        return self._core(
            z_hist, act_feat, active, batch["slot_of_day"], batch["day_of_week"], ctx, od_index
        )

    def _check_batch(self, batch: Mapping[str, torch.Tensor]) -> None:
        """``ValueError`` unless ``batch`` is a ``WorldBatch`` of ``H + P`` slots for this model
        (keys of disabled modalities may be missing; per-slot shapes as ``_check_slots``)."""
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
        self._check_slots(b, t, n, batch["actions"], batch["active"], batch["slot_of_day"],
                          batch["day_of_week"])  # fmt: skip
        if cfg.use_od:
            check_shape("od", batch["od"], (b, t, 2, None, None))

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
