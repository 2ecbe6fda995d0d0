"""Provenance of a result file: the exact command, the git revision (and whether the tree was dirty),
when, on what machine and under what load — written into every benchmark result."""
from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["run_record"]


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_record(argv: list[str] | None = None, *, threads: int | None = None) -> dict[str, Any]:
    """``command``, ``git_revision``, ``git_dirty``, ``date_utc``, machine and load of this run."""
    root = Path(__file__).resolve().parents[1]
    argv = list(sys.argv if argv is None else argv)
    exe = Path(sys.executable)
    main_of = Path(argv[0]).parent if argv and Path(argv[0]).name == "__main__.py" else None
    if main_of is not None and (main_of.name == "splitrl" or (main_of.name == "cli" and main_of.parent.name == "splitrl")):
        # `python -m splitrl` (or `-m splitrl.cli`, the same command line) puts the package's __main__.py path in argv[0]
        argv = ["-m", "splitrl", *argv[1:]]
    elif argv and Path(argv[0]).is_absolute() and Path(argv[0]).resolve().is_relative_to(root):
        argv = [str(Path(argv[0]).resolve().relative_to(root)), *argv[1:]]  # the same command from any checkout
    cmd = [str(exe.relative_to(root)) if exe.is_relative_to(root) else "python", *argv]
    status = _git(["status", "--porcelain", "--untracked-files=no"], root)
    import torch

    return {
        "command": shlex.join(cmd),
        "git_revision": _git(["rev-parse", "HEAD"], root),
        "git_dirty": bool(status),
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": threads if threads is not None else torch.get_num_threads(),
        "loadavg_1_5_15": list(os.getloadavg()),
    }
