"""File integrity: the one SHA-256 helper (GGUF cache key, checkpoints) and the file-list check
behind every checkpoint / agent load.

A folder written by splitrl (a trainer checkpoint, an agent folder) carries a list of its files
with their SHA-256 (``manifest.json`` / ``agent.json``). `verify_listed_files` checks a folder
against such a list: every listed file is present and matches, and nothing is there that is not
listed (no extra file, no symlink), so a loader never reads a file nobody wrote. The list lives in
the same folder, so this catches corruption, truncation and stray files — not a deliberate
forgery. What makes a forged checkpoint harmless is that nothing in it is executable: it is JSON,
NPZ (``allow_pickle=False``), safetensors and torch tensors read with ``weights_only=True``.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

from splitrl.errors import UsageError

__all__ = ["sha256_file", "IntegrityError", "list_files", "verify_listed_files", "MAX_LISTED_FILES", "CHECKPOINT_FORMAT",
           "CheckpointError", "read_manifest", "read_json_object"]

MAX_LISTED_FILES = 10_000


class IntegrityError(UsageError):
    """A folder does not match its file list (missing, changed, unlisted or linked file)."""


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in chunks (model files are hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def list_files(root: Path, exclude: frozenset[str] = frozenset()) -> dict[str, Path]:
    """Every entry below ``root`` that is not a directory, by POSIX relative path (symlinks included,
    not followed), minus ``exclude``."""
    root = Path(root)
    out: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for name in [*filenames, *[d for d in dirnames if (base / d).is_symlink()]]:
            p = base / name
            rel = p.relative_to(root).as_posix()
            if rel not in exclude:
                out[rel] = p
            if len(out) > MAX_LISTED_FILES:
                raise IntegrityError(f"{root} holds more than {MAX_LISTED_FILES} files: not a splitrl folder")
    return out


def verify_listed_files(root: str | Path, files: Mapping[str, str], *, listed_in: str,
                        exclude: frozenset[str] = frozenset()) -> None:
    """Check folder ``root`` against ``files`` ({relative path: SHA-256}) from ``listed_in``.

    Raises `IntegrityError` naming the first problem: a malformed list, a listed file missing or
    changed, a symlink, or a file present but not listed (``exclude`` names the list files)."""
    root = Path(root)
    if not isinstance(files, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise IntegrityError(f"{listed_in}: 'files' must map relative paths to SHA-256 strings")
    present = list_files(root, exclude)
    for rel, p in present.items():
        if p.is_symlink():
            raise IntegrityError(f"{p} is a symlink; a splitrl folder holds only plain files")
        if rel not in files:
            raise IntegrityError(f"{p} is not listed in {listed_in}: refusing to load a folder with unlisted files")
    for rel, digest in files.items():
        if rel not in present:
            raise IntegrityError(f"{root / rel} (listed in {listed_in}) is missing")
        if sha256_file(present[rel]) != digest:
            raise IntegrityError(f"{root / rel} does not match its checksum in {listed_in}: the folder is corrupt")


CHECKPOINT_FORMAT = 1
"""The format number a trainer checkpoint's ``manifest.json`` carries (`splitrl.training.checkpoint`)."""


class CheckpointError(UsageError):
    """A checkpoint is missing, broken or busy; the message names the path and what is wrong."""


def read_json_object(path: Path, error: type[Exception], *, missing: str, what: str = "a JSON object") -> dict[str, Any]:
    """The JSON object in the file ``path``, or ``error`` with a one-line reason: ``"<path> not
    found: <missing>"``, ``"<path> is corrupt: <exception type>"`` (unreadable, not UTF-8, not JSON,
    nested past the parser's depth) or ``"<path> is not <what>"`` (JSON, but not an object).
    The file's contents never reach the message: a checkpoint is untrusted input."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{path} not found: {missing}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise error(f"{path} is corrupt: {type(e).__name__}") from None
    if not isinstance(doc, dict):
        raise error(f"{path} is not {what}")
    return doc


def read_manifest(ckpt: Path, *, verify: bool = False) -> dict[str, Any]:
    """The manifest of checkpoint folder ``ckpt`` (with ``verify``: every file's SHA-256 checked)."""
    path = Path(ckpt) / "manifest.json"
    manifest = read_json_object(path, CheckpointError, missing="incomplete checkpoint", what="a checkpoint manifest")
    if manifest.get("format") != CHECKPOINT_FORMAT:
        got = manifest.get("format")
        raise CheckpointError(f"{path}: checkpoint format {str(got)[:40]!r}, this version reads {CHECKPOINT_FORMAT}")
    if verify:
        try:
            verify_listed_files(ckpt, manifest.get("files"), listed_in=str(path), exclude=frozenset({"manifest.json"}))
        except IntegrityError as e:
            raise CheckpointError(str(e)) from None
    return manifest
