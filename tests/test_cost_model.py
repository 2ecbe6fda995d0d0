"""CostModel: decompositions, monotonicity, bytes, hand-computed energy, and emulate_report."""
import dataclasses
import math

import numpy as np
import pytest

from splitrl.channel import LatencyModel
from splitrl.cost import (
    CostEstimate,
    CostModel,
    CostTable,
    EdgeProfile,
    HarqSpec,
    LinkProfile,
    RateSpec,
    UEProfile,
    emulate_report,
    sum_max_linear,
)
from splitrl.cost.profiles import dbm_to_w
from splitrl.link import get_codec, make_link
from splitrl.runtime import SplitRuntime

C = 299_792_458.0


def hand_ue(**kw):
    base = dict(name="hand-ue", flops_per_s=1e9, memory_budget_bytes=1e12, compute_power_w=2.0,
                weight_dtype="fp32", pa_efficiency=0.5, tx_circuit_power_w=0.3, rx_power_w=0.0, idle_power_w=0.0)
    return UEProfile(**{**base, **kw})


def hand_edge(**kw):
    return EdgeProfile(**{**dict(name="hand-edge", flops_per_s=1e11, compute_power_w=100.0, weight_dtype="fp32"), **kw})


def hand_link(**kw):
    base = dict(
        name="hand-link", bandwidth_hz=1e6, carrier_hz=3.5e9, tx_power_dbm=20.0, noise_figure_db=5.0,
        distance_m=C * 1e-6, path_loss_exponent=3.0, rate=RateSpec(mode="shannon"),
        harq=HarqSpec(max_retransmissions=3, harq_rtt_s=1e-3, transport_block_bytes=1000),
        uplink_overhead_s=1e-3, downlink_overhead_s=5e-4, downlink_snr_offset_db=0.0,
    )
    return LinkProfile(**{**base, **kw})


@pytest.fixture(scope="module")
def gpt2_model(gpt2_tiny):
    return CostModel(gpt2_tiny, "phone-midrange", "edge-a100", "nr-sub6-20mhz")


def test_ttft_and_tpot_are_the_sum_of_their_parts(gpt2_model):
    for snr in (0.0, 12.0, 25.0):
        t = gpt2_model.estimate_all(snr, prompt_tokens=40, new_tokens=9)
        np.testing.assert_allclose(t.ttft_s, t.ue_prefill_s + t.uplink_prefill_s + t.edge_prefill_s + t.downlink_s)
        np.testing.assert_allclose(t.tpot_s, t.ue_decode_s + t.uplink_decode_s + t.edge_decode_s + t.downlink_s)
        np.testing.assert_allclose(t.e2e_latency_s, t.ttft_s + 8 * t.tpot_s)
        np.testing.assert_allclose(t.ue_energy_j, t.ue_compute_energy_j + t.ue_radio_energy_j + t.ue_idle_energy_j)
        np.testing.assert_allclose(t.ue_energy_j_per_token, t.ue_energy_j / 9)
        L = gpt2_model.num_layers
        # Split L: everything on the UE, nothing on the air, no edge time.
        assert t.uplink_prefill_s[L] == t.downlink_s[L] == t.edge_prefill_s[L] == 0.0
        assert t.ttft_s[L] == t.ue_prefill_s[L]
        # Split 0: the UE computes nothing.
        assert t.ue_prefill_s[0] == t.ue_decode_s[0] == 0.0


def test_estimate_matches_the_table_row(gpt2_model):
    assert [f.name for f in dataclasses.fields(CostEstimate)] == [f.name for f in dataclasses.fields(CostTable)]
    t = gpt2_model.estimate_all(7.5, 16, 4)
    for s in range(gpt2_model.num_layers + 1):
        e = gpt2_model.estimate(s, 7.5, 16, 4)
        assert e == t.row(s)
        assert isinstance(e.prompt_bytes, int) and isinstance(e.ttft_s, float) and isinstance(e.fits_ue_memory, bool)


