"""Cells failing mid-episode (``LoadBalanceCore.set_active``) on both backends and in snapshots."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from mobiwm_env.state import EnvState, find_core
from tests.mobiwm_env.conftest import TWIN_ID, WM_ID


@pytest.mark.parametrize("backend", ["twin", "world_model"])
def test_a_failed_site_carries_nothing(backend, debug_checkpoint) -> None:
    kw = {"checkpoint": str(debug_checkpoint)} if backend == "world_model" else {}
    env = gym.make_vec(TWIN_ID if backend == "twin" else WM_ID, num_envs=2, **kw)
    env.reset(seed=0)
    core = find_core(env)
    zero = np.zeros(env.action_space.shape, np.float32)
    before = env.step(zero)[4]["traffic"]
    site = np.asarray(core.scenario.cell_site)
    on = site != 0
    ctx = getattr(core.dynamics, "context", None)
    core.set_active(on)
    if ctx is not None:  # the world model encodes the map again: its facility map changed
        assert not np.allclose(ctx.fac_cond.numpy(), core.dynamics.context.fac_cond.numpy())
    _, _, _, _, info = env.step(zero)
    assert (info["traffic"][:, :, ~on] == 0).all() and (before[:, :, ~on] > 0).any()
    assert (info["target"][:, :, ~on] == 0).all()  # the balanced target shares among the rest
    if backend == "twin":
        assert info["unserved"].sum() > 0
    env.close()


def test_snapshots_carry_the_outage(debug_checkpoint) -> None:
    twin = gym.make_vec(TWIN_ID, num_envs=1)
    twin.reset(seed=1)
    core = find_core(twin)
    on = np.asarray(core.scenario.cell_site) != 3
    core.set_active(on)
    state = EnvState.from_env(twin)
    assert np.array_equal(state.active, on)
    wm = gym.make_vec(WM_ID, num_envs=2, checkpoint=str(debug_checkpoint))
    wm.reset(seed=1)
    state.repeat(2).load_into(find_core(wm))
    assert np.array_equal(find_core(wm).active, on)
    with pytest.raises(ValueError, match="at least one cell"):
        core.set_active(np.zeros_like(on))
    with pytest.raises(ValueError, match="bools"):
        core.set_active(on.astype(int))
    twin.close()
    wm.close()
