"""The two dynamics backends behind one small interface, and the twin warm-up they share.

``Dynamics`` (batched over ``E`` envs, ``N`` cells, physical units)::

    reset(env_ids, slots, params, warmups, seed)   # start envs at ``slots`` with ``params``
    step(params, hist_traffic, hist_params, slots, n_slots) -> DynamicsStep
    serving_map(env, params, slot) -> [G, G] serving cell per pixel (for rendering)

* ``TwinDynamics``: one ``NetworkTwin`` with ``E`` copies; ``step`` sets the parameters and
  advances all copies ``n_slots`` slots in one numpy pass. Reset restores the warm-up's A3
  association state (``NetworkTwin.set_state``), so the twin continues exactly where the
  warm-up stopped.
* ``WorldModelDynamics``: a frozen MobiWM checkpoint; ``step`` is one ``rollout`` call for all
  ``E`` envs (context encoded once per map at construction). It reads the last ``H`` slots of
  the history kept by the core. ``unserved`` is not modelled: NaN.

``DemandTotals`` gives the map's offered demand per slot (exogenous, from the twin's demand
model) for the objective's shortfall term, on both backends.

``HistorySource`` produces the initial history of every episode with the twin (both
backends). Under a given set of base parameters the twin runs *once*, continuously, from
``W`` slots before week 1 onwards (``WarmupTrace``; its fast fading seeded by the scenario's
seed, the same draws under every parameter set); the history of an episode starting at step
boundary ``s`` is that run's slots ``s − W .. s − 1`` and its A3 association state at ``s``.
One run of a few hundred slots thus serves every start slot of the week, so a reset of many
envs costs about as much as one warm-up. (On large maps, whose states do not all fit in
``TRACE_STATE_BUDGET_MB``, a start behind the run restarts it.) Other start slots (off the
step grid, before the run's first ``W`` slots or more than ``TRACE_MAX_WEEKS`` weeks on) get
their own run of ``W`` slots from ``start − W``, seeded by ``(scenario.seed, start)``. Either
way a warm-up is a pure function of ``(scenario, start slot, parameters, active flags)``;
results are LRU-cached per process and shared by every env of the same scenario.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mobiwm_env.uncertainty import PredictiveState
from worldmodel.twin.network import ASSOCIATION_FIELDS, NetworkTwin, TwinState
from worldmodel.twin.scenario import DAYS_PER_WEEK, SLOTS_PER_DAY, SLOTS_PER_WEEK, Scenario

_WARMUP_STREAM = 0x57A2
_TRACE_STREAM = 0x7ACE
_U63 = (1 << 63) - 1
TRACE_MAX_WEEKS = 4
"""A warm-up trace runs at most this many weeks past its first start week."""
TRACE_STATE_BUDGET_MB = 64.0
"""A trace keeps the A3 state of every step boundary it passes while they fit in this many MB;
on larger maps only the states of start slots that were asked for."""
TRACE_STEP = 4
"""Slots between the A3 states a trace keeps (start slots on other slots run on their own)."""


# ============================================================================ scenarios
@functools.lru_cache(maxsize=8)
def _named_scenario(name: str, demand: str | None = None) -> Scenario:
    from worldmodel.twin.builders import get_scenario

    sc = get_scenario(name)
    if demand is not None and demand != sc.demand:
        sc = dataclasses.replace(sc, demand=demand)
        sc.validate()
    return sc


def load_scenario(scenario: str | Scenario, demand: str | None = None) -> Scenario:
    """A ``Scenario`` from a registered name (built once per process) or the object itself.

    ``demand`` (a ``DEMAND_PRESETS`` name) replaces a named scenario's demand preset; a
    ``Scenario`` object keeps its own. Raises ``ValueError`` listing the known names for an
    unknown one.
    """
    if isinstance(scenario, Scenario):
        scenario.validate()
        return scenario
    if not isinstance(scenario, str):
        raise ValueError(f"scenario must be a name or a Scenario, got {type(scenario).__name__}")
    from worldmodel.twin.builders import SCENARIOS

    if scenario not in SCENARIOS:
        raise ValueError(
            f"unknown scenario {scenario!r}; known scenarios: {', '.join(sorted(SCENARIOS))}"
        )
    return _named_scenario(scenario, demand)


# ============================================================================ demand
class DemandTotals:
    """The map's total offered demand per slot (MB), from the twin's demand model.

    Demand is exogenous: it does not depend on the antenna parameters, so both backends know it
    (the world model predicts how it is *served*). On the twin ``demand − Σ_cells traffic`` is
    exactly the unserved traffic (demand of pixels below Qrxlevmin everywhere). Totals are
    cached per slot (LRU, ``cache_size`` slots).
    """

    def __init__(self, demand: Any, cache_size: int = 8192) -> None:
        self.demand = demand
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[int, float] = OrderedDict()

    def __call__(self, slots: np.ndarray) -> np.ndarray:
        """``[...]`` float64 MB per slot for integer absolute ``slots [...]``."""
        s = np.asarray(slots, dtype=np.int64)
        uniq = np.unique(s)
        missing = np.array([u for u in uniq.tolist() if u not in self._cache], dtype=np.int64)
        if missing.size:
            totals = self.demand.density_many(missing).astype(np.float64).sum(axis=1)
            self._cache.update(zip(missing.tolist(), totals.tolist(), strict=True))
        for u in uniq.tolist():
            self._cache.move_to_end(u)
        lookup = np.array([self._cache[u] for u in uniq.tolist()])
        while len(self._cache) > max(self.cache_size, uniq.size):
            self._cache.popitem(last=False)
        return lookup[np.searchsorted(uniq, s)]


# ============================================================================ warm-up
@dataclass(frozen=True)
class Warmup:
    """The twin's run over the ``W`` slots before a start slot (one env)."""

    traffic: np.ndarray  # [W, N] float32 MB per slot
    unserved: np.ndarray  # [W] float32 MB per slot
    # A3 association state after the last slot: ``ASSOCIATION_FIELDS`` → [pixels] (compacted)
    a3_state: dict[str, np.ndarray]
    params: np.ndarray  # [N, 4] float64 physical parameters the warm-up ran under


