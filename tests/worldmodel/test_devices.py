"""Devices: names are checked at the boundary; where CUDA exists, the trainer, a rollout and
the env run on it and agree with the CPU (skipped elsewhere)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from worldmodel.devices import resolve_device

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_device_names_are_checked() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="'tpu'"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="'meta'"):
        resolve_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_configs_reject_a_missing_device(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from agents.train_ppo import PPOConfig
    from mobiwm_env.config import EnvConfig
    from worldmodel.train import TrainConfig

    for make in (
        lambda: TrainConfig(data=str(tmp_path), device="cuda"),
        lambda: EnvConfig(device="cuda:0"),
        lambda: PPOConfig(device="cuda"),
    ):
        with pytest.raises(ValueError, match="CUDA is not available"):
            make()


@CUDA
def test_training_runs_on_cuda(tmp_path: Path) -> None:
    from tests.worldmodel.test_train import tiny
    from worldmodel.data.generate import PRESETS, generate
    from worldmodel.train import Trainer

    data = tmp_path / "smoke"
    generate(PRESETS["smoke"], data, progress=False)
    result = Trainer(tiny(data, tmp_path / "run", device="cuda", max_steps=4)).train()
    assert np.isfinite(result["best_val_loss"])
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()


@CUDA
def test_env_on_cuda_equals_cpu(tmp_path: Path) -> None:
    import gymnasium as gym

    import mobiwm_env
    from tests.conftest import save_untrained_mobiwm

    ckpt = save_untrained_mobiwm(tmp_path / "ck", 200.0)
    out = {}
    for device in ("cpu", "cuda"):
        envs = gym.make_vec(mobiwm_env.WORLD_MODEL_ID, num_envs=4, checkpoint=str(ckpt),
                            device=device)  # fmt: skip
        envs.reset(seed=0)
        a = np.random.default_rng(0).uniform(-1, 1, envs.action_space.shape).astype(np.float32)
        out[device] = envs.step(a)[4]["traffic"]
        envs.close()
    np.testing.assert_allclose(out["cuda"], out["cpu"], rtol=1e-3, atol=1e-2)
