"""Bit error rates of Gray-mapped BPSK / square M-QAM: closed forms and a Monte Carlo link.

Owns the uncoded physical layer: symbol mapping (`modulate` / `demodulate`), exact AWGN BER, exact
average BER over Rayleigh fading, average BER over Nakagami-m fading (numerical, via Craig's
formula), and a vectorised Monte Carlo simulator used to check all of them.

SNR convention: every function takes the *symbol* SNR Es/N0 in dB unless called with
``snr_type="bit"``, in which case the argument is Eb/N0 and Es/N0 = Eb/N0 + 10 log10(k) with
k = bits per symbol. BPSK therefore has Es/N0 == Eb/N0; QPSK has Es/N0 = Eb/N0 + 3.01 dB.

Exact AWGN BER for square Gray M-QAM (QPSK = 4-QAM included) is the Cho & Yoon expression
(IEEE Trans. Commun., 50(7), 2002), a finite weighted sum of ``erfc(sqrt(c * Es/N0))`` terms. Because
the expression is linear in erfc terms, its Rayleigh average is exact too:
``E[erfc(sqrt(c g))] = 1 - sqrt(c gbar / (1 + c gbar))`` for exponentially distributed g.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import erfc

from ._validate import check_rng
from splitrl.errors import UsageError

Modulation = Literal["bpsk", "qpsk", "16qam", "64qam", "256qam"]
SnrType = Literal["symbol", "bit"]
FadingKind = Literal["awgn", "rayleigh"]

MODULATIONS: tuple[str, ...] = ("bpsk", "qpsk", "16qam", "64qam", "256qam")
_BITS = {"bpsk": 1, "qpsk": 2, "16qam": 4, "64qam": 6, "256qam": 8}


def _out(x: NDArray) -> float | NDArray:
    """Scalars in, float out; arrays in, arrays out."""
    return float(x) if np.ndim(x) == 0 else x


def bits_per_symbol(modulation: str) -> int:
    """Bits carried by one symbol of ``modulation``."""
    try:
        return _BITS[_norm(modulation)]
    except KeyError:
        raise UsageError(
            f"modulation = {modulation!r}: must be one of {', '.join(MODULATIONS)}"
        ) from None


def _norm(modulation: str) -> str:
    m = str(modulation).lower().replace("-", "").replace("_", "")
    return "qpsk" if m == "4qam" else m


def symbol_snr_linear(snr_db: ArrayLike, modulation: str, snr_type: SnrType = "symbol") -> NDArray:
    """Es/N0 (linear) from an SNR in dB that is Es/N0 (``"symbol"``) or Eb/N0 (``"bit"``)."""
    k = bits_per_symbol(modulation)
    g = 10.0 ** (np.asarray(snr_db, dtype=float) / 10.0)
    if snr_type == "symbol":
        return g
    if snr_type == "bit":
        return g * k
    raise UsageError(f"snr_type = {snr_type!r}: must be 'symbol' or 'bit'")


@lru_cache(maxsize=None)
def _erfc_terms(modulation: str) -> tuple[NDArray, NDArray]:
    """Weights w and scales c with BER(Es/N0 = g) = sum_j w_j erfc(sqrt(c_j g)) (exact, Gray)."""
    mod = _norm(modulation)
    k = bits_per_symbol(mod)
    if mod == "bpsk":
        return np.array([0.5]), np.array([1.0])
    M = 2**k
    L = int(round(np.sqrt(M)))
    half = k // 2  # bits per I/Q rail
    w: dict[int, float] = {}
    # Cho & Yoon (2002), eq. (14) with I = J = sqrt(M): per-rail bit position kk has its own
    # error probability P(kk); BER is their average over the log2(L) rail bits.
    for kk in range(1, half + 1):
        for i in range(int((1.0 - 2.0**-kk) * L)):
            t = (i * 2 ** (kk - 1)) // L
            coef = (-1) ** t * (2 ** (kk - 1) - int(np.floor(i * 2 ** (kk - 1) / L + 0.5)))
            w[i] = w.get(i, 0.0) + coef / (L * half)
    idx = np.array(sorted(w))
    weights = np.array([w[i] for i in idx])
    scales = (2 * idx + 1) ** 2 * 3.0 / (2.0 * (M - 1))
    keep = weights != 0.0
    return weights[keep], scales[keep]


def ber_awgn(
    snr_db: ArrayLike, modulation: str, snr_type: SnrType = "symbol"
) -> float | NDArray:
    """Exact bit error probability of Gray-mapped ``modulation`` over AWGN with coherent detection.

    BPSK: Q(sqrt(2 Es/N0)); QPSK: Q(sqrt(Es/N0)) = Q(sqrt(2 Eb/N0)); 16/64/256-QAM: Cho & Yoon.
    """
    g = symbol_snr_linear(snr_db, modulation, snr_type)
    w, c = _erfc_terms(_norm(modulation))
    out = np.tensordot(erfc(np.sqrt(np.multiply.outer(g, c))), w, axes=([-1], [0]))
    return _out(np.clip(out, 0.0, 0.5))


def ber_awgn_approx(
    snr_db: ArrayLike, modulation: str, snr_type: SnrType = "symbol"
) -> float | NDArray:
    """Nearest-neighbour approximation (4/k)(1 - 1/sqrt(M)) Q(sqrt(3 Es/N0 / (M-1))) for M-QAM.

    Kept for comparison with textbooks; `ber_awgn` is exact and should be preferred. For BPSK the
    approximation is the exact expression.
    """
    mod = _norm(modulation)
    g = symbol_snr_linear(snr_db, mod, snr_type)
    if mod == "bpsk":
        return _out(0.5 * erfc(np.sqrt(g)))
    k = bits_per_symbol(mod)
    M = 2**k
    q = 0.5 * erfc(np.sqrt(3.0 * g / (M - 1) / 2.0))
    return _out((4.0 / k) * (1.0 - 1.0 / np.sqrt(M)) * q)


def ber_rayleigh(
    mean_snr_db: ArrayLike, modulation: str, snr_type: SnrType = "symbol"
) -> float | NDArray:
    """Exact average BER over flat Rayleigh fading (perfect CSI), mean Es/N0 (or Eb/N0) in dB.

    BPSK: 0.5 (1 - sqrt(g/(1+g))) with g = mean Es/N0 = mean Eb/N0; QPSK the same with g = mean Eb/N0.
    QAM: the Cho & Yoon erfc sum averaged term by term, which is exact.
    """
    g = symbol_snr_linear(mean_snr_db, modulation, snr_type)
    w, c = _erfc_terms(_norm(modulation))
    cg = np.multiply.outer(g, c)
    return _out(np.tensordot(1.0 - np.sqrt(cg / (1.0 + cg)), w, axes=([-1], [0])))


# Gauss-Legendre nodes on [0, pi/2] for Craig's integral; the integrand is smooth and bounded, so
# 96 nodes give ~1e-10 relative accuracy over the SNR range of interest.
_GL_X, _GL_W = np.polynomial.legendre.leggauss(96)
_CRAIG_THETA = (np.pi / 4.0) * (_GL_X + 1.0)
_CRAIG_W = (np.pi / 4.0) * _GL_W


def ber_nakagami(
    mean_snr_db: ArrayLike, modulation: str, m: float, snr_type: SnrType = "symbol"
) -> float | NDArray:
    """Average BER over Nakagami-m fading (m >= 0.5), by numerical integration of Craig's form.

    erfc(sqrt(x)) = (2/pi) int_0^{pi/2} exp(-x / sin^2 t) dt, and the Nakagami-m MGF of the SNR gives
    E[exp(-s g)] = (1 + s gbar / m)^(-m); the remaining 1-D integral is done by Gauss-Legendre.
    m = 1 reproduces `ber_rayleigh`; m -> inf tends to `ber_awgn`.
    """
    if not np.isfinite(m) or m < 0.5:
        raise UsageError(f"m = {m!r}: must be a finite Nakagami parameter >= 0.5")
    g = symbol_snr_linear(mean_snr_db, modulation, snr_type)
    w, c = _erfc_terms(_norm(modulation))
    s2 = np.sin(_CRAIG_THETA) ** 2
    # shape (..., terms, nodes)
    x = np.multiply.outer(np.multiply.outer(g, c), 1.0 / s2)
    mgf = (1.0 + x / m) ** (-m)
    e_erfc = (2.0 / np.pi) * np.tensordot(mgf, _CRAIG_W, axes=([-1], [0]))
    return _out(np.tensordot(e_erfc, w, axes=([-1], [0])))


@lru_cache(maxsize=None)
def _pam_tables(bits_per_rail: int) -> tuple[NDArray, NDArray]:
    """Gray PAM tables: amplitude index by rail-bit word, and rail-bit word by amplitude index."""
    L = 2**bits_per_rail
    pos = np.arange(L)
    gray_of_pos = pos ^ (pos >> 1)  # adjacent amplitudes differ in exactly one bit
    pos_of_gray = np.empty(L, dtype=np.int64)
    pos_of_gray[gray_of_pos] = pos
    return pos_of_gray, gray_of_pos


def _scale(mod: str) -> float:
    """Amplitude scale giving unit average symbol energy."""
    if mod == "bpsk":
        return 1.0
    M = 2 ** bits_per_symbol(mod)
    return float(np.sqrt(3.0 / (2.0 * (M - 1))))


def _bits_to_int(bits: NDArray) -> NDArray:
    b = bits.shape[-1]
    weights = 1 << np.arange(b - 1, -1, -1)  # MSB first
    return bits.astype(np.int64) @ weights


def _int_to_bits(x: NDArray, b: int) -> NDArray:
    shifts = np.arange(b - 1, -1, -1)
    return ((x[..., None] >> shifts) & 1).astype(np.uint8)


def modulate(bits: ArrayLike, modulation: str) -> NDArray[np.complex128]:
    """Map bits (0/1, length a multiple of k) to unit-energy Gray symbols.

    For QAM the first k/2 bits of each symbol select the in-phase amplitude and the last k/2 the
    quadrature amplitude, each through a Gray-coded PAM, so nearest neighbours differ in one bit.
    """
    mod = _norm(modulation)
    k = bits_per_symbol(mod)
    b = np.asarray(bits)
    if b.ndim != 1 or b.size % k:
        raise UsageError(f"bits must be 1-D with length a multiple of {k} for {mod}, got {b.shape}")
    words = b.reshape(-1, k)
    if mod == "bpsk":
        return (2.0 * words[:, 0].astype(float) - 1.0).astype(np.complex128)
    half = k // 2
    L = 2**half
    pos_of_gray, _ = _pam_tables(half)
    i_pos = pos_of_gray[_bits_to_int(words[:, :half])]
    q_pos = pos_of_gray[_bits_to_int(words[:, half:])]
    s = _scale(mod)
    return s * ((2.0 * i_pos - (L - 1)) + 1j * (2.0 * q_pos - (L - 1)))


def _slice(y: NDArray, L: int) -> NDArray:
    """Nearest PAM amplitude index for unscaled rail samples (ML on AWGN, per rail)."""
    return np.clip(np.rint((y + (L - 1)) / 2.0), 0, L - 1).astype(np.int64)


def demodulate(symbols: ArrayLike, modulation: str) -> NDArray[np.uint8]:
    """Hard-decision minimum-distance demapping of equalised symbols back to bits."""
    mod = _norm(modulation)
    k = bits_per_symbol(mod)
    y = np.asarray(symbols)
    if mod == "bpsk":
        return (y.real > 0.0).astype(np.uint8)
    half = k // 2
    L = 2**half
    _, gray_of_pos = _pam_tables(half)
    s = _scale(mod)
    i_bits = _int_to_bits(gray_of_pos[_slice(y.real / s, L)], half)
    q_bits = _int_to_bits(gray_of_pos[_slice(y.imag / s, L)], half)
    return np.concatenate([i_bits, q_bits], axis=-1).reshape(-1)


@dataclass(frozen=True)
class BerEstimate:
    """Monte Carlo BER result: ``errors`` bit errors in ``bits`` transmitted bits."""

    errors: int
    bits: int

    @property
    def ber(self) -> float:
        return self.errors / self.bits if self.bits else float("nan")

    @property
    def std_error(self) -> float:
        """Binomial standard error of `ber` (Gray QAM errors are nearly independent per bit)."""
        p = self.ber
        return float(np.sqrt(p * (1.0 - p) / self.bits)) if self.bits else float("nan")


def simulate_ber(
    modulation: str,
    snr_db: float,
    n_bits: int,
    rng: np.random.Generator,
    *,
    fading: FadingKind = "awgn",
    snr_type: SnrType = "symbol",
    batch_bits: int = 1 << 20,
) -> BerEstimate:
    """Monte Carlo BER: random bits -> Gray symbols -> (h x) + CN(0, N0) -> y / h -> hard bits.

    ``fading="rayleigh"`` draws an independent h ~ CN(0, 1) per symbol (fast fading, perfect CSI,
    zero-forcing equalisation, which for a scalar channel is ML), so ``snr_db`` is the *mean* SNR.
    ``n_bits`` is rounded up to whole symbols; work is batched to bound memory.
    """
    check_rng(rng, "simulate_ber")
    if fading not in ("awgn", "rayleigh"):
        raise UsageError(f"fading = {fading!r}: must be 'awgn' or 'rayleigh'")
    mod = _norm(modulation)
    k = bits_per_symbol(mod)
    if n_bits < 1:
        raise UsageError(f"n_bits = {n_bits!r}: must be >= 1")
    g = float(symbol_snr_linear(snr_db, mod, snr_type))
    sigma = np.sqrt(0.5 / g)  # per-dimension std of CN(0, N0) with Es = 1
    n_sym_total = -(-int(n_bits) // k)
    per_batch = max(1, int(batch_bits) // k)
    errors = 0
    done = 0
    while done < n_sym_total:
        n_sym = min(per_batch, n_sym_total - done)
        bits = rng.integers(0, 2, size=n_sym * k, dtype=np.uint8)
        x = modulate(bits, mod)
        noise = sigma * (rng.standard_normal(n_sym) + 1j * rng.standard_normal(n_sym))
        if fading == "rayleigh":
            h = np.sqrt(0.5) * (rng.standard_normal(n_sym) + 1j * rng.standard_normal(n_sym))
            y = (h * x + noise) / h
        else:
            y = x + noise
        errors += int(np.count_nonzero(demodulate(y, mod) != bits))
        done += n_sym
    return BerEstimate(errors=errors, bits=n_sym_total * k)
