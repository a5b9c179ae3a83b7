"""``agents/outage.py``: a site fails mid-episode; rows judged against the no-op."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agents import outage


def test_outage_study_end_to_end(tmp_path, debug_checkpoint):
    result = outage.main([
        "--site", "7", "--fail-step", "1", "--runs", "2", "--episode-steps", "3",
        "--rows", "noop", "heuristic", "pipeline", "--checkpoint", str(debug_checkpoint),
        "--no-gif", "--out", str(tmp_path),
    ])  # fmt: skip
    data = json.loads((tmp_path / "results.json").read_text())
    assert set(data["per_run"]) == {"noop", "heuristic", "pipeline"}
    s = result["summary"]
    assert s["noop"]["recovered_share_pooled"] == pytest.approx(0.0)  # the reference itself
    no_out = np.asarray(data["no_outage"]["unserved_after"])
    with_out = np.asarray(data["per_run"]["noop"]["unserved_after"])
    assert (with_out >= no_out - 1e-6).all()  # losing a site never serves more users
    assert data["shield"]["steps"] == 2 * 3
    assert "intent → shielded MPC" in (tmp_path / "results.md").read_text()


def test_outage_config_errors():
    with pytest.raises(ValueError, match="--rows"):
        outage.main(["--rows", "oracle"])
    with pytest.raises(ValueError, match="--fail-step"):
        outage.main(["--fail-step", "30"])
