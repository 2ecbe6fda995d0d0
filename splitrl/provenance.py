"""Provenance of a result file: the exact command, the git revision (and whether the tree was dirty),
when, on what machine, under what load and with which versions of the numerical libraries —
written into every benchmark result.

The versions matter as much as the revision: the same commit rerun in a venv rebuilt with newer
releases inside the pinned ranges gave other PPO-on-surrogate regrets (seeded, bit-exact run to
run) and cut statistics that differ in the 7th digit; ``packages`` lets
`benchmarks/reproduce.py` say which release moved when a seeded result no longer reproduces.

The revision is the checkout's the package is imported from (`splitrl.resources.checkout_root`);
an installed wheel has none, so ``git_revision`` and ``git_dirty`` are ``None`` there, never the
revision of whatever repository the current directory or the venv happens to sit in."""
from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from splitrl.resources import checkout_root

__all__ = ["run_record", "package_versions", "RECORDED_PACKAGES"]

# The distributions whose numerics reach a result (model forward, fitting, RL, statistics).
RECORDED_PACKAGES = ("numpy", "scipy", "scikit-learn", "stable-baselines3", "gymnasium", "transformers",
                     "numba", "torchao", "pandas")


def package_versions(names: tuple[str, ...] = RECORDED_PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (``None``: not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _relative(arg: str, root: Path) -> str:
    """``arg`` (or the value of ``--flag=PATH``) relative to ``root`` when it is an absolute path inside it."""
    flag, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
    path = Path(value)
    if path.is_absolute() and path.resolve().is_relative_to(root):
        return f"{flag}{eq}{path.resolve().relative_to(root)}"
    return arg


def run_record(argv: list[str] | None = None, *, threads: int | None = None) -> dict[str, Any]:
    """``command``, ``git_revision``, ``git_dirty``, ``date_utc``, machine and load of this run."""
    root = checkout_root()
    argv = list(sys.argv if argv is None else argv)
    exe = Path(sys.executable)
    main_of = Path(argv[0]).parent if argv and Path(argv[0]).name == "__main__.py" else None
    if main_of is not None and (main_of.name == "splitrl" or (main_of.name == "cli" and main_of.parent.name == "splitrl")):
        # `python -m splitrl` (or `-m splitrl.cli`, the same command line) puts the package's __main__.py path in argv[0]
        argv = ["-m", "splitrl", *argv[1:]]
    if root:  # the same command from any checkout: paths inside it are recorded relative to it
        argv = [_relative(a, root) for a in argv]
    cmd = [str(exe.relative_to(root)) if root and exe.is_relative_to(root) else "python", *argv]
    # Only a checkout that is itself a git work tree has a revision (an sdist unpacked inside some
    # other repository must not report that repository's).
    in_git = root is not None and _git(["rev-parse", "--show-toplevel"], root) == str(root)
    status = _git(["status", "--porcelain", "--untracked-files=no"], root) if in_git else None
    import torch

    return {
        "command": shlex.join(cmd),
        "git_revision": _git(["rev-parse", "HEAD"], root) if in_git else None,
        "git_dirty": bool(status) if in_git else None,
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "packages": package_versions(),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "loadavg_1_5_15": list(os.getloadavg()),
    }
