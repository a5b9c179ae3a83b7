"""Train PPO (Stable-Baselines3) to balance cell load in the MobiWM world model, then judge it
on the twin against the baselines.

    python agents/train_ppo.py --compile                         # the main job (~15 min, 2 CPUs)
    python agents/train_ppo.py --policy shared --out runs/ppo-shared
    python agents/train_ppo.py --checkpoint runs/static-mobiwm/best --out runs/ppo-static
    python agents/train_ppo.py --env-id MobiWM-LoadBalance-Twin-v0 --out runs/ppo-twin
    python agents/train_ppo.py --warm-start heuristic --out runs/ppo-bc   # clone the rule first
    python agents/train_ppo.py --help

The env is the natively batched vector env behind the SB3 adapter (``agents.envs.make_sb3_env``:
any world-model checkpoint, MobiWM, Static-MobiWM or GRU), wrapped in ``VecMonitor`` and
``VecNormalize``. The run folder (``--out``, default ``runs/ppo-<timestamp>``) holds:

* ``config.json``: the resolved config, the policy's label, timings;
* ``model.zip`` and ``vecnormalize.pkl`` (observation / reward statistics) of the final policy,
  ``checkpoints/ppo_<steps>_steps.zip`` + ``ppo_vecnormalize_<steps>_steps.pkl`` periodically;
* ``tb/``: TensorBoard (SB3's ``rollout/``, ``train/``, ``time/`` plus ``charts/`` from the
  infos: imbalance (MB), relative L1 to target, mean ``|Δa|``, unserved traffic (twin),
  env steps per second, overall steps per second; ``eval/`` after the final evaluation);
* ``periodic.json`` / ``periodic.png`` (``--periodic-every``, ``agents.callbacks``): the policy
  judged every few thousand env steps on the twin and on the model it learns in, from the same
  seeded starts (also ``periodic/`` in TensorBoard): exploitation shows as the curves part;
* ``eval.json`` / ``eval.md``: the trained policy and the baselines on the twin
  (``agents.evaluate``: steady-state RMSE to target and Eq. 21 return, 95% CIs);
* ``episode.gif``: the heat map of the trained policy's first evaluation episode on the twin;
* with ``--warm-start heuristic`` (``agents.warmstart``: behaviour cloning of the heuristic in
  the training env before PPO): ``warmstart/`` (the cloned policy before PPO, evaluated beside
  the others), ``tb/warmstart`` and the clone's report in ``config.json``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python agents/train_ppo.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback  # noqa: E402
from stable_baselines3.common.utils import set_random_seed  # noqa: E402
from stable_baselines3.common.vec_env import VecMonitor, VecNormalize  # noqa: E402

from agents.callbacks import PeriodicEvalCallback  # noqa: E402
from agents.cell_ppo import CREDITS, CellPPO  # noqa: E402
from agents.envs import backend_of, checkpoint_label, find_core, make_sb3_env  # noqa: E402
from agents.evaluate import EVAL_SEED, evaluate_policies, write_results  # noqa: E402
from agents.policies import (  # noqa: E402
    CellSharedPolicy,
    neighbour_index,
    shared_policy_kwargs,
)
from agents.warmstart import WARM_START_CONTROLLERS, warm_start  # noqa: E402
from worldmodel.cli import arg, parse_config, write_json_atomic  # noqa: E402
from worldmodel.devices import resolve_device  # noqa: E402

DEFAULT_TIMESTEPS = 500_736
"""Default budget: 163 PPO iterations of 64 envs × 48 steps, ~15 min of training in the fast
MobiWM on hex57 on the 2-core CPU on a fast day (``BUDGET_STEPS_PER_SECOND``); the twin
evaluation adds about half a minute."""
BUDGET_STEPS_PER_SECOND = 520
"""Training speed (env steps/s, rollouts + PPO updates + periodic judgements) with the defaults
and ``--compile``: 620 measured for version 0.4.0's recipe, less 19% for 0.8.0's three times as
many gradient steps (measured side by side; 0.3.1: 74 with the full model and a larger policy;
0.2.0: 63; 0.1.0: 17–35). The shared machine runs from this speed to a third of it."""


@dataclass
class PPOConfig:
    """One PPO training run (and its final evaluation on the twin)."""

    env_id: str = arg("MobiWM-LoadBalance-v0", "env to train in (world model or ...-Twin-v0)")
    scenario: str = arg("hex57", "scenario name (worldmodel.twin.builders.SCENARIOS)")
    checkpoint: str = arg("fast", "world-model checkpoint folder or shipped name: fast | full ('' = the env default); "
                              "MobiWM, Static-MobiWM or GRU checkpoints")  # fmt: skip
    num_envs: int = arg(64, "sub-envs stepped as one batch")
    total_timesteps: int = arg(DEFAULT_TIMESTEPS, "env steps of training (all sub-envs)")
    seed: int = arg(0, "seed of the policy, PPO and the training episodes")
    policy: str = arg("shared", "shared (per-cell shared policy, attention) | mlp (MlpPolicy)")
    lambda_delta: float = arg(1.0, "λ_Δ of Eq. 21 (weight of the parameter-change penalty)")
    lambda_unserved: float = arg(
        2.0,
        "λ_U: weight of the unserved-demand (shortfall) term; 2 = shedding users never pays; "
        "0 = Eq. 21 exactly",
    )
    shortfall_reference: str = arg(
        "auto",
        "world model: the shortfall term's offered demand, noop (the model's no-change rollout; "
        "what auto means for lambda_unserved > 0) | calibrated | demand (docs/envs.md)",
    )
    episode_steps: int = arg(24, "env steps (hours) per episode, training and evaluation")
    learning_rate: float = arg(1e-3, "Adam learning rate")
    n_steps: int = arg(48, "steps per sub-env per PPO rollout (48 = two episodes)")
    batch_size: int = arg(512, "PPO minibatch size (6 per rollout of 64 envs × 48 steps)")
    n_epochs: int = arg(2, "PPO epochs per rollout")
    gamma: float = arg(0.8, "discount factor")
    gae_lambda: float = arg(0.95, "GAE λ")
    clip_range: float = arg(0.2, "PPO clip range")
    ent_coef: float = arg(0.0, "entropy bonus")
    vf_coef: float = arg(0.5, "value-loss weight")
    max_grad_norm: float = arg(0.5, "gradient-norm clip")
    ratio: str = arg(
        "cell", "PPO ratio clipping: cell (one ratio per cell, agents.cell_ppo) | joint (SB3's)"
    )
    credit: str = arg(
        "team",
        "cell ratio: team (the map's reward for every cell) | neighbourhood (each cell's own "
        "and its nearest cells' rewards, per-cell critic; shared policy only)",
    )
    credit_neighbours: int = arg(8, "neighbourhood credit: nearest cells counted with a cell's own")
    target_kl: float = arg(0.1, "stop a PPO update's epochs early above this KL (0 = never)")
    log_std_init: float = arg(-1.0, "initial log std of the Gaussian policy")
    net_arch: tuple[int, ...] = arg((256, 256), "MlpPolicy hidden layers (policy and value)")
    shared_hidden: int = arg(32, "shared policy: per-cell feature width")
    shared_layers: int = arg(1, "shared policy: message-passing rounds")
    shared_neighbours: int = arg(8, "shared policy: neighbours per cell")
    normalize_reward: bool = arg(True, "VecNormalize rewards")
    normalize_obs: bool = arg(
        True, "VecNormalize observations (MlpPolicy only: the shared policy reads raw features)"
    )
    shield: bool = arg(
        False,
        "train inside mobiwm_env.wrappers.SafetyShield (hard limits and a one-step world-model "
        "check per action; interventions logged under shield/ in TensorBoard)",
    )
    shield_checkpoint: str = arg("fast", "shield: world model of its check ('' = hard limits only)")
    shield_tolerance: float = arg(
        0.1, "shield: allowed extra unserved traffic, share of the no-op's (warm-up estimate)"
    )
    shield_margin: float = arg(25.0, "shield: allowed extra unserved traffic on top, MB per slot")
    warm_start: str = arg(
        "",
        "'' | heuristic: behaviour-clone this controller (in the training env) before PPO "
        "(with --learning-rate 1e-4: the default 1e-3 undoes the clone)",
    )
    warm_start_steps: int = arg(3072, "warm start: env steps of demonstrations (extra to PPO's)")
    warm_start_epochs: int = arg(20, "warm start: supervised epochs over the demonstrations")
    checkpoint_every: int = arg(100_000, "env steps between checkpoints (0 = none)")
    out: str = arg("", "run folder ('' = runs/ppo-<timestamp>)")
    periodic_every: int = arg(
        50_000, "env steps between judgements of the policy during training (0 = none)"
    )
    periodic_runs: int = arg(4, "seeded episodes per periodic judgement, on the twin and the model")
    eval_runs: int = arg(18, "evaluation episodes on the twin after training (0 = skip)")
    eval_seed: int = arg(EVAL_SEED, "first evaluation seed (same for every policy)")
    eval_baselines: tuple[str, ...] = arg(
        ("noop", "random", "heuristic"), "baselines evaluated beside the policy (add mpc: slow)"
    )
    gif: bool = arg(True, "save a heat-map GIF of one evaluation episode")
    device: str = arg("cpu", "torch device of the policy and the world model: cpu | cuda | cuda:N")
    threads: int = arg(2, "torch CPU threads (0: torch default)")
    compile: bool = arg(
        False,
        "torch.compile the MobiWM env model's inference (compiles once, ~10-60 s; "
        "then ~1.5x faster env steps)",
    )
    progress: bool = arg(True, "show a progress bar")
    label: str = arg("", "name of the policy in tables ('' = 'PPO (<trained in>)')")

    def __post_init__(self) -> None:
        if self.ratio not in ("cell", "joint"):
            raise ValueError(f"ratio must be 'cell' or 'joint', got {self.ratio!r}")
        if self.credit not in CREDITS:
            raise ValueError(f"credit must be one of {CREDITS}, got {self.credit!r}")
        if self.ratio == "cell" and self.credit == "neighbourhood" and self.policy != "shared":
            raise ValueError("credit='neighbourhood' needs --policy shared (per-cell values)")
        if self.credit_neighbours < 0:
            raise ValueError(f"credit_neighbours must be >= 0, got {self.credit_neighbours}")
        if self.policy not in ("mlp", "shared"):
            raise ValueError(f"policy must be 'mlp' or 'shared', got {self.policy!r}")
        backend_of(self.env_id)  # validates
        for name in ("num_envs", "total_timesteps", "n_steps", "batch_size", "n_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warm_start not in ("", *WARM_START_CONTROLLERS):
            raise ValueError(
                f"warm_start must be '' or one of {WARM_START_CONTROLLERS}, got {self.warm_start!r}"
            )
        if self.warm_start and min(self.warm_start_steps, self.warm_start_epochs) < 1:
            raise ValueError("warm_start_steps and warm_start_epochs must be >= 1")
        if self.periodic_every < 0 or self.periodic_runs < 1:
            raise ValueError("periodic_every must be >= 0 and periodic_runs >= 1")
        if self.eval_runs == 1:
            raise ValueError("eval_runs must be 0 or >= 2 (confidence intervals)")
        resolve_device(self.device)

    @property
    def trained_in(self) -> str:
        """Where the policy learns: ``twin`` or the world model's label (MobiWM, ...)."""
        if backend_of(self.env_id) == "twin":
            return "twin"
        return checkpoint_label(self.checkpoint or None)

    def env_kwargs(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "lambda_delta": self.lambda_delta,
            "lambda_unserved": self.lambda_unserved,
            "episode_steps": self.episode_steps,
            "shortfall_reference": self.shortfall_reference,
            "device": self.device,  # of the world model (the twin ignores it)
            "compile": self.compile,  # MobiWM only (the twin and GRU models ignore it)
        }


