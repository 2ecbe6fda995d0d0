"""Per-slot received SNR from a link budget, shadowing and time-correlated small-scale fading.

Owns the physical SNR model used when no measured trace is available:

* Large scale: log-distance path loss PL(d) = PL(d0) + 10 n log10(d / d0) (PL(d0) defaults to free
  space at the carrier), thermal noise -174 dBm/Hz + 10 log10(B) + NF, and log-normal shadowing
  whose dB value follows Gudmundson's exponential spatial correlation exp(-v T / d_corr) as a
  first-order autoregression.
* Small scale: power gain with E[g] = 1 for ``"none"`` (AWGN), ``"rayleigh"``, ``"rician"``
  (K factor, static line-of-sight phase drawn at reset) and ``"nakagami"`` (m >= 0.5).
* Time correlation from mobility: Doppler f_d = v f_c / c and the Jakes (Clarke) lag-one
  correlation rho = J0(2 pi f_d T_slot), realised as an AR(1) recursion
  x_t = rho x_{t-1} + sqrt(1 - rho^2) w_t on unit-variance Gaussian components. The AR(1) matches
  Jakes exactly at lag one; at lag k it decays as rho^k instead of following J0(2 pi f_d k T)
  (Baddour & Beaulieu, IEEE TWC 2005), which is the usual trade for a one-sample state.

How each fading law uses the Gaussian components, and what it implies for the power domain
(Pearson lag-one correlation of the power gain g_t = |h_t|^2, given complex-gain correlation rho):

* Rayleigh: h = (x1 + j x2)/sqrt(2) ~ CN(0, 1); E[h_t h*_{t-1}] = rho exactly; power correlation rho^2.
* Rician: h = sqrt(K/(K+1)) e^{j phi} + sqrt(1/(K+1)) h_d, h_d the Rayleigh process above; the complex
  diffuse part has correlation rho, and the power correlation is (rho^2 + 2 K rho) / (1 + 2 K).
* Nakagami-m, 2m an integer (m = 0.5, 1, 1.5, ...): g = (1/2m) sum_{i=1}^{2m} x_i^2 with 2m independent
  AR(1) components. This is exactly Gamma(m, 1/m) at every slot (a scaled chi-square with 2m
  degrees of freedom) and its power correlation is exactly rho^2. Nakagami-m has no canonical
  complex gain, so none is reported.
* Nakagami-m, any other m (or ``nakagami_method="copula"``): a copula on the Rayleigh process:
  e = |h_d|^2 ~ Exp(1) is mapped through its CDF to a uniform and then through the Gamma(m, 1/m)
  quantile. The marginal is exact for every m; the power correlation is close to, but not exactly,
  rho^2 (the map is monotone, so rank correlation is preserved, not Pearson correlation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy.signal import lfilter
from scipy.special import gammaincinv, gammainccinv, j0

from . import _validate as v
from .base import Channel, RateModel
from splitrl.errors import UsageError

SPEED_OF_LIGHT_MPS = 299_792_458.0
# kT at T0 = 290 K is -173.98 dBm/Hz; -174 is the value every link budget (and 3GPP) uses.
THERMAL_NOISE_DBM_PER_HZ = -174.0

FadingModel = Literal["none", "rayleigh", "rician", "nakagami"]
FADING_MODELS: tuple[str, ...] = ("none", "rayleigh", "rician", "nakagami")
NakagamiMethod = Literal["auto", "sum_of_squares", "copula"]
_MAX_SUM_OF_SQUARES = 64  # beyond 2m = 64 Gaussian components the copula is cheaper and as exact


def thermal_noise_dbm(bandwidth_hz: float, noise_figure_db: float = 0.0) -> float:
    """Receiver noise power in dBm: -174 dBm/Hz + 10 log10(B) + NF."""
    if not bandwidth_hz > 0:
        raise UsageError(f"bandwidth_hz = {bandwidth_hz!r}: must be > 0")
    return THERMAL_NOISE_DBM_PER_HZ + 10.0 * math.log10(bandwidth_hz) + noise_figure_db


def free_space_path_loss_db(distance_m: float, carrier_hz: float) -> float:
    """Friis free-space loss 20 log10(4 pi d f_c / c) in dB."""
    if not distance_m > 0 or not carrier_hz > 0:
        raise UsageError(
            f"distance_m = {distance_m!r}, carrier_hz = {carrier_hz!r}: both must be > 0"
        )
    return 20.0 * math.log10(4.0 * math.pi * distance_m * carrier_hz / SPEED_OF_LIGHT_MPS)


def log_distance_path_loss_db(
    distance_m: float,
    exponent: float,
    *,
    ref_distance_m: float = 1.0,
    ref_loss_db: float | None = None,
    carrier_hz: float | None = None,
) -> float:
    """PL(d) = PL(d0) + 10 n log10(d / d0); PL(d0) is free space at ``carrier_hz`` when not given.

    Distances below ``ref_distance_m`` are clamped to it: the log-distance law is a far-field fit
    and would otherwise predict gain near the antenna.
    """
    if ref_loss_db is None:
        if carrier_hz is None:
            raise UsageError("log_distance_path_loss_db needs ref_loss_db or carrier_hz")
        ref_loss_db = free_space_path_loss_db(ref_distance_m, carrier_hz)
    d = max(float(distance_m), float(ref_distance_m))
    return float(ref_loss_db) + 10.0 * exponent * math.log10(d / ref_distance_m)


def doppler_hz(speed_mps: float, carrier_hz: float) -> float:
    """Maximum Doppler shift f_d = v f_c / c."""
    return speed_mps * carrier_hz / SPEED_OF_LIGHT_MPS


def jakes_correlation(speed_mps: float, carrier_hz: float, slot_s: float) -> float:
    """Clarke/Jakes lag-one correlation of the complex gain, J0(2 pi f_d T_slot).

    Can be negative (J0 has a minimum of about -0.40) when a slot spans more than ~0.38/f_d; the
    AR(1) then alternates sign slot to slot, which is what the Jakes lag-one value prescribes.
    """
    return float(j0(2.0 * math.pi * doppler_hz(speed_mps, carrier_hz) * slot_s))


def gudmundson_correlation(speed_mps: float, slot_s: float, decorrelation_m: float) -> float:
    """Lag-one correlation of shadowing in dB: exp(-v T / d_corr) (Gudmundson, 1991)."""
    return math.exp(-speed_mps * slot_s / decorrelation_m)


@dataclass(frozen=True)
class LinkBudget:
    """Large-scale link budget giving the mean received SNR.

    Defaults describe a 3GPP-like UE uplink: 23 dBm (power class 3), 20 MHz, 5 dB gNB noise
    figure, UMa-like exponent 3.5 at 100 m.

    Attributes:
        tx_power_dbm: transmit power in dBm, in [-50, 60].
        bandwidth_hz: occupied bandwidth (noise bandwidth), > 0.
        noise_figure_db: receiver noise figure, in [0, 30].
        distance_m: transmitter-receiver distance, > 0.
        path_loss_exponent: log-distance exponent n, in [1, 8].
        ref_distance_m: reference distance d0, > 0.
        ref_loss_db: loss at d0 in dB; None uses free space at the carrier.
        antenna_gain_db: sum of transmit and receive antenna gains (dBi), in [-20, 60].
    """

    tx_power_dbm: float = 23.0
    bandwidth_hz: float = 20e6
    noise_figure_db: float = 5.0
    distance_m: float = 100.0
    path_loss_exponent: float = 3.5
    ref_distance_m: float = 1.0
    ref_loss_db: float | None = None
    antenna_gain_db: float = 0.0

    def __post_init__(self) -> None:
        o = "LinkBudget"
        v.in_range(o, "tx_power_dbm", self.tx_power_dbm, -50.0, 60.0)
        v.positive(o, "bandwidth_hz", self.bandwidth_hz)
        v.in_range(o, "noise_figure_db", self.noise_figure_db, 0.0, 30.0)
        v.positive(o, "distance_m", self.distance_m)
        v.in_range(o, "path_loss_exponent", self.path_loss_exponent, 1.0, 8.0)
        v.positive(o, "ref_distance_m", self.ref_distance_m)
        if self.ref_loss_db is not None:
            v.in_range(o, "ref_loss_db", self.ref_loss_db, 0.0, 200.0)
        v.in_range(o, "antenna_gain_db", self.antenna_gain_db, -20.0, 60.0)

    def path_loss_db(self, carrier_hz: float) -> float:
        return log_distance_path_loss_db(
            self.distance_m,
            self.path_loss_exponent,
            ref_distance_m=self.ref_distance_m,
            ref_loss_db=self.ref_loss_db,
            carrier_hz=carrier_hz,
        )

    def mean_snr_db(self, carrier_hz: float) -> float:
        """P_tx + G - PL(d) - (-174 + 10 log10 B + NF), in dB."""
        noise = thermal_noise_dbm(self.bandwidth_hz, self.noise_figure_db)
        return self.tx_power_dbm + self.antenna_gain_db - self.path_loss_db(carrier_hz) - noise


def mean_snr_db(
    tx_power_dbm: float,
    distance_m: float,
    bandwidth_hz: float,
    *,
    carrier_hz: float = 3.5e9,
    noise_figure_db: float = 5.0,
    path_loss_exponent: float = 3.5,
    ref_distance_m: float = 1.0,
    ref_loss_db: float | None = None,
    antenna_gain_db: float = 0.0,
) -> float:
    """Mean received SNR in dB from a transmit power, distance and bandwidth (see `LinkBudget`)."""
    return LinkBudget(
        tx_power_dbm=tx_power_dbm,
        bandwidth_hz=bandwidth_hz,
        noise_figure_db=noise_figure_db,
        distance_m=distance_m,
        path_loss_exponent=path_loss_exponent,
        ref_distance_m=ref_distance_m,
        ref_loss_db=ref_loss_db,
        antenna_gain_db=antenna_gain_db,
    ).mean_snr_db(carrier_hz)


@dataclass(frozen=True)
class CorrelatedFadingConfig:
    """Configuration of `CorrelatedFadingChannel`.

    The mean SNR comes from ``mean_snr_db`` or, when ``link_budget`` is set, from the budget; set
    at most one (with neither, the mean is 10 dB).

    Attributes:
        mean_snr_db: mean SNR in dB before shadowing and fading, in [-50, 80].
        link_budget: large-scale budget; exclusive with ``mean_snr_db``.
        fading: ``"none"``, ``"rayleigh"``, ``"rician"`` or ``"nakagami"``.
        rician_k: Rician K factor (linear, LOS / diffuse power), in [0, 1000]; K = 0 is Rayleigh.
        nakagami_m: Nakagami shape m, in [0.5, 1000]; m = 1 is Rayleigh.
        nakagami_method: ``"auto"`` (sum of squares when 2m is an integer <= 64, else copula),
            ``"sum_of_squares"`` (requires integer 2m <= 64) or ``"copula"``.
        speed_mps: UE speed, in [0, 150] m/s; drives Doppler and shadowing correlation.
        carrier_hz: carrier frequency, in [1e8, 1e11] Hz.
        slot_s: slot duration, > 0 and <= 60 s.
        correlation: lag-one complex-gain correlation in [-1, 1]; None derives it from Jakes.
            1 freezes the fading for the episode (block fading), 0 is i.i.d. per slot.
        shadowing_sigma_db: log-normal shadowing std in dB, in [0, 20]; 0 disables it.
        shadowing_decorr_m: Gudmundson decorrelation distance, > 0 (3GPP TR 38.901 UMa NLOS: 50 m).
        shadowing_correlation: lag-one shadowing correlation in [0, 1]; None derives it from
            ``speed_mps * slot_s / shadowing_decorr_m``.
    """

    mean_snr_db: float | None = None
    link_budget: LinkBudget | None = None
    fading: FadingModel = "rayleigh"
    rician_k: float = 3.0
    nakagami_m: float = 1.0
    nakagami_method: NakagamiMethod = "auto"
    speed_mps: float = 1.0
    carrier_hz: float = 3.5e9
    slot_s: float = 1e-3
    correlation: float | None = None
    shadowing_sigma_db: float = 0.0
    shadowing_decorr_m: float = 50.0
    shadowing_correlation: float | None = None

    def __post_init__(self) -> None:
        o = "CorrelatedFadingConfig"
        if self.mean_snr_db is not None and self.link_budget is not None:
            raise v.fail(o, "mean_snr_db", self.mean_snr_db, "None when link_budget is set")
        if self.link_budget is not None and not isinstance(self.link_budget, LinkBudget):
            raise v.fail(o, "link_budget", self.link_budget, "a LinkBudget or None")
        v.one_of(o, "fading", self.fading, FADING_MODELS)
        v.in_range(o, "rician_k", self.rician_k, 0.0, 1000.0)
        v.in_range(o, "nakagami_m", self.nakagami_m, 0.5, 1000.0)
        v.one_of(o, "nakagami_method", self.nakagami_method, ("auto", "sum_of_squares", "copula"))
        if self.nakagami_method == "sum_of_squares" and not _sum_of_squares_ok(self.nakagami_m):
            raise v.fail(
                o, "nakagami_m", self.nakagami_m,
                f"a multiple of 0.5 up to {_MAX_SUM_OF_SQUARES / 2} for nakagami_method="
                "'sum_of_squares'",
            )
        v.in_range(o, "speed_mps", self.speed_mps, 0.0, 150.0)
        v.in_range(o, "carrier_hz", self.carrier_hz, 1e8, 1e11)
        v.in_range(o, "slot_s", self.slot_s, 0.0, 60.0, lo_open=True)
        if self.correlation is not None:
            v.in_range(o, "correlation", self.correlation, -1.0, 1.0)
        v.in_range(o, "shadowing_sigma_db", self.shadowing_sigma_db, 0.0, 20.0)
        v.positive(o, "shadowing_decorr_m", self.shadowing_decorr_m)
        if self.shadowing_correlation is not None:
            v.in_range(o, "shadowing_correlation", self.shadowing_correlation, 0.0, 1.0)
        if self.mean_snr_db is not None:
            v.in_range(o, "mean_snr_db", self.mean_snr_db, -50.0, 80.0)

    @property
    def resolved_mean_snr_db(self) -> float:
        """Mean SNR in dB actually used (from ``mean_snr_db``, the link budget, or 10 dB)."""
        if self.link_budget is not None:
            return self.link_budget.mean_snr_db(self.carrier_hz)
        return 10.0 if self.mean_snr_db is None else float(self.mean_snr_db)

    @property
    def fading_correlation(self) -> float:
        """Lag-one correlation of the complex gain (configured, or Jakes from speed)."""
        if self.correlation is not None:
            return float(self.correlation)
        return jakes_correlation(self.speed_mps, self.carrier_hz, self.slot_s)

    @property
    def shadow_correlation(self) -> float:
        """Lag-one correlation of shadowing in dB (configured, or Gudmundson from speed)."""
        if self.shadowing_correlation is not None:
            return float(self.shadowing_correlation)
        return gudmundson_correlation(self.speed_mps, self.slot_s, self.shadowing_decorr_m)

    @property
    def nakagami_uses_sum_of_squares(self) -> bool:
        if self.nakagami_method == "copula":
            return False
        return _sum_of_squares_ok(self.nakagami_m)

    def power_gain_correlation(self) -> float | None:
        """Exact lag-one Pearson correlation of the small-scale power gain, or None if not exact.

        None for the Nakagami copula (only approximately rho^2) and for ``"none"`` (constant gain).
        """
        rho = self.fading_correlation
        if self.fading == "rayleigh":
            return rho**2
        if self.fading == "rician":
            k = self.rician_k
            return (rho**2 + 2.0 * k * rho) / (1.0 + 2.0 * k)
        if self.fading == "nakagami" and self.nakagami_uses_sum_of_squares:
            return rho**2
        return None


def _sum_of_squares_ok(m: float) -> bool:
    two_m = 2.0 * m
    return abs(two_m - round(two_m)) < 1e-9 and round(two_m) <= _MAX_SUM_OF_SQUARES


def amount_of_fading(config: CorrelatedFadingConfig) -> float:
    """Var[g] / E[g]^2 of the small-scale power gain: 0 (none), 1 (Rayleigh), 1/m, (1+2K)/(1+K)^2."""
    if config.fading == "none":
        return 0.0
    if config.fading == "rayleigh":
        return 1.0
    if config.fading == "rician":
        k = config.rician_k
        return (1.0 + 2.0 * k) / (1.0 + k) ** 2
    return 1.0 / config.nakagami_m


@dataclass(frozen=True)
class FadingSamples:
    """Slots produced by one `CorrelatedFadingChannel.sample_detail` call.

    Attributes:
        snr_db: received SNR per slot, dB.
        power_gain: small-scale power gain per slot (E = 1).
        gain: complex small-scale gain per slot for Rayleigh/Rician/none; None for Nakagami.
        shadowing_db: shadowing per slot in dB (zeros when disabled).
    """

    snr_db: NDArray[np.float64]
    power_gain: NDArray[np.float64]
    gain: NDArray[np.complex128] | None
    shadowing_db: NDArray[np.float64]


class CorrelatedFadingChannel(Channel):
    """Mean SNR + Gudmundson shadowing + Jakes-correlated small-scale fading, one value per slot.

    The process starts in its stationary distribution at ``reset()`` (and at construction), so
    every slot has the configured marginal law regardless of the correlation.
    """

    def __init__(
        self,
        config: CorrelatedFadingConfig,
        rng: np.random.Generator,
        *,
        rate_model: RateModel | None = None,
        ber_modulation: str | None = None,
    ) -> None:
        super().__init__(rng, rate_model=rate_model, ber_modulation=ber_modulation)
        if not isinstance(config, CorrelatedFadingConfig):
            raise TypeError(f"config must be a CorrelatedFadingConfig, got {type(config).__name__}")
        self.config = config
        self._n_fading = self._fading_components(config)
        self._n_shadow = 1 if config.shadowing_sigma_db > 0.0 else 0
        self._rho = config.fading_correlation
        self._rho_s = config.shadow_correlation
        self._mean_db = config.resolved_mean_snr_db
        self._reset()

    @staticmethod
    def _fading_components(c: CorrelatedFadingConfig) -> int:
        if c.fading == "none":
            return 0
        if c.fading == "nakagami" and c.nakagami_uses_sum_of_squares:
            return int(round(2.0 * c.nakagami_m))
        return 2

    def _reset(self) -> None:
        # Stationary start: each latent component ~ N(0, 1), so slot 0 already has the marginal law.
        self._x = self.rng.standard_normal(self._n_fading)
        self._s = self.rng.standard_normal(self._n_shadow)
        self._los_phase = (
            float(self.rng.uniform(0.0, 2.0 * np.pi)) if self.config.fading == "rician" else 0.0
        )

    @staticmethod
    def _ar1(w: NDArray, prev: NDArray, rho: float) -> NDArray:
        """x_t = rho x_{t-1} + sqrt(1 - rho^2) w_t along axis 0, continuing from ``prev``."""
        b = [math.sqrt(max(0.0, 1.0 - rho * rho))]
        a = [1.0, -rho]
        out, _ = lfilter(b, a, w, axis=0, zi=(rho * prev)[None, :])
        return out

    def sample_detail(self, n: int) -> FadingSamples:
        """Advance ``n`` slots and return SNR, power gain, complex gain and shadowing per slot."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise UsageError(f"n = {n!r}: must be an integer >= 1")
        c = self.config
        nf, ns = self._n_fading, self._n_shadow
        # One block of draws per call, laid out slot-major, so step() and sample(n) consume the
        # generator identically and produce identical sequences.
        w = self.rng.standard_normal((int(n), nf + ns))
        gain: NDArray[np.complex128] | None = None
        x = self._ar1(w[:, :nf], self._x, self._rho) if nf else w[:, :0]
        if nf:
            self._x = x[-1].copy()
        if c.fading == "none":
            power = np.ones(n)
            gain = np.ones(n, dtype=np.complex128)
        elif c.fading in ("rayleigh", "rician"):
            h = (x[:, 0] + 1j * x[:, 1]) * math.sqrt(0.5)
            if c.fading == "rician":
                k = c.rician_k
                los = math.sqrt(k / (k + 1.0)) * np.exp(1j * self._los_phase)
                h = los + math.sqrt(1.0 / (k + 1.0)) * h
            gain = h
            power = h.real**2 + h.imag**2
        elif c.nakagami_uses_sum_of_squares:
            power = np.sum(x * x, axis=1) / nf
        else:
            power = _gamma_copula(0.5 * (x[:, 0] ** 2 + x[:, 1] ** 2), c.nakagami_m)
        if ns:
            s = self._ar1(w[:, nf:], self._s, self._rho_s)
            self._s = s[-1].copy()
            shadow = c.shadowing_sigma_db * s[:, 0]
        else:
            shadow = np.zeros(n)
        # tiny floor: a gain of exactly 0.0 (measure zero, but possible in floating point) must not
        # produce -inf dB downstream.
        snr = self._mean_db + shadow + 10.0 * np.log10(
            np.maximum(power, np.finfo(float).tiny)
        )
        return FadingSamples(snr_db=snr, power_gain=power, gain=gain, shadowing_db=shadow)

    def _sample(self, n: int) -> NDArray[np.float64]:
        return self.sample_detail(n).snr_db


def _gamma_copula(e: NDArray, m: float) -> NDArray:
    """Map Exp(1) samples to Gamma(m, 1/m) through the probability integral transform.

    Each tail is inverted from the side where its probability is small, so deep fades (small e)
    and strong peaks (large e) both keep full relative precision.
    """
    out = np.empty_like(e)
    lo = e < math.log(2.0)
    out[lo] = gammaincinv(m, -np.expm1(-e[lo]))
    out[~lo] = gammainccinv(m, np.exp(-e[~lo]))
    return out / m
