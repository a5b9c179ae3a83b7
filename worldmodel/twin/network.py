"""NetworkTwin: the physics digital twin of one map, batched over ``E`` independent copies.

Per slot and copy: demand density per pixel (``DemandModel``) → RSRP of each pixel's ``K``
nearest candidate cells (Eq. 1: power − 10·log10(subcarriers) + antenna gain − path loss +
shadowing, plus a per-slot fast-fading fluctuation) → A3 association → cell traffic =
sum of its pixels' demand (Eq. 2); demand of pixels below Qrxlevmin everywhere is unserved.

Everything that does not depend on the antenna parameters (geometry, path loss, LoS state,
shadowing) is computed once. When parameters change, only pixels with a changed candidate are
rescanned, and only their two strongest links are kept (``worldmodel.twin.kernels``: numba
kernels that reproduce the numpy float32 arithmetic bit for bit). All ``E`` copies advance in
one pass per slot (used by the vectorised environment).

Snapshots: ``get_state`` returns a ``TwinState`` (association state, next slot, parameters and
active flags of some copies, plus the fast-fading generator's state); ``set_state`` puts it
back, after which ``step`` continues exactly as it did after ``get_state``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.spatial import cKDTree

from worldmodel.twin.antenna import AntennaConfig, array_gain_db, gain_from_trig
from worldmodel.twin.association import A3State, strongest
from worldmodel.twin.fading import FadingPrefetch
from worldmodel.twin.kernels import (
    a3_traffic,
    finish_top2,
    link_parts,
    scan_config,
    scan_links,
    scan_links_scalar,
)
from worldmodel.twin.propagation import (
    ShadowField,
    clutter_from_buildings,
    hash_uniform,
    los_probability,
    pathloss_db,
    shadow_std_db,
)
from worldmodel.twin.scenario import AZIMUTH, ELEC_TILT, MECH_TILT, POWER, Scenario

if TYPE_CHECKING:
    from worldmodel.twin.demand import DemandModel


@dataclass(frozen=True)
class TwinStep:
    """What ``NetworkTwin.step`` returns for ``n`` slots (``E`` copies, ``N`` cells)."""

    traffic: np.ndarray  # [E, n, N] float32, traffic per cell per slot (scenario unit)
    unserved: np.ndarray  # [E, n] float32, demand below Qrxlevmin everywhere
    demand: np.ndarray  # [E, n] float32, total demand of the map
    handovers: np.ndarray  # [E, n] int64, A3 handovers (pixels) per slot
    slots: np.ndarray  # [E, n] int64, the absolute slot indices simulated


_VECTOR_COPIES = 8
"""From this many copies rescanned at once, links are scanned vectorised across copies."""

_PREFETCH_MIN = 1 << 21
"""Fading draws (normals per step) from which the next step's draw is prefetched."""

ASSOCIATION_FIELDS = ("serving_col", "target_col", "ttt_count")
"""The per-pixel A3 association arrays of a ``TwinState`` (``worldmodel.twin.association``)."""


@dataclass(frozen=True)
class TwinState:
    """The dynamic state of ``n`` copies of a ``NetworkTwin`` (``P`` pixels, ``N`` cells).

    Everything ``NetworkTwin.step`` reads besides the static map; the link budgets (RSRP) are
    derived from ``params``/``active`` and recomputed by ``NetworkTwin.set_state``.
    ``NetworkTwin.get_state`` returns read-only copies.

    * ``serving_col [n, P]`` int32: serving candidate column per pixel, ``-1`` = unserved;
    * ``target_col [n, P]`` int32: candidate currently satisfying A3, ``-1`` = none;
    * ``ttt_count [n, P]`` int32: consecutive slots A3 has held for ``target_col``;
    * ``slot [n]`` int64: the next slot each copy simulates (absolute index);
    * ``params [n, N, 4]`` float64: physical parameters (power, azimuth, mech./elec. tilt);
    * ``active [n, N]`` bool: cells switched on;
    * ``rng_state``: ``bit_generator.state`` of the fast-fading generator, which all copies
      share (``None``: not captured). ``set_state`` restores it only when asked to (by
      default when the state is restored into every copy).

    Candidate columns index the twin's per-pixel candidate lists: a state is only valid for
    a twin of the same scenario (and not across ``insert_cells``).
    """

    serving_col: np.ndarray
    target_col: np.ndarray
    ttt_count: np.ndarray
    slot: np.ndarray
    params: np.ndarray
    active: np.ndarray
    rng_state: dict[str, Any] | None = None

    @property
    def n_envs(self) -> int:
        """Number of copies ``n`` held (the length of ``slot``)."""
        return int(np.shape(self.slot)[0]) if np.ndim(self.slot) else 0


