"""The training script end to end with a tiny budget, and saved policies reloading."""

from __future__ import annotations

import json

import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecNormalize

from agents import train_ppo
from agents.envs import make_sb3_env, make_vector_env
from agents.policies import CellSharedPolicy, TrainedPolicy, shared_policy_kwargs, transfer_policy

TINY = ["--num-envs", "2", "--total-timesteps", "256", "--n-steps", "32", "--batch-size", "64",
        "--n-epochs", "2", "--checkpoint-every", "128", "--eval-runs", "2",
        "--episode-steps", "6", "--eval-baselines", "noop", "heuristic",
        "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, debug_checkpoint):
    out = tmp_path_factory.mktemp("runs") / "ppo-tiny"
    run_dir = train_ppo.main(
        [*TINY, "--lambda-unserved", "2", "--warm-start", "heuristic", "--warm-start-steps", "24",
         "--warm-start-epochs", "2", "--checkpoint", str(debug_checkpoint), "--out", str(out),
         "--periodic-every", "128", "--periodic-runs", "2"]
    )  # fmt: skip
    return run_dir


def test_periodic_judgements_on_the_twin_and_the_model(tiny_run):
    hist = json.loads((tiny_run / "periodic.json").read_text())
    assert hist["steps"] == [128.0, 256.0] and hist["runs"] == 2
    for name in ("twin", "model"):
        for key in ("return", "rmse_mb", "unserved_mb"):
            values = hist[f"{name}_{key}"]
            assert len(values) == 2 and np.isfinite(values).all(), (name, key)
    assert (tiny_run / "periodic.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_periodic_judgements_leave_training_unchanged(tmp_path, debug_checkpoint):
    import io
    import zipfile

    import torch

    args = ["--num-envs", "2", "--total-timesteps", "128", "--n-steps", "32", "--batch-size",
            "64", "--n-epochs", "1", "--checkpoint-every", "0", "--eval-runs", "0", "--no-gif",
            "--episode-steps", "6", "--no-progress", "--checkpoint", str(debug_checkpoint)]  # fmt: skip
    states = []
    for every in ("0", "64"):
        out = tmp_path / f"p{every}"
        train_ppo.main(
            [*args, "--periodic-every", every, "--periodic-runs", "2", "--out", str(out)]
        )
        raw = zipfile.ZipFile(out / "model.zip").read("policy.pth")
        states.append(torch.load(io.BytesIO(raw)))
    assert (tmp_path / "p64" / "periodic.json").is_file()
    assert not (tmp_path / "p0" / "periodic.json").exists()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_train_end_to_end(tiny_run):
    d = tiny_run
    for name in (
        "config.json",
        "model.zip",
        "vecnormalize.pkl",
        "eval.json",
        "eval.md",
        "episode.gif",
    ):
        assert (d / name).is_file(), name
    assert sorted(p.name for p in (d / "checkpoints").iterdir()) == [
        "ppo_128_steps.zip", "ppo_256_steps.zip",
        "ppo_vecnormalize_128_steps.pkl", "ppo_vecnormalize_256_steps.pkl",
    ]  # fmt: skip
    assert list((d / "tb").rglob("events.out.tfevents.*"))
    record = json.loads((d / "config.json").read_text())
    assert record["status"] == "evaluated"
    assert record["label"] == "PPO (MobiWM, from heuristic)"
    ws = record["warm_start"]
    assert ws["controller"] == "heuristic" and ws["env_steps"] == 24 and ws["epochs"] == 2
    assert (d / "warmstart" / "model.zip").is_file()
    assert record["config"]["total_timesteps"] == 256 and record["timesteps"] >= 256
    result = json.loads((d / "eval.json").read_text())
    assert result["env_kwargs"]["lambda_unserved"] == 2.0  # judged with the training objective
    assert "return (Eq. 21 + 2·shortfall)" in (d / "eval.md").read_text()
    labels = [r["label"] for r in result["rows"]]
    assert labels == ["No-op", "Heuristic", "BC of heuristic (before PPO)",
                      "PPO (MobiWM, from heuristic)"]  # fmt: skip
    for row in result["rows"]:
        assert np.isfinite(row["twin"]["rmse_mb"]["mean"]) and row["twin"]["rmse_mb"]["n"] == 2
    assert "| PPO (MobiWM, from heuristic) | twin |" in (d / "eval.md").read_text()
    from PIL import Image

    with Image.open(d / "episode.gif") as gif:
        assert gif.n_frames == 7  # reset + 6 steps


def test_tensorboard_scalars(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for f in (tiny_run / "tb").rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(f))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    for tag in ("charts/imbalance_mb", "charts/l1_to_target", "charts/action_change",
                "charts/steps_per_second", "charts/shortfall_mb", "rollout/ep_rew_mean",
                "eval/rmse_mb", "warmstart/bc_mse", "warmstart/value_mse"):  # fmt: skip
        assert tag in tags, tag


def test_training_inside_the_shield_logs_its_interventions(tmp_path, debug_checkpoint):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "shielded"
    args = ["--num-envs", "2", "--total-timesteps", "32", "--n-steps", "16", "--batch-size",
            "32", "--n-epochs", "1", "--checkpoint-every", "0", "--eval-runs", "0", "--no-gif",
            "--episode-steps", "6", "--no-progress", "--periodic-every", "0",
            "--checkpoint", str(debug_checkpoint), "--shield", "--shield-checkpoint",
            str(debug_checkpoint), "--shield-margin", "0", "--out", str(out)]  # fmt: skip
    train_ppo.main(args)
    scalars: dict[str, list[float]] = {}
    for f in (out / "tb").rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(f))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(e.value for e in acc.Scalars(tag))
    for tag in train_ppo.SHIELD_SCALARS.values():
        assert tag in scalars, tag
    assert all(0.0 <= v <= 1.0 for v in scalars["shield/fraction_applied"])
    assert min(scalars["shield/fraction_applied"]) < 1.0  # random actions get scaled back
    record = json.loads((out / "config.json").read_text())
    assert record["config"]["shield"] is True


def test_saved_policy_reloads_same_actions(tiny_run):
    """``TrainedPolicy`` (model + VecNormalize stats from disk) = the checkpoint's own model."""
    policy = TrainedPolicy(tiny_run)
    venv = make_vector_env("twin", 2, episode_steps=6)
    obs, _ = venv.reset(seed=0)
    vn = VecNormalize.load(str(tiny_run / "vecnormalize.pkl"), make_sb3_env("twin", 2))
    vn.training = False
    model = PPO.load(tiny_run / "model.zip", device="cpu")
    expected, _ = model.predict(vn.normalize_obs(obs), deterministic=True)
    np.testing.assert_array_equal(policy.predict(obs), expected)
    np.testing.assert_array_equal(policy.predict(obs), policy.predict(obs))
    ckpt = TrainedPolicy(tiny_run / "checkpoints" / "ppo_128_steps.zip")
    assert ckpt.vecnormalize is not None


def test_shared_policy_save_reload_and_other_map_size(tmp_path):
    venv = make_sb3_env("twin", 2, episode_steps=2)
    kwargs = shared_policy_kwargs(venv, hidden=16, n_layers=1, n_neighbours=4)
    model = PPO(CellSharedPolicy, venv, n_steps=4, batch_size=8, n_epochs=1,
                policy_kwargs=kwargs, seed=0, device="cpu")  # fmt: skip
    model.learn(8)
    model.save(tmp_path / "model.zip")
    venv.seed(5)
    obs = venv.reset()
    a1, _ = model.predict(obs, deterministic=True)
    a2 = TrainedPolicy(tmp_path / "model.zip").predict(obs)
    np.testing.assert_allclose(a1, a2, atol=1e-6)
    # the same weights on a wider action space (padded map: 64 cells instead of 57)
    wide = make_sb3_env("twin", 2, episode_steps=2, max_cells=64)
    moved = transfer_policy(model, wide)
    wide.seed(5)
    act, _ = moved.predict(wide.reset(), deterministic=True)
    assert act.shape == (2, 64 * 4)
    np.testing.assert_allclose(act[:, : 57 * 4], a1, atol=1e-5)  # padding changes nothing
    # zero-shot on another map (120 cells, another layout): the controller rebuilds itself
    urban = make_vector_env("twin", 2, scenario="urban", episode_steps=2)
    obs_u, _ = urban.reset(seed=1)
    ctrl = TrainedPolicy(tmp_path / "model.zip", env=urban)
    act_u = ctrl.predict(obs_u)
    assert act_u.shape == (2, 120 * 4) and np.isfinite(act_u).all()
    same, _ = transfer_policy(model, make_sb3_env("twin", 2, scenario="urban")).predict(
        obs_u, deterministic=True
    )
    np.testing.assert_allclose(act_u, same, atol=1e-6)
    urban.close()


def test_mlp_policy_with_obs_normalisation_reloads(tmp_path):
    """MlpPolicy + VecNormalize observation statistics: the reloaded policy acts the same."""
    venv = VecNormalize(make_sb3_env("twin", 2, episode_steps=2))
    model = PPO("MlpPolicy", venv, n_steps=4, batch_size=8, n_epochs=1, seed=0, device="cpu")
    model.learn(8)
    model.save(tmp_path / "model.zip")
    venv.save(str(tmp_path / "vecnormalize.pkl"))
    raw = venv.get_original_obs()
    venv.training = False
    expected, _ = model.predict(venv.normalize_obs(raw), deterministic=True)
    np.testing.assert_allclose(TrainedPolicy(tmp_path).predict(raw), expected, atol=1e-6)
