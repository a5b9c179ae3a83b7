"""Per-cell PPO (agents.cell_ppo): the per-cell ratio, per-cell credit and GAE, determinism."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch
from stable_baselines3.common.buffers import RolloutBuffer

from agents import train_ppo
from agents.cell_ppo import CellPPO, CellRolloutBuffer
from agents.train_ppo import PPOConfig, build_model, build_venv


def _model(ckpt, credit: str, **kw) -> CellPPO:
    cfg = PPOConfig(
        checkpoint=str(ckpt), num_envs=2, n_steps=8, batch_size=8, n_epochs=1,
        shared_hidden=8, shared_layers=1, episode_steps=6, credit=credit, threads=1,
        eval_runs=0, periodic_every=0, checkpoint_every=0, progress=False, **kw,
    )  # fmt: skip
    model = build_model(cfg, build_venv(cfg), None)
    assert isinstance(model, CellPPO)
    return model


def test_team_credit_per_cell_log_probs_sum_to_the_joint_one(debug_checkpoint):
    model = _model(debug_checkpoint, "team")
    model.learn(16)  # one rollout of 2 envs x 8 steps, one update
    # the buffer of the last rollout, and the policy that collected it (before its update):
    # recompute with a fresh rollout and no update
    model.policy.set_training_mode(False)
    from stable_baselines3.common.callbacks import CallbackList

    cb = CallbackList([])
    cb.init_callback(model)
    model.collect_rollouts(model.env, cb, model.rollout_buffer, model.n_steps)
    joint = model.rollout_buffer.log_probs.copy().reshape(-1)  # [n_steps, n_envs] → flat order
    per_cell = model._old_cell_log_prob()  # flattens the buffer (env-major)
    flat_joint = model.rollout_buffer.log_probs.reshape(-1)
    np.testing.assert_allclose(per_cell.sum(1).numpy(), flat_joint, rtol=1e-4, atol=1e-3)
    assert joint.shape == flat_joint.shape
    assert model.logger.name_to_value["train/clip_fraction"] >= 0.0


def test_cell_buffer_gae_is_sb3_gae_per_cell():
    from gymnasium import spaces

    rng = np.random.default_rng(0)
    obs_space = spaces.Box(-1, 1, (3,), np.float32)
    act_space = spaces.Box(-1, 1, (8,), np.float32)  # 2 cells
    s, e, m = 5, 2, 2
    cell = CellRolloutBuffer(s, obs_space, act_space, gamma=0.9, gae_lambda=0.8, n_envs=e,
                             n_cells=m)  # fmt: skip
    singles = [RolloutBuffer(s, obs_space, act_space, gamma=0.9, gae_lambda=0.8, n_envs=e)
               for _ in range(m)]  # fmt: skip
    starts = rng.random((s, e)) < 0.3
    for t in range(s):
        r, v, lp = rng.normal(size=(e, m)), rng.normal(size=(e, m)), rng.normal(size=(e, m))
        obs, act = rng.normal(size=(e, 3)), rng.normal(size=(e, 8))
        cell.add(obs, act, r, starts[t], torch.as_tensor(v), torch.as_tensor(lp))
        for j, b in enumerate(singles):
            b.add(obs, act, r[:, j], starts[t], torch.as_tensor(v[:, j]), torch.as_tensor(lp[:, j]))
    last, dones = rng.normal(size=(e, m)), np.array([True, False])
    cell.compute_returns_and_advantage(torch.as_tensor(last), dones)
    for j, b in enumerate(singles):
        b.compute_returns_and_advantage(torch.as_tensor(last[:, j]), dones)
        np.testing.assert_allclose(cell.advantages[..., j], b.advantages, rtol=1e-5)
        np.testing.assert_allclose(cell.returns[..., j], b.returns, rtol=1e-5)
    sample = next(cell.get(3))  # flattens [steps, envs, cells] → [steps * envs, cells]
    assert sample.advantages.shape == (3, m) and sample.old_log_prob.shape == (3, m)


def test_neighbourhood_credit_rewards(debug_checkpoint):
    model = _model(debug_checkpoint, "neighbourhood", credit_neighbours=2)
    m = model.n_cells
    assert model.credit_matrix.shape == (m, m)
    np.testing.assert_array_equal(np.diag(model.credit_matrix), 1.0)
    assert (model.credit_matrix.sum(1) == 3).all()  # itself and its 2 nearest cells
    own = np.arange(m, dtype=float)
    infos = [{"cell_reward": own}, {"cell_reward": -own}]
    model.reward_rms.var = np.array(4.0)  # fixed scale to check the formula
    model.reward_rms.count = 1e12  # (its update then barely moves it)
    got = model._cell_rewards(infos, np.array([False, False]))
    expected = np.stack([model.credit_matrix @ own, -(model.credit_matrix @ own)])
    np.testing.assert_allclose(got, expected / 2.0, rtol=1e-4)
    model.learn(16)  # a rollout and an update run end to end
    assert model.rollout_buffer.advantages.shape == (16, m)
    with pytest.raises(KeyError, match="cell_reward"):
        model._cell_rewards([{}, {}], np.array([False, False]))


def test_config_rejects_bad_credit():
    with pytest.raises(ValueError, match="credit"):
        PPOConfig(credit="everyone")
    with pytest.raises(ValueError, match="shared"):
        PPOConfig(credit="neighbourhood", policy="mlp")
    with pytest.raises(ValueError, match="ratio"):
        PPOConfig(ratio="both")


def _weights(run_dir) -> dict[str, torch.Tensor]:
    raw = zipfile.ZipFile(run_dir / "model.zip").read("policy.pth")
    return torch.load(io.BytesIO(raw))


@pytest.mark.parametrize("credit", ["team", "neighbourhood"])
def test_same_seed_same_policy(tmp_path, debug_checkpoint, credit):
    args = ["--num-envs", "2", "--total-timesteps", "64", "--n-steps", "16", "--batch-size",
            "16", "--n-epochs", "2", "--checkpoint-every", "0", "--eval-runs", "0", "--no-gif",
            "--episode-steps", "6", "--no-progress", "--periodic-every", "0", "--threads", "1",
            "--shared-hidden", "8", "--credit", credit, "--checkpoint", str(debug_checkpoint)]  # fmt: skip
    runs = {}
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        runs[name] = _weights(
            train_ppo.main([*args, "--seed", seed, "--out", str(tmp_path / name)])
        )
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert not all(torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])
