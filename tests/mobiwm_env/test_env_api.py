"""Single-env API: checkers, spaces, reward (Eq. 21 by hand), episodes, determinism."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from mobiwm_env import TWIN_ID, obs_layout, unflatten_obs
from mobiwm_env import WORLD_MODEL_ID as WM_ID
from mobiwm_env.config import DEFAULT_MAX_STEP
from mobiwm_env.dynamics import load_scenario
from worldmodel.twin.scenario import AZIMUTH


def test_checkers_pass(env_spec):
    env_id, kwargs = env_spec
    env = gym.make(env_id, **kwargs)
    check_env(env.unwrapped, skip_render_check=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # SB3's checker reports problems as warnings
        sb3_check_env(env.unwrapped, warn=True)
    env.close()


def test_spaces_and_layout(env_spec):
    env_id, kwargs = env_spec
    env = gym.make(env_id, episode_steps=2, **kwargs)
    n = load_scenario("hex57").n_cells
    assert env.action_space.shape == (n * 4,)
    assert env.action_space.dtype == np.float32
    layout = obs_layout(n, 8)
    assert env.unwrapped.obs_layout() == layout
    assert layout["time"].stop == env.observation_space.shape[0]
    obs, info = env.reset(seed=3)
    blocks = unflatten_obs(obs, n, 8)
    assert blocks["traffic"].shape == (n, 8)
    assert blocks["params"].shape == (n, 5)
    assert np.all(blocks["mask"] == 1.0)
    assert np.all(np.abs(blocks["params"]) <= 1.0)
    # the newest traffic feature is log1p(traffic / scale) of the last reported slot
    scale = env.unwrapped.core.traffic_scale_mb
    np.testing.assert_allclose(
        blocks["traffic"][:, -1], np.log1p(info["traffic"][-1] / scale), rtol=1e-5, atol=1e-6
    )
    slot = info["slot"]
    sod = 2 * np.pi * (slot % 96) / 96
    np.testing.assert_allclose(blocks["time"][:2], [np.sin(sod), np.cos(sod)], atol=1e-6)
    assert set(info) >= {"traffic", "target", "params", "imbalance", "slot", "step"}
    assert ("unserved" in info) == (env_id == TWIN_ID)
    env.close()


def test_reward_matches_eq21_by_hand(env_spec):
    env_id, kwargs = env_spec
    lam = 2.5
    env = gym.make(env_id, lambda_delta=lam, **kwargs)
    sc = env.unwrapped.scenario
    _, info = env.reset(seed=11)
    rng = np.random.default_rng(0)
    for _ in range(2):
        before = info["params"]
        action = rng.uniform(-1.2, 1.2, env.action_space.shape).astype(np.float32)
        _, reward, terminated, truncated, info = env.step(action)
        assert not terminated and not truncated
        traffic, target = info["traffic"], info["target"]
        assert traffic.shape == target.shape == (4, sc.n_cells)
        share = sc.cell_capacity / sc.cell_capacity.sum()
        np.testing.assert_allclose(target, traffic.sum(1, keepdims=True) * share, rtol=1e-9)
        imbalance = np.abs(traffic - target).sum()
        np.testing.assert_allclose(info["imbalance"], imbalance, rtol=1e-9)
        diff = info["params"] - before
        diff[:, AZIMUTH] = (diff[:, AZIMUTH] + 180) % 360 - 180
        delta = np.mean(np.abs(diff) / np.asarray(DEFAULT_MAX_STEP))
        np.testing.assert_allclose(info["action_change"], delta, rtol=1e-9)
        expected = -imbalance / target.mean() - lam * delta
        assert reward == pytest.approx(expected, rel=1e-9)
    env.close()


def test_user_target_array(env_spec):
    env_id, kwargs = env_spec
    n = load_scenario("hex57").n_cells
    table = np.tile(np.linspace(50.0, 500.0, n), (96, 1))  # a daily [T, N] target
    table[::2] *= 2.0
    env = gym.make(env_id, target=table, lambda_delta=0.0, **kwargs)
    _, info = env.reset(seed=0, options={"start_slot": 700})
    _, reward, _, _, info = env.step(np.zeros(n * 4, np.float32))
    rows = (700 + np.arange(4)) % 96
    np.testing.assert_allclose(info["target"], table[rows])
    expected = -np.abs(info["traffic"] - table[rows]).sum() / table[rows].mean()
    assert reward == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="target"):
        gym.make(env_id, target=np.ones(n + 1), **kwargs)
    env.close()


def test_episode_truncates_never_terminates(env_spec):
    env_id, kwargs = env_spec
    env = gym.make(env_id, episode_steps=3, **kwargs)
    env.reset(seed=1)
    flags = []
    for _ in range(3):
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        flags.append((terminated, truncated))
    assert flags == [(False, False), (False, False), (False, True)]
    assert info["step"] == 3
    env.close()


def test_same_seed_same_episode(env_spec):
    env_id, kwargs = env_spec
    runs = []
    for _ in range(2):
        env = gym.make(env_id, episode_steps=3, **kwargs)
        env.action_space.seed(5)
        obs, _ = env.reset(seed=42)
        trace = [obs]
        for _ in range(3):
            obs, r, *_ = env.step(env.action_space.sample())
            trace += [obs, np.array([r])]
        obs, _ = env.reset()  # unseeded reset continues the seeded stream
        runs.append([*trace, obs])
        env.close()
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_backends_start_from_identical_states(debug_checkpoint):
    wm = gym.make(WM_ID, checkpoint=str(debug_checkpoint))
    tw = gym.make(TWIN_ID)
    for seed, options in ((7, None), (8, {"start_slot": 1000, "randomize_params": False})):
        o1, i1 = wm.reset(seed=seed, options=options)
        o2, i2 = tw.reset(seed=seed, options=options)
        np.testing.assert_array_equal(o1, o2)
        for key in ("traffic", "params", "slot", "imbalance"):
            np.testing.assert_array_equal(i1[key], i2[key])
    assert wm.observation_space == tw.observation_space
    assert wm.action_space == tw.action_space
    wm.close()
    tw.close()


def test_reset_options():
    env = gym.make(TWIN_ID)
    sc = env.unwrapped.scenario
    params = sc.init_params.copy()
    params[:, 0] = 40.0
    _, info = env.reset(seed=0, options={"start_slot": 800, "params": params})
    assert info["slot"] == 800
    np.testing.assert_allclose(info["params"], params)  # given params: no randomisation
    _, info = env.reset(seed=0, options={"start_slot": 800})
    assert not np.allclose(info["params"], sc.init_params)  # randomised by default
    _, info = env.reset(seed=0, options={"start_slot": 800, "randomize_params": False})
    np.testing.assert_allclose(info["params"], sc.init_params)
    with pytest.raises(ValueError, match="unknown reset option"):
        env.reset(options={"start": 3})
    with pytest.raises(ValueError, match="start_slot"):
        env.reset(options={"start_slot": 3})
    with pytest.raises(ValueError, match="outside the scenario bounds"):
        bad = params.copy()
        bad[0, 0] = 99.0
        env.reset(options={"params": bad})
    env.close()


def test_random_starts_on_step_boundaries():
    env = gym.make(TWIN_ID, start_weeks=2)
    slots = {env.reset(seed=s)[1]["slot"] for s in range(6)}
    assert all(s % 4 == 0 and 672 <= s < 3 * 672 for s in slots)
    assert len(slots) > 1
    env.close()


def test_padding_shares_one_space_across_maps():
    urban = gym.make(TWIN_ID, scenario="urban", max_cells=128, episode_steps=2)
    suburb = gym.make(TWIN_ID, scenario="suburb", max_cells=128, episode_steps=2)
    assert urban.observation_space == suburb.observation_space
    assert urban.action_space == suburb.action_space == gym.spaces.Box(-1, 1, (512,), np.float32)
    n = suburb.unwrapped.scenario.n_cells
    obs, _ = suburb.reset(seed=0)
    blocks = unflatten_obs(obs, 128, 8)
    assert np.all(blocks["mask"][:n] == 1) and np.all(blocks["mask"][n:] == 0)
    assert np.all(blocks["traffic"][n:] == 0) and np.all(blocks["params"][n:] == 0)
    # padded cells' actions are ignored
    before = suburb.unwrapped.params
    action = np.zeros(512, np.float32)
    action[4 * n :] = 1.0
    _, _, _, _, info = suburb.step(action)
    np.testing.assert_array_equal(info["params"], before)
    assert info["action_change"] == 0.0
    with pytest.raises(ValueError, match="max_cells"):
        gym.make(TWIN_ID, scenario="urban", max_cells=10)
    urban.close()
    suburb.close()


def test_shortfall_is_the_twins_unserved_traffic_and_enters_the_reward(env_spec):
    env_id, kwargs = env_spec
    lam_u = 1.5
    env = gym.make(env_id, lambda_delta=0.0, lambda_unserved=lam_u, **kwargs)
    core = env.unwrapped.core
    _, info = env.reset(seed=5)
    assert info["shortfall"].shape == (4,)
    rng = np.random.default_rng(1)
    for _ in range(2):
        action = rng.uniform(-1.0, 1.0, env.action_space.shape).astype(np.float32)
        _, reward, _, _, info = env.step(action)
        slots = info["slot"] - 4 + np.arange(4)
        if env_id == TWIN_ID:  # the demand itself
            demand = core.source.twin.demand.density_many(slots).astype(np.float64).sum(1)
        else:  # the model's no-change reference (mobiwm_env.reference)
            k = slots - core.episode_start[0]
            demand = core.reference.get(core.episode_start[:1])[0, k]
        np.testing.assert_allclose(
            info["shortfall"], np.maximum(demand - info["traffic"].sum(1), 0.0), rtol=1e-9
        )
        if env_id == TWIN_ID:  # exact on the twin: offered = carried + unserved
            np.testing.assert_allclose(info["shortfall"], info["unserved"], rtol=1e-4, atol=1e-2)
        target = info["target"]
        expected = -(np.abs(info["traffic"] - target).sum() + lam_u * info["shortfall"].sum())
        assert reward == pytest.approx(expected / target.mean(), rel=1e-9)
        assert info["cell_reward"].shape == (core.n_cells,)
        assert info["cell_reward"].sum() == pytest.approx(reward, rel=1e-9)
    with pytest.raises(ValueError, match="lambda_unserved"):
        gym.make(env_id, lambda_unserved=-1.0, **kwargs)
    env.close()


def test_world_model_shortfall_is_calibrated_to_the_twins_served_share():
    """``shortfall_reference="calibrated"``: keeping its parameters for the first step, the
    world model leaves exactly the share of the (scaled) demand unserved that the twin left over
    the warm-up's last day."""
    env = gym.make(
        "MobiWM-LoadBalance-v0",
        checkpoint="fast",
        randomize_params=False,
        shortfall_reference="calibrated",
    )
    core = env.unwrapped.core
    _, info = env.reset(seed=3)
    warm_share = info["shortfall"].sum() / (info["shortfall"].sum() + info["traffic"].sum())
    assert 0.0 < core.served_ratio[0] <= 1.0 and core.demand_scale[0] != 1.0
    _, _, _, _, info = env.step(np.zeros(env.action_space.shape, np.float32))
    slots = info["slot"] - 4 + np.arange(4)
    demand = core.source.twin.demand.density_many(slots).astype(np.float64).sum(1)
    carried = info["traffic"].sum()
    assert core.demand_scale[0] * demand.sum() * core.served_ratio[0] == pytest.approx(
        carried, rel=1e-9
    )
    assert abs(1 - core.served_ratio[0] - warm_share) < 0.05  # the last warm-up hour is typical
    env.close()
    raw = gym.make("MobiWM-LoadBalance-v0", checkpoint="fast", shortfall_reference="demand")
    raw.reset(seed=3)
    assert raw.unwrapped.core.demand_scale[0] == 1.0 and raw.unwrapped.core.reference is None
    raw.close()
    with pytest.raises(ValueError, match="shortfall_reference"):
        gym.make("MobiWM-LoadBalance-v0", shortfall_reference="yes")


