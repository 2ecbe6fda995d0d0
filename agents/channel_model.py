"""An online model of the channel's SNR dynamics, learned from the SNRs the agent observes.

AR(1) in dB: ``snr[t+1] = mu + phi * (snr[t] - mu) + e``, ``e ~ N(0, sigma^2)``, fitted by
exponentially-forgotten least squares so that when the channel's statistics change (a user walks
away, a trace's mean drops) the estimates follow within ~1/(1 - forgetting) observations. The
forecast gives the mean and standard deviation of the SNR h steps ahead, which the planner turns
into expected rewards with Gauss-Hermite quadrature. Observing SNR is free: no real evaluation.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from splitrl.errors import UsageError


@dataclass
class AR1State:
    """Sufficient statistics of the forgotten least-squares fit (JSON-serialisable)."""

    n: float = 0.0
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0
    syy: float = 0.0
    last: float | None = None
    observed: int = 0


class AR1ChannelModel:
    """AR(1) SNR predictor with forgetting and prior-shrunk estimates.

    Args:
        forgetting: weight kept per new observation, in (0, 1]; 1 = never forget.
        prior_mean_db, prior_std_db, prior_phi: estimates used before enough data (and shrunk toward).
        prior_strength: pseudo-observations behind the prior (>= 0).
    """

    def __init__(self, forgetting: float = 0.98, prior_mean_db: float = 15.0, prior_std_db: float = 8.0,
                 prior_phi: float = 0.5, prior_strength: float = 5.0) -> None:
        if not 0 < forgetting <= 1:
            raise UsageError(f"forgetting must be in (0, 1], got {forgetting}")
        if not -1 < prior_phi < 1:
            raise UsageError(f"prior_phi must be in (-1, 1), got {prior_phi}")
        if prior_std_db <= 0 or prior_strength < 0:
            raise UsageError("prior_std_db must be > 0 and prior_strength >= 0")
        self.forgetting = forgetting
        self.prior = (prior_mean_db, prior_std_db, prior_phi, prior_strength)
        self.state = AR1State()

    def observe(self, snr_db: float) -> None:
        """Add one observed SNR (consecutive calls are consecutive slots)."""
        x = float(snr_db)
        s = self.state
        if s.last is not None:
            lam = self.forgetting
            for k in ("n", "sx", "sy", "sxx", "sxy", "syy"):
                setattr(s, k, getattr(s, k) * lam)
            s.n += 1
            s.sx += s.last
            s.sy += x
            s.sxx += s.last * s.last
            s.sxy += s.last * x
            s.syy += x * x
        s.last = x
        s.observed += 1

    def reset_episode(self) -> None:
        """A new episode starts elsewhere in time: keep the statistics, drop the last sample."""
        self.state.last = None

    @property
    def params(self) -> tuple[float, float, float]:
        """(mu, phi, sigma) — the fitted stationary mean, lag-1 coefficient and innovation std."""
        s = self.state
        m0, sd0, phi0, k0 = self.prior
        if s.n < 2:
            return m0, phi0, sd0 * math.sqrt(1 - phi0**2)
        mx, my = s.sx / s.n, s.sy / s.n
        vxx = max(s.sxx / s.n - mx * mx, 1e-9)
        cxy = s.sxy / s.n - mx * my
        vyy = max(s.syy / s.n - my * my, 1e-9)
        w = s.n / (s.n + k0)  # shrink toward the prior while data is scarce
        phi = min(max(w * cxy / vxx + (1 - w) * phi0, -0.99), 0.99)  # scalar math: every decision runs this
        mean_level = w * my + (1 - w) * m0
        resid = max(vyy - (cxy * cxy) / vxx, 1e-6)
        sigma = math.sqrt(w * resid + (1 - w) * (sd0**2) * (1 - phi0**2))
        # AR(1) mean: y = c + phi x with c = my - phi mx, so mu = c / (1 - phi).
        c = my - (cxy / vxx) * mx if w > 0 else m0 * (1 - phi)
        mu = float(w * (c / (1 - phi)) + (1 - w) * m0) if abs(1 - phi) > 1e-3 else float(mean_level)
        return mu, phi, sigma

    def forecast(self, current_db: float, horizon: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of the SNR at steps 0..horizon-1 ahead of ``current_db`` (step 0 is known)."""
        mu, phi, sigma = self.params
        h = np.arange(horizon)
        mean = mu + (phi**h) * (float(current_db) - mu)
        var = sigma**2 * (1 - phi ** (2 * h)) / max(1 - phi**2, 1e-9)
        return mean, np.sqrt(np.maximum(var, 0.0))

    def state_dict(self) -> dict:
        return {"state": asdict(self.state), "forgetting": self.forgetting, "prior": list(self.prior)}

    def load_state_dict(self, d: dict) -> None:
        self.forgetting = float(d["forgetting"])
        self.prior = tuple(float(v) for v in d["prior"])
        self.state = AR1State(**d["state"])
