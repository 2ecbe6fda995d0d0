"""AirComp channel, transceiver design and signal model: Monte Carlo against the closed forms."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from splitrl.aircomp import AirCompChannel, AirCompChannelConfig, design, simulate_allreduce
from splitrl.aircomp.design import monte_carlo_mse
from splitrl.aircomp.signal import pack_complex, unpack_complex
from splitrl.errors import UsageError

DRAWS = 100_000


def _channel(n: int, m: int, snr_db: float = 10.0, seed: int = 0, **kw) -> tuple[np.ndarray, np.ndarray]:
    ch = AirCompChannel(AirCompChannelConfig(devices=n, antennas=m, snr_db=snr_db, **kw), seed=seed)
    return ch.draw(), ch.config.power_limits()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_single_antenna_monte_carlo_matches_closed_form(seed):
    h, p = _channel(4, 1, snr_db=10.0, seed=seed, gain_db=(0.0, -3.0, 2.0, -6.0), power=(1.0, 2.0, 0.5, 1.0))
    tx = design(h, p, 1.0, "closed")
    closed = 1.0 / float(np.min(p * np.abs(h[:, 0]) ** 2))                          # sigma^2 / min_n P_n |h_n|^2
    assert tx.mse == pytest.approx(closed, rel=1e-12)
    assert np.all(np.abs(tx.b) ** 2 <= p * (1 + 1e-9))                              # power limits hold
    mc = monte_carlo_mse(h, tx, 1.0, DRAWS, np.random.default_rng(100 + seed))
    assert abs(mc / closed - 1.0) < 0.03


@pytest.mark.parametrize("method", ["weakest", "sdr", "eig", "mr"])
def test_one_device_monte_carlo_matches_closed_form(method):
    h, p = _channel(1, 4, snr_db=5.0, seed=3, rx_correlation=0.5)
    tx = design(h, p, 1.0, method, rng=np.random.default_rng(0))
    closed = 1.0 / float(p[0] * np.sum(np.abs(h) ** 2))                           # sigma^2 / (P ||h||^2)
    assert tx.mse == pytest.approx(closed, rel=1e-4)
    mc = monte_carlo_mse(h, tx, 1.0, DRAWS, np.random.default_rng(7))
    assert abs(mc / closed - 1.0) < 0.03


def test_sdr_never_worse_than_baselines_and_above_its_bound():
    ch = AirCompChannel(AirCompChannelConfig(devices=4, antennas=4, snr_db=10.0, rx_correlation=0.3), seed=11)
    strictly_better = 0
    for k, h in enumerate(ch.sample(25)):
        p = ch.config.power_limits()
        opt = design(h, p, 1.0, "sdr", rng=np.random.default_rng(k))
        base = [design(h, p, 1.0, m).mse for m in ("mr", "eig", "weakest")]
        assert opt.mse <= min(base) * (1 + 1e-12)
        assert opt.lower_bound is not None and opt.lower_bound <= opt.mse * (1 + 1e-6)
        strictly_better += opt.mse < 0.99 * min(base)
        assert np.all(np.abs(opt.b) ** 2 <= p * (1 + 1e-9))
    assert strictly_better > 0  # the relaxation does something the closed forms do not


def test_sdr_monte_carlo_matches_its_predicted_mse():
    h, p = _channel(3, 4, snr_db=0.0, seed=5)
    tx = design(h, p, 1.0, "sdr", rng=np.random.default_rng(1))
    mc = monte_carlo_mse(h, tx, 1.0, DRAWS, np.random.default_rng(2))
    assert abs(mc / tx.mse - 1.0) < 0.03


def test_real_tensor_pipeline_error_is_scale_times_design_mse():
    # Partials with outlier tokens (x 2.4e4): the de-normalised error per element has variance c_t^2 MSE.
    g = torch.Generator().manual_seed(0)
    n, t, d = 3, 64, 575  # odd D exercises the zero padding
    x = torch.randn(n, t, d, generator=g)
    x[:, 5] *= 2.4e4
    x[:, 9] = 0.0  # an all-zero token stays exactly zero
    h, p = _channel(n, 2, snr_db=15.0, seed=2)
    tx = design(h, p, 1.0, "sdr", rng=np.random.default_rng(0))
    errs = []
    for _ in range(40):
        est = simulate_allreduce(x, tx, g)
        c = x.pow(2).mean(-1).sqrt().amax(0)                                          # [T]
        err = (est - x.sum(0))[c > 0] / c[c > 0, None]
        errs.append(err.pow(2).mean().item())
        assert torch.all(est[9] == 0)
    assert abs(np.mean(errs) / tx.mse - 1.0) < 0.03


def test_noiseless_is_the_exact_sum_and_packing_round_trips():
    x = torch.randn(3, 8, 7)
    h, p = _channel(3, 1, snr_db=math.inf)
    tx = design(h, p, 0.0, "closed")
    assert tx.mse == 0.0
    assert torch.equal(simulate_allreduce(x, tx), x.sum(0))
    assert torch.allclose(unpack_complex(pack_complex(x), 7), x, atol=1e-6)


def test_channel_is_seeded_and_has_unit_mean_gain():
    cfg = AirCompChannelConfig(devices=2, antennas=3, rician_k=2.0, rx_correlation=0.7)
    a, b = AirCompChannel(cfg, seed=4).sample(20000), AirCompChannel(cfg, seed=4).sample(20000)
    assert np.array_equal(a, b)
    assert np.mean(np.abs(a) ** 2) == pytest.approx(1.0, rel=0.03)
    block = AirCompChannelConfig(devices=2, antennas=3, time_correlation=1.0)
    ch = AirCompChannel(block, seed=1)
    assert np.array_equal(ch.draw(), ch.draw())  # correlation 1: block fading


@pytest.mark.parametrize("kw", [dict(devices=0), dict(antennas=65), dict(snr_db=float("nan")),
                                dict(gain_db=(0.0, 1.0)), dict(rx_correlation=1.0), dict(power=-1.0)])
def test_bad_config_is_a_usage_error(kw):
    with pytest.raises(UsageError):
        AirCompChannelConfig(**{"devices": 3, **kw})