class WarmupTrace:
    """One continuous single-copy twin run under fixed parameters, from slot ``origin`` on;
    it keeps the traffic of every slot and the A3 state of step boundaries (module doc)."""

    def __init__(
        self, twin: NetworkTwin, origin: int, params: np.ndarray, active: np.ndarray, seed: int
    ) -> None:
        self.twin = twin
        self.origin = int(origin)
        self.params = params
        # the same fading for every parameter set (common random numbers)
        twin.rng = np.random.default_rng([seed & _U63, self.origin, _TRACE_STREAM])
        twin.reset(slot=self.origin, params=params, active=active)
        self.traffic: list[np.ndarray] = []  # [n, N] blocks from origin
        self.unserved: list[np.ndarray] = []
        self.states: dict[int, dict[str, np.ndarray]] = {}
        n_px = int(np.asarray(twin.get_state(0).serving_col).size)
        per_state_mb = n_px * len(ASSOCIATION_FIELDS) / 1e6
        weeks_states = TRACE_MAX_WEEKS * SLOTS_PER_WEEK // TRACE_STEP
        self.keep_all = per_state_mb * weeks_states <= TRACE_STATE_BUDGET_MB

    @property
    def position(self) -> int:
        """The next slot the run simulates."""
        return int(self.twin.slot[0])

    def covers(self, start: int, warmup_slots: int) -> bool:
        """Whether ``start`` is a step boundary within the run's span."""
        end = self.origin + warmup_slots + TRACE_MAX_WEEKS * SLOTS_PER_WEEK
        return self.origin + warmup_slots <= start <= end and start % TRACE_STEP == 0

    def has_passed(self, start: int) -> bool:
        """``start`` lies behind the run and its state was not kept."""
        return start < self.position and start not in self.states

    def advance(self, wanted: set[int]) -> None:
        """Run on to the largest slot of ``wanted`` (slots ≥ the position), keeping states."""
        stop = max(wanted)
        twin = self.twin
        while self.position < stop:
            out = twin.step(TRACE_STEP - self.position % TRACE_STEP)
            self.traffic.append(out.traffic[0].copy())
            self.unserved.append(out.unserved[0].copy())
            pos = self.position
            if self.keep_all or pos in wanted:
                end = twin.get_state(0)
                self.states[pos] = {n: _compact(getattr(end, n)[0]) for n in ASSOCIATION_FIELDS}

    def warmup(self, start: int, warmup_slots: int) -> Warmup:
        traffic = np.concatenate(self.traffic) if len(self.traffic) > 1 else self.traffic[0]
        unserved = np.concatenate(self.unserved) if len(self.unserved) > 1 else self.unserved[0]
        self.traffic, self.unserved = [traffic], [unserved]
        a, b = start - warmup_slots - self.origin, start - self.origin
        return Warmup(traffic[a:b].copy(), unserved[a:b].copy(), self.states[start],
                      self.params.copy())  # fmt: skip


