"""PPO for many cells acting at once: per-cell ratio clipping and per-cell credit.

The action is ``4`` numbers per cell for ``M`` cells (228 on hex57). Two things make SB3's PPO
slow to learn there, and ``CellPPO`` changes both (cells as agents sharing one policy, as in
MAPPO / IPPO with parameter sharing):

* **Ratio clipping per cell** (always). SB3 clips the ratio of the *joint* action probability,
  whose log is the sum of ``M`` per-cell log-ratios: moving every cell's mean by a fraction
  ``δ`` of the exploration std moves it by about ``δ · sqrt(4M)`` standard deviations, so the
  joint clip (±0.2) allows ``δ ≈ 1%`` per update (measured at 0.3.1: approx-KL 0.22 and a clip
  fraction of 0.43 after the first update at lr 1e-4). The policy factorises over cells, so the
  joint surrogate ``ratio · A`` is to first order ``Σ_i ratio_i · A``; clipping ``ratio_i``
  bounds each cell's change instead of their sum.
* **Credit** (``credit``). ``"team"``: one advantage per step from the map's reward and the
  pooled critic (SB3's buffer). ``"neighbourhood"``: each cell is credited with the rewards of
  its own neighbourhood, itself and its ``credit_neighbours`` nearest cells, from the env's
  ``info["cell_reward"]`` (the reward split over the cells, exactly;
  ``mobiwm_env.objective.cell_rewards``), with a per-cell critic and per-cell GAE: a cell's
  advantage no longer carries the noise of 56 other cells' exploration, a cell gains nothing by
  pushing load onto its neighbours (their L1 terms are in its reward), and traffic shed in a
  neighbourhood costs that neighbourhood ``λ_U`` per MB (the shortfall part of each cell is the
  demand it answers for minus what it carries).

Everything else is SB3's PPO (GAE, value loss, advantage normalisation, gradient clipping,
logging, callbacks, saving). ``train/approx_kl`` and ``train/clip_fraction`` are per cell, and
``target_kl`` bounds the mean per-cell KL. Team credit recomputes the rollout policy's per-cell
log-probabilities at the start of each update (one forward pass without gradients), so its
buffer stays SB3's own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.distributions import DiagGaussianDistribution
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.type_aliases import RolloutBufferSamples
from stable_baselines3.common.utils import explained_variance, obs_as_tensor
from torch.nn import functional as F

PARAMS_PER_CELL = 4
"""Action numbers per cell (power, azimuth, mechanical and electrical tilt)."""
CREDITS = ("team", "neighbourhood")
"""``CellPPO`` credit modes (module doc)."""


class CellRolloutBuffer(RolloutBuffer):
    """SB3's rollout buffer with one reward, value, log-probability, return and advantage per
    cell: ``[n_steps, n_envs, M]`` (flattened to ``[n_steps * n_envs, M]`` for sampling)."""

    def __init__(self, *args: Any, n_cells: int, **kwargs: Any) -> None:
        self.n_cells = int(n_cells)
        super().__init__(*args, **kwargs)

    def reset(self) -> None:
        super().reset()
        shape = (self.buffer_size, self.n_envs, self.n_cells)
        for name in ("rewards", "returns", "values", "log_probs", "advantages"):
            setattr(self, name, np.zeros(shape, dtype=np.float32))

    def add(self, obs, action, reward, episode_start, value, log_prob) -> None:  # type: ignore[override]
        """``reward``, ``value``, ``log_prob``: ``[n_envs, M]``."""
        self.observations[self.pos] = np.asarray(obs)
        self.actions[self.pos] = np.asarray(action).reshape(self.n_envs, self.action_dim)
        self.rewards[self.pos] = np.asarray(reward)
        self.episode_starts[self.pos] = np.asarray(episode_start)
        self.values[self.pos] = value.detach().cpu().numpy()
        self.log_probs[self.pos] = log_prob.detach().cpu().numpy()
        self.pos += 1
        if self.pos == self.buffer_size:
            self.full = True

    def compute_returns_and_advantage(self, last_values: torch.Tensor, dones: np.ndarray) -> None:
        """Per-cell GAE(λ); ``last_values [n_envs, M]``."""
        last = last_values.detach().cpu().numpy()
        gae = np.zeros((self.n_envs, self.n_cells), dtype=np.float32)
        for step in reversed(range(self.buffer_size)):
            if step == self.buffer_size - 1:
                live, nxt = 1.0 - dones.astype(np.float32), last
            else:
                live, nxt = 1.0 - self.episode_starts[step + 1], self.values[step + 1]
            live = live[:, None]
            delta = self.rewards[step] + self.gamma * nxt * live - self.values[step]
            gae = delta + self.gamma * self.gae_lambda * live * gae
            self.advantages[step] = gae
        self.returns = self.advantages + self.values

    def _get_samples(self, batch_inds: np.ndarray, env: Any = None) -> RolloutBufferSamples:
        data = (
            self.observations[batch_inds],
            self.actions[batch_inds].astype(np.float32, copy=False),
            self.values[batch_inds],
            self.log_probs[batch_inds],
            self.advantages[batch_inds],
            self.returns[batch_inds],
        )
        return RolloutBufferSamples(*tuple(map(self.to_torch, data)))


class CellPPO(PPO):
    """``stable_baselines3.PPO`` with per-cell ratio clipping and, with ``credit=
    "neighbourhood"``, per-cell credit (module doc).

    ``cell_mask``: ``[M]`` bool, the cells whose actions count (the scenario's active cells;
    padded cells never act); ``None`` = every cell. ``neighbours``: ``[M, K]`` indices of each
    cell's nearest cells (``agents.policies.neighbour_index``; entries pointing to the cell
    itself are ignored), needed for neighbourhood credit, whose policy must have per-cell values
    (``CellSharedPolicy``).
    """

    def __init__(
        self,
        *args: Any,
        cell_mask: np.ndarray | None = None,
        credit: str = "team",
        neighbours: np.ndarray | None = None,
        **kwargs: Any,
    ) -> None:
        if credit not in CREDITS:
            raise ValueError(f"CellPPO: credit must be one of {CREDITS}, got {credit!r}")
        self.credit = credit
        self._neighbours = None if neighbours is None else np.asarray(neighbours, np.int64)
        super().__init__(*args, **kwargs)
        dim = int(np.prod(self.action_space.shape))
        if dim % PARAMS_PER_CELL:
            raise ValueError(f"CellPPO: action size {dim} is not a multiple of {PARAMS_PER_CELL}")
        m = self.n_cells = dim // PARAMS_PER_CELL
        mask = np.ones(m, bool) if cell_mask is None else np.asarray(cell_mask, bool)
        if mask.shape != (m,) or not mask.any():
            raise ValueError(
                f"CellPPO: cell_mask must be [{m}] bool with an active cell, got {mask.shape}"
            )
        self.cell_mask = torch.as_tensor(mask, device=self.device)
        self._mask_np = mask
        if credit == "neighbourhood":
            self._setup_neighbourhood(mask)

    def _setup_model(self) -> None:
        super()._setup_model()
        if not isinstance(self.policy.action_dist, DiagGaussianDistribution):
            raise ValueError("CellPPO needs a diagonal Gaussian policy (a Box action space)")

    # ------------------------------------------------------------------ neighbourhood credit
    def _setup_neighbourhood(self, mask: np.ndarray) -> None:
        m = self.n_cells
        if not hasattr(self.policy, "forward_cells"):
            raise ValueError(
                "CellPPO: neighbourhood credit needs a policy with per-cell values "
                "(agents.policies.CellSharedPolicy, --policy shared)"
            )
        if self._neighbours is None or self._neighbours.shape[0] != m:
            raise ValueError(f"CellPPO: neighbourhood credit needs neighbours [{m}, K]")
        # credit[i, j] = 1 when cell j's reward counts for cell i (itself and its neighbours)
        credit = np.eye(m, dtype=np.float32)
        rows = np.repeat(np.arange(m), self._neighbours.shape[1])
        credit[rows, self._neighbours.reshape(-1)] = 1.0
        credit *= mask[None, :] * mask[:, None]
        self.credit_matrix = credit
        self.reward_rms = RunningMeanStd(shape=())
        self._disc_return = np.zeros((self.n_envs, m))
        self.rollout_buffer = CellRolloutBuffer(
            self.n_steps,
            self.observation_space,
            self.action_space,
            device=self.device,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            n_envs=self.n_envs,
            n_cells=m,
        )

    def _cell_rewards(self, infos: list[dict[str, Any]], dones: np.ndarray) -> np.ndarray:
        """``[E, M]`` neighbourhood rewards, scaled by the running std of their discounted
        returns (as ``VecNormalize`` scales the team reward)."""
        if any("cell_reward" not in info for info in infos):
            raise KeyError("neighbourhood credit needs info['cell_reward'] from the env")
        own = np.stack([info["cell_reward"] for info in infos]).astype(np.float64)  # [E, N]
        reward = own @ self.credit_matrix[:, : own.shape[1]].T  # padded cells earn nothing
        self._disc_return = self._disc_return * self.gamma + reward
        self.reward_rms.update(self._disc_return[:, self._mask_np].reshape(-1))
        self._disc_return[np.asarray(dones, bool)] = 0.0
        return (reward / np.sqrt(self.reward_rms.var + 1e-8)).astype(np.float32)

    def _bootstrap_truncated(
        self, rewards: np.ndarray, infos: list[dict[str, Any]], dones: np.ndarray
    ) -> None:
        """Add ``γ · V(terminal observation)`` per cell to the rewards of episodes cut by the
        time limit (SB3 #633), in one batched forward (every sub-env ends its episode on the
        same step here)."""
        rows = [
            i
            for i, done in enumerate(dones)
            if done
            and infos[i].get("terminal_observation") is not None
            and infos[i].get("TimeLimit.truncated", False)
        ]
        if not rows:
            return
        term = np.stack([infos[i]["terminal_observation"] for i in rows])
        with torch.no_grad():
            v = self.policy.predict_cell_values(obs_as_tensor(term, self.device)).cpu().numpy()
        rewards[rows] += self.gamma * v

    def collect_rollouts(self, env, callback, rollout_buffer, n_rollout_steps: int) -> bool:
        """SB3's ``collect_rollouts`` with per-cell rewards, values and log-probabilities."""
        if self.credit == "team":
            return super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps)
        assert self._last_obs is not None
        self.policy.set_training_mode(False)
        rollout_buffer.reset()
        callback.on_rollout_start()
        box: spaces.Box = self.action_space  # type: ignore[assignment]
        n_steps = 0
        while n_steps < n_rollout_steps:
            with torch.no_grad():
                obs_t = obs_as_tensor(self._last_obs, self.device)
                actions, values, log_probs = self.policy.forward_cells(obs_t)
            actions_np = actions.cpu().numpy()
            new_obs, _, dones, infos = env.step(np.clip(actions_np, box.low, box.high))
            self.num_timesteps += env.num_envs
            callback.update_locals(locals())
            if not callback.on_step():
                return False
            self._update_info_buffer(infos, dones)
            n_steps += 1
            rewards = self._cell_rewards(infos, dones)
            self._bootstrap_truncated(rewards, infos, dones)
            rollout_buffer.add(
                self._last_obs, actions_np, rewards, self._last_episode_starts, values, log_probs
            )
            self._last_obs = new_obs
            self._last_episode_starts = dones
        with torch.no_grad():
            last = self.policy.predict_cell_values(obs_as_tensor(new_obs, self.device))
        rollout_buffer.compute_returns_and_advantage(last_values=last, dones=dones)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    # ------------------------------------------------------------------ team credit
    def _evaluate_team(
        self, obs: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``values [B]``, per-cell log-probabilities ``[B, M]`` and entropies ``[B, M]``."""
        features = self.policy.extract_features(obs)
        latent_pi, latent_vf = self.policy.mlp_extractor(features)
        dist = self.policy._get_action_dist_from_latent(latent_pi)
        values = self.policy.value_net(latent_vf).flatten()
        gauss = dist.distribution  # torch Normal over the flat action
        b = actions.shape[0]
        logp = gauss.log_prob(actions).reshape(b, self.n_cells, PARAMS_PER_CELL).sum(-1)
        ent = gauss.entropy().reshape(b, self.n_cells, PARAMS_PER_CELL).sum(-1)
        return values, logp, ent

    def _flatten_buffer(self) -> None:
        """Swap and flatten the rollout buffer in place, as ``RolloutBuffer.get`` does first."""
        buf = self.rollout_buffer
        if not buf.generator_ready:
            for name in ("observations", "actions", "values", "log_probs", "advantages", "returns"):
                setattr(buf, name, buf.swap_and_flatten(getattr(buf, name)))
            buf.generator_ready = True

    @torch.no_grad()
    def _old_cell_log_prob(self) -> torch.Tensor:
        """``[n_steps * n_envs, M]`` per-cell log-probabilities under the rollout's policy, in
        the flattened buffer's order (team credit; the cell buffer stores them)."""
        self._flatten_buffer()
        if self.credit == "neighbourhood":
            return self.rollout_buffer.to_torch(self.rollout_buffer.log_probs)
        n = self.rollout_buffer.buffer_size * self.rollout_buffer.n_envs
        step = max(self.batch_size, 1)
        out = []
        for i in range(0, n, step):
            data = self.rollout_buffer._get_samples(np.arange(i, min(i + step, n)))
            out.append(self._evaluate_team(data.observations, data.actions)[1])
        return torch.cat(out)

    # ------------------------------------------------------------------ update
    def train(self) -> None:
        """One PPO update over the rollout buffer, clipping each cell's ratio (module doc)."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip_range = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        clip_range_vf = (
            None
            if self.clip_range_vf is None
            else self.clip_range_vf(self._current_progress_remaining)  # type: ignore[operator]
        )
        old_cell = self._old_cell_log_prob()
        mask = self.cell_mask.float()
        n_active = mask.sum()
        local = self.credit == "neighbourhood"

        entropy_losses, pg_losses, value_losses, clip_fractions = [], [], [], []
        approx_kl_divs: list[float] = []
        continue_training = True
        loss = torch.zeros(())
        for _epoch in range(self.n_epochs):
            approx_kl_divs = []
            # the global RNG, as SB3 samples its minibatches (seeded by set_random_seed)
            indices = np.random.permutation(old_cell.shape[0])  # noqa: NPY002
            for start in range(0, len(indices), self.batch_size):
                idx = indices[start : start + self.batch_size]
                data = self.rollout_buffer._get_samples(idx)
                if local:
                    values, logp, ent = self.policy.evaluate_cells(data.observations, data.actions)
                else:
                    values, logp, ent = self._evaluate_team(data.observations, data.actions)
                cells = n_active * len(idx)
                adv = data.advantages if local else data.advantages[:, None]  # [B, M] | [B, 1]
                if self.normalize_advantage and len(idx) > 1:
                    if local:
                        mean = (adv * mask).sum() / cells
                        std = (((adv - mean) ** 2 * mask).sum() / cells).sqrt()
                    else:
                        mean, std = adv.mean(), adv.std()
                    adv = (adv - mean) / (std + 1e-8)
                log_ratio = logp - old_cell[torch.as_tensor(idx)]  # [B, M]
                ratio = torch.exp(log_ratio)
                surr = torch.min(
                    adv * ratio, adv * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
                )
                policy_loss = -(surr * mask).sum() / cells

                values_pred = values
                if clip_range_vf is not None:
                    values_pred = data.old_values + torch.clamp(
                        values - data.old_values, -clip_range_vf, clip_range_vf
                    )
                if local:
                    value_loss = (((data.returns - values_pred) ** 2) * mask).sum() / cells
                else:
                    value_loss = F.mse_loss(data.returns, values_pred)
                entropy_loss = -(ent * mask).sum() / cells
                loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss

                with torch.no_grad():
                    kl = (((ratio - 1) - log_ratio) * mask).sum() / cells
                    clip_frac = (((ratio - 1).abs() > clip_range).float() * mask).sum() / cells
                approx_kl_divs.append(kl.item())
                pg_losses.append(policy_loss.item())
                value_losses.append(value_loss.item())
                entropy_losses.append(entropy_loss.item())
                clip_fractions.append(clip_frac.item())
                if self.target_kl is not None and kl.item() > 1.5 * self.target_kl:
                    continue_training = False
                    break

                self.policy.optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()
            self._n_updates += 1
            if not continue_training:
                break

        explained_var = explained_variance(
            self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten()
        )
        rec = self.logger.record
        rec("train/entropy_loss", float(np.mean(entropy_losses)))
        rec("train/policy_gradient_loss", float(np.mean(pg_losses)))
        rec("train/value_loss", float(np.mean(value_losses)))
        rec("train/approx_kl", float(np.mean(approx_kl_divs)) if approx_kl_divs else 0.0)
        rec("train/clip_fraction", float(np.mean(clip_fractions)))
        rec("train/loss", loss.item())
        rec("train/explained_variance", float(explained_var))
        rec("train/std", torch.exp(self.policy.log_std).mean().item())
        rec("train/n_updates", self._n_updates, exclude="tensorboard")
        rec("train/clip_range", clip_range)
        if clip_range_vf is not None:
            rec("train/clip_range_vf", clip_range_vf)