# ============================================================================ callbacks
class ProgressCallback(BaseCallback):
    """A tqdm progress bar over env steps with the latest mean episode return and the overall
    training speed (env steps/s including PPO updates)."""

    def __init__(self, total: int) -> None:
        super().__init__()
        self.total = total
        self.bar = None
        self._t0 = 0.0

    def _on_training_start(self) -> None:
        from tqdm.auto import tqdm

        self._t0 = time.perf_counter()
        self.bar = tqdm(total=self.total, unit="step", desc="PPO", dynamic_ncols=True)

    def _on_step(self) -> bool:
        self.bar.update(self.training_env.num_envs)
        return True

    def _on_rollout_end(self) -> None:
        buf = self.model.ep_info_buffer
        sps = self.num_timesteps / max(time.perf_counter() - self._t0, 1e-9)
        post = {"steps/s (with updates)": f"{sps:.0f}"}
        if buf:
            post["ep_return"] = f"{np.mean([e['r'] for e in buf]):.1f}"
        self.bar.set_postfix(post)

    def _on_training_end(self) -> None:
        self.bar.close()


class EnvMetricsCallback(BaseCallback):
    """TensorBoard ``charts/`` scalars from the env infos, and steps per second; after the
    first PPO iteration, prints the measured speed and the expected training time."""

    def __init__(self, total: int = 0, log: Any = None) -> None:
        super().__init__()
        self.total, self.log = total, log
        self._announced = False
        self._t_rollout = 0.0
        self._t_start = 0.0
        self._steps_rollout = 0

    def _on_training_start(self) -> None:
        self._t_start = time.perf_counter()

    def _on_rollout_start(self) -> None:
        self._on_rollout_start_announce()
        self._t_rollout = time.perf_counter()
        self._steps_rollout = self.num_timesteps

    def _on_step(self) -> bool:
        infos = self.locals.get("infos", [])
        imb = [i["imbalance"] for i in infos if "imbalance" in i]
        if imb:
            tgt = [float(np.sum(i["target"])) for i in infos if "target" in i]
            self.logger.record_mean("charts/imbalance_mb", float(np.mean(imb)))
            self.logger.record_mean(
                "charts/l1_to_target", float(np.sum(imb) / max(np.sum(tgt), 1e-9))
            )
            self.logger.record_mean(
                "charts/action_change", float(np.mean([i["action_change"] for i in infos]))
            )
            uns = [float(np.mean(i["unserved"])) for i in infos if "unserved" in i]
            if uns and np.isfinite(uns).all():
                self.logger.record_mean("charts/unserved_mb", float(np.mean(uns)))
            short = [float(np.mean(i["shortfall"])) for i in infos if "shortfall" in i]
            if short:
                self.logger.record_mean("charts/shortfall_mb", float(np.mean(short)))
        for key, name in SHIELD_SCALARS.items():  # training inside the SafetyShield
            vals = [float(np.mean(i[key])) for i in infos if key in i]
            vals = [v for v in vals if np.isfinite(v)]
            if vals:
                self.logger.record_mean(name, float(np.mean(vals)))
        return True

    def _on_rollout_end(self) -> None:
        now = time.perf_counter()
        env_steps = self.num_timesteps - self._steps_rollout
        self.logger.record(
            "charts/env_steps_per_second", env_steps / max(now - self._t_rollout, 1e-9)
        )
        self.logger.record(
            "charts/steps_per_second", self.num_timesteps / max(now - self._t_start, 1e-9)
        )

    def _on_rollout_start_announce(self) -> None:
        if self._announced or self.log is None or self.num_timesteps == 0:
            return
        self._announced = True
        sps = self.num_timesteps / max(time.perf_counter() - self._t_start, 1e-9)
        self.log(
            f"measured {sps:.0f} steps/s over the first PPO iteration (rollout + update) ⇒ "
            f"training ≈ {self.total / sps / 60:.1f} min"
        )