class HistorySource:
    """Initial histories from the twin (module doc), cached by (start, params, active)."""

    def __init__(
        self,
        scenario: Scenario,
        warmup_slots: int,
        cache_size: int = 512,
        twin: NetworkTwin | None = None,
    ) -> None:
        self.scenario = scenario
        self.warmup_slots = int(warmup_slots)
        self.twin = twin if twin is not None else NetworkTwin(scenario, 1, seed=scenario.seed)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[tuple, Warmup] = OrderedDict()
        self._traces: OrderedDict[tuple, WarmupTrace] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, start_slot: int, params: np.ndarray, active: np.ndarray) -> Warmup:
        """Warm-up ending just before ``start_slot`` (≥ ``warmup_slots``) under ``params [N, 4]``."""
        return self.get_many([start_slot], params, active)[0]

    def get_many(
        self, start_slots: Sequence[int], params: np.ndarray, active: np.ndarray
    ) -> list[Warmup]:
        """``get`` for many start slots under the same parameters: the continuous run serves
        them in slot order, so one pass covers them all."""
        w = self.warmup_slots
        bad = [int(s) for s in start_slots if s < w]
        if bad:
            raise ValueError(
                f"start_slot={bad[0]} must be >= warmup_slots={w} (the warm-up runs slots "
                f"start-{w}..start-1); add {SLOTS_PER_WEEK} for the same time of the week"
            )
        p = np.ascontiguousarray(params, dtype=np.float64)
        a = np.ascontiguousarray(active, dtype=bool)
        pa = (p.tobytes(), a.tobytes())
        found: dict[int, Warmup] = {}
        for s in sorted({int(x) for x in start_slots}):
            hit = self._cache.get((s, *pa))
            if hit is not None:
                self._cache.move_to_end((s, *pa))
                self.hits += 1
                found[s] = hit
        missing = sorted({int(x) for x in start_slots} - set(found))
        if missing:
            trace = self._trace(pa, p, a)
            served = [s for s in missing if trace.covers(s, w)]
            if any(trace.has_passed(s) for s in served):  # large map: run it again
                trace = self._trace(pa, p, a, restart=True)
            ahead = {s for s in served if s >= trace.position}
            if ahead:
                trace.advance(ahead)
            for s in missing:
                self.misses += 1
                found[s] = trace.warmup(s, w) if s in served else self._own_run(s, p, a)
                self._cache[(s, *pa)] = found[s]
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return [found[int(s)] for s in start_slots]

    def _trace(
        self, key: tuple, params: np.ndarray, active: np.ndarray, restart: bool = False
    ) -> WarmupTrace:
        trace = None if restart else self._traces.get(key)
        if trace is None:
            origin = SLOTS_PER_WEEK - self.warmup_slots
            origin -= origin % TRACE_STEP  # states on step boundaries
            origin = max(origin, 0)
            trace = WarmupTrace(clone_twin(self.twin), origin, params, active, self.scenario.seed)
            self._traces[key] = trace
            while len(self._traces) > 2:
                self._traces.popitem(last=False)
        else:
            self._traces.move_to_end(key)
        return trace

    def _own_run(self, start_slot: int, p: np.ndarray, a: np.ndarray) -> Warmup:
        """A warm-up of its own: ``W`` slots from ``start − W``, seeded by the start slot."""
        w = self.warmup_slots
        twin = self.twin
        twin.rng = np.random.default_rng(
            [self.scenario.seed & _U63, int(start_slot), _WARMUP_STREAM]
        )
        twin.reset(slot=int(start_slot) - w, params=p, active=a)
        out = twin.step(w)
        end = twin.get_state(0)
        state = {name: _compact(getattr(end, name)[0]) for name in ASSOCIATION_FIELDS}
        return Warmup(out.traffic[0].copy(), out.unserved[0].copy(), state, p.copy())


