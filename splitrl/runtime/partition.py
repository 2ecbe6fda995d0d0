"""Partitions: cut points over layers ``0..L`` and the segments they define.

``cuts = [s]`` gives two segments: the UE runs embeddings + layers ``[0, s)``, the edge runs
layers ``[s, L)`` + head. ``s = 0``: the UE sends token ids and the edge runs everything;
``s = L``: everything (head included) runs on the UE and nothing crosses. K-1 cuts give K
segments; a segment whose range is empty relays what it receives.

Each segment also names the precision its weights run at (`splitrl.quant.PRECISIONS`; fp32 unless
given): a phone may run its layers at int4 while the edge runs fp32. Activations that cross a cut
are fp32 whatever the precisions on either side.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from splitrl.quant.precision import PRECISIONS


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
    precision: str = "fp32"

    @property
    def is_empty(self) -> bool:
        return self.start == self.stop


@dataclass(frozen=True)
class Partition:
    """Validated cut points over a model with ``num_layers`` decoder layers, and a precision per segment.

    ``precisions`` is None (every segment fp32) or one name per segment (``len(cuts) + 1``).
    """

    cuts: tuple[int, ...]
    num_layers: int
    precisions: tuple[str, ...] | None = None

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
        if self.precisions is not None:
            k = len(self.cuts) + 1
            if not isinstance(self.precisions, tuple) or len(self.precisions) != k:
                raise InvalidPartitionError(
                    f"precisions must name one precision per segment ({k}), got {self.precisions!r}")
            for i, p in enumerate(self.precisions):
                if p not in PRECISIONS:
                    raise InvalidPartitionError(
                        f"precision of segment {i} = {p!r}: must be one of {', '.join(PRECISIONS)}")
            if all(p == "fp32" for p in self.precisions):
                object.__setattr__(self, "precisions", None)  # one spelling of the default

    @classmethod
    def of(cls, cuts: int | Sequence[int], num_layers: int,
           precision: str | Sequence[str] | None = None) -> "Partition":
        """Build from one split point or a sequence of cut points, and one precision or one per segment."""
        if isinstance(cuts, int) and not isinstance(cuts, bool):
            cuts = (cuts,)
        try:
            cuts = tuple(int(c) if hasattr(c, "__index__") else c for c in cuts)
        except TypeError as e:
            raise InvalidPartitionError(f"cut points must be an int or a sequence of ints, got {cuts!r}") from e
        if precision is None:
            return cls(cuts, num_layers)
        if isinstance(precision, str):
            precisions = (precision,) * (len(cuts) + 1)
        else:
            precisions = tuple(precision)
        return cls(cuts, num_layers, precisions)

    def precision_of(self, segment: int) -> str:
        """The precision segment ``segment`` runs at."""
        return "fp32" if self.precisions is None else self.precisions[segment]

    def with_precision(self, precision: str | Sequence[str] | None) -> "Partition":
        """The same cuts at other precisions."""
        return Partition.of(list(self.cuts), self.num_layers, precision)

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
                    precision=self.precision_of(k),
                )
            )
        return specs

    def crosses(self, boundary: int) -> bool:
        """Whether a payload crosses cut ``boundary`` (nothing crosses a cut at ``L``: the head ran before it)."""
        return self.cuts[boundary] < self.num_layers

    @property
    def head_segment(self) -> int:
        return next(s.index for s in self.segments() if s.has_head)
