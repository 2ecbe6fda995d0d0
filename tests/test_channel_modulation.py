"""BER closed forms vs Monte Carlo for Gray BPSK/QPSK/M-QAM over AWGN and Rayleigh fading."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erfc

from splitrl.channel.modulation import (
    MODULATIONS,
    ber_awgn,
    ber_awgn_approx,
    ber_nakagami,
    ber_rayleigh,
    bits_per_symbol,
    demodulate,
    modulate,
    simulate_ber,
)


def _q(x):
    return 0.5 * erfc(np.asarray(x) / np.sqrt(2.0))


# Monte Carlo sizing: n_bits = 3000 / BER gives ~3000 expected errors, a binomial relative standard
# error of 1/sqrt(3000) = 1.8 %; the 10 % tolerance is > 5 sigma even allowing for the mild
# error clustering of Gray QAM (a symbol error flips one bit almost always at these SNRs).
_EXPECTED_ERRORS = 3000
_REL_TOL = 0.10


@pytest.mark.parametrize(
    ("mod", "snr_db"),
    [("bpsk", 6.0), ("qpsk", 9.0), ("16qam", 15.0), ("16qam", 12.0), ("64qam", 21.0)],
)
def test_awgn_monte_carlo_matches_closed_form(mod, snr_db):
    theory = float(ber_awgn(snr_db, mod))
    assert 1e-3 <= theory <= 3e-2  # the regime the tolerance is sized for
    n_bits = int(_EXPECTED_ERRORS / theory)
    est = simulate_ber(mod, snr_db, n_bits, np.random.default_rng(11))
    assert est.errors > 1000
    assert est.ber == pytest.approx(theory, rel=_REL_TOL)


@pytest.mark.parametrize(("mod", "snr_db"), [("bpsk", 17.0), ("qpsk", 20.0), ("16qam", 26.0)])
def test_rayleigh_monte_carlo_matches_closed_form(mod, snr_db):
    theory = float(ber_rayleigh(snr_db, mod))
    assert 1e-3 <= theory <= 3e-2
    n_bits = int(_EXPECTED_ERRORS / theory)
    est = simulate_ber(mod, snr_db, n_bits, np.random.default_rng(12), fading="rayleigh")
    assert est.ber == pytest.approx(theory, rel=_REL_TOL)


def test_textbook_forms_bpsk_qpsk_and_per_bit_snr():
    g_db = np.array([0.0, 4.0, 8.0])
    g = 10 ** (g_db / 10)
    # BPSK: Es/N0 == Eb/N0, BER = Q(sqrt(2 g)); QPSK: BER = Q(sqrt(Es/N0)) = Q(sqrt(2 Eb/N0)).
    np.testing.assert_allclose(ber_awgn(g_db, "bpsk"), _q(np.sqrt(2 * g)), rtol=1e-12)
    np.testing.assert_allclose(ber_awgn(g_db, "qpsk"), _q(np.sqrt(g)), rtol=1e-12)
    np.testing.assert_allclose(
        ber_awgn(g_db, "qpsk", snr_type="bit"), ber_awgn(g_db, "bpsk"), rtol=1e-12
    )
    # Rayleigh: 0.5 (1 - sqrt(gb / (1 + gb))) with gb the mean per-bit SNR.
    np.testing.assert_allclose(ber_rayleigh(g_db, "bpsk"), 0.5 * (1 - np.sqrt(g / (1 + g))), rtol=1e-12)
    gb = g / 2  # QPSK: Eb = Es / 2
    np.testing.assert_allclose(ber_rayleigh(g_db, "qpsk"), 0.5 * (1 - np.sqrt(gb / (1 + gb))), rtol=1e-12)


def test_exact_16qam_matches_known_expression_and_approximation_at_high_snr():
    g_db = np.array([5.0, 10.0, 20.0])
    g = 10 ** (g_db / 10)
    exact = 0.375 * erfc(np.sqrt(g / 10)) + 0.25 * erfc(np.sqrt(0.9 * g)) - 0.125 * erfc(np.sqrt(2.5 * g))
    np.testing.assert_allclose(ber_awgn(g_db, "16qam"), exact, rtol=1e-12)
    # the nearest-neighbour approximation is not exact at low SNR but converges at high SNR
    assert abs(ber_awgn_approx(5.0, "64qam") / ber_awgn(5.0, "64qam") - 1) > 0.1
    for mod in ("16qam", "64qam", "256qam"):
        assert ber_awgn_approx(30.0, mod) == pytest.approx(float(ber_awgn(30.0, mod)), rel=1e-6)


def test_nakagami_average_reduces_to_rayleigh_and_tends_to_awgn():
    snr = np.array([0.0, 10.0, 20.0])
    for mod in ("bpsk", "16qam"):
        np.testing.assert_allclose(ber_nakagami(snr, mod, 1.0), ber_rayleigh(snr, mod), rtol=1e-8)
        bers = [float(ber_nakagami(10.0, mod, m)) for m in (0.5, 1.0, 2.0, 8.0)]
        assert all(a > b for a, b in zip(bers, bers[1:]))  # less fading, fewer errors
        assert bers[-1] > float(ber_awgn(10.0, mod))
    assert float(ber_nakagami(8.0, "bpsk", 500.0)) == pytest.approx(float(ber_awgn(8.0, "bpsk")), rel=0.05)


def test_ber_monotone_in_snr_and_order():
    snr = np.linspace(-5, 20, 51)  # BPSK BER underflows to 0 past ~27 dB
    for mod in MODULATIONS:
        for f in (ber_awgn, ber_rayleigh):
            b = f(snr, mod)
            assert np.all(np.diff(b) < 0)
    # at equal Eb/N0, higher order has higher BER (BPSK == QPSK per bit)
    eb = 10.0
    per_bit = [float(ber_awgn(eb, m, snr_type="bit")) for m in ("qpsk", "16qam", "64qam", "256qam")]
    assert all(a < b for a, b in zip(per_bit, per_bit[1:]))


@pytest.mark.parametrize("mod", MODULATIONS)
def test_constellation_unit_energy_gray_and_round_trip(mod):
    k = bits_per_symbol(mod)
    words = ((np.arange(2**k)[:, None] >> np.arange(k - 1, -1, -1)) & 1).astype(np.uint8)
    pts = modulate(words.reshape(-1), mod)
    assert len(set(np.round(pts, 9))) == 2**k
    assert np.mean(np.abs(pts) ** 2) == pytest.approx(1.0, rel=1e-12)
    np.testing.assert_array_equal(demodulate(pts, mod), words.reshape(-1))
    # Gray: every nearest neighbour differs in exactly one bit
    d = np.abs(pts[:, None] - pts[None, :])
    np.fill_diagonal(d, np.inf)
    dmin = d.min()
    for i, j in zip(*np.nonzero(np.isclose(d, dmin))):
        assert np.sum(words[i] != words[j]) == 1


def test_monte_carlo_is_deterministic_per_seed():
    a = simulate_ber("16qam", 10.0, 20000, np.random.default_rng(5))
    b = simulate_ber("16qam", 10.0, 20000, np.random.default_rng(5))
    c = simulate_ber("16qam", 10.0, 20000, np.random.default_rng(6))
    assert a == b
    assert a != c


def test_bad_arguments():
    with pytest.raises(ValueError, match="modulation"):
        ber_awgn(10.0, "8psk")
    with pytest.raises(ValueError, match="snr_type"):
        ber_awgn(10.0, "qpsk", snr_type="esn0")
    with pytest.raises(TypeError, match="Generator"):
        simulate_ber("qpsk", 10.0, 100, 42)
    with pytest.raises(ValueError, match="multiple of 4"):
        modulate(np.zeros(6, dtype=np.uint8), "16qam")
