"""``mobiwm_env.intent``: validation, serialisation, scope masks and time windows."""

from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np
import pytest

from mobiwm_env.dynamics import load_scenario
from mobiwm_env.intent import (
    OBJECTIVES,
    ChangeLimits,
    Constraints,
    Intent,
    Scope,
    TimeWindow,
)
from worldmodel.twin.scenario import PARAM_NAMES

SLOTS_PER_DAY = 96


@pytest.fixture(scope="module")
def sc():
    return load_scenario("hex57")


def full_intent() -> Intent:
    """An intent with every field away from its default."""
    return Intent(
        objective="cap_load",
        scope=Scope(
            cells=(50, 51), sites=(3, 4), polygon=((1400, 1400), (1600, 1400), (1600, 1600))
        ),
        window=TimeWindow(start_hour=22.0, end_hour=6.5, days=(4, 5)),
        constraints=Constraints(max_unserved_pct=1.5, max_load_ratio=0.9),
        protected_cells=(12,),
        protected_sites=(4,),
        protected_params=("azimuth_deg",),
        limits=ChangeLimits(
            max_step={"power_dbm": 1.0, "elec_tilt_deg": 0.5}, max_cells_per_step=3
        ),
        cap_cells=(1, 2),
        cap_sites=(7,),
        cap_load_ratio=0.8,
        text="cap it",
    )


# ============================================================================ round trips
def test_every_field_is_exercised_by_full_intent() -> None:
    defaults = Intent(objective="balance_load")
    full = full_intent()
    same = [
        f.name
        for f in dataclasses.fields(Intent)
        if getattr(full, f.name) == getattr(defaults, f.name) and f.name != "outage_site"
    ]
    assert same == []


def test_dict_and_json_round_trip() -> None:
    intent = full_intent()
    d = intent.to_dict()
    assert json.loads(json.dumps(d)) == d  # JSON-ready
    assert d["scope"]["polygon"] == [[1400.0, 1400.0], [1600.0, 1400.0], [1600.0, 1600.0]]
    assert d["window"] == {"start_hour": 22.0, "end_hour": 6.5, "days": [4, 5]}
    assert d["limits"]["max_step"] == {"power_dbm": 1.0, "elec_tilt_deg": 0.5}
    assert Intent.from_dict(d) == intent
    assert Intent.from_json(intent.to_json()) == intent
    assert Intent.from_json(intent.to_json(indent=None)) == intent
    restore = Intent(objective="restore_coverage", outage_site=6)
    assert Intent.from_json(restore.to_json()) == restore
    assert restore.to_dict()["window"] is None


def test_file_round_trip(tmp_path) -> None:
    intent = full_intent()
    path = intent.save(tmp_path / "intent.json")
    assert Intent.load(path) == intent
    assert Intent.load(str(path)) == intent


