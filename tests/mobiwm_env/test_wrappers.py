"""``mobiwm_env.wrappers.SafetyShield``: hard limits, the world-model check, its bookkeeping."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from mobiwm_env.wrappers import SafetyShield, ShieldConfig
from tests.conftest import MEMORY_LAYOUT, add_quantile_head, save_untrained_mobiwm
from tests.mobiwm_env.conftest import TWIN_ID

E = 3


@pytest.fixture(scope="module")
def wm_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ckpt = save_untrained_mobiwm(tmp_path_factory.mktemp("ckpt") / "wm", 200.0, **MEMORY_LAYOUT)
    return add_quantile_head(ckpt)


def _twin(**kw):
    return gym.make_vec(TWIN_ID, num_envs=E, episode_steps=4, **kw)


def _random_actions(env, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)


def test_hard_limits() -> None:
    cfg = ShieldConfig(checkpoint=None, protected=(0, 1), frozen=("azimuth_deg",),
                       max_step={"power_dbm": 0.5}, max_cells=5)  # fmt: skip
    env = SafetyShield(_twin(), cfg)
    env.reset(seed=0)
    core = env.core
    before = core.params.copy()
    _, _, _, _, info = env.step(_random_actions(env))
    d = core.params - before
    assert np.all(d[:, :2] == 0)  # protected cells
    assert np.all(d[..., 1] == 0)  # frozen azimuth
    assert np.all(np.abs(d[..., 0]) <= 0.5 + 1e-9)  # power rate limit
    assert ((np.abs(d) > 1e-9).any(axis=2).sum(axis=1) <= 5).all()  # at most 5 cells move
    assert (info["shield_limited"] > 0).all() and np.all(info["shield_fraction"] == 1.0)
    assert env.counts["limited"] == E
    env.close()


def test_scope_keeps_other_cells_still() -> None:
    env = SafetyShield(_twin(), ShieldConfig(checkpoint=None, scope=(3, 4, 5)))
    env.reset(seed=1)
    before = env.core.params.copy()
    env.step(_random_actions(env, 1))
    moved = (np.abs(env.core.params - before) > 1e-9).any(axis=(0, 2))
    assert set(np.flatnonzero(moved)) <= {3, 4, 5}
    env.close()


def test_model_check_blocks_predicted_shedding(wm_checkpoint: Path) -> None:
    lax = SafetyShield(_twin(), ShieldConfig(checkpoint=str(wm_checkpoint),
                                             unserved_margin_mb=1e12, use_gate=False))  # fmt: skip
    strict = SafetyShield(_twin(), ShieldConfig(checkpoint=str(wm_checkpoint),
                                                unserved_tolerance=0.0, unserved_margin_mb=0.0,
                                                use_gate=False))  # fmt: skip
    lax.reset(seed=2)
    strict.reset(seed=2)
    act = _random_actions(lax, 2)
    _, _, _, _, i_lax = lax.step(act)
    _, _, _, _, i_strict = strict.step(act)
    assert np.all(i_lax["shield_fraction"] == 1.0)  # everything allowed
    assert not i_lax["shield_reverted"].any()
    # zero tolerance: whatever is applied is predicted to shed nothing against the reference
    assert np.all(i_strict["shield_predicted_shed"] <= 1e-6)
    for key in ("shield_fraction", "shield_limited", "shield_reverted", "shield_expanded"):
        assert i_strict[key].shape == (E,)
    lax.close()
    strict.close()


def test_revert_moves_back_toward_the_start(wm_checkpoint: Path) -> None:
    cfg = ShieldConfig(checkpoint=str(wm_checkpoint), unserved_margin_mb=1e12, use_gate=False)
    env = SafetyShield(_twin(), cfg)
    env.reset(seed=3)
    start = env.core.params.copy()
    env.step(_random_actions(env, 3))  # allowed: moves away
    moved = env.core.params.copy()
    act = env._revert_action()
    assert act.shape == (E, env.core.max_cells, 4)
    env.step(act.reshape(E, -1))
    back = np.abs(env.core.params - start)
    assert (back <= np.abs(moved - start) + 1e-9).all()
    env.close()


def test_gate_rejects_out_of_support_plans(tmp_path: Path) -> None:
    ckpt = save_untrained_mobiwm(tmp_path / "wm", 200.0, **MEMORY_LAYOUT)
    add_quantile_head(ckpt, change=(0.5, 5.0, 0.5, 0.5))  # a tiny support
    env = SafetyShield(_twin(), ShieldConfig(checkpoint=str(ckpt), unserved_margin_mb=1e12))
    env.reset(seed=4)
    up = np.zeros(env.action_space.shape, np.float32)
    up[:, 0::4] = 1.0  # power +1 dB on every cell: 2× the support's change
    _, _, _, _, info = env.step(up)
    assert np.all(info["shield_fraction"] < 1.0)  # the full step is out of distribution
    env.close()


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"frozen": ("tilt",)}, "frozen"),
        ({"max_step": {"power": 1.0}}, "max_step"),
        ({"max_step": {"power_dbm": 0.0}}, "max_step"),
        ({"max_cells": 0}, "max_cells"),
        ({"line_search": (0.0,)}, "line_search"),
        ({"max_unserved_pct": 120.0}, "max_unserved_pct"),
    ],
)
def test_config_errors(kw: dict, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        ShieldConfig(**kw)


def test_unknown_cells_are_named() -> None:
    with pytest.raises(ValueError, match="protected: cells \\[99\\]"):
        SafetyShield(_twin(), ShieldConfig(checkpoint=None, protected=(99,)))


def test_selective_keeps_the_cells_predicted_safe() -> None:
    env = SafetyShield(gym.make_vec(TWIN_ID, num_envs=1), ShieldConfig(checkpoint=None))
    env.reset(seed=0)
    n, m = env.core.n_cells, env.core.max_cells
    act = np.zeros((1, m, 4), np.float32)
    act[0, :3, 0] = 0.5  # cells 0, 1, 2 move
    hold, ref = 100.0, 100.0
    single = np.full(n, hold)
    single[:3] = [90.0, 101.0, 99.0]  # cell 0 sheds 10 MB, cell 1 serves 1 more, cell 2 sheds 1
    carried = np.concatenate([[95.0, hold], single, [ref]])[None]  # candidates, singles, ref
    out, safe, shed = env._selective(act, carried, 2, np.array([2.0]), None)
    assert np.flatnonzero(np.abs(out[0]).max(axis=1)).tolist() == [1, 2]
    assert bool(safe[0]) and shed[0] == pytest.approx(0.0)  # −1 + 1
    out, safe, _ = env._selective(act, carried, 2, np.array([-5.0]), None)
    assert np.flatnonzero(np.abs(out[0]).max(axis=1)).tolist() == [1]  # only the helping cell
    env.close()
