"""Policies for PPO: the per-cell shared policy, and loading a trained policy as a controller.

``CellSharedPolicy`` (``--policy shared``) applies the same weights to every cell, so one set of
weights works on maps of any size (``transfer_policy`` moves it to another env):

1. per-cell encoder: the cell's traffic history, parameters, target, load error (traffic −
   target, log scale), mask, the time features and two map-level numbers (mean traffic and
   target over active cells) → ``hidden`` features (MLP);
2. ``n_layers`` rounds of attention message passing over each cell's ``n_neighbours`` nearest
   cells (cell coordinates from the env; cells of the same site included), with edge
   features from the relative position (metres / ``distance_scale_m``, embedded once per map)
   and the beam geometry (angle between the bearing to the neighbour and each cell's azimuth),
   multi-head, residual + LayerNorm + feed-forward;
3. actor: one linear head per cell → its 4 action means; a state-independent log-std per
   parameter (4 numbers, shared by all cells); critic: DeepSets, a per-cell MLP over the raw
   cell inputs and the message-passing features, masked mean and max over cells, MLP.

It reads the env's *raw* observation (bounded features, and the mask block must stay 0/1), so
train it without ``VecNormalize`` observation normalisation (``train_ppo`` does so).

``TrainedPolicy`` wraps a saved PPO run (``model.zip`` + ``vecnormalize.pkl``) in the controller
interface of ``agents.baselines`` (deterministic actions).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from mobiwm_env.spaces import PARAM_FEATURES, TIME_FEATURES, obs_layout

GEO_FEATURES = 3
"""Static edge features: dx, dy, distance of the sending cell, in units of ``distance_scale_m``."""
BEAM_FEATURES = 4
"""Dynamic edge features: cos / sin of the angle between the bearing to the neighbour and the
azimuth of the receiving cell, and the same for the sending cell (0 for co-sited cells)."""


def neighbour_index(cell_xy_m: np.ndarray, n_cells: int, max_cells: int, k: int) -> np.ndarray:
    """``[M, K]`` indices of each cell's ``K`` nearest real cells (self excluded); padded cells
    and missing neighbours point to themselves (masked in ``CellGraphExtractor``)."""
    xy = np.asarray(cell_xy_m, dtype=np.float64)[:n_cells]
    idx = np.tile(np.arange(max_cells)[:, None], (1, k))
    if n_cells <= 1:
        return idx
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    kk = min(k, n_cells - 1)
    idx[:n_cells, :kk] = np.argsort(d, axis=1, kind="stable")[:, :kk]
    return idx


class CellGraphExtractor(BaseFeaturesExtractor):
    """Per-cell features ``[B, M * (hidden + inputs + 1)]``: the message-passing features, the
    raw per-cell inputs (for the critic) and the mask, per cell."""

    def __init__(
        self,
        observation_space: gym.spaces.Box,
        max_cells: int,
        history_slots: int,
        cell_xy_m: list[list[float]],
        hidden: int = 64,
        n_layers: int = 2,
        n_heads: int = 2,
        n_neighbours: int = 8,
        distance_scale_m: float = 500.0,
    ) -> None:
        d_in = int(history_slots) + PARAM_FEATURES + 3 + TIME_FEATURES + 2
        super().__init__(observation_space, features_dim=int(max_cells) * (hidden + d_in + 1))
        if hidden % n_heads:
            raise ValueError(f"hidden={hidden} must be a multiple of n_heads={n_heads}")
        self.max_cells, self.history_slots = int(max_cells), int(history_slots)
        self.hidden, self.n_heads, self.n_neighbours = hidden, n_heads, int(n_neighbours)
        self.distance_scale_m = float(distance_scale_m)
        self.n_inputs = d_in
        self.encoder = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.layers = nn.ModuleList(_MessageLayer(hidden, n_heads) for _ in range(n_layers))
        self.set_cells(cell_xy_m, len(cell_xy_m))

    def set_cells(self, cell_xy_m: Any, n_cells: int) -> None:
        """Set the map: coordinates ``[N, 2]`` metres of the ``N`` real cells."""
        m, k = self.max_cells, self.n_neighbours
        xy = np.zeros((m, 2))
        xy[:n_cells] = np.asarray(cell_xy_m, dtype=np.float64)[:n_cells]
        nbr = neighbour_index(xy, n_cells, m, k)
        valid = nbr != np.arange(m)[:, None]
        rel = (xy[nbr] - xy[:, None]) / self.distance_scale_m  # [M, K, 2]
        dist = np.linalg.norm(rel, axis=-1, keepdims=True)
        self.register_buffer("nbr", torch.as_tensor(nbr, dtype=torch.long), persistent=False)
        self.register_buffer("nbr_valid", torch.as_tensor(valid), persistent=False)
        geo = np.concatenate([rel, dist], axis=-1).astype(np.float32)
        bearing = np.where(dist > 1e-9, rel / np.maximum(dist, 1e-9), 0.0).astype(np.float32)
        self.register_buffer("geo", torch.as_tensor(geo), persistent=False)
        self.register_buffer("bearing", torch.as_tensor(bearing), persistent=False)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        b, m, hh = obs.shape[0], self.max_cells, self.history_slots
        lay = obs_layout(m, hh)
        traffic = obs[:, lay["traffic"]].reshape(b, m, hh)
        params = obs[:, lay["params"]].reshape(b, m, PARAM_FEATURES)
        target = obs[:, lay["target"]].reshape(b, m, 1)
        mask = obs[:, lay["mask"]].reshape(b, m, 1)
        time = obs[:, lay["time"]].reshape(b, 1, TIME_FEATURES).expand(b, m, TIME_FEATURES)
        count = mask.sum(1, keepdim=True).clamp_min(1.0)
        mean_traffic = (traffic[..., -1:] * mask).sum(1, keepdim=True) / count
        mean_target = (target * mask).sum(1, keepdim=True) / count
        err = traffic[..., -1:] - target
        x = torch.cat(
            [traffic, params, target, err, mask, time,
             mean_traffic.expand(b, m, 1), mean_target.expand(b, m, 1)],
            dim=-1,
        )  # fmt: skip
        h = self.encoder(x) * mask
        # beam geometry: is the neighbour in front of my antenna / am I in front of its antenna?
        az = params[..., 1:3]  # [B, M, 2] = sin, cos of the azimuth (compass: east, north)
        bx, by = self.bearing[..., 0], self.bearing[..., 1]  # [M, K] unit vector to the neighbour
        si, ci = az[..., 0:1], az[..., 1:2]  # [B, M, 1]
        sj, cj = az[:, self.nbr, 0], az[:, self.nbr, 1]  # [B, M, K]
        beam = torch.stack(
            [bx * si + by * ci, bx * ci - by * si, -(bx * sj + by * cj), -(bx * cj - by * sj)],
            dim=-1,
        )  # [B, M, K, 4]
        valid = self.nbr_valid[None] & (mask[:, self.nbr, 0] > 0)  # [B, M, K]
        for layer in self.layers:
            h = layer(h, self.nbr, self.geo, beam, valid) * mask
        return torch.cat([h, x * mask, mask], dim=-1).reshape(b, -1)


DENSE_MAX_CELLS = 256
"""Maps of at most this many cells score all cell pairs with one batched matmul and pick the
neighbours from it; larger maps gather each cell's neighbours (memory ``B·M·K·C``)."""


