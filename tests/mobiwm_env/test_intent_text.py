"""``mobiwm_env.intent_text``: the English intent grammar and the language-model hook."""

from __future__ import annotations

import dataclasses
import json

import pytest

import mobiwm_env.intent_text as intent_text
from mobiwm_env.dynamics import load_scenario
from mobiwm_env.intent import OBJECTIVES, ChangeLimits, Constraints, Intent, Scope, TimeWindow
from mobiwm_env.intent_text import (
    CLAUSE_FORMS,
    INTENT_JSON_SCHEMA,
    IntentParseError,
    intent_prompt,
    param_names,
    parse_intent,
    translate_intent,
)

EXAMPLE = (
    "balance load in sites 3–9 from 18:00 to 22:00, keep unserved below 1%, do not touch site 4"
)
ALL_DAYS = [0, 1, 2, 3, 4, 5, 6]


def test_the_example_sentence_yields_every_field() -> None:
    intent = parse_intent(EXAMPLE)
    assert intent.to_dict() == {
        "objective": "balance_load",
        "scope": {"cells": [], "sites": [3, 4, 5, 6, 7, 8, 9], "polygon": []},
        "window": {"start_hour": 18.0, "end_hour": 22.0, "days": ALL_DAYS},
        "constraints": {"max_unserved_pct": 1.0, "max_load_ratio": None},
        "protected_cells": [],
        "protected_sites": [4],
        "protected_params": [],
        "limits": {"max_step": {}, "max_cells_per_step": None},
        "cap_cells": [],
        "cap_sites": [],
        "cap_load_ratio": None,
        "outage_site": None,
        "text": EXAMPLE,
    }
    assert intent == Intent(
        objective="balance_load",
        scope=Scope(sites=(3, 4, 5, 6, 7, 8, 9)),
        window=TimeWindow(start_hour=18, end_hour=22),
        constraints=Constraints(max_unserved_pct=1.0),
        protected_sites=(4,),
        text=EXAMPLE,
    )
    intent.check(load_scenario("hex57"))
    assert parse_intent(EXAMPLE) == intent  # deterministic
    assert parse_intent(EXAMPLE.upper()).to_dict() | {"text": EXAMPLE} == intent.to_dict()


# Each case: a sentence and the fields it sets (every other field keeps its default).
CASES = [
    ("Balance the load.", {}),
    ("keep load balanced everywhere", {}),
    (
        "Cap load of cells 1, 2 and 7 at 80%",
        {"objective": "cap_load", "cap_cells": (1, 2, 7), "cap_load_ratio": 0.8},
    ),
    (
        "cap the load of site 3 at 0.8 on weekdays",
        {
            "objective": "cap_load",
            "cap_sites": (3,),
            "cap_load_ratio": 0.8,
            "window": TimeWindow(0, 24, days=(0, 1, 2, 3, 4)),
        },
    ),
    (
        "restore coverage around site 5; leave site 2 alone. No cell above 90% load.",
        {
            "objective": "restore_coverage",
            "outage_site": 5,
            "protected_sites": (2,),
            "constraints": Constraints(max_load_ratio=0.9),
        },
    ),
    (
        "compensate the outage of site 12 in cells 1, 2, 5 to 8 between 7 and 9",
        {
            "objective": "restore_coverage",
            "outage_site": 12,
            "scope": Scope(cells=(1, 2, 5, 6, 7, 8)),
            "window": TimeWindow(7, 9),
        },
    ),
    (
        "balance load from 22h to 6h on weekends, unserved under 0.5 %",
        {
            "window": TimeWindow(22, 6, days=(5, 6)),
            "constraints": Constraints(max_unserved_pct=0.5),
        },
    ),
    (
        "balance load on monday, friday; no more than 2% unserved; keep every cell below load 0.9",
        {
            "window": TimeWindow(0, 24, days=(0, 4)),
            "constraints": Constraints(max_unserved_pct=2.0, max_load_ratio=0.9),
        },
    ),
    (
        "balance load, don't touch cells 3 and 5, keep the power fixed and do not change azimuth",
        {"protected_cells": (3, 5), "protected_params": ("power_dbm", "azimuth_deg")},
    ),
    (
        "balance load, change at most 3 cells per step, power changes at most 1 dB per step, "
        "tilt at most 2 degrees per step",
        {
            "limits": ChangeLimits(
                max_step={"power_dbm": 1.0, "mech_tilt_deg": 2.0, "elec_tilt_deg": 2.0},
                max_cells_per_step=3,
            )
        },
    ),
    (
        "Please balance load in site 4 and at most 3 cells per hour; keep the mech tilt fixed",
        {
            "scope": Scope(sites=(4,)),
            "limits": ChangeLimits(max_cells_per_step=3),
            "protected_params": ("mech_tilt_deg",),
        },
    ),
    (
        "balance load from 9pm to 6:30am on friday to monday, only change tilt",
        {
            "window": TimeWindow(21, 6.5, days=(0, 4, 5, 6)),
            "protected_params": ("power_dbm", "azimuth_deg"),
        },
    ),
    (
        "equalise the load in sites 1 through 3 and in cells 40, 41; serve at least 99% of demand",
        {
            "scope": Scope(cells=(40, 41), sites=(1, 2, 3)),
            "constraints": Constraints(max_unserved_pct=1.0),
        },
    ),
    (
        "cap the load of sites 2 and 6 at 75 percent, do not touch cell 8, "
        "limit e-tilt changes to 0.5 degrees per step",
        {
            "objective": "cap_load",
            "cap_sites": (2, 6),
            "cap_load_ratio": 0.75,
            "protected_cells": (8,),
            "limits": ChangeLimits(max_step={"elec_tilt_deg": 0.5}),
        },
    ),
]


