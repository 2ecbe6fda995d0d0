"""A discrete-event simulator of the ring: S samples circulating through K stages and K hops.

Every stage and every hop is a single FIFO server (a device computes one sample at a time; a
link carries one payload at a time). A token of a sample visits stage 0 (head of the previous
token, embedding and its layers), hop 0, stage 1, ..., stage K-1 and hop K-1 back to the starter;
its first visit is the prefill. The event loop handles arrivals in time order, so for FIFO servers
the departure time is ``max(arrival, server free) + service``. With fixed times the steady-state
throughput is the closed form ``min(S / T_round, 1 / max stage, 1 / max hop)`` (`ring_throughput`).

``cores`` models K stages sharing fewer CPU cores (running the ring on one machine, as the tests
and the benchmark do): a stage also needs a core for its service, reserved from a pool of
``cores`` in arrival order (list scheduling; slightly pessimistic against an OS that time-slices).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from splitrl.cost.pipeline import ring_throughput
from splitrl.errors import UsageError

__all__ = ["SimResult", "simulate_ring", "ring_throughput"]


@dataclass
class SimResult:
    """Outcome of one simulated run."""

    makespan_s: float
    tokens: int
    finish_s: list[float]                    # per sample: time its last token was committed
    busy_s: list[float]                      # per stage: total service time
    events: list[tuple[int, str, int, float, float]] = field(default_factory=list)  # (sample, kind, res, t0, t1)

    @property
    def throughput_tok_s(self) -> float:
        return self.tokens / self.makespan_s if self.makespan_s > 0 else float("inf")

    def steady_throughput(self) -> float:
        """Tokens/s between the first and the last token commits (prefill transient excluded)."""
        commits = sorted(t1 for (_, kind, res, _, t1) in self.events if kind == "commit")
        if len(commits) < 2:
            return self.throughput_tok_s
        return (len(commits) - 1) / (commits[-1] - commits[0])


def simulate_ring(
    stage_s: Sequence[float],
    hop_s: Sequence[float],
    samples: int,
    tokens: int | Sequence[int],
    *,
    prefill_stage_s: Sequence[float] | None = None,
    prefill_hop_s: Sequence[float] | None = None,
    head_s: float = 0.0,
    cores: int | None = None,
    jitter: float = 0.0,
    seed: int = 0,
    record: bool = False,
) -> SimResult:
    """Simulate ``samples`` samples generating ``tokens`` tokens each through the ring.

    Args:
        stage_s: decode service time of each stage per token (stage 0 includes embedding and head).
        hop_s: transfer time of each hop (hop K-1 returns to the starter); len K (ignored for K = 1).
        samples: samples in flight (all start at t = 0, prefills issued by the starter in order).
        tokens: tokens to generate per sample (int or per sample).
        prefill_stage_s / prefill_hop_s: service times of the prefill pass (default: the decode ones).
        head_s: time of the head on the starter for a sample's *last* token (no further emit).
        cores: CPU cores shared by the stages (None: every stage has its own device).
        jitter: relative standard deviation of lognormal noise on every service time (0 = fixed).
        record: keep every service interval (for plots and `SimResult.steady_throughput`).
    """
    stage, hop, p_stage, p_hop = _service_times(stage_s, hop_s, prefill_stage_s, prefill_hop_s)
    n_tok = [int(tokens)] * samples if np.isscalar(tokens) else [int(t) for t in tokens]  # type: ignore[arg-type]
    ring = _Ring(stage, hop, p_stage, p_hop, n_tok, samples, head_s=head_s, cores=cores, jitter=jitter, seed=seed,
                 record=record)
    return ring.run()


def _service_times(stage_s: Sequence[float], hop_s: Sequence[float], prefill_stage_s: Sequence[float] | None,
                   prefill_hop_s: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(decode stage, decode hop, prefill stage, prefill hop) service times, the hop count checked."""
    K = len(stage_s)
    stage = np.asarray(stage_s, float)
    hop = np.asarray(hop_s, float) if K > 1 else np.zeros(1)  # one stage: its own output returns with no hop
    if K > 1 and len(hop) != K:
        raise UsageError(f"hop_s: one time per hop ({K}, the last returns to the starter), got {len(hop)}")
    p_stage = stage if prefill_stage_s is None else np.asarray(prefill_stage_s, float)
    p_hop = hop if prefill_hop_s is None else np.asarray(prefill_hop_s, float)
    return stage, hop, p_stage, p_hop


