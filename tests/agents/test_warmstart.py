"""Behaviour-cloning warm start: the returns it fits, that it really clones the controller, and
its input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

from agents.baselines import make_controller
from agents.envs import make_sb3_env
from agents.policies import CellSharedPolicy, shared_policy_kwargs
from agents.train_ppo import PPOConfig
from agents.warmstart import _heads, collect, discounted_returns, warm_start


def test_discounted_returns_by_hand():
    rewards = np.array([[1.0, 1.0], [2.0, 0.0], [3.0, 5.0]])
    dones = np.array([[False, True], [True, False], [False, False]])
    boot = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 0.0]])  # env 0 cut by the time limit at t=1
    g = discounted_returns(rewards, dones, 0.5, boot, last_value=np.array([4.0, 0.0]))
    # env 0: G2 = 3 + .5·4 = 5; G1 = 2 + .5·10 (bootstrap, no carry-over) = 7; G0 = 1 + 3.5
    np.testing.assert_allclose(g[:, 0], [4.5, 7.0, 5.0])
    # env 1: terminated at t=0 without bootstrap; then 0 + .5·5 and 5
    np.testing.assert_allclose(g[:, 1], [1.0, 2.5, 5.0])


def _learner(debug_checkpoint, seed=0):
    venv = make_sb3_env("world_model", 2, debug_checkpoint, episode_steps=6)
    venv = VecNormalize(VecMonitor(venv), norm_obs=False, gamma=0.8)
    kwargs = shared_policy_kwargs(venv, hidden=16, n_layers=1, n_neighbours=4)
    kwargs["log_std_init"] = -1.0
    model = PPO(CellSharedPolicy, venv, n_steps=6, batch_size=12, gamma=0.8,
                policy_kwargs=kwargs, seed=seed, device="cpu")  # fmt: skip
    return model, venv


def test_collect_labels_and_cuts(debug_checkpoint):
    model, venv = _learner(debug_checkpoint)
    ctrl = make_controller("heuristic", venv)
    demos = collect(venv, ctrl, steps=24, noise_std=0.3, seed=0)
    assert demos.obs.shape[:2] == (12, 2) and demos.actions.shape == (12, 2, 57 * 4)
    # labels are the controller's noise-free actions at the visited states
    np.testing.assert_allclose(demos.actions[3], ctrl.predict(demos.obs[3]), atol=1e-6)
    assert np.abs(demos.actions).max() <= 1.0 and np.abs(demos.actions).mean() > 0.01
    # episodes of 6 steps end by the time limit at t = 5 and 11, with their last observation
    assert demos.dones[[5, 11]].all() and demos.dones.sum() == 4
    assert (demos.truncated == demos.dones).all()
    assert np.abs(demos.terminal_obs[5]).sum() > 0 and np.abs(demos.terminal_obs[4]).sum() == 0


def test_warm_start_clones_the_heuristic(debug_checkpoint):
    model, venv = _learner(debug_checkpoint)
    ctrl = make_controller("heuristic", venv)
    venv.seed(7)
    probe = collect(venv, ctrl, steps=24, noise_std=0.0, seed=1)  # held-out states
    obs, labels = probe.obs.reshape(-1, probe.obs.shape[-1]), probe.actions.reshape(24, -1)

    def policy_mse() -> float:
        act, _ = model.predict(obs, deterministic=True)
        return float(np.mean((act - labels) ** 2))

    before = policy_mse()
    report = warm_start(
        model, venv, "heuristic", steps=96, epochs=30, seed=0, learning_rate=3e-3, batch_size=12
    )
    after = policy_mse()
    assert report.env_steps == 96 and report.epochs == 30
    assert report.bc_mse_last < 0.5 * report.bc_mse_first
    assert after < 0.5 * before, (before, after)
    assert np.isfinite(report.value_mse_last)
    # the exploration noise is left as configured
    np.testing.assert_allclose(model.policy.log_std.detach().numpy(), -1.0)


def test_warm_start_rejects_bad_input(debug_checkpoint):
    model, venv = _learner(debug_checkpoint)
    with pytest.raises(ValueError, match="unknown controller 'mpc'"):
        warm_start(model, venv, "mpc", steps=8, epochs=1, seed=0)
    with pytest.raises(ValueError, match="steps >= 1"):
        warm_start(model, venv, "heuristic", steps=0, epochs=1, seed=0)
    with pytest.raises(ValueError, match="warm_start must be"):
        PPOConfig(warm_start="random")
    with pytest.raises(ValueError, match="warm_start_steps"):
        PPOConfig(warm_start="heuristic", warm_start_epochs=0)


def test_heads_match_the_policy(debug_checkpoint):
    """One pass through the extractor gives the policy's own Gaussian mean and value."""
    model, venv = _learner(debug_checkpoint)
    obs = torch.as_tensor(venv.reset(), dtype=torch.float32)
    with torch.no_grad():
        mean, value = _heads(model.policy, obs)
        torch.testing.assert_close(mean, model.policy.get_distribution(obs).distribution.mean)
        torch.testing.assert_close(value, model.policy.predict_values(obs).squeeze(-1))


def test_warm_start_with_mlp_policy_and_normalised_observations(debug_checkpoint):
    """The MlpPolicy path: observations go through the VecNormalize statistics."""
    venv = make_sb3_env("world_model", 2, debug_checkpoint, episode_steps=6)
    venv = VecNormalize(VecMonitor(venv), norm_obs=True, gamma=0.8)
    model = PPO("MlpPolicy", venv, n_steps=6, batch_size=12, gamma=0.8, seed=0, device="cpu")
    report = warm_start(model, venv, "heuristic", steps=48, epochs=20, seed=0, batch_size=12)
    assert venv.obs_rms.count > 1  # the demonstrations warmed the statistics
    assert report.bc_mse_last < report.bc_mse_first and np.isfinite(report.value_mse_last)
