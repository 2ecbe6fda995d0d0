"""Achievable rate and block error rate as functions of the slot SNR.

Owns two rate models, both satisfying the `RateModel` protocol of `splitrl.channel.base`:

* `ShannonRate`: R = (1 - overhead) B log2(1 + SNR / Gamma), Gamma the implementation gap in dB
  (about 0 dB for an ideal code, ~1.5-3 dB for practical LDPC/turbo links at a few % BLER). It
  carries no BLER: the capacity formula is the error-free asymptote.
* `CqiRate`: 5G NR link adaptation over the 4-bit CQI table 1 of 3GPP TS 38.214 (Table 5.2.2.1-2,
  identical to LTE TS 36.213 Table 7.2.3-1). The highest CQI whose modelled BLER at the slot SNR
  (minus a back-off margin) meets the target is chosen; the rate is its spectral efficiency times
  B (1 - overhead), and its BLER follows a logistic waterfall around the CQI's switching SNR.

Assumptions the table mode rests on (override them in `CqiRateConfig`):

* Switching SNRs (`CQI_SNR_THRESHOLDS_DB`) are the widely used AWGN, 10 %-BLER values from LTE
  link-level simulation (turbo code, SISO): -6.7, -4.7, ..., 22.7 dB. They are not normative; NR
  LDPC sits within about 1 dB of them.
* Waterfall: BLER_c(snr) = 1 / (1 + 9 exp(a (snr - T_c))), so BLER = 0.1 exactly at T_c and the slope
  a (default 1.5 /dB) takes BLER from 0.5 at T_c - 1.46 dB to ~1 % at T_c + 1.5 dB, the
  width of a ~1000-bit LDPC/turbo code block's waterfall. It is a fit, not a decoder model.
* Overhead: 0.14 is the FR1 downlink overhead of the NR peak-rate formula (TS 38.306 §4.1.2; 0.08
  for FR1 uplink) covering DMRS, control and reference signals.
* CQI 0 ("out of range"): nothing can be sent; rate 0 and BLER 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _validate as v
from splitrl.errors import UsageError


def shannon_capacity_bps(
    snr_db: ArrayLike, bandwidth_hz: float, gap_db: float = 0.0
) -> float | NDArray[np.float64]:
    """B log2(1 + 10^((snr_db - gap_db) / 10)) in bit/s."""
    if not bandwidth_hz > 0:
        raise UsageError(f"bandwidth_hz = {bandwidth_hz!r}: must be > 0")
    g = 10.0 ** ((np.asarray(snr_db, dtype=float) - gap_db) / 10.0)
    out = bandwidth_hz * np.log2(1.0 + g)
    return float(out) if out.ndim == 0 else out


class CqiEntry(NamedTuple):
    """One row of the CQI table: index, modulation, code rate x 1024, spectral efficiency (b/s/Hz)."""

    index: int
    modulation: str
    code_rate_x1024: int
    efficiency: float


# 3GPP TS 38.214 Table 5.2.2.1-2 (4-bit CQI table 1). Index 0 is "out of range".
CQI_TABLE_1: tuple[CqiEntry, ...] = (
    CqiEntry(0, "none", 0, 0.0),
    CqiEntry(1, "qpsk", 78, 0.1523),
    CqiEntry(2, "qpsk", 120, 0.2344),
    CqiEntry(3, "qpsk", 193, 0.3770),
    CqiEntry(4, "qpsk", 308, 0.6016),
    CqiEntry(5, "qpsk", 449, 0.8770),
    CqiEntry(6, "qpsk", 602, 1.1758),
    CqiEntry(7, "16qam", 378, 1.4766),
    CqiEntry(8, "16qam", 490, 1.9141),
    CqiEntry(9, "16qam", 616, 2.4063),
    CqiEntry(10, "64qam", 466, 2.7305),
    CqiEntry(11, "64qam", 567, 3.3223),
    CqiEntry(12, "64qam", 666, 3.9023),
    CqiEntry(13, "64qam", 772, 4.5234),
    CqiEntry(14, "64qam", 873, 5.1152),
    CqiEntry(15, "64qam", 948, 5.5547),
)

# AWGN SNR (dB) at which CQI 1..15 reaches 10 % BLER; see the module docstring for the source.
CQI_SNR_THRESHOLDS_DB: tuple[float, ...] = (
    -6.7, -4.7, -2.3, 0.2, 2.4, 4.3, 5.9, 8.1, 10.3, 11.7, 14.1, 16.3, 18.7, 21.0, 22.7,
)

_LN9 = math.log(9.0)  # logistic offset that puts BLER = 0.1 at the threshold


@dataclass(frozen=True)
class ShannonRateConfig:
    """Configuration of `ShannonRate`.

    Attributes:
        bandwidth_hz: bandwidth B, > 0.
        gap_db: implementation gap Gamma in dB, in [0, 20].
        overhead: fraction of resources not carrying data, in [0, 1).
        max_spectral_efficiency: cap in b/s/Hz (e.g. 7.4 for 256-QAM at rate 948/1024), > 0, or None.
    """

    bandwidth_hz: float = 20e6
    gap_db: float = 0.0
    overhead: float = 0.0
    max_spectral_efficiency: float | None = None

    def __post_init__(self) -> None:
        o = "ShannonRateConfig"
        v.positive(o, "bandwidth_hz", self.bandwidth_hz)
        v.in_range(o, "gap_db", self.gap_db, 0.0, 20.0)
        v.in_range(o, "overhead", self.overhead, 0.0, 1.0, hi_open=True)
        if self.max_spectral_efficiency is not None:
            v.positive(o, "max_spectral_efficiency", self.max_spectral_efficiency)


class ShannonRate:
    """Gap-to-capacity rate model; no BLER (returns None)."""

    def __init__(self, config: ShannonRateConfig | None = None) -> None:
        self.config = config or ShannonRateConfig()

    def spectral_efficiency(self, snr_db: ArrayLike) -> float | NDArray[np.float64]:
        c = self.config
        se = np.log2(1.0 + 10.0 ** ((np.asarray(snr_db, dtype=float) - c.gap_db) / 10.0))
        if c.max_spectral_efficiency is not None:
            se = np.minimum(se, c.max_spectral_efficiency)
        return float(se) if se.ndim == 0 else se

    def rate_bps(self, snr_db: ArrayLike) -> float | NDArray[np.float64]:
        c = self.config
        return self.spectral_efficiency(snr_db) * c.bandwidth_hz * (1.0 - c.overhead)

    def bler(self, snr_db: ArrayLike) -> None:
        return None


@dataclass(frozen=True)
class CqiRateConfig:
    """Configuration of `CqiRate`.

    Attributes:
        bandwidth_hz: bandwidth B, > 0.
        overhead: fraction of resources not carrying data, in [0, 1).
        snr_thresholds_db: 15 strictly increasing SNRs (dB) at which CQI 1..15 have 10 % BLER;
            None uses `CQI_SNR_THRESHOLDS_DB`.
        bler_slope_per_db: logistic waterfall slope a, in (0, 20].
        target_bler: BLER the link adaptation may accept, in (0, 1).
        backoff_db: link-adaptation margin subtracted from the SNR before choosing, in [-10, 20].
    """

    bandwidth_hz: float = 20e6
    overhead: float = 0.14
    snr_thresholds_db: tuple[float, ...] | None = None
    bler_slope_per_db: float = 1.5
    target_bler: float = 0.1
    backoff_db: float = 0.0

    def __post_init__(self) -> None:
        o = "CqiRateConfig"
        v.positive(o, "bandwidth_hz", self.bandwidth_hz)
        v.in_range(o, "overhead", self.overhead, 0.0, 1.0, hi_open=True)
        if self.snr_thresholds_db is not None:
            try:
                t = np.asarray(self.snr_thresholds_db, dtype=float)
            except (TypeError, ValueError):
                t = np.empty(0)
            if t.shape != (15,) or not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
                raise v.fail(
                    o, "snr_thresholds_db", self.snr_thresholds_db,
                    "None or 15 finite, strictly increasing SNRs in dB (CQI 1..15)",
                )
            object.__setattr__(self, "snr_thresholds_db", tuple(float(x) for x in t))
        v.in_range(o, "bler_slope_per_db", self.bler_slope_per_db, 0.0, 20.0, lo_open=True)
        v.in_range(o, "target_bler", self.target_bler, 0.0, 1.0, lo_open=True, hi_open=True)
        v.in_range(o, "backoff_db", self.backoff_db, -10.0, 20.0)

    @property
    def thresholds(self) -> NDArray[np.float64]:
        return np.asarray(
            CQI_SNR_THRESHOLDS_DB if self.snr_thresholds_db is None else self.snr_thresholds_db
        )


class LinkAdaptation(NamedTuple):
    """What `CqiRate.evaluate` decides for one SNR."""

    cqi: int
    modulation: str
    code_rate: float
    efficiency: float
    rate_bps: float
    bler: float


_EFFICIENCY = np.array([e.efficiency for e in CQI_TABLE_1])


class CqiRate:
    """Table-based NR link adaptation (see module docstring for the assumptions)."""

    def __init__(self, config: CqiRateConfig | None = None) -> None:
        self.config = config or CqiRateConfig()
        c = self.config
        self._thr = c.thresholds
        # SNR offset at which the logistic crosses target_bler instead of 0.1 (0 for the default).
        target_shift = (math.log((1.0 - c.target_bler) / c.target_bler) - _LN9) / c.bler_slope_per_db
        self._switch = self._thr + target_shift

    def bler_curve(self, snr_db: ArrayLike, cqi: ArrayLike) -> float | NDArray[np.float64]:
        """BLER of a transport block sent with ``cqi`` at ``snr_db``: logistic waterfall (1 for CQI 0)."""
        s = np.asarray(snr_db, dtype=float)
        q = np.asarray(cqi)
        if np.any((q < 0) | (q > 15)):
            raise UsageError(f"cqi = {cqi!r}: must be in [0, 15]")
        thr = self._thr[np.clip(q, 1, 15) - 1]
        # exp overflow for very low SNR just means BLER -> 1; silence it instead of warning.
        with np.errstate(over="ignore"):
            out = 1.0 / (1.0 + np.exp(self.config.bler_slope_per_db * (s - thr) + _LN9))
        out = np.where(q == 0, 1.0, out)
        return float(out) if out.ndim == 0 else out

    def select_cqi(self, snr_db: ArrayLike) -> int | NDArray[np.int64]:
        """Highest CQI meeting ``target_bler`` at ``snr_db - backoff_db``; 0 when none does."""
        s = np.asarray(snr_db, dtype=float) - self.config.backoff_db
        q = np.searchsorted(self._switch, s, side="right").astype(np.int64)
        return int(q) if q.ndim == 0 else q

    def rate_bps(self, snr_db: ArrayLike, cqi: ArrayLike | None = None) -> float | NDArray[np.float64]:
        """Spectral efficiency of the chosen (or given) CQI x B x (1 - overhead)."""
        q = np.asarray(self.select_cqi(snr_db) if cqi is None else cqi)
        c = self.config
        out = _EFFICIENCY[q] * c.bandwidth_hz * (1.0 - c.overhead)
        return float(out) if np.ndim(out) == 0 else out

    def bler(self, snr_db: ArrayLike, cqi: ArrayLike | None = None) -> float | NDArray[np.float64]:
        """BLER at ``snr_db`` with the chosen (or given) CQI."""
        q = self.select_cqi(snr_db) if cqi is None else cqi
        return self.bler_curve(snr_db, q)

    def goodput_bps(self, snr_db: ArrayLike) -> float | NDArray[np.float64]:
        """Expected delivered rate (1 - BLER) x rate, before retransmissions."""
        return self.rate_bps(snr_db) * (1.0 - np.asarray(self.bler(snr_db)))

    def evaluate(self, snr_db: float) -> LinkAdaptation:
        """Full decision for one SNR."""
        q = int(self.select_cqi(float(snr_db)))
        e = CQI_TABLE_1[q]
        return LinkAdaptation(
            cqi=q,
            modulation=e.modulation,
            code_rate=e.code_rate_x1024 / 1024.0,
            efficiency=e.efficiency,
            rate_bps=float(self.rate_bps(snr_db, q)),
            bler=float(self.bler_curve(snr_db, q)),
        )
