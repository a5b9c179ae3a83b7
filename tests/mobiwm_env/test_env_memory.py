"""Episodes longer than a day on the world model: the daily memory (``EnvConfig.memory``)."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from mobiwm_env.config import MEMORY_MODES
from tests.conftest import MEMORY_LAYOUT, save_untrained_mobiwm
from tests.mobiwm_env.conftest import WM_ID

DAY_STEPS = 24  # 96 slots at 4 slots per step
STEPS = DAY_STEPS + 6


@pytest.fixture(scope="module")
def memory_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained MobiWM with a one-day memory (``H = 104``, yesterday-anchored)."""
    return save_untrained_mobiwm(
        tmp_path_factory.mktemp("ckpt") / "mobiwm-memory", 200.0, **MEMORY_LAYOUT
    )


def _episode(ckpt: Path, memory: str) -> tuple[np.ndarray, dict]:
    """Two envs (different random starts), zero actions for ``STEPS`` steps → traffic ``[2,
    STEPS·4, N]`` and what the oracle needs (history, parameters, starts, the dynamics)."""
    envs = gym.make_vec(WM_ID, num_envs=2, checkpoint=str(ckpt), memory=memory,
                        episode_steps=STEPS)  # fmt: skip
    try:
        _, info = envs.reset(seed=4)
        core = envs.unwrapped.core
        start = {"slot": info["slot"].copy(), "params": info["params"].copy(),
                 "hist_traffic": core.hist_traffic.copy(), "hist_params": core.hist_params.copy(),
                 "dynamics": core.dynamics}  # fmt: skip
        zero = np.zeros(envs.action_space.shape, dtype=np.float32)
        traffic = [envs.step(zero)[4]["traffic"] for _ in range(STEPS)]
    finally:
        envs.close()
    return np.concatenate(traffic, axis=1), start


