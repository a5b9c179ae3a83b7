"""The documentation's code runs: every ```python block of README.md and docs/*.md.

Blocks of one file run in order in one fresh process and share one namespace (a page may build
on its earlier blocks), from the repository root. A block right after a line
``<!-- docs-test: skip -->`` is not run (e.g. one that needs a trained run folder). A failing
block is named by its file and line in the traceback. ``MOBIWM_DOCS_SMOKE=1`` is set for the
process, for blocks that want to shrink their settings.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SKIP_MARK = "<!-- docs-test: skip -->"
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@dataclass(frozen=True)
class Block:
    """One fenced code block: its source, the line of its first code line (1-based), its
    language and whether it is marked as skipped."""

    code: str
    line: int
    lang: str
    skipped: bool


_FENCE = re.compile(r"^(\s*)```(\w*)\s*$")


def code_blocks(text: str) -> list[Block]:
    """The fenced code blocks of a Markdown text, in order."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang = len(m.group(1)), m.group(2)
        prev = next((s.strip() for s in reversed(lines[:i]) if s.strip()), "")
        start, i = i + 1, i + 1
        while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
            i += 1
        if i >= len(lines):
            raise ValueError(f"unclosed code fence opened on line {start}")
        body = "\n".join(s[indent:] for s in lines[start:i])
        blocks.append(Block(body, start + 1, lang, prev == SKIP_MARK))
        i += 1
    return blocks


def test_code_blocks_parses_fences_languages_and_skip_marks() -> None:
    text = "\n".join(
        [
            "# t",
            "```python",
            "x = 1",
            "```",
            SKIP_MARK,
            "",
            "```python",
            "raise SystemExit(1)",
            "```",
            "  ```bash",
            "  ls",
            "  ```",
            "```",
            "plain",
            "```",
        ]
    )
    got = code_blocks(text)
    assert [(b.lang, b.line, b.skipped, b.code) for b in got] == [
        ("python", 3, False, "x = 1"),
        ("python", 8, True, "raise SystemExit(1)"),
        ("bash", 11, False, "ls"),
        ("", 14, False, "plain"),
    ]
    with pytest.raises(ValueError, match="unclosed code fence opened on line 2"):
        code_blocks("text\n```python\nx = 1\n")


def test_the_docs_have_runnable_python() -> None:
    """The README keeps its quick start, and most pages show code (the runner is not idle)."""
    readme = [
        b for b in code_blocks(DOC_FILES[0].read_text(encoding="utf-8")) if b.lang == "python"
    ]
    assert sum(not b.skipped for b in readme) >= 3
    pages = [p for p in DOC_FILES[1:] if p.name in {"twin.md", "envs.md", "agents.md"}]
    assert len(pages) == 3, "docs/twin.md, envs.md and agents.md must exist"


def _script(path: Path) -> str:
    """A Python script that execs the file's runnable python blocks in one namespace."""
    rel = path.relative_to(REPO).as_posix()
    parts = ["ns = {'__name__': '__main__'}"]
    for b in code_blocks(path.read_text(encoding="utf-8")):
        if b.lang == "python" and not b.skipped:
            # pad so that traceback line numbers are the Markdown file's
            src = "\n" * (b.line - 1) + b.code
            parts.append(f"exec(compile({src!r}, {rel!r}, 'exec'), ns)")
    return "\n".join(parts) + "\n"


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_doc_python_blocks_run(path: Path, tmp_path: Path) -> None:
    script = _script(path)
    if script.count("exec(") == 0:
        pytest.skip(f"{path.name} has no runnable python block")
    runner = tmp_path / "run_doc.py"
    runner.write_text(script, encoding="utf-8")
    env = {
        **os.environ,
        "MOBIWM_DOCS_SMOKE": "1",
        "SDL_VIDEODRIVER": "dummy",
        "SDL_AUDIODRIVER": "dummy",
        "MPLBACKEND": "Agg",
        "PYTHONPATH": str(REPO),
    }
    res = subprocess.run(
        [sys.executable, str(runner)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, f"{path.name}: a python block failed\n{res.stderr[-4000:]}"
