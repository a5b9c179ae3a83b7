"""The world model's predictive distribution in the env (``EnvConfig.uncertainty``)."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from mobiwm_env.config import EnvConfig
from tests.conftest import MEMORY_LAYOUT, add_quantile_head, save_untrained_mobiwm
from tests.mobiwm_env.conftest import TWIN_ID, WM_ID

STEPS = 4


@pytest.fixture(scope="module")
def head_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ckpt = save_untrained_mobiwm(tmp_path_factory.mktemp("ckpt") / "wm", 200.0, **MEMORY_LAYOUT)
    return add_quantile_head(ckpt)


def _run(ckpt: Path, mode: str, seed: int = 3, actions: np.ndarray | None = None):
    envs = gym.make_vec(WM_ID, num_envs=2, checkpoint=str(ckpt), uncertainty=mode)
    try:
        envs.reset(seed=seed)
        act = np.zeros(envs.action_space.shape, np.float32) if actions is None else actions
        return [envs.step(act) for _ in range(STEPS)]
    finally:
        envs.close()


def test_report_adds_spread_and_gate_without_changing_the_dynamics(head_checkpoint: Path) -> None:
    off = _run(head_checkpoint, "off")
    rep = _run(head_checkpoint, "report")
    for (_, r0, *_, i0), (_, r1, *_, i1) in zip(off, rep, strict=True):
        assert np.array_equal(i0["traffic"], i1["traffic"]) and np.array_equal(r0, r1)
        assert "traffic_std" not in i0 and "ood_score" not in i0
        assert i1["traffic_std"].shape == i1["traffic"].shape
        assert (i1["traffic_std"] > 0).any() and (i1["traffic_std"] >= 0).all()
        assert i1["ood_score"].shape == (2,) and np.allclose(i1["ood_threshold"], 0.01)
    assert np.array_equal(rep[0][4]["ood_score"], np.zeros(2))  # nothing moved: in support


def test_spread_grows_with_the_lead_time(head_checkpoint: Path) -> None:
    """The head reads the slots predicted since reset: the same state later in an episode is
    judged at a longer lead (the untrained head's spread depends on it)."""
    rep = _run(head_checkpoint, "report")
    assert not np.allclose(rep[0][4]["traffic_std"], rep[-1][4]["traffic_std"])


def test_sample_is_seeded_and_stochastic(head_checkpoint: Path) -> None:
    a = _run(head_checkpoint, "sample", seed=5)
    b = _run(head_checkpoint, "sample", seed=5)
    c = _run(head_checkpoint, "sample", seed=6)
    point = _run(head_checkpoint, "report", seed=5)
    ta = np.stack([s[4]["traffic"] for s in a])
    assert np.array_equal(ta, np.stack([s[4]["traffic"] for s in b]))
    assert not np.array_equal(ta, np.stack([s[4]["traffic"] for s in c]))
    assert not np.allclose(ta, np.stack([s[4]["traffic"] for s in point]))
    assert (ta >= 0).all()


def test_ood_score_flags_a_power_push(tmp_path: Path) -> None:
    ckpt = save_untrained_mobiwm(tmp_path / "wm", 200.0, **MEMORY_LAYOUT)
    add_quantile_head(ckpt, change=(2.0, 20.0, 2.0, 2.0))  # a narrow support
    envs = gym.make_vec(WM_ID, num_envs=1, checkpoint=str(ckpt), uncertainty="report")
    try:
        envs.reset(seed=0)
        up = np.zeros(envs.action_space.shape, np.float32)
        up[:, 0::4] = 1.0  # every cell's power up by its full step, every step
        scores = [envs.step(up)[4]["ood_score"][0] for _ in range(12)]
    finally:
        envs.close()
    assert scores[0] == 0.0 and scores[-1] > 0.01
    assert all(b >= a for a, b in zip(scores, scores[1:], strict=False))


def test_uncertainty_needs_a_head(debug_checkpoint: Path) -> None:
    with pytest.raises(ValueError, match="quantile head"):
        gym.make_vec(WM_ID, num_envs=1, checkpoint=str(debug_checkpoint), uncertainty="report")
    with pytest.raises(ValueError, match="uncertainty must be one of"):
        EnvConfig(uncertainty="maybe")
    env = gym.make(TWIN_ID, uncertainty="report")  # the twin ignores it
    env.close()