# ============================================================================ training
def build_model(cfg: PPOConfig, venv: Any, tb_dir: Path | None) -> PPO:
    """The PPO learner for ``cfg`` on ``venv`` (already normalised)."""
    if cfg.policy == "shared":
        policy: Any = CellSharedPolicy
        policy_kwargs = shared_policy_kwargs(
            venv,
            hidden=cfg.shared_hidden,
            n_layers=cfg.shared_layers,
            n_neighbours=cfg.shared_neighbours,
        )
    else:
        policy = "MlpPolicy"
        arch = list(cfg.net_arch)
        policy_kwargs = {"net_arch": {"pi": arch, "vf": arch}}
    policy_kwargs["log_std_init"] = cfg.log_std_init
    extra: dict[str, Any] = {}
    algo: type[PPO] = PPO
    if cfg.ratio == "cell":
        core = find_core(venv)
        mask = np.zeros(int(core.max_cells), bool)
        mask[: int(core.n_cells)] = np.asarray(core.active, bool)[: int(core.n_cells)]
        nbr = neighbour_index(
            np.asarray(core.scenario.cell_xy_m, dtype=float),
            int(core.n_cells),
            int(core.max_cells),
            cfg.credit_neighbours,
        )
        algo = CellPPO
        extra = {"cell_mask": mask, "credit": cfg.credit, "neighbours": nbr}
    return algo(
        policy,
        venv,
        learning_rate=cfg.learning_rate,
        n_steps=cfg.n_steps,
        batch_size=cfg.batch_size,
        n_epochs=cfg.n_epochs,
        gamma=cfg.gamma,
        gae_lambda=cfg.gae_lambda,
        clip_range=cfg.clip_range,
        ent_coef=cfg.ent_coef,
        vf_coef=cfg.vf_coef,
        max_grad_norm=cfg.max_grad_norm,
        target_kl=cfg.target_kl or None,
        policy_kwargs=policy_kwargs,
        tensorboard_log=None if tb_dir is None else str(tb_dir),
        seed=cfg.seed,
        device=cfg.device,
        verbose=0,
        **extra,
    )