def _compact(arr: np.ndarray) -> np.ndarray:
    """Store small integer state as int8 when lossless (it is copied back as the twin's dtype)."""
    a = np.asarray(arr)
    if a.dtype.kind == "i" and a.size and a.min() >= -128 and a.max() <= 127:
        return a.astype(np.int8)
    return a.copy()


_SOURCES: OrderedDict[tuple, HistorySource] = OrderedDict()


def history_source(scenario: Scenario, warmup_slots: int) -> HistorySource:
    """The process-wide ``HistorySource`` of ``scenario`` (by identity) and ``warmup_slots``."""
    key = (id(scenario), int(warmup_slots))
    src = _SOURCES.get(key)
    if src is not None and src.scenario is scenario:
        _SOURCES.move_to_end(key)
        return src
    other = next((s for s in _SOURCES.values() if s.scenario is scenario), None)
    src = HistorySource(
        scenario, warmup_slots, twin=None if other is None else clone_twin(other.twin)
    )
    _SOURCES[key] = src
    while len(_SOURCES) > 6:
        _SOURCES.popitem(last=False)
    return src


def clone_twin(twin: NetworkTwin) -> NetworkTwin:
    """An independent copy of a single-copy twin sharing its scenario and demand model
    (much cheaper than building the links again)."""
    memo = {id(twin.scenario): twin.scenario, id(twin.demand): twin.demand}
    return copy.deepcopy(twin, memo)


RENDER_GRID_DIVISOR = 2
"""The world-model backend's serving map is computed on a raster this many times coarser..."""
RENDER_CANDIDATES = 8
"""...with this many nearest candidate cells per pixel (keeps a frame well under 20 ms)."""
_RENDER_TWINS: OrderedDict[int, tuple[Scenario, NetworkTwin]] = OrderedDict()


