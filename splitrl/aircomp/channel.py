"""Per-device multi-antenna fading channels to an M-antenna aggregator (the AirComp uplink).

Owns the channel vectors h_n ∈ C^M of N devices to one aggregator with M receive antennas:

    h_n = sqrt(beta_n) * ( sqrt(K/(K+1)) a(theta_n) + sqrt(1/(K+1)) R^{1/2} w_n ),   w_n ~ CN(0, I_M)

* ``beta_n``: large-scale gain of device n (linear, from ``gain_db``; 0 dB = the reference device
  whose mean receive SNR per antenna is the config's ``snr_db``).
* ``R``: receive-antenna correlation, exponential model R_ij = rho^|i-j| (Loyka 2001) — the
  "possibly correlated" fading; rho = 0 is i.i.d. Rayleigh across antennas.
* ``a(theta)``: half-wavelength ULA steering vector; the line-of-sight angle of every device is
  drawn once per episode (`reset`); ``rician_k = 0`` is Rayleigh.
* Time correlation across successive channel uses of the same episode (slow movement between
  all-reduces) is the AR(1) recursion of `splitrl.channel.fading`: w_t = r w_{t-1} + sqrt(1-r^2) v_t
  with r the Jakes lag-one correlation J0(2 pi f_d T) (`splitrl.channel.jakes_correlation`), or a
  given ``time_correlation`` (0 = independent draws per block, the default; 1 = block fading).

Noise: z ~ CN(0, sigma^2 I_M) with sigma^2 = 1 and transmit power P_n = 10^(snr_db/10) * power_n
(so ``snr_db`` is the transmit SNR P/sigma^2 of a 0 dB device; ``snr_db = inf`` means sigma^2 = 0).
All randomness comes from one seeded ``numpy.random.Generator``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from splitrl.channel import jakes_correlation
from splitrl.errors import UsageError

__all__ = ["AirCompChannel", "AirCompChannelConfig", "exponential_correlation", "ula_steering"]


def exponential_correlation(m: int, rho: float) -> NDArray[np.float64]:
    """R_ij = rho^|i-j| (M x M), positive definite for |rho| < 1."""
    idx = np.arange(m)
    return float(rho) ** np.abs(idx[:, None] - idx[None, :]).astype(float)


def ula_steering(m: int, theta: float) -> NDArray[np.complex128]:
    """Half-wavelength uniform linear array response exp(j pi i sin theta), i = 0..M-1 (norm sqrt(M))."""
    return np.exp(1j * math.pi * np.arange(m) * math.sin(theta))


def _tuple(values, n: int, name: str) -> tuple[float, ...]:
    if isinstance(values, (int, float)):
        return (float(values),) * n
    out = tuple(float(v) for v in values)
    if len(out) != n:
        raise UsageError(f"{name}: give one value or one per device ({n}), got {len(out)}")
    return out


@dataclass(frozen=True)
class AirCompChannelConfig:
    """Validated description of the N-device, M-antenna uplink.

    Attributes:
        devices: number of transmitting devices N, in 1..64.
        antennas: receive antennas M at the aggregator, in 1..64.
        snr_db: transmit SNR P/sigma^2 of a 0 dB device, in [-30, 80] dB, or +inf (noiseless).
        gain_db: large-scale gain per device in dB (one value for all, or N values), in [-60, 20].
        power: relative power limit per device (one value or N), > 0 (P_n = SNR * power_n).
        rician_k: Rician K factor (linear), in [0, 1000]; 0 is Rayleigh.
        rx_correlation: exponential antenna correlation rho, in [0, 0.99].
        time_correlation: lag-one correlation between successive draws, in [0, 1]; None derives it
            from Jakes at ``speed_mps``, ``carrier_hz`` and ``block_s``.
        speed_mps, carrier_hz, block_s: mobility parameters for the Jakes correlation.
    """

    devices: int = 3
    antennas: int = 1
    snr_db: float = 20.0
    gain_db: tuple[float, ...] | float = 0.0
    power: tuple[float, ...] | float = 1.0
    rician_k: float = 0.0
    rx_correlation: float = 0.0
    time_correlation: float | None = 0.0
    speed_mps: float = 1.0
    carrier_hz: float = 3.5e9
    block_s: float = 1e-3
    gains: tuple[float, ...] = field(init=False, repr=False)
    powers: tuple[float, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("devices", "antennas"):
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or not 1 <= val <= 64:
                raise UsageError(f"{name}: an integer in 1..64, got {val!r}")
        snr = float(self.snr_db)
        if math.isnan(snr) or snr == -math.inf or (math.isfinite(snr) and not -30.0 <= snr <= 80.0):
            raise UsageError(f"snr_db: a number in [-30, 80] dB or inf, got {self.snr_db!r}")
        gains = _tuple(self.gain_db, self.devices, "gain_db")
        if not all(-60.0 <= g <= 20.0 for g in gains):
            raise UsageError(f"gain_db: values in [-60, 20] dB, got {gains}")
        powers = _tuple(self.power, self.devices, "power")
        if not all(p > 0 and math.isfinite(p) for p in powers):
            raise UsageError(f"power: positive finite relative powers, got {powers}")
        if not 0.0 <= float(self.rician_k) <= 1000.0:
            raise UsageError(f"rician_k: in [0, 1000], got {self.rician_k!r}")
        if not 0.0 <= float(self.rx_correlation) <= 0.99:
            raise UsageError(f"rx_correlation: in [0, 0.99], got {self.rx_correlation!r}")
        if self.time_correlation is not None and not 0.0 <= float(self.time_correlation) <= 1.0:
            raise UsageError(f"time_correlation: in [0, 1] or None (Jakes), got {self.time_correlation!r}")
        object.__setattr__(self, "gains", gains)
        object.__setattr__(self, "powers", powers)

    @property
    def noise_var(self) -> float:
        """sigma^2: 1, or 0 for a noiseless channel (snr_db = inf)."""
        return 0.0 if math.isinf(self.snr_db) else 1.0

    def power_limits(self) -> NDArray[np.float64]:
        """P_n = 10^(snr_db/10) * power_n (inf when noiseless), shape [N]."""
        if math.isinf(self.snr_db):
            return np.full(self.devices, np.inf)
        return 10.0 ** (self.snr_db / 10.0) * np.asarray(self.powers)

    def lag_correlation(self) -> float:
        if self.time_correlation is not None:
            return float(self.time_correlation)
        return jakes_correlation(self.speed_mps, self.carrier_hz, self.block_s)


class AirCompChannel:
    """Draws channel matrices H [N, M] (row n = h_n) from an `AirCompChannelConfig`, seeded.

    ``draw()`` returns the next block of the episode (AR(1) in time); ``sample(S)`` returns S
    independent matrices [S, N, M] (for Monte Carlo and channel statistics).
    """

    def __init__(self, config: AirCompChannelConfig, seed: int | np.random.Generator = 0) -> None:
        self.config = config
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        c = config
        self._sqrt_beta = np.sqrt(10.0 ** (np.asarray(c.gains) / 10.0))            # [N]
        self._root_r = np.linalg.cholesky(exponential_correlation(c.antennas, c.rx_correlation))  # [M, M]
        self._w: NDArray[np.complex128] | None = None
        self.reset()

    def reset(self) -> None:
        """New episode: new line-of-sight angles and a fresh diffuse state."""
        c = self.config
        thetas = self.rng.uniform(-math.pi / 2, math.pi / 2, size=c.devices)
        self._los = np.stack([ula_steering(c.antennas, t) for t in thetas])        # [N, M]
        self._w = None

    def _cn(self, *shape: int) -> NDArray[np.complex128]:
        return (self.rng.standard_normal(shape) + 1j * self.rng.standard_normal(shape)) / math.sqrt(2.0)

    def _compose(self, w: NDArray[np.complex128]) -> NDArray[np.complex128]:
        """w [..., N, M] i.i.d. CN(0,1) -> H [..., N, M]."""
        k = float(self.config.rician_k)
        diffuse = w @ self._root_r.T                                               # rows ~ CN(0, R)
        h = math.sqrt(k / (k + 1.0)) * self._los + math.sqrt(1.0 / (k + 1.0)) * diffuse
        return h * self._sqrt_beta[:, None]

    def draw(self) -> NDArray[np.complex128]:
        """The next channel block H [N, M] of this episode (AR(1) over successive calls)."""
        c = self.config
        v = self._cn(c.devices, c.antennas)
        r = self.config.lag_correlation()
        self._w = v if self._w is None else r * self._w + math.sqrt(max(0.0, 1.0 - r * r)) * v
        return self._compose(self._w)

    def sample(self, count: int) -> NDArray[np.complex128]:
        """``count`` independent channel matrices [S, N, M] (same LOS angles as this episode)."""
        c = self.config
        return self._compose(self._cn(int(count), c.devices, c.antennas))
