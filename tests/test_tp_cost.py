"""Cost model of tensor parallelism and weight streaming (splitrl.cost.tensor_parallel)."""
import dataclasses

import pytest

from splitrl.cost.tensor_parallel import (
    TensorParallelCost, TPDevice, TPLink, TPModelShape, allreduce_messages, allreduce_time_s,
)
from splitrl.errors import UsageError

SHAPE = TPModelShape(num_layers=30, hidden_size=576, layer_flops_per_token=7.2e6, layer_param_bytes=14.2e6,
                     head_flops_per_token=5.7e7, master_param_bytes=113e6)


def test_allreduce_formulas():
    B, a, R = 2304, 1e-3, 1e8
    assert allreduce_time_s("star", 4, B, a, R) == pytest.approx(2 * (a + 8 * B / R))
    assert allreduce_time_s("ring", 4, B, a, R) == pytest.approx(6 * (a + 8 * B / R / 4))
    assert allreduce_time_s("star", 1, B, a, R) == 0.0
    assert [allreduce_messages("star", n) for n in (2, 3, 4)] == [2, 2, 2]
    assert [allreduce_messages("ring", n) for n in (2, 3, 4)] == [2, 4, 6]
    # latency-bound: star beats ring for N > 2; bandwidth-bound with a shared medium the ring wins
    assert allreduce_time_s("star", 4, B, 5e-3, None) < allreduce_time_s("ring", 4, B, 5e-3, None)
    big = 1e8
    assert allreduce_time_s("ring", 4, big, 0, 1e8) < allreduce_time_s("star", 4, big, 0, 1e8, shared_medium=True)
    with pytest.raises(UsageError):
        allreduce_time_s("gossip", 3, B, a, R)


def test_one_device_equals_within_layers_for_n1_and_crossover_is_consistent():
    dev = TPDevice("d", 1e10)
    one = TensorParallelCost(SHAPE, [dev], TPLink())
    assert one.within_layers_s() == pytest.approx(one.one_device_s())
    tp = TensorParallelCost(SHAPE, [dev] * 4, TPLink(latency_s=1e-4, rate_bps=1e9))
    for kind in ("star", "ring"):
        a = tp.crossover_latency_s(kind)
        at = TensorParallelCost(SHAPE, [dev] * 4, dataclasses.replace(tp.link, latency_s=a))
        assert at.within_layers_s(kind) == pytest.approx(at.one_device_s(), rel=1e-9)
    assert tp.crossover_latency_s("star") > tp.crossover_latency_s("ring")


def test_heterogeneous_ratios_balance_compute():
    fast, slow = TPDevice("fast", 3e10), TPDevice("slow", 1e10)
    c = TensorParallelCost(SHAPE, [fast, slow], TPLink(latency_s=0, rate_bps=None))
    assert c.ratios == pytest.approx([0.75, 0.25])
    equal = TensorParallelCost(SHAPE, [fast, slow], TPLink(latency_s=0, rate_bps=None), ratios=[1, 1])
    assert c.compute_s() < equal.compute_s()


def test_streaming_memory_and_stalls():
    dev = TPDevice("d", 1e10, disk_bytes_per_s=1e10)
    c = TensorParallelCost(SHAPE, [dev, dev], TPLink(latency_s=1e-3, rate_bps=1e8))
    full, win = c.weight_bytes(1), c.weight_bytes(1, window=4)
    assert win == pytest.approx(4 * 0.5 * SHAPE.layer_param_bytes / 2)
    assert win / full < 0.1
    assert c.stream_stall_s(1, 4) == 0.0  # load 0.36 ms per block < busy ~2.6 ms per block
    slow_disk = TensorParallelCost(SHAPE, [dev, TPDevice("d2", 1e10, disk_bytes_per_s=1e7)], c.link)
    assert slow_disk.stream_stall_s(1, 4) > 0
    assert slow_disk.stream_stall_s(1, 1) > slow_disk.stream_stall_s(1, 4)
    cmp = c.compare("star", window=4)
    assert set(cmp) >= {"one_device_s", "between_layers_s", "within_layers_s", "within_layers_streamed_s"}