def render_scenario(scenario: Scenario) -> Scenario:
    """A coarser copy of ``scenario`` for serving maps: rasters resampled to
    ``grid_px // RENDER_GRID_DIVISOR`` pixels per side, ``RENDER_CANDIDATES`` candidates."""
    from worldmodel.twin.context import aggregate_sum, resample_mean

    g = max(16, scenario.grid_px // RENDER_GRID_DIVISOR)
    idx = np.minimum(
        ((np.arange(g) + 0.5) * scenario.grid_px / g).astype(int), scenario.grid_px - 1
    )
    radio = dataclasses.replace(
        scenario.radio,
        candidates_per_pixel=min(scenario.radio.candidates_per_pixel, RENDER_CANDIDATES),
    )
    return dataclasses.replace(
        scenario,
        building_height_m=resample_mean(scenario.building_height_m, g).astype(np.float32),
        landuse=scenario.landuse[np.ix_(idx, idx)],
        population=aggregate_sum(scenario.population, g).astype(np.float32),
        radio=radio,
        events=(),
    )


def _render_twin(scenario: Scenario) -> NetworkTwin:
    """A process-wide single-copy twin of ``render_scenario(scenario)`` for serving maps."""
    hit = _RENDER_TWINS.get(id(scenario))
    if hit is None or hit[0] is not scenario:
        hit = (scenario, NetworkTwin(render_scenario(scenario), 1, seed=scenario.seed))
        _RENDER_TWINS[id(scenario)] = hit
        while len(_RENDER_TWINS) > 3:
            _RENDER_TWINS.popitem(last=False)
    return hit[1]


class ServingMapper:
    """Strongest serving cell per pixel for given parameters, with the twin's propagation
    model on a coarser raster (``render_scenario``); cached on the last parameters. Used by the
    world-model backend for rendering only."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self._key: bytes | None = None
        self._map: np.ndarray | None = None

    def __call__(self, params: np.ndarray, active: np.ndarray, slot: int) -> np.ndarray:
        p = np.ascontiguousarray(params, dtype=np.float64)
        key = p.tobytes() + np.ascontiguousarray(active, dtype=bool).tobytes()
        if key != self._key or self._map is None:
            twin = _render_twin(self.scenario)
            twin.reset(slot=int(slot), params=p, active=np.asarray(active, dtype=bool))
            self._map = twin.serving_map(0).copy()
            self._key = key
        return self._map


# ============================================================================ interface
@dataclass(frozen=True)
class DynamicsStep:
    """Output of ``Dynamics.step`` for ``E`` envs and ``n`` slots."""

    traffic: np.ndarray  # [E, n, N] float64 MB per slot (>= 0, 0 for inactive cells)
    unserved: np.ndarray  # [E, n] float64 MB per slot; NaN where the backend does not model it
    traffic_std: np.ndarray | None = None  # [E, n, N] MB: predictive std (uncertainty on)
    ood_score: np.ndarray | None = None  # [E] support distance of the parameters (idem)


class Dynamics(Protocol):
    """What the core needs from a dynamics backend (see the module doc)."""

    name: str
    n_envs: int

    def reset(
        self,
        env_ids: np.ndarray,
        slots: np.ndarray,
        params: np.ndarray,
        warmups: list[Warmup],
        seed: int,
    ) -> None: ...

    def step(
        self,
        params: np.ndarray,
        hist_traffic: np.ndarray,
        hist_params: np.ndarray,
        slots: np.ndarray,
        n_slots: int,
    ) -> DynamicsStep: ...

    def serving_map(self, env: int, params: np.ndarray, slot: int) -> np.ndarray: ...

    def close(self) -> None: ...


# ============================================================================ twin
class TwinDynamics:
    """Ground-truth dynamics: ``NetworkTwin`` with ``E`` copies."""

    name = "twin"

    def __init__(self, scenario: Scenario, n_envs: int, source: HistorySource) -> None:
        self.scenario = scenario
        self.n_envs = int(n_envs)
        self.active = scenario.init_active.copy()
        if self.n_envs == 1:
            self.twin = clone_twin(source.twin)
        else:
            self.twin = NetworkTwin(
                scenario, self.n_envs, demand=source.twin.demand, seed=scenario.seed
            )

    def reset(self, env_ids, slots, params, warmups, seed) -> None:
        idx = np.asarray(env_ids, dtype=np.int64)
        act = np.broadcast_to(self.active, (len(idx), self.active.size))
        state = TwinState(
            **{name: np.stack([w.a3_state[name] for w in warmups]) for name in ASSOCIATION_FIELDS},
            slot=np.asarray(slots, dtype=np.int64),
            params=np.asarray(params, dtype=np.float64),
            active=act,
        )
        self.twin.set_state(state, idx, rng=False)
        self.twin.rng = np.random.default_rng(int(seed))

    def step(self, params, hist_traffic, hist_params, slots, n_slots) -> DynamicsStep:
        twin = self.twin
        if not np.array_equal(twin.slot, slots):
            raise RuntimeError(f"twin slots {twin.slot} out of sync with the env {slots}")
        twin.set_params(params)
        out = twin.step(int(n_slots))
        return DynamicsStep(out.traffic.astype(np.float64), out.unserved.astype(np.float64))

    def set_active(self, active: np.ndarray) -> None:
        """Cells on/off ``[N]`` in every copy from the next step (``LoadBalanceCore.set_active``)."""
        self.active = np.asarray(active, dtype=bool).copy()
        self.twin.set_params(active=np.broadcast_to(self.active, (self.n_envs, self.active.size)))

    def serving_map(self, env: int, params: np.ndarray, slot: int) -> np.ndarray:
        return self.twin.serving_map(env)

    def close(self) -> None:
        pass


# ============================================================================ world model
_MODELS: OrderedDict[tuple, Any] = OrderedDict()


def file_stamp(directory: Path) -> tuple:
    """Name, modification time and size of a checkpoint directory's files (cache keys)."""
    stamp = []
    for name in ("config.json", "model.safetensors", "uncertainty.json", "uncertainty.safetensors"):
        try:
            st = (directory / name).stat()
            stamp.append((name, st.st_mtime_ns, st.st_size))
        except OSError:
            stamp.append((name, None, None))
    return tuple(stamp)


def load_world_model(checkpoint: str | Path, device: str = "cpu", compile: bool = False) -> Any:
    """``load_checkpoint`` with the path in every error message; ``compile``: a model whose
    inference runs through ``torch.compile`` (``MobiWM.compile_inference``).

    Frozen models are shared per process (keyed by path, device, ``compile`` and file
    stamps)."""
    path = Path(checkpoint)
    directory = path.parent if path.is_file() else path
    key = (str(directory.resolve()), str(device), bool(compile), file_stamp(directory))
    model = _MODELS.get(key)
    if model is None:
        model = _load_world_model(path, device)
        if compile:
            model.compile_inference()
        _MODELS[key] = model
        while len(_MODELS) > 4:
            _MODELS.popitem(last=False)
    return model


def _load_world_model(checkpoint: str | Path, device: str = "cpu") -> Any:
    try:
        from worldmodel.model.checkpoint import load_checkpoint
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError(
            f"the world-model backend needs worldmodel.model ({err}); "
            "use MobiWM-LoadBalance-Twin-v0 for the twin backend"
        ) from err
    path = Path(checkpoint)
    try:
        return load_checkpoint(path, map_location=device)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"world-model checkpoint {str(path)!r} not found ({err}); pass checkpoint= a shipped "
            "name ('fast', 'full') or a directory with config.json and model.safetensors, or "
            "use MobiWM-LoadBalance-Twin-v0"
        ) from err
    except (ValueError, OSError, RuntimeError) as err:
        raise ValueError(f"world-model checkpoint {str(path)!r} cannot be loaded: {err}") from err