class _Ring:
    """The event loop's state: when every server and core is next free, each sample's progress, the event heap."""

    def __init__(self, stage: np.ndarray, hop: np.ndarray, p_stage: np.ndarray, p_hop: np.ndarray, n_tok: list[int],
                 samples: int, *, head_s: float, cores: int | None, jitter: float, seed: int, record: bool) -> None:
        self.K = K = len(stage)
        self.stage, self.hop, self.p_stage, self.p_hop, self.n_tok = stage, hop, p_stage, p_hop, n_tok
        self.head_s, self.cores, self.jitter, self.record = head_s, cores, jitter, record
        self.rng = np.random.default_rng(seed)
        # resources: stage k -> k, hop k -> K + k
        self.free = [0.0] * (2 * K)
        self.core_free = [0.0] * (cores or 0)
        self.busy = [0.0] * K
        self.done = [0] * samples
        self.finish = [0.0] * samples
        self.events: list[tuple[int, str, int, float, float]] = []
        # heap of (arrival time, seq, sample, resource, prefill pass, returning to the starter); seq
        # breaks ties between equal arrival times in push order, so the run is deterministic.
        self.heap: list[tuple[float, int, int, int, bool, bool]] = [(0.0, s, s, 0, True, False) for s in range(samples)]
        heapq.heapify(self.heap)
        self.seq = samples

    def run(self) -> SimResult:
        """Serve arrivals in time order until every sample has committed its last token."""
        while self.heap:
            t, _, s, r, prefill, returning = heapq.heappop(self.heap)
            if r < self.K:
                self._serve_stage(t, s, r, prefill, returning)
            else:
                self._serve_hop(t, s, r, prefill)
        return SimResult(max(self.finish) if self.finish else 0.0, sum(self.n_tok), self.finish, self.busy, self.events)

    def _noisy(self, t: float) -> float:
        """``t`` times the lognormal jitter (mean 1), drawn from the run's generator; ``t`` itself without jitter."""
        return float(t * self.rng.lognormal(-0.5 * self.jitter**2, self.jitter)) if self.jitter > 0 else float(t)

    def _push(self, t: float, s: int, r: int, prefill: bool, returning: bool) -> None:
        """Queue sample ``s``'s arrival at resource ``r`` at time ``t``."""
        heapq.heappush(self.heap, (t, self.seq, s, r, prefill, returning))
        self.seq += 1

    def _reserve(self, r: int, t: float, service: float) -> tuple[float, float]:
        """(start, end) of a stage service arriving at ``t``: FIFO on the stage, and on a core when they are shared."""
        start = max(t, self.free[r])
        c = 0
        if self.cores:
            c = int(np.argmin(self.core_free))
            start = max(start, self.core_free[c])
        end = start + self._noisy(service)
        self.free[r] = end
        if self.cores:
            self.core_free[c] = end
        return start, end

    def _serve_stage(self, t: float, s: int, r: int, prefill: bool, returning: bool) -> None:
        """Stage ``r`` serves sample ``s``; at the starter a returning pass commits a token first."""
        service = (self.p_stage if prefill else self.stage)[r]
        commit = r == 0 and returning  # the previous pass came back: commit a token
        last = False
        if commit:
            last = self.done[s] + 1 >= self.n_tok[s]
            service = self.head_s if last else self.stage[0]  # head (+ embedding and layers of the next token)
        start, end = self._reserve(r, t, service)
        self.busy[r] += end - start
        if self.record:
            self.events.append((s, "prefill" if prefill and not returning else "decode", r, start, end))
        if commit:
            self.done[s] += 1
            if self.record:
                self.events.append((s, "commit", r, end, end))
            if last:
                self.finish[s] = end
                return
            prefill = False
        if self.K == 1:
            self._push(end, s, 0, False, True)
        else:
            self._push(end, s, self.K + r, prefill, False)

    def _serve_hop(self, t: float, s: int, r: int, prefill: bool) -> None:
        """Hop ``r - K`` carries its stage's output to the next stage (mod K); the last returns to the starter."""
        k = r - self.K
        start = max(t, self.free[r])
        end = start + self._noisy((self.p_hop if prefill else self.hop)[k])
        self.free[r] = end
        if self.record:
            self.events.append((s, "hop", r, start, end))
        back = (k + 1) % self.K == 0
        self._push(end, s, (k + 1) % self.K, prefill and not back, back)
