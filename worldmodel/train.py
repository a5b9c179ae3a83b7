"""Train MobiWM (or a baseline world model) on a generated dataset.

    python -m worldmodel.train --data data/default --out runs/wm-M --preset M
    python -m worldmodel.train --data data/default --out runs/wm-M --resume      # continue
    torchrun --nproc_per_node 2 -m worldmodel.train --data ... --out ...        # DDP (gloo)

Loss: masked MSE in the model's normalised traffic space, summed over ``n_chunks`` chunks where
chunk ``k > 0`` reads the model's *own* predictions as history (multi-chunk training keeps long
rollouts stable). AdamW, linear warm-up then cosine decay, gradient clipping, TensorBoard
(``train/``, ``val/``, ``charts/``), a progress bar, early stopping on validation loss.

The run folder holds ``config.json`` (the resolved config and command), ``best/`` and
``last/`` checkpoints (``model.safetensors`` + ``config.json``), ``trainer_state.json`` and
``optimizer.safetensors`` / ``rng.safetensors`` for ``--resume`` (exact continuation: same
batches, same dropout RNG, same optimizer state and schedule), ``result.json`` and ``tb/``
TensorBoard logs. Every file is written atomically.

Resume points are the validations (every ``eval_every`` steps) and the step where a run stops
(``max_minutes``, ``stop_after``, early stopping). ``--stop-after N`` ends an invocation after
``N`` steps without touching the schedule (``lr_at`` still decays to 0 at ``max_steps``), which
is how a preempted job or a test interrupts a run.

Multi-process (DDP, gloo): every rank trains on its own shard of each epoch; only rank 0
writes files and evaluates, and it broadcasts every stop decision (validation loss, wall time),
so all ranks run exactly the same number of steps. The process group is destroyed at the end.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from worldmodel.baselines import load_world_model, save_world_model
from worldmodel.chunk_loss import (  # noqa: F401  (re-exported: the trainer's loss helpers)
    WINDOW_KEYS,
    chunk_batch,
    free_rollout,
    multi_chunk_loss,
    perturb_history,
    skip_slots,
)
from worldmodel.cli import arg, parse_config, to_jsonable, write_json_atomic
from worldmodel.data.dataset import WindowDataset, collate_maps, dataset_summary, load_split
from worldmodel.devices import resolve_device
from worldmodel.model.config import ModelConfig, preset

ABLATIONS = {
    "trn": "use_trn",
    "spe": "use_spe",
    "lg": "use_gates",
    "fa": "use_facility",
    "od": "use_od",
    "poi": "use_poi",
    "actions": "use_actions",
}
"""``--ablate`` names (paper §5.3: w/o TRN, SPE, LG, FA, OD; ``actions`` = Static-MobiWM)."""


@dataclass
class TrainConfig:
    """One world-model training run."""

    data: str = arg("data/default", "dataset folder (with manifest.json)")
    out: str = arg("runs/worldmodel", "run folder (config, checkpoints, TensorBoard)")
    arch: str = arg(
        "mobiwm", "model family: mobiwm | gru | itransformer | rssm | tdmpc (learned baselines)"
    )
    baseline_config: str = arg(
        "",
        "learned baselines: a JSON object of config fields beyond history, horizon and actions, "
        'e.g. \'{"d_model": 96, "layers": 3}\' (worldmodel.baselines)',
    )
    preset: str = arg("M", "MobiWM size preset: debug | XS | S | M | L | XL")
    ablate: tuple[str, ...] = arg((), f"components to remove: {', '.join(ABLATIONS)}")
    scenarios: tuple[str, ...] = arg((), "train only on these scenarios (e.g. urban-para)")
    history: int = arg(
        0,
        "H: history slots the model reads (0 = the architecture's default: 8 for mobiwm and gru, "
        "104 for itransformer, rssm and tdmpc; with --season: memory + tokens)",
    )
    season: int = arg(
        0,
        "MobiWM daily memory in slots (96 = one day; 0 = off): the model reads --history "
        "slots, tokenises the last history - season, and gives every token its value one "
        "season earlier (e.g. --history 104 --season 96)",
    )
    horizon: int = arg(4, "P: slots predicted per chunk")
    n_chunks: int = arg(2, "chunks per training window (k > 0 read own predictions)")
    batch_size: int = arg(8, "maps per batch")
    pair_weight: float = arg(
        1.0,
        "weight of the counterfactual pair loss on (map, branch) windows; half of each batch "
        "is then sibling windows (0 = off; no effect on data without branches)",
    )
    season_mix: float = arg(
        -1.0,
        "with --season: fix the anchor's weight α (of yesterday's change; with "
        "--season-anchor damped: of today's level change; ar, ar-adjusted: its decay ρ per slot) at this "
        "value in [0, 1] (-1 = learn it from 0.75)",
    )
    season_anchor: str = arg(
        "difference",
        "with --season: the anchor the output is a residual from: difference (z_last + "
        "α·yesterday's change) | yesterday (yesterday's value; does not integrate chunk to "
        "chunk) | damped (yesterday's value + α·today's level change over yesterday) | ar "
        "(yesterday's value + ρ^k·today's level change at lead k) | ar-adjusted (ar, with "
        "yesterday's last value first moved by the coverage prior's change to today's actions)",
    )
    season_actions: bool = arg(
        False, "with --season: the daily memory also carries yesterday's actions and their change"
    )
    coverage_prior: bool = arg(
        False,
        "MobiWM: add the coverage prior (each cell's log share of the demand under each slot's "
        "antenna parameters: twin antenna pattern, UMa path loss, learnt demand proxy) as an "
        "action feature and as a learnt output term",
    )
    coverage_daily_demand: bool = arg(
        False, "with --coverage-prior: its demand proxy also reads the time of day and weekend"
    )
    coverage_calibrate: int = arg(
        0,
        "with --coverage-prior: fit the demand proxy to the anchor slot's traffic with this many "
        "multiplicative steps and apply the prior's change as a factor on the anchor (0: off)",
    )
    spatial_neighbours: int = arg(
        0,
        "MobiWM: spatial attention over each cell's this many nearest cells (0 = every cell; "
        "linear instead of quadratic in the cells, for large districts and fast env models)",
    )
    coverage_candidates: int = arg(
        0,
        "with --coverage-prior: each pixel shares its demand among its this many nearest cells "
        "only (0 = every cell; cheaper for large maps and fast env models)",
    )
    memory_age: int = arg(
        1,
        "with --season 96: train on daily memories 1..N days old (same slot) and give the "
        "memory its age as an input, for rollouts whose observed memory is days old (1 = off)",
    )
    pushforward: int = arg(
        0,
        "before the --n-chunks loss chunks, roll out 0..N chunks (drawn per step) without "
        "gradient from the true history, so the loss chunks read the model's own predictions as "
        "a rollout does (the pushforward trick); validation always uses N (0 = off)",
    )
    pushforward_from: int = arg(
        0, "with --pushforward: the first training step that rolls out free chunks"
    )
    history_noise: float = arg(
        0.0,
        "training noise on the history traffic: x·exp(σ·n), n = (per-cell offset + per-slot "
        "jitter)/√2, the same for sibling windows (0 = off); teaches the model to recover from "
        "its own rollout errors",
    )
    lr: float = arg(1e-3, "peak learning rate (AdamW)")
    weight_decay: float = arg(0.01, "AdamW weight decay")
    warmup_steps: int = arg(100, "linear warm-up steps")
    max_steps: int = arg(2000, "optimizer steps (cosine decays to 0 at the end)")
    max_minutes: float = arg(0.0, "stop after this wall time (0 = no limit); the best is kept")
    stop_after: int = arg(
        0,
        "stop after this many steps in this invocation (0 = run to max_steps); the schedule "
        "is unchanged and the state is saved for --resume (for tests and preemption)",
    )
    grad_clip: float = arg(1.0, "gradient-norm clip")
    eval_every: int = arg(200, "steps between validations and checkpoints")
    eval_batches: int = arg(16, "validation batches per evaluation")
    log_every: int = arg(10, "steps between TensorBoard train/ and charts/ scalars")
    patience: int = arg(6, "stop after this many validations without improvement (0 = never)")
    dropout: float = arg(0.1, "dropout (MobiWM)")
    seed: int = arg(0, "seed of weights, batch order and dropout")
    threads: int = arg(0, "torch CPU threads (0 = torch default)")
    device: str = arg("cpu", "torch device: cpu | cuda | cuda:N")
    resume: bool = arg(False, "continue the run in --out exactly where it stopped")
    progress: bool = arg(True, "show a progress bar")

    def __post_init__(self) -> None:
        from worldmodel.baselines import LEARNED

        archs = ("mobiwm", *LEARNED)
        if self.arch not in archs:
            raise ValueError(f"arch must be one of {', '.join(archs)}, got {self.arch!r}")
        if self.history == 0:
            self.history = LEARNED[self.arch].config_class().history if self.arch in LEARNED else 8
        bad = [a for a in self.ablate if a not in ABLATIONS]
        if bad:
            raise ValueError(f"unknown --ablate {bad}; choose from {sorted(ABLATIONS)}")
        if self.arch != "mobiwm" and any(a != "actions" for a in self.ablate):
            raise ValueError(
                f"--arch {self.arch} supports only --ablate actions, got {list(self.ablate)}"
            )
        if self.baseline_config and self.arch == "mobiwm":
            raise ValueError("--baseline-config is for the learned baselines, not --arch mobiwm")
        if self.season_anchor == "yesterday" and self.season_mix != -1.0:
            raise ValueError(
                "--season-mix sets α of the difference anchor; --season-anchor yesterday has no α"
            )
        if self.arch != "mobiwm" and self.season:
            raise ValueError(
                f"--season is a MobiWM option; --arch {self.arch} has no daily memory (the "
                "learned baselines set their own in --baseline-config)"
            )
        positive = ("history", "horizon", "n_chunks", "batch_size", "max_steps", "eval_every",
                    "eval_batches", "log_every")  # fmt: skip
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "patience", "stop_after", "threads", "pushforward",
                     "pushforward_from"):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not (self.season_mix == -1.0 or 0.0 <= self.season_mix <= 1.0):
            raise ValueError(f"season_mix must be -1 (learnt) or in [0, 1], got {self.season_mix}")
        if not (self.history_noise >= 0 and math.isfinite(self.history_noise)):
            raise ValueError(f"history_noise must be >= 0, got {self.history_noise}")
        if not (self.pair_weight >= 0 and math.isfinite(self.pair_weight)):
            raise ValueError(f"pair_weight must be >= 0, got {self.pair_weight}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not (self.max_minutes >= 0 and math.isfinite(self.max_minutes)):
            raise ValueError(f"max_minutes must be >= 0, got {self.max_minutes}")
        resolve_device(self.device)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.arch == "mobiwm":
            model_config(self)  # the architecture's own checks (ModelConfig.__post_init__)
        else:
            build_model(self)  # the baseline config's own checks
        if not (self.grad_clip > 0 and math.isfinite(self.grad_clip)):
            raise ValueError(f"grad_clip must be > 0, got {self.grad_clip}")

    @property
    def window(self) -> int:
        return self.history + (self.pushforward + self.n_chunks) * self.horizon


def model_config(cfg: TrainConfig) -> ModelConfig:
    """The MobiWM architecture of a run: the preset plus horizon, history and ablations."""
    mc = preset(cfg.preset)
    flags = {ABLATIONS[a]: False for a in cfg.ablate}
    if cfg.season_mix >= 0:
        flags.update(season_mix_init=cfg.season_mix, season_mix_learnt=False)
    return replace(
        mc, history=cfg.history, horizon=cfg.horizon, season=cfg.season, dropout=cfg.dropout,
        season_anchor=cfg.season_anchor, season_actions=cfg.season_actions,
        coverage_prior=cfg.coverage_prior, coverage_daily_demand=cfg.coverage_daily_demand,
        coverage_calibrate=cfg.coverage_calibrate, coverage_candidates=cfg.coverage_candidates,
        spatial_neighbours=cfg.spatial_neighbours,
        memory_age=cfg.memory_age, **flags,
    )  # fmt: skip


def baseline_overrides(cfg: TrainConfig) -> dict:
    """The ``--baseline-config`` JSON as a dict (``ValueError`` naming what is wrong)."""
    if not cfg.baseline_config:
        return {}
    try:
        extra = json.loads(cfg.baseline_config)
    except json.JSONDecodeError as err:
        raise ValueError(f"--baseline-config is not valid JSON: {err}") from err
    if not isinstance(extra, dict):
        raise ValueError(f"--baseline-config must be a JSON object, got {cfg.baseline_config!r}")
    fixed = sorted(set(extra) & {"history", "horizon", "use_actions"})
    if fixed:
        raise ValueError(
            f"--baseline-config sets {fixed}: use --history, --horizon and --ablate actions"
        )
    return extra


def build_model(cfg: TrainConfig) -> nn.Module:
    """The run's model: MobiWM (``model_config``) or a learned baseline (``LEARNED[arch]``)."""
    if cfg.arch != "mobiwm":
        from worldmodel.baselines import LEARNED

        return LEARNED[cfg.arch](
            history=cfg.history,
            horizon=cfg.horizon,
            use_actions="actions" not in cfg.ablate,
            **baseline_overrides(cfg),
        )
    from worldmodel.model.mobiwm import MobiWM

    return MobiWM(model_config(cfg))


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``lr`` over ``warmup_steps``, then cosine decay to 0 at ``max_steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac)))


