"""The pluggable all-reduce contract shared by tensor parallelism and over-the-air aggregation.

A tensor-parallel layer ends in a partial sum on every rank; an `AllReduce` turns those partial
sums into (an estimate of) their total on every rank of the current process group. Concrete
implementations — the engine's own ``all_reduce``, a star (reduce to the master, broadcast back),
a ring on point-to-point sends, over-the-air (AirComp) aggregation — register themselves by name
with `register_allreduce` so that CLIs and configs pick them with ``make_allreduce(name, ...)``.

Contract:
* ``reduce(x)`` is called by every rank of the group with a tensor of the same shape and dtype;
  it returns the sum (exact for digital lossless schemes; an estimate for lossy links / AirComp)
  and never modifies ``x`` in place. Every rank must call it the same number of times in the
  same order (a collective).
* ``stats`` counts what this rank did: calls, elements reduced, bytes this rank put on the wire
  (as the link codecs count them), wall seconds inside ``reduce``, and emulated air seconds.
* All blocking work has a timeout (the group's); a dead peer raises, it never hangs.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any, Callable, ClassVar

import torch

from splitrl.errors import UsageError

__all__ = ["AllReduce", "CollectiveStats", "ALLREDUCE_KINDS", "make_allreduce", "register_allreduce"]


@dataclass
class CollectiveStats:
    """What one rank's all-reduce did since the last `reset` (all counters are this rank's own)."""

    calls: int = 0
    elements: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    seconds: float = 0.0
    air_seconds: float = 0.0

    def reset(self) -> None:
        self.calls = self.elements = self.bytes_sent = self.bytes_received = 0
        self.seconds = self.air_seconds = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AllReduce(ABC):
    """Sum a tensor across the ranks of the current process group (see the module docstring)."""

    name: ClassVar[str]

    def __init__(self) -> None:
        self.stats = CollectiveStats()

    @abstractmethod
    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        """The (estimated) sum over ranks of ``x``; same shape and dtype; ``x`` is not modified."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduce(x)


ALLREDUCE_KINDS: dict[str, Callable[..., AllReduce]] = {}


def register_allreduce(name: str) -> Callable[[Callable[..., AllReduce]], Callable[..., AllReduce]]:
    """Class decorator: make ``make_allreduce(name, **kwargs)`` build this all-reduce."""

    def deco(factory: Callable[..., AllReduce]) -> Callable[..., AllReduce]:
        ALLREDUCE_KINDS[name] = factory
        return factory

    return deco


def make_allreduce(name: str, **kwargs: Any) -> AllReduce:
    """The all-reduce registered as ``name``; kwargs go to its constructor."""
    try:
        factory = ALLREDUCE_KINDS[name]
    except KeyError:
        raise UsageError(f"--allreduce: unknown kind {name!r}; allowed: {', '.join(sorted(ALLREDUCE_KINDS))}") from None
    return factory(**kwargs)
