"""Tests of ``worldmodel.train``: run folder, exact resume, stop rules, GRU, ablations, DDP, CLI.

Every run is tiny (debug preset, batch 2, one thread) on the ``smoke`` dataset generated once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from worldmodel.baselines import LEARNED, GRUWorldModel, load_world_model
from worldmodel.model.mobiwm import MobiWM
from worldmodel.train import ABLATIONS, TrainConfig, Trainer, chunk_batch, lr_at, main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smoke_data(smoke_dataset: Path) -> Path:
    return smoke_dataset


def tiny(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        data=str(data), out=str(out), preset="debug", batch_size=2, eval_every=6,
        eval_batches=1, warmup_steps=3, max_steps=12, threads=1, progress=False,
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def scalars(run: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    if tag not in acc.Tags()["scalars"]:
        return []
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_world_model(path).state_dict()


def test_end_to_end_run_folder(smoke_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["--data", str(smoke_data), "--out", str(out), "--preset", "debug",
            "--batch-size", "2", "--max-steps", "12", "--eval-every", "6", "--eval-batches", "2",
            "--warmup-steps", "3", "--threads", "1", "--no-progress"]  # fmt: skip
    assert main(argv) == 0

    cfg = json.loads((out / "config.json").read_text())
    assert cfg["train"]["max_steps"] == 12 and cfg["train"]["preset"] == "debug"
    assert set(cfg["train"]) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert isinstance(cfg["command"], str) and cfg["world_size"] == 1
    assert cfg["model"]["d_model"] == 16  # debug preset, resolved
    for name in ("best", "last"):
        model = load_world_model(out / name)
        assert isinstance(model, MobiWM) and model.normalizer.is_fitted
        meta = json.loads((out / name / "config.json").read_text())
        assert meta["extra"]["train_config"]["max_steps"] == 12
    assert json.loads((out / "last" / "config.json").read_text())["extra"]["metrics"]["step"] == 12
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["step"] == 12 and state["bad_evals"] in (0, 1)
    result = json.loads((out / "result.json").read_text())
    assert result["steps"] == 12 and result["stop_reason"] == "max_steps"
    assert result["best_val_loss"] == pytest.approx(state["best"])
    assert len(list((out / "tb").glob("events.out.tfevents.*"))) == 1
    assert [s for s, _ in scalars(out, "train/loss")] == [10]
    assert [s for s, _ in scalars(out, "val/loss")] == [6, 12]
    assert min(v for _, v in scalars(out, "val/loss")) == pytest.approx(result["best_val_loss"])
    sps = scalars(out, "charts/steps_per_sec")
    assert len(sps) == 1 and sps[0][1] > 0


@pytest.mark.parametrize("stop_at", [10, 7], ids=["at-eval", "between-evals"])
def test_resume_is_exact(smoke_data: Path, tmp_path: Path, stop_at: int) -> None:
    """20 straight steps == ``stop_after`` steps + ``--resume`` to 20 (dropout on)."""
    kw = dict(max_steps=20, eval_every=10, warmup_steps=4, dropout=0.2, log_every=1)
    a, b = tmp_path / "a", tmp_path / "b"
    ra = Trainer(tiny(smoke_data, a, **kw)).train()
    rb1 = Trainer(tiny(smoke_data, b, stop_after=stop_at, **kw)).train()
    assert rb1["stop_reason"] == "stop_after" and rb1["steps"] == stop_at
    assert json.loads((b / "trainer_state.json").read_text())["step"] == stop_at
    rb2 = Trainer(tiny(smoke_data, b, resume=True, **kw)).train()
    assert rb2["steps"] == 20 and rb2["stop_reason"] == "max_steps"
    assert rb2["best_val_loss"] == ra["best_val_loss"]

    wa, wb = weights(a / "last"), weights(b / "last")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    for k, v in weights(a / "best").items():
        assert torch.equal(v, weights(b / "best")[k]), k
    for tag in ("train/loss", "train/grad_norm", "charts/lr", "val/loss"):
        assert scalars(a, tag) == scalars(b, tag), tag  # nothing lost or duplicated on resume
    assert [s for s, _ in scalars(b, "train/loss")] == list(range(1, 21))


def test_resume_test_is_sensitive_to_the_rng(
    smoke_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Control for ``test_resume_is_exact``: without restoring the RNG the dropout differs."""
    kw = dict(max_steps=14, eval_every=7, warmup_steps=4, dropout=0.2)
    a, b = tmp_path / "a", tmp_path / "b"
    Trainer(tiny(smoke_data, a, **kw)).train()
    Trainer(tiny(smoke_data, b, stop_after=7, **kw)).train()
    monkeypatch.setattr(torch, "set_rng_state", lambda state: None)
    Trainer(tiny(smoke_data, b, resume=True, **kw)).train()
    wa, wb = weights(a / "last"), weights(b / "last")
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_without_state_names_the_file(smoke_data: Path, tmp_path: Path) -> None:
    trainer = Trainer(tiny(smoke_data, tmp_path / "empty", resume=True))
    with pytest.raises(FileNotFoundError, match=r"trainer_state\.json"):
        trainer.train()


