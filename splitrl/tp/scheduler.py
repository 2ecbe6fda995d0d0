"""The sliding-window weight scheduler: stream a rank's layer blocks from disk, W resident at a time.

TPI-LLM's memory scheduler. A rank's blocks (``layer{l}.attn``, ``layer{l}.ffn``) run in a fixed
cyclic order, token after token. At most ``window`` blocks are held at once — the one computing
plus the ones already loaded or loading ahead of it. A single background thread loads blocks in
order; when a block finishes computing it is released (its tensors dropped, back to ``meta``)
and the freed slot lets the loader start the block ``window`` positions ahead.

Stalls: with ``window >= 2`` the loader runs ahead, so a block's load overlaps the computation and
communication of the blocks before it. In steady state the consumer never waits when the
per-block compute+comm time ``c`` covers the per-block load time ``d`` (TPI-LLM's condition), and
waits ``d - c`` per block otherwise; with ``window == 1`` nothing overlaps and every block waits
its full load time. `predicted_stall_s` is that model; `BlockScheduler.stats` reports what
happened (wait time per acquire, load time per block, busy time per block).

The window fill before the first token (loading the first ``window`` blocks) is not a stall: it
is the scheduler's start-up, reported separately as ``fill_seconds``.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from splitrl.errors import UsageError

__all__ = ["BlockScheduler", "SchedulerStats", "predicted_stall_s"]


def predicted_stall_s(compute_s: float, load_s: float, window: int, n_acquires: int) -> float:
    """Expected total wait over ``n_acquires`` acquires after the window fill (steady-state model)."""
    if window <= 1:
        return n_acquires * load_s
    # The first window-1 acquires after the fill find their block loaded already.
    return max(0, n_acquires - (window - 1)) * max(0.0, load_s - compute_s)


@dataclass
class SchedulerStats:
    """What the scheduler did since `start`."""

    window: int
    blocks: int
    acquires: int = 0
    loads: int = 0
    stall_seconds: float = 0.0
    stalls: list[float] = field(default_factory=list)  # wait per acquire
    load_seconds: list[float] = field(default_factory=list)  # per load, in the loader thread
    busy_seconds: list[float] = field(default_factory=list)  # acquire -> release, per block use
    fill_seconds: float = 0.0
    max_resident: int = 0

    def to_dict(self) -> dict[str, Any]:
        import statistics as st

        def med(xs: list[float]) -> float:
            return float(st.median(xs)) if xs else 0.0

        return {
            "window": self.window, "blocks": self.blocks, "acquires": self.acquires, "loads": self.loads,
            "stall_seconds": self.stall_seconds, "median_load_s": med(self.load_seconds),
            "median_busy_s": med(self.busy_seconds), "fill_seconds": self.fill_seconds,
            "max_resident": self.max_resident,
        }


class BlockScheduler:
    """Keeps at most ``window`` of ``blocks`` in memory, prefetching in cyclic order on one thread.

    Args:
        blocks: block names in execution order (one cycle = one forward pass).
        load: ``load(name) -> state`` (runs on the loader thread; must not touch the model).
        assign: ``assign(name, state)`` makes the state live (main thread).
        release: ``release(name, state)`` drops it (main thread).
        window: resident blocks, >= 1; ``window >= len(blocks)`` keeps everything resident.
        load_delay_s: extra seconds per load (emulates a slower disk).
    """

    def __init__(
        self, blocks: list[str], load: Callable[[str], Any], assign: Callable[[str, Any], None],
        release: Callable[[str, Any], None], window: int, load_delay_s: float = 0.0,
    ) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise UsageError(f"--window must be an integer >= 1 (blocks resident per rank), got {window!r}")
        if not load_delay_s >= 0:
            raise UsageError(f"--load-delay must be >= 0 s, got {load_delay_s}")
        if not blocks:
            raise UsageError("scheduler: no blocks to schedule")
        self.blocks = list(blocks)
        self.index = {b: i for i, b in enumerate(self.blocks)}
        self._load, self._assign, self._release = load, assign, release
        self.window = min(window, len(self.blocks))
        self.load_delay_s = float(load_delay_s)
        self.stats = SchedulerStats(self.window, len(self.blocks))
        self._pool: ThreadPoolExecutor | None = None
        self._pending: dict[int, Future] = {}
        self._live: dict[int, Any] = {}
        self._since: dict[int, float] = {}
        self._lock = threading.Lock()

    @property
    def all_resident(self) -> bool:
        return self.window >= len(self.blocks)

    def _load_timed(self, name: str) -> Any:
        t0 = time.perf_counter()
        if self.load_delay_s:
            time.sleep(self.load_delay_s)
        state = self._load(name)
        with self._lock:
            self.stats.load_seconds.append(time.perf_counter() - t0)
            self.stats.loads += 1
        return state

    def _submit(self, i: int) -> None:
        if i in self._pending or i in self._live:
            return
        assert self._pool is not None
        self._pending[i] = self._pool.submit(self._load_timed, self.blocks[i])

    def start(self) -> None:
        """Load the first ``window`` blocks (the fill) and return when they are in memory."""
        t0 = time.perf_counter()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tp-prefetch")
        for i in range(self.window):
            self._submit(i)
        for f in list(self._pending.values()):
            f.result()
        if self.all_resident:  # everything fits: make it live once, never release
            for i in range(len(self.blocks)):
                self._assign(self.blocks[i], self._pending[i].result())
                self._live[i] = self._pending.pop(i).result()
        self.stats.fill_seconds = time.perf_counter() - t0

    def acquire(self, name: str) -> None:
        """Block ``name`` is about to run: wait for it (a stall if it is not loaded yet) and make it live."""
        i = self.index[name]
        if self.all_resident:
            return
        if i in self._live:
            return
        if i not in self._pending:
            self._submit(i)
        fut = self._pending.pop(i)
        t0 = time.perf_counter()
        state = fut.result()
        wait = time.perf_counter() - t0
        self.stats.acquires += 1
        self.stats.stalls.append(wait)
        self.stats.stall_seconds += wait
        self._assign(name, state)
        self._live[i] = state
        self._since[i] = time.perf_counter()
        self.stats.max_resident = max(self.stats.max_resident, len(self._live) + len(self._pending))

    def release(self, name: str) -> None:
        """Block ``name`` finished: drop it and start loading the block ``window`` positions ahead."""
        i = self.index[name]
        if self.all_resident or i not in self._live:
            return
        state = self._live.pop(i)
        self.stats.busy_seconds.append(time.perf_counter() - self._since.pop(i))
        self._release(name, state)
        del state
        self._submit((i + self.window) % len(self.blocks))

    def close(self) -> None:
        """Stop the loader and drop everything it holds."""
        if self._pool is not None:
            for f in self._pending.values():
                f.cancel()
            self._pool.shutdown(wait=True)
            self._pool = None
        for i in list(self._live):
            if not self.all_resident:
                self._release(self.blocks[i], self._live[i])
        self._live.clear()
        self._pending.clear()
