"""Per-hop link emulation of the ring: what the payload becomes (codec, channel noise) and when it arrives.

Hop ``k`` carries stage ``k``'s output to stage ``k+1``; the last hop returns the final hidden
state to the starter. Each hop owns a `splitrl.link` link (codec / bit errors / AWGN at the
slot's SNR, seeded per hop) and, when a link profile is given, an emulated air time: the expected
latency (`splitrl.channel.LatencyModel`: serialisation at the rate of the SNR, protocol overhead,
HARQ retransmissions) of the payload's exact on-air bytes. The link is a shared medium of one
transmitter, so transfers on a hop serialise: a payload starts on the air when the previous one
finished. The sender stamps the resulting arrival time in the header; the receiver waits for it,
so compute overlaps with air time exactly as on a real radio.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from splitrl.cost.profiles import load_profile
from splitrl.link import link_at, state_for
from splitrl.link.codec import CODEC_NAMES, check_finite
from splitrl.errors import UsageError

__all__ = ["Hop", "HopStats", "wait_until_us", "now_us"]


def now_us() -> int:
    return int(time.time() * 1e6)


def wait_until_us(deliver_us: int) -> float:
    """Sleep until wall clock ``deliver_us`` (no-op for 0 or the past); returns the seconds slept."""
    if deliver_us <= 0:
        return 0.0
    dt = deliver_us / 1e6 - time.time()
    if dt > 0:
        time.sleep(dt)
        return dt
    return 0.0


@dataclass
class HopStats:
    """What one hop carried (sender's view)."""

    transfers: int = 0
    bytes: int = 0
    air_s: float = 0.0
    emulation_s: float = 0.0

    def to_dict(self) -> dict:
        return {"transfers": self.transfers, "bytes": self.bytes, "air_s": self.air_s, "emulation_s": self.emulation_s}


class Hop:
    """One directed hop of the ring with its own link, SNR process and air-time clock."""

    def __init__(
        self, index: int, link_name: str, *, link_profile: str | None = None, snr_db: float | None = None,
        seed: int = 0, vocab_size: int = 65536,
    ) -> None:
        self.index = int(index)
        self.link_name = link_name
        self._deterministic = link_name == "identity" or link_name in CODEC_NAMES
        self.profile = None
        self._channel = None
        self._fixed_snr = snr_db
        if link_profile is not None:
            self.profile = load_profile("link", link_profile)
            self._rate = self.profile.rate_model()
            self._latency = self.profile.latency_model("uplink")
            if snr_db is None:
                self._channel = self.profile.make_channel(np.random.default_rng([int(seed), self.index, 7]))
        snr0 = self._snr() if (not self._deterministic and link_name != "dropout") else None
        if not self._deterministic and link_name != "dropout" and snr0 is None:
            raise UsageError(f"hop {index}: link {link_name!r} needs an SNR (give snr_db or a link profile)")
        self.link = link_at(link_name, seed=int(seed) * 1009 + self.index, snr_db=snr0, vocab_size=vocab_size)
        self.stats = HopStats()
        self._free_at_us = 0
        self._lossless = link_name == "identity"
        self._frame_bytes: dict[tuple, int] = {}  # (shape, dtype) -> frame bytes of the lossless link

    def _snr(self) -> float | None:
        if self._fixed_snr is not None:
            return float(self._fixed_snr)
        if self._channel is not None:
            return float(self._channel.step().snr_db)
        return None

    def carry(self, payload: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Pass ``payload`` ``[1, T, H]`` through the hop: (what arrives, wall clock in us when it has arrived)."""
        t0 = time.perf_counter()
        snr = self._snr()
        if snr is not None and not self._deterministic and self.link_name != "dropout":
            self.link.set_state(state_for(self.link_name, snr_db=snr))
        key = (tuple(payload.shape), payload.dtype)
        if self._lossless and key in self._frame_bytes:
            # The lossless link's frame is the payload bit for bit; only its size (known per shape)
            # matters, so skip the encode/decode round trip on the hot path.
            check_finite(payload)
            received, nbytes = payload, self._frame_bytes[key]
        else:
            before = len(self.link.transfers)
            received = self.link.transmit(payload, boundary=self.index)
            nbytes = sum(t.nbytes for t in self.link.transfers[before:])
            self.link.transfers.clear()  # the stats below keep the totals; the list would grow without bound
            if self._lossless:
                self._frame_bytes[key] = int(nbytes)
        deliver = 0
        if self.profile is not None:
            rate = float(self._rate.rate_bps(snr))
            bler = self._rate.bler(snr)
            bler = self.profile.rate.residual_bler if bler is None else float(bler)
            air = float(self._latency.expected(int(nbytes), rate, bler).total_s)
            start = max(time.time() * 1e6, self._free_at_us)
            deliver = int(start + air * 1e6)
            self._free_at_us = deliver
            self.stats.air_s += air
        self.stats.transfers += 1
        self.stats.bytes += int(nbytes)
        self.stats.emulation_s += time.perf_counter() - t0
        return received, deliver
