"""Table 2 orchestration: agents found from checkpoints, target checks from a result."""

from __future__ import annotations

from agents import table2


def test_agents_skip_missing_checkpoints(
    tmp_path, debug_checkpoint, gru_checkpoint, learned_checkpoints, capsys
):
    cfg = table2.Table2Config(
        mobiwm=str(debug_checkpoint), static=str(tmp_path / "nope"), gru=str(gru_checkpoint),
        itransformer=str(learned_checkpoints["itransformer"]), rssm=str(tmp_path / "nope2"),
        tdmpc="",
    )  # fmt: skip
    names = [name for name, _, _ in table2.agents_of(cfg)]
    assert names == ["mobiwm", "gru", "itransformer", "twin"]
    printed = capsys.readouterr().out
    assert "--ablate actions" in printed and "--arch rssm" in printed and "tdmpc" not in printed


def test_plan_gives_every_agent_the_same_recipe(tmp_path, debug_checkpoint, gru_checkpoint):
    cfg = table2.Table2Config(
        mobiwm=str(debug_checkpoint), static="", gru=str(gru_checkpoint), itransformer="",
        rssm="", tdmpc="", warm_start="heuristic",
        lambda_unserved=2.0, total_timesteps=512, learning_rate=1e-4, n_epochs=3, reuse=True,
    )  # fmt: skip
    (tmp_path / "ppo-gru").mkdir()
    (tmp_path / "ppo-gru" / "model.zip").write_bytes(b"")  # already trained: reused
    base, trained, todo = table2.plan(cfg, tmp_path)
    assert [t[0] for t in trained] == ["mobiwm", "gru", "twin"]
    assert [t[2] for t in trained][-1] == "PPO in twin (upper bound) (from heuristic)"
    assert [c.out for c in todo] == [str(tmp_path / "ppo-mobiwm"), str(tmp_path / "ppo-twin")]
    for c in todo:
        assert (c.warm_start, c.lambda_unserved, c.total_timesteps) == ("heuristic", 2.0, 512)
        assert (c.learning_rate, c.n_epochs) == (1e-4, 3)
        assert c.eval_runs == 0 and c.env_kwargs() == base.env_kwargs()
    assert todo[1].env_id == "MobiWM-LoadBalance-Twin-v0" and todo[0].checkpoint


def _row(policy, rmse, agent=None, ret=None, ci=10.0):
    row = {"policy": policy, "twin": {"rmse_mb": {"mean": rmse}}}
    if ret is not None:
        row["twin"]["return"] = {"mean": ret, "ci95": ci}
    if agent:
        row["agent"] = agent
    return row


def test_targets():
    result = {
        "rows": [
            _row("noop", 100.0, ret=-1000.0),
            _row("a", 70.0, "mobiwm", ret=-600.0),
            _row("b", 90.0, "static", ret=-900.0),
            _row("g", 75.0, "gru", ret=-615.0),  # intervals overlap: not beaten
            _row("c", 65.0, "twin", ret=-560.0),
        ]
    }
    t = table2.targets(result)
    assert abs(t["mobiwm_rmse_reduction_vs_noop"] - 0.30) < 1e-12
    assert abs(t["mobiwm_share_of_twin_return_gain"] - 400 / 440) < 1e-12
    assert t["mobiwm_share_ge_90pct"] and t["mobiwm_beats_static"]
    assert not t["mobiwm_beats_gru"] and "mobiwm_beats_rssm" not in t
    result["rows"][-1] = _row("c", 65.0, "twin", ret=-500.0)
    assert not table2.targets(result)["mobiwm_share_ge_90pct"]  # 400 / 500


def test_split_specs_gives_mpc_its_own_worker():
    specs = [("noop", None), ("random", None), ("heuristic", None), ("mpc", None), ("a", "A")]
    groups = table2.split_specs(specs, 2)
    assert groups == [[3], [0, 1, 2, 4]]
    assert sorted(i for g in table2.split_specs(specs, 3) for i in g) == list(range(5))
    assert table2.split_specs(specs[:1], 4) == [[0]]


def test_parallel_judging_equals_serial():
    """Two worker processes give the same rows, in the same order, as one process."""
    from agents.evaluate import evaluate_policies

    specs = [("noop", None), ("random", None)]
    args = (("twin",), 2, 0, None, {"episode_steps": 2}, {})
    serial = evaluate_policies(specs, *args, log=lambda *a: None)
    parallel = table2._judge_parallel(specs, 2, 1, args)
    assert [r["policy"] for r in parallel["rows"]] == ["noop", "random"]
    for a, b in zip(serial["rows"], parallel["rows"], strict=True):
        assert a["twin"]["rmse_mb"]["mean"] == b["twin"]["rmse_mb"]["mean"]
        assert a["twin"]["return"]["mean"] == b["twin"]["return"]["mean"]
    assert parallel["rows"][1]["twin"]["rmse_vs_noop"] == serial["rows"][1]["twin"]["rmse_vs_noop"]


def test_static_fast_recipe_is_the_fast_checkpoint_without_the_actions():
    """Table 2's Static-MobiWM is the shipped fast model's architecture minus what reads actions."""
    import dataclasses
    import json
    import shlex

    from mobiwm_env.config import resolve_checkpoint
    from worldmodel.cli import parse_config
    from worldmodel.train import TrainConfig, model_config

    cfg = parse_config(TrainConfig, shlex.split(table2.TRAIN_COMMANDS["static-fast"])[3:])
    static = dataclasses.asdict(model_config(cfg))
    path = resolve_checkpoint("fast") / "config.json"
    fast = json.loads(path.read_text(encoding="utf-8"))["model_config"]
    action_fields = {"use_actions", "season_actions", "coverage_prior", "coverage_daily_demand"}
    action_fields |= {"coverage_calibrate", "coverage_candidates"}
    assert static["use_actions"] is False and fast["use_actions"] is True
    differ = {k for k in fast if k in static and static[k] != fast[k]}
    assert differ <= action_fields, differ - action_fields
