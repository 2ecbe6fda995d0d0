"""Partition validation, what crosses each cut, and re-partitioning without reloading weights."""
import pytest
import torch

from splitrl.link.codec import FP16Codec

from splitrl.runtime import LosslessLink, InvalidPartitionError, Link, Partition, SamplingConfig, SplitRuntime


def test_partition_validation_messages():
    with pytest.raises(InvalidPartitionError, match=r"allowed 0\.\.30"):
        Partition.of(31, 30)
    with pytest.raises(InvalidPartitionError, match=r"allowed 0\.\.30"):
        Partition.of(-1, 30)
    with pytest.raises(InvalidPartitionError, match="non-decreasing"):
        Partition.of([10, 5], 30)
    with pytest.raises(InvalidPartitionError, match="integer"):
        Partition.of([1.5], 30)


def test_segment_roles_and_ownership():
    segs = Partition.of([0, 30], 30).segments()
    assert [s.role for s in segs] == ["ue", "hop1", "edge"]
    assert [(s.start, s.stop, s.has_embed, s.has_head) for s in segs] == [
        (0, 0, False, False), (0, 30, True, True), (30, 30, False, False)]
    segs = Partition.of([12], 30).segments()
    assert segs[0].has_embed and not segs[0].has_head and segs[1].has_head


def test_split_zero_sends_token_ids_and_split_L_sends_nothing(gpt2_tiny):
    rt = SplitRuntime(gpt2_tiny)
    L = rt.num_layers
    ids = gpt2_tiny.tokenizer("hello there radio", return_tensors="pt").input_ids
    T = ids.shape[1]
    r0 = rt.generate(ids, 0, max_new_tokens=5, stop_at_eos=False).report
    assert r0.prefill_bytes_per_boundary == [2 * T] and r0.bytes_per_boundary == [2 * (T + 4)]
    assert r0.token_return_bytes == 2 * 5
    rL = rt.generate(ids, L, max_new_tokens=5, stop_at_eos=False).report
    assert rL.bytes_per_boundary == [0] and rL.token_return_bytes == 0


def test_repartitioning_keeps_one_copy_of_the_weights(llama_tiny):
    rt = SplitRuntime(llama_tiny)
    ptrs = {n: p.data_ptr() for n, p in llama_tiny.model.named_parameters()}
    for cuts in ([1], [5], [2, 4], [0]):
        segs = rt.segments(rt.partition(cuts))
        for seg in segs:
            for layer in rt.view.layers[seg.spec.start:seg.spec.stop]:
                assert any(layer is m for m in llama_tiny.model.model.layers)
        rt.generate("abc", cuts, max_new_tokens=2)
    assert ptrs == {n: p.data_ptr() for n, p in llama_tiny.model.named_parameters()}


class _CountingLink(Link):
    """Lossless, records shapes: checks what the runtime hands a link."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def _encode(self, hidden):
        self.shapes.append(tuple(hidden.shape))
        data = FP16Codec().encode(hidden).to_bytes()
        return data, hidden.numel() * 2


def test_links_see_prefill_then_one_token_per_step(llama_tiny):
    rt = SplitRuntime(llama_tiny)
    link = _CountingLink()
    ids = torch.tensor([[3, 4, 5, 6, 7]])
    r = rt.generate(ids, 3, max_new_tokens=4, links=link, stop_at_eos=False)
    H = llama_tiny.view.hidden_size
    assert link.shapes == [(1, 5, H)] + [(1, 1, H)] * 3
    assert [t.phase for t in link.transfers] == ["prefill", "decode", "decode", "decode"]
    assert r.report.bytes_per_boundary == [link.bytes_total] == [(5 + 3) * H * 2]


def test_one_link_per_cut_is_enforced(llama_tiny):
    rt = SplitRuntime(llama_tiny)
    with pytest.raises(ValueError, match="one link per cut"):
        rt.generate("abc", [1, 2], links=[LosslessLink()], max_new_tokens=1)


def test_bad_requests_fail_clearly(llama_tiny):
    rt = SplitRuntime(llama_tiny)
    with pytest.raises(ValueError, match="max_new_tokens"):
        rt.generate("abc", 1, max_new_tokens=0)
    with pytest.raises(ValueError, match=r"\[1, T\]"):
        rt.generate(torch.tensor([1, 2, 3]), 1)
    with pytest.raises(ValueError, match="positions"):
        rt.generate(torch.ones(1, 500, dtype=torch.long), 1, max_new_tokens=100)
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(temperature=0)
    seg = rt.segments(rt.partition([2]))[1]
    seg.reset()
    with pytest.raises(ValueError, match="hidden size"):
        seg.step(torch.zeros(1, 2, 7))
    with pytest.raises(TypeError, match="needs hidden states"):
        seg.step(torch.zeros(1, 2, dtype=torch.long))


def test_report_fields(smollm2):
    rt = SplitRuntime(smollm2)
    r = rt.generate("Radio waves", 15, max_new_tokens=6, stop_at_eos=False).report
    assert r.cuts == [15] and r.roles == ["ue", "edge"] and r.new_tokens == 6
    assert r.prompt_tokens == len(smollm2.tokenizer("Radio waves").input_ids)
    assert r.bytes_per_boundary == [(r.prompt_tokens + 5) * 576 * 4 + 6 * 16]  # fp32 frames, 16-byte header each
    assert all(s > 0 for s in r.segment_seconds) and r.decode_tokens_per_s > 0
    assert "cut 0 at layer 15" in r.format()
