"""RSSM world model: a DreamerV3-style recurrent state-space model over a map's cells.

``RSSMWorldModel`` follows the RSSM of DreamerV3 (Hafner et al. 2023, "Mastering Diverse
Domains through World Models"): a deterministic state ``h_t`` (``nn.GRUCell``) and a stochastic
state ``z_t`` of ``groups`` categoricals with ``classes`` classes each (1% unimix,
straight-through samples), a prior ``p(z_t | h_t)``, a posterior ``q(z_t | h_t, x_t)`` and a
decoder ``[h_t, z_t] → x_t``, trained with reconstruction plus KL balancing with free bits.

What it reads, per cell and slot: the action features (``normalize_actions``), the time
features, the cell position and, with ``season > 0``, the cell's normalised traffic one season
earlier (slot ``t − season``, always inside the history); the observation ``x_t`` is the cell's
normalised traffic (``TrafficNormalizer``). It scans the last ``context`` history slots with the
posterior (observed traffic) and then imagines the ``P`` future slots with the prior only,
decoding each into the cell's traffic: the prediction. It never reads ``traffic[:, H:]``.

What it trains on: the trainer's prediction loss on the imagined future slots, plus (while
training, as ``aux_loss``) ``recon_weight`` × the posterior reconstruction MSE on the scanned
history slots and ``kl_dyn · max(free_bits, KL(sg(post) ‖ prior)) + kl_rep · max(free_bits,
KL(post ‖ sg(prior)))`` (nats per cell-step, summed over groups), both averaged over the real
active cell-steps.

Departures from DreamerV3: no reward, continue, actor or critic heads (a world model only); no
symlog (traffic is already log-normalised); the decoder predicts the traffic as a residual from
the last history value ``z_hist[:, -1]`` (persistence is a strong base); and the state is a set
of per-cell states (weights shared by all cells) coupled by a mean-field map message: each
cell's GRU input includes the mean over the map's real cells of an embedding of their previous
states, so padded cells never affect real ones while the map evolves as one state. In eval mode
the categoricals take their mode (one-hot argmax), so predictions are deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from worldmodel.baselines.interface import Batch
from worldmodel.baselines.learned import (
    TIME_FEATURES,
    BaselineConfig,
    LearnedWorldModel,
    MapInputs,
    check_non_negative,
    check_season_context,
    check_unit_interval,
)
from worldmodel.model.normalize import ACTION_FEATURES


@dataclass(frozen=True)
class RSSMConfig(BaselineConfig):
    """Architecture and losses of ``RSSMWorldModel``. Every field is saved in the checkpoint."""

    history: int = 104
    """``H``: history slots; must be >= ``season + context``."""
    context: int = 8
    """History slots scanned by the recurrence (the posterior) before imagining the future."""
    season: int = 96
    """Slots of the seasonal input (traffic at ``t − season``); 0 disables it, else >= ``P``."""
    deter: int = 128
    """Width of the deterministic (GRU) state ``h``."""
    hidden: int = 128
    """Width of the MLPs, the embeddings and the map message."""
    groups: int = 16
    """Categorical variables in the stochastic state ``z``."""
    classes: int = 16
    """Classes of each categorical."""
    unimix: float = 0.01
    """Uniform mixture on the categorical probabilities (DreamerV3: 1%)."""
    kl_dyn: float = 0.5
    """Weight of the dynamics KL ``KL(sg(post) ‖ prior)``."""
    kl_rep: float = 0.1
    """Weight of the representation KL ``KL(post ‖ sg(prior))``."""
    free_bits: float = 1.0
    """Each KL term is clipped below at this many nats (per cell-step, summed over groups)."""
    recon_weight: float = 1.0
    """Weight of the posterior reconstruction MSE on the scanned history slots."""
    dropout: float = 0.0
    """Dropout on the GRU input embedding and the decoder input (training only)."""

    positive_fields: ClassVar[tuple[str, ...]] = (
        *BaselineConfig.positive_fields,
        "context",
        "deter",
        "hidden",
        "groups",
        "classes",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        check_unit_interval(self, "dropout", "unimix")
        check_season_context(self)
        if 0 < self.season < self.horizon:
            raise ValueError(
                f"{name}: season must be 0 or >= horizon {self.horizon} (the seasonal input "
                f"must lie in the history), got {self.season}"
            )
        check_non_negative(self, "kl_dyn", "kl_rep", "free_bits", "recon_weight")


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    """Linear → LayerNorm → SiLU → Linear (DreamerV3's MLP block)."""
    return nn.Sequential(
        nn.Linear(n_in, hidden), nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, n_out)
    )


