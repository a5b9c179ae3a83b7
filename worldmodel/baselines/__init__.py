"""Baseline world models sharing one batch interface with MobiWM (paper §5.1.2, §5.6, Table 1).

Every model here follows ``WorldModel`` (``interface``): ``history`` (``H``) and ``horizon``
(``P``) slots, ``predict_batch(batch) → [B, P, N]`` traffic (MB per slot) from a window batch of
``T = H + P`` slots, and ``rollout_batch(batch, n_chunks) → [B, K·P, N]`` feeding its own
predictions back as history (Eq. 5). Both read only ``traffic[:, :H]``; inactive and padded
cells are predicted as exactly 0.

* copies of the past (``naive``): ``Persistence``, ``SeasonalNaive`` (copy yesterday);
* learned, one per family of the paper's Table 1, trained by ``worldmodel.train --arch NAME``
  with the same data, loss and validation-based selection as MobiWM:

  - ``gru`` — ``GRUWorldModel``: a per-cell GRU encoder/decoder (action-conditioned traffic
    predictors, the ``-WM`` style);
  - ``itransformer`` — ``ITransformerWM``: one token per cell embedding its whole history and
    its actions, attention across cells (spatio-temporal forecasters);
  - ``rssm`` — ``RSSMWorldModel``: a DreamerV3-style recurrent state-space model
    (general world models);
  - ``tdmpc`` — ``TDMPCWorldModel``: a TD-MPC2-style latent dynamics model with SimNorm
    latents and multi-step latent consistency (general world models);
* ``MobiWMAdapter`` / ``as_world_model`` — a ``MobiWM`` in this interface.

Static-MobiWM is ``MobiWM`` with ``ModelConfig.use_actions=False``, not a class here.
``BASELINES`` / ``build_baseline`` build the baselines by name; ``save_baseline`` /
``load_baseline`` store a learned baseline in the layout of MobiWM checkpoints
(``model.safetensors`` + ``config.json``); ``save_world_model`` / ``load_world_model`` dispatch
on the model class / the checkpoint's ``format``.
"""

from worldmodel.baselines.gru import GRU_INPUTS, GRUConfig, GRUWorldModel
from worldmodel.baselines.interface import (
    TIME_KEYS,
    Batch,
    BatchWorldModel,
    MobiWMAdapter,
    WorldModel,
    align_batch,
    as_world_model,
    check_window,
    future_valid,
    slice_window,
)
from worldmodel.baselines.itransformer import ITransformerConfig, ITransformerWM
from worldmodel.baselines.learned import (
    TIME_FEATURES,
    BaselineConfig,
    LearnedWorldModel,
    MapInputs,
)
from worldmodel.baselines.naive import Persistence, SeasonalNaive
from worldmodel.baselines.registry import (
    BASELINE_FORMAT,
    BASELINE_FORMAT_VERSION,
    BASELINES,
    LEARNED,
    build_baseline,
    load_baseline,
    load_world_model,
    save_baseline,
    save_world_model,
)
from worldmodel.baselines.rssm import RSSMConfig, RSSMWorldModel
from worldmodel.baselines.tdmpc import TDMPCConfig, TDMPCWorldModel

__all__ = [
    "BASELINES",
    "BASELINE_FORMAT",
    "BASELINE_FORMAT_VERSION",
    "GRU_INPUTS",
    "LEARNED",
    "TIME_FEATURES",
    "TIME_KEYS",
    "BaselineConfig",
    "Batch",
    "BatchWorldModel",
    "GRUConfig",
    "GRUWorldModel",
    "ITransformerConfig",
    "ITransformerWM",
    "LearnedWorldModel",
    "MapInputs",
    "MobiWMAdapter",
    "Persistence",
    "RSSMConfig",
    "RSSMWorldModel",
    "SeasonalNaive",
    "TDMPCConfig",
    "TDMPCWorldModel",
    "WorldModel",
    "align_batch",
    "as_world_model",
    "build_baseline",
    "check_window",
    "future_valid",
    "load_baseline",
    "load_world_model",
    "save_baseline",
    "save_world_model",
    "slice_window",
]
