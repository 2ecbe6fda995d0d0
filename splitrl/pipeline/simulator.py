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
    K = len(stage_s)
    stage = np.asarray(stage_s, float)
    hop = np.asarray(hop_s, float) if K > 1 else np.zeros(1)
    if K > 1 and len(hop) != K:
        raise ValueError(f"hop_s: one time per hop ({K}, the last returns to the starter), got {len(hop)}")
    p_stage = stage if prefill_stage_s is None else np.asarray(prefill_stage_s, float)
    p_hop = hop if prefill_hop_s is None else np.asarray(prefill_hop_s, float)
    n_tok = [int(tokens)] * samples if np.isscalar(tokens) else [int(t) for t in tokens]  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)

    def noisy(t: float) -> float:
        return float(t * rng.lognormal(-0.5 * jitter**2, jitter)) if jitter > 0 else float(t)

    # resources: stage k -> k, hop k -> K + k
    free = [0.0] * (2 * K)
    core_free = [0.0] * (cores or 0)
    busy = [0.0] * K
    done = [0] * samples
    finish = [0.0] * samples
    events: list[tuple[int, str, int, float, float]] = []
    # heap of (arrival time, seq, sample, resource, prefill pass, returning to the starter)
    heap: list[tuple[float, int, int, int, bool, bool]] = [(0.0, s, s, 0, True, False) for s in range(samples)]
    heapq.heapify(heap)
    seq = samples
    while heap:
        t, _, s, r, prefill, returning = heapq.heappop(heap)
        if r < K:  # a stage
            service = (p_stage if prefill else stage)[r]
            last = False
            if r == 0 and returning:  # the previous pass came back: commit a token
                last = done[s] + 1 >= n_tok[s]
                service = head_s if last else stage[0]  # head (+ embedding and layers of the next token)
            start = max(t, free[r])
            c = 0
            if cores:
                c = int(np.argmin(core_free))
                start = max(start, core_free[c])
            end = start + noisy(service)
            free[r] = end
            if cores:
                core_free[c] = end
            busy[r] += end - start
            if record:
                events.append((s, "prefill" if prefill and not returning else "decode", r, start, end))
            if r == 0 and returning:
                done[s] += 1
                if record:
                    events.append((s, "commit", r, end, end))
                if last:
                    finish[s] = end
                    continue
                prefill = False
            if K == 1:
                heapq.heappush(heap, (end, seq, s, 0, False, True))
            else:
                heapq.heappush(heap, (end, seq, s, K + r, prefill, False))
            seq += 1
        else:  # hop k carries stage k's output to stage k+1 (mod K)
            k = r - K
            start = max(t, free[r])
            end = start + noisy((p_hop if prefill else hop)[k])
            free[r] = end
            if record:
                events.append((s, "hop", r, start, end))
            back = (k + 1) % K == 0
            heapq.heappush(heap, (end, seq, s, (k + 1) % K, prefill and not back, back))
            seq += 1
    return SimResult(max(finish) if finish else 0.0, sum(n_tok), finish, busy, events)
