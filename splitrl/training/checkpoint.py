"""Atomic checkpoint directories: ``checkpoints/<run>/latest`` always names a complete checkpoint.

Layout of ``checkpoints/<run>/``::

    latest -> step-000000004096     symlink to the newest complete checkpoint (atomically swapped)
    step-000000002048/              older complete checkpoints (the newest ``keep`` are kept)
    step-000000004096/
        manifest.json               written last: format, step, run, agent kind, env id, time,
                                    SHA-256 of every other file (checked on load)
        config.yaml                 the full resolved run config
        agent/                      Agent.save(): agent.json (kind, counters) + artefacts
                                    (SB3: model.zip, sb3_state.json, sb3_arrays.npz, replay_buffer.npz)
        env_state.json, env_arrays.npz      the training env's mutable state (splitrl.training.state)
        rng.json, torch_rng.safetensors     Python/NumPy global RNG states, torch CPU RNG state
        trainer.json, trainer_arrays.npz    trainer counters, schedules, episode accumulators

A checkpoint is written into ``.tmp-<step>-<pid>/``, its files fsynced, the manifest written last,
the directory renamed to ``step-<step>`` (a rename to a new name is atomic) and finally a new
``latest`` symlink is renamed over the old one (``os.replace``, atomic). A kill at any point leaves
``latest`` on the previous complete checkpoint; stale ``.tmp-*`` folders are removed by the next
write. Where symlinks are unavailable, ``LATEST`` (a text file replaced atomically) names it instead.

Loading (`latest_checkpoint`, `resolve_checkpoint`, and `Agent.load` for an ``agent/`` folder inside
a checkpoint) verifies the manifest: every listed file present with its SHA-256, and no file that
is not listed (`splitrl.integrity.verify_listed_files`). Nothing in a checkpoint can run code: it
is JSON, YAML read with ``safe_load``, NPZ read with ``allow_pickle=False``, safetensors, and SB3's
zip whose tensors are read with ``torch.load(weights_only=True)`` (its pickled "data" section is
never read); surrogates are refitted from their saved data (`splitrl.surrogate.base`). The hashes
sit beside the files, so they catch corruption and stray files, not forgery; forgery is harmless
because there is no code to forge.

One writer per run (`RunLock`): a new run creates ``<checkpoints>/<run>/`` with ``mkdir`` (atomic:
a second run of the same name fails) and every writer — new or resumed — holds an exclusive
``flock`` on ``<run>/.lock`` until it closes, so two processes never write one run.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable

from splitrl.errors import UsageError
from splitrl.integrity import IntegrityError, sha256_file as _sha256, verify_listed_files
from splitrl.lock import ExclusiveLock

__all__ = ["CheckpointError", "RunLock", "write_checkpoint", "latest_checkpoint", "read_manifest", "list_checkpoints",
           "resolve_checkpoint"]

FORMAT = 1
_STEP_DIR = re.compile(r"^step-(\d{12})(?:\.(\d+))?$")


class CheckpointError(UsageError):
    """A checkpoint is missing, broken or busy; the message names the path and what is wrong."""


class RunLock:
    """Exclusive ownership of ``<checkpoints>/<run>/`` by this process (see module doc).

    ``RunLock(run_dir, new=True)`` creates the folder atomically (`CheckpointError` if it exists);
    ``new=False`` needs it to exist. Either way the lock is taken without waiting: a second writer
    gets `CheckpointError` naming the holder's pid. `release` (or process exit) frees it."""

    def __init__(self, run_dir: Path, *, new: bool) -> None:
        self.run_dir = Path(run_dir)
        if new:
            self.run_dir.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.mkdir(self.run_dir)
            except FileExistsError:
                raise CheckpointError(f"run folder {self.run_dir} exists: pick another --run, or continue it with "
                                      f"--resume {self.run_dir.name}") from None
        elif not self.run_dir.is_dir():
            raise CheckpointError(f"{self.run_dir} does not exist: no run to resume")
        name = self.run_dir.name
        self._lock = ExclusiveLock(self.run_dir / ".lock", lambda holder: CheckpointError(
            f"run {name!r} is being written by another process (pid {holder}); wait for it to finish or use another --run"))

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = []
    for p in run_dir.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / "manifest.json").is_file():
            found.append((int(m.group(1)), int(m.group(2) or 0), p))
    return [p for *_, p in sorted(found)]