class _MessageLayer(nn.Module):
    """Multi-head attention of each cell over its ``K`` neighbours, with edge features.

    The key and value of neighbour ``j`` seen from cell ``i`` are ``kv(h_j) + geo(e_ij) +
    beam(b_ij)``. All three terms are linear in what attention does with them, so they are
    scored and summed separately: node keys and values ``[B, M, C]`` (never copied per edge), the
    static geometry embedding ``[M, K, 2C]`` (no batch axis) and the 4 beam features through the
    beam weight. Nothing of size ``B·M·K·C`` is built on maps of ≤ ``DENSE_MAX_CELLS`` cells.
    """

    def __init__(self, hidden: int, n_heads: int) -> None:
        super().__init__()
        self.h, self.d = n_heads, hidden // n_heads
        self.q = nn.Linear(hidden, hidden)
        self.kv = nn.Linear(hidden, 2 * hidden)
        self.geo = nn.Sequential(
            nn.Linear(GEO_FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, 2 * hidden)
        )
        self.beam = nn.Linear(BEAM_FEATURES, 2 * hidden, bias=False)
        self.out = nn.Linear(hidden, hidden)
        self.norm1 = nn.LayerNorm(hidden)
        self.norm2 = nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(
            nn.Linear(hidden, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, hidden)
        )

    def forward(
        self,
        h: torch.Tensor,
        nbr: torch.Tensor,
        geo: torch.Tensor,
        beam: torch.Tensor,
        valid: torch.Tensor,
    ) -> torch.Tensor:
        """``h [B, M, C]``, ``nbr [M, K]``, ``geo [M, K, 3]`` (static, embedded once per call
        without the batch axis), ``beam [B, M, K, 4]``, ``valid [B, M, K]``."""
        b, m, c = h.shape
        k, nh, d = nbr.shape[1], self.h, self.d
        q = self.q(h).reshape(b, m, nh, d)
        key, val = self.kv(h).reshape(b, m, 2, nh, d).unbind(2)  # [B, M, heads, d] each
        g_key, g_val = self.geo(geo).reshape(m, k, 2, nh, d).unbind(2)  # [M, K, heads, d]
        w_key, w_val = self.beam.weight.reshape(2, nh, d, BEAM_FEATURES).unbind(0)
        dense = m <= DENSE_MAX_CELLS
        if dense:  # all pairs [B, heads, M, M], then each cell's K neighbours
            pair = torch.einsum("bihd,bjhd->bhij", q, key)
            rows = torch.arange(m, device=h.device)[:, None]
            node = pair[:, :, rows, nbr].permute(0, 2, 3, 1)  # [B, M, K, heads]
        else:
            node = torch.einsum("bmhd,bmkhd->bmkh", q, key[:, nbr])
        logits = (
            node
            + torch.einsum("bmhd,mkhd->bmkh", q, g_key)
            + torch.einsum("bmkf,bmhf->bmkh", beam, torch.einsum("bmhd,hdf->bmhf", q, w_key))
        ) / d**0.5
        logits = logits.masked_fill(~valid[..., None], -1e9)
        att = torch.softmax(logits, dim=2) * valid[..., None]  # [B, M, K, heads]
        if dense:  # scatter the weights into [B, heads, M, M] and mix the node values
            a = att.permute(0, 3, 1, 2)
            full = torch.zeros(b, nh, m, m, dtype=h.dtype, device=h.device)
            full = full.scatter_add(3, nbr.expand(b, nh, m, k), a)
            msg = torch.einsum("bhij,bjhd->bihd", full, val)
        else:
            msg = torch.einsum("bmkh,bmkhd->bmhd", att, val[:, nbr])
        msg = (
            msg
            + torch.einsum("bmkh,mkhd->bmhd", att, g_val)
            + torch.einsum("hdf,bmhf->bmhd", w_val, torch.einsum("bmkh,bmkf->bmhf", att, beam))
        ).reshape(b, m, c)
        h = self.norm1(h + self.out(msg))
        return self.norm2(h + self.ffn(h))


