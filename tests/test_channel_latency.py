"""Transfer latency with HARQ: closed form vs samples, loss probability, edge cases."""
from __future__ import annotations

import numpy as np
import pytest

from splitrl.channel.latency import (
    LatencyConfig,
    LatencyModel,
    expected_retransmissions,
    residual_block_loss,
)
from splitrl.channel.state import ChannelState

C = 299_792_458.0


def _model(**kw):
    return LatencyModel(LatencyConfig(**kw))


def test_zero_bler_is_serialisation_propagation_overhead_exactly():
    m = _model(distance_m=300.0, overhead_s=2e-3, transport_block_bytes=1000, harq_rtt_s=5e-3)
    nbytes, rate = 12_345, 40e6
    want = nbytes * 8 / rate + 300.0 / C + 2e-3
    e = m.expected(nbytes, rate, 0.0)
    assert e.total_s == want
    assert e.harq_s == 0.0 and e.loss_probability == 0.0 and e.n_blocks == 13
    s = m.sample(nbytes, rate, None, np.random.default_rng(0))
    assert s.total_s == want and not s.lost


def test_expected_matches_mean_of_samples():
    # 50 kB in 1056-byte blocks (48 blocks), p = 0.2, up to 3 retransmissions. The tolerance is
    # 5 standard errors of the sample mean, estimated from the samples themselves.
    m = _model(transport_block_bytes=1056, max_retransmissions=3, harq_rtt_s=1e-3, overhead_s=1e-4)
    nbytes, rate, p = 50_000, 30e6, 0.2
    rng = np.random.default_rng(21)
    samples = [m.sample(nbytes, rate, p, rng) for _ in range(20_000)]
    tot = np.array([s.total_s for s in samples])
    e = m.expected(nbytes, rate, p)
    assert e.harq_s > 0.1 * e.serialisation_s  # HARQ is a visible part of what is compared
    assert tot.mean() == pytest.approx(e.total_s, abs=5 * tot.std() / np.sqrt(tot.size))
    retx = np.array([s.retransmissions for s in samples])
    assert retx.mean() == pytest.approx(e.retransmissions, abs=5 * retx.std() / np.sqrt(retx.size))


def test_residual_loss_probability_matches_frequency():
    m = _model(transport_block_bytes=100, max_retransmissions=1)
    p = 0.5
    e = m.expected(300, 1e6, p)  # 3 blocks, each lost w.p. p^2 = 0.25
    assert residual_block_loss(p, 1) == 0.25
    assert e.loss_probability == pytest.approx(1 - 0.75**3)
    rng = np.random.default_rng(2)
    lost = np.mean([m.sample(300, 1e6, p, rng).lost for _ in range(4000)])
    # binomial sd at 0.58 with 4000 draws: 0.0078; 0.04 is 5 sigma
    assert lost == pytest.approx(e.loss_probability, abs=0.04)


def test_expected_retransmissions_closed_form():
    for p in (0.0, 0.1, 0.5, 0.9, 1.0):
        for kmax in (0, 1, 4):
            assert expected_retransmissions(p, kmax) == pytest.approx(sum(p**k for k in range(1, kmax + 1)))


def test_certain_failure_uses_every_retry_with_partial_last_block():
    m = _model(transport_block_bytes=1000, max_retransmissions=2, harq_rtt_s=1e-3)
    nbytes, rate = 2500, 1e6  # blocks of 1000, 1000, 500 bytes
    s = m.sample(nbytes, rate, 1.0, np.random.default_rng(0))
    ser = 2500 * 8 / rate
    assert s.lost and s.retransmissions == 6
    assert s.harq_s == pytest.approx(2 * (ser + 3 * 1e-3))
    assert m.expected(nbytes, rate, 1.0).total_s == pytest.approx(s.total_s)


def test_edge_cases():
    m = _model(distance_m=3000.0, overhead_s=1e-3)
    empty = m.expected(0, 1e6, 0.5)
    assert empty.total_s == pytest.approx(3000.0 / C + 1e-3) and empty.n_blocks == 0
    assert m.expected(10, 0.0, 0.0).total_s == float("inf")
    assert m.sample(10, 0.0, 0.0, np.random.default_rng(0)).total_s == float("inf")
    with pytest.raises(ValueError, match="bler"):
        m.expected(10, 1e6, 1.5)
    with pytest.raises(ValueError, match="nbytes"):
        m.expected(-1, 1e6, 0.1)
    with pytest.raises(TypeError, match="Generator"):
        m.sample(10, 1e6, 0.1, 3)


def test_channel_state_helpers_and_determinism():
    m = _model()
    st = ChannelState(snr_db=10.0, rate_bps=20e6, bler=0.3)
    assert m.expected_for(20_000, st) == m.expected(20_000, 20e6, 0.3)
    a = m.sample_for(20_000, st, np.random.default_rng(5))
    assert a == m.sample_for(20_000, st, np.random.default_rng(5))
    draws = {m.sample_for(20_000, st, np.random.default_rng(s)).total_s for s in range(10)}
    assert len(draws) > 1
    with pytest.raises(ValueError, match="rate_bps is None"):
        m.expected_for(10, ChannelState(snr_db=3.0))


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"transport_block_bytes": 0}, "transport_block_bytes"),
        ({"max_retransmissions": -1}, "max_retransmissions"),
        ({"max_retransmissions": 1.5}, "max_retransmissions"),
        ({"harq_rtt_s": -1e-3}, "harq_rtt_s"),
        ({"distance_m": float("inf")}, "distance_m"),
    ],
)
def test_config_validation(kw, field):
    with pytest.raises(ValueError, match=rf"LatencyConfig\.{field} = "):
        LatencyConfig(**kw)
