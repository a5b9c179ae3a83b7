"""Compiling intents into the env's reward and the shield (``mobiwm_env.intent_compile``)."""

from __future__ import annotations

import numpy as np
import pytest

from mobiwm_env.dynamics import load_scenario
from mobiwm_env.intent_compile import compile_intent, outage_neighbours
from mobiwm_env.intent_text import parse_intent


@pytest.fixture(scope="module")
def hex57():
    return load_scenario("hex57")


def test_the_example_intent(hex57) -> None:
    text = (
        "balance load in sites 3–9 from 18:00 to 22:00, keep unserved below 1%, do not touch site 4"
    )
    c = compile_intent(parse_intent(text), hex57, checkpoint=None)
    site = np.asarray(hex57.cell_site)
    assert set(np.flatnonzero(c.scope)) == set(np.flatnonzero(np.isin(site, [3, 5, 6, 7, 8, 9])))
    assert set(c.shield.scope) == set(np.flatnonzero(c.scope))
    assert set(c.shield.protected) == set(np.flatnonzero(site == 4))
    assert c.shield.max_unserved_pct == 1.0 and c.shield.checkpoint is None
    mask = np.asarray(c.shield.week_mask)
    assert mask.sum() == 7 * 16 and mask[18 * 4] and not mask[22 * 4]  # 18:00–22:00 daily
    assert c.env_kwargs == {"lambda_delta": 1.0, "lambda_unserved": 2.0}


def test_restore_coverage_moves_the_neighbours(hex57) -> None:
    c = compile_intent(parse_intent("restore coverage around site 0, keep load balanced"), hex57)
    site = np.asarray(hex57.cell_site)
    assert not c.scope[site == 0].any()  # the failed site's own cells cannot help
    assert c.scope.sum() >= 3 * 6  # the ring of sites around the centre
    assert np.array_equal(c.scope, outage_neighbours(hex57, 0))
    assert c.env_kwargs["lambda_unserved"] == 4.0


def test_cap_load_and_limits(hex57) -> None:
    text = ("cap load of cells 1, 2 and 7 at 80%, change at most 3 cells per step, "
            "power changes at most 1 dB per step; do not change azimuth")  # fmt: skip
    c = compile_intent(parse_intent(text), hex57)
    assert c.shield.max_load_ratio == 0.8 and c.shield.max_cells == 3
    assert c.shield.frozen == ("azimuth_deg",) and c.shield.max_step == {"power_dbm": 1.0}
    assert np.flatnonzero(c.cap).tolist() == [1, 2, 7]


def test_intents_are_checked_against_the_map(hex57) -> None:
    with pytest.raises(ValueError, match="site 40"):
        compile_intent(parse_intent("balance load in site 40"), hex57)
