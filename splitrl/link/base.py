"""Common machinery of the wireless activation links: channel state, seeding, statistics.

Every link in `splitrl.link` is a `splitrl.runtime.link.Link` (so token-id payloads pass
losslessly at 2 bytes/id and every transmit is recorded as a `Transfer`) and additionally:

* receives the per-slot `ChannelState` through `set_state` (the env/runtime calls it every slot;
  the state persists until the next call);
* owns its randomness: a numpy ``Generator`` (discrete events: bit-flip counts and positions,
  block losses) and ``torch.Generator``s (Gaussian noise, dropout masks), all derived from one
  integer seed with ``numpy.random.SeedSequence``. The global RNGs are never touched, so two
  links built with the same seed produce bit-identical outputs over the same sequence of
  transmits, and one link's corruption does not depend on what the model or other links draw;
* exposes per-transmit counters in ``last_stats`` (a fresh dict after every hidden-state
  transmit).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from splitrl.channel.state import ChannelState
from splitrl.link.codec import check_finite
from splitrl.runtime.link import Link

__all__ = ["ChannelLink", "LosslessLink", "SeedLike", "resolve_seed"]

SeedLike = int | np.integer | np.random.Generator


def resolve_seed(seed: SeedLike) -> int:
    """An integer seed; a numpy Generator is consumed once to derive one."""
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(0, 2**63 - 1))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int or a numpy.random.Generator, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return int(seed)


class ChannelLink(Link):
    """Base of all `splitrl.link` links: channel state, private RNGs, ``last_stats``.

    Subclasses implement `_carry`. Non-finite hidden states are rejected (ValueError) by every
    link, before any channel effect.
    """

    def __init__(self, *, seed: SeedLike = 0, vocab_size: int = 65536) -> None:
        super().__init__(vocab_size=vocab_size)
        self.state: ChannelState | None = None
        self.last_stats: dict[str, Any] = {}
        self.reseed(seed)

    # -- channel state -------------------------------------------------------------------
    def set_state(self, state: ChannelState) -> None:
        """Install the channel state used by the following transmits."""
        if not isinstance(state, ChannelState):
            raise TypeError(f"set_state expects a ChannelState, got {type(state).__name__}")
        self.state = state

    def _require_state(self) -> ChannelState:
        if self.state is None:
            raise ValueError(
                f"{type(self).__name__} needs a channel state: call set_state(ChannelState(...)) "
                "before transmit"
            )
        return self.state

    # -- randomness ------------------------------------------------------------------------
    def reseed(self, seed: SeedLike) -> None:
        """Restart this link's random streams from ``seed`` (int or numpy Generator)."""
        self.seed = resolve_seed(seed)
        np_ss, torch_ss = np.random.SeedSequence(self.seed).spawn(2)
        self._np_rng = np.random.default_rng(np_ss)
        # torch.manual_seed takes < 2**64; keep it in the positive int64 range to be safe.
        self._torch_seed = int(torch_ss.generate_state(1, np.uint64)[0] >> np.uint64(1))
        self._torch_gens: dict[str, torch.Generator] = {}

    def _torch_gen(self, device: torch.device) -> torch.Generator:
        """This link's torch generator on ``device`` (one stream per device, lazily seeded)."""
        key = str(device)
        gen = self._torch_gens.get(key)
        if gen is None:
            gen = torch.Generator(device=device)
            gen.manual_seed(self._torch_seed)
            self._torch_gens[key] = gen
        return gen

    @property
    def np_rng(self) -> np.random.Generator:
        return self._np_rng

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed})"


class LosslessLink(ChannelLink):
    """The identity link with the `ChannelLink` interface: fp32, 4 bytes/element, no header.

    Byte accounting matches `splitrl.runtime.link.IdentityLink` (``numel * 4``), so baselines
    stay comparable with the runtime's default link.
    """

    def _carry(self, hidden: torch.Tensor) -> tuple[torch.Tensor, int]:
        check_finite(hidden)
        self.last_stats = {}
        return hidden, hidden.numel() * 4


def clamp_to_dtype(x: torch.Tensor, dtype: torch.dtype, limit: float | None = None) -> torch.Tensor:
    """Clamp finite fp32 values so the cast to ``dtype`` cannot overflow to ±Inf."""
    bound = float(torch.finfo(dtype).max)
    if limit is not None:
        bound = min(bound, float(limit))
    if bound >= float(torch.finfo(x.dtype).max):
        return x
    return x.clamp(-bound, bound)