@pytest.mark.parametrize(("text", "fields"), CASES, ids=[c[0][:40] for c in CASES])
def test_sentences(text: str, fields: dict) -> None:
    expected = Intent(**{"objective": "balance_load", "text": text, **fields})
    intent = parse_intent(text)
    for f in dataclasses.fields(Intent):
        assert getattr(intent, f.name) == getattr(expected, f.name), f.name
    assert Intent.from_json(intent.to_json()) == intent


@pytest.mark.parametrize(
    ("phrase", "cells"),
    [
        ("cells 1, 2 and 7", (1, 2, 7)),
        ("cells 5 to 8", (5, 6, 7, 8)),
        ("cells 1, 2, 5 to 8", (1, 2, 5, 6, 7, 8)),
        ("cells 3-5, and 9", (3, 4, 5, 9)),
        ("cells 3 – 5 & 10 through 11", (3, 4, 5, 10, 11)),
        ("cell 4", (4,)),
    ],
)
def test_lists(phrase: str, cells: tuple[int, ...]) -> None:
    assert parse_intent(f"balance load in {phrase}, keep unserved below 1%").scope.cells == cells
    assert parse_intent(f"balance load, don't touch {phrase}").protected_cells == cells


def test_param_words() -> None:
    assert param_names("power") == ["power_dbm"]
    assert param_names("the azimuth") == ["azimuth_deg"]
    assert param_names("mechanical tilt, elec tilt") == ["mech_tilt_deg", "elec_tilt_deg"]
    assert param_names("m-tilt or e-tilt") == ["mech_tilt_deg", "elec_tilt_deg"]
    assert param_names("tilt and power") == ["mech_tilt_deg", "elec_tilt_deg", "power_dbm"]


def test_documented_forms_parse_and_are_documented() -> None:
    doc = " ".join(intent_text.__doc__.split())
    for form in CLAUSE_FORMS:
        objective = form.startswith(("balance", "keep load", "restore", "compensate", "cap"))
        parse_intent(form if objective else f"balance load, {form}")
        assert form.replace("sites 3-9", "sites 3–9") in doc, form
    more = ["in the whole map", "on monday to friday", "protect cells 8 to 10", "from 9pm to 6am"]
    for form in more:  # forms of the table that CLAUSE_FORMS leaves out
        assert form in doc
        parse_intent(f"balance the load, {form}")


# ============================================================================ errors
def test_unread_words_are_quoted() -> None:
    with pytest.raises(IntentParseError) as err:
        parse_intent("balance load, make it nicer")
    msg = str(err.value)
    assert msg.startswith('could not read "make it nicer" in: "balance load, make it nicer"')
    assert '"keep unserved below 1%"' in msg and '"do not touch site 4"' in msg  # the forms
    with pytest.raises(IntentParseError) as err:
        parse_intent("Balance load quickly, keep unserved below 1 and in sites 3-4; Be Nice")
    assert str(err.value).startswith(
        'could not read "quickly", "keep unserved below 1", "Be Nice" in:'
    )
    assert isinstance(err.value, ValueError)