def write_checkpoint(run_dir: Path, step: int, fill: Callable[[Path], None], *, meta: dict[str, Any] | None = None,
                     keep: int = 2) -> Path:
    """Write a checkpoint for ``step`` atomically: ``fill(tmp_dir)`` writes the files, then the
    manifest is added and ``latest`` switched to it. Keeps the newest ``keep`` checkpoints."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob(".tmp-*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
    tmp = run_dir / f".tmp-{int(step):012d}-{os.getpid()}"
    tmp.mkdir()
    fill(tmp)
    files = {}
    for p in sorted(tmp.rglob("*")):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
            files[p.relative_to(tmp).as_posix()] = _sha256(p)
    manifest = {"format": FORMAT, "step": int(step), "created": _dt.datetime.now(_dt.timezone.utc).isoformat(),
                **(meta or {}), "files": files}
    with open(tmp / "manifest.json", "w") as f:
        json.dump(manifest, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    for d in [tmp, *[p for p in tmp.rglob("*") if p.is_dir()]]:
        _fsync_dir(d)
    name, k = f"step-{int(step):012d}", 0
    while (run_dir / name).exists():
        k += 1
        name = f"step-{int(step):012d}.{k}"
    final = run_dir / name
    os.replace(tmp, final)
    _point_latest(run_dir, final)
    _fsync_dir(run_dir)
    _prune(run_dir, keep, final)
    return final


def _point_latest(run_dir: Path, final: Path) -> None:
    link_tmp = run_dir / f".tmp-latest-{os.getpid()}"
    try:
        link_tmp.unlink(missing_ok=True)
        os.symlink(final.name, link_tmp, target_is_directory=True)
        os.replace(link_tmp, run_dir / "latest")
    except OSError:
        link_tmp.unlink(missing_ok=True)
        ptr_tmp = run_dir / f".tmp-LATEST-{os.getpid()}"
        ptr_tmp.write_text(final.name + "\n")
        os.replace(ptr_tmp, run_dir / "LATEST")


def _prune(run_dir: Path, keep: int, newest: Path) -> None:
    ckpts = [p for p in list_checkpoints(run_dir) if p != newest]
    for old in ckpts[: max(0, len(ckpts) - (max(1, keep) - 1))]:
        shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(run_dir: Path, *, verify: bool = True) -> Path:
    """The folder ``latest`` names, checked against its manifest; `CheckpointError` otherwise."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} does not exist: no run to resume")
    link, ptr = run_dir / "latest", run_dir / "LATEST"
    if link.is_symlink() or link.is_dir():
        target = link.resolve()
    elif ptr.is_file():
        target = run_dir / ptr.read_text(errors="replace").strip()[:100]
    else:
        have = ", ".join(p.name for p in list_checkpoints(run_dir)) or "none"
        raise CheckpointError(f"{run_dir} has no 'latest' checkpoint (complete checkpoints: {have})")
    if not target.is_dir():
        raise CheckpointError(f"{link} points to {target}, which does not exist")
    if target.resolve().parent != run_dir.resolve() or not _STEP_DIR.match(target.name):
        raise CheckpointError(f"{link} points to {target}, which is not a checkpoint of {run_dir}")
    if verify:
        read_manifest(target, verify=True)
    return target


def read_manifest(ckpt: Path, *, verify: bool = False) -> dict[str, Any]:
    """The manifest of checkpoint folder ``ckpt`` (with ``verify``: every file's SHA-256 checked)."""
    path = Path(ckpt) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} not found: incomplete checkpoint") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"{path} is corrupt: {type(e).__name__}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise CheckpointError(f"{path}: checkpoint format {str(got)[:40]!r}, this version reads {FORMAT}")
    if verify:
        try:
            verify_listed_files(ckpt, manifest.get("files"), listed_in=str(path), exclude=frozenset({"manifest.json"}))
        except IntegrityError as e:
            raise CheckpointError(str(e)) from None
    return manifest


def resolve_checkpoint(path: str | Path) -> Path:
    """The verified checkpoint folder behind ``path``: a run folder (its ``latest``), a checkpoint
    folder (``step-*``, holding ``manifest.json``) or the ``agent/`` folder inside one.

    Raises `CheckpointError` (one line) when ``path`` is none of these or fails verification."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint {p} does not exist")
    if not p.is_dir():
        raise CheckpointError(f"checkpoint {p} is not a folder: give a run folder (checkpoints/<run>) or a checkpoint folder")
    if p.name == "agent" and (p.parent / "manifest.json").is_file():
        p = p.parent
    if (p / "manifest.json").is_file():
        read_manifest(p, verify=True)
        return p
    return latest_checkpoint(p)
