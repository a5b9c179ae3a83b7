"""Configuration of MobiWM (architecture, sizes, ablation switches) and the batch contract.

``ModelConfig`` is the one typed description of a model; it is saved beside every checkpoint
(``config.json``) and validated on construction, so a bad value fails at once with a
``ValueError`` that names the field. ``preset(name)`` gives the sizes of paper §5.5.

Parameter counts of the presets (full model, default ``ctx_grid=32``, ``facility_px=128``;
``tests/worldmodel/model/test_model_config.py`` recomputes and prints them):

| preset | d_model | heads | L_e + L_d | parameters |
|--------|---------|-------|-----------|------------|
| debug  | 16      | 2     | 1 + 1     | 17.6 k     |
| S      | 64      | 4     | 2 + 2     | 0.36 M     |
| M      | 96      | 6     | 3 + 3     | 1.09 M     |
| L      | 128     | 8     | 4 + 4     | 2.45 M     |
| XL     | 192     | 8     | 6 + 6     | 7.83 M     |

Roughly 16·d² per FSTBlock (two attentions + FFN with ``ffn_mult=4``) plus ~0.1–0.3 M for the
context encoders. Parameter counts do not depend on ``ctx_grid``, ``facility_px``, ``history``
or ``horizon``: the same weights run on any grid / image size.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypedDict

import torch

from worldmodel.twin.scenario import DAYS_PER_WEEK, POI_CATEGORIES, SLOTS_PER_DAY


class WorldBatch(TypedDict):
    """One training batch of ``B`` maps padded to ``N`` cells over ``T = H + P`` slots.

    Produced by the data pipeline, consumed by ``MobiWM.forward`` / ``MobiWM.loss``. All grids
    have row 0 at the southern edge and column 0 at the western edge and cover
    ``[0, extent_m]²`` — the same frame as ``cell_xy``.
    """

    traffic: torch.Tensor  # [B, T, N] float32 MB per slot (≥ 0); last P slots are the targets
    actions: torch.Tensor  # [B, T, N, 4] float32 power_dbm, azimuth_deg, mech/elec_tilt_deg
    active: torch.Tensor  # [B, T, N] bool, cell radiating during the slot
    cell_mask: torch.Tensor  # [B, N] bool, True for real cells, False for padding
    cell_xy: torch.Tensor  # [B, N, 2] float32 metres, south-west origin
    extent_m: torch.Tensor  # [B] float32, side of the square map
    slot_of_day: torch.Tensor  # [B, T] int64 in [0, 96)
    day_of_week: torch.Tensor  # [B, T] int64 in [0, 7)
    poi: torch.Tensor  # [B, S, S, K] float32 POI counts
    od: torch.Tensor  # [B, T, 2, S, S] float32 in-flow / out-flow per grid cell per slot
    facility: torch.Tensor  # [B, C, Hf, Wf] float32 in [0, 1] (buildings, base stations)


BATCH_KEYS: tuple[str, ...] = tuple(WorldBatch.__annotations__)


def check_config_fields(cfg: Any) -> None:
    """Type-check every field of a config dataclass of ``int``/``float``/``bool``/``str``
    fields; ``ValueError`` naming the class and field (``ModelConfig``, the baselines')."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        ok = {
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, int | float) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "str": isinstance(value, str),
        }[kind]
        if not ok:
            raise ValueError(
                f"{type(cfg).__name__}.{f.name} must be {kind}, got {type(value).__name__} "
                f"{value!r}"
            )


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one MobiWM model. Every field is saved in the checkpoint."""

    d_model: int = 96
    """Width ``d`` of every token (state, action, context)."""
    n_heads: int = 6
    """Attention heads ``n_h`` (spatial and temporal attention; also the TRN bias width)."""
    enc_layers: int = 3
    """``L_e``: FSTBlocks of the state encoder (Eq. 6)."""
    dec_layers: int = 3
    """``L_d``: FSTBlocks of the state decoder (Eq. 7)."""
    ffn_mult: int = 4
    """Hidden width of every FFN as a multiple of ``d_model``."""
    dropout: float = 0.1
    """Dropout on attention weights, attention outputs and FFN outputs (training only)."""
    history: int = 8
    """``H``: history slots the model reads."""
    horizon: int = 4
    """``P``: future slots predicted per chunk."""
    ctx_grid: int = 32
    """``S``: side of the POI / OD context grid (other sizes are accepted at run time)."""
    poi_categories: int = len(POI_CATEGORIES)
    """``K``: POI channels."""
    facility_channels: int = 2
    """Channels of the facility image (buildings, base-station layout)."""
    facility_px: int = 128
    """Expected side of the facility image (other sizes are accepted at run time)."""
    facility_fine_px: int = 32
    """Side of the fine facility feature map (``h_Ff``); the coarse map has side ``S``."""
    n_fourier_bands: int = 8
    """``L``: log-spaced frequency bands of the shared Fourier positional encoding (Eq. 16)."""
    max_frequency: float = 64.0
    """Highest band, in cycles per map side (the lowest is 0.5)."""
    slots_per_day: int = SLOTS_PER_DAY
    """``Q``: rows of the slot-of-day embedding table (Eq. 15)."""
    days_per_week: int = DAYS_PER_WEEK
    """Rows of the day-of-week embedding table (Eq. 15)."""
    count_log_scale: float = 5.0
    """POI / OD counts enter as ``log1p(count) / count_log_scale``."""
    distance_scale_m: float = 500.0
    """TRN distance feature: ``log1p(d_ij / distance_scale_m)`` with ``d_ij`` in metres."""
    topo_hidden: int = 32
    """Hidden width of the TRN FFNs."""
    gate_init: float = -2.0
    """Initial value of every scalar gate ``g_i`` (Eq. 18); ``sigmoid(-2) ≈ 0.12``."""
    predict_residual: bool = True
    """Predict the change from the last history value (normalised space) instead of the level."""
    loss: str = "mse"
    """Training loss in normalised space: ``"mse"`` or ``"huber"``."""
    huber_delta: float = 1.0
    """Transition point of the Huber loss (normalised units)."""
    use_trn: bool = True
    """Topology bias in spatial attention (§4.2.2). False: plain attention (padding mask only)."""
    use_spe: bool = True
    """Shared Fourier positional encoding (§4.3.2). False: no spatial positional encoding at
    all (cells, grid cells and pixels carry no absolute position)."""
    use_gates: bool = True
    """Scalar gates (Eq. 18). False ("w/o LG"): conditions ``Linear(LN(h))`` added ungated."""
    use_facility: bool = True
    """Facility-map condition (w/o FA when False)."""
    use_od: bool = True
    """OD-flow condition (w/o OD when False)."""
    use_poi: bool = True
    """POI condition."""
    use_actions: bool = True
    """Action condition. False is Static-MobiWM: actions cannot change the prediction."""
    antenna_bias: bool = True
    """Action-aware TRN (``layers.AntennaBias``): an extra attention bias per cell pair from
    where the two antennas point and their power / tilt difference (needs ``use_trn`` and
    ``use_actions``; Static-MobiWM never sees parameters)."""
    action_deltas: bool = True
    """Action tokens also carry each slot's features minus those of the last history slot
    (Eq. 8 extended): the planned *change* enters directly instead of having to be recovered
    by temporal attention."""
    season: int = 0
    """Daily memory, in slots (96 = one day; 0 = off). When > 0 the model reads ``history``
    slots but its tokens are only the last ``history - season`` of them plus the ``P`` future
    slots; every token also gets the cell's traffic ``season`` slots earlier (read from the
    history, so rollouts use their own predictions), and the output is the change from a
    *seasonal anchor* (``season_anchor``; by default ``z_last + α·(z[t - season] - z[t_last -
    season])``, ``α``: the two fields below) instead of from ``z_last``. Needs ``horizon <=
    season < history``."""
    season_mix_init: float = 0.75
    """Initial ``α`` of the seasonal anchor (``"difference"``: 0 = persistence, 1 = seasonal
    difference; ``"damped"``: 0 = yesterday, 1 = seasonal difference; ``"ar"``: the decay ``ρ``
    per slot)."""
    season_mix_learnt: bool = True
    """Learn ``α`` (True) or keep it at ``season_mix_init``."""
    season_anchor: str = "difference"
    """What the output is a residual from, with a daily memory: ``"difference"`` is the anchor
    above; ``"yesterday"`` is ``z[t - season]`` itself (``z_last`` where the cell was off then;
    ``α`` unused); ``"damped"`` is ``z[t - season] + α·(z_last - z[t_last - season])``, yesterday
    plus a share α of today's level change (α = 1 gives the same anchor as ``"difference"``);
    ``"ar"`` is ``z[t - season] + ρᵏ·(z_last - z[t_last - season])`` for the ``k``-th future
    slot (ρ = α clamped to [0, 1]): today's deviation from yesterday decays like the AR(1)
    noise of the twin's demand, so lead 1 is close to persistence and long leads to yesterday.
    Yesterday's value does not integrate chunk to chunk: in a rollout an error is carried
    forward once per season, not once per chunk (``"damped"``: multiplied by α per chunk;
    ``"ar"``: by ρᴾ). ``"ar-adjusted"`` is ``"ar"`` with yesterday's value at ``t_last`` first
    moved by the coverage prior's change from ``t_last - season`` to ``t_last``, so that the
    deviation carries only what the actions do not explain (without the coverage prior it
    equals ``"ar"``)."""
    season_actions: bool = False
    """The daily memory also carries the action features of slot ``t - season`` and their
    change to slot ``t``, so that the model knows whether yesterday ran under today's
    antenna settings."""
    coverage_prior: bool = False
    """Give every cell and slot one more action feature: the log share of the map's demand it
    would serve under that slot's parameters (``coverage.CoveragePrior``: the twin's antenna
    pattern, UMa path loss, a soft strongest-cell association and a learnt demand proxy), and
    add ``coverage_gain ·`` its change from the anchor's slot to the output. Needs
    ``use_actions``."""
    coverage_tau_db: float = 4.0
    """Temperature (dB) of the coverage prior's soft association."""
    coverage_height_m: float = 30.0
    """Nominal antenna height (m) of the coverage prior (site heights are not model inputs)."""
    coverage_daily_demand: bool = False
    """The coverage prior's demand proxy also reads the slot's time of day and a weekend flag
    (demand moves between zones over the day)."""
    coverage_calibrate: int = 0
    """With the coverage prior: fit its demand proxy to the traffic of the output anchor's slot
    with this many multiplicative steps before the output term is computed, and apply that
    term as a multiplicative change of the anchor's traffic, ``exp(coverage_gain · Δ log
    share)`` (``coverage_gain`` starts at 1; ``CoveragePrior.calibrated_delta``). 0: the
    uncalibrated change, added in normalised space (starts at 0)."""
    spatial_neighbours: int = 0
    """Spatial attention over each cell's this many nearest cells (itself included) instead of
    every cell (0): time and memory grow with the cells, not their square, so the model runs
    on districts of thousands of cells. The TRN and antenna biases are computed per neighbour
    pair."""
    coverage_candidates: int = 0
    """With the coverage prior: each pixel shares its demand among its this many nearest cells
    only (0 = every cell). The prior's cost then grows with the cells, not with cells × pixels
    × cells; at 16 of 57 cells on the hex map it changes shares by well under 1%."""
    memory_age: int = 1
    """Oldest age in days of the daily memory seen in training (1 = always yesterday). With
    ``> 1`` training windows remember the same slot 1 to ``memory_age`` days earlier
    (``WindowDataset``) and the memory gets its age as one more input, so that a rollout's
    observed memory, several days old after the first day, is in distribution (older memories
    read as ``memory_age`` days old). Needs ``season == slots_per_day``."""

    def __post_init__(self) -> None:
        check_config_fields(self)

        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(f"ModelConfig: {msg}")

        for name in (
            "d_model",
            "n_heads",
            "enc_layers",
            "dec_layers",
            "ffn_mult",
            "history",
            "horizon",
            "ctx_grid",
            "poi_categories",
            "facility_channels",
            "facility_px",
            "facility_fine_px",
            "n_fourier_bands",
            "slots_per_day",
            "days_per_week",
            "topo_hidden",
        ):
            need(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        need(
            self.d_model % self.n_heads == 0,
            f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}",
        )
        need(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        need(self.max_frequency > 0.5, f"max_frequency must be > 0.5, got {self.max_frequency}")
        need(self.count_log_scale > 0, f"count_log_scale must be > 0, got {self.count_log_scale}")
        need(
            self.distance_scale_m > 0, f"distance_scale_m must be > 0, got {self.distance_scale_m}"
        )
        need(self.huber_delta > 0, f"huber_delta must be > 0, got {self.huber_delta}")
        need(self.loss in ("mse", "huber"), f"loss must be 'mse' or 'huber', got {self.loss!r}")
        need(self.season >= 0, f"season must be >= 0, got {self.season}")
        need(
            0.0 <= self.season_mix_init <= 1.0,
            f"season_mix_init must be in [0, 1], got {self.season_mix_init}",
        )
        need(
            self.season_anchor in SEASON_ANCHORS,
            f"season_anchor must be one of {SEASON_ANCHORS}, got {self.season_anchor!r}",
        )
        need(
            self.season > 0 or (self.season_anchor == "difference" and not self.season_actions),
            "season_anchor and season_actions need a daily memory (season > 0)",
        )
        need(
            self.use_actions or not self.season_actions,
            "season_actions needs use_actions (Static-MobiWM must never see actions)",
        )
        need(
            self.use_actions or not self.coverage_prior,
            "coverage_prior needs use_actions (Static-MobiWM must never see actions)",
        )
        need(
            self.coverage_prior or not self.coverage_daily_demand,
            "coverage_daily_demand needs coverage_prior",
        )
        need(
            self.coverage_prior or not self.coverage_calibrate,
            "coverage_calibrate needs coverage_prior",
        )
        need(
            0 <= self.coverage_calibrate <= 100,
            f"coverage_calibrate must be in [0, 100], got {self.coverage_calibrate}",
        )
        need(
            self.spatial_neighbours >= 0,
            f"spatial_neighbours must be >= 0, got {self.spatial_neighbours}",
        )
        need(
            self.coverage_candidates >= 0 and (self.coverage_prior or not self.coverage_candidates),
            f"coverage_candidates must be >= 0 and needs coverage_prior, got "
            f"{self.coverage_candidates}",
        )
        need(self.coverage_tau_db > 0, f"coverage_tau_db must be > 0, got {self.coverage_tau_db}")
        need(
            self.coverage_height_m > 1.5,
            f"coverage_height_m must be > 1.5 (the user height), got {self.coverage_height_m}",
        )
        need(
            1 <= self.memory_age < self.days_per_week,
            f"memory_age must be in [1, {self.days_per_week - 1}] days, got {self.memory_age}",
        )
        need(
            self.memory_age == 1 or self.season == self.slots_per_day,
            f"memory_age > 1 needs a one-day memory (season == slots_per_day = "
            f"{self.slots_per_day}), got season {self.season}",
        )
        if self.season:
            need(
                self.horizon <= self.season < self.history,
                f"season={self.season} needs horizon ({self.horizon}) <= season < history "
                f"({self.history}); e.g. history = season + 8",
            )

    @property
    def window(self) -> int:
        """``T = H + P``: slots of one training window."""
        return self.history + self.horizon

    @property
    def token_history(self) -> int:
        """History slots that become tokens (``history - season``; all of them without a season)."""
        return self.history - self.season

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def field_types(cls) -> dict[str, str]:
        """Field name → ``"int" | "float" | "bool" | "str"``."""
        return {
            f.name: f.type if isinstance(f.type, str) else f.type.__name__
            for f in dataclasses.fields(cls)
        }


SEASON_ANCHORS = ("difference", "yesterday", "damped", "ar", "ar-adjusted")
"""Values of ``ModelConfig.season_anchor``."""

YESTERDAY_ANCHORS = ("yesterday", "damped", "ar", "ar-adjusted")
"""The anchors read at the same slot one season earlier (the others at the last history slot)."""

PRESETS: dict[str, dict[str, Any]] = {
    "debug": dict(d_model=16, n_heads=2, enc_layers=1, dec_layers=1, ffn_mult=2, dropout=0.0,
                  topo_hidden=8, n_fourier_bands=4, facility_fine_px=16),
    "XS": dict(d_model=32, n_heads=2, enc_layers=1, dec_layers=1, ffn_mult=2, topo_hidden=8),
    "S": dict(d_model=64, n_heads=4, enc_layers=2, dec_layers=2),
    "M": dict(d_model=96, n_heads=6, enc_layers=3, dec_layers=3),
    "L": dict(d_model=128, n_heads=8, enc_layers=4, dec_layers=4),
    "XL": dict(d_model=192, n_heads=8, enc_layers=6, dec_layers=6),
}  # fmt: skip
"""Sizes of paper §5.5 (MobiWM-M is the paper's best), ``XS`` for the fast env model, and a tiny
``debug`` size for tests."""


def preset(name: str, **overrides: Any) -> ModelConfig:
    """The ``ModelConfig`` of preset ``name`` (``debug``, ``XS``, ``S``, ``M``, ``L``, ``XL``).

    ``overrides`` replace single fields, e.g. ``preset("M", use_actions=False)``.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    unknown = set(overrides) - set(ModelConfig.field_types())
    if unknown:
        raise ValueError(f"unknown ModelConfig field(s) {sorted(unknown)}")
    return ModelConfig(**{**PRESETS[name], **overrides})
