"""Element dropout: the activation-loss model of the Chen et al. layer-split reference code.

Each element of the hidden states is independently zeroed with probability ``p`` (a crude
stand-in for lost symbols). As in the reference code there is NO 1/(1-p) rescaling unless
``rescale=True`` (which makes the link unbiased in expectation, like training-time dropout).
The payload is charged as fp32 with no header (``numel * 4``), matching the reference; the wire
carries the masked tensor as an fp32 codec frame. ``p`` is a link parameter, not taken from the channel
state.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from splitrl.link.base import ChannelLink, SeedLike
from splitrl.link.codec import check_finite, native_codec
from splitrl.errors import UsageError

__all__ = ["DropoutLink", "DropoutLinkConfig"]


@dataclass(frozen=True)
class DropoutLinkConfig:
    """Parameters of `DropoutLink`.

    Attributes:
        p: drop probability in [0, 1] ([0, 1) when ``rescale``).
        rescale: multiply kept elements by 1/(1-p).
    """

    p: float
    rescale: bool = False

    def __post_init__(self) -> None:
        p = self.p
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise UsageError(f"DropoutLinkConfig.p must be a number in [0, 1], got {p!r}")
        if not isinstance(self.rescale, bool):
            raise UsageError(f"DropoutLinkConfig.rescale must be a bool, got {self.rescale!r}")
        if self.rescale and p >= 1.0:
            raise UsageError("DropoutLinkConfig.p must be in [0, 1) when rescale=True, got 1.0")


class DropoutLink(ChannelLink):
    """Zero each element with probability ``p``; ``last_stats['dropped']`` counts them."""

    def __init__(
        self, p: float, *, seed: SeedLike, rescale: bool = False, vocab_size: int = 65536
    ) -> None:
        self.config = DropoutLinkConfig(p, rescale)
        super().__init__(seed=seed, vocab_size=vocab_size)

    def _encode(self, hidden: torch.Tensor) -> tuple[bytes, int]:
        out, nbytes = self._mask(hidden)
        return native_codec(hidden.dtype).encode(out).to_bytes(), nbytes

    def _mask(self, hidden: torch.Tensor) -> tuple[torch.Tensor, int]:
        check_finite(hidden)
        p = float(self.config.p)
        u = torch.rand(hidden.shape, generator=self._torch_gen(hidden.device), device=hidden.device)
        keep = u >= p  # P(keep) = 1 - p exactly for u ~ U[0, 1)
        out = hidden * keep
        if self.config.rescale and p > 0.0:
            out = out / (1.0 - p)
        self.last_stats = {"dropped": int(keep.numel() - keep.sum())}
        return out.to(hidden.dtype), hidden.numel() * 4

    def __repr__(self) -> str:
        return f"DropoutLink(p={self.config.p}, rescale={self.config.rescale}, seed={self.seed})"