def test_missing_objective() -> None:
    for text in ("keep unserved below 1% in sites 3-9", "", "   "):
        with pytest.raises(IntentParseError, match="no objective") as err:
            parse_intent(text)
        assert '"balance load"' in str(err.value) and "restore coverage" in str(err.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("balance load, cap load of cells 1 at 80%", "two objectives"),
        ("balance load from 7 to 9 and from 17 to 19", "two values for hours"),
        ("balance load, keep unserved below 1%, keep unserved below 2%", "max_unserved_pct"),
        ("balance load everywhere in site 3", '"everywhere" and a list'),
        ("cap the load of site 3 at 80", 'write a load as a percentage ("80%")'),
        ("balance load, power at most 2 degrees per step", "power_dbm changes are in dB"),
        ("balance load, tilt at most 2 dB per step", "mech_tilt_deg changes are in degrees"),
        ("balance load in cells 9-3", "the range 9-3 runs backwards"),
        ("balance load on weekdays to sunday", "a range of days runs between two days"),
        ("balance load from 7 to 7", "window.end_hour: equals start_hour"),
        ("balance load between 25 and 3", "25:00 is not a time of day"),
        ("balance load from 13pm to 2", "13pm is not an hour"),
        ("balance load, don't change power, azimuth or tilt", "protected_params: protects every"),
        ("balance load, keep unserved below 120%", "constraints.max_unserved_pct"),
    ],
)
def test_contradictions_and_bad_values(text: str, message: str) -> None:
    with pytest.raises(IntentParseError) as err:
        parse_intent(text)
    assert message in str(err.value)
    assert text in str(err.value)


def test_times() -> None:
    w = parse_intent("balance load between 7 and 9 pm").window
    assert (w.start_hour, w.end_hour) == (19.0, 21.0)
    w = parse_intent("balance load from 12am to 12pm on sundays").window
    assert (w.start_hour, w.end_hour, w.days) == (0.0, 12.0, (6,))
    w = parse_intent("balance load from 18:30 to 24:00").window
    assert (w.start_hour, w.end_hour) == (18.5, 24.0)


# ============================================================================ translator
def test_translator_json_string_dict_and_fences() -> None:
    seen: list[str] = []
    answer = {"objective": "balance_load", "scope": {"sites": [3, 4]}, "protected_cells": [1]}

    def as_json(text: str) -> str:
        seen.append(text)
        return json.dumps(answer)

    intent = translate_intent("balance sites 3 and 4", as_json)
    assert seen == ["balance sites 3 and 4"]
    assert intent.scope.sites == (3, 4) and intent.protected_cells == (1,)
    assert intent.text == "balance sites 3 and 4"  # filled in
    assert translate_intent("balance sites 3 and 4", lambda t: answer) == intent
    fenced = f"```json\n{json.dumps(answer)}\n```"
    assert translate_intent("balance sites 3 and 4", lambda t: fenced) == intent
    own_text = translate_intent("x", lambda t: {**answer, "text": "y"})
    assert own_text.text == "y"


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("sure! balance the load", "translator output is not JSON"),
        ("[1, 2]", "translator output is not a JSON object"),
        (42, "translator output is not a JSON object"),
        ({"objective": "nicer"}, "translator output is not a valid intent: objective: must be"),
        (
            {"objective": "balance_load", "constraints": {"max_unserved": 1}},
            "unknown key(s) 'constraints.max_unserved'",
        ),
        ({"objective": "cap_load"}, "cap_load_ratio: is required"),
    ],
)
def test_translator_invalid_output(output: object, message: str) -> None:
    with pytest.raises(IntentParseError) as err:
        translate_intent("anything", lambda t: output)
    assert message in str(err.value)


def test_json_schema_matches_the_dataclasses() -> None:
    json.dumps(INTENT_JSON_SCHEMA)  # serialisable
    props = INTENT_JSON_SCHEMA["properties"]
    assert list(props) == [f.name for f in dataclasses.fields(Intent)]
    for name, cls in (
        ("scope", Scope),
        ("window", TimeWindow),
        ("constraints", Constraints),
        ("limits", ChangeLimits),
    ):
        assert list(props[name]["properties"]) == [f.name for f in dataclasses.fields(cls)]
    assert props["objective"]["enum"] == list(OBJECTIVES)
    assert INTENT_JSON_SCHEMA["required"] == ["objective"]
    assert INTENT_JSON_SCHEMA["additionalProperties"] is False
    prompt = intent_prompt("balance load in site 4")
    assert prompt.endswith("Request: balance load in site 4\n") and '"cap_load_ratio"' in prompt


def test_restoring_coverage_keeps_the_load_balanced() -> None:
    """The outage intent: "keep load balanced" does not contradict restoring coverage."""
    for text in (
        "restore coverage around site 9, keep load balanced",
        "keep load balanced and restore coverage around site 9",
    ):
        intent = parse_intent(text)
        assert intent.objective == "restore_coverage" and intent.outage_site == 9
