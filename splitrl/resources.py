"""Where the library's own files are: the default data it ships, and the checkout it runs from (if any).

Owns `resource_path` (a file or folder of the package data, ``splitrl/data/``), `checkout_root`
(the git checkout the package is imported from, ``None`` for an installed wheel) and `results_dir`
(where commands write result files by default). Library code never builds a path to its default
data from ``Path(__file__).parents[...]``; it asks this module. (The WikiText-2 corpus is user
data beside a checkout, never shipped: `splitrl.eval.corpus` owns its lookup.)

Shipped (``[tool.setuptools.package-data]`` in pyproject.toml):

=============================  =================================================  ==========================
``splitrl/data/<name>``        single source in the checkout                      default of
=============================  =================================================  ==========================
``sweep_smollm2.csv`` (+meta)  ``benchmarks/results/`` (``splitrl sweep``)         ``SplitPointTableEnv`` table
``privacy_smollm2.json``       ``benchmarks/results/`` (privacy probe)             ``env.privacy_table``
``aircomp.json``               ``benchmarks/results/`` (aircomp benchmark)         ``AirCompAssignEnv`` quality
``configs/``                   ``configs/`` (the agents' train configs)            ``train.py --agent KIND``
=============================  =================================================  ==========================

(The device profiles, ``splitrl/cost/profiles/*.yaml``, live inside the package already.) No
library default names a scenario or trace file: ``--scenario`` / ``channel.path`` are always the
user's, so ``benchmarks/scenarios`` and ``benchmarks/traces`` are not shipped.

How the files get into the package — chosen: **(a) relative symlinks**,
``splitrl/data/<file> -> ../../benchmarks/results/<file>`` and ``splitrl/data/configs -> ../../configs``:

* (a) keeps one copy in git: the benchmark scripts go on writing ``benchmarks/results/`` (atomically,
  ``os.replace``, so the file is never absent), and the package sees the new numbers with no step in
  between. setuptools follows symlinks when it copies package data, so ``pip wheel .`` and
  ``python -m build`` (sdist, then wheel) both store regular files (tests/test_wheel_install.py
  installs the wheel outside the checkout and runs from it); the editable install maps
  ``splitrl`` to the checkout's folder, so the symlinks resolve there as they are.
  `resource_path` resolves them, so inside a checkout the paths (in messages, in result files)
  are the ``benchmarks/results/`` and ``configs/`` ones as before. Cost: a Windows clone needs
  ``git config core.symlinks true`` (else git writes each link as a one-line text file).
* (b) a setuptools build hook copying the files at build time needs a ``setup.py`` or an in-tree
  backend, runs only when a wheel is built (an editable install would still need a second,
  checkout-relative lookup), and hides what ships from anyone reading the tree.
* (c) moving ``configs/`` into the package (a root ``configs`` symlink for ``configs/mbrl.yaml``)
  would do for the configs, but not for the results, which the benchmark scripts own at
  ``benchmarks/results/``; one mechanism for all four is simpler, and the configs stay where
  the README and the users name them.

A missing data file is a broken install (or, in a checkout, a missing result or a symlink
checked out as text): `resource_path` raises `UsageError` naming it.
"""
from __future__ import annotations

import atexit
import contextlib
from importlib import resources
from pathlib import Path

from splitrl.errors import UsageError

__all__ = ["DATA_DIR", "resource_path", "checkout_root", "results_dir"]

DATA_DIR = "data"  # the package-data folder inside ``splitrl``

# `as_file` extracts a file to a temporary copy when the package is not on a file system (a zip
# import); the module-level defaults hold their paths for the whole process, so every context is
# closed only at exit. On a file system (every pip install) `as_file` returns the path itself.
_open = contextlib.ExitStack()
atexit.register(_open.close)


def resource_path(name: str) -> Path:
    """The path of shipped data file (or folder) ``name``, relative to ``splitrl/data/``
    (``"sweep_smollm2.csv"``, ``"configs"``); `UsageError` naming it when it is absent."""
    ref = resources.files("splitrl").joinpath(DATA_DIR, *name.split("/"))
    if not (ref.is_file() or ref.is_dir()):
        raise UsageError(
            f"package data splitrl/{DATA_DIR}/{name} is missing: reinstall splitrl (pip install splitrl-*.whl); in a "
            f"checkout it links into benchmarks/results/ or configs/ (git config core.symlinks true on Windows)")
    return _open.enter_context(resources.as_file(ref)).resolve()


def checkout_root() -> Path | None:
    """The source checkout ``splitrl`` is imported from (editable install or ``PYTHONPATH``),
    ``None`` when it runs from an installed wheel."""
    root = Path(__file__).resolve().parents[1]
    # A wheel installs into site-packages, which has neither file; a checkout has both.
    return root if (root / "pyproject.toml").is_file() and (root / "benchmarks").is_dir() else None


def results_dir() -> Path:
    """Default folder of result files: the checkout's ``benchmarks/results/``, else the current directory."""
    root = checkout_root()
    return root / "benchmarks" / "results" if root is not None else Path(".")
