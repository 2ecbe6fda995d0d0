"""Device/link profiles: every shipped YAML loads and validates; bad fields fail naming the field."""
import math

import numpy as np
import pytest
import yaml

from splitrl.cost import (
    EdgeProfile,
    LinkProfile,
    UEProfile,
    list_profiles,
    load_profile,
    profile_from_dict,
    time_scale,
)
from splitrl.cost.profiles import PROFILE_DIR

SHIPPED = [(kind, name) for kind in ("ue", "edge", "link") for name in list_profiles(kind)]

UE_MIN = {"name": "u", "flops_per_s": 1e11, "memory_budget_bytes": 1e9, "compute_power_w": 2.0}
LINK_MIN = {
    "name": "l", "bandwidth_hz": 2e7, "carrier_hz": 3.5e9, "tx_power_dbm": 23, "noise_figure_db": 5,
    "distance_m": 100, "path_loss_exponent": 3.5,
}


def test_the_advertised_profiles_are_shipped():
    assert {"phone-midrange", "phone-flagship", "jetson-orin"} <= set(list_profiles("ue"))
    assert {"edge-a100", "edge-cpu-server"} <= set(list_profiles("edge"))
    assert {"wifi6-20mhz", "nr-sub6-20mhz", "nr-mmwave"} <= set(list_profiles("link"))
    assert len(SHIPPED) == len(list(PROFILE_DIR.glob("*.yaml")))


@pytest.mark.parametrize("kind,name", SHIPPED)
def test_every_shipped_profile_loads_and_is_sane(kind, name):
    p = load_profile(kind, name)
    assert p.name == name and p.description
    text = (PROFILE_DIR / f"{name}.yaml").read_text()
    assert text.count("#") >= 5, "shipped profiles must document their sources in comments"
    if kind == "link":
        assert isinstance(p, LinkProfile)
        snr = p.mean_snr_db()
        assert -10 < snr < 60
        rate = p.rate_model().rate_bps(snr)
        assert rate > 0
        assert p.latency_config("uplink").overhead_s == p.uplink_overhead_s
        ch = p.make_channel(np.random.default_rng(0))
        state = ch.step()
        assert math.isfinite(state.snr_db) and state.rate_bps is not None
    else:
        assert isinstance(p, UEProfile if kind == "ue" else EdgeProfile)
        # Sustained, not peak: shipped compute profiles state their peak and derating.
        assert p.peak_flops_per_s is not None and p.utilization is not None
        assert p.flops_per_s == pytest.approx(p.peak_flops_per_s * p.utilization)
        assert p.flops_per_s < p.peak_flops_per_s
        assert p.memory_bandwidth_bytes_per_s is not None


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(ValueError) as e:
        load_profile("ue", "phone-imaginary")
    for name in list_profiles("ue"):
        assert name in str(e.value)
    with pytest.raises(ValueError, match="it is a edge profile"):
        load_profile("ue", "edge-a100")
    with pytest.raises(ValueError, match="kind"):
        list_profiles("cloud")


@pytest.mark.parametrize("field,value,fragment", [
    ("flops_per_s", -1.0, "flops_per_s = -1.0: must be a number in (1e+06, 1e+18]"),
    ("memory_budget_bytes", 0, "memory_budget_bytes = 0"),
    ("compute_power_w", float("nan"), "compute_power_w"),
    ("pa_efficiency", 1.5, "pa_efficiency = 1.5: must be a number in (0, 1]"),
    ("weight_dtype", "fp8", "weight_dtype = 'fp8': must be one of"),
    ("layer_overhead_s", "fast", "layer_overhead_s = 'fast'"),
])
def test_bad_ue_fields_name_the_field_and_range(field, value, fragment):
    with pytest.raises(ValueError) as e:
        profile_from_dict("ue", {**UE_MIN, field: value})
    assert fragment in str(e.value)
    assert "UEProfile 'u'" in str(e.value)


def test_flops_from_peak_and_utilization_and_consistency():
    body = {k: v for k, v in UE_MIN.items() if k != "flops_per_s"}
    p = profile_from_dict("ue", {**body, "peak_flops_per_s": 2e12, "utilization": 0.25})
    assert p.flops_per_s == pytest.approx(5e11)
    with pytest.raises(ValueError, match="flops_per_s.*given, or derived"):
        profile_from_dict("ue", body)
    with pytest.raises(ValueError, match="peak_flops_per_s \\* utilization"):
        profile_from_dict("ue", {**body, "flops_per_s": 1e12, "peak_flops_per_s": 2e12, "utilization": 0.25})
    with pytest.raises(ValueError, match="<= peak_flops_per_s"):
        profile_from_dict("ue", {**UE_MIN, "flops_per_s": 3e12, "peak_flops_per_s": 2e12})


