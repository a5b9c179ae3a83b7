"""Operator intents: what an operator wants, typed and validated (the TWM intent layer).

An ``Intent`` states one objective (``OBJECTIVES``) and where (``Scope``), when
(``TimeWindow``) and under which limits (``Constraints``, protected cells/sites/parameters,
``ChangeLimits``) it may be pursued. Every dataclass is frozen and validates itself on
construction (lists become tuples): a bad value raises ``ValueError`` naming the field by its
dotted path (``"constraints.max_unserved_pct: must be in [0, 100], got 120"``);
``Intent.check(scenario)`` adds the checks that need a map. ``from_dict`` / ``to_dict`` /
``from_json`` / ``to_json`` / ``load`` round-trip intents; ``mobiwm_env.intent_text`` parses
English sentences into intents; compiling them into the env lives elsewhere.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from worldmodel.twin.scenario import DAYS_PER_WEEK, PARAM_NAMES, SLOTS_PER_DAY, Scenario

OBJECTIVES: tuple[str, ...] = ("balance_load", "restore_coverage", "cap_load")
"""``Intent.objective`` values: even out the load (capacity-weighted), restore the coverage of
a failed site (``outage_site``) with its neighbours, cap the load ratio of some cells."""
ALL_DAYS: tuple[int, ...] = tuple(range(DAYS_PER_WEEK))
"""Days of the week, 0 = Monday."""
SLOTS_PER_HOUR = SLOTS_PER_DAY // 24


# ============================================================================ field checks
def _fail(path: str, msg: str) -> None:
    raise ValueError(f"{path}: {msg}")


def _set(obj: Any, **values: Any) -> None:
    for name, value in values.items():
        object.__setattr__(obj, name, value)


def _is_int(x: Any) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def _int(v: Any, path: str, *, optional: bool = False, low: int | None = None) -> int | None:
    if v is None and optional:
        return None
    if not _is_int(v):
        _fail(path, f"expected an integer{' or null' if optional else ''}, got {v!r}")
    if low is not None and v < low:
        _fail(path, f"must be >= {low}, got {v}")
    return int(v)


def _num(v: Any, path: str, *, optional: bool = False) -> float | None:
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
        _fail(path, f"expected a number{' or null' if optional else ''}, got {v!r}")
    if not math.isfinite(v):
        _fail(path, f"must be finite, got {v!r}")
    return float(v)


def _seq(v: Any, path: str, what: str) -> Sequence:
    if isinstance(v, str | bytes) or not isinstance(v, Sequence | np.ndarray):
        _fail(path, f"expected a list of {what}, got {v!r}")
    return v


def _indices(v: Any, path: str) -> tuple[int, ...]:
    """Non-negative integers, duplicates dropped, order kept."""
    for x in _seq(v, path, "integers"):
        if not _is_int(x):
            _fail(path, f"expected a list of integers, got {v!r}")
        if x < 0:
            _fail(path, f"indices must be >= 0, got {x}")
    return tuple(dict.fromkeys(int(x) for x in v))


def _in_range(idx: tuple[int, ...], n: int, path: str, what: str) -> None:
    for i in idx:
        if i >= n:
            _fail(path, f"{what} {i} does not exist (the scenario has {what}s 0–{n - 1})")


def _nested(cls: type, v: Any, path: str) -> Any:
    """``v`` as a ``cls`` (an instance, or a mapping of its fields; unknown keys error)."""
    if isinstance(v, cls):
        return v
    known = [f.name for f in dataclasses.fields(cls)]
    if not isinstance(v, Mapping):
        _fail(path or "intent", f"expected an object with keys {known}, got {v!r}")
    unknown = [k for k in v if k not in known]
    if unknown:
        where = f"{path}." if path else ""
        of = f" of {path}" if path else ""
        names = ", ".join(f"'{where}{k}'" for k in unknown)
        raise ValueError(f"unknown key(s) {names}; known keys{of}: {', '.join(known)}")
    for f in dataclasses.fields(cls):
        if f.name not in v and f.default is f.default_factory is dataclasses.MISSING:
            _fail(f"{path}.{f.name}" if path else f.name, "is required")
    return cls(**v)


def _json_ready(v: Any) -> Any:
    if dataclasses.is_dataclass(v):
        return {f.name: _json_ready(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, tuple | list):
        return [_json_ready(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _json_ready(x) for k, x in v.items()}
    return v


# ============================================================================ parts
@dataclass(frozen=True)
class Scope:
    """The cells an intent may tune: the union of ``cells``, the cells of ``sites`` and the
    cells whose position lies inside ``polygon``; all empty = the whole map."""

    cells: tuple[int, ...] = ()
    """Cell indices."""
    sites: tuple[int, ...] = ()
    """Site indices (each stands for all its cells)."""
    polygon: tuple[tuple[float, float], ...] = ()
    """Vertices ``(x, y)`` in metres (≥ 3, map coordinates); a cell on an edge is inside."""

    def __post_init__(self) -> None:
        p = "scope"
        cells, sites = _indices(self.cells, f"{p}.cells"), _indices(self.sites, f"{p}.sites")
        _set(self, cells=cells, sites=sites)
        poly = []
        for xy in _seq(self.polygon, f"{p}.polygon", "[x, y] vertices"):
            if isinstance(xy, str) or not isinstance(xy, Sequence | np.ndarray) or len(xy) != 2:
                _fail(f"{p}.polygon", f"each vertex must be [x, y] in metres, got {xy!r}")
            poly.append((_num(xy[0], f"{p}.polygon"), _num(xy[1], f"{p}.polygon")))
        if 0 < len(poly) < 3:
            _fail(f"{p}.polygon", f"needs at least 3 vertices, got {len(poly)}")
        object.__setattr__(self, "polygon", tuple(poly))

    @property
    def whole_map(self) -> bool:
        """True when nothing is named: the scope is every cell."""
        return not (self.cells or self.sites or self.polygon)

    def check(self, scenario: Scenario) -> None:
        """Raise ``ValueError`` if an index or vertex lies outside ``scenario`` or no cell is in."""
        p = "scope"
        _in_range(self.cells, scenario.n_cells, f"{p}.cells", "cell")
        _in_range(self.sites, scenario.n_sites, f"{p}.sites", "site")
        ext = float(scenario.extent_m)
        for x, y in self.polygon:
            if not (0.0 <= x <= ext and 0.0 <= y <= ext):
                _fail(f"{p}.polygon", f"vertex ({x:g}, {y:g}) lies outside the map [0, {ext:g}]² m")
        if not self._mask(scenario).any():
            _fail(p, "selects no cell (the polygon contains no cell position)")

    def cell_mask(self, scenario: Scenario) -> np.ndarray:
        """``[N]`` bool: the cells in scope (after ``check``)."""
        self.check(scenario)
        return self._mask(scenario)

    def _mask(self, scenario: Scenario) -> np.ndarray:
        if self.whole_map:
            return np.ones(scenario.n_cells, dtype=bool)
        mask = _cell_union(scenario, self.cells, self.sites)
        if self.polygon:
            mask |= _in_polygon(np.asarray(scenario.cell_xy_m, dtype=np.float64), self.polygon)
        return mask


def _cell_union(scenario: Scenario, cells: tuple[int, ...], sites: tuple[int, ...]) -> np.ndarray:
    """``[N]`` bool: ``cells`` plus the cells of ``sites`` (indices already checked)."""
    mask = np.isin(np.asarray(scenario.cell_site), sites)
    mask[list(cells)] = True
    return mask


def _in_polygon(xy: np.ndarray, polygon: tuple[tuple[float, float], ...]) -> np.ndarray:
    """``[K]`` bool: points inside ``polygon`` or within 1 mm of one of its edges."""
    from matplotlib.path import Path as MplPath

    verts = np.asarray(polygon, dtype=np.float64)
    inside = MplPath(verts).contains_points(xy)
    a, b = verts, np.roll(verts, -1, axis=0)  # edges a→b, [V, 2]
    ab = b - a
    length2 = np.maximum(np.einsum("vd,vd->v", ab, ab), 1e-12)  # (repeated vertices)
    t = np.einsum("kvd,vd->kv", xy[:, None, :] - a[None], ab) / length2
    closest = a[None] + np.clip(t, 0.0, 1.0)[..., None] * ab[None]
    on_edge = (np.linalg.norm(xy[:, None, :] - closest, axis=-1) < 1e-3).any(axis=1)
    return inside | on_edge


@dataclass(frozen=True)
class TimeWindow:
    """Hours of the day and days of the week an intent applies to.

    A slot belongs to the window when it *starts* in ``[start_hour, end_hour)`` on one of
    ``days``. ``end_hour < start_hour`` wraps past midnight: the hours after midnight belong to
    the day the window started on (Friday 22h–6h covers Saturday 0h–6h, not Friday's).
    """

    start_hour: float
    """Hour of the day in ``[0, 24)``."""
    end_hour: float
    """Hour of the day in ``[0, 24]``; ≠ ``start_hour``."""
    days: tuple[int, ...] = ALL_DAYS
    """Days of the week the window starts on, 0 = Monday … 6 = Sunday."""

    def __post_init__(self) -> None:
        p = "window"
        start, end = _num(self.start_hour, f"{p}.start_hour"), _num(self.end_hour, f"{p}.end_hour")
        if not 0.0 <= start < 24.0:
            _fail(f"{p}.start_hour", f"must be in [0, 24), got {start:g}")
        if not 0.0 <= end <= 24.0:
            _fail(f"{p}.end_hour", f"must be in [0, 24], got {end:g}")
        if end == start:
            _fail(f"{p}.end_hour", f"equals start_hour ({start:g}): the window would be empty")
        days = _indices(self.days, f"{p}.days")
        if not days:
            _fail(f"{p}.days", "needs at least one day (0 = Monday … 6 = Sunday)")
        for d in days:
            if d >= DAYS_PER_WEEK:
                _fail(f"{p}.days", f"day {d} is not in 0–6 (0 = Monday … 6 = Sunday)")
        _set(self, start_hour=start, end_hour=end, days=tuple(sorted(days)))

    def contains(self, slot: np.ndarray | int) -> np.ndarray:
        """Bool array (shape of ``slot``): absolute 15-min slots (0 = Monday 0:00) in the window."""
        s = np.asarray(slot)
        if not np.issubdtype(s.dtype, np.integer) and not np.all(np.mod(s, 1) == 0):
            raise ValueError(f"window.contains: slots must be integers, got {slot!r}")
        s = s.astype(np.int64)
        day = s // SLOTS_PER_DAY % DAYS_PER_WEEK
        hour = (s % SLOTS_PER_DAY) / SLOTS_PER_HOUR
        on = np.isin(day, self.days)
        if self.end_hour > self.start_hour:
            return on & (hour >= self.start_hour) & (hour < self.end_hour)
        on_prev = np.isin((day - 1) % DAYS_PER_WEEK, self.days)
        return (on & (hour >= self.start_hour)) | (on_prev & (hour < self.end_hour))

    def week_mask(self) -> np.ndarray:
        """``[672]`` bool: the slots of one week (Monday 0:00 first) in the window."""
        return self.contains(np.arange(SLOTS_PER_DAY * DAYS_PER_WEEK))


@dataclass(frozen=True)
class Constraints:
    """Service limits that must hold while the objective is pursued (``None`` = no limit)."""

    max_unserved_pct: float | None = None
    """Unserved traffic ≤ this % of the offered demand (map total per slot), in [0, 100]."""
    max_load_ratio: float | None = None
    """No cell's traffic / capacity ratio above this (> 0; 0.9 = 90 % load)."""

    def __post_init__(self) -> None:
        p = "constraints"
        pct = _num(self.max_unserved_pct, f"{p}.max_unserved_pct", optional=True)
        if pct is not None and not 0.0 <= pct <= 100.0:
            _fail(f"{p}.max_unserved_pct", f"must be in [0, 100], got {pct:g}")
        ratio = _num(self.max_load_ratio, f"{p}.max_load_ratio", optional=True)
        if ratio is not None and ratio <= 0.0:
            _fail(f"{p}.max_load_ratio", f"must be > 0, got {ratio:g}")
        _set(self, max_unserved_pct=pct, max_load_ratio=ratio)


@dataclass(frozen=True)
class ChangeLimits:
    """How fast the network may change (tighter than the env's own limits, never looser)."""

    max_step: dict[str, float] = field(default_factory=dict)
    """Largest change per step per parameter name (``PARAM_NAMES``), physical units (dB,
    degrees), > 0; a missing name = the env's own limit."""
    max_cells_per_step: int | None = None
    """At most this many cells change in one step (≥ 1); ``None`` = no limit."""

    def __post_init__(self) -> None:
        p = "limits.max_step"
        if not isinstance(self.max_step, Mapping):
            _fail(p, f"expected an object {{parameter name: limit}}, got {self.max_step!r}")
        steps = {}
        for name, v in self.max_step.items():
            if name not in PARAM_NAMES:
                _fail(p, f"unknown parameter {name!r}; use one of {', '.join(PARAM_NAMES)}")
            steps[name] = _num(v, f"{p}.{name}")
            if steps[name] <= 0.0:
                _fail(f"{p}.{name}", f"must be > 0, got {steps[name]:g}")
        n = _int(self.max_cells_per_step, "limits.max_cells_per_step", optional=True, low=1)
        _set(self, max_step=steps, max_cells_per_step=n)

    def max_step_array(self) -> np.ndarray:
        """``[4]`` float (``PARAM_NAMES`` order): the limits, ``inf`` where none is set."""
        return np.array([self.max_step.get(n, np.inf) for n in PARAM_NAMES], dtype=np.float64)


# ============================================================================ intent
_NESTED = {"scope": Scope, "window": TimeWindow, "constraints": Constraints, "limits": ChangeLimits}


@dataclass(frozen=True)
class Intent:
    """One operator intent: an objective with its scope, window, constraints and protections."""

    objective: str
    """One of ``OBJECTIVES``."""
    scope: Scope = Scope()
    """The cells that may be tuned (default: the whole map)."""
    window: TimeWindow | None = None
    """When the intent applies; ``None`` = always."""
    constraints: Constraints = Constraints()
    """Service limits (unserved share, per-cell load ratio)."""
    protected_cells: tuple[int, ...] = ()
    """Cells that must not change (even inside the scope)."""
    protected_sites: tuple[int, ...] = ()
    """Sites whose cells must not change."""
    protected_params: tuple[str, ...] = ()
    """Parameter names (``PARAM_NAMES``) no cell may change."""
    limits: ChangeLimits = ChangeLimits()
    """Per-step change limits."""
    cap_cells: tuple[int, ...] = ()
    """``cap_load``: cells whose load ratio is capped."""
    cap_sites: tuple[int, ...] = ()
    """``cap_load``: sites whose cells' load ratio is capped (expanded at check/compile time)."""
    cap_load_ratio: float | None = None
    """``cap_load``: the cap, traffic / capacity (> 0; 0.8 = 80 %). Required there only."""
    outage_site: int | None = None
    """``restore_coverage``: the failed site whose area the other cells should cover."""
    text: str = ""
    """The operator's sentence this intent came from (informational)."""

    def __post_init__(self) -> None:
        if not isinstance(self.objective, str) or self.objective not in OBJECTIVES:
            _fail("objective", f"must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        for name, cls in _NESTED.items():
            value = getattr(self, name)
            if not (name == "window" and value is None):
                object.__setattr__(self, name, _nested(cls, value, name))
        for name in ("protected_cells", "protected_sites", "cap_cells", "cap_sites"):
            object.__setattr__(self, name, _indices(getattr(self, name), name))
        params = _seq(self.protected_params, "protected_params", "parameter names")
        for name in params:
            if name not in PARAM_NAMES:
                _fail("protected_params", f"unknown parameter {name!r}; use one of {PARAM_NAMES}")
        params = tuple(n for n in PARAM_NAMES if n in params)  # canonical order, no duplicates
        if len(params) == len(PARAM_NAMES):
            _fail("protected_params", "protects every parameter: nothing could change")
        object.__setattr__(self, "protected_params", params)
        ratio = _num(self.cap_load_ratio, "cap_load_ratio", optional=True)
        if ratio is not None and ratio <= 0.0:
            _fail("cap_load_ratio", f"must be > 0, got {ratio:g}")
        site = _int(self.outage_site, "outage_site", optional=True, low=0)
        _set(self, cap_load_ratio=ratio, outage_site=site)
        if not isinstance(self.text, str):
            _fail("text", f"expected a string, got {self.text!r}")
        capping = self.objective == "cap_load"
        if capping and ratio is None:
            _fail("cap_load_ratio", "is required by objective 'cap_load'")
        if capping and not (self.cap_cells or self.cap_sites):
            _fail("cap_cells", "objective 'cap_load' needs cap_cells or cap_sites")
        if not capping:
            for name in ("cap_cells", "cap_sites", "cap_load_ratio"):
                if getattr(self, name) not in ((), None):
                    _fail(name, f"only for objective 'cap_load', not {self.objective!r}")
        if self.objective == "restore_coverage" and site is None:
            _fail("outage_site", "is required by objective 'restore_coverage'")
        if self.objective != "restore_coverage" and site is not None:
            _fail("outage_site", f"only for objective 'restore_coverage', not {self.objective!r}")

    def check(self, scenario: Scenario) -> None:
        """Raise ``ValueError`` unless all indices exist, the polygon lies in the map and
        the protections leave some cell of the scope free to change."""
        self.scope.check(scenario)
        n, m = scenario.n_cells, scenario.n_sites
        for name in ("protected_cells", "protected_sites", "cap_cells", "cap_sites"):
            size, what = (n, "cell") if name.endswith("cells") else (m, "site")
            _in_range(getattr(self, name), size, name, what)
        outage = () if self.outage_site is None else (self.outage_site,)
        _in_range(outage, m, "outage_site", "site")
        protected = _cell_union(scenario, self.protected_cells, self.protected_sites)
        if not (self.scope._mask(scenario) & ~protected).any():
            _fail("protected_cells/protected_sites", "protect every cell of the scope")

    def scope_mask(self, scenario: Scenario) -> np.ndarray:
        """``[N]`` bool: the cells in scope (protected ones included)."""
        self.check(scenario)
        return self.scope._mask(scenario)

    def protected_mask(self, scenario: Scenario) -> np.ndarray:
        """``[N]`` bool: ``protected_cells`` plus the cells of ``protected_sites``."""
        self.check(scenario)
        return _cell_union(scenario, self.protected_cells, self.protected_sites)

    def cap_mask(self, scenario: Scenario) -> np.ndarray:
        """``[N]`` bool: ``cap_cells`` plus the cells of ``cap_sites`` (none unless cap_load)."""
        self.check(scenario)
        return _cell_union(scenario, self.cap_cells, self.cap_sites)

    def frozen_params(self) -> np.ndarray:
        """``[4]`` bool (``PARAM_NAMES`` order): parameters no cell may change."""
        return np.array([n in self.protected_params for n in PARAM_NAMES], dtype=bool)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Intent:
        """Build from a (nested) mapping such as ``to_dict``'s; unknown keys and wrong types
        raise ``ValueError`` naming the field."""
        return _nested(cls, d, "")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready nested dict of every field; ``from_dict`` inverts it."""
        return _json_ready(self)

    @classmethod
    def from_json(cls, text: str) -> Intent:
        """Parse a JSON object (``to_json``'s output)."""
        try:
            d = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"intent: invalid JSON: {err}") from None
        return cls.from_dict(d)

    def to_json(self, indent: int | None = 2) -> str:
        """The intent as a JSON object."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def load(cls, path: str | Path) -> Intent:
        """Read a ``.json`` file, or a ``.yaml`` / ``.yml`` file when PyYAML is installed."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".json":
            return cls.from_json(path.read_text(encoding="utf-8"))
        if suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                msg = "reading YAML needs PyYAML (pip install pyyaml), or use a .json file"
                raise ValueError(f"intent file {path}: {msg}") from None
            return cls.from_dict(yaml.safe_load(path.read_text(encoding="utf-8")))
        raise ValueError(f"intent file {path}: unsupported suffix {suffix!r} (use .json or .yaml)")

    def save(self, path: str | Path) -> Path:
        """Write the intent as JSON to ``path`` (returned)."""
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")
        return Path(path)