def test_flops_follow_the_view_layer_costs(gpt2_tiny, gpt2_model):
    view = gpt2_tiny.view
    T, s = 12, 2
    e = gpt2_model.estimate(s, 10.0, T, 1)
    layers = [view.layer_cost(i) for i in range(view.num_layers)]
    attn = T * (T + 1) / 2  # token j attends to j positions during prefill
    ue = sum(T * lc.flops_per_token_base + lc.flops_per_token_per_ctx * attn for lc in layers[:s])
    ue += T * view.hidden_size  # GPT-2 adds the learned position embedding
    edge = sum(T * lc.flops_per_token_base + lc.flops_per_token_per_ctx * attn for lc in layers[s:])
    edge += view.head_flops_per_token()  # the head runs on the last position only
    assert e.ue_flops_prefill == pytest.approx(ue)
    assert e.edge_flops_prefill == pytest.approx(edge)


@pytest.mark.parametrize("link", ["nr-sub6-20mhz", "wifi6-20mhz", "nr-mmwave"])
def test_higher_snr_never_increases_latency(gpt2_tiny, link):
    cm = CostModel(gpt2_tiny, "phone-flagship", "edge-a100", link, cache_size=0)
    tables = [cm.estimate_all(x, 64, 16) for x in np.arange(-10.0, 40.0, 0.5)]
    ttft = np.array([t.ttft_s for t in tables])
    tpot = np.array([t.tpot_s for t in tables])
    energy = np.array([t.ue_energy_j_per_token for t in tables])
    for arr in (ttft, tpot, energy):
        before, after = arr[:-1], arr[1:]
        assert np.all((after <= before * (1 + 1e-12)) | np.isinf(before))
        assert np.all(np.isfinite(arr[-1]))
    L = cm.num_layers
    assert np.all(ttft[:, L] == ttft[0, L])  # nothing crosses at split L: SNR is irrelevant


def test_ue_memory_grows_with_the_split_and_bytes_at_the_ends(gpt2_tiny, llama_tiny):
    for loaded in (gpt2_tiny, llama_tiny):
        cm = CostModel(loaded, "phone-midrange", "edge-a100", "nr-sub6-20mhz")
        L, H = cm.num_layers, loaded.view.hidden_size
        t = cm.estimate_all(10.0, 20, 5)
        assert t.ue_memory_bytes[0] == 0 and np.all(np.diff(t.ue_memory_bytes) > 0)
        assert t.bytes_per_token[0] == 2 and t.bytes_per_token[L] == 0
        assert t.prompt_bytes[0] == 2 * 20 and t.prompt_bytes[L] == 0
        assert t.downlink_bytes_per_token[L] == 0 and np.all(t.downlink_bytes_per_token[:L] == 2)
        assert np.all(t.prompt_bytes[1:L] == get_codec("fp32").nbytes((1, 20, H)))
        assert np.all(t.bytes_per_token[1:L] == get_codec("fp32").nbytes((1, 1, H)))
        np.testing.assert_array_equal(
            t.bytes_on_air, t.prompt_bytes + 4 * t.bytes_per_token + 5 * t.downlink_bytes_per_token)


