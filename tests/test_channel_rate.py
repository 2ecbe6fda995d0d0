"""Shannon rate and NR CQI-table link adaptation (selection, rate, BLER waterfall)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from splitrl.channel.modulation import bits_per_symbol
from splitrl.channel.rate import (
    CQI_SNR_THRESHOLDS_DB,
    CQI_TABLE_1,
    CqiRate,
    CqiRateConfig,
    ShannonRate,
    ShannonRateConfig,
    shannon_capacity_bps,
)

B = 20e6


def test_shannon_known_points():
    assert shannon_capacity_bps(0.0, B) == pytest.approx(B)  # log2(1 + 1) = 1
    assert shannon_capacity_bps(10 * math.log10(3), B) == pytest.approx(2 * B)
    assert shannon_capacity_bps(10 * math.log10(255), 1e6) == pytest.approx(8e6)
    assert shannon_capacity_bps(-200.0, B) == pytest.approx(0.0, abs=1e-6)
    # the gap is a pure SNR shift
    s = np.array([-3.0, 5.0, 20.0])
    np.testing.assert_allclose(shannon_capacity_bps(s, B, gap_db=3.0), shannon_capacity_bps(s - 3.0, B))


def test_shannon_rate_model_overhead_and_cap():
    r = ShannonRate(ShannonRateConfig(bandwidth_hz=B, gap_db=0.0, overhead=0.25, max_spectral_efficiency=6.0))
    assert r.rate_bps(0.0) == pytest.approx(0.75 * B)
    assert r.rate_bps(60.0) == pytest.approx(0.75 * 6.0 * B)
    assert r.bler(10.0) is None


def test_cqi_table_is_ts38214_table1():
    assert len(CQI_TABLE_1) == 16 and [e.index for e in CQI_TABLE_1] == list(range(16))
    assert CQI_TABLE_1[1] == (1, "qpsk", 78, 0.1523)
    assert CQI_TABLE_1[7] == (7, "16qam", 378, 1.4766)
    assert CQI_TABLE_1[10] == (10, "64qam", 466, 2.7305)
    assert CQI_TABLE_1[15] == (15, "64qam", 948, 5.5547)
    for e in CQI_TABLE_1[1:]:
        # efficiency = Qm x code rate, rounded to 4 decimals in the spec
        assert e.efficiency == pytest.approx(bits_per_symbol(e.modulation) * e.code_rate_x1024 / 1024, abs=6e-5)
    eff = [e.efficiency for e in CQI_TABLE_1]
    assert all(a < b for a, b in zip(eff, eff[1:]))


def test_cqi_selection_monotone_and_at_thresholds():
    r = CqiRate()
    snr = np.linspace(-15, 35, 2001)
    q = r.select_cqi(snr)
    assert np.all(np.diff(q) >= 0)
    assert q[0] == 0 and q[-1] == 15
    assert set(q.tolist()) == set(range(16))
    for i, t in enumerate(CQI_SNR_THRESHOLDS_DB, start=1):
        assert r.select_cqi(t) == i
        assert r.select_cqi(t - 1e-6) == i - 1


def test_rate_is_efficiency_times_bandwidth_minus_overhead():
    r = CqiRate(CqiRateConfig(bandwidth_hz=B, overhead=0.14))
    for snr in (-10.0, 0.0, 9.0, 30.0):
        e = CQI_TABLE_1[r.select_cqi(snr)]
        assert r.rate_bps(snr) == pytest.approx(e.efficiency * B * 0.86)
    rates = r.rate_bps(np.linspace(-15, 35, 501))
    assert np.all(np.diff(rates) >= 0)
    out = r.evaluate(-20.0)
    assert (out.cqi, out.rate_bps, out.bler) == (0, 0.0, 1.0)
    top = r.evaluate(30.0)
    assert (top.cqi, top.modulation, top.code_rate) == (15, "64qam", 948 / 1024)


def test_bler_waterfall():
    r = CqiRate()
    snr = np.linspace(-15, 35, 1001)
    for cqi in range(1, 16):
        b = r.bler_curve(snr, cqi)
        assert np.all(np.diff(b) <= 0)  # saturates at 1 (low SNR) in floating point
        near = np.abs(snr - CQI_SNR_THRESHOLDS_DB[cqi - 1]) < 5.0
        assert np.all(np.diff(b[near]) < 0)
        assert r.bler_curve(CQI_SNR_THRESHOLDS_DB[cqi - 1], cqi) == pytest.approx(0.1)
    # at a fixed SNR a more aggressive CQI fails more often
    at10 = [r.bler_curve(10.0, c) for c in range(1, 16)]
    assert all(a < b for a, b in zip(at10, at10[1:]))
    # adaptive choice never exceeds the target (sawtooth below 0.1 wherever CQI >= 1)
    adaptive = r.bler(snr)
    assert np.all(adaptive[r.select_cqi(snr) >= 1] <= 0.1 + 1e-12)
    assert r.bler(-20.0) == 1.0


def test_target_bler_and_backoff_are_conservative():
    snr = np.linspace(-10, 30, 401)
    base = CqiRate()
    strict = CqiRate(CqiRateConfig(target_bler=0.01))
    backed = CqiRate(CqiRateConfig(backoff_db=3.0))
    assert np.all(strict.select_cqi(snr) <= base.select_cqi(snr))
    assert np.any(strict.select_cqi(snr) < base.select_cqi(snr))
    ok = strict.select_cqi(snr) >= 1
    assert np.all(strict.bler(snr)[ok] <= 0.01 + 1e-12)
    np.testing.assert_array_equal(backed.select_cqi(snr), base.select_cqi(snr - 3.0))


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"bandwidth_hz": 0.0}, "bandwidth_hz"),
        ({"overhead": 1.0}, "overhead"),
        ({"snr_thresholds_db": (1.0, 0.0) + tuple(range(13))}, "snr_thresholds_db"),
        ({"snr_thresholds_db": (1.0, 2.0)}, "snr_thresholds_db"),
        ({"bler_slope_per_db": 0.0}, "bler_slope_per_db"),
        ({"target_bler": 1.0}, "target_bler"),
    ],
)
def test_cqi_config_validation(kw, field):
    with pytest.raises(ValueError, match=rf"CqiRateConfig\.{field} = "):
        CqiRateConfig(**kw)


def test_shannon_config_validation():
    with pytest.raises(ValueError, match=r"ShannonRateConfig\.gap_db = -1"):
        ShannonRateConfig(gap_db=-1.0)
