"""Bad input gives clear errors; any finite action keeps parameters in bounds (hypothesis)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mobiwm_env import EnvConfig
from mobiwm_env.env import LoadBalanceEnv
from mobiwm_env.spaces import validate_actions

TWIN_ID = "MobiWM-LoadBalance-Twin-v0"
WM_ID = "MobiWM-LoadBalance-v0"
N = 57


@pytest.fixture(scope="module")
def twin_env():
    env = gym.make(TWIN_ID, episode_steps=1000)
    env.reset(seed=0)
    yield env
    env.close()


def _in_bounds(env, params: np.ndarray) -> bool:
    low, high = env.unwrapped.scenario.bounds.low_high()
    return bool(np.all(params >= low - 1e-9) and np.all(params <= high + 1e-9))


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(arrays(np.float32, (N * 4,), elements=st.floats(-1, 1, width=32)))
def test_any_finite_action_keeps_params_in_bounds(twin_env, action):
    _, reward, _, _, info = twin_env.step(action)
    assert _in_bounds(twin_env, info["params"])
    assert np.isfinite(reward)
    assert 0.0 <= info["action_change"] <= 1.0 + 1e-9


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, (3, 8), elements=st.floats(-1e6, 1e6)))
def test_out_of_range_finite_actions_are_clipped(action):
    out = validate_actions(action, (3, 8))
    np.testing.assert_array_equal(out, np.clip(action, -1, 1))


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float64, (8,), elements=st.floats(-1, 1)),
    st.integers(0, 7),
    st.sampled_from([np.nan, np.inf, -np.inf]),
)
def test_non_finite_actions_raise(action, index, bad):
    action = action.copy()
    action[index] = bad
    with pytest.raises(ValueError, match=f"non-finite.*cell {index // 4}, parameter {index % 4}"):
        validate_actions(action, (8,))


def test_clipping_in_the_env(twin_env):
    before = twin_env.unwrapped.params
    _, _, _, _, info = twin_env.step(np.full(N * 4, 7.0, np.float32))
    ref = before.copy()
    ref[:, 0] += 1.0  # clipped to +1 → +max_step
    low, high = twin_env.unwrapped.scenario.bounds.low_high()
    np.testing.assert_allclose(info["params"][:, 0], np.minimum(ref[:, 0], high[0]))
    assert _in_bounds(twin_env, info["params"])


@pytest.mark.parametrize(
    "action, match",
    [
        (np.full(N * 4, np.nan, np.float32), "non-finite"),
        (np.full(N * 4, np.inf, np.float32), "non-finite"),
        (np.zeros(N * 4 - 1, np.float32), "expected shape"),
        (np.zeros((N, 4), np.float32), "expected shape"),
        (np.array(["a"] * (N * 4)), "dtype"),
        (np.zeros(N * 4, dtype=complex), "dtype"),
    ],
)
def test_bad_actions_raise(twin_env, action, match):
    with pytest.raises(ValueError, match=match):
        twin_env.unwrapped.step(action)


def test_bad_vector_actions_raise():
    envs = gym.make_vec(TWIN_ID, num_envs=2)
    envs.reset(seed=0)
    bad = np.zeros((2, N * 4), np.float32)
    bad[1, 5] = np.nan
    with pytest.raises(ValueError, match=r"cell 1, parameter 1, env 1"):
        envs.step(bad)
    with pytest.raises(ValueError, match="expected shape"):
        envs.step(np.zeros((3, N * 4), np.float32))
    envs.close()


def test_unknown_scenario_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown scenario 'atlantis'.*hex57.*suburb.*urban"):
        gym.make(TWIN_ID, scenario="atlantis")


def test_unknown_kwarg_and_bad_values():
    with pytest.raises(ValueError, match="unknown environment keyword"):
        gym.make(TWIN_ID, max_steps=3)
    with pytest.raises(ValueError, match="max_step"):
        EnvConfig(max_step=(1.0, 0.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="unknown parameter"):
        EnvConfig(max_step={"tilt": 1.0})
    assert EnvConfig(max_step={"azimuth_deg": 5.0}).max_step == (1.0, 5.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="warmup_slots"):
        EnvConfig(history_slots=20, warmup_slots=16)
    with pytest.raises(ValueError, match="compile must be a bool"):
        EnvConfig(compile="yes")
    with pytest.raises(ValueError, match="render_mode"):
        LoadBalanceEnv(render_mode="ascii", dynamics="twin")


def test_missing_checkpoint_names_the_path(tmp_path):
    path = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        gym.make(WM_ID, checkpoint=str(path))


def test_corrupt_checkpoint_names_the_path(debug_checkpoint, tmp_path):
    import shutil

    bad = tmp_path / "corrupt"
    shutil.copytree(debug_checkpoint, bad)
    (bad / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="corrupt"):
        gym.make(WM_ID, checkpoint=str(bad))
    bad_json = tmp_path / "badjson"
    shutil.copytree(debug_checkpoint, bad_json)
    (bad_json / "config.json").write_text("{ nope")
    with pytest.raises(ValueError, match="badjson"):
        gym.make(WM_ID, checkpoint=str(bad_json))


def test_model_history_longer_than_warmup(debug_checkpoint):
    with pytest.raises(ValueError, match="warmup_slots"):
        gym.make(WM_ID, checkpoint=str(debug_checkpoint), warmup_slots=4, history_slots=4)


def test_step_before_reset_raises():
    env = gym.make(TWIN_ID)
    with pytest.raises(Exception, match="reset"):
        env.step(np.zeros(N * 4, np.float32))


def test_demand_preset_of_named_scenarios() -> None:
    """Named scenarios run on the demand the shipped checkpoints were trained on by default."""
    assert EnvConfig().demand == "realistic"
    with pytest.raises(ValueError, match="demand must be None or one of"):
        EnvConfig(demand="bumpy")
    smooth = gym.make(TWIN_ID, episode_steps=2, demand="smooth")
    real = gym.make(TWIN_ID, episode_steps=2)
    assert smooth.unwrapped.scenario.demand == "smooth"
    assert real.unwrapped.scenario.demand == "realistic"
    # same map, other demand: the twin's offered demand differs, the network does not
    a, b = smooth.unwrapped.scenario, real.unwrapped.scenario
    np.testing.assert_array_equal(a.cell_site, b.cell_site)
    _, info_s = smooth.reset(seed=0)
    _, info_r = real.reset(seed=0)
    assert not np.allclose(info_s["traffic"], info_r["traffic"])
    smooth.close()
    real.close()
