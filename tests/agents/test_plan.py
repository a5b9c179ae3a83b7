"""``agents/plan.py``: intent → shielded plan → before/after KPIs on the twin."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agents import plan


def test_plan_end_to_end(tmp_path, debug_checkpoint):
    text = "balance load in sites 3–9, do not touch site 4, change at most 2 cells per step"
    result = plan.main([
        "--intent", text, "--runs", "2", "--episode-steps", "2", "--no-gif",
        "--checkpoint", str(debug_checkpoint), "--out", str(tmp_path),
    ])  # fmt: skip
    data = json.loads((tmp_path / "plan.json").read_text())
    assert data["intent"]["protected_sites"] == [4]
    for key, _ in plan.KPIS:
        assert len(data["before"][key]) == 2 and len(data["after"][key]) == 2
    assert data["before"]["changed_cells"] == [0.0, 0.0]
    assert max(data["after"]["changed_cells"]) <= 2 * 2  # 2 cells a step, 2 steps
    assert result["after"]["shield"]["steps"] == 4
    md = (tmp_path / "plan.md").read_text()
    assert "before (no-op)" in md and "MPC + shield" in md
    assert np.isfinite(data["after"]["unserved_mb"]).all()


def test_plan_needs_one_intent(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        plan.main(["--out", str(tmp_path)])
