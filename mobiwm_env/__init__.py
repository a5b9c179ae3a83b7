"""MobiWM Gym environments: antenna-parameter load balancing on a mobile network.

Importing the package registers two Gymnasium ids that share observation space, action space
and reward (Eq. 21), so a policy moves between them unchanged:

* ``MobiWM-LoadBalance-v0``: dynamics of the frozen MobiWM world model (the shipped checkpoint
  ``mobiwm_env/assets/mobiwm-full``, or ``checkpoint="fast"`` for the small fast model, or
  ``checkpoint=PATH``);
* ``MobiWM-LoadBalance-Twin-v0``: dynamics of the physics digital twin (ground truth).

Both support ``gym.make`` and ``gym.make_vec`` (a natively batched vector env). See
``mobiwm_env.env`` for the API, ``mobiwm_env.config.EnvConfig`` for the keyword arguments,
``mobiwm_env.spaces`` for the observation layout and ``mobiwm_env.sb3`` for Stable-Baselines3.
"""

from __future__ import annotations

import gymnasium

from mobiwm_env.config import DEFAULT_CHECKPOINT, EnvConfig
from mobiwm_env.spaces import obs_layout, unflatten_obs

WORLD_MODEL_ID = "MobiWM-LoadBalance-v0"
TWIN_ID = "MobiWM-LoadBalance-Twin-v0"

for _id, _dynamics in ((WORLD_MODEL_ID, "world_model"), (TWIN_ID, "twin")):
    if _id not in gymnasium.registry:
        gymnasium.register(
            id=_id,
            entry_point="mobiwm_env.env:LoadBalanceEnv",
            vector_entry_point="mobiwm_env.vector:LoadBalanceVectorEnv",
            max_episode_steps=None,  # the env truncates itself after episode_steps
            kwargs={"dynamics": _dynamics},
        )

__all__ = [
    "DEFAULT_CHECKPOINT",
    "TWIN_ID",
    "WORLD_MODEL_ID",
    "EnvConfig",
    "obs_layout",
    "unflatten_obs",
]
