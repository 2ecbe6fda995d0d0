"""A shared edge server: its background utilisation process and the queueing slow-down it causes.

Owns `EdgeLoadConfig` (the process, validated), `EdgeLoadModel` / `EdgeLoadProcess` (a Markov
chain over utilisation levels or a replayed utilisation trace, observed with a delay; without /
with its own state) and `md1_slowdown`,
the factor by which the edge's compute time grows under load.

Queueing model: the edge runs every user's work layer by layer (iteration-level scheduling, as
LLM servers interleave requests), FIFO, one server. Other users' layer jobs arrive as a Poisson
stream and take the same deterministic time ``D`` as ours (same model and prompt sizes), so each
layer job of this UE waits the M/D/1 mean wait ``W = rho * D / (2 (1 - rho))`` (Pollaczek-Khinchine
with zero service-time variance) before its own ``D``: the edge's per-layer time becomes
``D * (1 + rho / (2 (1 - rho)))``. ``rho`` is the background utilisation plus what this UE itself
offloads: its edge busy time per request divided by the time between its requests.
"""
from __future__ import annotations

import bisect
import csv
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from splitrl.errors import UsageError

__all__ = ["EdgeLoadConfig", "EdgeLoadModel", "EdgeLoadProcess", "md1_slowdown", "RHO_MAX"]

RHO_MAX = 0.98
"""Utilisation cap: the M/D/1 wait diverges at rho = 1; a saturated edge is charged as 98 % busy
(x25.5 per layer), and requests slower than the timeout are cut by the env's request timeout."""


def md1_slowdown(rho: Any) -> np.ndarray:
    """M/D/1 sojourn / service time ``1 + rho / (2 (1 - rho))`` at utilisation ``rho`` (clipped to [0, RHO_MAX])."""
    r = np.clip(np.asarray(rho, dtype=float), 0.0, RHO_MAX)
    return 1.0 + r / (2.0 * (1.0 - r))


@dataclass
class EdgeLoadConfig:
    """The background utilisation of the shared edge (one value per decision epoch).

    Attributes:
        kind: ``markov`` (birth-death chain over ``levels``) or ``trace`` (replay ``trace``).
        levels: utilisation levels of the chain, increasing, each in [0, 1).
        weights: stationary probability of each level (normalised); None: uniform.
        move_probability: probability per epoch of proposing a move to a neighbouring level
            (Metropolis acceptance keeps ``weights`` stationary); sets how fast the load drifts.
        trace: CSV with a ``utilization`` column (one row per epoch, replayed cyclically from a
            random offset), for ``kind: trace``.
        delay_steps: the controller sees the utilisation of ``delay_steps`` epochs ago (the edge
            reports its load periodically), >= 0.
        self_load: add this UE's own offloaded work to the utilisation (see the module docstring).

    Defaults (assumptions, with reasons): 10 levels 0.05..0.95; stationary weights a discretised
    Beta(2, 2) (mean 0.5, most mass 0.2-0.8) — the order of the mean and spread of machine CPU
    utilisation in public cluster traces (Alibaba cluster-trace-v2018 machines run mostly at
    20-60 % CPU with peaks above 90 %; Google Borg 2019 reports similar medians); a move proposed
    every 10 epochs on average (load changes over seconds, the decision epoch is 0.5 s); one epoch
    of report delay.
    """

    kind: str = "markov"
    levels: tuple[float, ...] = (0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95)
    weights: tuple[float, ...] | None = (0.0475, 0.1275, 0.1875, 0.2275, 0.2475, 0.2475, 0.2275, 0.1875, 0.1275, 0.0475)
    move_probability: float = 0.1
    trace: str | None = None
    delay_steps: int = 1
    self_load: bool = True

    def __post_init__(self) -> None:
        if self.kind not in ("markov", "trace"):
            raise UsageError(f"edge_load.kind: 'markov' or 'trace', got {self.kind!r}")
        lv = np.asarray(self.levels, dtype=float)
        if lv.ndim != 1 or len(lv) < 1 or not ((lv >= 0) & (lv < 1)).all() or (np.diff(lv) <= 0).any():
            raise UsageError(f"edge_load.levels: increasing utilisations in [0, 1), got {self.levels!r}")
        self.levels = tuple(float(x) for x in lv)
        if self.weights is not None:
            w = np.asarray(self.weights, dtype=float)
            if w.shape != lv.shape or not (w >= 0).all() or not w.sum() > 0:
                raise UsageError(f"edge_load.weights: one weight >= 0 per level (not all 0), got {self.weights!r}")
            self.weights = tuple(float(x) for x in w / w.sum())
        if not 0 < self.move_probability <= 1:
            raise UsageError(f"edge_load.move_probability: in (0, 1], got {self.move_probability!r}")
        if isinstance(self.delay_steps, bool) or not isinstance(self.delay_steps, int) or not 0 <= self.delay_steps <= 100:
            raise UsageError(f"edge_load.delay_steps: an integer in 0..100, got {self.delay_steps!r}")
        if self.kind == "trace" and not self.trace:
            raise UsageError("edge_load.trace: a CSV path with a 'utilization' column is needed for kind 'trace'")

    def to_dict(self) -> dict:
        return asdict(self)

    def stationary(self) -> np.ndarray:
        """Stationary probability of each level (Markov kind)."""
        n = len(self.levels)
        return np.full(n, 1.0 / n) if self.weights is None else np.asarray(self.weights, dtype=float)

    def transition_matrix(self) -> np.ndarray:
        """The Metropolis birth-death transition matrix ``[n, n]`` whose stationary law is `stationary`."""
        pi = self.stationary()
        n = len(pi)
        P = np.zeros((n, n))
        for i in range(n):
            for j in (i - 1, i + 1):
                if 0 <= j < n and pi[i] > 0:
                    P[i, j] = 0.5 * self.move_probability * min(1.0, pi[j] / pi[i])
            P[i, i] = 1.0 - P[i].sum()
        return P


