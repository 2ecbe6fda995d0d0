"""The one exclusive-writer lock: a sweep table (`splitrl.sweep`) and a training run folder
(`splitrl.training.checkpoint`) each have one writer at a time.

`ExclusiveLock` takes ``flock(LOCK_EX | LOCK_NB)`` on a lock file and writes its pid into it, so a
second writer fails at once with a message naming the holder; the kernel drops the lock when the
descriptor closes or the process dies, so a crash never leaves a stale lock behind. Kept
hand-written rather than `filelock.FileLock(timeout=0)`: it is ~30 lines, it reports the
holder's pid (filelock only says the lock is taken), and it has exactly the semantics above
(filelock 4's Unix lock adds soft-lock files and break markers we would have to reason about).
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Callable

__all__ = ["ExclusiveLock"]


class ExclusiveLock:
    """Hold ``path`` exclusively until `release` (or process exit), without waiting.

    Args:
        path: the lock file (created if absent; its content is the holder's pid).
        busy: builds the error raised when another process holds it, from the holder's pid
            (``"?"`` when unreadable) — callers phrase what is busy and what to do.
    """

    def __init__(self, path: str | Path, busy: Callable[[str], Exception]) -> None:
        self.path = Path(path)
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.pread(self._fd, 32, 0).decode("ascii", "replace").strip() or "?"
            except OSError:
                holder = "?"
            os.close(self._fd)
            self._fd = None
            raise busy(holder) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> "ExclusiveLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
