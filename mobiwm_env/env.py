"""``LoadBalanceEnv``: the single Gymnasium env, a thin ``E = 1`` wrapper over the core.

    env = gym.make("MobiWM-LoadBalance-v0")            # world model (shipped checkpoint)
    env = gym.make("MobiWM-LoadBalance-Twin-v0")       # physics twin, same spaces and reward

Keyword arguments: see ``mobiwm_env.config.EnvConfig`` (``scenario``, ``checkpoint``,
``max_cells``, ``max_step``, ``lambda_delta``, ``lambda_unserved``, ``target``,
``episode_steps``, ...) plus ``render_mode`` (``"rgb_array"`` or ``"human"``). Spaces:
``mobiwm_env.spaces``. Reward: ``mobiwm_env.objective``. Reset options: ``start_slot``, ``params``, ``randomize_params``
(``mobiwm_env.core``). The env truncates itself after ``episode_steps`` steps and never
terminates.

``info`` (physical units): ``traffic [P, N]`` MB of the slots just simulated, ``target
[P, N]``, ``params [N, 4]`` now, ``imbalance`` (MB, the L1 term of Eq. 21), ``unserved [P]``
MB (twin backend only; absent for the world model, which does not model coverage),
``shortfall [P]`` MB (offered demand − carried traffic, floored at 0: equal to ``unserved`` on
the twin, the model's estimate on a world model), ``action_change`` (|Δa| of Eq. 21), ``slot`` (next slot
to simulate), ``step``. After ``reset`` the same keys describe the last ``P`` slots of the
twin warm-up.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from mobiwm_env.config import EnvConfig
from mobiwm_env.core import LoadBalanceCore

RENDER_MODES = ["human", "rgb_array"]
RENDER_FPS = 4


class RenderSupport:
    """Rendering shared by the single and the vector env (draws sub-env 0)."""

    core: LoadBalanceCore
    render_mode: str | None
    _renderer: Any = None

    def _check_render_mode(self, render_mode: str | None) -> None:
        if render_mode is not None and render_mode not in RENDER_MODES:
            raise ValueError(
                f"render_mode must be one of {RENDER_MODES} or None, got {render_mode!r}"
            )

    def _render_frame(self, env: int = 0):
        if self._renderer is None:
            from mobiwm_env.render import MapRenderer

            self._renderer = MapRenderer(self.core.scenario, fps=RENDER_FPS)
        core = self.core
        backend = "world model" if core.config.dynamics == "world_model" else "twin"
        return self._renderer.draw(
            core.serving_map(env),
            core.load_ratio(env),
            core.params[env],
            core.active,
            int(core.slot[env]),
            reward=float(core.last_reward[env]),
            step=int(core.steps[env]),
            episode_steps=core.config.episode_steps,
            label=f"{core.scenario.name} · {backend}",
        )

    def _render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array'")
            return None
        surface = self._render_frame(0)
        if self.render_mode == "rgb_array":
            return self._renderer.to_array(surface)
        self._renderer.show(surface)
        return None

    def _close_renderer(self) -> None:
        if self._renderer is not None:
            self._renderer.close()


class LoadBalanceEnv(RenderSupport, gym.Env):
    """Antenna-parameter load balancing on one map (world-model or twin dynamics)."""

    metadata = {"render_modes": RENDER_MODES, "render_fps": RENDER_FPS}

    def __init__(self, render_mode: str | None = None, **kwargs: Any) -> None:
        self._check_render_mode(render_mode)
        self.render_mode = render_mode
        self.config = EnvConfig.from_kwargs(**kwargs)
        self.core = LoadBalanceCore(self.config, n_envs=1)
        self.observation_space = self.core.observation_space
        self.action_space = self.core.action_space
        self._renderer = None

    # ------------------------------------------------------------------ API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        obs, info = self.core.reset(np.zeros(1, dtype=np.int64), [self.np_random], options)
        if self.render_mode == "human":
            self._render()
        return obs[0], _row(info)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        act = np.asarray(action)
        if act.shape != self.action_space.shape:
            raise ValueError(
                f"action: expected shape {self.action_space.shape} (cell-major, 4 parameters "
                f"per cell), got {act.shape}"
            )
        obs, reward, truncated, info = self.core.step(act[None])
        if self.render_mode == "human":
            self._render()
        return obs[0], float(reward[0]), False, bool(truncated[0]), _row(info)

    def render(self) -> np.ndarray | None:
        return self._render()

    def close(self) -> None:
        self._close_renderer()
        self.core.close()
        super().close()

    # ------------------------------------------------------------------ helpers
    def obs_layout(self) -> dict[str, slice]:
        """Block name → slice of the flat observation (``mobiwm_env.spaces``)."""
        return dict(self.core.layout)

    @property
    def scenario(self):
        return self.core.scenario

    @property
    def params(self) -> np.ndarray:
        """``[N, 4]`` physical parameters now."""
        return self.core.params[0].copy()


def _row(info: dict[str, np.ndarray], i: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in info.items():
        v = value[i]
        out[key] = v.item() if np.ndim(v) == 0 else v
    return out
