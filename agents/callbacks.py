"""Periodic judging during PPO training: the policy on the twin beside the model it learns in.

``PeriodicEvalCallback`` runs, every ``every`` env steps and once at the end, ``runs`` seeded
episodes of the current (deterministic) policy on the twin and on the training env's own
dynamics, from the same start states (``agents.evaluate.run_episodes``). TensorBoard gets
``periodic/twin_*`` and ``periodic/model_*`` (return, RMSE to target in MB per slot, unserved
or shortfall in MB per slot), so model exploitation shows as the two return curves parting;
``periodic.json`` keeps the series and ``periodic.png`` plots them. The evaluation envs are
separate and the policy acts deterministically, so training itself is unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecNormalize

from agents.envs import make_vector_env
from agents.evaluate import run_episodes
from worldmodel.cli import write_atomic, write_json_atomic


class LivePolicy:
    """The policy being trained as a controller: observations normalised with the training
    ``VecNormalize``'s current statistics (when it normalises them), deterministic actions."""

    name = "PPO (training)"

    def __init__(self, model: Any) -> None:
        self.model = model

    def reset(self) -> None:
        pass

    def predict(self, obs: np.ndarray, info: Any = None, state: Any = None) -> np.ndarray:
        o = np.asarray(obs, dtype=np.float32)
        venv = self.model.get_env()
        if isinstance(venv, VecNormalize) and venv.norm_obs:
            o = venv.normalize_obs(o).astype(np.float32)
        act, _ = self.model.predict(o, deterministic=True)
        return np.asarray(act, dtype=np.float32)


class PeriodicEvalCallback(BaseCallback):
    """Judge the policy every ``every`` env steps on ``backends`` (name → (backend,
    checkpoint)); see the module doc. ``out`` is the run folder."""

    def __init__(
        self,
        every: int,
        runs: int,
        seed: int,
        backends: dict[str, tuple[str, str | None]],
        env_kwargs: dict[str, Any],
        out: Path,
        log: Any = None,
    ) -> None:
        super().__init__()
        if every <= 0 or runs < 1:
            raise ValueError(f"every={every} and runs={runs} must be positive")
        self.every, self.runs, self.seed = int(every), int(runs), int(seed)
        self.backends, self.env_kwargs, self.out, self.log = backends, env_kwargs, out, log
        self.history: dict[str, list[float]] = {"steps": []}
        self._venvs: dict[str, Any] = {}
        self._next = self.every

    def _on_training_start(self) -> None:
        self._venvs = {
            name: make_vector_env(backend, self.runs, checkpoint, **self.env_kwargs)
            for name, (backend, checkpoint) in self.backends.items()
        }

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if self.num_timesteps >= self._next:
            self._judge()
            self._next = (self.num_timesteps // self.every + 1) * self.every

    def _on_training_end(self) -> None:
        if not self.history["steps"] or self.history["steps"][-1] != self.num_timesteps:
            self._judge()
        for venv in self._venvs.values():
            venv.close()
        self._write()

    def _judge(self) -> None:
        policy = LivePolicy(self.model)
        self.history["steps"].append(float(self.num_timesteps))
        parts = []
        for name, venv in self._venvs.items():
            m = run_episodes(policy, "", self.runs, self.seed, venv=venv)
            lost = m.unserved_mb if np.isfinite(m.unserved_mb).all() else m.shortfall_mb
            for key, values in (("return", m.episode_return), ("rmse_mb", m.rmse_mb),
                                ("unserved_mb", lost)):  # fmt: skip
                value = float(np.mean(values))
                self.logger.record(f"periodic/{name}_{key}", value)
                self.history.setdefault(f"{name}_{key}", []).append(value)
            parts.append(f"{name} return {np.mean(m.episode_return):.1f}")
        self.logger.dump(self.num_timesteps)
        if self.log is not None:
            self.log(f"step {self.num_timesteps:,}: " + ", ".join(parts))

    def _write(self) -> None:
        """``periodic.json`` and ``periodic.png`` in the run folder (atomic writes)."""
        write_json_atomic(
            self.out / "periodic.json", {"runs": self.runs, "seed": self.seed, **self.history}
        )
        plot_periodic(self.history, self.out / "periodic.png")


def plot_periodic(history: dict[str, list[float]], path: Path) -> Path:
    """Return and unserved demand against env steps, one line per judging env."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.asarray(history["steps"])
    names = sorted({k.rsplit("_", 1)[0] for k in history if k.endswith("_return")})
    fig, axes = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for name in names:
        axes[0].plot(steps, history[f"{name}_return"], marker="o", label=name)
        axes[1].plot(steps, history[f"{name}_unserved_mb"], marker="o", label=name)
    axes[0].set_ylabel("episode return (same seeded starts)")
    axes[1].set_ylabel("unserved / shortfall (MB per slot)")
    axes[1].set_xlabel("env steps")
    axes[0].legend()
    axes[0].set_title("the policy judged during training: twin vs the model it learns in")
    fig.tight_layout()
    try:
        return write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)