def test_yaml_without_pyyaml_says_how_to_install(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml -> ImportError
    path = tmp_path / "intent.yaml"
    path.write_text("objective: balance_load\n")
    with pytest.raises(ValueError, match="pip install pyyaml"):
        Intent.load(path)
    with pytest.raises(ValueError, match="unsupported suffix"):
        Intent.load(tmp_path / "intent.txt")


def test_from_dict_fills_defaults_and_normalises() -> None:
    intent = Intent.from_dict(
        {
            "objective": "balance_load",
            "scope": {"sites": [3, 3, 5]},
            "protected_params": ["elec_tilt_deg", "power_dbm"],
        }
    )
    assert intent.scope == Scope(sites=(3, 5))
    assert intent.protected_params == ("power_dbm", "elec_tilt_deg")  # PARAM_NAMES order
    assert intent.window is None and intent.constraints == Constraints()
    # direct construction accepts mappings for the nested parts too
    assert Intent(objective="balance_load", scope={"sites": [3, 5]}).scope == intent.scope


# ============================================================================ validation
@pytest.mark.parametrize(
    ("d", "message"),
    [
        ({"objective": "nicer"}, "objective: must be one of balance_load"),
        ({}, "objective: is required"),
        (
            {"objective": "balance_load", "objectiv": 1},
            "unknown key(s) 'objectiv'; known keys: objective",
        ),
        (
            {"objective": "balance_load", "constraints": {"max_unserved": 1}},
            "unknown key(s) 'constraints.max_unserved'; known keys of constraints: max_unserved",
        ),
        (
            {"objective": "balance_load", "scope": {"sites": "3"}},
            "scope.sites: expected a list of integers",
        ),
        (
            {"objective": "balance_load", "scope": {"cells": [1.5]}},
            "scope.cells: expected a list of integers",
        ),
        (
            {"objective": "balance_load", "scope": {"cells": [-1]}},
            "scope.cells: indices must be >= 0",
        ),
        (
            {"objective": "balance_load", "scope": {"polygon": [[0, 0], [1, 1]]}},
            "scope.polygon: needs at least 3",
        ),
        (
            {"objective": "balance_load", "scope": {"polygon": [[0, 0, 0]] * 3}},
            "scope.polygon: each vertex",
        ),
        ({"objective": "balance_load", "scope": [1]}, "scope: expected an object"),
        (
            {"objective": "balance_load", "window": {"start_hour": 25, "end_hour": 3}},
            "window.start_hour: must be in [0, 24)",
        ),
        (
            {"objective": "balance_load", "window": {"start_hour": 2, "end_hour": 30}},
            "window.end_hour: must be in [0, 24]",
        ),
        (
            {"objective": "balance_load", "window": {"start_hour": 7, "end_hour": 7}},
            "window.end_hour: equals start_hour",
        ),
        (
            {"objective": "balance_load", "window": {"start_hour": 7, "end_hour": 9, "days": [7]}},
            "window.days: day 7",
        ),
        (
            {"objective": "balance_load", "window": {"start_hour": 7, "end_hour": 9, "days": []}},
            "window.days: needs at least one",
        ),
        (
            {"objective": "balance_load", "window": {"start_hour": "7", "end_hour": 9}},
            "window.start_hour: expected a number",
        ),
        (
            {"objective": "balance_load", "window": {"end_hour": 9}},
            "window.start_hour: is required",
        ),
        (
            {"objective": "balance_load", "constraints": {"max_unserved_pct": 120}},
            "constraints.max_unserved_pct: must be in [0, 100], got 120",
        ),
        (
            {"objective": "balance_load", "constraints": {"max_load_ratio": 0}},
            "constraints.max_load_ratio: must be > 0",
        ),
        (
            {"objective": "balance_load", "constraints": {"max_load_ratio": True}},
            "constraints.max_load_ratio: expected a number",
        ),
        (
            {"objective": "balance_load", "limits": {"max_step": {"tilt": 1}}},
            "limits.max_step: unknown parameter 'tilt'; use one of power_dbm",
        ),
        (
            {"objective": "balance_load", "limits": {"max_step": {"power_dbm": -1}}},
            "limits.max_step.power_dbm: must be > 0",
        ),
        (
            {"objective": "balance_load", "limits": {"max_step": [1, 2]}},
            "limits.max_step: expected an object",
        ),
        (
            {"objective": "balance_load", "limits": {"max_cells_per_step": 0}},
            "limits.max_cells_per_step: must be >= 1",
        ),
        (
            {"objective": "balance_load", "limits": {"max_cells_per_step": 2.5}},
            "limits.max_cells_per_step: expected an integer",
        ),
        (
            {"objective": "balance_load", "protected_params": ["tilt"]},
            "protected_params: unknown parameter 'tilt'",
        ),
        (
            {"objective": "balance_load", "protected_params": list(PARAM_NAMES)},
            "protected_params: protects every parameter",
        ),
        (
            {"objective": "balance_load", "protected_sites": [1, "x"]},
            "protected_sites: expected a list of integers",
        ),
        ({"objective": "cap_load", "cap_cells": [1]}, "cap_load_ratio: is required"),
        ({"objective": "cap_load", "cap_load_ratio": 0.8}, "cap_cells: objective 'cap_load' needs"),
        (
            {"objective": "cap_load", "cap_cells": [1], "cap_load_ratio": -0.5},
            "cap_load_ratio: must be > 0",
        ),
        (
            {"objective": "balance_load", "cap_sites": [1]},
            "cap_sites: only for objective 'cap_load'",
        ),
        (
            {"objective": "balance_load", "cap_load_ratio": 0.8},
            "cap_load_ratio: only for objective 'cap_load'",
        ),
        ({"objective": "restore_coverage"}, "outage_site: is required"),
        (
            {"objective": "balance_load", "outage_site": 3},
            "outage_site: only for objective 'restore_coverage'",
        ),
        ({"objective": "restore_coverage", "outage_site": "3"}, "outage_site: expected an integer"),
        ({"objective": "balance_load", "text": 3}, "text: expected a string"),
    ],
)
def test_validation_errors_name_the_field(d: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        Intent.from_dict(d)
    assert message in str(err.value)


def test_from_dict_and_json_reject_non_objects() -> None:
    with pytest.raises(ValueError, match="intent: expected an object"):
        Intent.from_dict([1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="intent: invalid JSON"):
        Intent.from_json("{objective: balance_load}")


@pytest.mark.parametrize(
    ("intent", "message"),
    [
        (
            Intent("balance_load", scope=Scope(sites=(40,))),
            "scope.sites: site 40 does not exist (the scenario has sites 0–18)",
        ),
        (
            Intent("balance_load", scope=Scope(cells=(57,))),
            "scope.cells: cell 57 does not exist (the scenario has cells 0–56)",
        ),
        (
            Intent("balance_load", scope=Scope(polygon=((0, 0), (3500, 0), (0, 10)))),
            "scope.polygon: vertex (3500, 0) lies outside the map",
        ),
        (
            Intent("balance_load", scope=Scope(polygon=((0, 0), (10, 0), (0, 10)))),
            "scope: selects no cell",
        ),
        (Intent("balance_load", protected_cells=(60,)), "protected_cells: cell 60 does not exist"),
        (Intent("balance_load", protected_sites=(19,)), "protected_sites: site 19 does not exist"),
        (
            Intent("cap_load", cap_cells=(99,), cap_load_ratio=0.8),
            "cap_cells: cell 99 does not exist",
        ),
        (
            Intent("cap_load", cap_sites=(30,), cap_load_ratio=0.8),
            "cap_sites: site 30 does not exist",
        ),
        (Intent("restore_coverage", outage_site=19), "outage_site: site 19 does not exist"),
        (
            Intent("balance_load", scope=Scope(sites=(4,)), protected_sites=(4,)),
            "protected_cells/protected_sites: protect every cell of the scope",
        ),
        (
            Intent("balance_load", scope=Scope(cells=(3, 4)), protected_cells=(3, 4)),
            "protect every cell of the scope",
        ),
    ],
)
def test_check_against_the_scenario(sc, intent: Intent, message: str) -> None:
    with pytest.raises(ValueError) as err:
        intent.check(sc)
    assert message in str(err.value)


def test_check_accepts_a_valid_intent(sc) -> None:
    full_intent().check(sc)
    Intent("restore_coverage", outage_site=18, scope=Scope(sites=(0, 1))).check(sc)


def test_intents_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        full_intent().objective = "balance_load"  # type: ignore[misc]
    assert set(OBJECTIVES) == {"balance_load", "restore_coverage", "cap_load"}


# ============================================================================ masks
def cells_of(mask: np.ndarray) -> list[int]:
    assert mask.dtype == bool
    return np.flatnonzero(mask).tolist()


def test_scope_masks(sc) -> None:
    assert sc.n_cells == 57
    assert Scope().cell_mask(sc).all() and Scope().cell_mask(sc).shape == (57,)
    assert cells_of(Scope(cells=(5, 1)).cell_mask(sc)) == [1, 5]
    assert cells_of(Scope(sites=(0, 4)).cell_mask(sc)) == [0, 1, 2, 12, 13, 14]
    # site 0 sits at (1500, 1500): inside this square, site 1 at (2000, 1500) is not
    square = ((1400.0, 1400.0), (1600.0, 1400.0), (1600.0, 1600.0), (1400.0, 1600.0))
    assert cells_of(Scope(polygon=square).cell_mask(sc)) == [0, 1, 2]
    # a vertex on site 1 and an edge through site 4 (1000, 1500): both on the boundary = inside
    on_edge = ((1000.0, 1400.0), (2000.0, 1500.0), (1000.0, 1600.0))
    assert cells_of(Scope(polygon=on_edge).cell_mask(sc)) == [0, 1, 2, 3, 4, 5, 12, 13, 14]
    union = Scope(cells=(56,), sites=(4,), polygon=square)
    assert cells_of(union.cell_mask(sc)) == [0, 1, 2, 12, 13, 14, 56]
    assert not Scope(cells=(1,)).whole_map and Scope().whole_map


def test_intent_masks_and_frozen_params(sc) -> None:
    intent = full_intent()
    assert cells_of(intent.protected_mask(sc)) == [12, 13, 14]  # cell 12 and site 4
    assert cells_of(intent.cap_mask(sc)) == [1, 2, 21, 22, 23]
    assert cells_of(intent.scope_mask(sc)) == cells_of(intent.scope.cell_mask(sc))
    assert intent.frozen_params().tolist() == [False, True, False, False]
    assert Intent("balance_load").frozen_params().dtype == bool
    assert not Intent("balance_load").protected_mask(sc).any()
    limits = intent.limits.max_step_array()
    assert limits[0] == 1.0 and limits[3] == 0.5 and np.isinf(limits[1:3]).all()


# ============================================================================ time windows
def slot(day: int, hour: float) -> int:
    return day * SLOTS_PER_DAY + int(hour * 4)


def test_window_within_a_day() -> None:
    w = TimeWindow(start_hour=18, end_hour=22)
    assert w.days == tuple(range(7))
    hits = [slot(2, h) for h in (18, 18.25, 21.75)]
    misses = [slot(2, h) for h in (17.75, 22, 0, 12)]
    assert w.contains(np.array(hits)).all() and not w.contains(np.array(misses)).any()
    assert w.week_mask().sum() == 7 * 4 * 4
    assert w.contains(slot(3, 19) + 672 * 5)  # any week
    assert w.contains(np.array([[slot(0, 18)]])).shape == (1, 1)
    assert w.contains(np.array([slot(0, 18)], dtype=float)).tolist() == [True]
    with pytest.raises(ValueError, match="slots must be integers"):
        w.contains(np.array([0.5]))


def test_window_days() -> None:
    w = TimeWindow(start_hour=7, end_hour=9, days=(0, 4))  # Monday, Friday
    assert w.contains(np.array([slot(0, 7), slot(4, 8.75)])).all()
    assert not w.contains(np.array([slot(1, 7), slot(6, 8), slot(0, 9)])).any()
    assert w.week_mask().sum() == 2 * 2 * 4


def test_window_wraps_past_midnight() -> None:
    w = TimeWindow(start_hour=22, end_hour=6, days=(4,))  # Friday night
    assert w.contains(np.array([slot(4, 22), slot(4, 23.75), slot(5, 0), slot(5, 5.75)])).all()
    # Friday's early morning belongs to Thursday night; Saturday 22h starts a night not in days
    assert not w.contains(np.array([slot(4, 0), slot(4, 5), slot(5, 6), slot(5, 22)])).any()
    assert w.week_mask().sum() == 8 * 4
    sunday = TimeWindow(start_hour=23, end_hour=1, days=(6,))  # wraps into next week's Monday
    assert sunday.contains(np.array([slot(6, 23), slot(7, 0.5)])).all()
    assert sunday.contains(slot(0, 0.5))  # week 0's Monday follows a Sunday too (weekly period)
    assert not sunday.contains(np.array([slot(6, 0.5), slot(6, 22.75), slot(1, 0)])).any()
    every = TimeWindow(start_hour=22, end_hour=6)
    assert every.week_mask().sum() == 7 * 8 * 4
