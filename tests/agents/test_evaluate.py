"""Evaluation: seeded reproducibility, statistics, the CLI's outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agents import evaluate
from agents.baselines import make_controller
from agents.envs import make_vector_env


def test_mean_ci_matches_t_distribution():
    s = evaluate.mean_ci(np.array([1.0, 2.0, 3.0]))
    assert s["mean"] == pytest.approx(2.0)
    assert s["ci95"] == pytest.approx(4.302653 / np.sqrt(3), rel=1e-5)  # t(0.975, 2) · 1 / √3
    assert s["n"] == 3


@pytest.mark.parametrize("name", ["random", "heuristic"])
def test_evaluation_reproducible(name):
    def run(seed):
        venv = make_vector_env("twin", 2, episode_steps=4)
        ctrl = make_controller(name, venv, **({"seed": 0} if name == "random" else {}))
        return evaluate.run_episodes(ctrl, "twin", 2, seed=seed, venv=venv)

    a, b, c = run(7), run(7), run(8)
    np.testing.assert_array_equal(a.rmse_mb, b.rmse_mb)
    np.testing.assert_array_equal(a.episode_return, b.episode_return)
    assert not np.array_equal(a.episode_return, c.episode_return)


def test_cli_writes_tables(tmp_path, debug_checkpoint):
    result = evaluate.main([
        "--policy", "noop", "heuristic", "--runs", "2", "--episode-steps", "2",
        "--also-world-model", "--checkpoint", str(debug_checkpoint), "--out", str(tmp_path),
    ])  # fmt: skip
    assert result["backends"] == ["twin", "world_model"]
    data = json.loads((tmp_path / "results.json").read_text())
    assert [r["policy"] for r in data["rows"]] == ["noop", "heuristic"]
    assert data["rows"][0]["twin"]["rmse_vs_noop"] == 0.0
    assert "unserved_mb" in data["rows"][0]["twin"]
    assert "unserved_mb" not in data["rows"][0]["world_model"]
    for row in data["rows"]:  # the shortfall on both; on the twin it is the unserved traffic
        assert np.isfinite(row["world_model"]["shortfall_mb"]["mean"])
        twin = row["twin"]
        assert twin["shortfall_mb"]["mean"] == pytest.approx(twin["unserved_mb"]["mean"])
    md = (tmp_path / "results.md").read_text()
    assert "| Heuristic | world model |" in md
    wm_line = next(line for line in md.splitlines() if "| Heuristic | world model |" in line)
    assert wm_line.rstrip(" |").split("| ")[-2].startswith("≈")  # the model's own estimate
    assert data["rows"][0]["twin"]["excess_unserved_steps"]["mean"] == 0.0  # no-op vs itself
    assert "excess_unserved_steps" in data["rows"][1]["twin"]
    assert "excess_unserved_steps" not in data["rows"][1]["world_model"]
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files


def test_unknown_policy_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a baseline"):
        evaluate.main(["--policy", "nonsense", "--runs", "2", "--out", str(tmp_path)])


def test_policy_spec_options():
    assert evaluate.parse_policy_spec("mpc:risk=std,kappa=0.5,risk_samples=4") == (
        "mpc",
        {"risk": "std", "kappa": 0.5, "risk_samples": 4},
    )
    assert evaluate.parse_policy_spec("heuristic") == ("heuristic", {})
    with pytest.raises(ValueError, match="KEY=VALUE"):
        evaluate.parse_policy_spec("mpc:kappa")


def test_excess_unserved_steps_against_the_noop():
    def row(policy, steps):
        per = {"unserved_steps": steps}
        return {"policy": policy, "twin": {"rmse_mb": {"mean": 1.0}, "per_run": per}}

    result = {
        "backends": ["twin"],
        "rows": [row("noop", [[10.0, 10.0], [0.0, 0.0]]), row("x", [[12.0, 11.5], [2.0, 0.5]])],
    }
    evaluate.add_relative(result)
    ex = result["rows"][1]["twin"]["excess_unserved_steps"]
    # threshold 1.1 × no-op + 1 MB: run 0 sheds more in no step (12 is not > 12), run 1 in one
    assert ex["mean"] == pytest.approx(0.25)