# ---------------------------------------------------------------------- trainer state
def _save_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    tensors, meta = {}, {}
    for pid, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().cpu().clone().contiguous()
            else:
                meta[f"{pid}.{k}"] = v
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={k: repr(v) for k, v in meta.items()})
    os.replace(tmp, path)


def _load_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    tensors = load_file(str(path))
    sd = opt.state_dict()
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    sd["state"] = state
    opt.load_state_dict(sd)


class Trainer:
    """Builds data, model and optimizer from a ``TrainConfig``; ``train()`` runs the loop."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.rank = int(os.environ.get("RANK", 0))
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("gloo")
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        scen = list(cfg.scenarios) or None
        self.train_maps = load_split(Path(cfg.data), "train", scen)
        self.val_maps = load_split(Path(cfg.data), "val", scen)
        if not self.train_maps:
            raise ValueError(f"{cfg.data}: no training maps (scenarios={scen})")
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg)
        core = self.model
        traffic = np.concatenate([m.traffic.ravel() for m in self.train_maps])
        active = np.concatenate([m.active.ravel() for m in self.train_maps])
        core.normalizer.fit(traffic, active)
        self.device = resolve_device(cfg.device)
        core.to(self.device)
        if self.world > 1:
            self.model = nn.parallel.DistributedDataParallel(core)
            # identical weights (DDP broadcasts rank 0's) but a distinct dropout stream per rank
            torch.manual_seed(
                int(np.random.SeedSequence([cfg.seed, self.rank]).generate_state(1)[0])
            )
        self.core = core
        self.opt = torch.optim.AdamW(core.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        mem = dict(season=cfg.season, memory_age=cfg.memory_age, seed=cfg.seed)
        chunks = cfg.pushforward + cfg.n_chunks
        self.train_ds = WindowDataset(self.train_maps, cfg.history, cfg.horizon, chunks, **mem)
        self.val_ds = WindowDataset(
            self.val_maps or self.train_maps, cfg.history, cfg.horizon, chunks, **mem
        )
        for what, ds in (("training", self.train_ds), ("validation", self.val_ds)):
            if len(ds) == 0:
                raise ValueError(
                    f"{cfg.data}: the {what} maps are too short for one window of {ds.window} "
                    f"slots (history {cfg.history} + {chunks} x horizon {cfg.horizon})"
                )
        if len(self.train_ds) < self.world:
            raise ValueError(
                f"{cfg.data}: {len(self.train_ds)} training windows for {self.world} ranks"
            )
        self.step = 0
        self.best = float("inf")
        self.bad_evals = 0
        self.summary = dataset_summary(self.train_maps)

    # -------------------------------------------------------------- data order
    def _epoch_order(self, epoch: int) -> np.ndarray:
        """Deterministic shuffled indices of this rank for ``epoch`` (resume-safe)."""
        rng = np.random.default_rng([self.cfg.seed, epoch])
        order = rng.permutation(len(self.train_ds))
        return order[self.rank :: self.world]

    @property
    def paired(self) -> bool:
        """Whether batches are built of (window, sibling window) pairs."""
        return self.cfg.pair_weight > 0 and self.train_ds.has_branches and self.cfg.batch_size > 1

    @staticmethod
    def _with_siblings(ds: WindowDataset, anchors, rng: np.random.Generator, size: int):
        """Items ``[a0, s0, a1, s1, ...]`` (``s`` a random sibling window of ``a``; anchors
        without siblings stand alone) up to ``size`` items, and the pair rows ``[M, 2]``."""
        items, pairs = [], []
        for a in anchors:
            if len(items) >= size:
                break
            items.append(int(a))
            sib = ds.siblings(int(a))
            if sib and len(items) < size:
                pairs.append((len(items) - 1, len(items)))
                items.append(int(sib[int(rng.integers(len(sib)))]))
        return items, torch.tensor(pairs, dtype=torch.int64).reshape(-1, 2)

    def _batches(self):
        """Endless ``(batch, pairs)``; the batch of step ``s`` depends on ``s`` only
        (resume-safe). Paired mode: half of each batch is sibling windows of the other half."""
        bs = self.cfg.batch_size
        take = -(-bs // 2) if self.paired else bs
        per_epoch = max(1, (len(self.train_ds) // self.world) // take)  # same on every rank
        while True:
            epoch, pos = divmod(self.step, per_epoch)
            order = self._epoch_order(epoch)
            idx = order[pos * take : (pos + 1) * take]
            if self.paired:
                rng = np.random.default_rng([self.cfg.seed, self.step, self.rank, 7])
                items, pairs = self._with_siblings(self.train_ds, idx, rng, bs)
            else:
                items, pairs = [int(i) for i in idx], None
            yield self._on_device(collate_maps([self.train_ds[i] for i in items]), pairs)

    def _val_batches(self):
        rng = np.random.default_rng([self.cfg.seed, 10**6])
        bs = self.cfg.batch_size
        n = min(len(self.val_ds), self.cfg.eval_batches * bs)
        idx = rng.choice(len(self.val_ds), size=n, replace=False)
        paired = self.paired and self.val_ds.has_branches
        step = -(-bs // 2) if paired else bs
        for i in range(0, n, step):
            if paired:
                items, pairs = self._with_siblings(self.val_ds, idx[i : i + step], rng, bs)
            else:
                items, pairs = [int(j) for j in idx[i : i + step]], None
            yield self._on_device(collate_maps([self.val_ds[j] for j in items]), pairs)

    def _on_device(self, batch: dict, pairs: torch.Tensor | None) -> tuple[dict, Any]:
        """A collated batch and its pair rows on the run's device."""
        if self.device.type == "cpu":
            return batch, pairs
        moved = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        return moved, None if pairs is None else pairs.to(self.device)

    # -------------------------------------------------------------- multi-process helpers
    def _from_rank0(self, values: list[float]) -> list[float]:
        """Rank 0's ``values`` on every rank (identity in a single process)."""
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        dist.broadcast(t, src=0)
        return t.tolist()

    def _mean_over_ranks(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t) / self.world

    def _rng_states(self) -> list[torch.Tensor]:
        """The torch RNG state of every rank (gathered on all ranks)."""
        state = torch.get_rng_state()
        if self.world == 1:
            return [state]
        states = [torch.empty_like(state) for _ in range(self.world)]
        dist.all_gather(states, state)
        return states

    # -------------------------------------------------------------- loop
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean metrics over the fixed validation batches (no RNG use, dropout off)."""
        self.model.eval()
        tot: dict[str, float] = {}
        n = 0
        for batch, pairs in self._val_batches():
            _, m = multi_chunk_loss(
                self.core, batch, self.cfg.n_chunks, self.cfg.history, self.cfg.horizon,
                pairs, self.cfg.pair_weight, free_chunks=self.cfg.pushforward,
            )  # fmt: skip
            for k, v in m.items():
                tot[k] = tot.get(k, 0.0) + v
            n += 1
        self.model.train()
        return {k: v / max(n, 1) for k, v in tot.items()}

    def train(self) -> dict:
        cfg = self.cfg
        main = self.rank == 0
        if cfg.resume:
            self._load_state()
        elif main:
            self.out.mkdir(parents=True, exist_ok=True)
        if main:
            write_json_atomic(
                self.out / "config.json",
                {"train": cfg, "model": self._model_cfg_dict(), "command": " ".join(sys.argv),
                 "data_summary": self.summary, "world_size": self.world},
            )  # fmt: skip
        writer = None
        if main:
            from torch.utils.tensorboard import SummaryWriter

            # events up to self.step were logged before the state was saved; drop later ones
            writer = SummaryWriter(str(self.out / "tb"), purge_step=self.step + 1)
        bar = tqdm(
            total=cfg.max_steps,
            initial=self.step,
            desc="train",
            disable=not (main and cfg.progress),
        )
        t_start = time.perf_counter()
        t_last, step_last = t_start, self.step
        first_step = self.step
        stop_reason = "max_steps"
        self.model.train()
        batches = self._batches()
        while self.step < cfg.max_steps:
            batch, pairs = next(batches)
            free = 0
            if cfg.pushforward > 0:  # same draw on every rank: ranks stay in step
                if self.step >= cfg.pushforward_from:
                    draw = np.random.default_rng([cfg.seed, self.step, 13])
                    free = int(draw.integers(cfg.pushforward + 1))
                batch = skip_slots(batch, (cfg.pushforward - free) * cfg.horizon)
            if cfg.history_noise > 0:
                rng = np.random.default_rng([cfg.seed, self.step, self.rank, 11])
                batch = perturb_history(batch, pairs, cfg.history_noise, cfg.history, rng)
            for g in self.opt.param_groups:
                g["lr"] = lr_at(self.step, cfg)
            loss, m = multi_chunk_loss(
                self.model, batch, cfg.n_chunks, cfg.history, cfg.horizon, pairs, cfg.pair_weight,
                free_chunks=free,
            )  # fmt: skip
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = float(nn.utils.clip_grad_norm_(self.core.parameters(), cfg.grad_clip))
            # gradients are averaged over ranks, so a non-finite norm is seen by every rank
            if not (math.isfinite(float(loss.detach())) and math.isfinite(gnorm)):
                raise FloatingPointError(
                    f"non-finite loss {float(loss.detach())} / gradient norm {gnorm} at step "
                    f"{self.step} (rank {self.rank})"
                )
            self.opt.step()
            self.step += 1
            bar.update()
            bar.set_postfix(loss=f"{m['loss']:.4f}")
            if self.step % cfg.log_every == 0:
                train_loss = self._mean_over_ranks(m["loss"])  # collective: every rank
                if writer is not None:
                    now = time.perf_counter()
                    writer.add_scalar("train/loss", train_loss, self.step)
                    writer.add_scalar("train/mae_mb", m.get("mae_mb_c0", 0.0), self.step)
                    if "pair_mse" in m:
                        writer.add_scalar("train/pair_mse", m["pair_mse"], self.step)
                    writer.add_scalar("train/grad_norm", gnorm, self.step)
                    for key in getattr(self.core, "aux_metrics", None) or {}:
                        if f"{key}_c0" in m:  # a learned baseline's extra training terms
                            writer.add_scalar(f"train/{key}_c0", m[f"{key}_c0"], self.step)
                    writer.add_scalar("charts/lr", self.opt.param_groups[0]["lr"], self.step)
                    writer.add_scalar(
                        "charts/steps_per_sec",
                        (self.step - step_last) / max(now - t_last, 1e-9),
                        self.step,
                    )
                    t_last, step_last = now, self.step
            out_of_time = False
            if cfg.max_minutes > 0:  # rank 0's clock decides for every rank
                late = (time.perf_counter() - t_start) > 60 * cfg.max_minutes
                out_of_time = bool(self._from_rank0([float(late)])[0])
            interrupted = cfg.stop_after > 0 and self.step - first_step >= cfg.stop_after
            if self.step % cfg.eval_every == 0 or self.step == cfg.max_steps or out_of_time:
                val = self.evaluate() if main else {}
                val_loss = self._from_rank0([val.get("loss", 0.0)])[0]
                improved = val_loss < self.best
                if improved:
                    self.best, self.bad_evals = val_loss, 0
                else:
                    self.bad_evals += 1
                rngs = self._rng_states()  # collective: every rank
                if main:
                    for k, v in val.items():
                        writer.add_scalar(f"val/{k}", v, self.step)
                    writer.flush()
                    if improved:
                        self._save("best", val)
                    self._save("last", val)
                    self._save_state(rngs)
                if cfg.patience and self.bad_evals >= cfg.patience:
                    stop_reason = "early_stopping"
                    break
            elif interrupted:  # resume point without an extra validation (schedule unchanged)
                rngs = self._rng_states()
                if main:
                    writer.flush()
                    self._save("last", {})
                    self._save_state(rngs)
            if out_of_time:
                stop_reason = "max_minutes"
                break
            if interrupted and self.step < cfg.max_steps:
                stop_reason = "stop_after"
                break
        bar.close()
        if writer is not None:
            writer.close()
        result = {"steps": self.step, "best_val_loss": self.best, "stop_reason": stop_reason,
                  "minutes": (time.perf_counter() - t_start) / 60}  # fmt: skip
        if main:
            write_json_atomic(self.out / "result.json", result)
        return result

    # -------------------------------------------------------------- persistence
    def _model_cfg_dict(self) -> dict:
        c = getattr(self.core, "cfg", None)
        if isinstance(c, ModelConfig):
            return to_jsonable(c)
        if dataclasses.is_dataclass(c):
            return {"arch": self.cfg.arch, **to_jsonable(c)}
        return {"arch": self.cfg.arch}

    def _save(self, name: str, val: dict[str, float]) -> None:
        extra = {
            "train_config": to_jsonable(self.cfg),
            "data_summary": self.summary,
            "metrics": {"val": val, "step": self.step},
            "command": " ".join(sys.argv),
        }
        save_world_model(self.core, self.out / name, extra=extra)

    def _save_state(self, rngs: list[torch.Tensor]) -> None:
        """Optimizer, RNG of every rank and counters (``trainer_state.json`` last: it marks a
        complete resume point)."""
        _save_optimizer(self.opt, self.out / "optimizer.safetensors")
        tensors = {"torch_rng": rngs[0]}
        tensors.update({f"torch_rng_rank{r}": t for r, t in enumerate(rngs) if r > 0})
        save_file(tensors, str(self.out / ".rng.tmp"))
        os.replace(self.out / ".rng.tmp", self.out / "rng.safetensors")
        write_json_atomic(
            self.out / "trainer_state.json",
            {"step": self.step, "best": self.best, "bad_evals": self.bad_evals,
             "world_size": self.world},
        )  # fmt: skip

    def _load_state(self) -> None:
        state_path = self.out / "trainer_state.json"
        if not state_path.is_file():
            raise FileNotFoundError(f"--resume: {state_path} not found (nothing to resume)")
        st = json.loads(state_path.read_text())
        saved_world = int(st.get("world_size", 1))
        if saved_world != self.world and self.rank == 0:
            warnings.warn(
                f"--resume: {state_path} was written by {saved_world} rank(s), this run has "
                f"{self.world}: batches and dropout will differ from an uninterrupted run",
                stacklevel=2,
            )
        loaded = load_world_model(self.out / "last", map_location=self.device)
        self.core.load_state_dict(loaded.state_dict())
        _load_optimizer(self.opt, self.out / "optimizer.safetensors")
        rng = load_file(str(self.out / "rng.safetensors"))
        torch.set_rng_state(rng.get(f"torch_rng_rank{self.rank}", rng["torch_rng"]))
        self.step, self.best, self.bad_evals = st["step"], st["best"], st["bad_evals"]


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(TrainConfig, argv, description=__doc__)
    try:
        result = Trainer(cfg).train()
        if int(os.environ.get("RANK", 0)) == 0:
            print(to_jsonable(result))
        if dist.is_available() and dist.is_initialized():
            # every rank done before any tears down: a rank destroying its gloo group while
            # another still talks aborted now and then ("terminate called without an active
            # exception")
            dist.barrier()
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
