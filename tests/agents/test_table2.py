"""Table 2 orchestration: agents found from checkpoints, target checks from a result."""

from __future__ import annotations

from agents import table2


def test_agents_skip_missing_checkpoints(tmp_path, debug_checkpoint, gru_checkpoint, capsys):
    cfg = table2.Table2Config(
        mobiwm=str(debug_checkpoint), static=str(tmp_path / "nope"), gru=str(gru_checkpoint)
    )
    names = [name for name, _, _ in table2.agents_of(cfg)]
    assert names == ["mobiwm", "gru", "twin"]
    assert "--ablate actions" in capsys.readouterr().out


def _row(policy, rmse, agent=None):
    row = {"policy": policy, "twin": {"rmse_mb": {"mean": rmse}}}
    if agent:
        row["agent"] = agent
    return row


def test_targets():
    result = {
        "rows": [
            _row("noop", 100.0),
            _row("a", 70.0, "mobiwm"),
            _row("b", 90.0, "static"),
            _row("c", 65.0, "twin"),
        ]
    }
    t = table2.targets(result)
    assert abs(t["mobiwm_rmse_reduction_vs_noop"] - 0.30) < 1e-12
    assert t["mobiwm_reduction_ge_25pct"]
    assert abs(t["mobiwm_share_of_twin_gain"] - 30 / 35) < 1e-12
    assert t["mobiwm_share_ge_80pct"] and t["mobiwm_beats_static"]
