"""The `Channel` contract every SNR process implements, and how a slot's SNR becomes a ChannelState.

A channel owns one `numpy.random.Generator` and nothing global: ``reset()`` restarts the process
(optionally on a new generator), ``sample(n)`` returns the next ``n`` per-slot SNRs in dB, and
``step()`` returns the next slot as a `ChannelState`, annotated with rate/BLER/BER when a rate
model or a reference modulation is attached. ``step()`` consumes exactly the draws ``sample(1)``
would, so ``[c.step().snr_db for _ in range(n)] == list(c.sample(n))`` for equal seeds.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from ._validate import check_rng
from .modulation import ber_awgn, bits_per_symbol
from .state import ChannelState
from splitrl.errors import UsageError


@runtime_checkable
class RateModel(Protocol):
    """Maps a slot's SNR to what the link can carry in it."""

    def rate_bps(self, snr_db: float | NDArray) -> float | NDArray: ...

    def bler(self, snr_db: float | NDArray) -> float | NDArray | None: ...


class Channel(ABC):
    """Per-slot SNR process driven only by the generator it is given."""

    def __init__(
        self,
        rng: np.random.Generator,
        *,
        rate_model: RateModel | None = None,
        ber_modulation: str | None = None,
    ) -> None:
        self._rng = check_rng(rng, type(self).__name__)
        if rate_model is not None and not isinstance(rate_model, RateModel):
            raise TypeError(f"rate_model must provide rate_bps() and bler(), got {rate_model!r}")
        if ber_modulation is not None:
            bits_per_symbol(ber_modulation)  # validates the name now, not on the first step
        self.rate_model = rate_model
        self.ber_modulation = ber_modulation

    @property
    def rng(self) -> np.random.Generator:
        return self._rng

    def reset(self, rng: np.random.Generator | None = None) -> None:
        """Restart the process from its initial distribution; optionally switch generator."""
        if rng is not None:
            self._rng = check_rng(rng, f"{type(self).__name__}.reset")
        self._reset()

    def sample(self, n: int) -> NDArray[np.float64]:
        """Advance ``n`` slots and return their SNRs in dB (shape ``(n,)``)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise UsageError(f"n = {n!r}: must be an integer >= 0")
        if n == 0:
            return np.empty(0)
        return self._sample(int(n))

    def step(self) -> ChannelState:
        """Advance one slot and return what the link sees in it."""
        return self.annotate(float(self._sample(1)[0]))

    def annotate(self, snr_db: float) -> ChannelState:
        """Wrap an SNR into a ChannelState with the attached rate model and reference modulation."""
        rate = bler = ber = None
        if self.rate_model is not None:
            rate = float(self.rate_model.rate_bps(snr_db))
            b = self.rate_model.bler(snr_db)
            bler = None if b is None else float(b)
        if self.ber_modulation is not None:
            # Block fading within a slot: the conditional AWGN BER at this slot's SNR is exact.
            ber = float(ber_awgn(snr_db, self.ber_modulation))
        return ChannelState(snr_db=float(snr_db), rate_bps=rate, ber=ber, bler=bler)

    @abstractmethod
    def _reset(self) -> None: ...

    @abstractmethod
    def _sample(self, n: int) -> NDArray[np.float64]: ...
