"""What crosses a cut between two segments: the `Link` contract and the identity link.

A `Link` sits at one boundary of a partition. The runtime hands it the payload that leaves
the segment before the cut — token ids (int64, shape ``[B, T]``) when the cut is at layer 0,
hidden states (float, shape ``[B, T, H]``) otherwise — and runs the next segment on what the
link returns. Every call is recorded as a `Transfer` (boundary, phase, step, bytes on the air)
so per-request reports and cost models can read the traffic back.

Wireless links (quantisation, bit errors, analog noise, dropout) subclass `Link` and override
`_carry`; this module owns only the contract and the lossless fp32 link.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

import torch

Phase = Literal["prefill", "decode", "eval"]


def token_id_bytes(vocab_size: int) -> int:
    """Bytes one token id takes on the air: 2 while the vocabulary fits in uint16, else 4."""
    return 2 if vocab_size <= 65536 else 4


@dataclass(frozen=True)
class Transfer:
    """One payload crossing one boundary.

    Attributes:
        boundary: index of the cut in the partition (0 = first cut, between segment 0 and 1).
        phase: ``"prefill"``, ``"decode"`` or ``"eval"``.
        step: decode step (0 for prefill/eval).
        kind: ``"tokens"`` for token ids, ``"hidden"`` for activations.
        shape: payload shape.
        nbytes: bytes on the air for this payload, headers included.
    """

    boundary: int
    phase: str
    step: int
    kind: str
    shape: tuple[int, ...]
    nbytes: int


class Link(ABC):
    """Transforms what crosses a cut and records the traffic.

    Subclasses implement `_carry(payload) -> (received, nbytes)`. The payload is never modified in
    place; `received` must have the payload's shape and dtype.
    """

    def __init__(self, vocab_size: int = 65536) -> None:
        self.vocab_size = int(vocab_size)
        self.transfers: list[Transfer] = []

    def transmit(
        self, payload: torch.Tensor, *, boundary: int = 0, phase: Phase = "eval", step: int = 0
    ) -> torch.Tensor:
        """Carry ``payload`` across the link, record the transfer, return what arrives."""
        kind = "tokens" if not payload.is_floating_point() else "hidden"
        if kind == "tokens":
            received, nbytes = payload, payload.numel() * token_id_bytes(self.vocab_size)
        else:
            received, nbytes = self._carry(payload)
            if received.shape != payload.shape:
                raise ValueError(
                    f"{type(self).__name__} returned shape {tuple(received.shape)} for a payload "
                    f"of shape {tuple(payload.shape)}; a link must preserve the shape"
                )
        self.transfers.append(
            Transfer(boundary, phase, step, kind, tuple(payload.shape), int(nbytes))
        )
        return received

    @abstractmethod
    def _carry(self, hidden: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Return (received hidden states, bytes on the air) for one activation payload."""

    def reset_stats(self) -> None:
        """Forget recorded transfers (the runtime does this at the start of each request)."""
        self.transfers.clear()

    @property
    def bytes_total(self) -> int:
        return sum(t.nbytes for t in self.transfers)


class IdentityLink(Link):
    """Lossless link: activations travel as fp32 (4 bytes per element), unchanged."""

    def _carry(self, hidden: torch.Tensor) -> tuple[torch.Tensor, int]:
        return hidden, hidden.numel() * 4