class WorldModelDynamics:
    """Learned dynamics: one MobiWM ``rollout`` call per env step for all ``E`` envs."""

    name = "world_model"

    def __init__(
        self,
        scenario: Scenario,
        n_envs: int,
        checkpoint: str | Path,
        warmup_slots: int,
        device: str = "cpu",
        memory: str = "observed",
        compile: bool = False,
        uncertainty: str = "off",
    ) -> None:
        import torch

        from worldmodel.model.mobiwm import MEMORY_MODES
        from worldmodel.twin.context import od_flows

        if memory not in MEMORY_MODES:
            raise ValueError(f"memory must be one of {MEMORY_MODES}, got {memory!r}")

        self._torch = torch
        self.scenario = scenario
        self.n_envs = int(n_envs)
        self.checkpoint = str(checkpoint)
        self.model = load_world_model(checkpoint, device, compile)
        cfg = self.model.cfg
        self.history = int(cfg.history)
        self.horizon = int(cfg.horizon)
        if self.history > warmup_slots:
            raise ValueError(
                f"the world model reads H={self.history} history slots but warmup_slots="
                f"{warmup_slots}; pass warmup_slots>={self.history} (to both env ids, so they "
                "start from the same states)"
            )
        if cfg.slots_per_day != SLOTS_PER_DAY or cfg.days_per_week != DAYS_PER_WEEK:
            raise ValueError(
                f"checkpoint {self.checkpoint}: slots_per_day={cfg.slots_per_day}, "
                f"days_per_week={cfg.days_per_week}; the env uses {SLOTS_PER_DAY} and {DAYS_PER_WEEK}"
            )
        self.active = scenario.init_active.copy()
        n = scenario.n_cells
        dev = self.model.device
        # the observed daily memory: each env's warm-up day and first slot (set at reset)
        self.memory = memory
        self.season = int(cfg.season) if memory == "observed" else 0
        if self.season > warmup_slots:
            raise ValueError(f"warmup_slots={warmup_slots} < the model's season {self.season}")
        self._day_traffic = np.zeros((self.n_envs, self.season, n), dtype=np.float32)
        self._day_params = np.zeros((self.n_envs, self.season, n, 4), dtype=np.float32)
        self._start = np.zeros(self.n_envs, dtype=np.int64)
        self._od = od_flows(scenario, np.arange(SLOTS_PER_WEEK))[None].astype(np.float32)
        self.context = self._encode_context()
        self.generator = torch.Generator(device="cpu")
        self._mapper = ServingMapper(scenario)
        self._active_t: dict[int, Any] = {}
        self._dev = dev
        self.predictive = PredictiveState(self.model, uncertainty, self.n_envs, n, self.checkpoint)

    def reset(self, env_ids, slots, params, warmups, seed) -> None:
        # the point prediction is deterministic; the generator seeds uncertainty="sample"
        self.generator.manual_seed(int(seed))
        self.predictive.reset(env_ids, params, self.generator)
        if self.season:
            ids = np.asarray(env_ids, dtype=np.int64)
            self._day_traffic[ids] = np.stack([w.traffic[-self.season :] for w in warmups])
            self._day_params[ids] = np.stack([w.params for w in warmups])[:, None]
            self._start[ids] = slots

    def memory_state(self) -> dict[str, np.ndarray] | None:
        """Copy of the daily memory (``traffic [E, S, N]`` MB, ``params [E, S, N, 4]``
        physical, ``start [E]`` the slot each env's memory day ended at), or ``None`` without
        one (``memory="predicted"`` or no season)."""
        if not self.season:
            return None
        return {
            "traffic": self._day_traffic.copy(),
            "params": self._day_params.copy(),
            "start": self._start.copy(),
        }

    def load_memory(self, traffic: np.ndarray, params: np.ndarray, start: np.ndarray) -> None:
        """Replace every env's daily memory: the ``S = season`` observed slots ``start − S ..
        start − 1`` (``traffic [E, S, N]`` MB, ``params [E, S, N, 4]`` physical, ``start
        [E]`` absolute slots). A no-op without a memory."""
        if not self.season:
            return
        e, s, n = self.n_envs, self.season, self._day_traffic.shape[2]
        traffic, params = np.asarray(traffic), np.asarray(params)
        start = np.asarray(start)
        for name, arr, shape in (
            ("traffic", traffic, (e, s, n)),
            ("params", params, (e, s, n, 4)),
            ("start", start, (e,)),
        ):
            if arr.shape != shape:
                raise ValueError(f"memory {name}: expected shape {shape}, got {arr.shape}")
        if not (np.isfinite(traffic).all() and np.isfinite(params).all()):
            raise ValueError("memory traffic and params must be finite")
        self._day_traffic = traffic.astype(np.float32, copy=True)
        self._day_params = params.astype(np.float32, copy=True)
        self._start = start.astype(np.int64, copy=True)

    def _daily_memory(self, slots: np.ndarray) -> Any:
        """The memory day (the warm-up's last day, or one ``load_memory`` put there) as the
        rollout's ``DailyMemory`` (or ``"predicted"``).

        Each env's offset is from its warm-up day's first slot (``start − season``) to the
        call's first history slot (``slot − H``)."""
        if not self.season:
            return "predicted"
        from worldmodel.model.mobiwm import DailyMemory

        torch, e, s = self._torch, self.n_envs, self.season
        n = self._day_traffic.shape[2]
        offset = (np.asarray(slots, dtype=np.int64) - self.history) - (self._start - s)
        return DailyMemory(
            torch.as_tensor(self._day_traffic, device=self._dev),
            torch.as_tensor(self._day_params, device=self._dev),
            torch.as_tensor(self.active, device=self._dev).expand(e, s, n),
            torch.as_tensor(offset, device=self._dev),
        )

    def _active_mask(self, total: int):
        m = self._active_t.get(total)
        if m is None:
            torch = self._torch
            act = torch.as_tensor(self.active, device=self._dev)
            m = act.expand(self.n_envs, total, act.numel())
            self._active_t[total] = m
        return m

    def step(self, params, hist_traffic, hist_params, slots, n_slots) -> DynamicsStep:
        torch = self._torch
        h, p = self.history, self.horizon
        k = max(1, math.ceil(int(n_slots) / p))
        e, n = self.n_envs, params.shape[1]
        fut = np.broadcast_to(params.astype(np.float32)[:, None], (e, k * p, n, 4))
        rel = np.arange(-h, k * p)
        abs_slots = slots[:, None] + rel[None, :]
        time = {
            "slot_of_day": torch.as_tensor(abs_slots % SLOTS_PER_DAY, device=self._dev),
            "day_of_week": torch.as_tensor(
                (abs_slots // SLOTS_PER_DAY) % DAYS_PER_WEEK, device=self._dev
            ),
        }
        out = self.model.rollout(
            torch.as_tensor(np.ascontiguousarray(hist_traffic[:, -h:], dtype=np.float32)),
            torch.as_tensor(np.ascontiguousarray(hist_params[:, -h:], dtype=np.float32)),
            torch.as_tensor(np.ascontiguousarray(fut)),
            self.context,
            {"active": self._active_mask(h + k * p)},
            time,
            n_chunks=k,
            memory=self._daily_memory(slots),
            uncertainty=self.predictive.enabled,
            lead_offset=torch.as_tensor(self.predictive.lead, device=self._dev),
        )
        std = ood = None
        if self.predictive.enabled:
            traffic, std, ood = self.predictive.step(out, params, self.active, n_slots,
                                                     self.generator)  # fmt: skip
            std = np.where(self.active, std, 0.0)
        else:
            traffic = out[:, :n_slots].detach().cpu().numpy().astype(np.float64)
        traffic = np.where(self.active, np.maximum(traffic, 0.0), 0.0)
        return DynamicsStep(traffic, np.full((e, int(n_slots)), np.nan), std, ood)

    def serving_map(self, env: int, params: np.ndarray, slot: int) -> np.ndarray:
        return self._mapper(params, self.active, slot)

    def set_active(self, active: np.ndarray) -> None:
        """Cells on/off ``[N]`` from the next step (``LoadBalanceCore.set_active``); the map's
        context is encoded again (its facility map follows the cells that are on)."""
        self.active = np.asarray(active, dtype=bool).copy()
        self._active_t = {}
        self.context = self._encode_context()

    def _encode_context(self) -> Any:
        """The map's ``ContextCache`` (POI, OD, the facility map of the cells on now, cell
        positions), encoded once for all envs."""
        import torch

        from worldmodel.twin.context import facility_map

        sc, n = self.scenario, self.scenario.n_cells
        with torch.no_grad():
            ctx = self.model.encode_context(
                sc.poi[None].astype(np.float32),
                self._od,
                facility_map(sc, self.model.cfg.facility_px, cell_active=self.active)[None],
                sc.cell_xy_m[None].astype(np.float32),
                np.array([sc.extent_m], dtype=np.float32),
                np.ones((1, n), dtype=bool),
                np.zeros(1, dtype=np.int64),
            )
        return _expand_context(ctx, self.n_envs)

    def close(self) -> None:
        pass


def _expand_context(ctx: Any, n_envs: int) -> Any:
    """The ``ContextCache`` of one map broadcast (no copy) to ``n_envs`` rows."""
    import torch

    changes = {}
    for f in dataclasses.fields(ctx):
        value = getattr(ctx, f.name)
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == 1:
            changes[f.name] = value.expand(n_envs, *value.shape[1:])
    return dataclasses.replace(ctx, **changes)
