"""Local child processes: start ``python -m splitrl ...`` children, find their ports, stop them by pid.

Every multi-process part of splitrl (the edge server, pipeline stages, tensor-parallel workers)
runs as ``python -m splitrl <subcommand>`` children. This module owns how they are started and
stopped, so the CLI drivers, ``make demo``, benchmarks and tests all do it the same way:

* each child gets ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` = its thread budget (default 1):
  several processes on few cores oversubscribe badly otherwise;
* a server child binds ``127.0.0.1:0`` and writes the port it got to a *port file* (written
  atomically: a reader never sees a half-written number); `wait_for_port_file` waits for it while
  checking that the child is still alive, so a crash at start-up is an error, not a hang;
* children are stopped only through their own pid (SIGTERM, then SIGKILL after a grace period),
  never by name; `ChildProcess` is a context manager so nothing outlives the caller;
* a child also knows its parent's pid (``SPLITRL_PARENT_PID``): a worker child (pipeline stage,
  tp worker, aircomp worker: `WORKER_COMMANDS`) calls `exit_with_parent` first thing in
  ``python -m splitrl``, before the seconds of torch/transformers imports, so a SIGKILLed driver,
  which cannot stop its children, does not leave them running (each would hold its model part).

It also owns how a process measures its own memory (`peak_rss_bytes`, `anon_rss_bytes`), read from
``/proc/<pid>/status``. Never use getrusage(RUSAGE_SELF) max-RSS for a per-process peak: on
Linux it survives fork + exec (the kernel folds the pre-exec address space's high-water mark into
it), so every child reports at least its parent's resident set at the moment of the fork. VmHWM
belongs to the address space, which exec replaces, so it is the process's own peak.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Mapping, Sequence

from splitrl.log import get_logger

__all__ = [
    "ChildProcess", "anon_rss_bytes", "child_env", "exit_with_parent", "peak_rss_bytes", "proc_status_bytes", "rss_bytes",
    "spawn_splitrl", "wait_for_port_file", "write_port_file",
]

PARENT_PID_ENV = "SPLITRL_PARENT_PID"
ORPHAN_EXIT_CODE = 3
# Worker commands (argv prefixes) that exit with the driver that spawned them (`exit_with_parent`).
WORKER_COMMANDS = (("pipeline", "stage"), ("tp", "worker"), ("aircomp-worker",))



def proc_status_bytes(field: str, pid: int | str = "self") -> int | None:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmHWM``, ``VmRSS``, ``RssAnon``, ...) in bytes; None without procfs."""
    prefix = f"{field}:"
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(prefix):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_bytes(pid: int | str = "self") -> int:
    """Resident memory of the process now (``VmRSS``; psutil where there is no procfs)."""
    value = proc_status_bytes("VmRSS", pid)
    if value is not None:
        return value
    import psutil

    return int(psutil.Process(None if pid == "self" else int(pid)).memory_info().rss)


def peak_rss_bytes(pid: int | str = "self") -> int:
    """Peak resident memory of the process itself (``VmHWM``), not inherited from its parent.

    Read it inside the process whose peak you want (or pass that process's pid while it runs: the
    figure is gone once it exits). Without procfs (not Linux) this falls back to the resident set
    now, a lower bound of the peak — never to getrusage's max-RSS (see the module docstring).
    """
    value = proc_status_bytes("VmHWM", pid)
    return value if value is not None else rss_bytes(pid)


def anon_rss_bytes(pid: int | str = "self") -> int:
    """Anonymous resident memory (``RssAnon``): mmapped files do not count (psutil's USS without procfs)."""
    value = proc_status_bytes("RssAnon", pid)
    if value is not None:
        return value
    import psutil

    info = psutil.Process(None if pid == "self" else int(pid)).memory_full_info()
    return int(getattr(info, "uss", info.rss))


