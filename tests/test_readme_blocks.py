"""Every Python block of README.md runs as written, in a fresh interpreter (tiny models only).

Blocks that need SmolLM2 (minutes of CPU: the slow suite and `make demo` run those paths) or a
running server (the OpenAI client block; `tests/test_serve*.py` drive that route with the same
client) are listed and skipped by name, so a new block is run by default and cannot drift.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NEEDS = {"smollm2-135m": "SmolLM2 (slow)", "OpenAI(": "a running splitrl serve"}


def _blocks() -> list[tuple[int, str]]:
    text = (ROOT / "README.md").read_text()
    out = []
    for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
        out.append((text[:m.start()].count("\n") + 1, m.group(1)))
    return out


def _skip_reason(code: str) -> str | None:
    return next((why for key, why in NEEDS.items() if key in code), None)


def test_readme_has_python_blocks_and_only_known_ones_are_skipped():
    blocks = _blocks()
    assert len(blocks) >= 4
    skipped = {line: _skip_reason(code) for line, code in blocks if _skip_reason(code)}
    assert len(skipped) < len(blocks), skipped              # most blocks really run


@pytest.mark.timeout(300)
@pytest.mark.parametrize("line,code", [b for b in _blocks() if not _skip_reason(b[1])],
                         ids=lambda v: f"line{v}" if isinstance(v, int) else "")
def test_readme_python_block_runs(tmp_path, line, code):
    code = code.replace("/tmp/shards", str(tmp_path / "shards"))   # the block's own folder, in the test's tmp
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    assert p.returncode == 0, f"README.md line {line}:\n{code}\n--- stderr ---\n{p.stderr[-3000:]}"