def test_early_stopping(smoke_data: Path, tmp_path: Path) -> None:
    cfg = tiny(smoke_data, tmp_path / "es", lr=1e-30, patience=1, eval_every=2, max_steps=50,
               dropout=0.0)  # fmt: skip
    result = Trainer(cfg).train()
    assert result["stop_reason"] == "early_stopping"
    assert result["steps"] == 4  # first validation sets the best, the second does not beat it
    assert json.loads((tmp_path / "es" / "trainer_state.json").read_text())["bad_evals"] == 1


def test_max_minutes(smoke_data: Path, tmp_path: Path) -> None:
    result = Trainer(tiny(smoke_data, tmp_path / "mm", max_minutes=0.001, max_steps=10_000)).train()
    assert result["stop_reason"] == "max_minutes"
    assert 1 <= result["steps"] < 10_000
    assert (tmp_path / "mm" / "best").is_dir() and (
        tmp_path / "mm" / "trainer_state.json"
    ).is_file()
    stored = json.loads((tmp_path / "mm" / "trainer_state.json").read_text())
    assert stored["step"] == result["steps"]


def test_gru_trains_saves_and_loads(smoke_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "gru"
    trainer = Trainer(tiny(smoke_data, out, arch="gru", max_steps=6, eval_every=3))
    result = trainer.train()
    assert result["steps"] == 6 and result["best_val_loss"] < float("inf")
    model = load_world_model(out / "last")
    assert isinstance(model, GRUWorldModel) and model.cfg.use_actions
    for k, v in trainer.core.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k
    assert json.loads((out / "config.json").read_text())["model"]["arch"] == "gru"
    batch = chunk_batch(next(trainer._batches())[0], 0, h=8, p=4)  # one H + P window
    assert model.predict_batch(batch).shape == (2, 4, batch["traffic"].shape[2])


SMALL_BASELINES = {
    "itransformer": {"d_model": 16, "heads": 2, "layers": 1, "ff": 32},
    "rssm": {"context": 4, "deter": 16, "hidden": 16, "groups": 4, "classes": 4},
    "tdmpc": {"context": 4, "latent": 16, "hidden": 32, "layers": 1},
}


@pytest.mark.parametrize("arch", sorted(SMALL_BASELINES))
def test_learned_baselines_train_save_load_and_roll_out(
    smoke_data: Path, tmp_path: Path, arch: str
) -> None:
    out = tmp_path / arch
    small = json.dumps(SMALL_BASELINES[arch])
    argv = ["--data", str(smoke_data), "--out", str(out), "--arch", arch, "--baseline-config",
            small, "--batch-size", "2", "--max-steps", "4", "--eval-every", "2",
            "--eval-batches", "1", "--warmup-steps", "1", "--log-every", "1", "--threads", "1",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    model = load_world_model(out / "last")
    assert type(model) is LEARNED[arch] and model.history == 104  # the architecture's default
    assert all(getattr(model.cfg, k) == v for k, v in SMALL_BASELINES[arch].items())
    before = Trainer(tiny(smoke_data, tmp_path / "x", arch=arch, baseline_config=small))
    assert any(  # it trained: the weights moved from their seeded start
        not torch.equal(v, model.state_dict()[k]) for k, v in before.core.state_dict().items()
    )
    if arch in ("rssm", "tdmpc"):  # the auxiliary training terms are logged
        key = {"rssm": "train/kl_dyn_c0", "tdmpc": "train/consistency_c0"}[arch]
        assert scalars(out, key), key
    batch = next(before._batches())[0]
    window = {k: v for k, v in batch.items()}
    k = (window["traffic"].shape[1] - model.history) // model.horizon
    rolled = model.rollout_batch(window, k)
    assert rolled.shape == (2, k * model.horizon, window["traffic"].shape[2])
    assert torch.isfinite(rolled).all() and (rolled >= 0).all()


def test_paired_batches_hold_sibling_windows_and_log_pair_loss(
    smoke_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "paired"
    trainer = Trainer(tiny(smoke_data, out, batch_size=4, max_steps=4, eval_every=2))
    assert trainer.paired
    batch, pairs = next(trainer._batches())
    assert pairs.shape == (2, 2) and pairs[:, 1].tolist() == (pairs[:, 0] + 1).tolist()
    ds = trainer.train_ds
    for a, b in pairs.tolist():
        ma, mb = int(batch["map_index"][a]), int(batch["map_index"][b])
        assert ma != mb and int(batch["start"][a]) == int(batch["start"][b])
        base = {ds.records[m].metadata.get("branch_of", ds.records[m].name) for m in (ma, mb)}
        assert len(base) == 1  # a map and its branch
        torch.testing.assert_close(batch["od"][a], batch["od"][b])  # same context and demand
    trainer.train()
    assert scalars(out, "train/pair_mse") or scalars(out, "val/pair_mse")
    assert scalars(out, "val/pair_mse")
    plain = Trainer(tiny(smoke_data, tmp_path / "plain", batch_size=4, pair_weight=0.0))
    assert not plain.paired
    assert next(plain._batches())[1] is None
    with pytest.raises(ValueError, match="pair_weight"):
        tiny(smoke_data, tmp_path, pair_weight=-1.0)


def test_ablate_actions(smoke_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "static"
    argv = ["--data", str(smoke_data), "--out", str(out), "--preset", "debug", "--batch-size",
            "2", "--max-steps", "2", "--eval-every", "2", "--eval-batches", "1", "--threads", "1",
            "--no-progress", "--ablate", "actions"]  # fmt: skip
    assert main(argv) == 0
    model = load_world_model(out / "best")
    assert model.cfg.use_actions is False
    assert all(getattr(model.cfg, flag) for name, flag in ABLATIONS.items() if name != "actions")
    gru = Trainer(tiny(smoke_data, tmp_path / "g", arch="gru", ablate=("actions",)))
    assert gru.core.cfg.use_actions is False


@pytest.mark.parametrize(
    "bad",
    [
        {"ablate": ("wings",)},
        {"arch": "gru", "ablate": ("trn",)},
        {"arch": "gru", "season": 96},
        {"season_mix": 1.5},
        {"season_anchor": "yesterday"},  # needs --season
        {"season_actions": True},
        {"coverage_prior": True, "ablate": ("actions",)},  # Static-MobiWM never sees actions
        {"coverage_calibrate": 3},  # needs --coverage-prior
        {"memory_age": 2},  # needs a one-day memory
        {"season": 12, "history": 16, "memory_age": 2},  # season != slots_per_day
        {"season": 96, "history": 104, "memory_age": 7},  # at most 6 days
        {"season": 96, "history": 104, "season_anchor": "weekly"},
        {"season": 96, "history": 104, "season_anchor": "yesterday", "season_mix": 1.0},
        {"arch": "lstm"},
        {"arch": "rssm", "baseline_config": "[1]"},  # not an object
        {"arch": "rssm", "baseline_config": "{nope"},  # not JSON
        {"arch": "rssm", "baseline_config": '{"history": 8}'},  # --history sets it
        {"arch": "itransformer", "baseline_config": '{"wings": 2}'},  # unknown field
        {"arch": "tdmpc", "history": 50},  # shorter than its season + context
        {"baseline_config": '{"hidden": 8}'},  # MobiWM has presets
        {"arch": "rssm", "season": 96},
        {"stop_after": -1},
        {"eval_batches": 0},
        {"log_every": 0},
        {"lr": 0.0},
        {"max_minutes": -1.0},
        {"dropout": 1.0},
    ],
)
def test_invalid_config(bad: dict) -> None:
    with pytest.raises(ValueError):
        TrainConfig(**bad)


def test_daily_memory_trains_from_the_cli(smoke_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "seas"
    argv = ["--data", str(smoke_data), "--out", str(out), "--preset", "debug", "--batch-size",
            "2", "--max-steps", "2", "--eval-every", "2", "--eval-batches", "1", "--threads", "1",
            "--no-progress", "--history", "16", "--season", "12"]  # fmt: skip
    assert main(argv) == 0
    model = load_world_model(out / "best")
    assert (model.cfg.history, model.cfg.season, model.cfg.token_history) == (16, 12, 4)
    with pytest.raises(ValueError, match="season=12 needs"):
        main([*argv[:-4], "--history", "12", "--season", "12"])
    fixed = tmp_path / "fixed"
    assert main([*argv[:3], str(fixed), *argv[4:], "--season-mix", "1"]) == 0
    model = load_world_model(fixed / "best")
    assert not model.cfg.season_mix_learnt and float(model.season_mix) == 1.0
    yest = tmp_path / "yest"
    flags = ["--season-anchor", "yesterday", "--season-actions"]
    assert main([*argv[:3], str(yest), *argv[4:], *flags]) == 0
    model = load_world_model(yest / "best")
    assert (model.cfg.season_anchor, model.cfg.season_actions) == ("yesterday", True)
    cov = tmp_path / "cov"
    cov_flags = ["--coverage-prior", "--coverage-calibrate", "2"]
    assert main([*argv[:3], str(cov), *argv[4:], *flags, *cov_flags]) == 0
    model = load_world_model(cov / "best")
    assert model.cfg.coverage_prior and model.coverage is not None
    assert model.cfg.coverage_calibrate == 2
    aged = tmp_path / "aged"
    day = ["--history", "104", "--season", "96", "--memory-age", "3"]
    assert main([*argv[:3], str(aged), *argv[4:-4], *day]) == 0
    model = load_world_model(aged / "best")
    assert model.cfg.memory_age == 3 and model.season_embed.in_features == 3
    run_cfg = json.loads((aged / "config.json").read_text())
    assert run_cfg["train"]["memory_age"] == 3


def test_unknown_ablation_from_cli(smoke_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="wings"):
        main(["--data", str(smoke_data), "--out", str(tmp_path), "--ablate", "wings"])


def test_lr_schedule() -> None:
    cfg = TrainConfig(lr=1.0, warmup_steps=4, max_steps=20)
    lrs = [lr_at(s, cfg) for s in range(20)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(x >= y for x, y in zip(lrs[3:], lrs[4:], strict=False))
    assert lr_at(20, cfg) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.slow
def test_ddp_two_ranks(smoke_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "worldmodel.train", "--data", str(smoke_data), "--out", str(out), "--preset",
           "debug", "--batch-size", "2", "--max-steps", "4", "--eval-every", "2",
           "--eval-batches", "1", "--log-every", "1", "--patience", "1", "--max-minutes", "5",
           "--threads", "1", "--no-progress"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["steps"] == 4 and result["stop_reason"] in ("max_steps", "early_stopping")
    assert isinstance(load_world_model(out / "last"), MobiWM)
    assert json.loads((out / "trainer_state.json").read_text())["world_size"] == 2
    assert len(list((out / "tb").glob("events.out.tfevents.*"))) == 1  # rank 0 writes alone
    assert [s for s, _ in scalars(out, "train/loss")] == [1, 2, 3, 4]


def test_cli_help_lists_every_field() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, "-m", "worldmodel.train", "--help"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for f in dataclasses.fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in proc.stdout, f.name


def test_write_text_atomic_replaces_whole_file(tmp_path, monkeypatch):
    """A failed write leaves the previous file intact and no temp file behind."""
    from worldmodel import cli

    path = cli.write_text_atomic(tmp_path / "sub" / "a.md", "old")
    assert path.read_text() == "old"

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(cli.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        cli.write_text_atomic(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in path.parent.iterdir()] == ["a.md"]


def test_history_noise_perturbs_history_only_and_pairs_alike() -> None:
    from worldmodel.train import perturb_history

    g = torch.Generator().manual_seed(0)
    traffic = torch.rand(4, 12, 5, generator=g) * 100 + 1
    traffic[:, :, 4] = 0.0  # an off cell stays at 0
    batch = {"traffic": traffic, "cell_mask": torch.ones(4, 5, dtype=torch.bool)}
    pairs = torch.tensor([[0, 1], [2, 3]])
    out = perturb_history(batch, pairs, 0.1, 8, np.random.default_rng(0))
    assert torch.equal(out["traffic"][:, 8:], traffic[:, 8:])  # targets untouched
    assert out["cell_mask"] is batch["cell_mask"]
    ratio = out["traffic"][:, :8, :4] / traffic[:, :8, :4]
    assert not torch.allclose(ratio, torch.ones_like(ratio))
    assert torch.allclose(ratio[0], ratio[1]) and torch.allclose(ratio[2], ratio[3])
    assert not torch.allclose(ratio[0], ratio[2])
    log = ratio.log()
    assert 0.05 < float(log.std()) < 0.15  # σ = 0.1 in log space
    assert (out["traffic"][:, :, 4] == 0).all()
    same = perturb_history(batch, pairs, 0.1, 8, np.random.default_rng(0))
    assert torch.equal(same["traffic"], out["traffic"])  # reproducible from the generator


def _trains_resumes_exactly_and_matters(smoke_data: Path, tmp_path: Path, **option) -> None:
    """A run with ``option`` == the same run stopped at step 7 and resumed, and != a run
    without it."""
    a, b, plain = tmp_path / "a", tmp_path / "b", tmp_path / "plain"
    Trainer(tiny(smoke_data, a, **option)).train()
    Trainer(tiny(smoke_data, b, stop_after=7, **option)).train()
    Trainer(tiny(smoke_data, b, resume=True, **option)).train()
    Trainer(tiny(smoke_data, plain)).train()
    wa, wb, wp = weights(a / "last"), weights(b / "last"), weights(plain / "last")
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert any(not torch.equal(wa[k], wp[k]) for k in wa)  # the option changed the training


def test_history_noise_trains_and_resumes_exactly(smoke_data: Path, tmp_path: Path) -> None:
    _trains_resumes_exactly_and_matters(smoke_data, tmp_path, history_noise=0.1)
    with pytest.raises(ValueError, match="history_noise"):
        tiny(smoke_data, tmp_path, history_noise=-0.1)


def test_pushforward_loss_equals_the_last_chunks_of_a_longer_rollout(smoke_data: Path) -> None:
    """Oracle: ``free_chunks=F`` then ``n`` loss chunks == chunks ``F..F+n-1`` of a plain
    ``F+n``-chunk loss (each chunk reads the previous predictions either way); the loss
    still back-propagates (through the loss chunk)."""
    from worldmodel.train import multi_chunk_loss

    trainer = Trainer(tiny(smoke_data, smoke_data / "never-written", n_chunks=3))
    model, cfg = trainer.core.eval(), trainer.cfg
    batch, _ = next(trainer._batches())  # 3 chunks after the history
    _, whole = multi_chunk_loss(model, batch, 3, cfg.history, cfg.horizon)
    loss, pushed = multi_chunk_loss(model, batch, 1, cfg.history, cfg.horizon, free_chunks=2)
    assert pushed["mse_c0"] == pytest.approx(whole["mse_c2"], rel=1e-5)
    assert pushed["mse_c0"] != pytest.approx(whole["mse_c0"], rel=1e-3)
    loss.backward()  # the loss chunk's graph only: the free chunks ran under no_grad
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_pushforward_trains_resumes_exactly_and_is_validated(
    smoke_data: Path, tmp_path: Path
) -> None:
    _trains_resumes_exactly_and_matters(smoke_data, tmp_path, pushforward=2)
    assert json.loads((tmp_path / "a" / "config.json").read_text())["train"]["pushforward"] == 2
    # free chunks from step 6 on: the same weights as never at step 6, other ones at step 12
    runs = {}
    for start in (6, 99):
        for stop in (6, 0):
            runs[start, stop] = tmp_path / f"from{start}-stop{stop}"
            kw = dict(pushforward=2, pushforward_from=start, stop_after=stop)
            Trainer(tiny(smoke_data, runs[start, stop], **kw)).train()
    w = {key: weights(path / "last") for key, path in runs.items()}
    assert all(torch.equal(v, w[99, 6][k]) for k, v in w[6, 6].items())
    assert any(not torch.equal(v, w[99, 0][k]) for k, v in w[6, 0].items())
    assert TrainConfig(pushforward=2, n_chunks=2, history=8, horizon=4).window == 8 + 4 * 4
    with pytest.raises(ValueError, match="pushforward"):
        tiny(smoke_data, tmp_path, pushforward=-1)
    with pytest.raises(ValueError, match="pushforward_from"):
        tiny(smoke_data, tmp_path, pushforward_from=-1)


def _flags(argv: list[str]) -> dict[str, tuple[str, ...]]:
    """``--flag v1 v2`` → ``{"--flag": ("v1", "v2")}`` (a bare switch maps to ``()``)."""
    flags: dict[str, tuple[str, ...]] = {}
    key = None
    for tok in argv:
        if tok.startswith("--"):
            key = tok
            flags[key] = ()
        elif key is not None:
            flags[key] += (tok,)
    return flags


def test_ablation_script_trains_the_documented_recipe() -> None:
    """``scripts/ablation.sh``'s rows are the shipped-model command of docs/worldmodel.md, changed only in
    budget and bookkeeping, plus each row's own removal."""
    import shlex

    text = (REPO / "docs" / "worldmodel.md").read_text(encoding="utf-8")
    start = text.index("python -m worldmodel.train --data data/default --out runs/mobiwm-default")
    block = text[start : text.index("\n```", start)].split("\ntensorboard")[0]
    readme = _flags(shlex.split(block.replace("\\\n", " "))[3:])
    env = {**os.environ, "DRY_RUN": "1", "STEPS": "600"}
    rows = ("full", "cov", "trn", "od", "XL")
    res = subprocess.run(
        ["bash", str(REPO / "scripts" / "ablation.sh"), "runs/x", *rows],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    lines = res.stdout.strip().splitlines()
    assert len(lines) == len(rows) + 1 and "worldmodel.evaluate" in lines[-1]
    budget = {"--out", "--max-steps", "--max-minutes", "--threads", "--no-progress"}
    cov = {"--coverage-prior", "--coverage-daily-demand", "--coverage-calibrate"}
    for row, line in zip(rows, lines, strict=False):
        got = _flags(shlex.split(line)[3:])
        assert got["--out"] == (f"runs/x/{row}",) and got["--max-steps"] == ("600",)
        want = {k: v for k, v in readme.items() if k not in budget}
        if row == "cov":
            want = {k: v for k, v in want.items() if k not in cov}
        if row in ("trn", "od"):
            want["--ablate"] = (row,)
        if row == "XL":
            want["--preset"] = ("XL",)
        assert {k: v for k, v in got.items() if k not in budget} == want, row
    bad = subprocess.run(
        ["bash", str(REPO / "scripts" / "ablation.sh"), "runs/x", "full", "bogus"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert bad.returncode == 2 and "unknown row bogus" in bad.stderr and not bad.stdout
    jobs = subprocess.run(
        ["bash", str(REPO / "scripts" / "ablation.sh"), "runs/x", "full"],
        capture_output=True, text=True, env={**env, "JOBS": "two"},
    )  # fmt: skip
    assert jobs.returncode == 2 and "JOBS must be a positive integer" in jobs.stderr
    default = subprocess.run(
        ["bash", str(REPO / "scripts" / "ablation.sh"), "runs/x"],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    trained = [
        _flags(shlex.split(line)[3:])["--out"][0] for line in default.stdout.splitlines()[:-1]
    ]
    assert trained == [f"runs/x/{r}" for r in ("full", "trn", "spe", "lg", "fa", "od", "cov")]
    # each driver's evaluation has its own folder, named by its rows
    assert _flags(shlex.split(lines[-1])[3:])["--out"] == ("runs/x/eval-full-cov-trn-od-XL",)