def _survivor_buffers(cap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Room for ``cap`` survivors of ``kernels.scan_links`` (column, element gain, phase)."""
    return np.empty(cap, np.int32), np.empty(cap, np.float32), np.empty(cap, np.float32)


def _generator_from_state(rng_state: Any) -> np.random.Generator:
    """A new ``np.random.Generator`` in the ``bit_generator.state`` ``rng_state``."""
    if not isinstance(rng_state, dict) or "bit_generator" not in rng_state:
        raise ValueError(
            "state.rng_state: expected a bit_generator.state dict (get_state captures one), "
            f"got {type(rng_state).__name__}"
        )
    kind = getattr(np.random, str(rng_state["bit_generator"]), None)
    if not (isinstance(kind, type) and issubclass(kind, np.random.BitGenerator)):
        raise ValueError(f"state.rng_state: unknown bit generator {rng_state['bit_generator']!r}")
    bit_gen = kind()
    try:
        bit_gen.state = copy.deepcopy(rng_state)
    except (TypeError, ValueError, KeyError) as err:
        raise ValueError(f"state.rng_state: cannot be restored ({err})") from err
    return np.random.Generator(bit_gen)


class NetworkTwin:
    """Physics twin of ``scenario`` with ``n_envs`` independent parameter/association states.

    ``common_fading=True`` gives every copy the same fast-fading draws (common random numbers):
    copies that differ only in their plans then differ only by the plans' effect, and copy 0
    reproduces a single-copy twin with the same seed exactly.

    Public state (read it freely; change it only through the methods named):

    * ``params [E, N, 4]``, ``active [E, N]``: current parameters (``set_params``, ``reset``,
      ``set_state``);
    * ``slot [E]``: next slot each copy simulates (``reset``, ``set_state``; ``step`` advances);
    * ``rng``: the ``np.random.Generator`` of the fast fading, shared by all copies; assign a
      new generator to reseed it;
    * the association state is internal: use ``get_state``/``set_state`` (or the views
      ``serving_cell``/``serving_map``).
    """

    def __init__(
        self,
        scenario: Scenario,
        n_envs: int = 1,
        *,
        demand: DemandModel | None = None,
        antenna: AntennaConfig | None = None,
        seed: int = 0,
        common_fading: bool = False,
    ) -> None:
        if n_envs < 1:
            raise ValueError(f"n_envs must be >= 1, got {n_envs}")
        scenario.validate()
        self.scenario = scenario
        self.n_envs = int(n_envs)
        self.antenna = antenna or AntennaConfig()
        if demand is None:
            from worldmodel.twin.demand import DemandModel

            demand = DemandModel(scenario)
        self.demand = demand
        self._shadow = ShadowField(
            scenario.grid_px, scenario.pixel_m, scenario.radio.shadow_corr_m, scenario.seed
        )
        self._scan_cfg = scan_config(self.antenna)
        self._build_links()
        e, n = self.n_envs, scenario.n_cells
        self.params = np.broadcast_to(scenario.init_params, (e, n, 4)).copy()
        self.active = np.broadcast_to(scenario.init_active, (e, n)).copy()
        self.slot = np.zeros(e, dtype=np.int64)
        self._alloc_link_state()
        self._refresh_links(np.ones((e, n), dtype=bool))
        self.state = A3State.empty(e, self.n_pixels)
        self.rng = np.random.default_rng([seed, 0xFADE])
        self.common_fading = bool(common_fading)
        self._fading = FadingPrefetch()
        self.reset()

    # ------------------------------------------------------------------ geometry
    @property
    def n_cells(self) -> int:
        return self.scenario.n_cells

    @property
    def n_pixels(self) -> int:
        return self._cand.shape[0]

    @property
    def n_candidates(self) -> int:
        return self._cand.shape[1]

    def _build_links(self) -> None:
        """Candidates and the parameter-independent part of every (pixel, cell) link.

        Candidates of a pixel are the ``K`` cells with the best static link budget
        (−path loss + shadowing, i.e. the cells that could be strongest at equal antenna
        gain), chosen among its ``3K`` nearest cells. Computed in chunks of pixels.
        """
        sc, radio = self.scenario, self.scenario.radio
        pix = sc.pixel_centres_m()
        n_pix = len(pix)
        k = min(radio.candidates_per_pixel, sc.n_cells)
        k_pre = min(3 * k, sc.n_cells)
        _, pre = cKDTree(sc.cell_xy_m).query(pix, k=k_pre)
        pre = np.asarray(pre, dtype=np.int64).reshape(n_pix, k_pre)
        clutter = clutter_from_buildings(sc.building_height_m).ravel()
        cand = np.empty((n_pix, k), dtype=np.int32)
        static = np.empty((n_pix, k), dtype=np.float32)
        cos_zen, sin_zen = np.empty_like(static), np.empty_like(static)
        cos_bear, sin_bear = np.empty_like(static), np.empty_like(static)
        los_count = 0
        for a in range(0, n_pix, 20_000):
            b = min(a + 20_000, n_pix)
            links = self._links(np.arange(a, b), pre[a:b], pix[a:b], clutter[a:b])
            top = np.argsort(-links["static"], axis=1, kind="stable")[:, :k]
            cand[a:b] = np.take_along_axis(pre[a:b], top, axis=1)
            for name, out in (("static", static), ("cos_zen", cos_zen), ("sin_zen", sin_zen),
                              ("cos_bear", cos_bear), ("sin_bear", sin_bear)):  # fmt: skip
                out[a:b] = np.take_along_axis(links[name], top, axis=1)
            los_count += int(np.take_along_axis(links["los"], top, axis=1).sum())
        self._cand = cand
        self._cand_flat = cand.ravel()
        self._static = (static - np.float32(10.0 * np.log10(radio.n_subcarriers))).ravel()
        self._cos_zen, self._sin_zen = cos_zen.ravel(), sin_zen.ravel()
        self._cos_bear, self._sin_bear = cos_bear.ravel(), sin_bear.ravel()
        self.los_fraction = los_count / cand.size

    def _links(self, pixel_idx, cells, pix_xy, clutter) -> dict[str, np.ndarray]:
        """Static budget (−PL + shadowing, dB) and geometry of links ``[n, c]``."""
        sc, radio = self.scenario, self.scenario.radio
        cell_xy = sc.cell_xy_m
        dx = pix_xy[:, None, 0] - cell_xy[cells, 0]
        dy = pix_xy[:, None, 1] - cell_xy[cells, 1]
        d2d = np.hypot(dx, dy)
        h_bs = sc.cell_height_m[cells]
        bearing = np.arctan2(dx, dy)  # radians clockwise from north
        zenith = 0.5 * np.pi + np.arctan2(h_bs - radio.ue_height_m, np.maximum(d2d, 1.0))
        pidx = np.broadcast_to(pixel_idx[:, None], cells.shape)
        site_uid = sc.cell_site[cells]
        p_los = los_probability(d2d, radio.environment, 0.8 * clutter[:, None])
        los = hash_uniform(sc.seed, site_uid, pidx) < p_los
        pl = pathloss_db(d2d, h_bs, radio.ue_height_m, radio.carrier_ghz, radio.environment, los)
        sf = self._shadow.sample(site_uid, pidx) * shadow_std_db(radio.environment, los)
        f32 = np.float32
        return {
            "static": (sf - pl).astype(f32),
            "cos_zen": np.cos(zenith).astype(f32),
            "sin_zen": np.sin(zenith).astype(f32),
            "cos_bear": np.cos(bearing).astype(f32),
            "sin_bear": np.sin(bearing).astype(f32),
            "los": los,
        }

    def _alloc_link_state(self) -> None:
        e, p, n = self.n_envs, self.n_pixels, self.n_cells
        self._cell = np.zeros((7, n, e), dtype=np.float32)  # kernels.CELL_ROWS per cell, copy
        self._top_cols = np.zeros((e, p, 2), dtype=np.int32)
        self._top_vals = np.zeros((e, p, 2), dtype=np.float32)
        self._serving_rsrp = np.zeros((e, p), dtype=np.float32)

    def _refresh_links(self, changed: np.ndarray) -> None:
        """Recompute the two strongest links of pixels with a candidate flagged in ``changed``.

        ``changed [E, N]``: the copies with any flag are rescanned over the pixels that have a
        flagged candidate in any of them (rescanning an unchanged pixel gives the same
        result), in chunks of about 64k (pixel, copy) pairs.
        """
        envs = np.flatnonzero(changed.any(axis=1))
        if len(envs) == 0:
            return
        self._update_cells(envs)
        cells = changed[envs].any(axis=0)
        if cells.all():
            pix = np.arange(self.n_pixels)
        else:
            pix = np.flatnonzero(cells[self._cand].any(axis=1))
        cell = self._cell if len(envs) == self.n_envs else self._cell[:, :, envs].copy()
        chunk = max(16, 65_536 // len(envs))
        buffers = None
        for a in range(0, len(pix), chunk):
            buffers = self._scan(pix[a : a + chunk], envs, cell, buffers)

    def _update_cells(self, envs: np.ndarray) -> None:
        """Per-cell float32 terms of copies ``envs`` into ``_cell`` (as ``gain_from_trig``)."""
        p = self.params[envs].astype(np.float32)
        az, mt = np.radians(p[..., AZIMUTH]), np.radians(p[..., MECH_TILT])
        rows = (
            p[..., POWER],
            np.cos(az),
            np.sin(az),
            np.cos(mt),
            np.sin(mt),
            np.cos(np.radians(90.0 + p[..., ELEC_TILT])),
            self.active[envs].astype(np.float32),
        )
        self._cell[:, :, envs] = np.stack(rows).transpose(0, 2, 1)

    def _scan(
        self, pix: np.ndarray, envs: np.ndarray, cell: np.ndarray, buffers: tuple | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top two links of pixels ``pix`` × copies ``envs`` (``cell [7, N, len(envs)]``):
        scan, exact array gain of the survivors, finish. Returns the (reusable) buffers."""
        cfg = self._scan_cfg
        pairs = len(pix) * len(envs)
        if buffers is None or buffers[0].size < 3 * pairs + 64:
            buffers = _survivor_buffers(3 * pairs + 64)  # 2.0 survivors per pair expected
        count = np.empty(pairs, dtype=np.int32)
        geometry = (
            self._cand,
            self._static,
            self._cos_zen,
            self._sin_zen,
            self._cos_bear,
            self._sin_bear,
        )
        table = (cfg.consts, cfg.cheb, cfg.odd, np.float32(cfg.margin_db))
        table += (np.float32(cfg.gain_max_db),)
        scan = scan_links if len(envs) >= _VECTOR_COPIES else scan_links_scalar
        n = scan(pix, *geometry, cell, *table, count, *buffers)
        if n < 0:  # many near-ties: room for every candidate
            buffers = _survivor_buffers(pairs * self.n_candidates)
            n = scan(pix, *geometry, cell, *table, count, *buffers)
        surv_k, gain, half = buffers
        array_db = array_gain_db(half[:n], self.antenna)
        finish_top2(
            pix, envs, count, surv_k, gain, array_db, self._cand, self._static, cell,
            self._top_cols, self._top_vals,
        )  # fmt: skip
        return buffers

    def _update_serving_rsrp(self) -> None:
        """Exact mean RSRP of serving columns outside the top two (into ``_serving_rsrp``)."""
        col = self.state.serving_col
        top = self._top_cols
        env, pix = np.nonzero((col >= 0) & (col != top[..., 0]) & (col != top[..., 1]))
        if env.size == 0:
            return
        k = col[env, pix].astype(np.int64)
        gain, half = link_parts(
            env, pix, k, self._cand, self._cos_zen, self._sin_zen, self._cos_bear,
            self._sin_bear, self._cell, self._scan_cfg.consts,
        )  # fmt: skip
        cells = self._cand[pix, k]
        link = pix * self.n_candidates + k
        value = self._cell[0, cells, env] + (gain + array_gain_db(half, self.antenna))
        on = self._cell[6, cells, env] > 0
        self._serving_rsrp[env, pix] = np.where(on, value + self._static[link], -np.inf)

    def _dense_rsrp(self, env: int) -> np.ndarray:
        """``[P, K]`` mean RSRP of every link of copy ``env`` (numpy reference path)."""
        p = self.params[env].astype(np.float32)
        az, mt = np.radians(p[:, AZIMUTH]), np.radians(p[:, MECH_TILT])
        c = self._cand_flat
        gain = gain_from_trig(
            self._cos_zen,
            self._sin_zen,
            self._cos_bear,
            self._sin_bear,
            np.cos(az)[c],
            np.sin(az)[c],
            np.cos(mt)[c],
            np.sin(mt)[c],
            np.cos(np.radians(90.0 + p[:, ELEC_TILT]))[c],
            self.antenna,
        )
        rsrp = np.where(self.active[env][c], p[:, POWER][c] + gain + self._static, -np.inf)
        return rsrp.astype(np.float32, copy=False).reshape(self.n_pixels, self.n_candidates)

    # ------------------------------------------------------------------ control
    def _env_index(self, env_ids) -> np.ndarray:
        if env_ids is None:
            return np.arange(self.n_envs)
        idx = np.atleast_1d(np.asarray(env_ids, dtype=np.int64))
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_envs):
            raise ValueError(f"env_ids {idx.tolist()} out of range [0, {self.n_envs})")
        return idx

    def set_params(self, params=None, active=None, env_ids=None) -> np.ndarray:
        """Set physical parameters ``[n, N, 4]`` (or ``[N, 4]``) and/or ``active [n, N]``.

        ``n`` = number of ``env_ids`` (all copies by default). Parameters are validated
        against the scenario bounds (``ValueError`` names the cell and parameter). Returns
        the ``[E, N]`` mask of cells that changed; only their links are recomputed.
        """
        idx = self._env_index(env_ids)
        n = self.n_cells
        new_p = self.params[idx].copy()
        new_a = self.active[idx].copy()
        if params is not None:
            arr = np.asarray(params, dtype=np.float64)
            if arr.shape not in ((n, 4), (len(idx), n, 4)):
                raise ValueError(
                    f"params: expected shape ({n}, 4) or ({len(idx)}, {n}, 4), got {arr.shape}"
                )
            new_p[:] = self.scenario.bounds.validate(arr, what="params")
        if active is not None:
            act = np.asarray(active)
            if act.dtype != bool:
                raise ValueError(f"active: expected a bool array, got dtype {act.dtype}")
            if act.shape not in ((n,), (len(idx), n)):
                raise ValueError(
                    f"active: expected shape ({n},) or ({len(idx)}, {n}), got {act.shape}"
                )
            new_a[:] = act
        changed = np.zeros((self.n_envs, n), dtype=bool)
        changed[idx] = (new_p != self.params[idx]).any(-1) | (new_a != self.active[idx])
        self.params[idx] = new_p
        self.active[idx] = new_a
        self._refresh_links(changed)
        return changed

    def reset(self, env_ids=None, *, slot=0, params=None, active=None) -> None:
        """Reset copies to ``slot`` with the given (default: scenario initial) parameters.

        Association starts from the strongest cell (no hysteresis history).
        """
        idx = self._env_index(env_ids)
        p = self.scenario.init_params if params is None else params
        a = self.scenario.init_active if active is None else active
        self.set_params(p, a, env_ids=idx)
        slots = np.broadcast_to(np.asarray(slot, dtype=np.int64), idx.shape)
        if (slots < 0).any():
            raise ValueError(f"slot must be >= 0, got {slots.min()}")
        self.slot[idx] = slots
        q = self.scenario.radio.q_rxlevmin_dbm
        self.state.serving_col[idx] = strongest(self._top_cols[idx], self._top_vals[idx], q)
        self.state.target_col[idx] = -1
        self.state.ttt_count[idx] = 0

    # ------------------------------------------------------------------ snapshots
    def _snapshot_index(self, env_ids) -> np.ndarray:
        """``env_ids`` of ``get_state``/``set_state``: distinct ints in ``[0, E)``, in order."""
        if env_ids is None:
            return np.arange(self.n_envs)
        raw = np.asarray(env_ids)
        if raw.ndim > 1:
            raise ValueError(f"env_ids: expected an int or a 1-D sequence, got shape {raw.shape}")
        raw = np.atleast_1d(raw)
        if raw.size and raw.dtype.kind not in "iu":
            raise ValueError(f"env_ids: expected integers, got dtype {raw.dtype}")
        idx = self._env_index(raw)
        if len(np.unique(idx)) != len(idx):
            raise ValueError(f"env_ids {idx.tolist()} contain duplicates")
        return idx

    def get_state(self, env_ids=None) -> TwinState:
        """Copy of the dynamic state of copies ``env_ids`` (all by default), in that order.

        ``env_ids``: an int or a 1-D sequence of distinct ints in ``[0, E)``; the returned
        ``TwinState`` holds ``n = len(env_ids)`` rows (read-only arrays) and the fast-fading
        generator's state. ``set_state(state, env_ids)`` then makes the next ``step`` calls
        reproduce what followed this call, bit for bit.
        """
        idx = self._snapshot_index(env_ids)
        arrays = {
            name: getattr(self.state, name)[idx].astype(np.int32) for name in ASSOCIATION_FIELDS
        }
        arrays["slot"] = self.slot[idx].copy()
        arrays["params"] = self.params[idx].copy()
        arrays["active"] = self.active[idx].copy()
        for arr in arrays.values():
            arr.setflags(write=False)
        return TwinState(**arrays, rng_state=copy.deepcopy(self.rng.bit_generator.state))

    def set_state(self, state: TwinState, env_ids=None, *, rng: bool | None = None) -> None:
        """Restore ``state`` (from ``get_state``, or built by hand) into copies ``env_ids``.

        Row ``i`` of every array of ``state`` goes to copy ``env_ids[i]`` (all copies, in
        order, by default); other copies are left untouched. Links of cells whose parameters
        or active flags change are recomputed. ``rng``: restore the fast-fading generator
        from ``state.rng_state`` (``True``), keep the current one (``False``), or, by default,
        restore it when ``env_ids`` is ``None`` and the state has one. The generator is shared
        by all copies, so restoring it into a subset also changes the fading the other copies
        draw next.

        Raises ``ValueError`` naming the offending env ids, field, shape, dtype or value;
        nothing is changed when it does. Accepts any integer dtype for the association
        arrays (e.g. compacted ``int8``); values must fit the twin.
        """
        if not isinstance(state, TwinState):
            raise TypeError(f"state: expected a TwinState, got {type(state).__name__}")
        idx = self._snapshot_index(env_ids)
        n, p, k, cells = len(idx), self.n_pixels, self.n_candidates, self.n_cells
        if state.n_envs != n:
            raise ValueError(
                f"state holds {state.n_envs} copies (slot shape {np.shape(state.slot)}) but "
                f"env_ids selects {n}"
            )
        expected = {
            "serving_col": (n, p),
            "target_col": (n, p),
            "ttt_count": (n, p),
            "slot": (n,),
            "params": (n, cells, 4),
            "active": (n, cells),
        }
        arrays = {}
        for name, shape in expected.items():
            arr = np.asarray(getattr(state, name))
            if arr.shape != shape:
                raise ValueError(f"state.{name}: expected shape {shape}, got {arr.shape}")
            arrays[name] = arr
        for name in (*ASSOCIATION_FIELDS, "slot"):
            if arrays[name].dtype.kind not in "iu":
                raise ValueError(f"state.{name}: expected integers, got dtype {arrays[name].dtype}")
        for name in ("serving_col", "target_col"):
            arr = arrays[name]
            if arr.size and (arr.min() < -1 or arr.max() >= k):
                raise ValueError(
                    f"state.{name}: candidate columns must lie in [-1, {k}), got "
                    f"[{arr.min()}, {arr.max()}]"
                )
        if arrays["ttt_count"].size and arrays["ttt_count"].min() < 0:
            raise ValueError(f"state.ttt_count: must be >= 0, got {arrays['ttt_count'].min()}")
        if (arrays["slot"] < 0).any():
            raise ValueError(f"state.slot: must be >= 0, got {arrays['slot'].min()}")
        if arrays["params"].dtype.kind not in "iuf":
            raise ValueError(f"state.params: expected floats, got dtype {arrays['params'].dtype}")
        if arrays["active"].dtype != bool:
            raise ValueError(
                f"state.active: expected a bool array, got dtype {arrays['active'].dtype}"
            )
        restore_rng = (env_ids is None and state.rng_state is not None) if rng is None else rng
        generator = None
        if restore_rng:
            generator = _generator_from_state(state.rng_state)
        params = self.scenario.bounds.validate(
            arrays["params"].astype(np.float64), what="state.params"
        )
        # validated: from here on nothing raises
        self.set_params(params, arrays["active"], env_ids=idx)
        self.slot[idx] = arrays["slot"]
        for name in ASSOCIATION_FIELDS:
            getattr(self.state, name)[idx] = arrays[name]
        if generator is not None:
            self.rng = generator

    # ------------------------------------------------------------------ dynamics
    def step(self, n_slots: int = 1) -> TwinStep:
        """Advance every copy by ``n_slots`` slots with the current parameters."""
        return self._step(n_slots, prefetch=True)

    def _step(self, n_slots: int, prefetch: bool) -> TwinStep:
        """``step``; ``prefetch``: draw the next step's fading in the background (large twins
        with per-copy fading only), on the guess that the next step has the same length."""
        if n_slots < 1:
            raise ValueError(f"n_slots must be >= 1, got {n_slots}")
        e, n, p = self.n_envs, self.n_cells, self.n_pixels
        radio = self.scenario.radio
        traffic = np.zeros((e, n_slots, n), dtype=np.float32)
        unserved = np.zeros((e, n_slots), dtype=np.float32)
        demand_tot = np.zeros((e, n_slots), dtype=np.float32)
        handovers = np.zeros((e, n_slots), dtype=np.int64)
        slots = self.slot[:, None] + np.arange(n_slots)[None, :]
        # serving columns outside the top two keep their column through the slots below
        self._update_serving_rsrp()
        std, scale = radio.fast_fading_std_db, np.float32(radio.fast_fading_std_db)
        copies = 1 if self.common_fading or std <= 0 else e
        shape = (n_slots, 3, copies, p)  # one [3, copies, P] draw per slot, as the reference
        drawn = self._fading.take(self.rng, shape, scale) if std > 0 else None
        fading = np.zeros(shape[1:], dtype=np.float32)
        args = (radio.q_rxlevmin_dbm, radio.a3_hysteresis_db, radio.a3_offset_db)
        q, hyst, offset = (np.float32(a) for a in args)
        acc = np.empty((e, n), dtype=np.float64)
        n_un = np.empty(e, dtype=np.int64)
        st = self.state
        for t in range(n_slots):
            if drawn is not None:
                fading = drawn[t]
            elif std > 0:
                self.rng.standard_normal(dtype=np.float32, out=fading)
                fading *= scale
            uniq, inv = np.unique(slots[:, t], return_inverse=True)
            dens = np.ascontiguousarray(self.demand.density_many(uniq), dtype=np.float32)
            acc[:] = 0.0
            a3_traffic(
                st.serving_col, st.target_col, st.ttt_count, self._top_cols, self._top_vals,
                self._serving_rsrp, fading, self._cand, dens, inv.reshape(e), q, hyst, offset,
                radio.time_to_trigger_slots, acc, handovers[:, t], n_un,
            )  # fmt: skip
            traffic[:, t] = acc
            demand_tot[:, t] = dens.sum(axis=1)[inv]
            some = np.flatnonzero(n_un)  # unserved demand, summed as the reference sums it
            if some.size:
                lost = dens[inv[some]]
                unserved[some, t] = np.where(st.serving_col[some] >= 0, 0.0, lost).sum(axis=1)
        self.slot += n_slots
        if prefetch and std > 0 and copies > 1 and copies * p * n_slots >= _PREFETCH_MIN:
            self._fading.start(self.rng, shape, scale)
        return TwinStep(traffic, unserved, demand_tot, handovers, slots)

    def run(self, actions: np.ndarray, active: np.ndarray | None = None) -> TwinStep:
        """Play a per-slot plan: ``actions [E, T, N, 4]`` (or ``[T, N, 4]``), ``active [.., T, N]``.

        Row ``t`` holds the parameters in effect during the ``t``-th simulated slot. The twin
        advances in segments between change points, recomputing only changed links.
        """
        e, n = self.n_envs, self.n_cells
        acts = np.asarray(actions, dtype=np.float64)
        if acts.ndim == 3:
            acts = np.broadcast_to(acts, (e, *acts.shape))
        if acts.ndim != 4 or acts.shape[0] != e or acts.shape[2:] != (n, 4):
            raise ValueError(f"actions: expected [{e}, T, {n}, 4] or [T, {n}, 4], got {acts.shape}")
        t_total = acts.shape[1]
        if active is None:
            act = np.broadcast_to(self.active[:, None, :], (e, t_total, n))
        else:
            act = np.asarray(active)
            if act.dtype != bool:
                raise ValueError(f"active: expected a bool array, got dtype {act.dtype}")
            act = np.broadcast_to(act, (e, t_total, n)) if act.ndim == 2 else act
            if act.shape != (e, t_total, n):
                raise ValueError(f"active: expected [{e}, {t_total}, {n}], got {act.shape}")
        change = (acts[:, 1:] != acts[:, :-1]).any(axis=(0, 2, 3)) | (
            act[:, 1:] != act[:, :-1]
        ).any(axis=(0, 2))
        bounds = np.concatenate([[0], np.flatnonzero(change) + 1, [t_total]])
        parts = []
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            self.set_params(acts[:, a], act[:, a])
            parts.append(self._step(int(b - a), prefetch=False))
        return TwinStep(
            *(
                np.concatenate([getattr(p, f) for p in parts], axis=1)
                for f in TwinStep.__dataclass_fields__
            )
        )

    # ------------------------------------------------------------------ views
    def serving_cell(self) -> np.ndarray:
        """``[E, P]`` serving cell id per pixel (``-1`` = unserved)."""
        col = self.state.serving_col
        cell = np.take_along_axis(
            np.broadcast_to(self._cand, (self.n_envs,) + self._cand.shape),
            np.maximum(col, 0)[..., None],
            axis=-1,
        )[..., 0]
        return np.where(col >= 0, cell, -1)

    def serving_map(self, env: int = 0) -> np.ndarray:
        """``[G, G]`` serving cell id per pixel of copy ``env`` (row 0 = south)."""
        g = self.scenario.grid_px
        return self.serving_cell()[env].reshape(g, g)

    def rsrp(self, env: int = 0) -> np.ndarray:
        """``[P, K]`` mean RSRP (dBm, no fast fading) of copy ``env``; ``-inf`` = cell off.

        Computed on demand with the numpy reference (a new array: the twin itself keeps only
        each pixel's two strongest links).
        """
        return self._dense_rsrp(env)

    def best_rsrp_map(self, env: int = 0) -> np.ndarray:
        """``[G, G]`` strongest mean RSRP (dBm) per pixel."""
        g = self.scenario.grid_px
        return self.rsrp(env).max(axis=1).reshape(g, g)

    def load_ratio(self, traffic: np.ndarray) -> np.ndarray:
        """Traffic ``[..., N]`` divided by each cell's capacity per slot."""
        return traffic / self.scenario.cell_capacity

    # ------------------------------------------------------------------ topology
    def insert_cells(self, site_xy_m, site_height_m, params, active=None) -> np.ndarray:
        """Add one single-sector site per row (``[k, 2]``, ``[k]``, ``[k, 4]``); new ids.

        Candidate lists are rebuilt; pixels keep their serving cell where it is still a
        candidate, else they re-select on the next slot.
        """
        sc = self.scenario
        xy = np.asarray(site_xy_m, dtype=np.float64).reshape(-1, 2)
        k = len(xy)
        h = np.asarray(site_height_m, dtype=np.float64).reshape(k)
        prm = sc.bounds.validate(np.asarray(params, dtype=np.float64).reshape(k, 4), "params")
        if not (((xy >= 0) & (xy <= sc.extent_m)).all() and np.isfinite(h).all()):
            raise ValueError("insert_cells: sites must lie inside the map with finite heights")
        act = np.ones(k, dtype=bool) if active is None else np.asarray(active, dtype=bool)
        old_cell = self.serving_cell()
        new_ids = np.arange(sc.n_cells, sc.n_cells + k)
        cap = np.full(k, float(np.median(sc.cell_capacity)))
        self.scenario = replace(
            sc,
            site_xy_m=np.concatenate([sc.site_xy_m, xy]),
            site_height_m=np.concatenate([sc.site_height_m, h]),
            cell_site=np.concatenate([sc.cell_site, sc.n_sites + np.arange(k)]),
            init_params=np.concatenate([sc.init_params, prm]),
            init_active=np.concatenate([sc.init_active, np.zeros(k, dtype=bool)]),
            cell_capacity=np.concatenate([sc.cell_capacity, cap]),
        )
        self.scenario.validate()
        self._build_links()
        e = self.n_envs
        self.params = np.concatenate([self.params, np.broadcast_to(prm, (e, k, 4))], axis=1)
        self.active = np.concatenate([self.active, np.broadcast_to(act, (e, k))], axis=1)
        self._alloc_link_state()
        self._refresh_links(np.ones((e, self.n_cells), dtype=bool))
        match = self._cand[None] == old_cell[..., None]
        col = np.where(match.any(-1), match.argmax(-1), -1).astype(np.int32)
        self.state = A3State(col, np.full_like(col, -1), np.zeros_like(col))
        return new_ids
