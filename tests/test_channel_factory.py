"""Building channels from YAML-style specs, and determinism across every channel kind."""
from __future__ import annotations

import numpy as np
import pytest
import yaml

from splitrl.channel import (
    CorrelatedFadingChannel,
    CorrelatedFadingConfig,
    CqiRate,
    LatencyModel,
    MarkovChannel,
    ShannonRate,
    TraceChannel,
    make_channel,
    make_latency_model,
    make_rate_model,
    write_snr_trace,
)

FADING_YAML = """
kind: fading
link_budget: {tx_power_dbm: 23, distance_m: 150, bandwidth_hz: 20e6, noise_figure_db: 5}
fading: rician
rician_k: 4.0
speed_mps: 1.5
carrier_hz: 3.5e9
slot_s: 1.0e-3
shadowing_sigma_db: 4.0
rate: {kind: cqi, bandwidth_hz: 20e6, overhead: 0.14}
ber_modulation: qpsk
"""


@pytest.fixture
def trace_path(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "t.csv"
    write_snr_trace(p, np.arange(400) * 0.01, 10 + 6 * rng.standard_normal(400))
    return p


def _specs(trace_path):
    return {
        "fading": yaml.safe_load(FADING_YAML),
        "markov": {
            "kind": "markov",
            "bin_edges_db": [-5, 5, 15, 25],
            "transition": [[0.9, 0.1, 0.0], [0.05, 0.9, 0.05], [0.0, 0.1, 0.9]],
            "state_snr_db": [0, 10, 20],
        },
        "markov_fit": {"kind": "markov", "fit_trace": str(trace_path), "bin_edges_db": [0, 8, 12, 40]},
        "trace": {"kind": "trace", "path": str(trace_path), "random_start": True},
    }


def test_yaml_fading_spec_builds_full_channel():
    spec = yaml.safe_load(FADING_YAML)
    assert isinstance(spec["carrier_hz"], str)  # PyYAML 1.1 quirk the factory must absorb
    ch = make_channel(spec, np.random.default_rng(0))
    assert isinstance(ch, CorrelatedFadingChannel) and isinstance(ch.rate_model, CqiRate)
    assert ch.config.carrier_hz == 3.5e9 and ch.config.link_budget.distance_m == 150
    st = ch.step()
    assert st.rate_bps is not None and st.bler is not None and st.ber is not None
    assert st.rate_bps == pytest.approx(ch.rate_model.rate_bps(st.snr_db))


def test_kinds_map_to_classes(trace_path):
    s = _specs(trace_path)
    rng = np.random.default_rng(0)
    assert isinstance(make_channel(s["markov"], rng), MarkovChannel)
    fitted = make_channel(s["markov_fit"], rng)
    assert isinstance(fitted, MarkovChannel) and fitted.config.n_states == 3
    assert isinstance(make_channel(s["trace"], rng), TraceChannel)
    cfg = CorrelatedFadingConfig(fading="none", mean_snr_db=3.0)
    assert make_channel(cfg, rng, rate_model={"kind": "shannon"}).step().rate_bps == pytest.approx(
        20e6 * np.log2(1 + 10**0.3)
    )


@pytest.mark.parametrize("kind", ["fading", "markov", "markov_fit", "trace"])
def test_same_seed_same_sequence_different_seed_differs(kind, trace_path):
    spec = _specs(trace_path)[kind]
    a = make_channel(spec, np.random.default_rng(123)).sample(200)
    b = make_channel(spec, np.random.default_rng(123)).sample(200)
    c = make_channel(spec, np.random.default_rng(124)).sample(200)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    ch = make_channel(spec, np.random.default_rng(123))
    ch.sample(50)
    ch.reset(np.random.default_rng(123))
    ch2 = make_channel(spec, np.random.default_rng(123))
    np.testing.assert_array_equal(ch.sample(100), ch2.sample(100))


@pytest.mark.parametrize(
    ("spec", "exc", "match"),
    [
        ({"kind": "fading", "mean_snr": 10}, ValueError, r"unknown key\(s\) \['mean_snr'\]"),
        ({"kind": "rayleigh"}, ValueError, r"channel\.kind = 'rayleigh'"),
        ({"mean_snr_db": 10}, ValueError, r"channel\.kind = None"),
        ({"kind": "fading", "fading": "rician", "rician_k": "lots"}, ValueError, r"rician_k = 'lots'"),
        ({"kind": "fading", "rate": {"kind": "ideal"}}, ValueError, r"rate\.kind = 'ideal'"),
        ({"kind": "fading", "rate": {"kind": "cqi", "bw": 1}}, ValueError, r"rate: unknown key"),
        ({"kind": "fading", "link_budget": {"power": 1}}, ValueError, r"link_budget: unknown key"),
        ({"kind": "fading", "ber_modulation": "8psk"}, ValueError, r"8psk"),
        ({"kind": "markov", "fit_trace": "x.csv"}, ValueError, r"needs 'bin_edges_db'"),
        ([("kind", "fading")], TypeError, r"mapping"),
    ],
)
def test_bad_specs(spec, exc, match):
    with pytest.raises(exc, match=match):
        make_channel(spec, np.random.default_rng(0))


def test_rate_and_latency_factories():
    assert make_rate_model(None) is None
    assert isinstance(make_rate_model({"kind": "shannon", "gap_db": "3"}), ShannonRate)
    lm = make_latency_model({"max_retransmissions": 2, "harq_rtt_s": "2e-3"})
    assert isinstance(lm, LatencyModel) and lm.config.harq_rtt_s == 2e-3
    assert isinstance(make_latency_model(), LatencyModel)
    with pytest.raises(ValueError, match=r"latency: unknown key"):
        make_latency_model({"rtt": 1})
    with pytest.raises(ValueError, match="both"):
        make_channel({"kind": "fading", "rate": {"kind": "cqi"}}, np.random.default_rng(0), rate_model=CqiRate())
