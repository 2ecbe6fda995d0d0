"""Finite-state Markov channel (FSMC): SNR quantised into bins with a first-order transition matrix.

Owns the FSMC model (Wang & Moayeri, IEEE TVT 1995): state i is the SNR bin
[edges[i], edges[i+1]), each state emits one representative SNR, and the next state is drawn from
row i of the transition matrix. `fit_from_trace` learns the matrix from an SNR series by counting
transitions with additive (Laplace/Lidstone) smoothing, and the representative SNRs as the
in-bin means of the series, so a fitted chain reproduces the trace's first-order dynamics.

Values outside the outermost edges are assigned to the outer bins (the edges bound what the
quantiser resolves, not what the channel can produce).
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _validate as v
from .base import Channel, RateModel
from splitrl.errors import UsageError

_ROW_TOL = 1e-6  # rows read from YAML carry ~1e-6 rounding; tighter would reject hand-written files


def _as_tuple2(rows: ArrayLike) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(x) for x in row) for row in np.asarray(rows, dtype=float))


@dataclass(frozen=True)
class MarkovChannelConfig:
    """Configuration of `MarkovChannel`.

    Attributes:
        bin_edges_db: K+1 strictly increasing finite SNR edges in dB defining K >= 1 states.
        transition: K x K row-stochastic matrix (entries in [0, 1], rows summing to 1 within 1e-6).
        state_snr_db: SNR in dB emitted in each state; None uses the bin midpoints.
        initial_state: ``"stationary"`` (draw from the stationary distribution) or a state index
            in [0, K-1].
    """

    bin_edges_db: tuple[float, ...]
    transition: tuple[tuple[float, ...], ...]
    state_snr_db: tuple[float, ...] | None = None
    initial_state: int | Literal["stationary"] = "stationary"

    def __post_init__(self) -> None:
        o = "MarkovChannelConfig"
        try:
            edges = np.asarray(self.bin_edges_db, dtype=float)
        except (TypeError, ValueError):
            raise v.fail(o, "bin_edges_db", self.bin_edges_db, "a 1-D sequence of numbers") from None
        if edges.ndim != 1 or edges.size < 2 or not np.all(np.isfinite(edges)):
            raise v.fail(o, "bin_edges_db", self.bin_edges_db, "at least 2 finite edges (K+1 for K states)")
        if np.any(np.diff(edges) <= 0):
            raise v.fail(o, "bin_edges_db", self.bin_edges_db, "strictly increasing")
        k = edges.size - 1
        try:
            p = np.asarray(self.transition, dtype=float)
        except (TypeError, ValueError):
            raise v.fail(o, "transition", self.transition, f"a {k}x{k} matrix of numbers") from None
        if p.shape != (k, k):
            raise v.fail(
                o, "transition", f"<shape {p.shape}>", f"a {k}x{k} matrix ({k} bins from {k + 1} edges)"
            )
        if not np.all(np.isfinite(p)) or np.any(p < 0.0) or np.any(p > 1.0):
            raise v.fail(o, "transition", self.transition, "entries in [0, 1]")
        sums = p.sum(axis=1)
        bad = np.flatnonzero(np.abs(sums - 1.0) > _ROW_TOL)
        if bad.size:
            i = int(bad[0])
            raise v.fail(
                o, f"transition[{i}]", tuple(p[i]),
                f"a probability row summing to 1 (sums to {sums[i]:.9g})",
            )
        if self.state_snr_db is not None:
            s = np.asarray(self.state_snr_db, dtype=float)
            if s.shape != (k,) or not np.all(np.isfinite(s)):
                raise v.fail(o, "state_snr_db", self.state_snr_db, f"{k} finite values or None")
        if self.initial_state != "stationary":
            if (
                isinstance(self.initial_state, bool)
                or not isinstance(self.initial_state, (int, np.integer))
                or not 0 <= self.initial_state < k
            ):
                raise v.fail(o, "initial_state", self.initial_state, f"'stationary' or an int in [0, {k - 1}]")
        # Normalise containers so configs built from lists/arrays compare and hash as equal.
        object.__setattr__(self, "bin_edges_db", tuple(float(x) for x in edges))
        object.__setattr__(self, "transition", _as_tuple2(p))
        if self.state_snr_db is not None:
            object.__setattr__(self, "state_snr_db", tuple(float(x) for x in self.state_snr_db))

    @property
    def n_states(self) -> int:
        return len(self.bin_edges_db) - 1

    @property
    def transition_matrix(self) -> NDArray[np.float64]:
        return np.asarray(self.transition, dtype=float)

    @property
    def state_values_db(self) -> NDArray[np.float64]:
        """SNR emitted in each state (configured, or bin midpoints)."""
        if self.state_snr_db is not None:
            return np.asarray(self.state_snr_db, dtype=float)
        e = np.asarray(self.bin_edges_db)
        return 0.5 * (e[:-1] + e[1:])


def stationary_distribution(transition: ArrayLike) -> NDArray[np.float64]:
    """A stationary distribution pi with pi P = pi, sum(pi) = 1.

    Solved as the least-squares solution of [P^T - I; 1^T] pi = [0; 1], which is unique for an
    irreducible chain; for a reducible chain it returns one valid stationary vector.
    """
    p = np.asarray(transition, dtype=float)
    if p.ndim != 2 or p.shape[0] != p.shape[1]:
        raise UsageError(f"transition must be square, got shape {p.shape}")
    k = p.shape[0]
    a = np.vstack([p.T - np.eye(k), np.ones((1, k))])
    b = np.zeros(k + 1)
    b[-1] = 1.0
    pi, *_ = np.linalg.lstsq(a, b, rcond=None)
    pi = np.clip(pi, 0.0, None)  # remove ~1e-17 negatives from round-off
    return pi / pi.sum()


def quantize(snr_db: ArrayLike, bin_edges_db: ArrayLike) -> NDArray[np.int64]:
    """State index of each SNR; values beyond the outer edges fall in the outer bins."""
    edges = np.asarray(bin_edges_db, dtype=float)
    idx = np.searchsorted(edges, np.asarray(snr_db, dtype=float), side="right") - 1
    return np.clip(idx, 0, edges.size - 2).astype(np.int64)


def transition_counts(states: ArrayLike, n_states: int) -> NDArray[np.int64]:
    """C[i, j] = number of consecutive pairs (s_t = i, s_{t+1} = j)."""
    s = np.asarray(states, dtype=np.int64)
    c = np.zeros((n_states, n_states), dtype=np.int64)
    if s.size >= 2:
        np.add.at(c, (s[:-1], s[1:]), 1)
    return c


def fit_from_trace(
    snr_db_series: ArrayLike,
    bin_edges: ArrayLike,
    *,
    smoothing: float = 1.0,
    initial_state: int | Literal["stationary"] = "stationary",
) -> MarkovChannelConfig:
    """Learn an FSMC from an SNR series sampled once per slot.

    P[i, j] = (C[i, j] + a) / (sum_j C[i, j] + K a) with ``a = smoothing`` (a = 1 is Laplace; a = 0 is
    maximum likelihood). A state never left in the series (row total 0) with a = 0 gets a uniform
    row, the a -> 0 limit of smoothing. Each state's SNR is the mean of the series inside the bin,
    or the bin midpoint when the bin is empty.
    """
    x = np.asarray(snr_db_series, dtype=float)
    if x.ndim != 1 or x.size < 2:
        raise UsageError(f"snr_db_series must be 1-D with at least 2 values, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise UsageError("snr_db_series contains NaN or inf")
    if not (np.isfinite(smoothing) and smoothing >= 0):
        raise UsageError(f"smoothing = {smoothing!r}: must be >= 0")
    edges = np.asarray(bin_edges, dtype=float)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise UsageError(f"bin_edges = {bin_edges!r}: must be >= 2 strictly increasing values")
    k = edges.size - 1
    s = quantize(x, edges)
    counts = transition_counts(s, k).astype(float) + smoothing
    totals = counts.sum(axis=1, keepdims=True)
    p = np.where(totals > 0, counts / np.where(totals > 0, totals, 1.0), 1.0 / k)
    occupancy = np.bincount(s, minlength=k)
    sums = np.bincount(s, weights=x, minlength=k)
    mid = 0.5 * (edges[:-1] + edges[1:])
    values = np.where(occupancy > 0, sums / np.maximum(occupancy, 1), mid)
    return MarkovChannelConfig(
        bin_edges_db=tuple(edges),
        transition=_as_tuple2(p),
        state_snr_db=tuple(values),
        initial_state=initial_state,
    )


class MarkovChannel(Channel):
    """Finite-state Markov SNR process; emits the current state's SNR each slot."""

    def __init__(
        self,
        config: MarkovChannelConfig,
        rng: np.random.Generator,
        *,
        rate_model: RateModel | None = None,
        ber_modulation: str | None = None,
    ) -> None:
        super().__init__(rng, rate_model=rate_model, ber_modulation=ber_modulation)
        if not isinstance(config, MarkovChannelConfig):
            raise TypeError(f"config must be a MarkovChannelConfig, got {type(config).__name__}")
        self.config = config
        p = config.transition_matrix
        self._cdf = np.cumsum(p, axis=1)
        self._cdf[:, -1] = 1.0  # rows sum to 1 only within tolerance; make the last bin catch all
        self._cdf_rows = self._cdf.tolist()
        self._values = config.state_values_db
        self.stationary = stationary_distribution(p)
        self._reset()

    @property
    def state(self) -> int:
        """Index of the state the chain is in (the state of the last emitted slot)."""
        return self._state

    def _reset(self) -> None:
        # The first slot emitted after reset is the state drawn here (one uniform, always), so the
        # initial law is exactly `stationary` (or the fixed initial state).
        u = self.rng.random()
        if self.config.initial_state == "stationary":
            cdf = np.cumsum(self.stationary)
            self._state = int(min(np.searchsorted(cdf, u, side="right"), cdf.size - 1))
        else:
            self._state = int(self.config.initial_state)
        self._fresh = True

    def sample_states(self, n: int) -> NDArray[np.int64]:
        """Advance ``n`` slots and return the state index of each."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise UsageError(f"n = {n!r}: must be an integer >= 1")
        n = int(n)
        out = np.empty(n, dtype=np.int64)
        start = 0
        if self._fresh:
            out[0] = self._state
            self._fresh = False
            start = 1
        u = self.rng.random(n - start).tolist()
        s = self._state
        rows = self._cdf_rows
        # Sequential by nature; bisect on Python lists is ~10x faster than np.searchsorted per call.
        for t in range(start, n):
            s = bisect_right(rows[s], u[t - start])
            out[t] = s
        self._state = s
        return out

    def _sample(self, n: int) -> NDArray[np.float64]:
        return self._values[self.sample_states(n)]
