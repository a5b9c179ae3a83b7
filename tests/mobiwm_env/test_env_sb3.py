"""The Stable-Baselines3 VecEnv adapter: conventions, wrappers, a PPO smoke run."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

from mobiwm_env.sb3 import SB3VecEnv, make_sb3_vec_env

TWIN_ID = "MobiWM-LoadBalance-Twin-v0"


def test_adapter_conventions():
    venv = make_sb3_vec_env(TWIN_ID, num_envs=2, episode_steps=2)
    venv.seed(4)
    obs = venv.reset()
    assert obs.shape == (2, *venv.observation_space.shape)
    assert len(venv.reset_infos) == 2 and "traffic" in venv.reset_infos[0]
    first = obs.copy()
    venv.seed(4)
    np.testing.assert_array_equal(venv.reset(), first)  # seeding applies at the next reset
    zero = np.zeros((2, *venv.action_space.shape), np.float32)
    obs, reward, dones, infos = venv.step(zero)
    assert reward.dtype == np.float32 and not dones.any()
    assert "terminal_observation" not in infos[0]
    obs, reward, dones, infos = venv.step(zero)
    assert dones.all()
    for info in infos:
        assert info["TimeLimit.truncated"] is True
        assert info["terminal_observation"].shape == venv.observation_space.shape
        assert info["step"] == 2  # the finished episode's info
        assert not np.array_equal(info["terminal_observation"], obs[0])
    assert venv.get_attr("render_mode") == [None, None]
    assert venv.get_attr("num_envs", indices=[1]) == [2]
    layouts = venv.env_method("obs_layout")
    assert len(layouts) == 2 and "traffic" in layouts[0]
    venv.set_attr("custom_flag", 7)
    assert venv.get_attr("custom_flag") == [7, 7]
    assert venv.env_is_wrapped(gym.Wrapper) == [False, False]
    venv.set_options({"start_slot": 900})
    venv.reset()
    assert [i["slot"] for i in venv.reset_infos] == [900, 900]
    venv.set_options([{"start_slot": 900}, {"start_slot": 1000}])
    venv.reset()
    assert [i["slot"] for i in venv.reset_infos] == [900, 1000]
    venv.close()


def test_adapter_needs_same_step():
    envs = gym.make_vec(TWIN_ID, num_envs=1)
    with pytest.raises(ValueError, match="SAME_STEP"):
        SB3VecEnv(envs)


def test_ppo_smoke_under_vecmonitor_and_vecnormalize(debug_checkpoint):
    venv = make_sb3_vec_env(
        "MobiWM-LoadBalance-v0", num_envs=4, checkpoint=str(debug_checkpoint), episode_steps=8
    )
    venv = VecNormalize(VecMonitor(venv))
    model = PPO("MlpPolicy", venv, n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=256)
    assert model.num_timesteps >= 256
    monitor = venv.venv
    assert monitor.episode_count >= 4  # episodes of 8 steps finished in every sub-env
    assert np.isfinite(venv.obs_rms.mean).all()
    venv.close()