def run_dir_of(cfg: PPOConfig) -> Path:
    return Path(cfg.out or f"runs/ppo-{time.strftime('%Y%m%d-%H%M%S')}")


def policy_label(cfg: PPOConfig) -> str:
    """The trained policy's name in tables: ``--label`` or ``PPO (<trained in>[, from <rule>])``."""
    warm = f", from {cfg.warm_start}" if cfg.warm_start else ""
    return cfg.label or f"PPO ({cfg.trained_in}{warm})"


def warm_start_label(cfg: PPOConfig) -> str:
    """The cloned policy's name in tables (evaluated beside the others)."""
    return f"BC of {cfg.warm_start} (before PPO)"


def train(cfg: PPOConfig, log: Any = print) -> tuple[Path, dict[str, Any]]:
    """Train, save and (``eval_runs > 0``) evaluate; returns the run folder and the record
    written to its ``config.json``."""
    t_start = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    # The run folder; its config.json is rewritten after every stage (``status``: how far).
    run_dir = run_dir_of(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    label = policy_label(cfg)
    record = new_record(cfg, label)
    write_json_atomic(run_dir / "config.json", record)

    # Seeded envs (VecMonitor + VecNormalize), then the learner and its callbacks.
    set_random_seed(cfg.seed)
    venv = build_venv(cfg)
    model = build_model(cfg, venv, run_dir / "tb")
    _log_plan(cfg, label, run_dir, log)
    callbacks = build_callbacks(cfg, run_dir, log)

    # Optional warm start: behaviour-clone a controller into the policy before PPO.
    if cfg.warm_start:
        record["warm_start"] = _warm_start(cfg, model, venv, run_dir, log)
        write_json_atomic(run_dir / "config.json", record)

    # PPO, then the final policy and its normalisation statistics to disk.
    train_s = _learn(cfg, model, callbacks)
    _save(model, venv, run_dir)
    venv.close()
    record.update(status="trained", **_training_stats(model, train_s, log))
    write_json_atomic(run_dir / "config.json", record)

    # Judge it on the twin beside the baselines (eval.json / eval.md / episode.gif, eval/ in TB).
    if cfg.eval_runs:
        record.update(status="evaluated", eval_seconds=_evaluate(cfg, model, run_dir, label, log))

    record["total_seconds"] = time.perf_counter() - t_start
    write_json_atomic(run_dir / "config.json", record)
    log(f"total {record['total_seconds'] / 60:.1f} min")
    return run_dir, record


# ---------------------------------------------------------------------------- train()'s stages
def new_record(cfg: PPOConfig, label: str) -> dict[str, Any]:
    """The first ``config.json`` of a run: the resolved config, the policy's label, where it
    trains, the command line and ``status: training``."""
    return {
        "config": asdict(cfg),
        "label": label,
        "trained_in": cfg.trained_in,
        "command": " ".join(sys.argv),
        "status": "training",
    }


SHIELD_SCALARS = {
    "shield_fraction": "shield/fraction_applied",
    "shield_limited": "shield/limited_per_step",
    "shield_reverted": "shield/reverted",
    "shield_predicted_shed": "shield/predicted_shed_mb",
}
"""``SafetyShield`` info keys → TensorBoard scalars (means over the sub-envs and steps)."""


def build_venv(cfg: PPOConfig) -> VecNormalize:
    """The batched training env for ``cfg``, wrapped in ``VecMonitor`` and ``VecNormalize``
    (observations normalised for the MlpPolicy only: the shared policy reads raw features)."""
    wrap = None
    if cfg.shield:
        from mobiwm_env.wrappers import SafetyShield, ShieldConfig

        shield = ShieldConfig(
            checkpoint=cfg.shield_checkpoint or None,
            unserved_tolerance=cfg.shield_tolerance,
            unserved_margin_mb=cfg.shield_margin,
            per_cell=False,  # one candidate per cell and env would cost ~60 model rows a step
        )

        def wrap(env: Any) -> Any:
            return SafetyShield(env, shield)

    venv = make_sb3_env(
        cfg.env_id, cfg.num_envs, cfg.checkpoint or None, wrap=wrap, **cfg.env_kwargs()
    )
    return VecNormalize(
        VecMonitor(venv),
        norm_obs=cfg.normalize_obs and cfg.policy == "mlp",
        norm_reward=cfg.normalize_reward,
        gamma=cfg.gamma,
    )


def _log_plan(cfg: PPOConfig, label: str, run_dir: Path, log: Any) -> None:
    """What is about to be trained, where, and the expected time."""
    log(
        f"training {label} [{cfg.policy} policy] in {cfg.env_id} ({cfg.scenario}, "
        f"{cfg.num_envs} envs) for {cfg.total_timesteps:,} steps → {run_dir}"
    )
    log(
        f"time budget: {cfg.total_timesteps:,} steps at ~{BUDGET_STEPS_PER_SECOND} steps/s "
        f"(measured: world model, 2 shared CPU cores) ≈ "
        f"{cfg.total_timesteps / BUDGET_STEPS_PER_SECOND / 60:.0f} min of training"
        + (f", then {cfg.eval_runs}-episode evaluations on the twin" if cfg.eval_runs else "")
        + (
            f"; first the warm start ({cfg.warm_start_steps:,} env steps, "
            f"{cfg.warm_start_epochs} epochs: ~4 min for the defaults)"
            if cfg.warm_start
            else ""
        )
    )


def build_callbacks(cfg: PPOConfig, run_dir: Path, log: Any = print) -> list[BaseCallback]:
    """``charts/`` metrics, the progress bar (``--progress``) and periodic checkpoints
    (``--checkpoint-every``) for ``model.learn``."""
    if cfg.progress and log is print:
        from tqdm.auto import tqdm

        cb_log = tqdm.write  # keeps the progress bar intact
    else:
        cb_log = log
    callbacks: list[BaseCallback] = [EnvMetricsCallback(cfg.total_timesteps, cb_log)]
    if cfg.progress:
        callbacks.append(ProgressCallback(cfg.total_timesteps))
    if cfg.periodic_every > 0:
        backends = {"twin": ("twin", None)}
        if backend_of(cfg.env_id) != "twin":
            backends["model"] = (backend_of(cfg.env_id), cfg.checkpoint or None)
        callbacks.append(
            PeriodicEvalCallback(
                cfg.periodic_every,
                cfg.periodic_runs,
                cfg.eval_seed,
                backends,
                cfg.env_kwargs(),
                run_dir,
                cb_log,
            )  # fmt: skip
        )
    if cfg.checkpoint_every > 0:
        callbacks.append(
            CheckpointCallback(
                save_freq=max(cfg.checkpoint_every // cfg.num_envs, 1),
                save_path=str(run_dir / "checkpoints"),
                name_prefix="ppo",
                save_vecnormalize=True,
            )
        )
    return callbacks


def _warm_start(
    cfg: PPOConfig, model: PPO, venv: VecNormalize, run_dir: Path, log: Any
) -> dict[str, Any]:
    """Clone ``cfg.warm_start`` into ``model``, save the clone to ``warmstart/``; returns the
    clone's report (for ``config.json``)."""
    report = warm_start(
        model, venv, cfg.warm_start, cfg.warm_start_steps, cfg.warm_start_epochs, cfg.seed,
        tb_dir=run_dir / "tb" / "warmstart",
    )  # fmt: skip
    warm_dir = run_dir / "warmstart"
    warm_dir.mkdir(exist_ok=True)
    _save(model, venv, warm_dir)
    write_json_atomic(
        warm_dir / "config.json",
        {"label": warm_start_label(cfg), "warm_start": report.as_dict()},
    )
    log(
        f"warm start: cloned {cfg.warm_start} from {report.env_steps:,} env steps "
        f"({report.collect_seconds:.0f} s) in {report.epochs} epochs ({report.fit_seconds:.0f}"
        f" s): action MSE {report.bc_mse_first:.4f} → {report.bc_mse_last:.4f}, "
        f"value MSE {report.value_mse_last:.3f}"
    )
    return report.as_dict()


def _learn(cfg: PPOConfig, model: PPO, callbacks: list[BaseCallback]) -> float:
    """PPO for ``cfg.total_timesteps`` env steps; returns the wall time (s)."""
    t0 = time.perf_counter()
    model.learn(cfg.total_timesteps, callback=callbacks, tb_log_name="ppo", progress_bar=False)
    return time.perf_counter() - t0


def _training_stats(model: PPO, train_s: float, log: Any) -> dict[str, Any]:
    """Steps trained, wall time and speed of ``model.learn`` (logged; for ``config.json``)."""
    sps = model.num_timesteps / train_s
    log(f"trained {model.num_timesteps:,} steps in {train_s / 60:.1f} min ({sps:.0f} steps/s)")
    return {
        "timesteps": int(model.num_timesteps),
        "train_seconds": train_s,
        "steps_per_second": sps,
    }


def _save(model: PPO, venv: VecNormalize, folder: Path) -> None:
    """``model.zip`` and ``vecnormalize.pkl`` (what ``TrainedPolicy`` reloads) in ``folder``."""
    model.save(folder / "model.zip")
    venv.save(str(folder / "vecnormalize.pkl"))


def _evaluate(cfg: PPOConfig, model: PPO, run_dir: Path, label: str, log: Any) -> float:
    """The baselines, the warm-start clone (if any) and the trained policy on the twin:
    ``eval.json`` / ``eval.md`` (+ ``episode.gif``) and ``eval/`` in TensorBoard; returns
    the wall time (s)."""
    t1 = time.perf_counter()
    log(f"evaluating on the twin: {cfg.eval_runs} episodes per policy, seed {cfg.eval_seed}")
    specs: list[Any] = [(b, None) for b in cfg.eval_baselines]
    if cfg.warm_start:
        specs.append((str(run_dir / "warmstart"), warm_start_label(cfg)))
    specs.append((str(run_dir), label))  # last: its row goes to TensorBoard
    result = evaluate_policies(
        specs,
        ("twin",),
        cfg.eval_runs,
        cfg.eval_seed,
        cfg.checkpoint or None,
        cfg.env_kwargs(),
        gif=(str(run_dir), run_dir / "episode.gif") if cfg.gif else None,
        log=log,
    )
    js, md = write_results(result, run_dir, "eval", f"{label} vs baselines on the twin")
    log("\n" + md.read_text(encoding="utf-8"))
    log(f"wrote {js}, {md}" + (f", {run_dir / 'episode.gif'}" if cfg.gif else ""))
    _log_eval(model, result, run_dir)
    return time.perf_counter() - t1


def _log_eval(model: PPO, result: dict[str, Any], run_dir: Path) -> None:
    """``eval/`` scalars of the trained policy in its own TensorBoard run."""
    from torch.utils.tensorboard import SummaryWriter

    row = result["rows"][-1]["twin"]
    with SummaryWriter(str(run_dir / "tb" / "eval")) as w:
        step = int(model.num_timesteps)
        w.add_scalar("eval/rmse_mb", row["rmse_mb"]["mean"], step)
        w.add_scalar("eval/return", row["return"]["mean"], step)
        if "rmse_vs_noop" in row:
            w.add_scalar("eval/rmse_vs_noop", row["rmse_vs_noop"], step)


def main(argv: list[str] | None = None) -> Path:
    cfg = parse_config(PPOConfig, argv, description=__doc__)
    run_dir, _ = train(cfg)
    return run_dir


if __name__ == "__main__":
    main()