def test_memory_counts_weights_once_and_the_kv_cache(llama_tiny):
    view = llama_tiny.view
    c = view.config
    cm = CostModel(llama_tiny, "phone-midrange", "edge-a100", "nr-sub6-20mhz")  # fp16 weights and KV
    L, T, N = cm.num_layers, 30, 3
    e = cm.estimate(L, 10.0, T, N)
    params = sum(p.numel() for p in view.model.parameters())  # tied lm_head counted once by torch
    assert e.ue_weight_bytes == 2 * params
    kv_per_token = L * 2 * c.num_key_value_heads * (c.hidden_size // c.num_attention_heads) * 2
    assert e.ue_kv_bytes == kv_per_token * (T + N - 1)  # the runtime caches T + N - 1 positions
    e1 = cm.estimate(1, 10.0, T, N)
    layer0 = sum(p.numel() for p in view.layers[0].parameters())
    assert e1.ue_weight_bytes == 2 * (view.embed_tokens.weight.numel() + layer0)


def test_memory_budget_marks_infeasible_splits(gpt2_tiny):
    cm0 = CostModel(gpt2_tiny, "phone-midrange", "edge-a100", "nr-sub6-20mhz")
    need = cm0.ue_memory_bytes(64)
    budget = float(need[3])
    cm = CostModel(gpt2_tiny, hand_ue(memory_budget_bytes=budget, weight_dtype="fp16"), "edge-a100", "nr-sub6-20mhz")
    np.testing.assert_array_equal(cm.feasible_splits(64), np.arange(4))
    t = cm.estimate_all(10.0, 60, 5)  # context T + N - 1 = 64
    np.testing.assert_array_equal(t.fits_ue_memory, np.arange(cm.num_layers + 1) <= 3)


def test_energy_and_latency_by_hand(gpt2_tiny):
    """Every term recomputed step by step, independently of the model's vectorised closed forms."""
    view = gpt2_tiny.view
    ue, edge, link = hand_ue(idle_power_w=0.4, rx_power_w=0.7), hand_edge(), hand_link()
    cm = CostModel(gpt2_tiny, ue, edge, link, codec="fp32")
    s, T, N, snr = 2, 8, 4, 10.0
    H, L = view.hidden_size, view.num_layers
    layers = [view.layer_cost(i) for i in range(L)]
    rate = 1e6 * math.log2(1 + 10 ** (snr / 10))  # Shannon, gap 0, overhead 0, BLER 0
    prop = 1e-6

    def ue_flops(n_tokens, ctxs):
        own = layers[:s]
        return sum(lc.flops_per_token_base * n_tokens + lc.flops_per_token_per_ctx * sum(ctxs) for lc in own) + n_tokens * H

    def edge_flops(n_tokens, ctxs):
        own = layers[s:]
        body = sum(lc.flops_per_token_base * n_tokens + lc.flops_per_token_per_ctx * sum(ctxs) for lc in own)
        return body + view.head_flops_per_token()

    frame_pre = 16 + 4 * T * H  # fp32 frame: 4 + 4*3 header bytes + body
    frame_dec = 16 + 4 * H
    ue_pre = ue_flops(T, range(1, T + 1)) / 1e9
    ul_pre = 8 * frame_pre / rate + prop + 1e-3
    edge_pre = edge_flops(T, range(1, T + 1)) / 1e11
    dl = 8 * 2 / rate + prop + 5e-4
    steps = []
    for k in range(1, N):
        c = T + k
        steps.append((ue_flops(1, [c]) / 1e9, 8 * frame_dec / rate + prop + 1e-3, edge_flops(1, [c]) / 1e11, dl))
    ttft = ue_pre + ul_pre + edge_pre + dl
    tpot = sum(map(sum, steps)) / (N - 1)
    e2e = ttft + sum(map(sum, steps))
    p_tx = dbm_to_w(20.0) / 0.5 + 0.3
    tx_air = 8 * frame_pre / rate + (N - 1) * 8 * frame_dec / rate
    compute_j = 2.0 * (ue_pre + sum(st[0] for st in steps))
    radio_j = p_tx * tx_air + 0.7 * N * 8 * 2 / rate
    idle_j = 0.4 * e2e

    e = cm.estimate(s, snr, T, N)
    assert e.uplink_rate_bps == pytest.approx(rate)
    assert e.ue_prefill_s == pytest.approx(ue_pre, rel=1e-12)
    assert e.uplink_prefill_s == pytest.approx(ul_pre, rel=1e-12)
    assert e.edge_prefill_s == pytest.approx(edge_pre, rel=1e-12)
    assert e.downlink_s == pytest.approx(dl, rel=1e-12)
    assert e.ttft_s == pytest.approx(ttft, rel=1e-12)
    assert e.tpot_s == pytest.approx(tpot, rel=1e-12)
    assert e.ue_compute_energy_j == pytest.approx(compute_j, rel=1e-12)
    assert e.ue_radio_energy_j == pytest.approx(radio_j, rel=1e-12)
    assert e.ue_idle_energy_j == pytest.approx(idle_j, rel=1e-12)
    assert e.ue_energy_j_per_token == pytest.approx((compute_j + radio_j + idle_j) / N, rel=1e-12)
    assert e.bytes_on_air == frame_pre + (N - 1) * frame_dec + N * 2
    # Without a baseline or receive power, energy is exactly compute + radio.
    e0 = CostModel(gpt2_tiny, hand_ue(), edge, link).estimate(s, snr, T, N)
    assert e0.ue_energy_j == pytest.approx(compute_j + p_tx * tx_air, rel=1e-12)


def test_target_bler_adaptation_agrees_with_the_channel_models(gpt2_tiny):
    cm = CostModel(gpt2_tiny, "phone-midrange", "edge-a100", "nr-sub6-20mhz", codec="fp16",
                   link_adaptation="target_bler")
    snr = 6.3  # just above a CQI switching SNR: BLER well above zero
    e = cm.estimate(3, snr, 100, 2)
    rate, bler = cm.rate(snr)
    state_rate = cm.link.rate_model().rate_bps(snr)  # what a ChannelState would carry
    assert bler > 1e-3 and rate == state_rate == e.uplink_rate_bps and bler == e.uplink_bler
    lm = LatencyModel(cm.link.latency_config("uplink"))
    assert e.uplink_prefill_s == pytest.approx(lm.expected(e.prompt_bytes, rate, bler).total_s, rel=1e-12)
    assert e.uplink_decode_s == pytest.approx(lm.expected(e.bytes_per_token, rate, bler).total_s, rel=1e-12)
    dl_rate, dl_bler = cm.rate(snr, "downlink")
    lm_dl = LatencyModel(cm.link.latency_config("downlink"))
    assert e.downlink_s == pytest.approx(lm_dl.expected(2, dl_rate, dl_bler).total_s, rel=1e-12)


@pytest.mark.parametrize("link", ["nr-sub6-20mhz", "nr-mmwave"])
def test_min_latency_adaptation_is_never_slower_than_target_bler(gpt2_tiny, link):
    fast = CostModel(gpt2_tiny, "phone-midrange", "edge-a100", link, cache_size=0)
    target = CostModel(gpt2_tiny, "phone-midrange", "edge-a100", link, link_adaptation="target_bler", cache_size=0)
    faster_somewhere = False
    for snr in np.arange(-8.0, 30.0, 0.25):
        a, b = fast.estimate_all(snr, 256, 4), target.estimate_all(snr, 256, 4)
        assert np.all((a.ttft_s <= b.ttft_s) | (np.isinf(a.ttft_s) & np.isinf(b.ttft_s)))
        assert np.all(a.uplink_rate_bps <= b.uplink_rate_bps)  # it may only step down the CQI ladder
        faster_somewhere |= bool(np.any(a.ttft_s < b.ttft_s * (1 - 1e-6)))
    assert faster_somewhere
    with pytest.raises(ValueError, match="link_adaptation"):
        CostModel(gpt2_tiny, "phone-midrange", "edge-a100", link, link_adaptation="greedy")


def test_int8_sends_fewer_bytes_and_transfers_faster_than_fp32(gpt2_tiny):
    fp32 = CostModel(gpt2_tiny, "phone-midrange", "edge-a100", "nr-sub6-20mhz", codec="fp32")
    int8 = CostModel(gpt2_tiny, "phone-midrange", "edge-a100", "nr-sub6-20mhz", codec="int8")
    a, b = fp32.estimate_all(12.0, 128, 8), int8.estimate_all(12.0, 128, 8)
    mid = slice(1, fp32.num_layers)
    assert np.all(b.prompt_bytes[mid] < a.prompt_bytes[mid])
    assert np.all(b.bytes_per_token[mid] < a.bytes_per_token[mid])
    assert np.all(b.uplink_prefill_s[mid] < a.uplink_prefill_s[mid])
    assert np.all(b.ttft_s[mid] < a.ttft_s[mid])
    assert np.all(b.ue_radio_energy_j[mid] < a.ue_radio_energy_j[mid])
    for s in (0, fp32.num_layers):  # token ids / nothing: the codec is irrelevant
        assert b.prompt_bytes[s] == a.prompt_bytes[s] and b.ttft_s[s] == a.ttft_s[s]


def test_zero_rate_gives_infinite_latency_except_fully_local(gpt2_tiny):
    cm = CostModel(gpt2_tiny, "phone-midrange", "edge-a100", "nr-sub6-20mhz")
    t = cm.estimate_all(-30.0, 16, 4)  # below CQI 1: rate 0
    L = cm.num_layers
    assert t.uplink_rate_bps[0] == 0.0
    assert np.all(np.isinf(t.ttft_s[:L])) and math.isfinite(t.ttft_s[L])
    assert np.all(t.uplink_loss_probability[:L] == 1.0) and t.uplink_loss_probability[L] == 0.0
    one = cm.estimate_all(-30.0, 16, 1)  # no decode steps: nothing may turn into 0 * inf = nan
    for arr in (one.e2e_latency_s, one.ue_energy_j, one.tpot_s, one.edge_energy_j_per_token):
        assert not np.any(np.isnan(arr))
    assert np.all(np.isinf(one.e2e_latency_s[:L]))


def test_roofline_decode_on_the_ue_is_bandwidth_bound(gpt2_tiny):
    view = gpt2_tiny.view
    bw = 1e9
    ue = hand_ue(flops_per_s=1e15, memory_bandwidth_bytes_per_s=bw, weight_dtype="fp16")
    cm = CostModel(gpt2_tiny, ue, hand_edge(), hand_link())
    L, T = cm.num_layers, 10
    e = cm.estimate(L, 10.0, T, 2)  # one decode step at context T + 1
    layer_params = sum(sum(p.numel() for p in layer.parameters()) for layer in view.layers)
    head = view.lm_head.weight.numel() + sum(p.numel() for p in view.final_norm.parameters())
    kv = L * 2 * view.hidden_size * 2  # fp16 K and V per token
    expected = (2 * (layer_params + head) + 2 * 2 * view.hidden_size + kv * (T + 1)) / bw
    assert e.ue_decode_s == pytest.approx(expected, rel=1e-12)


def test_sum_max_linear_matches_brute_force():
    rng = np.random.default_rng(1)
    a1, b1, a2, b2 = rng.normal(size=(4, 200))
    b1[:20] = b2[:20]  # parallel lines
    for c0, m in ((0, 0), (1, 1), (5, 17), (-20, 60)):
        c = np.arange(c0, c0 + m)[:, None]
        brute = np.maximum(a1 + b1 * c, a2 + b2 * c).sum(axis=0)
        np.testing.assert_allclose(sum_max_linear(a1, b1, a2, b2, c0, m), brute, rtol=1e-10, atol=1e-10)


def test_bad_arguments_and_immutable_results(gpt2_tiny, gpt2_model):
    with pytest.raises(ValueError, match=r"split = 7: must be an integer in \[0, 6\]"):
        gpt2_model.estimate(7, 10.0, 8)
    with pytest.raises(ValueError, match="prompt_tokens"):
        gpt2_model.estimate(1, 10.0, 0)
    with pytest.raises(ValueError, match="new_tokens"):
        gpt2_model.estimate(1, 10.0, 8, 0)
    with pytest.raises(ValueError, match="snr_db"):
        gpt2_model.estimate_all(float("nan"), 8)
    with pytest.raises(ValueError, match="unknown codec"):
        CostModel(gpt2_tiny, "phone-midrange", "edge-a100", "nr-sub6-20mhz", codec="fp8")
    t = gpt2_model.estimate_all(10.0, 8, 2)
    assert gpt2_model.estimate_all(10.0, 8, 2) is t  # cached
    with pytest.raises(ValueError):
        t.ttft_s[0] = 0.0
    # new_tokens=None is one new token; its per-token figure is the next decode step.
    one = gpt2_model.estimate(2, 10.0, 8)
    assert one.new_tokens == 1 and one.e2e_latency_s == one.ttft_s and one.tpot_s > 0


@pytest.mark.parametrize("split", [0, 3, 6])
def test_emulate_report_on_a_real_generation(gpt2_tiny, split):
    runtime = SplitRuntime(gpt2_tiny)
    link = make_link("fp16", vocab_size=gpt2_tiny.view.vocab_size)
    result = runtime.generate("The radio link", split, max_new_tokens=3, links=link, stop_at_eos=False)
    report = result.report
    cm = CostModel(gpt2_tiny, "phone-flagship", "edge-a100", "wifi6-20mhz", codec="fp16")
    out = emulate_report(report, cm, snr_db=20.0)
    for key in ("ttft_s", "tpot_s", "ue_energy_j_per_token", "ue_memory_bytes", "bytes_on_air"):
        assert key in out and report.emulated[key] == out[key]
    est = cm.estimate(split, 20.0, report.prompt_tokens, report.new_tokens)
    assert out["ttft_s"] == est.ttft_s > 0 and out["tpot_s"] == est.tpot_s
    # The model's byte count is exactly what the runtime's link recorded, both directions.
    assert out["uplink_bytes"] == sum(report.bytes_per_boundary)
    assert out["downlink_bytes"] == report.token_return_bytes
    assert out["bytes_on_air"] == sum(report.bytes_per_boundary) + report.token_return_bytes
    assert "emulated ttft_s" in report.format()


def test_emulate_report_rejects_multi_hop_partitions(gpt2_tiny, gpt2_model):
    report = SplitRuntime(gpt2_tiny).generate("Hi", [2, 4], max_new_tokens=1).report
    with pytest.raises(ValueError, match="one UE/edge split"):
        emulate_report(report, gpt2_model, 10.0)


def test_latency_energy_is_the_tables_figures_and_caches_per_snr(llama_tiny):
    """The reward's hot path (`latency_energy`) gives exactly the `estimate_all` numbers, at any edge
    slow-down, reusing one SNR's link terms across loads."""
    cm = CostModel(llama_tiny.view, "phone-midrange", "edge-cpu-server", "nr-sub6-20mhz", codec="int8",
                   prefill_chunks=8)
    rng = np.random.default_rng(0)
    for snr in (-12.0, 3.3, 17.0, 41.0):
        for slow in (None, 1.0, rng.uniform(1.0, 6.0, cm.num_layers + 1)):
            le = cm.latency_energy(snr, 128, 16, edge_slowdown=slow)
            t = cm.estimate_all(snr, 128, 16, edge_slowdown=slow)
            for f in le._fields:
                np.testing.assert_array_equal(getattr(le, f), getattr(t, f), err_msg=f)
    assert len(cm._link_cache) == 4  # one entry per SNR, whatever the load
    with pytest.raises(ValueError, match="edge_slowdown"):
        cm.latency_energy(10.0, 128, 16, edge_slowdown=0.5)


def test_pipelined_prefill_takes_the_best_chunk_count(llama_tiny):
    """TTFT with up to C chunks is the minimum over c <= C of the TTFT with exactly c (all chunk
    counts are evaluated at once; a minimum does not depend on the order)."""
    models = [CostModel(llama_tiny.view, "phone-midrange", "edge-cpu-server", "nr-sub6-20mhz", codec="fp16",
                        prefill_chunks=c) for c in range(1, 9)]
    for snr in (-3.0, 9.5, 28.0):
        ttfts = np.stack([m.estimate_all(snr, 100, 4, edge_slowdown=2.0).ttft_s for m in models])
        assert (np.diff(ttfts, axis=0) <= 0).all()  # more allowed chunk counts never hurt
        np.testing.assert_array_equal(ttfts[-1], ttfts.min(axis=0))
