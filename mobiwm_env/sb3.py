"""Stable-Baselines3 ``VecEnv`` adapter over the batched Gymnasium vector env.

    from mobiwm_env.sb3 import make_sb3_vec_env
    venv = make_sb3_vec_env("MobiWM-LoadBalance-v0", num_envs=16, checkpoint=...)
    venv = VecNormalize(VecMonitor(venv))
    PPO("MlpPolicy", venv).learn(10_000)

The adapter drives a ``LoadBalanceVectorEnv`` in ``SAME_STEP`` autoreset mode (what SB3
expects) and converts its outputs to SB3's conventions: ``dones`` = terminated | truncated,
one info dict per sub-env with ``terminal_observation`` (the last observation of a finished
episode) and ``TimeLimit.truncated``; ``reset_infos`` after ``reset``; ``seed`` / ``set_options``
apply at the next ``reset``. ``get_attr`` / ``set_attr`` / ``env_method`` forward to the
vector env (one object for all sub-envs, so a value is repeated for each index);
``render`` returns sub-env 0's frame.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvStepReturn

import mobiwm_env  # noqa: F401  (registers the ids)


class SB3VecEnv(VecEnv):
    """SB3 view of a natively batched ``gymnasium.vector.VectorEnv`` (SAME_STEP autoreset)."""

    def __init__(self, venv: gym.vector.VectorEnv) -> None:
        mode = venv.metadata.get("autoreset_mode")
        if mode != AutoresetMode.SAME_STEP:
            raise ValueError(
                f"SB3VecEnv needs a vector env with autoreset_mode=SAME_STEP, got {mode}; "
                "create it with gym.make_vec(..., autoreset_mode='SameStep') or make_sb3_vec_env"
            )
        self.venv = venv
        self._actions: np.ndarray | None = None
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)

    # ------------------------------------------------------------------ core API
    def reset(self):
        seeds = None if all(s is None for s in self._seeds) else list(self._seeds)
        opts = self._options
        if all(o == opts[0] for o in opts):
            obs, info = self.venv.reset(seed=seeds, options=dict(opts[0]) or None)
        else:  # different options per sub-env: one masked reset each
            obs = None
            info = {}
            for i, o in enumerate(opts):
                mask = np.zeros(self.num_envs, dtype=bool)
                mask[i] = True
                seed_i = (
                    None if seeds is None else [s if j == i else None for j, s in enumerate(seeds)]
                )
                obs, info_i = self.venv.reset(seed=seed_i, options={**o, "reset_mask": mask})
                _merge_rows(info, info_i, i)
        self.reset_infos = _split_infos(info, self.num_envs)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async()")
        obs, reward, terminated, truncated, info = self.venv.step(self._actions)
        self._actions = None
        dones = np.logical_or(terminated, truncated)
        final_obs = info.get("final_obs")
        final_info = info.get("final_info")
        infos = _split_infos(info, self.num_envs)
        for i in np.flatnonzero(dones):
            step_info = _split_infos(final_info, self.num_envs)[i] if final_info is not None else {}
            step_info["terminal_observation"] = final_obs[i]
            step_info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            infos[i] = step_info
        return obs, reward.astype(np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    # ------------------------------------------------------------------ forwarding
    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.venv, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(
        self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs
    ) -> list[Any]:
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None):
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        frame = self.venv.render() if self.render_mode == "rgb_array" else None
        return [frame] + [None] * (self.num_envs - 1)

    def render(self, mode: str | None = None) -> np.ndarray | None:
        """Sub-env 0's frame (``rgb_array``) or its pygame window (``human``)."""
        return self.venv.render()

    def _get_indices(self, indices: VecEnvIndices) -> Iterable[int]:
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, int):
            return [indices]
        return indices


def make_sb3_vec_env(
    env_id: str = "MobiWM-LoadBalance-v0", num_envs: int = 8, **kwargs: Any
) -> SB3VecEnv:
    """``gym.make_vec(env_id, num_envs, autoreset_mode=SAME_STEP, **kwargs)`` wrapped for SB3."""
    venv = gym.make_vec(
        env_id,
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        autoreset_mode=AutoresetMode.SAME_STEP,
        **kwargs,
    )
    return SB3VecEnv(venv)


def _split_infos(info: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """Gymnasium's dict-of-arrays info (with ``_key`` masks) → one dict per sub-env."""
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    for key, value in info.items():
        if key.startswith("_") or key in ("final_obs", "final_info"):
            continue
        mask = info.get(f"_{key}", np.ones(n, dtype=bool))
        for i in np.flatnonzero(mask):
            v = value[i]
            out[i][key] = v.item() if isinstance(v, np.generic) else v
    return out


def _merge_rows(dst: dict[str, Any], src: dict[str, Any], i: int) -> None:
    for key, value in src.items():
        if key.startswith("_"):
            continue
        if key not in dst:
            dst[key] = np.zeros_like(value)
            dst[f"_{key}"] = np.zeros(len(value), dtype=bool)
        dst[key][i] = value[i]
        dst[f"_{key}"][i] = True