def _read_trace(path: str) -> np.ndarray:
    p = Path(path)
    try:
        with p.open(newline="") as f:
            rows = list(csv.DictReader(f))
        u = np.array([float(r["utilization"]) for r in rows])
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise UsageError(f"edge_load.trace: {p} is not a CSV with a numeric 'utilization' column ({type(e).__name__})") from None
    if len(u) == 0 or not ((u >= 0) & (u < 1)).all():
        raise UsageError(f"edge_load.trace: {p} needs >= 1 row, each utilization in [0, 1)")
    return u


class EdgeLoadModel:
    """The utilisation process without state: an env keeps the state (level index or trace
    position, the recent values, the generator) in its own plain attributes, so checkpoints
    capture it (`splitrl.training.state`)."""

    def __init__(self, config: EdgeLoadConfig) -> None:
        self.config = config
        self.levels = np.asarray(config.levels, dtype=float)
        self._P_cum = np.cumsum(config.transition_matrix(), axis=1).tolist()  # rows as lists: bisect per step
        self._levels = self.levels.tolist()
        self._trace = _read_trace(config.trace) if config.kind == "trace" else None

    def initial(self, rng: np.random.Generator) -> int:
        """A state drawn from the stationary law (a uniformly random trace position)."""
        if self._trace is not None:
            return int(rng.integers(len(self._trace)))
        return int(rng.choice(len(self.levels), p=self.config.stationary()))

    def next(self, state: int, rng: np.random.Generator) -> int:
        """The state one epoch later."""
        if self._trace is not None:
            return state + 1
        return min(bisect.bisect_right(self._P_cum[state], rng.random()), len(self._levels) - 1)

    def value(self, state: int) -> float:
        """Utilisation of ``state``."""
        if self._trace is not None:
            return float(self._trace[state % len(self._trace)])
        return self._levels[state]


class EdgeLoadProcess(EdgeLoadModel):
    """`EdgeLoadModel` with its own state: the utilisation per epoch and its delayed report."""

    def __init__(self, config: EdgeLoadConfig) -> None:
        super().__init__(config)
        self._rng = np.random.default_rng(0)
        self._state = 0
        self._past: list[float] = []

    def reset(self, rng: np.random.Generator) -> float:
        """Start from the stationary law (a random trace offset); returns the true utilisation."""
        self._rng = rng
        self._state = self.initial(rng)
        self._past = [self.current] * (self.config.delay_steps + 1)
        return self.current

    @property
    def current(self) -> float:
        """True background utilisation of this epoch."""
        return self.value(self._state)

    @property
    def observed(self) -> float:
        """What the controller sees: the utilisation ``delay_steps`` epochs ago."""
        return self._past[0]

    def step(self) -> float:
        """Advance one epoch; returns the new true utilisation."""
        self._state = self.next(self._state, self._rng)
        self._past = [*self._past[1:], self.current]
        return self.current
