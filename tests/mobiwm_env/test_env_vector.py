"""Vector env: native batching, equivalence with the single env, both autoreset modes."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from mobiwm_env.vector import LoadBalanceVectorEnv


def test_make_vec_is_native_vector_env(env_spec):
    env_id, kwargs = env_spec
    envs = gym.make_vec(env_id, num_envs=3, **kwargs)
    assert isinstance(envs.unwrapped, LoadBalanceVectorEnv)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert envs.single_action_space.shape == (57 * 4,)
    obs, info = envs.reset(seed=0)
    assert obs.shape == (3, *envs.single_observation_space.shape)
    assert envs.observation_space.contains(obs)
    assert info["traffic"].shape == (3, 4, 57) and info["_traffic"].all()
    obs, reward, terminated, truncated, info = envs.step(envs.action_space.sample())
    assert reward.shape == terminated.shape == truncated.shape == (3,)
    assert info["params"].shape == (3, 57, 4)
    envs.close()


def test_num_envs_1_matches_single_env(env_spec):
    env_id, kwargs = env_spec
    env = gym.make(env_id, episode_steps=2, **kwargs)
    envs = gym.make_vec(env_id, num_envs=1, episode_steps=2, **kwargs)
    rng = np.random.default_rng(3)
    o1, i1 = env.reset(seed=123)
    o2, i2 = envs.reset(seed=123)
    np.testing.assert_array_equal(o1, o2[0])
    np.testing.assert_array_equal(i1["traffic"], i2["traffic"][0])
    for _ in range(5):  # crosses an episode end: the autoreset draws the same next episode
        a = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        o1, r1, _, t1, i1 = env.step(a)
        o2, r2, _, t2, i2 = envs.step(a[None])
        if t1:
            np.testing.assert_array_equal(o1, o2[0])
            assert r1 == r2[0] and t2[0]
            o1, i1 = env.reset()
            o2, _, _, t2, i2 = envs.step(a[None])  # NEXT_STEP: this step resets
            assert not t2[0]
        np.testing.assert_array_equal(o1, o2[0])
        np.testing.assert_array_equal(i1["traffic"], i2["traffic"][0])
    env.close()
    envs.close()


def test_sub_env_i_equals_single_env_seeded_seed_plus_i():
    envs = gym.make_vec("MobiWM-LoadBalance-Twin-v0", num_envs=3)
    obs, _ = envs.reset(seed=10)
    env = gym.make("MobiWM-LoadBalance-Twin-v0")
    for i in range(3):
        o, _ = env.reset(seed=10 + i)
        np.testing.assert_array_equal(o, obs[i])
    envs.close()
    env.close()


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_autoreset(env_spec, mode):
    env_id, kwargs = env_spec
    envs = gym.make_vec(env_id, num_envs=2, episode_steps=2, autoreset_mode=mode, **kwargs)
    assert envs.metadata["autoreset_mode"] == mode
    envs.reset(seed=0)
    # desynchronise: sub-env 1 starts a fresh episode one step later
    envs.step(envs.action_space.sample())
    envs.reset(options={"reset_mask": np.array([False, True])})
    zero = np.zeros(envs.action_space.shape, np.float32)
    obs, reward, terminated, truncated, info = envs.step(zero)
    assert truncated.tolist() == [True, False] and not terminated.any()
    if mode == AutoresetMode.SAME_STEP:
        assert info["_final_obs"].tolist() == [True, False]
        assert info["final_obs"][0].shape == envs.single_observation_space.shape
        assert info["final_info"]["step"][0] == 2 and info["final_info"]["_step"][0]
        assert info["step"].tolist() == [0, 1]  # sub-env 0 already holds its new episode
        assert not np.array_equal(info["final_obs"][0], obs[0])
        obs, reward, _, truncated, info = envs.step(zero)
        assert truncated.tolist() == [False, True]
        assert info["step"].tolist() == [1, 0]
    else:
        assert "final_obs" not in info
        assert info["step"].tolist() == [2, 1]
        obs, reward, _, truncated, info = envs.step(zero)  # sub-env 0 resets now
        assert reward[0] == 0.0 and not truncated[0] and truncated[1]
        assert info["step"].tolist() == [0, 2]
        obs, reward, _, truncated, info = envs.step(zero)  # sub-env 1 resets now
        assert reward[1] == 0.0 and info["step"].tolist() == [1, 0]
    envs.close()


def test_bad_autoreset_mode():
    with pytest.raises(ValueError, match="autoreset_mode"):
        gym.make_vec("MobiWM-LoadBalance-Twin-v0", num_envs=2, autoreset_mode="Sometimes")
