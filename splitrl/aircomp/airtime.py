"""Air time of one all-reduce: over-the-air (AirComp) vs the digital star over TDMA / FDMA.

Both schemes reduce a partial sum of ``elements`` real values held by each of N devices and end
with the aggregator broadcasting the sum back (the same downlink in both: fp16 at the downlink
Shannon rate of the weakest device, so it adds the same time to both and is reported separately).

* AirComp uplink: all devices transmit at once on the whole band B; one complex channel use per
  two real elements (`splitrl.aircomp.signal.pack_complex`), B complex uses per second, so
  ``ceil(elements/2) / B`` seconds whatever N is; plus the per-token scale agreement
  (4 bytes per token per device, digital TDMA at the uncoded rate) and propagation.
* Digital star uplink: each device's partial goes through a `splitrl.link` codec (fp16, int8, ...)
  at a rate from `splitrl.channel`: ``rate="uncoded"`` sends the codec bits with uncoded
  ``modulation`` (bits_per_symbol x B bit/s; the bit errors then come from ``ber_awgn`` at the
  device's post-MRC SNR), ``rate="shannon"`` at the error-free capacity B log2(1 + SNR_n) (the
  most favourable digital case). TDMA: devices one after the other on the whole band (times add);
  FDMA: each on B/N at the same power, i.e. N times the SNR, concurrently (the slowest finishes
  last). Transfer times use `splitrl.channel.LatencyModel` (serialisation + propagation + HARQ
  overhead per its config).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from splitrl.channel import LatencyConfig, LatencyModel, bits_per_symbol, shannon_capacity_bps
from splitrl.errors import UsageError
from splitrl.link.codec import get_codec

__all__ = ["AirTime", "aircomp_seconds", "digital_star_seconds", "downlink_seconds", "post_mrc_snr_db"]

Access = Literal["tdma", "fdma"]


@dataclass(frozen=True)
class AirTime:
    """Seconds of one all-reduce: uplink (what the schemes differ in) and the common downlink."""

    uplink_s: float
    downlink_s: float

    @property
    def total_s(self) -> float:
        return self.uplink_s + self.downlink_s


def post_mrc_snr_db(h: NDArray[np.complex128], p: NDArray[np.float64], sigma2: float = 1.0) -> NDArray[np.float64]:
    """Per-device SNR after maximum-ratio combining at the aggregator, P_n ||h_n||^2 / sigma^2, in dB [N]."""
    g = np.asarray(p) * np.sum(np.abs(h) ** 2, axis=-1) / sigma2
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(g)


def _latency() -> LatencyModel:
    return LatencyModel(LatencyConfig(max_retransmissions=0, harq_rtt_s=0.0))


def downlink_seconds(elements: int, snr_db: NDArray[np.float64], bandwidth_hz: float) -> float:
    """The aggregator broadcasts the fp16 sum at the capacity of the weakest device."""
    nbytes = get_codec("fp16").nbytes((1, int(elements)))
    rate = float(shannon_capacity_bps(float(np.min(snr_db)), bandwidth_hz))
    return _latency().expected(nbytes, rate).total_s


def aircomp_seconds(shape: tuple[int, ...], snr_db: NDArray[np.float64], bandwidth_hz: float,
                    *, modulation: str = "qpsk") -> AirTime:
    """One AirComp all-reduce of a [rows, D] tensor per device (``snr_db``: per-device post-MRC SNR)."""
    rows = int(math.prod(shape[:-1])) if len(shape) > 1 else 1
    d = int(shape[-1])
    uses = rows * math.ceil(d / 2)
    n = len(snr_db)
    # Per-token scales: N devices x 4 bytes x rows, uncoded digital TDMA, then the max broadcast back.
    scale_bits = 8 * 4 * rows
    scale_s = (n + 1) * scale_bits / (bits_per_symbol(modulation) * bandwidth_hz)
    lat = _latency()
    uplink = uses / bandwidth_hz + scale_s + lat.config.distance_m / 299_792_458.0
    return AirTime(uplink, downlink_seconds(rows * d, snr_db, bandwidth_hz))


def digital_star_seconds(
    shape: tuple[int, ...], snr_db: NDArray[np.float64], bandwidth_hz: float, *, codec: str = "fp16",
    access: Access = "tdma", rate: Literal["uncoded", "shannon"] = "uncoded", modulation: str = "qpsk",
) -> AirTime:
    """The digital star: every device uploads its encoded partial; TDMA or FDMA; common downlink."""
    if access not in ("tdma", "fdma"):
        raise UsageError(f"access: tdma or fdma, got {access!r}")
    if rate not in ("uncoded", "shannon"):
        raise UsageError(f"rate: uncoded or shannon, got {rate!r}")
    rows = int(math.prod(shape[:-1])) if len(shape) > 1 else 1
    d = int(shape[-1])
    nbytes = get_codec(codec).nbytes((rows, d))
    snr = np.asarray(snr_db, dtype=float)
    n = len(snr)
    band = bandwidth_hz if access == "tdma" else bandwidth_hz / n
    snr_eff = snr if access == "tdma" else snr + 10.0 * math.log10(n)
    if rate == "uncoded":
        rates = np.full(n, bits_per_symbol(modulation) * band)
    else:
        rates = np.array([shannon_capacity_bps(float(s), band) for s in snr_eff])
    lat = _latency()
    times = np.array([lat.expected(nbytes, float(r)).total_s for r in rates])
    uplink = float(times.sum() if access == "tdma" else times.max())
    return AirTime(uplink, downlink_seconds(rows * d, snr, bandwidth_hz))
