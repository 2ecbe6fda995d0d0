"""Link budget, fading marginals (Nakagami/Rician moments) and time correlation of the SNR process."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import j0

from splitrl.channel.fading import (
    CorrelatedFadingChannel,
    CorrelatedFadingConfig,
    LinkBudget,
    amount_of_fading,
    doppler_hz,
    free_space_path_loss_db,
    gudmundson_correlation,
    jakes_correlation,
    log_distance_path_loss_db,
    mean_snr_db,
    thermal_noise_dbm,
)


def _chan(seed=0, **kw):
    return CorrelatedFadingChannel(CorrelatedFadingConfig(**kw), np.random.default_rng(seed))


def _lag1(x):
    return float(np.corrcoef(x[1:], x[:-1])[0, 1])


# --- large scale -------------------------------------------------------------------------------

def test_link_budget_components():
    assert thermal_noise_dbm(1.0) == -174.0
    assert thermal_noise_dbm(20e6, 7.0) == pytest.approx(-174 + 73.0103 + 7, abs=1e-4)
    # Friis at 1 m, 3.5 GHz: 20 log10(4 pi f / c) = 43.33 dB
    assert free_space_path_loss_db(1.0, 3.5e9) == pytest.approx(43.329, abs=1e-3)
    assert free_space_path_loss_db(2.0, 3.5e9) - free_space_path_loss_db(1.0, 3.5e9) == pytest.approx(
        20 * math.log10(2)
    )
    pl = log_distance_path_loss_db(100.0, 3.5, ref_distance_m=1.0, carrier_hz=3.5e9)
    assert pl == pytest.approx(43.329 + 70.0, abs=1e-3)
    assert log_distance_path_loss_db(1000.0, 2.0, ref_distance_m=10.0, ref_loss_db=60.0) == pytest.approx(100.0)
    snr = mean_snr_db(23.0, 100.0, 20e6, carrier_hz=3.5e9, noise_figure_db=5.0, path_loss_exponent=3.5)
    assert snr == pytest.approx(23.0 - (43.329 + 70.0) - (-174 + 73.0103 + 5.0), abs=1e-3)


def test_awgn_link_budget_channel_is_constant_at_budget_snr():
    lb = LinkBudget(tx_power_dbm=20.0, distance_m=50.0, bandwidth_hz=10e6)
    ch = _chan(fading="none", link_budget=lb)
    x = ch.sample(50)
    assert np.all(x == lb.mean_snr_db(3.5e9))
    assert ch.step().snr_db == lb.mean_snr_db(3.5e9)


# --- marginals ---------------------------------------------------------------------------------

# Nakagami power gain g ~ Gamma(m, 1/m): E[g] = 1 and E[g^2]/E[g]^2 = 1 + 1/m (amount of fading 1/m).
# With n = 200k i.i.d. slots the worst case m = 0.5 has sd(g^2) = sqrt(105 - 9) = 9.8, i.e. a relative
# standard error of 9.8 / 3 / sqrt(2e5) = 0.73 % on E[g^2]; 4 % is > 5 sigma.
N_IID = 200_000


@pytest.mark.parametrize("m", [0.5, 1.0, 2.0, 4.0])
def test_nakagami_moments(m):
    ch = _chan(fading="nakagami", nakagami_m=m, correlation=0.0, mean_snr_db=0.0)
    d = ch.sample_detail(N_IID)
    g = d.power_gain  # g = r^2 with r the Nakagami envelope
    assert d.gain is None
    assert g.mean() == pytest.approx(1.0, rel=0.02)  # Omega = E[r^2] = 1
    assert np.mean(g**2) / g.mean() ** 2 == pytest.approx(1.0 + 1.0 / m, rel=0.04)
    assert amount_of_fading(ch.config) == pytest.approx(1.0 / m)
    np.testing.assert_allclose(d.snr_db, 10 * np.log10(g))


@pytest.mark.parametrize("m", [1.7, 3.0])
def test_nakagami_copula_marginal(m):
    ch = _chan(fading="nakagami", nakagami_m=m, nakagami_method="copula", correlation=0.0)
    g = ch.sample_detail(N_IID).power_gain
    assert g.mean() == pytest.approx(1.0, rel=0.02)
    assert np.mean(g**2) / g.mean() ** 2 == pytest.approx(1.0 + 1.0 / m, rel=0.04)
    # exact Gamma quantiles: the median of Gamma(m, 1/m) via the CDF
    from scipy.stats import gamma

    assert np.median(g) == pytest.approx(gamma.median(m, scale=1 / m), rel=0.02)


@pytest.mark.parametrize("k", [0.0, 1.0, 5.0, 10.0])
def test_rician_moments(k):
    ch = _chan(fading="rician", rician_k=k, correlation=0.0)
    d = ch.sample_detail(N_IID)
    g = np.abs(d.gain) ** 2
    np.testing.assert_allclose(g, d.power_gain)
    af = (1 + 2 * k) / (1 + k) ** 2
    assert amount_of_fading(ch.config) == pytest.approx(af)
    assert g.mean() == pytest.approx(1.0, rel=0.01)
    assert np.var(g) / g.mean() ** 2 == pytest.approx(af, rel=0.05)
    # the LOS component: |E[h]|^2 = K / (K + 1)
    assert abs(d.gain.mean()) ** 2 == pytest.approx(k / (k + 1), abs=0.01)


def test_rayleigh_marginal_is_exponential():
    g = _chan(fading="rayleigh", correlation=0.0).sample_detail(N_IID).power_gain
    for q in (0.1, 0.5, 0.9):  # P(g <= x) = 1 - exp(-x)
        assert np.mean(g <= -math.log(1 - q)) == pytest.approx(q, abs=0.005)


def test_stationary_start_after_reset():
    # With rho close to 1 a non-stationary start would bias the first slots; slot 0 after each reset
    # must already be Exp(1) in power. 3000 resets: sd of the mean is 1/sqrt(3000) = 0.018.
    ch = _chan(fading="rayleigh", correlation=0.999)
    first = []
    for _ in range(3000):
        ch.reset()
        first.append(ch.sample_detail(1).power_gain[0])
    assert np.mean(first) == pytest.approx(1.0, abs=0.08)


# --- time correlation --------------------------------------------------------------------------

def test_jakes_rho_from_mobility():
    v, fc, t = 3.0, 3.5e9, 1e-3
    fd = v * fc / 299_792_458.0
    assert doppler_hz(v, fc) == pytest.approx(fd)
    assert jakes_correlation(v, fc, t) == pytest.approx(float(j0(2 * np.pi * fd * t)))
    cfg = CorrelatedFadingConfig(speed_mps=v, carrier_hz=fc, slot_s=t)
    assert cfg.fading_correlation == pytest.approx(float(j0(2 * np.pi * fd * t)))
    assert CorrelatedFadingConfig(speed_mps=0.0).fading_correlation == 1.0
    assert CorrelatedFadingConfig(speed_mps=30.0, correlation=0.3).fading_correlation == 0.3


def _complex_lag1(h):
    hc = h - h.mean()
    return complex(np.vdot(hc[:-1], hc[1:]) / np.vdot(hc, hc).real)


# Sample lag-1 autocorrelation of an AR(1) has sd ~ sqrt((1 - rho^2) / n); with n = 100k and
# rho = 0.7 that is 0.0023, with rho = J0(...) = 0.988 it is 0.0005. Tolerances are >= 5 sigma.
N_CORR = 100_000


@pytest.mark.parametrize(("fading", "k"), [("rayleigh", 0.0), ("rician", 3.0)])
def test_complex_gain_lag1_equals_rho(fading, k):
    ch = _chan(fading=fading, rician_k=k, correlation=0.7)
    r = _complex_lag1(ch.sample_detail(N_CORR).gain)
    assert r.real == pytest.approx(0.7, abs=0.012)
    assert abs(r.imag) < 0.012


def test_complex_gain_lag1_equals_jakes_rho():
    ch = _chan(fading="rayleigh", speed_mps=3.0, carrier_hz=3.5e9, slot_s=1e-3)
    rho = ch.config.fading_correlation
    assert 0.95 < rho < 0.999
    r = _complex_lag1(ch.sample_detail(N_CORR).gain)
    assert r.real == pytest.approx(rho, abs=0.003)


# Power-domain correlations are estimated from heavier-tailed series; 0.02 is still > 4 sigma at
# n = 100k, and rho (0.8) vs rho^2 (0.64) differ by 8x the tolerance, so the test tells them apart.
@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"fading": "rayleigh"}, 0.8**2),
        ({"fading": "nakagami", "nakagami_m": 2.0}, 0.8**2),
        ({"fading": "nakagami", "nakagami_m": 0.5}, 0.8**2),
        ({"fading": "rician", "rician_k": 2.0}, (0.8**2 + 2 * 2.0 * 0.8) / (1 + 2 * 2.0)),
    ],
)
def test_power_gain_lag1_correlation(kw, expected):
    ch = _chan(correlation=0.8, **kw)
    assert ch.config.power_gain_correlation() == pytest.approx(expected)
    g = ch.sample_detail(N_CORR).power_gain
    assert _lag1(g) == pytest.approx(expected, abs=0.02)


def test_copula_power_correlation_is_close_to_rho_squared():
    ch = _chan(fading="nakagami", nakagami_m=1.7, correlation=0.8)
    assert ch.config.power_gain_correlation() is None  # not exact, so not claimed
    assert _lag1(ch.sample_detail(N_CORR).power_gain) == pytest.approx(0.64, abs=0.05)


def test_block_fading_when_rho_is_one():
    ch = _chan(fading="rayleigh", speed_mps=0.0)
    a = ch.sample(20)
    assert np.all(a == a[0])
    ch.reset()
    b = ch.sample(5)
    assert np.all(b == b[0]) and b[0] != a[0]


def test_gudmundson_shadowing():
    # rho_s = exp(-v T / d) = exp(-0.2) = 0.82; effective sample size n (1 - rho)/(1 + rho) ~ 10k, so
    # the sample std has ~0.7 % relative error and the lag-1 estimate sd ~0.002.
    v, t, d = 10.0, 0.1, 5.0
    assert gudmundson_correlation(v, t, d) == pytest.approx(math.exp(-0.2))
    ch = _chan(
        fading="none", mean_snr_db=5.0, shadowing_sigma_db=6.0, shadowing_decorr_m=d,
        speed_mps=v, slot_s=t,
    )
    det = ch.sample_detail(N_CORR)
    np.testing.assert_allclose(det.snr_db, 5.0 + det.shadowing_db)
    assert np.std(det.shadowing_db) == pytest.approx(6.0, rel=0.04)
    assert _lag1(det.shadowing_db) == pytest.approx(math.exp(-0.2), abs=0.01)


# --- determinism and API -----------------------------------------------------------------------

@pytest.mark.parametrize(
    "kw",
    [
        {"fading": "rayleigh", "shadowing_sigma_db": 4.0},
        {"fading": "rician", "rician_k": 2.0},
        {"fading": "nakagami", "nakagami_m": 2.5},
        {"fading": "nakagami", "nakagami_m": 1.3},
    ],
)
def test_determinism_and_step_sample_equivalence(kw):
    a = _chan(seed=7, **kw).sample(500)
    b = _chan(seed=7, **kw).sample(500)
    c = _chan(seed=8, **kw).sample(500)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    ch = _chan(seed=7, **kw)
    stepped = [ch.step().snr_db for _ in range(200)] + list(ch.sample(300))
    np.testing.assert_array_equal(stepped, a)


def test_reset_with_new_generator_reproduces():
    ch = _chan(seed=1, fading="rayleigh", shadowing_sigma_db=3.0)
    ch.reset(np.random.default_rng(99))
    a = ch.sample(100)
    ch.reset(np.random.default_rng(99))
    np.testing.assert_array_equal(ch.sample(100), a)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"fading": "lognormal"}, "fading"),
        ({"nakagami_m": 0.3}, "nakagami_m"),
        ({"rician_k": -1.0}, "rician_k"),
        ({"speed_mps": -1.0}, "speed_mps"),
        ({"slot_s": 0.0}, "slot_s"),
        ({"correlation": 1.5}, "correlation"),
        ({"shadowing_sigma_db": float("nan")}, "shadowing_sigma_db"),
        ({"mean_snr_db": 10.0, "link_budget": LinkBudget()}, "mean_snr_db"),
        ({"nakagami_m": 1.3, "nakagami_method": "sum_of_squares"}, "nakagami_m"),
    ],
)
def test_config_validation_names_field(kw, field):
    with pytest.raises(ValueError, match=rf"CorrelatedFadingConfig\.{field} = "):
        CorrelatedFadingConfig(**kw)


def test_link_budget_validation_and_rng_type():
    with pytest.raises(ValueError, match=r"LinkBudget\.distance_m = 0.0: must be > 0"):
        LinkBudget(distance_m=0.0)
    with pytest.raises(TypeError, match="Generator"):
        CorrelatedFadingChannel(CorrelatedFadingConfig(), 0)
    with pytest.raises(ValueError, match="n = -1"):
        _chan().sample(-1)