def test_world_model_no_change_shortfall_is_the_twins_unserved_traffic():
    """The default reference: a world-model episode that keeps the base parameters carries
    exactly its reference rollout, so its shortfall is the twin's unserved traffic under those
    parameters, slot by slot; other actions are scored against the same reference, references
    are computed once per start slot, and a twin episode's unserved traffic is of that size."""
    kw = {"randomize_params": False, "episode_steps": 3}
    auto = gym.make("MobiWM-LoadBalance-v0", checkpoint="fast", **kw)  # λ_U = 0: no reference
    assert auto.unwrapped.core.reference is None and auto.unwrapped.core.config.shortfall_mode == (
        "calibrated"
    )
    auto.close()
    env = gym.make("MobiWM-LoadBalance-v0", checkpoint="fast", lambda_unserved=2.0, **kw)
    core = env.unwrapped.core
    _, info = env.reset(seed=3)
    start = int(info["slot"])
    length = core.offered.shape[1]
    assert length == 12 and start in core.reference.table and core.demand_scale[0] == 1.0
    known = len(core.reference)  # (shared by every core of this checkpoint, map and length)
    base = core.scenario.init_params
    unserved = core.source.get(start + length, base, core.active).unserved[-length:]
    short = []
    for _ in range(3):
        _, _, _, _, info = env.step(np.zeros(env.action_space.shape, np.float32))
        short.append(info["shortfall"])
    np.testing.assert_allclose(np.concatenate(short), unserved, rtol=1e-5, atol=1e-3)
    env.reset(seed=3)  # the same start: no new rollout
    assert len(core.reference) == known and core.episode_start[0] == start
    down = np.zeros((core.max_cells, 4), np.float32)
    down[:, 0] = -1.0  # every cell's power down 1 dB
    _, _, _, _, info = env.step(down.ravel())
    expected = np.maximum(core.offered[0, :4] - info["traffic"].sum(1), 0.0)
    np.testing.assert_allclose(info["shortfall"], expected, rtol=1e-9)
    assert info["shortfall"].sum() > np.concatenate(short)[:4].sum()  # less carried: more short
    env.reset(seed=3, options={"params": base + 0.5})  # other base parameters: calibrated
    assert np.isnan(core.offered[0]).all() and core.demand_scale[0] != 1.0
    env.close()
    twin = gym.make("MobiWM-LoadBalance-Twin-v0", **kw)
    twin.reset(seed=3)
    _, _, _, _, tinfo = twin.step(np.zeros(twin.action_space.shape, np.float32))
    assert tinfo["unserved"].mean() == pytest.approx(unserved[:4].mean(), rel=0.5, abs=50.0)
    twin.close()


def test_loaded_snapshot_falls_back_to_the_calibrated_demand(debug_checkpoint):
    """A planner's snapshot is not at the start its reference was made for: the core drops the
    references of those envs and scores the shortfall against the calibrated demand."""
    from mobiwm_env.state import EnvState, find_core

    kw = {"checkpoint": str(debug_checkpoint), "lambda_unserved": 2.0, "episode_steps": 4}
    src = gym.make_vec(WM_ID, num_envs=2, **kw)
    src.reset(seed=1)
    src.step(np.zeros(src.action_space.shape, np.float32))
    state = EnvState.from_env(src)
    dst = gym.make_vec(WM_ID, num_envs=2, **kw)
    dst.reset(seed=2)
    core = find_core(dst)
    assert np.isfinite(core.offered).all() and core.demand_scale.tolist() == [1.0, 1.0]
    state.load_into(core)
    assert np.isnan(core.offered).all() and (core.demand_scale != 1.0).all()
    slots = core.slot[:, None] + np.arange(core.slots_per_step)
    np.testing.assert_allclose(
        core.offered_demand(slots), core.demand_totals(slots) * core.demand_scale[:, None]
    )
    src.close()
    dst.close()
