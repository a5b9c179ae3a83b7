"""RL toolkit on the MobiWM Gym environments.

* ``agents.train_ppo``: Stable-Baselines3 PPO on ``MobiWM-LoadBalance-v0`` (the world model),
  judged on the twin at the end of the run (``python agents/train_ppo.py --help``).
* ``agents.baselines``: controllers with one ``predict(obs, info, state)`` interface: no-op,
  random, a rule-based heuristic and model-predictive control (CEM) on a world model.
* ``agents.policies``: the per-cell shared policy (message passing between neighbouring cells).
* ``agents.evaluate``: seeded evaluation on the twin (steady-state RMSE to target, Eq. 21 return,
  95% confidence intervals), JSON + Markdown tables (``python agents/evaluate.py --help``).
* ``agents.table2``: the paper's Table 2 study in one command.
* ``agents.envs``: env construction for any world-model checkpoint (MobiWM, Static-MobiWM,
  GRU), exact env-state snapshots for planning.

Imports go one way: ``agents → mobiwm_env → worldmodel``.
"""
