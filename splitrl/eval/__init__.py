"""Perplexity evaluation of split models on WikiText-2, with prefix caching."""
from splitrl.eval.corpus import (
    DEFAULT_WIKITEXT_PATH, WIKITEXT2_TEST_SHA256, CorpusError, corpus_tokens, load_wikitext2_test, wikitext_path,
)
from splitrl.eval.perplexity import (
    PerplexityConfig, PerplexityEvaluator, PerplexityResult, PrefixCache, Window, reference_perplexity, sliding_windows,
)

__all__ = [
    "DEFAULT_WIKITEXT_PATH", "WIKITEXT2_TEST_SHA256", "CorpusError", "corpus_tokens", "load_wikitext2_test",
    "wikitext_path", "PerplexityConfig", "PerplexityEvaluator", "PerplexityResult", "PrefixCache", "Window",
    "reference_perplexity", "sliding_windows",
]