class RSSMWorldModel(LearnedWorldModel):
    """DreamerV3-style RSSM with per-cell states and a mean-field map message (module doc).

    Build with ``RSSMWorldModel(RSSMConfig(...))`` or ``RSSMWorldModel(history=12, ...)``.
    """

    config_class = RSSMConfig
    cfg: RSSMConfig

    def __init__(self, cfg: RSSMConfig | None = None, **overrides) -> None:
        super().__init__(cfg, **overrides)
        cfg = self.cfg
        d, hid, stoch = cfg.deter, cfg.hidden, cfg.groups * cfg.classes
        seasonal = 1 if cfg.season > 0 else 0
        self.n_slot_inputs = ACTION_FEATURES + TIME_FEATURES + 2 + seasonal
        self.message = nn.Sequential(nn.Linear(d + stoch, hid), nn.LayerNorm(hid), nn.SiLU())
        self.img_in = nn.Sequential(
            nn.Linear(stoch + self.n_slot_inputs + hid, hid), nn.LayerNorm(hid), nn.SiLU()
        )
        self.gru = nn.GRUCell(hid, d)
        self.prior = _mlp(d, hid, stoch)
        self.obs_enc = nn.Sequential(nn.Linear(1 + seasonal, hid), nn.LayerNorm(hid), nn.SiLU())
        self.post = _mlp(d + hid, hid, stoch)
        self.decoder = _mlp(d + stoch, hid, 1)
        self.drop = nn.Dropout(cfg.dropout)

    # ------------------------------------------------------------------ latent helpers
    def _dist(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits ``[M, G·K]`` → log-probabilities ``[M, G, K]`` with the uniform mixture."""
        cfg = self.cfg
        probs = logits.reshape(-1, cfg.groups, cfg.classes).float().softmax(-1)
        probs = (1.0 - cfg.unimix) * probs + cfg.unimix / cfg.classes
        return probs.log()

    def _sample(self, logp: torch.Tensor) -> torch.Tensor:
        """One-hot ``[M, G·K]``: a sample (training) or the mode (eval), straight-through."""
        probs = logp.exp()
        if self.training:
            flat = probs.reshape(-1, self.cfg.classes)
            idx = torch.multinomial(flat, 1).reshape(probs.shape[:-1])
        else:
            idx = probs.argmax(-1)
        onehot = F.one_hot(idx, self.cfg.classes).to(probs.dtype)
        return (onehot + probs - probs.detach()).flatten(1)

    def _decode(self, h: torch.Tensor, z: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """Normalised traffic ``[M]``: ``base`` (last history value) plus the decoded change."""
        return base + self.decoder(self.drop(torch.cat([h, z], -1))).squeeze(-1)

    # ------------------------------------------------------------------ inputs
    def _slot_inputs(self, x: MapInputs) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-step cell inputs ``[L, B·N, U]`` over the scanned slots and the seasonal traffic
        ``[L, B·N]`` (None without a season); ``L = context + P``."""
        cfg = self.cfg
        h, c = cfg.history, cfg.context
        b, t, n, _ = x.feats.shape
        length = t - (h - c)
        parts = [
            x.feats[:, h - c :],
            x.time[:, h - c :, None, :].expand(b, length, n, TIME_FEATURES),
            x.xy[:, None].expand(b, length, n, 2),
        ]
        seasonal = None
        if cfg.season > 0:
            s = cfg.season
            seasonal = x.z_hist[:, h - c - s : t - s]  # [B, L, N], inside the history
            parts.append(seasonal[..., None])
            seasonal = seasonal.transpose(0, 1).reshape(length, b * n)
        u = torch.cat(parts, dim=-1).transpose(0, 1).reshape(length, b * n, -1)
        return u, seasonal

    # ------------------------------------------------------------------ forward
    def forward(self, batch: Batch) -> torch.Tensor:
        """Normalised prediction ``[B, P, N]`` of the last ``P`` slots of a window batch.

        Reads ``traffic[:, :H]`` only; all ``T`` slots of actions, active flags and time.
        While training also sets ``aux_loss`` / ``aux_metrics`` (reconstruction and KL terms).
        """
        cfg = self.cfg
        h_len, c, p = cfg.history, cfg.context, cfg.horizon
        x = self.map_inputs(batch)
        b, n = x.mask.shape
        m = b * n
        dev = x.z_hist.device
        u, seasonal = self._slot_inputs(x)
        mask = x.mask[:, :, None]  # [B, N, 1]
        count = x.mask.sum(1).clamp_min(1)[:, None, None].to(u.dtype)
        base = x.z_hist[:, -1].reshape(m)
        obs = x.z_hist[:, h_len - c :].transpose(0, 1).reshape(c, m)

        h = torch.zeros(m, cfg.deter, device=dev)
        z = torch.zeros(m, cfg.groups * cfg.classes, device=dev)
        recon, post_lp, prior_lp, preds = [], [], [], []
        for i in range(c + p):
            e = self.message(torch.cat([h, z], -1)).reshape(b, n, -1)
            msg = torch.where(mask, e, torch.zeros((), dtype=e.dtype)).sum(1, keepdim=True)
            msg = (msg / count).expand(b, n, -1).reshape(m, -1)
            h = self.gru(self.drop(self.img_in(torch.cat([z, u[i], msg], -1))), h)
            # the prior of an observed slot only enters the KL (training)
            prior = self._dist(self.prior(h)) if i >= c or self.training else None
            if i < c:  # observed history slot: posterior
                o = obs[i][:, None] if seasonal is None else torch.stack([obs[i], seasonal[i]], -1)
                post = self._dist(self.post(torch.cat([h, self.obs_enc(o)], -1)))
                z = self._sample(post)
                if self.training:
                    recon.append(self._decode(h, z, base))
                    post_lp.append(post)
                    prior_lp.append(prior)
            else:  # future slot: imagination from the prior
                z = self._sample(prior)
                preds.append(self._decode(h, z, base))
        pred = torch.stack(preds, 0).reshape(p, b, n).transpose(0, 1)
        if self.training:
            self._aux(x, obs, torch.stack(recon), torch.stack(post_lp), torch.stack(prior_lp))
        else:
            self.aux_loss, self.aux_metrics = None, {}
        return self.finish(pred, x)

    def _aux(
        self,
        x: MapInputs,
        target: torch.Tensor,
        recon: torch.Tensor,
        post: torch.Tensor,
        prior: torch.Tensor,
    ) -> None:
        """Reconstruction MSE and balanced KLs with free bits over real active history
        cell-steps (``[C, B·N]`` / ``[C, B·N, G, K]`` inputs) → ``aux_loss``, ``aux_metrics``."""
        cfg = self.cfg
        h_len, c = cfg.history, cfg.context
        valid = x.valid[:, h_len - c : h_len].transpose(0, 1).reshape(c, -1)
        count = valid.sum().clamp_min(1)

        def mean(v: torch.Tensor) -> torch.Tensor:
            return torch.where(valid, v, torch.zeros((), dtype=v.dtype)).sum() / count

        p_post = post.exp()
        rec = mean((recon - target) ** 2)
        dyn_kl = (p_post.detach() * (post.detach() - prior)).sum((-1, -2))
        rep_kl = (p_post * (post - prior.detach())).sum((-1, -2))
        dyn = mean(dyn_kl.clamp_min(cfg.free_bits))
        rep = mean(rep_kl.clamp_min(cfg.free_bits))
        self.aux_loss = cfg.recon_weight * rec + cfg.kl_dyn * dyn + cfg.kl_rep * rep
        self.aux_metrics = {
            "recon": float(rec.detach()),
            "kl_dyn": float(dyn.detach()),
            "kl_rep": float(rep.detach()),
            "kl": float(mean(dyn_kl.detach())),
        }
