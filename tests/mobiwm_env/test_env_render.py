"""Rendering: rgb_array and human (headless), fixed frame size, window reopened."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from mobiwm_env.render import FRAME_H, FRAME_W, MapRenderer, load_colormap, time_label


def test_rgb_array_frames_stable_across_episodes(env_spec):
    env_id, kwargs = env_spec
    env = gym.make(env_id, render_mode="rgb_array", episode_steps=2, **kwargs)
    shapes = set()
    frames = []
    for seed in (0, 1):
        env.reset(seed=seed)
        frames.append(env.render())
        for _ in range(2):
            env.step(env.action_space.sample())
            frames.append(env.render())
    for f in frames:
        shapes.add(f.shape)
        assert f.dtype == np.uint8
    assert shapes == {(FRAME_H, FRAME_W, 3)}
    assert frames[0].std() > 10  # not a blank frame
    assert not np.array_equal(frames[0], frames[2])
    env.close()


def test_human_mode_headless_and_reopen():
    env = gym.make("MobiWM-LoadBalance-Twin-v0", render_mode="human", episode_steps=1)
    renderer_env = env.unwrapped
    env.reset(seed=0)  # human mode renders on reset and step
    assert renderer_env._renderer.window is not None
    assert env.render() is None
    env.close()
    assert renderer_env._renderer.window is None
    env.reset(seed=1)  # a new episode reopens the window
    assert renderer_env._renderer.window is not None
    env.close()


def test_vector_env_renders_sub_env_0():
    envs = gym.make_vec("MobiWM-LoadBalance-Twin-v0", num_envs=2, render_mode="rgb_array")
    envs.reset(seed=0)
    frame = envs.render()
    assert frame.shape == (FRAME_H, FRAME_W, 3)
    envs.close()


def test_colormap_and_labels():
    lut = load_colormap()
    assert lut.shape == (257, 3) and lut.dtype == np.uint8
    assert tuple(lut[-1]) == (70, 70, 70)
    assert time_label(0) == "Mon 00:00"
    assert time_label(96 * 8 + 57) == "Tue 14:15"


def test_renderer_handles_unserved_and_any_raster():
    from mobiwm_env.dynamics import load_scenario

    sc = load_scenario("hex57")
    r = MapRenderer(sc)
    serving = np.full((40, 40), -1)
    serving[:20] = 3
    surface = r.draw(serving, np.full(sc.n_cells, 0.7), sc.init_params, sc.init_active, 700)
    frame = r.to_array(surface)
    assert frame.shape == (FRAME_H, FRAME_W, 3)
    r.close()
