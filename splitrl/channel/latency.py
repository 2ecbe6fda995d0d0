"""Latency of one payload transfer over the link: serialisation, propagation, overhead and HARQ.

Owns the transfer-time model used by environments and cost models. A payload of N bytes at rate R
is cut into ceil(N / S) transport blocks of S bytes (the last one partial). Each block is sent,
and on failure (probability p = BLER, independently per attempt and per block) retransmitted up
to ``max_retransmissions`` times; every retransmission costs that block's air time plus the HARQ
round-trip time. Latency is

    T = 8 N / R + d / c + T_overhead + sum_blocks K_b (8 S_b / R + T_HARQ),

with K_b the number of retransmissions of block b, P(K_b >= k) = p^k for k <= K_max. This is the
stop-and-wait (single HARQ process) view, an upper bound on what parallel HARQ processes achieve;
it is the right model when a cut's activation must arrive in full before the next segment runs.

A block still failing after K_max retransmissions is lost (probability p^(K_max + 1)); the payload
is lost if any block is (1 - (1 - p^(K_max+1))^n_blocks). Its latency still counts all attempts.

``expected`` is the closed form of E[T]; ``sample`` draws T with the caller's generator, one
uniform per block, so sampling cost does not depend on the BLER.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import _validate as v
from ._validate import check_rng
from .fading import SPEED_OF_LIGHT_MPS
from .state import ChannelState
from splitrl.errors import UsageError


@dataclass(frozen=True)
class LatencyConfig:
    """Configuration of `LatencyModel`.

    Attributes:
        distance_m: propagation distance, >= 0 (propagation delay d / c).
        overhead_s: fixed per-transfer protocol overhead (scheduling request, grant, headers
            processing), >= 0.
        transport_block_bytes: bytes per transport block, >= 1. Default 1056 = 8448 bits, the largest
            NR LDPC base-graph-1 code block (TS 38.212), i.e. the unit of CBG-based retransmission.
        max_retransmissions: HARQ retransmissions per block after the first attempt, integer >= 0
            (NR commonly allows 3, i.e. 4 transmissions).
        harq_rtt_s: extra delay per retransmission on top of the block's air time, >= 0. About
            1-2 ms for NR numerology 1 (30 kHz SCS); 8 ms for LTE FDD.
    """

    distance_m: float = 100.0
    overhead_s: float = 0.0
    transport_block_bytes: int = 1056
    max_retransmissions: int = 3
    harq_rtt_s: float = 1e-3

    def __post_init__(self) -> None:
        o = "LatencyConfig"
        v.non_negative(o, "distance_m", self.distance_m)
        v.non_negative(o, "overhead_s", self.overhead_s)
        v.positive_int(o, "transport_block_bytes", self.transport_block_bytes)
        v.non_negative_int(o, "max_retransmissions", self.max_retransmissions)
        v.non_negative(o, "harq_rtt_s", self.harq_rtt_s)


@dataclass(frozen=True)
class LatencyBreakdown:
    """Expected (or, from `LatencyModel.sample`, realised) latency of one transfer, in seconds.

    Attributes:
        total_s: serialisation + propagation + overhead + harq.
        serialisation_s: 8 N / R (first attempt of every block).
        propagation_s: distance / c.
        overhead_s: fixed protocol overhead.
        harq_s: time spent in retransmissions (air time + HARQ RTT each).
        retransmissions: expected (or realised) total retransmissions over all blocks.
        n_blocks: number of transport blocks.
        loss_probability: probability the payload is not delivered after all retries (for a sample:
            1.0 if it was lost, else 0.0).
    """

    total_s: float
    serialisation_s: float
    propagation_s: float
    overhead_s: float
    harq_s: float
    retransmissions: float
    n_blocks: int
    loss_probability: float

    @property
    def lost(self) -> bool:
        return self.loss_probability >= 1.0


def _check_args(nbytes: int, rate_bps: float, bler: float | None) -> float:
    if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)) or nbytes < 0:
        raise UsageError(f"nbytes = {nbytes!r}: must be an integer >= 0")
    if not (rate_bps >= 0.0):  # also rejects NaN
        raise UsageError(f"rate_bps = {rate_bps!r}: must be >= 0")
    p = 0.0 if bler is None else float(bler)
    if not 0.0 <= p <= 1.0:
        raise UsageError(f"bler = {bler!r}: must be in [0, 1] or None")
    return p


def residual_block_loss(bler: float, max_retransmissions: int) -> float:
    """Probability a block still fails after all retransmissions: p^(K_max + 1)."""
    return float(bler) ** (max_retransmissions + 1)


def expected_retransmissions(bler: float, max_retransmissions: int) -> float:
    """E[K] = sum_{k=1}^{K_max} p^k = p (1 - p^K_max) / (1 - p) retransmissions per block."""
    p = float(bler)
    if p == 1.0:
        return float(max_retransmissions)
    return p * (1.0 - p**max_retransmissions) / (1.0 - p)


class LatencyModel:
    """Closed-form and sampled transfer latency under the HARQ model in the module docstring."""

    def __init__(self, config: LatencyConfig | None = None) -> None:
        self.config = config or LatencyConfig()

    def _blocks(self, nbytes: int) -> tuple[int, int]:
        s = self.config.transport_block_bytes
        n_full, last = divmod(int(nbytes), s)
        return n_full + (1 if last else 0), (last or s)

    def _fixed(self) -> tuple[float, float]:
        return self.config.distance_m / SPEED_OF_LIGHT_MPS, self.config.overhead_s

    def expected(self, nbytes: int, rate_bps: float, bler: float | None = None) -> LatencyBreakdown:
        """Closed-form expected latency of sending ``nbytes`` at ``rate_bps`` with block error ``bler``.

        ``bler=None`` means error-free. A zero rate with a non-empty payload gives infinite latency.
        """
        p = _check_args(nbytes, rate_bps, bler)
        c = self.config
        prop, oh = self._fixed()
        n_blocks, _ = self._blocks(nbytes)
        if n_blocks == 0:
            return LatencyBreakdown(prop + oh, 0.0, prop, oh, 0.0, 0.0, 0, 0.0)
        if rate_bps == 0.0:
            return LatencyBreakdown(math.inf, math.inf, prop, oh, math.inf, math.nan, n_blocks, 1.0)
        ser = 8.0 * nbytes / rate_bps
        ek = expected_retransmissions(p, c.max_retransmissions)
        # Every block shares p, so E[sum_b K_b (t_b + RTT)] = E[K] (sum_b t_b + n_blocks RTT).
        harq = ek * (ser + n_blocks * c.harq_rtt_s)
        loss = 1.0 - (1.0 - residual_block_loss(p, c.max_retransmissions)) ** n_blocks
        return LatencyBreakdown(
            total_s=ser + prop + oh + harq,
            serialisation_s=ser,
            propagation_s=prop,
            overhead_s=oh,
            harq_s=harq,
            retransmissions=ek * n_blocks,
            n_blocks=n_blocks,
            loss_probability=loss,
        )

    def sample(
        self, nbytes: int, rate_bps: float, bler: float | None, rng: np.random.Generator
    ) -> LatencyBreakdown:
        """One realisation of the transfer latency; ``loss_probability`` is 1.0 if it was lost."""
        p = _check_args(nbytes, rate_bps, bler)
        check_rng(rng, "LatencyModel.sample")
        c = self.config
        prop, oh = self._fixed()
        n_blocks, last = self._blocks(nbytes)
        if n_blocks == 0:
            return LatencyBreakdown(prop + oh, 0.0, prop, oh, 0.0, 0.0, 0, 0.0)
        # Draw before any early return so the generator advances the same way for every rate.
        u = 1.0 - rng.random(n_blocks)  # in (0, 1]: log(u) is finite
        if rate_bps == 0.0:
            return LatencyBreakdown(math.inf, math.inf, prop, oh, math.inf, math.nan, n_blocks, 1.0)
        # Inverse CDF: F = floor(log u / log p) has P(F >= k) = P(u <= p^k) = p^k, the number of
        # consecutive failures; K = min(F, K_max) retransmissions, lost iff F >= K_max + 1.
        if p == 0.0:
            fails = np.zeros(n_blocks)
        elif p == 1.0:
            fails = np.full(n_blocks, np.inf)
        else:
            fails = np.floor(np.log(u) / math.log(p))
        k = np.minimum(fails, c.max_retransmissions)
        sizes = np.full(n_blocks, float(c.transport_block_bytes))
        sizes[-1] = last
        t_block = 8.0 * sizes / rate_bps
        ser = 8.0 * nbytes / rate_bps
        harq = float(np.sum(k * (t_block + c.harq_rtt_s)))
        lost = bool(np.any(fails >= c.max_retransmissions + 1))
        return LatencyBreakdown(
            total_s=ser + prop + oh + harq,
            serialisation_s=ser,
            propagation_s=prop,
            overhead_s=oh,
            harq_s=harq,
            retransmissions=float(np.sum(k)),
            n_blocks=n_blocks,
            loss_probability=1.0 if lost else 0.0,
        )

    def expected_for(self, nbytes: int, state: ChannelState) -> LatencyBreakdown:
        """`expected` with rate and BLER read from a `ChannelState` (rate_bps must be set)."""
        if state.rate_bps is None:
            raise UsageError("ChannelState.rate_bps is None: attach a rate model to the channel")
        return self.expected(nbytes, state.rate_bps, state.bler)

    def sample_for(
        self, nbytes: int, state: ChannelState, rng: np.random.Generator
    ) -> LatencyBreakdown:
        """`sample` with rate and BLER read from a `ChannelState` (rate_bps must be set)."""
        if state.rate_bps is None:
            raise UsageError("ChannelState.rate_bps is None: attach a rate model to the channel")
        return self.sample(nbytes, state.rate_bps, state.bler, rng)