def test_unknown_and_missing_keys_are_errors():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['flop_per_s'\]; allowed"):
        profile_from_dict("ue", {**UE_MIN, "flop_per_s": 1})
    with pytest.raises(ValueError, match=r"missing required key\(s\) \['memory_budget_bytes'\]"):
        profile_from_dict("ue", {k: v for k, v in UE_MIN.items() if k != "memory_budget_bytes"})
    with pytest.raises(ValueError, match="is a 'edge' profile, not 'ue'"):
        profile_from_dict("ue", {**UE_MIN, "kind": "edge"})
    with pytest.raises(ValueError, match=r"rate: unknown key\(s\) \['gap'\]"):
        profile_from_dict("link", {**LINK_MIN, "rate": {"mode": "shannon", "gap": 3}})


@pytest.mark.parametrize("field,value,fragment", [
    ("bandwidth_hz", -2e7, "bandwidth_hz = -20000000.0"),
    ("carrier_hz", 1e12, "carrier_hz"),
    ("fading", "jakes", "fading = 'jakes': must be one of 'none', 'rayleigh', 'rician', 'nakagami'"),
    ("rate", {"mode": "turbo"}, "rate.mode = 'turbo'"),
    ("rate", {"mode": "shannon", "residual_bler": 1.0}, "rate.residual_bler = 1.0: must be a number in [0, 1)"),
    ("harq", {"max_retransmissions": True}, "harq.max_retransmissions = True: must be an integer in [0, 32]"),
    ("harq", {"transport_block_bytes": 0}, "harq.transport_block_bytes = 0"),
])
def test_bad_link_fields_name_the_field_and_range(field, value, fragment):
    with pytest.raises(ValueError) as e:
        profile_from_dict("link", {**LINK_MIN, field: value})
    assert fragment in str(e.value)


def test_numeric_strings_from_yaml_are_accepted(tmp_path):
    # PyYAML reads `20e6` (no dot) as a string; profiles must not trip over it.
    text = "kind: link\nname: s\nbandwidth_hz: 20e6\ncarrier_hz: 3.5e9\ntx_power_dbm: 23\n" \
           "noise_figure_db: 5\ndistance_m: 100\npath_loss_exponent: 3\n"
    path = tmp_path / "s.yaml"
    path.write_text(text)
    assert isinstance(yaml.safe_load(text)["bandwidth_hz"], str)
    p = load_profile("link", path)
    assert p.bandwidth_hz == 2e7


def test_load_from_path_and_kind_mismatch(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"kind": "edge", "name": "mine", "flops_per_s": 1e13, "compute_power_w": 300}))
    assert load_profile("edge", str(path)).flops_per_s == 1e13
    with pytest.raises(ValueError, match="is a 'edge' profile, not 'ue'"):
        load_profile("ue", path)
    with pytest.raises(ValueError, match="does not exist"):
        load_profile("ue", tmp_path / "missing.yaml")
    p = load_profile("edge", "edge-a100")
    assert load_profile("edge", p) is p
    with pytest.raises(ValueError, match="expected a ue profile"):
        load_profile("ue", p)


def test_scaling_relative_to_a_reference():
    phone = load_profile("ue", "phone-midrange")
    fast = phone.scaled(4.0)
    assert fast.flops_per_s == pytest.approx(4 * phone.flops_per_s)
    assert fast.memory_bandwidth_bytes_per_s == pytest.approx(4 * phone.memory_bandwidth_bytes_per_s)
    assert fast.compute_power_w == phone.compute_power_w
    # A second measured on the fast device takes 4 s on the phone.
    assert time_scale(phone, fast) == pytest.approx(4.0)


def test_radio_power_uses_pa_efficiency_and_circuit_power():
    p = profile_from_dict("ue", {**UE_MIN, "pa_efficiency": 0.25, "tx_circuit_power_w": 0.5})
    assert p.radio_tx_power_w(0.2) == pytest.approx(0.2 / 0.25 + 0.5)
    link = load_profile("link", "nr-sub6-20mhz")
    assert link.tx_power_w == pytest.approx(0.2, rel=0.01)  # 23 dBm
