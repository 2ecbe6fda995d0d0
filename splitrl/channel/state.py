"""The per-slot channel state handed from the channel emulator to activation links."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChannelState:
    """What the link sees in one slot.

    Attributes:
        snr_db: received SNR in dB for this slot.
        rate_bps: achievable rate in bit/s (None when the caller does not model rate).
        ber: bit error probability for digital transports (None: derive from ``snr_db``).
        bler: block error probability for block-erasure transports (None: derive or ignore).
    """

    snr_db: float
    rate_bps: float | None = None
    ber: float | None = None
    bler: float | None = None
