"""Fast-timescale transceiver design: transmit scalars b_n and receive combiner m per channel block.

Signal model (one complex channel use, unit-power symbols s_n, E|s_n|^2 = 1, independent):

    y = sum_n h_n b_n s_n + z,  z ~ CN(0, sigma^2 I_M),  |b_n|^2 <= P_n,
    f_hat = m^H y / sqrt(eta)   estimates   f = sum_n s_n.

Given the combiner m, the zero-forcing (channel-inverting) precoders
b_n = sqrt(eta) (m^H h_n)^* / |m^H h_n|^2 align every device exactly (m^H h_n b_n = sqrt(eta)), the
power limits allow at most eta = min_n P_n |m^H h_n|^2, and the error is the receiver noise only:

    MSE(m) = sigma^2 ||m||^2 / min_n P_n |m^H h_n|^2.

M = 1 (m = 1): MSE = sigma^2 / min_n P_n |h_n|^2 (closed form, optimal). One device: m = h gives
sigma^2 / (P ||h||^2) (optimal by Cauchy-Schwarz). For M > 1 minimising MSE(m) is the non-convex
QCQP  min ||m||^2 s.t. P_n |m^H h_n|^2 >= 1; its semidefinite relaxation (X = m m^H, drop rank 1)

    min tr(X)  s.t.  P_n h_n^H X h_n >= 1,  X >= 0

is solved with cvxpy (Clarabel, SCS as fallback); sigma^2 tr(X*) is a lower bound on the MSE of any
combiner, and Gaussian randomisation (candidates xi ~ CN(0, X*)) recovers a rank-one m. The
candidate pool also contains the closed-form baselines, so the SDR design is never worse than them
on the same channel (by construction, and tested).

Baselines: ``mr`` — maximum-ratio combining of the sum of the normalised channels,
m = sum_n h_n / ||h_n||; ``eig`` — the simple closed form m = principal eigenvector of
sum_n h_n h_n^H / (P_n ||h_n||^4) (weights the weak devices, which set eta); ``weakest`` — m = h of
the device with the smallest P_n ||h_n||^2 (optimal when it alone sets eta; exact for N = 1).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from splitrl.errors import UsageError

__all__ = ["DESIGNS", "Transceiver", "design", "monte_carlo_mse", "sdr_bound_and_cov", "zf_transceiver"]

DESIGNS: tuple[str, ...] = ("closed", "mr", "eig", "weakest", "sdr")


@dataclass(frozen=True)
class Transceiver:
    """One block's design. ``mse`` is per complex channel use with unit-power symbols.

    Attributes:
        m: receive combiner [M] (complex).
        b: transmit scalars [N] (complex), |b_n|^2 <= P_n.
        eta: the alignment factor (the estimate is m^H y / sqrt(eta)); inf when noiseless.
        mse: sigma^2 ||m||^2 / eta.
        gains: effective normalised gains m^H h_n b_n / sqrt(eta) [N]; exactly 1 for ZF precoders.
        method: which design produced it.
        lower_bound: sigma^2 tr(X*) of the SDR (None for the closed forms).
    """

    m: NDArray[np.complex128]
    b: NDArray[np.complex128]
    eta: float
    mse: float
    gains: NDArray[np.complex128]
    method: str
    lower_bound: float | None = None


def _mse_of(cands: NDArray[np.complex128], h: NDArray[np.complex128], p: NDArray[np.float64], sigma2: float):
    """MSE of ZF transceivers for candidate combiners cands [L, M] on H [N, M]: returns [L]."""
    mh = cands.conj() @ h.T                                                        # [L, N] = m^H h_n
    eta = np.min(p[None, :] * np.abs(mh) ** 2, axis=1)                             # [L]
    norm2 = np.sum(np.abs(cands) ** 2, axis=1)                                     # [L]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(eta > 0, sigma2 * norm2 / eta, np.inf)


def zf_transceiver(h: NDArray[np.complex128], p: NDArray[np.float64], sigma2: float,
                   m: NDArray[np.complex128], method: str, lower_bound: float | None = None) -> Transceiver:
    """The ZF precoders for combiner ``m`` on H [N, M] with power limits ``p`` [N]."""
    h = np.asarray(h, dtype=np.complex128)
    m = np.asarray(m, dtype=np.complex128).reshape(-1)
    ones = np.ones(h.shape[0], dtype=np.complex128)
    mh = h @ m.conj()                                                              # [N] = m^H h_n
    if not np.all(np.isfinite(p)) or sigma2 == 0.0:
        # Noiseless: any common eta works; report eta = inf, MSE 0 and unit gains.
        return Transceiver(m, ones.copy(), math.inf, 0.0, ones, method, lower_bound)
    eta = float(np.min(p * np.abs(mh) ** 2))
    if eta <= 0.0:
        return Transceiver(m, np.zeros_like(ones), 0.0, math.inf, ones, method, lower_bound)
    b = math.sqrt(eta) * mh.conj() / np.abs(mh) ** 2
    mse = sigma2 * float(np.vdot(m, m).real) / eta
    return Transceiver(m, b, eta, mse, ones, method, lower_bound)


def _baselines(h: NDArray[np.complex128], p: NDArray[np.float64]) -> dict[str, NDArray[np.complex128]]:
    norms = np.linalg.norm(h, axis=1)                                              # [N]
    safe = np.where(norms > 0, norms, 1.0)
    mr = np.sum(h / safe[:, None], axis=0)
    if not np.any(np.abs(mr) > 0):
        mr = h[0]
    pf = np.where(np.isfinite(p), p, 1.0)
    weights = 1.0 / np.maximum(pf * safe ** 4, 1e-300)                             # [N]
    cov = (h.T * weights) @ h.conj()                                               # [M, M] sum_n w_n h_n h_n^H
    _, vecs = np.linalg.eigh(cov)
    weakest = h[int(np.argmin(pf * norms ** 2))]
    return {"mr": mr, "eig": vecs[:, -1], "weakest": weakest}


def sdr_bound_and_cov(h: NDArray[np.complex128], p: NDArray[np.float64]) -> NDArray[np.complex128]:
    """X* of  min tr X  s.t.  P_n h_n^H X h_n >= 1, X >= 0  (cvxpy; Clarabel then SCS)."""
    import cvxpy as cp

    n, m = h.shape
    # Rescale so the constraint data are O(1): Q_n = P_n h_n h_n^H / s, and X = Y / s.
    q = [p[i] * np.outer(h[i], h[i].conj()) for i in range(n)]
    s = float(np.mean([np.trace(qi).real for qi in q]))
    y = cp.Variable((m, m), hermitian=True)
    cons = [y >> 0] + [cp.real(cp.trace(qi / s @ y)) >= 1.0 for qi in q]
    prob = cp.Problem(cp.Minimize(cp.real(cp.trace(y))), cons)
    last: Exception | None = None
    for solver in ("CLARABEL", "SCS"):
        try:
            with warnings.catch_warnings():  # "optimal_inaccurate" is accepted; the bound is reported as is
                warnings.simplefilter("ignore", UserWarning)
                prob.solve(solver=solver)
        except Exception as e:  # a solver failing numerically: try the next one
            last = e
            continue
        if prob.status in ("optimal", "optimal_inaccurate") and y.value is not None:
            x = np.asarray(y.value) / s
            return (x + x.conj().T) / 2.0
    raise RuntimeError(f"SDR transceiver design failed (status {prob.status}): {last}")


def design(
    h: NDArray[np.complex128],
    p: NDArray[np.float64],
    sigma2: float,
    method: str = "sdr",
    *,
    rng: np.random.Generator | None = None,
    randomizations: int = 64,
) -> Transceiver:
    """The transceiver for channel H [N, M], power limits ``p`` [N] and noise variance ``sigma2``.

    ``closed`` is the M = 1 closed form (m = 1) and for M > 1 an alias of ``eig``; ``sdr`` solves the
    relaxation (M > 1; M = 1 is already optimal in closed form) with ``randomizations`` Gaussian
    candidates from ``rng`` and keeps the best of them and the baselines.
    """
    if method not in DESIGNS:
        raise UsageError(f"design: one of {', '.join(DESIGNS)}, got {method!r}")
    h = np.atleast_2d(np.asarray(h, dtype=np.complex128))
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    if p.shape[0] != h.shape[0]:
        raise UsageError(f"power limits: one per device ({h.shape[0]}), got {p.shape[0]}")
    n, m = h.shape
    if m == 1:  # every design coincides with the optimal closed form
        return zf_transceiver(h, p, sigma2, np.ones(1, dtype=np.complex128), method)
    base = _baselines(h, p)
    if method == "closed":
        return zf_transceiver(h, p, sigma2, base["eig"], method)
    if method in base:
        return zf_transceiver(h, p, sigma2, base[method], method)
    if not np.all(np.isfinite(p)) or sigma2 == 0.0:
        return zf_transceiver(h, p, sigma2, base["eig"], method, 0.0)
    x = sdr_bound_and_cov(h, p)
    rng = rng if rng is not None else np.random.default_rng(0)
    vals, vecs = np.linalg.eigh(x)
    root = vecs * np.sqrt(np.clip(vals, 0.0, None))[None, :]                      # X = root root^H
    w = (rng.standard_normal((randomizations, m)) + 1j * rng.standard_normal((randomizations, m))) / math.sqrt(2)
    cands = np.concatenate([vecs[:, -1][None, :], w @ root.T, np.stack(list(base.values()))], axis=0)  # [L, M]
    mses = _mse_of(cands, h, p, sigma2)
    best = cands[int(np.argmin(mses))]
    lb = sigma2 * float(np.trace(x).real)
    return zf_transceiver(h, p, sigma2, best, method, lb)


def monte_carlo_mse(
    h: NDArray[np.complex128], tx: Transceiver, sigma2: float, draws: int, rng: np.random.Generator,
) -> float:
    """Empirical E|f_hat - f|^2 of the signal model itself over ``draws`` channel uses.

    Draws unit-power complex Gaussian symbols s [draws, N] and noise z ~ CN(0, sigma^2 I_M), forms
    y = sum_n h_n b_n s_n + z and f_hat = m^H y / sqrt(eta) — nothing from the closed form is used.
    """
    h = np.atleast_2d(np.asarray(h, dtype=np.complex128))
    n, m = h.shape

    def cn(*shape: int) -> NDArray[np.complex128]:
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / math.sqrt(2.0)

    s = cn(draws, n)                                                               # [S, N]
    z = math.sqrt(sigma2) * cn(draws, m)                                           # [S, M]
    y = (s * tx.b[None, :]) @ h + z                                                # [S, M] = sum_n h_n b_n s_n + z
    f_hat = (y @ tx.m.conj()) / math.sqrt(tx.eta)                                  # [S]
    return float(np.mean(np.abs(f_hat - s.sum(axis=1)) ** 2))
