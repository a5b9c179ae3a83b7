"""``scripts/table1.sh``: the commands it runs (dry run), checked against Table 2's hints."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from agents.table2 import TRAIN_COMMANDS
from tests.worldmodel.test_train import _flags

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "table1.sh"


def _dry(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "DRY_RUN": "1", **env},
    )


def test_rows_train_as_table2_says_then_one_evaluation(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    res = _dry(str(out))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    rows = ("static", "gru", "itransformer", "rssm", "tdmpc")
    assert len(lines) == len(rows) + 1
    bookkeeping = {"--out", "--seed", "--no-progress"}
    for row, line in zip(rows, lines, strict=False):
        got = _flags(shlex.split(line)[3:])
        want = _flags(shlex.split(TRAIN_COMMANDS[row])[3:])
        folder = "static-mobiwm" if row == "static" else f"{row}-wm"
        assert got["--out"] == (str(out / folder),) and got["--seed"] == ("0",)
        assert {k: v for k, v in got.items() if k not in bookkeeping} == {
            k: v for k, v in want.items() if k not in bookkeeping
        }, row
    ev = _flags(shlex.split(lines[-1])[3:])
    assert ev["--data"] == ("data/test12",) and ev["--sections"] == ("rollout", "counterfactual")
    assert ev["--models"][0] == "full=mobiwm_env/assets/mobiwm-full"
    assert ev["--models"][-2:] == ("persistence", "seasonal")
    assert [m.split("=")[0] for m in ev["--models"][1:-2]] == list(rows)


def test_trained_rows_are_skipped_and_bad_rows_refused(tmp_path: Path) -> None:
    (tmp_path / "gru-wm" / "best").mkdir(parents=True)
    res = _dry(str(tmp_path), "gru", "rssm", SEED="3")
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 2 and "--arch rssm" in lines[0] and "--seed 3" in lines[0]
    assert f"gru={tmp_path}/gru-wm/best" in lines[1]
    bad = _dry(str(tmp_path), "gru", "lstm")
    assert bad.returncode == 2 and "unknown row lstm" in bad.stderr and not bad.stdout
