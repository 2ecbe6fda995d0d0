"""The split model must compute exactly what the unsplit transformers model computes."""
import pytest
import torch

from splitrl.runtime import SamplingConfig, SplitRuntime

PROMPT = "The capital of France is Paris, and the capital of Italy is"


def _hf_greedy(loaded, ids, n):
    with torch.inference_mode():
        out = loaded.model.generate(ids, max_new_tokens=n, do_sample=False,
                                    pad_token_id=loaded.tokenizer.eos_token_id)
    return out[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("name", ["gpt2-tiny", "llama-tiny"])
def test_tiny_every_split_matches_unsplit_logits_and_generate(name, tiny_models):
    loaded = tiny_models[name]
    rt = SplitRuntime(loaded)
    ids = loaded.tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.inference_mode():
        ref = loaded.model(ids).logits
    expected = _hf_greedy(loaded, ids, 32)
    for s in range(rt.num_layers + 1):
        assert (rt.forward(ids, s) - ref).abs().max().item() <= 1e-5, f"split {s}"
        assert rt.generate(ids, s, max_new_tokens=32).token_ids == expected, f"split {s}"


def test_smollm2_every_split_matches_unsplit(smollm2):
    rt = SplitRuntime(smollm2)
    ids = smollm2.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.inference_mode():
        ref = smollm2.model(ids).logits
    expected = _hf_greedy(smollm2, ids, 32)
    for s in range(rt.num_layers + 1):
        assert (rt.forward(ids, s) - ref).abs().max().item() <= 1e-5, f"split {s}"
        got = rt.generate(ids, s, max_new_tokens=32).token_ids
        assert got == expected, f"split {s}: {got} != {expected}"


@pytest.mark.parametrize("name", ["gpt2-tiny", "llama-tiny"])
def test_three_segments_equal_two_segments(name, tiny_models):
    loaded = tiny_models[name]
    rt = SplitRuntime(loaded)
    L = rt.num_layers
    ids = loaded.tokenizer(PROMPT, return_tensors="pt").input_ids
    two = rt.forward(ids, 3)
    two_gen = rt.generate(ids, 3, max_new_tokens=16).token_ids
    for cuts in ([0, 3], [1, 3], [3, 3], [2, 5], [3, L], [0, L], [0, 0]):
        assert (rt.forward(ids, cuts) - two).abs().max().item() <= 1e-5, cuts
        assert rt.generate(ids, cuts, max_new_tokens=16).token_ids == two_gen, cuts


def test_smollm2_three_segments(smollm2):
    rt = SplitRuntime(smollm2)
    ids = smollm2.tokenizer("Wireless links", return_tensors="pt").input_ids
    a = rt.generate(ids, [10], max_new_tokens=12).token_ids
    assert rt.generate(ids, [10, 20], max_new_tokens=12).token_ids == a


def test_decode_uses_kv_caches_not_prefix_recompute(llama_tiny):
    rt = SplitRuntime(llama_tiny)
    ids = llama_tiny.tokenizer(PROMPT, return_tensors="pt").input_ids
    T = ids.shape[1]
    result = rt.generate(ids, [2, 4], max_new_tokens=10, stop_at_eos=False)
    report = result.report
    # Every decode step sends exactly one token's hidden state over each cut (fp32 frames, 16-byte header).
    H = llama_tiny.view.hidden_size
    assert report.prefill_bytes_per_boundary == [T * H * 4 + 16] * 2
    assert report.bytes_per_boundary == [(T + 9) * H * 4 + 10 * 16] * 2


def test_segment_caches_hold_only_their_layers(llama_tiny):
    rt = SplitRuntime(llama_tiny)
    partition = rt.partition([2, 4])
    segs = rt.segments(partition)
    for s in segs:
        s.reset()
    ids = torch.tensor([[11, 12, 13, 14]])
    payload = ids
    for k, seg in enumerate(segs):
        payload = seg.step(payload)
    for seg in segs:
        for layer in range(llama_tiny.view.num_layers):
            n = seg.cache.get_seq_length(layer)
            assert n == (4 if seg.spec.start <= layer < seg.spec.stop else 0)
        assert seg.seen_tokens == 4


def test_sampling_is_seeded(smollm2):
    rt = SplitRuntime(smollm2)
    cfg = dict(do_sample=True, temperature=0.9, top_k=50, top_p=0.95)
    a = rt.generate("Once upon a time", 12, max_new_tokens=16, sampling=SamplingConfig(seed=7, **cfg))
    b = rt.generate("Once upon a time", 20, max_new_tokens=16, sampling=SamplingConfig(seed=7, **cfg))
    c = rt.generate("Once upon a time", 12, max_new_tokens=16, sampling=SamplingConfig(seed=8, **cfg))
    assert a.token_ids == b.token_ids  # same seed: same tokens whatever the split (exact runtime)
    assert a.token_ids != c.token_ids


def test_top_k_one_is_greedy(gpt2_tiny):
    rt = SplitRuntime(gpt2_tiny)
    greedy = rt.generate(PROMPT, 3, max_new_tokens=8).token_ids
    sampled = rt.generate(PROMPT, 3, max_new_tokens=8, sampling=SamplingConfig(do_sample=True, top_k=1, seed=3)).token_ids
    assert sampled == greedy
