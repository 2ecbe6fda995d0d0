"""Perplexity through the split model: windows, equality with plain transformers, prefix cache, corpus."""
import hashlib

import pytest
import torch

from splitrl.link.codec import FP32Codec

from splitrl.eval import (
    CorpusError, PerplexityConfig, PerplexityEvaluator, load_wikitext2_test, reference_perplexity, sliding_windows,
)
from splitrl.eval.corpus import DEFAULT_WIKITEXT_PATH, WIKITEXT2_TEST_SHA256
from splitrl.runtime import Link


@pytest.mark.parametrize("n,window,stride", [(100, 32, 16), (100, 32, 32), (97, 40, 7), (10, 64, 32), (33, 8, 1)])
def test_windows_score_every_token_but_the_first_exactly_once(n, window, stride):
    scored = []
    for w in sliding_windows(n, window, stride):
        assert w.end - w.begin <= window and w.begin < w.score_from <= w.end
        if stride < window:
            assert w.score_from - w.begin <= window - stride or w.begin == 0 or w.score_from == w.begin + 1
        scored.extend(range(w.score_from, w.end))
    if stride < window:
        assert scored == list(range(1, n))
    else:  # non-overlapping windows: each window's first token has no context
        assert len(scored) == len(set(scored)) and 0 not in scored


@pytest.mark.parametrize("name", ["gpt2-tiny", "llama-tiny"])
def test_identity_link_ppl_equals_transformers(name, tiny_models):
    loaded = tiny_models[name]
    ids = torch.randint(0, 5000, (1, 300), generator=torch.Generator().manual_seed(0))
    cfg = PerplexityConfig(tokens=300, window=64, stride=24)
    ev = PerplexityEvaluator(loaded, cfg, input_ids=ids)
    ref = reference_perplexity(loaded.model, ids, 64, 24)
    for s in range(loaded.view.num_layers + 1):
        got = ev.evaluate(s).ppl
        assert abs(got - ref) / ref <= 1e-6, (s, got, ref)
    assert abs(ev.evaluate([1, 4]).ppl - ref) / ref <= 1e-6


def test_smollm2_wikitext_ppl_equals_transformers(smollm2):
    cfg = PerplexityConfig(tokens=384, window=256, stride=128)
    ev = PerplexityEvaluator(smollm2, cfg)
    ref = reference_perplexity(smollm2.model, ev.input_ids, 256, 128)
    for s in (0, 1, 15, 29, 30):
        r = ev.evaluate(s)
        assert abs(r.ppl - ref) / ref <= 1e-6, (s, r.ppl, ref)
        assert r.scored_tokens == 383 and r.tokens == 384
    assert 5 < ref < 200  # a real model on real text


class _HalvingLink(Link):
    """A deterministic lossy link: tests that the cached path applies the link at the right place."""

    def _encode(self, hidden):
        data = FP32Codec().encode(hidden * 0.5).to_bytes()
        return data, len(data)


@pytest.mark.parametrize("cache_bytes", [1 << 30, 300_000, 0])
def test_prefix_cache_gives_the_uncached_result_under_a_lossy_link(llama_tiny, cache_bytes):
    ids = torch.randint(0, 5000, (1, 200), generator=torch.Generator().manual_seed(1))
    ev = PerplexityEvaluator(llama_tiny, PerplexityConfig(tokens=200, window=64, stride=32), input_ids=ids,
                             cache_bytes=cache_bytes)
    clean = ev.evaluate(3).ppl
    for s in range(1, llama_tiny.view.num_layers):
        cached = ev.evaluate(s, _HalvingLink())
        naive = ev.evaluate(s, _HalvingLink(), use_prefix_cache=False)
        assert cached.ppl == pytest.approx(naive.ppl, rel=1e-6)
        assert cached.ppl != pytest.approx(clean, rel=1e-3)
    if ev.prefix is not None:
        assert ev.prefix.bytes <= cache_bytes


def test_prefix_cache_runs_each_window_once(llama_tiny):
    ids = torch.randint(0, 5000, (1, 200), generator=torch.Generator().manual_seed(2))
    ev = PerplexityEvaluator(llama_tiny, PerplexityConfig(tokens=200, window=64, stride=32), input_ids=ids)
    L = llama_tiny.view.num_layers
    for s in range(1, L + 1):
        ev.evaluate(s, _HalvingLink())
    assert ev.prefix.layers_run == len(ev.windows) * L  # one full pass per window, reused by every split


def test_link_records_eval_traffic(llama_tiny):
    ids = torch.randint(0, 5000, (1, 100), generator=torch.Generator().manual_seed(3))
    ev = PerplexityEvaluator(llama_tiny, PerplexityConfig(tokens=100, window=50, stride=50), input_ids=ids)
    link = _HalvingLink()
    ev.evaluate(2, link)
    assert [t.shape for t in link.transfers] == [(1, 50, 64), (1, 50, 64)]


def test_corpus_checksum_and_clear_errors(tmp_path):
    if not DEFAULT_WIKITEXT_PATH.is_file():
        pytest.skip("shared WikiText-2 not present beside the repo")
    text = load_wikitext2_test()
    assert text.startswith(" = Robert Boulter = \n") and "\r" not in text
    assert hashlib.sha256(DEFAULT_WIKITEXT_PATH.read_bytes()).hexdigest() == WIKITEXT2_TEST_SHA256
    bad = tmp_path / "wiki.test.raw"
    bad.write_bytes(DEFAULT_WIKITEXT_PATH.read_bytes()[:-10])
    with pytest.raises(CorpusError, match="SHA-256"):
        load_wikitext2_test(bad)
    with pytest.raises(CorpusError, match="--corpus PATH"):
        load_wikitext2_test(tmp_path / "missing.raw")


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="stride"):
        PerplexityConfig(window=16, stride=32)
    with pytest.raises(ValueError, match="tokens"):
        PerplexityConfig(tokens=1)


class _TokenScramblingLink(Link):
    """Breaks the token-id contract: the evaluator must then recompute instead of reusing the cache."""

    def transmit(self, payload, **kw):
        return super().transmit(payload.flip(-1) if not payload.is_floating_point() else payload, **kw)

    def _encode(self, hidden):
        data = FP32Codec().encode(hidden).to_bytes()
        return data, len(data)


def test_split_zero_reuses_clean_states_only_when_ids_arrive_intact(llama_tiny):
    ids = torch.randint(0, 5000, (1, 120), generator=torch.Generator().manual_seed(4))
    ev = PerplexityEvaluator(llama_tiny, PerplexityConfig(tokens=120, window=60, stride=30), input_ids=ids)
    clean = ev.evaluate(0, _HalvingLink()).ppl
    assert clean == pytest.approx(ev.evaluate(0, _HalvingLink(), use_prefix_cache=False).ppl, rel=1e-6)
    scrambled = ev.evaluate(0, _TokenScramblingLink())
    assert scrambled.ppl == pytest.approx(ev.evaluate(0, _TokenScramblingLink(), use_prefix_cache=False).ppl, rel=1e-6)
    assert scrambled.ppl != pytest.approx(clean, rel=1e-3)
