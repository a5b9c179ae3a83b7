"""``LoadBalanceVectorEnv``: the natively batched ``gymnasium.vector.VectorEnv``.

    envs = gym.make_vec("MobiWM-LoadBalance-v0", num_envs=64)
    envs = gym.make_vec("MobiWM-LoadBalance-Twin-v0", num_envs=8, autoreset_mode="SameStep")

One world-model forward (or one ``NetworkTwin`` pass over ``E`` copies) per step for all
sub-envs. Sub-env ``i`` seeded with ``seed + i`` behaves exactly like a single env seeded with
``seed + i`` (for ``num_envs=1`` the two are identical). Autoreset follows Gymnasium:

* ``NEXT_STEP`` (default): the step after a truncation resets that sub-env (its action is
  ignored, reward 0, flags False) and returns the new episode's first observation and info.
* ``SAME_STEP``: a truncating step returns the new episode's first observation and reset
  info at once; the last observation and step info are in ``info["final_obs"]`` (object
  array) and ``info["final_info"]`` (dict of arrays), with masks ``_final_obs``/``_final_info``.

Infos are dicts of arrays with a leading ``num_envs`` axis and ``_key`` masks (all keys of
``mobiwm_env.env`` are present for every sub-env). ``render()`` draws sub-env 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from mobiwm_env.config import EnvConfig
from mobiwm_env.core import LoadBalanceCore
from mobiwm_env.env import RENDER_FPS, RENDER_MODES, RenderSupport


class LoadBalanceVectorEnv(RenderSupport, VectorEnv):
    """``num_envs`` load-balancing envs stepped as one batch."""

    metadata = {
        "render_modes": RENDER_MODES,
        "render_fps": RENDER_FPS,
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(
        self,
        num_envs: int = 1,
        render_mode: str | None = None,
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        **kwargs: Any,
    ) -> None:
        self._check_render_mode(render_mode)
        try:
            mode = AutoresetMode(autoreset_mode)
        except ValueError:
            raise ValueError(
                f"autoreset_mode must be {AutoresetMode.NEXT_STEP.value!r} or "
                f"{AutoresetMode.SAME_STEP.value!r}, got {autoreset_mode!r}"
            ) from None
        if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP):
            raise ValueError(f"autoreset_mode {mode} is not supported (NEXT_STEP or SAME_STEP)")
        self.autoreset_mode = mode
        self.metadata = {**type(self).metadata, "autoreset_mode": mode}
        self.render_mode = render_mode
        self.config = EnvConfig.from_kwargs(**kwargs)
        self.core = LoadBalanceCore(self.config, n_envs=num_envs)
        self.num_envs = self.core.n_envs
        self.single_observation_space = self.core.observation_space
        self.single_action_space = self.core.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._rngs: list[np.random.Generator] = [
            seeding.np_random()[0] for _ in range(self.num_envs)
        ]
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        self._renderer = None

    # ------------------------------------------------------------------ seeding
    def _seed(self, seed: int | list[int | None] | None) -> None:
        if seed is None:
            return
        seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed)
        if len(seeds) != self.num_envs:
            raise ValueError(
                f"seed list has length {len(seeds)}, expected num_envs={self.num_envs}"
            )
        for i, s in enumerate(seeds):
            if s is not None:
                self._rngs[i] = seeding.np_random(int(s))[0]
        if isinstance(seed, int):
            self._np_random, self._np_random_seed = seeding.np_random(seed)

    # ------------------------------------------------------------------ API
    def reset(
        self,
        *,
        seed: int | list[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset all sub-envs, or those of ``options["reset_mask"]`` (bool ``[num_envs]``).

        ``seed``: an int (sub-env ``i`` gets ``seed + i``), a list of ints/None, or None.
        """
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if mask is None:
            ids = np.arange(self.num_envs)
        else:
            mask = np.asarray(mask)
            if mask.dtype != bool or mask.shape != (self.num_envs,) or not mask.any():
                raise ValueError(
                    f"options['reset_mask'] must be a bool array of shape ({self.num_envs},) "
                    "with at least one True"
                )
            ids = np.flatnonzero(mask)
        self._seed(seed)
        obs, info = self.core.reset(ids, [self._rngs[i] for i in ids], options)
        self._autoreset[ids] = False
        if mask is None:
            full_obs, full_info = obs, info
        else:
            full_obs = self.core.observe()
            full_info = _scatter(info, ids, self.num_envs)
        if self.render_mode == "human":
            self._render()
        return full_obs, _with_masks(full_info, None if mask is None else mask)

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        obs, reward, truncated, info = self.core.step(actions)
        terminated = np.zeros(self.num_envs, dtype=bool)
        reward = reward.astype(np.float64)
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            ids = np.flatnonzero(self._autoreset)
            if ids.size:
                r_obs, r_info = self.core.reset(ids, [self._rngs[i] for i in ids])
                obs[ids] = r_obs
                reward[ids] = 0.0
                truncated = truncated.copy()
                truncated[ids] = False
                for key, value in r_info.items():
                    info[key][ids] = value
            self._autoreset = truncated | terminated
            out_info = _with_masks(info)
        else:
            done = truncated | terminated
            ids = np.flatnonzero(done)
            out_info = _with_masks(info)
            if ids.size:
                final_obs = np.full(self.num_envs, None, dtype=object)
                for i in ids:
                    final_obs[i] = obs[i].copy()
                final_info = _with_masks({k: v.copy() for k, v in info.items()}, done)
                r_obs, r_info = self.core.reset(ids, [self._rngs[i] for i in ids])
                obs[ids] = r_obs
                for key, value in r_info.items():
                    out_info[key][ids] = value
                out_info["final_obs"] = final_obs
                out_info["_final_obs"] = done.copy()
                out_info["final_info"] = final_info
                out_info["_final_info"] = done.copy()
        if self.render_mode == "human":
            self._render()
        return obs, reward, terminated, truncated, out_info

    def render(self) -> np.ndarray | None:
        """Frame of sub-env 0 (``rgb_array``) or show it (``human``)."""
        return self._render()

    def close_extras(self, **kwargs: Any) -> None:
        self._close_renderer()
        self.core.close()

    # ------------------------------------------------------------------ helpers
    def obs_layout(self) -> dict[str, slice]:
        """Block name → slice of a single observation (``mobiwm_env.spaces``)."""
        return dict(self.core.layout)

    @property
    def scenario(self):
        return self.core.scenario

    @property
    def params(self) -> np.ndarray:
        """``[num_envs, N, 4]`` physical parameters now."""
        return self.core.params.copy()


def _with_masks(info: dict[str, np.ndarray], mask: np.ndarray | None = None) -> dict[str, Any]:
    """Gymnasium's vector info layout: every key with a ``_key`` bool mask."""
    out: dict[str, Any] = {}
    n = len(next(iter(info.values())))
    m = np.ones(n, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    for key, value in info.items():
        out[key] = value
        out[f"_{key}"] = m.copy()
    return out


def _scatter(info: dict[str, np.ndarray], ids: np.ndarray, n: int) -> dict[str, np.ndarray]:
    out = {}
    for key, value in info.items():
        full = np.zeros((n, *value.shape[1:]), dtype=value.dtype)
        full[ids] = value
        out[key] = full
    return out