def _one_rollout(start: dict, memory: str) -> np.ndarray:
    """Oracle: one ``MobiWM.rollout`` of all ``STEPS`` chunks from the warm-up history."""
    import torch

    dyn = start["dynamics"]
    model, h, p = dyn.model, dyn.history, dyn.horizon
    e, n = start["params"].shape[:2]
    fut = np.broadcast_to(start["params"].astype(np.float32)[:, None], (e, STEPS * p, n, 4))
    slots = start["slot"][:, None] + np.arange(-h, STEPS * p)[None]
    time = {
        "slot_of_day": torch.as_tensor(slots % 96),
        "day_of_week": torch.as_tensor(slots // 96 % 7),
    }
    active = torch.as_tensor(dyn.active).expand(e, h + STEPS * p, n)
    with torch.no_grad():
        out = model.rollout(
            torch.as_tensor(start["hist_traffic"][:, -h:]),
            torch.as_tensor(start["hist_params"][:, -h:]),
            torch.as_tensor(np.ascontiguousarray(fut)),
            dyn.context, {"active": active}, time, n_chunks=STEPS, memory=memory,
        )  # fmt: skip
    return out.numpy().astype(np.float64)


@pytest.mark.parametrize("memory", MEMORY_MODES)
def test_env_steps_equal_one_rollout_with_that_memory(memory_checkpoint: Path, memory: str):
    traffic, start = _episode(memory_checkpoint, memory)
    assert start["slot"][0] != start["slot"][1]  # the rows need their own offsets
    oracle = _one_rollout(start, memory)
    assert (oracle >= 0).all()  # the env floors at 0; the oracle must not need it
    np.testing.assert_allclose(traffic, oracle, rtol=1e-5, atol=1e-4)


def test_observed_and_predicted_memory_agree_for_one_day_then_differ(memory_checkpoint: Path):
    obs, _ = _episode(memory_checkpoint, "observed")
    pred, _ = _episode(memory_checkpoint, "predicted")
    day = DAY_STEPS * 4
    np.testing.assert_array_equal(obs[:, :day], pred[:, :day])
    assert np.abs(obs[:, day:] - pred[:, day:]).max(axis=2).min() > 1e-3


def test_memory_option_is_validated_and_matches_the_model(memory_checkpoint: Path):
    from worldmodel.model.mobiwm import MEMORY_MODES as MODEL_MODES

    assert MEMORY_MODES == MODEL_MODES
    with pytest.raises(ValueError, match="memory must be one of"):
        gym.make(WM_ID, checkpoint=str(memory_checkpoint), memory="yesterday")


@pytest.mark.parametrize("compile", [False, True])
def test_fast_layout_env_equals_a_plain_rollout_with_changing_actions(
    tmp_path: Path, compile: bool
) -> None:
    """The env's fast paths (parameter sets shared between the rows of its one-map context,
    the week's demand table, compact windows, neighbour attention, candidate cells; with
    ``compile=True`` also ``torch.compile``) give the same traffic as one eager
    ``MobiWM.rollout`` over a context whose rows are separate copies."""
    import dataclasses

    import torch

    from worldmodel.model.checkpoint import load_checkpoint, save_checkpoint
    from worldmodel.model.config import preset
    from worldmodel.model.mobiwm import MobiWM

    torch.manual_seed(0)
    model = MobiWM(preset(
        "debug", history=100, season=96, horizon=4, season_anchor="yesterday", memory_age=6,
        season_actions=True, coverage_prior=True, coverage_daily_demand=True,
        coverage_calibrate=3, coverage_candidates=8, spatial_neighbours=8,
    ))  # fmt: skip
    model.normalizer.set_stats(200.0, 0.7, 0.8)
    with torch.no_grad():  # a demand proxy that moves with the time of day, a live head
        torch.nn.init.normal_(model.coverage.demand.fc2.weight, std=1.0)
        torch.nn.init.normal_(model.head.weight, std=0.5)
    ckpt = save_checkpoint(model, tmp_path / "fast")
    steps = 6
    envs = gym.make_vec(WM_ID, num_envs=3, checkpoint=str(ckpt), episode_steps=steps + 1,
                        compile=compile)  # fmt: skip
    try:
        _, info = envs.reset(seed=5)
        core = envs.unwrapped.core
        hist_t, hist_p = core.hist_traffic.copy(), core.hist_params.copy()
        slot0, dyn = info["slot"].copy(), core.dynamics
        rng = np.random.default_rng(0)
        traffic, params = [], []
        for _ in range(steps):
            a = rng.uniform(-1, 1, envs.action_space.shape).astype(np.float32)
            info = envs.step(a)[4]
            traffic.append(info["traffic"])
            params.append(info["params"].astype(np.float32))
    finally:
        envs.close()
    assert (dyn.model._compiled is not None) == compile
    model, h, p = load_checkpoint(ckpt).eval(), dyn.history, dyn.horizon  # eager
    fut = np.repeat(np.stack(params, axis=1), p, axis=1)  # [E, steps·P, N, 4]
    slots = slot0[:, None] + np.arange(-h, steps * p)[None]
    time = {
        "slot_of_day": torch.as_tensor(slots % 96),
        "day_of_week": torch.as_tensor(slots // 96 % 7),
    }
    separate = dataclasses.replace(
        dyn.context,
        **{f.name: getattr(dyn.context, f.name).contiguous()
           for f in dataclasses.fields(dyn.context)
           if isinstance(getattr(dyn.context, f.name), torch.Tensor)},
        coverage_memo={},
    )  # fmt: skip
    assert separate.coverage_geom.stride(0) != 0  # rows no longer share sets or tables
    e, n = fut.shape[0], fut.shape[2]
    active = torch.as_tensor(dyn.active).expand(e, h + steps * p, n)
    oracle = model.rollout(
        torch.as_tensor(hist_t[:, -h:]), torch.as_tensor(hist_p[:, -h:]), torch.as_tensor(fut),
        separate, {"active": active}, time, n_chunks=steps,
    )  # fmt: skip
    got = np.concatenate(traffic, axis=1)
    assert np.ptp(np.stack(params), axis=0).max() > 0  # the parameters did change
    np.testing.assert_allclose(got, np.maximum(oracle.numpy(), 0.0), rtol=1e-4, atol=1e-3)