class _CellLatent(nn.Module):
    """Actor latent = the per-cell features; critic latent = a DeepSets pooling (masked mean
    and max) of a per-cell MLP over the raw cell inputs and the message-passing features."""

    def __init__(self, max_cells: int, hidden: int, n_inputs: int) -> None:
        super().__init__()
        self.max_cells, self.hidden, self.n_inputs = max_cells, hidden, n_inputs
        self.width = hidden + n_inputs + 1
        self.latent_dim_pi = max_cells * self.width
        self.latent_dim_vf = 2 * hidden
        self.phi = nn.Sequential(
            nn.Linear(hidden + n_inputs, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, hidden)
        )
        self.rho = nn.Sequential(nn.Linear(2 * hidden, 2 * hidden), nn.ReLU())
        self.cell_value = nn.Linear(hidden, 1)  # per-cell critic (agents.cell_ppo, local credit)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        return features

    def forward_cell_critic(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, M]``: each cell's value (of its own or its neighbourhood's rewards)."""
        x = features.reshape(features.shape[0], -1, self.width)
        return self.cell_value(self.phi(x[..., :-1]))[..., 0]

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        x = features.reshape(features.shape[0], -1, self.width)
        z, mask = self.phi(x[..., :-1]), x[..., -1:]
        mean = (z * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        peak = (z - 1e4 * (1 - mask)).amax(1)
        return self.rho(torch.cat([mean, peak], dim=-1))


class _PerCellHead(nn.Module):
    """Linear ``hidden → 4`` on every cell's message-passing features → ``[B, M*4]``."""

    def __init__(self, hidden: int, width: int) -> None:
        super().__init__()
        self.hidden, self.width = hidden, width
        self.linear = nn.Linear(hidden, 4)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        x = latent.reshape(latent.shape[0], -1, self.width)[..., : self.hidden]
        return self.linear(x).reshape(latent.shape[0], -1)


