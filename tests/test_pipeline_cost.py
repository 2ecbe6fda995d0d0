"""Pipeline costs, the exact cut DP (vs brute force) and the ring simulator (vs the closed form)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splitrl.cost.pipeline import DeviceTimes, PipelineCostModel, ring_throughput
from splitrl.models import load_model
from splitrl.pipeline.partition import (
    brute_force_cuts, compare_partitions, cost_fn, dp_cuts, equal_cuts, mdi_llm_cuts,
)
from splitrl.pipeline.simulator import simulate_ring


@pytest.fixture(scope="module")
def view():
    return load_model("llama-tiny").view


def test_equal_and_mdi_tables():
    assert equal_cuts(30, 3) == [10, 20]
    assert equal_cuts(7, 3) == [2, 4]  # later stages take the extra layers
    assert mdi_llm_cuts(12, 2) == [4] and mdi_llm_cuts(12, 3) == [2, 7]
    assert mdi_llm_cuts(30, 1) == []


@settings(max_examples=30, deadline=None)
@given(
    L=st.integers(1, 9), K=st.integers(1, 4),
    layer=st.lists(st.floats(0.1, 5.0), min_size=9, max_size=9),
    speed=st.lists(st.floats(0.2, 5.0), min_size=4, max_size=4),
    cap=st.lists(st.integers(1, 9), min_size=4, max_size=4),
    hop=st.lists(st.floats(0.0, 3.0), min_size=4, max_size=4),
    extra=st.floats(0.0, 3.0),
)
def test_dp_equals_brute_force(L, K, layer, speed, cap, hop, extra):
    """Random heterogeneous devices with layer-count memory caps: the DP's bottleneck is the brute-force optimum."""
    pre = np.concatenate([[0.0], np.cumsum(layer[:L])])

    def stage(k, a, b):
        if b - a > cap[k]:
            return math.inf
        return (pre[b] - pre[a] + (extra if k == 0 else 0.0)) / speed[k]

    cuts, v = dp_cuts(L, K, stage, hop)
    bcuts, bv = brute_force_cuts(L, K, stage, hop)
    assert v == pytest.approx(bv) or (math.isinf(v) and math.isinf(bv))
    if not math.isinf(v):
        b = [0, *cuts, L]
        assert len(cuts) == K - 1 and all(x <= y for x, y in zip(b, b[1:]))
        worst = max(stage(k, b[k], b[k + 1]) for k in range(K))
        assert max(worst, max(hop[:K]) if K > 1 else 0.0) == pytest.approx(v)


def test_cost_model_k_hops(view):
    pcm = PipelineCostModel(view, ["phone-midrange", "jetson-orin", "jetson-orin"], "wifi6-20mhz", snr_db=25.0)
    est = pcm.estimate([2, 4], context=64, samples=3)
    assert len(est.stage_s) == len(est.hop_s) == len(est.memory_bytes) == 3
    assert est.hop_bytes == [pcm.hop_bytes()] * 3 and pcm.hop_bytes() >= view.hidden_size * 4
    # The starter holds the embeddings: more memory than an equal-layer stage; memory shrinks with K.
    assert est.memory_bytes[0] > est.memory_bytes[1]
    one = pcm.estimate([], context=64, samples=3)
    assert one.memory_bytes[0] > max(est.memory_bytes)
    assert one.hop_s == [0.0]
    assert est.throughput_tok_s == pytest.approx(ring_throughput(3, est.stage_s, est.hop_s))
    assert est.round_s == pytest.approx(sum(est.stage_s) + sum(est.hop_s))
    # A worse channel only slows the hops.
    low = pcm.estimate([2, 4], context=64, samples=3, snr_db=[0.0, 0.0, 0.0])
    assert low.stage_s == est.stage_s and all(a > b for a, b in zip(low.hop_s, est.hop_s))
    assert all(e > 0 for e in est.energy_j)
    with pytest.raises(ValueError):
        pcm.estimate([1, 2, 3, 4], context=8)


def test_memory_limit_makes_dp_avoid_a_device(view):
    """A device whose budget cannot hold more than one layer's weights gets at most that."""
    from splitrl.cost.profiles import load_profile

    tiny = load_profile("ue", "phone-midrange")
    pcm0 = PipelineCostModel(view, [tiny, "jetson-orin"], "wifi6-20mhz")
    starter_min = pcm0.memory(0, 0, 1, 32, 1, starter=True)
    import dataclasses

    small = dataclasses.replace(tiny, name="small-phone", memory_budget_bytes=starter_min * 1.01)
    pcm = PipelineCostModel(view, [small, "jetson-orin"], "wifi6-20mhz")
    stage, hops = cost_fn(pcm, context=32, samples=1)
    cuts, v = dp_cuts(pcm.num_layers, 2, stage, hops)
    assert cuts[0] <= 1 and math.isfinite(v)
    out = compare_partitions(pcm, context=32, samples=1)
    assert out["dp"]["memory_ok"]


def test_measured_times_replace_roofline(view):
    t = DeviceTimes("this", tuple([1e-3] * view.num_layers), 1e-4, 5e-4)
    pcm = PipelineCostModel(view, ["jetson-orin", "jetson-orin"], "wifi6-20mhz",
                            times=[t, t.scaled(2.0, "fast")])
    est = pcm.estimate([3], context=16)
    assert est.stage_s[0] == pytest.approx(3e-3 + 6e-4) and est.stage_s[1] == pytest.approx(1.5e-3)


@pytest.mark.parametrize("K,S", [(1, 1), (1, 3), (2, 1), (2, 2), (3, 2), (3, 5), (4, 8)])
def test_simulator_matches_closed_form(K, S):
    rng = np.random.default_rng(K * 10 + S)
    stage = rng.uniform(1.0, 3.0, K)
    hop = rng.uniform(0.1, 1.5, K) if K > 1 else np.zeros(1)
    res = simulate_ring(stage, hop, S, 400, record=True)
    expect = ring_throughput(S, stage, hop if K > 1 else [0.0])
    assert res.steady_throughput() == pytest.approx(expect, rel=0.02)
    assert res.tokens == 400 * S


def test_simulator_cores_and_seed():
    # One core serialises every stage: 1 / sum(stage); as many cores as stages changes nothing.
    stage, hop = [1.0, 2.0, 0.5], [0.1, 0.1, 0.1]
    one = simulate_ring(stage, hop, 3, 200, cores=1, record=True)
    assert one.steady_throughput() == pytest.approx(1 / 3.5, rel=0.02)
    free = simulate_ring(stage, hop, 3, 200, record=True)
    assert simulate_ring(stage, hop, 3, 200, cores=3, record=True).makespan_s == pytest.approx(free.makespan_s)
    two = simulate_ring(stage, hop, 3, 200, cores=2, record=True)
    assert one.steady_throughput() < two.steady_throughput() <= min(2 / 3.5, free.steady_throughput()) * 1.01
    a = simulate_ring([1.0, 2.0], [0.3, 0.3], 2, 50, jitter=0.2, seed=4)
    b = simulate_ring([1.0, 2.0], [0.3, 0.3], 2, 50, jitter=0.2, seed=4)
    assert a.makespan_s == b.makespan_s and a.finish_s == b.finish_s
