"""Partitions: cut points over layers ``0..L`` and the segments they define.

``cuts = [s]`` gives two segments: the UE runs embeddings + layers ``[0, s)``, the edge runs
layers ``[s, L)`` + head. ``s = 0``: the UE sends token ids and the edge runs everything;
``s = L``: everything (head included) runs on the UE and nothing crosses. K-1 cuts give K
segments; a segment whose range is empty relays what it receives.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


class InvalidPartitionError(ValueError):
    """Cut points out of range or out of order."""


@dataclass(frozen=True)
class SegmentSpec:
    """One segment of a partition: layers ``[start, stop)`` and whether it owns embeddings/head."""

    index: int
    role: str
    start: int
    stop: int
    has_embed: bool
    has_head: bool

    @property
    def is_empty(self) -> bool:
        return self.start == self.stop


@dataclass(frozen=True)
class Partition:
    """Validated cut points over a model with ``num_layers`` decoder layers."""

    cuts: tuple[int, ...]
    num_layers: int

    def __post_init__(self) -> None:
        L = self.num_layers
        if L < 1:
            raise InvalidPartitionError(f"num_layers must be >= 1, got {L}")
        if len(self.cuts) < 1:
            raise InvalidPartitionError("a partition needs at least one cut point (e.g. [s] with 0 <= s <= L)")
        for i, c in enumerate(self.cuts):
            if not isinstance(c, int) or isinstance(c, bool):
                raise InvalidPartitionError(f"cut {i} must be an integer, got {c!r}")
            if not 0 <= c <= L:
                raise InvalidPartitionError(f"split point {c} out of range: allowed 0..{L} for a {L}-layer model")
        if any(b < a for a, b in zip(self.cuts, self.cuts[1:])):
            raise InvalidPartitionError(f"cut points must be non-decreasing, got {list(self.cuts)}")

    @classmethod
    def of(cls, cuts: int | Sequence[int], num_layers: int) -> "Partition":
        """Build from one split point or a sequence of cut points."""
        if isinstance(cuts, int) and not isinstance(cuts, bool):
            cuts = (cuts,)
        try:
            cuts = tuple(int(c) if hasattr(c, "__index__") else c for c in cuts)
        except TypeError as e:
            raise InvalidPartitionError(f"cut points must be an int or a sequence of ints, got {cuts!r}") from e
        return cls(cuts, num_layers)

    @property
    def num_segments(self) -> int:
        return len(self.cuts) + 1

    def segments(self) -> list[SegmentSpec]:
        bounds = (0, *self.cuts, self.num_layers)
        K = self.num_segments
        specs = []
        for k in range(K):
            start, stop = bounds[k], bounds[k + 1]
            role = "ue" if k == 0 else ("edge" if k == K - 1 else f"hop{k}")
            specs.append(
                SegmentSpec(
                    index=k, role=role, start=start, stop=stop,
                    has_embed=(start == 0 and stop > 0),
                    has_head=(stop == self.num_layers and start < stop),
                )
            )
        return specs

    def crosses(self, boundary: int) -> bool:
        """Whether a payload crosses cut ``boundary`` (nothing crosses a cut at ``L``: the head ran before it)."""
        return self.cuts[boundary] < self.num_layers

    @property
    def head_segment(self) -> int:
        return next(s.index for s in self.segments() if s.has_head)
