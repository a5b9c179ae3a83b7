"""Operator sentences → ``Intent``: a deterministic parser of a small English grammar, and a hook
for a language model the user runs (``translate_intent``). No network use.

``parse_intent(text)`` reads clauses separated by commas, semicolons, periods, "and" or plain
spaces, case-insensitively. Grammar (one clause per row; ``|`` separates variants):

=============  ==========================================================  =====================
clause         forms (examples)                                            sets
=============  ==========================================================  =====================
objective      balance load | balance the load | keep load balanced        objective=balance_load
               restore coverage around site 5 |                            objective=
               compensate the outage of site 5                             restore_coverage,
                                                                           outage_site
               cap load of cells 1, 2 and 7 at 80% |                       objective=cap_load,
               cap the load of site 3 at 0.8                               cap_cells / cap_sites,
                                                                           cap_load_ratio
scope          in sites 3–9 | in site 4 | in cells 1, 2, 5 to 8            scope.sites / cells
               in the whole map | everywhere                               (whole map)
time           from 18:00 to 22:00 | between 7 and 9 | from 22h to 6h |    window.start_hour,
               from 9pm to 6am                                             window.end_hour
               on weekdays | on weekends | on monday, friday |             window.days
               on monday to friday
constraints    keep unserved below 1% | unserved under 0.5 % |             constraints.
               no more than 2% unserved | serve at least 99% of demand     max_unserved_pct
               no cell above 90% load | keep every cell below load 0.9     constraints.
                                                                           max_load_ratio
protection     do not touch site 4 | don't touch cells 3 and 5 |           protected_sites /
               leave site 2 alone | protect cells 8 to 10                  protected_cells
               do not change azimuth | keep the power fixed |              protected_params
               only change tilt
limits         change at most 3 cells per step | at most 3 cells per hour  limits.
                                                                           max_cells_per_step
               power changes at most 1 dB per step |                       limits.max_step
               tilt at most 2 degrees per step
=============  ==========================================================  =====================

* Lists: numbers separated by ``,``, ``and`` or ``&``; inclusive ranges with ``–``, ``-``,
  ``to``, ``through`` (``cells 1, 2, 5 to 8`` = 1, 2, 5, 6, 7, 8). Lists are greedy, and each
  needs its own verb: ``in sites 1-3 and in cells 40, 41``.
* Parameters: power → ``power_dbm``, azimuth → ``azimuth_deg``, mechanical/mech tilt, m-tilt →
  ``mech_tilt_deg``, electrical/elec tilt, e-tilt → ``elec_tilt_deg``, tilt alone → both tilts.
* Loads are ``90%`` or a ratio ≤ 1 (``0.9``); unserved shares need ``%``. Hours are ``7``,
  ``07:30``, ``22h``, ``9pm``; an end before the start wraps past midnight. "per hour" reads as
  "per step" (one env step is an hour by default). Days: monday…sunday (or mon…sun),
  weekdays, weekends, ranges such as friday to monday.

Anything else raises ``IntentParseError`` quoting the words it could not read; the objective
is required, and two objectives are an error — except "keep load balanced" beside "restore
coverage around site S", which restoring coverage already does (its target is the balanced one).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from mobiwm_env.intent import OBJECTIVES, Intent
from worldmodel.twin.scenario import PARAM_NAMES


class IntentParseError(ValueError):
    """A sentence (or a translator's output) that cannot be read as an ``Intent``."""


CLAUSE_FORMS: tuple[str, ...] = (
    "balance load", "keep load balanced", "restore coverage around site 5",
    "compensate the outage of site 5", "cap load of cells 1, 2 and 7 at 80%",
    "cap the load of site 3 at 0.8", "in sites 3-9", "in cells 1, 2, 5 to 8", "everywhere",
    "from 18:00 to 22:00", "between 7 and 9", "from 22h to 6h", "on weekdays",
    "on monday, friday", "keep unserved below 1%", "no more than 2% unserved",
    "no cell above 90% load", "keep every cell below load 0.9", "do not touch site 4",
    "don't touch cells 3 and 5", "leave site 2 alone", "do not change azimuth",
    "keep the power fixed", "change at most 3 cells per step",
    "power changes at most 1 dB per step", "tilt at most 2 degrees per step",
)  # fmt: skip
"""One example of every clause form (listed in parse errors)."""
_OBJECTIVE_FORMS = '"balance load", "restore coverage around site S", "cap load of cells … at X%"'

# ============================================================================ patterns
_INT = r"\d+(?!\d|\.\d|:\d|\s*%)"  # an index (not part of a decimal, a time or a percentage)
_TO = r"\s*(?:-|\bto\b|\bthrough\b|\bthru\b)\s*"
_AND = r"\s*(?:,\s*and\b|,|\band\b|&)\s*"
_LIST = rf"{_INT}(?:{_TO}{_INT})?(?:{_AND}{_INT}(?:{_TO}{_INT})?)*"
_UNITS = rf"(?:the\s+)?(?P<unit>cells?|sites?)\s+(?P<list>{_LIST})"
_NUM = r"\d+(?:\.\d+)?"
_PCT = rf"(?P<pct>{_NUM})\s*(?:%|percent\b)"
_RATIO = rf"(?P<ratio>{_NUM})(?P<is_pct>\s*(?:%|percent\b))?"
_LOAD_NUM = rf"(?:(?:a\s+)?load\s+(?:of\s+)?)?{_RATIO}(?:\s+(?:load|utili[sz]ation))?"
_PARAM = (
    r"(?:the\s+)?(?:(?:transmit\s+|tx\s+)?power|azimuths?|(?:mechanical|mech\.?)\s+tilts?"
    r"|m-?tilts?|(?:electrical|elec\.?)\s+tilts?|e-?tilts?|(?:both\s+)?tilts?)"
)
_PARAMS = rf"(?P<params>{_PARAM}(?:\s*(?:,\s*and\b|,\s*or\b|,|\band\b|\bor\b|/)\s*{_PARAM})*)"
_NOT = r"(?:do\s+not|don't|dont|never|must\s+not)\s+(?:touch|change|modify|tune|alter|adjust)\s+"
_PER = r"\s*(?:per|each|every|a|an)\s+(?:step|hour|action)"
_MOST = r"(?:at\s+most|no\s+more\s+than|not\s+more\s+than|up\s+to|max(?:imum)?|<=?)"
_AT_MOST = _MOST + r"\s+"
_STEP = rf"(?P<v>{_NUM})\s*(?P<u>dbm?\b|degrees?\b|degs?\b|°)?{_PER}"
_TIME = r"(?P<{0}>\d{{1,2}})(?::(?P<{0}_min>\d{{2}}))?\s*(?P<{0}_ap>h\b|am\b|pm\b|o'clock\b)?"
_DAY_NAMES: dict[str, tuple[int, ...]] = {
    **{d: (i,) for i, d in enumerate(("mon", "tue", "wed", "thu", "fri", "sat", "sun"))},
    **{d + "day": (i,) for i, d in enumerate(("mon", "tues", "wednes", "thurs", "fri"))},
    "saturday": (5,), "sunday": (6,), "tues": (1,), "weds": (2,), "thur": (3,), "thurs": (3,),
    "weekday": (0, 1, 2, 3, 4), "working day": (0, 1, 2, 3, 4), "workday": (0, 1, 2, 3, 4),
    "business day": (0, 1, 2, 3, 4), "weekend": (5, 6),
}  # fmt: skip
_DAY = r"(?:" + "|".join(sorted(map(re.escape, _DAY_NAMES), key=len, reverse=True)) + r")s?\b"
_DAY_TO = r"\s*(?:-|\bto\b|\bthrough\b|\bthru\b|\buntil\b)\s*"
_DAY_RANGE = rf"{_DAY}(?:{_DAY_TO}{_DAY})?"
_DAYS = rf"(?P<days>{_DAY_RANGE}(?:\s*(?:,\s*and\b|,|\band\b|\bor\b)\s*{_DAY_RANGE})*)"

_PATTERNS: tuple[tuple[str, str], ...] = (
    ("balance", r"(?:balance|even\s+out|equali[sz]e)\s+(?:the\s+)?(?:cell\s+)?loads?"),
    ("balance", r"keep\s+(?:the\s+)?(?:cell\s+)?loads?\s+(?:balanced|even)|load[\s-]balancing"),
    ("restore", r"restore\s+(?:the\s+)?coverage\s+(?:around|of|near|at|for)\s+site\s+(?P<s>\d+)"),
    ("restore", r"compensate\s+(?:for\s+)?(?:the\s+)?outage\s+(?:of|at)\s+site\s+(?P<s>\d+)"),
    ("cap", rf"(?:cap|limit)\s+(?:the\s+)?load\s+(?:of|on|at)\s+{_UNITS}\s+(?:at|to)\s+{_RATIO}"),
    ("scope", rf"(?:only\s+)?(?:in|on|for|across|within|over|at)\s+{_UNITS}"),
    ("whole", r"(?:in|on|across|over|for)\s+(?:the\s+)?(?:whole|entire)\s+(?:map|network)"),
    ("whole", r"everywhere|network[\s-]wide|(?:in|on|across|for)\s+all\s+(?:cells|sites)"),
    ("hours", rf"(?:from|between)\s+{_TIME.format('a')}\s*(?:-|\bto\b|\buntil\b|\btill\b|\band\b)"
              rf"\s*{_TIME.format('b')}"),
    ("days", rf"(?:on|during|every|each|over)\s+(?:the\s+)?{_DAYS}"),
    ("unserved", r"(?:keep\s+|with\s+)?(?:the\s+)?unserved(?:\s+(?:traffic|demand))?\s+"
                 rf"(?:below|under|less\s+than|within|{_MOST})\s+{_PCT}"),
    ("unserved", rf"(?:{_AT_MOST}|less\s+than\s+|under\s+|below\s+){_PCT}\s+"
                 r"(?:of\s+(?:the\s+)?(?:traffic|demand)\s+)?unserved(?:\s+(?:traffic|demand))?"),
    ("served", rf"(?:serve|carry)\s+at\s+least\s+{_PCT}\s+of\s+(?:the\s+)?(?:traffic|demand)"),
    ("load", r"no\s+cell\s+(?:is\s+|goes\s+|gets\s+)?(?:loaded\s+)?"
             rf"(?:above|over|beyond|more\s+than|exceeds?|exceeding)\s+{_LOAD_NUM}"),
    ("load", rf"keep\s+(?:every|each|all|all\s+the)\s+cells?\s+(?:below|under|within|at\s+most)\s+"
             rf"{_LOAD_NUM}"),
    ("protect", rf"{_NOT}{_UNITS}"),
    ("protect", rf"leave\s+{_UNITS}\s+(?:alone|untouched|unchanged|as\s+(?:it\s+)?is)"),
    ("protect", rf"(?:protect|freeze|exclude)\s+{_UNITS}"),
    ("protect", rf"keep\s+{_UNITS}\s+(?:fixed|unchanged|untouched|frozen|as\s+(?:it\s+)?is)"),
    ("freeze", rf"{_NOT}{_PARAMS}"),
    ("freeze", rf"(?:keep|hold|leave)\s+{_PARAMS}\s+(?:fixed|unchanged|constant|frozen|alone"
               r"|untouched|as\s+(?:it\s+)?is)"),
    ("only", rf"(?:only\s+(?:change|tune|adjust)|(?:change|tune|adjust)\s+only)\s+{_PARAMS}"),
    ("ncells", rf"(?:(?:change|touch|modify|adjust|tune|move)\s+)?{_AT_MOST}(?P<n>\d+)\s+cells?"
               rf"(?:\s+(?:changed|at\s+(?:a|one)\s+time|at\s+once))?(?:{_PER})?"),
    ("step", rf"(?:(?:change|move|adjust)\s+)?{_PARAMS}\s+(?:(?:changes?|steps?|moves?)\s+)?"
             rf"(?:(?:by|of)\s+)?{_AT_MOST}{_STEP}"),
    ("step", rf"limit\s+{_PARAMS}\s+(?:(?:changes?|steps?)\s+)?to\s+{_STEP}"),
)  # fmt: skip
_CLAUSES = tuple((kind, re.compile(p + r"(?=$|[\s,;.!?)])")) for kind, p in _PATTERNS)
_SKIP = re.compile(r"(?:[\s,;!?()]|\.(?!\d)|\b(?:and|also|then|but|while|please|plus|so)\b)+")
_WORD = re.compile(r"(?:[^\s,;.]|\.(?=\d))+|\S")
_LIST_FIELDS = ("protected_cells", "protected_sites", "protected_params", "cap_cells", "cap_sites")
_DASHES = str.maketrans({c: "-" for c in "\u2010\u2011\u2012\u2013\u2014\u2212"})


# ============================================================================ parser
def parse_intent(text: str) -> Intent:
    """The ``Intent`` a sentence of the module's grammar states (``text`` kept in ``.text``);
    ``IntentParseError`` quotes unread words or names what is missing or contradictory."""
    if not isinstance(text, str):
        raise IntentParseError(f"parse_intent: expected a string, got {type(text).__name__}")
    # length-preserving normalisation, so that positions index the original text too
    norm = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
    norm = norm.translate(_DASHES).replace("\u2019", "'").replace("\u00a0", " ")
    draft = _Draft(text)
    unread: list[list[int]] = []  # [start, end] spans of unread words
    pos, last_parsed = 0, True
    while True:
        skip = _SKIP.match(norm, pos)
        gap = skip.group() if skip else ""
        pos = skip.end() if skip else pos
        if pos >= len(norm):
            break
        best: tuple[str, re.Match] | None = None
        for kind, regex in _CLAUSES:
            m = regex.match(norm, pos)
            if m and (best is None or m.end() > best[1].end()):
                best = (kind, m)
        if best is not None:
            draft.apply(*best)
            pos, last_parsed = best[1].end(), True
            continue
        w = _WORD.match(norm, pos)
        if unread and not last_parsed and not re.search(r"[,;.]", gap):
            unread[-1][1] = w.end()
        else:
            unread.append([pos, w.end()])
        pos, last_parsed = w.end(), False
    if unread:
        words = ", ".join(f'"{text[a:b]}"' for a, b in unread)
        forms = "; ".join(f'"{f}"' for f in CLAUSE_FORMS)
        raise IntentParseError(f'could not read {words} in: "{text}". Clause forms: {forms}')
    return draft.build()


class _Draft:
    """The fields read so far; contradictions raise ``IntentParseError``."""

    def __init__(self, text: str) -> None:
        self.text, self.fields, self.clause = text, {}, ""
        self.lists: dict[str, list] = {}
        self.days: set[int] = set()
        self.objective: tuple[str, str] | None = None  # (objective, clause)

    def fail(self, msg: str) -> None:
        raise IntentParseError(f'{msg} (in "{self.clause}" of: "{self.text}")')

    def set(self, name: str, value: Any) -> None:
        old = self.fields.setdefault(name, value)
        if old != value:
            self.fail(f"two values for {name}: {old!r} and {value!r}")

    def add(self, name: str, values: Any) -> None:
        self.lists.setdefault(name, []).extend(values)

    def set_objective(self, objective: str) -> None:
        # restoring coverage keeps the balanced target: "…, keep load balanced" only adds to it
        pair = {objective, self.objective[0] if self.objective else objective}
        if pair == {"restore_coverage", "balance_load"}:
            if objective == "restore_coverage":
                self.objective = (objective, self.clause)
            return
        if self.objective is not None and self.objective[0] != objective:
            self.fail(f'two objectives: "{self.objective[1]}" and this one; state one')
        self.objective = self.objective or (objective, self.clause)

    def apply(self, kind: str, m: re.Match) -> None:
        self.clause = self.text[m.start() : m.end()]
        g = m.groupdict()
        if kind == "balance":
            self.set_objective("balance_load")
        elif kind == "restore":
            self.set_objective("restore_coverage")
            self.set("outage_site", int(g["s"]))
        elif kind == "cap":
            self.set_objective("cap_load")
            self.add(f"cap_{g['unit'].rstrip('s')}s", self.indices(g["list"]))
            self.set("cap_load_ratio", self.ratio(g))
        elif kind == "scope":
            self.add(f"scope_{g['unit'].rstrip('s')}s", self.indices(g["list"]))
        elif kind == "whole":
            self.set("whole_map", True)
        elif kind == "hours":
            if g["b_ap"] in ("am", "pm") and not g["a_ap"] and int(g["a"]) <= int(g["b"]):
                g["a_ap"] = g["b_ap"]  # "between 7 and 9 pm"
            self.set("hours", (self.hour(g, "a"), self.hour(g, "b")))
        elif kind == "days":
            self.days.update(self.day_list(g["days"]))
        elif kind in ("unserved", "served"):
            pct = float(g["pct"])
            self.set("max_unserved_pct", pct if kind == "unserved" else round(100.0 - pct, 9))
        elif kind == "load":
            self.set("max_load_ratio", self.ratio(g))
        elif kind == "protect":
            self.add(f"protected_{g['unit'].rstrip('s')}s", self.indices(g["list"]))
        elif kind == "freeze":
            self.add("protected_params", param_names(g["params"]))
        elif kind == "only":
            keep = param_names(g["params"])
            self.add("protected_params", [p for p in PARAM_NAMES if p not in keep])
        elif kind == "ncells":
            self.set("max_cells_per_step", int(g["n"]))
        else:  # step
            self.step_limits(g)

    def indices(self, text: str) -> list[int]:
        out = []
        for item in re.split(_AND, text.strip()):
            ends = [int(x) for x in re.split(_TO, item)]
            if ends[-1] < ends[0]:
                self.fail(f"the range {item} runs backwards")
            out.extend(range(ends[0], ends[-1] + 1))
        return out

    def ratio(self, g: dict) -> float:
        value = float(g["ratio"])
        if g["is_pct"]:
            return value / 100.0
        if value > 1.0:
            self.fail(f'write a load as a percentage ("{value:g}%") or a ratio ≤ 1, got {value:g}')
        return value

    def hour(self, g: dict, name: str) -> float:
        h, minutes, ap = int(g[name]), int(g[f"{name}_min"] or 0), g[f"{name}_ap"]
        if ap in ("am", "pm") and not 1 <= h <= 12:
            self.fail(f"{h}{ap} is not an hour of a 12-hour clock")
        h = h % 12 + (12 if ap == "pm" else 0) if ap in ("am", "pm") else h
        if minutes >= 60 or h > 24 or (h == 24 and minutes):
            self.fail(f"{g[name]}:{minutes:02d} is not a time of day")
        return h + minutes / 60.0

    def day_list(self, text: str) -> list[int]:
        out: list[int] = []
        for item in re.split(r"\s*(?:,\s*and\b|,|\band\b|\bor\b)\s*", text.strip()):
            ends = [_day(x) for x in re.split(_DAY_TO, item)]
            if len(ends) == 1:
                out.extend(ends[0])
            elif len(ends[0]) > 1 or len(ends[1]) > 1:
                self.fail(f'"{item}": a range of days runs between two days (monday to friday)')
            else:
                first, last = ends[0][0], ends[1][0]
                out.extend((first + k) % 7 for k in range((last - first) % 7 + 1))
        return out

    def step_limits(self, g: dict) -> None:
        unit = g["u"] or ""
        for name in param_names(g["params"]):
            power = name == "power_dbm"
            if unit and unit.startswith("db") != power:
                self.fail(f"{name} changes are in {'dB' if power else 'degrees'}, not {unit}")
            self.set(f"max_step.{name}", float(g["v"]))

    def build(self) -> Intent:
        if self.objective is None:
            raise IntentParseError(f'no objective in: "{self.text}"; say one of {_OBJECTIVE_FORMS}')
        f, lists = self.fields, self.lists
        scope = {"cells": lists.get("scope_cells", ()), "sites": lists.get("scope_sites", ())}
        if f.get("whole_map") and (scope["cells"] or scope["sites"]):
            raise IntentParseError(f'"everywhere" and a list of cells/sites in: "{self.text}"')
        window = None
        if "hours" in f or self.days:
            start, end = f.get("hours", (0.0, 24.0))
            window = {"start_hour": start, "end_hour": end, "days": sorted(self.days or range(7))}
        d = {
            "objective": self.objective[0], "scope": scope, "window": window,
            "constraints": {k: f[k] for k in ("max_unserved_pct", "max_load_ratio") if k in f},
            "limits": {
                "max_step": {k[9:]: v for k, v in f.items() if k.startswith("max_step.")},
                "max_cells_per_step": f.get("max_cells_per_step"),
            },
            "cap_load_ratio": f.get("cap_load_ratio"), "outage_site": f.get("outage_site"),
            "text": self.text,
        }  # fmt: skip
        d.update({name: lists.get(name, ()) for name in _LIST_FIELDS})
        try:
            return Intent.from_dict(d)
        except ValueError as err:
            raise IntentParseError(f'{err} (from: "{self.text}")') from None


def _day(name: str) -> tuple[int, ...]:
    name = " ".join(name.split())
    return _DAY_NAMES.get(name) or _DAY_NAMES[name[:-1]]  # (plural "mondays", "weekends")


def param_names(text: str) -> list[str]:
    """``PARAM_NAMES`` entries named by a phrase ("power and tilt" → power, both tilts)."""
    out: list[str] = []
    for m in re.finditer(_PARAM, text):
        word = m.group()
        if "power" in word:
            out.append("power_dbm")
        elif "azimuth" in word:
            out.append("azimuth_deg")
        elif "mech" in word or re.search(r"\bm-?tilt", word):
            out.append("mech_tilt_deg")
        elif "elec" in word or re.search(r"\be-?tilt", word):
            out.append("elec_tilt_deg")
        else:
            out.extend(("mech_tilt_deg", "elec_tilt_deg"))
    return list(dict.fromkeys(out))


# ============================================================================ language models
def _field(schema: dict, description: str) -> dict:
    return {**schema, "description": description}


_INDICES = {"type": "array", "items": {"type": "integer", "minimum": 0}}
_OPT_NUM = {"type": ["number", "null"]}
INTENT_JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Intent",
    "description": "A mobile-network operator intent (mobiwm_env.intent.Intent). Cells and sites"
    " are 0-based indices; times are hours of the day; day 0 is Monday.",
    "type": "object",
    "additionalProperties": False,
    "required": ["objective"],
    "properties": {
        "objective": _field({"enum": list(OBJECTIVES)}, "What the operator wants."),
        "scope": _field({
            "type": "object", "additionalProperties": False, "properties": {
                "cells": _field(_INDICES, "Cell indices that may be tuned."),
                "sites": _field(_INDICES, "Site indices whose cells may be tuned."),
                "polygon": _field({"type": "array", "items": {
                    "type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}},
                    "Vertices [x, y] in metres (>= 3); cells inside may be tuned."),
            }}, "Where the intent applies; all empty = the whole map."),
        "window": _field({
            "type": ["object", "null"], "additionalProperties": False,
            "required": ["start_hour", "end_hour"], "properties": {
                "start_hour": {"type": "number", "minimum": 0, "exclusiveMaximum": 24},
                "end_hour": _field({"type": "number", "minimum": 0, "maximum": 24},
                                   "Before start_hour = wraps past midnight."),
                "days": _field({"type": "array", "items": {"type": "integer", "minimum": 0,
                                "maximum": 6}}, "Days of the week, 0 = Monday."),
            }}, "When the intent applies; null = always."),
        "constraints": {"type": "object", "additionalProperties": False, "properties": {
            "max_unserved_pct": _field({**_OPT_NUM, "minimum": 0, "maximum": 100},
                                       "Unserved traffic at most this % of demand."),
            "max_load_ratio": _field({**_OPT_NUM, "exclusiveMinimum": 0},
                                     "No cell's traffic/capacity above this (0.9 = 90%)."),
        }},
        "protected_cells": _field(_INDICES, "Cells that must not change."),
        "protected_sites": _field(_INDICES, "Sites whose cells must not change."),
        "protected_params": _field({"type": "array", "items": {"enum": list(PARAM_NAMES)}},
                                   "Parameters no cell may change."),
        "limits": {"type": "object", "additionalProperties": False, "properties": {
            "max_step": _field({"type": "object", "additionalProperties": False, "properties": {
                n: {"type": "number", "exclusiveMinimum": 0} for n in PARAM_NAMES}},
                "Largest change per step per parameter (dB, degrees)."),
            "max_cells_per_step": {"type": ["integer", "null"], "minimum": 1},
        }},
        "cap_cells": _field(_INDICES, "cap_load only: cells whose load is capped."),
        "cap_sites": _field(_INDICES, "cap_load only: sites whose cells' load is capped."),
        "cap_load_ratio": _field({**_OPT_NUM, "exclusiveMinimum": 0},
                                 "cap_load only (required): the cap, 0.8 = 80% load."),
        "outage_site": _field({"type": ["integer", "null"], "minimum": 0},
                              "restore_coverage only (required): the failed site."),
        "text": _field({"type": "string"}, "The operator's sentence."),
    },
}  # fmt: skip
"""JSON schema of ``Intent.to_dict`` / ``Intent.from_dict`` (for a language model's prompt)."""


def intent_prompt(text: str) -> str:
    """A prompt asking a language model to translate ``text`` into an intent JSON object."""
    schema = json.dumps(INTENT_JSON_SCHEMA, separators=(",", ":"))
    return (
        "Translate the network operator's request into one JSON object that follows this JSON "
        f"schema. Answer with the JSON object only.\nSchema: {schema}\nRequest: {text}\n"
    )


def translate_intent(text: str, translator: Callable[[str], str | Mapping[str, Any]]) -> Intent:
    """The ``Intent`` a user-supplied translator (e.g. a language model) reads from ``text``.

    ``translator(text)`` returns a JSON object as a string (code fences allowed) or a mapping;
    it is validated by ``Intent.from_dict`` (``text`` filled in when missing). Invalid output
    raises ``IntentParseError`` saying why.
    """
    out = translator(text)
    if isinstance(out, str):
        fenced = re.fullmatch(r"\s*```(?:json)?\s*(.*?)\s*```\s*", out, flags=re.DOTALL)
        try:
            out = json.loads(fenced.group(1) if fenced else out)
        except json.JSONDecodeError as err:
            raise IntentParseError(f"translator output is not JSON ({err}): {out!r:.200}") from None
    if not isinstance(out, Mapping):
        raise IntentParseError(f"translator output is not a JSON object: {out!r:.200}")
    try:
        return Intent.from_dict({"text": text, **out})
    except ValueError as err:
        raise IntentParseError(f"translator output is not a valid intent: {err}") from None