def child_env(threads: int = 1, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: this one, with its thread budget pinned and offline hub access."""
    env = dict(os.environ)
    env.update({
        "OMP_NUM_THREADS": str(int(threads)),
        "MKL_NUM_THREADS": str(int(threads)),
        "SPLITRL_THREADS": str(int(threads)),
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
        PARENT_PID_ENV: str(os.getpid()),
    })
    env.setdefault("HF_HUB_OFFLINE", "1")
    if extra:
        env.update({k: str(v) for k, v in extra.items()})
    return env


def exit_with_parent(poll_s: float = 0.5, *, what: str = "splitrl") -> bool:
    """Exit this process (status 3) as soon as the parent that spawned it (`spawn_splitrl`) is gone.

    For a child started by `spawn_splitrl` (``SPLITRL_PARENT_PID`` set; the variable is consumed
    here, so this process's own children do not inherit it). If the parent already died (this
    process was re-parented before getting here: start-up imports take seconds) it exits at once;
    otherwise a daemon thread polls ``os.getppid()``, which changes when the parent dies. Returns
    whether a watch applies (False for a process started by hand).
    """
    raw = os.environ.pop(PARENT_PID_ENV, "")
    if not raw.isdigit() or int(raw) <= 1:
        return False
    parent = int(raw)

    def gone() -> None:
        get_logger("proc").warning("%s: parent process %d is gone; exiting", what, parent)
        logging.shutdown()  # flush before _exit, which skips handlers
        os._exit(ORPHAN_EXIT_CODE)

    if os.getppid() != parent:
        gone()

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                gone()

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()
    return True


def write_port_file(path: str | Path, port: int) -> None:
    """Write ``port`` to ``path`` atomically (temp file + rename in the same folder)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".port-", dir=str(path.parent or "."))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(f"{int(port)}\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ChildProcess:
    """One ``python -m splitrl ...`` child; stopped by its pid on `stop` or when the block exits."""

    def __init__(self, popen: subprocess.Popen, argv: Sequence[str], log_path: Path | None) -> None:
        self.popen = popen
        self.argv = list(argv)
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the child's combined stdout/stderr log (for error messages)."""
        if self.log_path is None or not self.log_path.is_file():
            return ""
        data = self.log_path.read_bytes()[-chars:]
        return data.decode("utf-8", "replace")

    def signal(self, sig: int) -> None:
        """Send ``sig`` to this child only (by pid); a child that already exited is ignored."""
        if self.alive():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, grace_s: float = 5.0) -> int | None:
        """SIGCONT (in case it was stopped), SIGTERM, then SIGKILL after ``grace_s``; returns the exit code."""
        if self.alive():
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(timeout=30)
        return self.popen.returncode

    def __enter__(self) -> "ChildProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def spawn_splitrl(
    args: Sequence[str],
    *,
    threads: int = 1,
    log_path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> ChildProcess:
    """Start ``python -m splitrl *args`` with ``threads`` CPU threads; output goes to ``log_path``."""
    argv = [sys.executable, "-m", "splitrl", *map(str, args)]
    log = Path(log_path) if log_path is not None else None
    out = open(log, "ab") if log is not None else subprocess.DEVNULL
    try:
        popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=child_env(threads, env), cwd=str(cwd) if cwd else None,
        )
    finally:
        if log is not None:
            out.close()
    return ChildProcess(popen, argv, log)


def wait_for_port_file(path: str | Path, child: ChildProcess | None = None, timeout_s: float = 120.0) -> int:
    """The port a child wrote to ``path``; raises RuntimeError if the child dies or time runs out."""
    path = Path(path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.is_file():
            text = path.read_text().strip()
            if text.isdigit():
                return int(text)
        if child is not None and not child.alive():
            raise RuntimeError(
                f"child {child.argv[2:]} (pid {child.pid}) exited with status {child.popen.returncode} "
                f"before writing its port file {path}:\n{child.log_tail()}"
            )
        time.sleep(0.05)
    raise RuntimeError(f"no port in {path} after {timeout_s:.0f} s")