class CellSharedPolicy(ActorCriticPolicy):
    """Actor-critic with ``CellGraphExtractor`` and per-cell action heads (module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("features_extractor_class", CellGraphExtractor)
        kwargs["share_features_extractor"] = True
        super().__init__(*args, **kwargs)

    def _build_mlp_extractor(self) -> None:
        fe = self.features_extractor
        self.mlp_extractor = _CellLatent(fe.max_cells, fe.hidden, fe.n_inputs)

    def _build(self, lr_schedule) -> None:
        super()._build(lr_schedule)
        fe = self.features_extractor
        self.action_net = _PerCellHead(fe.hidden, self.mlp_extractor.width)
        nn.init.orthogonal_(self.action_net.linear.weight, gain=0.01)
        nn.init.zeros_(self.action_net.linear.bias)
        self.log_std = nn.Parameter(torch.full((4,), float(self.log_std_init)))
        self.optimizer = self.optimizer_class(
            self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )

    def predict_cell_values(self, obs: torch.Tensor) -> torch.Tensor:
        """``[B, M]`` per-cell values (the per-cell critic of ``agents.cell_ppo``)."""
        return self.mlp_extractor.forward_cell_critic(self.extract_features(obs))

    def _cell_dist(self, obs: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """The shared features and the action distribution of ``obs`` (one pass)."""
        features = self.extract_features(obs)
        dist = self._get_action_dist_from_latent(self.mlp_extractor.forward_actor(features))
        return features, dist

    def forward_cells(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sampled actions ``[B, M*4]`` with their per-cell values and log-probabilities
        ``[B, M]`` (one pass; the rollouts of ``agents.cell_ppo``'s neighbourhood credit)."""
        features, dist = self._cell_dist(obs)
        actions = dist.get_actions()
        logp = dist.distribution.log_prob(actions).reshape(actions.shape[0], -1, 4).sum(-1)
        return actions, self.mlp_extractor.forward_cell_critic(features), logp

    def evaluate_cells(
        self, obs: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-cell values ``[B, M]``, log-probabilities ``[B, M]`` and entropies ``[B, M]``
        of ``actions [B, M*4]`` (one pass through the shared features)."""
        features, dist = self._cell_dist(obs)
        b = actions.shape[0]
        logp = dist.distribution.log_prob(actions).reshape(b, -1, 4).sum(-1)
        ent = dist.distribution.entropy().reshape(b, -1, 4).sum(-1)
        return self.mlp_extractor.forward_cell_critic(features), logp, ent

    def _get_action_dist_from_latent(self, latent_pi: torch.Tensor):
        mean_actions = self.action_net(latent_pi)
        log_std = self.log_std.repeat(mean_actions.shape[-1] // 4)
        return self.action_dist.proba_distribution(mean_actions, log_std)


def shared_policy_kwargs(env: Any, **extractor: Any) -> dict[str, Any]:
    """``policy_kwargs`` of ``CellSharedPolicy`` for an env (reads its map and spaces)."""
    from agents.envs import find_core

    core = find_core(env)
    return {
        "features_extractor_class": CellGraphExtractor,
        "features_extractor_kwargs": {
            "max_cells": int(core.max_cells),
            "history_slots": int(core.config.history_slots),
            "cell_xy_m": np.asarray(core.scenario.cell_xy_m, dtype=float).tolist(),
            **extractor,
        },
    }


def _map_kwargs(policy_kwargs: dict[str, Any], env: Any) -> dict[str, Any]:
    """``policy_kwargs`` of a shared policy with the map of ``env`` (cells, coordinates)."""
    kwargs = dict(policy_kwargs)
    fe_kwargs = {
        k: v
        for k, v in kwargs.get("features_extractor_kwargs", {}).items()
        if k not in ("max_cells", "history_slots", "cell_xy_m")
    }
    kwargs.update(shared_policy_kwargs(env, **fe_kwargs))
    return kwargs


def transfer_policy(model: Any, env: Any) -> Any:
    """A new PPO on ``env`` (a map of any size) with the weights of a shared-policy ``model``."""
    from stable_baselines3 import PPO

    new = PPO(
        CellSharedPolicy, env, policy_kwargs=_map_kwargs(model.policy_kwargs, env), device="cpu"
    )
    new.policy.load_state_dict(model.policy.state_dict())
    return new


def policy_for_map(model: Any, env: Any) -> CellSharedPolicy:
    """The shared policy of ``model`` rebuilt for the map of ``env`` (any number of cells and
    layout; a Gymnasium vector env, an SB3 env or a wrapper), weights unchanged: zero-shot
    transfer. Raises ``ValueError`` for a policy that is not a ``CellSharedPolicy``."""
    if not isinstance(model.policy, CellSharedPolicy):
        raise ValueError(
            f"only the shared policy (--policy shared) runs on another map; this one is "
            f"{type(model.policy).__name__}"
        )
    from agents.envs import find_core

    core = find_core(env)
    kwargs = _map_kwargs(model.policy_kwargs, env)
    policy = CellSharedPolicy(core.observation_space, core.action_space, lambda _: 0.0, **kwargs)
    policy.load_state_dict(model.policy.state_dict())
    policy.set_training_mode(False)
    return policy


# ============================================================================ controller
class TrainedPolicy:
    """A saved PPO run as a controller: ``predict(obs, info, state) -> action``.

    ``path``: a run folder (``model.zip`` and ``vecnormalize.pkl`` inside) or a ``.zip`` file
    (``vecnormalize.pkl`` beside it, or ``<name>_vecnormalize.pkl`` for checkpoints).
    ``env``: the env it will act in; a shared policy trained on another map (other cells or
    layout) is rebuilt for this one (``policy_for_map``: zero-shot transfer).
    """

    def __init__(self, path: str | Path, deterministic: bool = True, env: Any = None) -> None:
        from stable_baselines3 import PPO

        path = Path(path)
        model_path = path / "model.zip" if path.is_dir() else path
        if not model_path.is_file():
            raise FileNotFoundError(f"{model_path}: no saved policy (model.zip) here")
        self.path = model_path
        self.model = PPO.load(model_path, device="cpu")
        self.deterministic = deterministic
        self.vecnormalize = None
        for cand in (
            model_path.parent / "vecnormalize.pkl",
            model_path.with_name(model_path.stem.replace("ppo_", "ppo_vecnormalize_", 1) + ".pkl"),
        ):
            if cand.is_file():
                with open(cand, "rb") as f:
                    self.vecnormalize = pickle.load(f)  # SB3's own format
                self.vecnormalize.training = False
                break
        run_cfg = model_path.parent / "config.json"
        label = "PPO"
        if run_cfg.is_file():
            meta = json.loads(run_cfg.read_text(encoding="utf-8"))
            label = meta.get("label", label)
        self.name = label
        self.policy = self.model.policy
        if env is not None and _other_map(self.model, env):
            self.policy = policy_for_map(self.model, env)

    def reset(self) -> None:
        pass

    def predict(self, obs, info=None, state=None) -> np.ndarray:
        o = np.asarray(obs, dtype=np.float32)
        if self.vecnormalize is not None:
            o = self.vecnormalize.normalize_obs(o).astype(np.float32)
        act, _ = self.policy.predict(o, deterministic=self.deterministic)
        return np.asarray(act, dtype=np.float32)


def _other_map(model: Any, env: Any) -> bool:
    """Whether ``env``'s map differs from the one ``model``'s shared policy was built for."""
    from agents.envs import find_core

    if not isinstance(model.policy, CellSharedPolicy):
        return False
    core = find_core(env)
    fe = model.policy_kwargs.get("features_extractor_kwargs", {})
    xy = np.asarray(fe.get("cell_xy_m", []), dtype=float)
    here = np.asarray(core.scenario.cell_xy_m, dtype=float)
    return (
        int(fe.get("max_cells", -1)) != int(core.max_cells)
        or xy.shape != here.shape
        or not np.allclose(xy, here)
    )
