"""The WikiText-2 raw test corpus: located, checksum-verified, tokenised once.

Default path: ``../shared/data/wikitext-2-raw/wiki.test.raw`` relative to the repository (override
with the ``path`` argument, ``--corpus`` or ``$SPLITRL_WIKITEXT``). The file is user data: it is never
copied into the repo nor shipped in the wheel, so an installed package (no checkout around it)
needs ``$SPLITRL_WIKITEXT`` or ``--corpus``; the not-found error says so.
Online users without the file can pass ``source="datasets"`` to fetch it with the ``datasets`` library.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from splitrl.errors import UsageError
from splitrl.resources import checkout_root

WIKITEXT2_TEST_SHA256 = "4f3e427e4aff23acff917a8a51aeae21bf12832256e26914c8fc250dcef4103c"
_REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_WIKITEXT_PATH = _REPO_ROOT.parent / "shared" / "data" / "wikitext-2-raw" / "wiki.test.raw"


class CorpusError(UsageError):
    """The corpus file is missing or is not the expected WikiText-2 test split."""


def wikitext_path(path: str | os.PathLike | None = None) -> Path:
    """Resolve the corpus path: argument, then ``$SPLITRL_WIKITEXT``, then the default."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("SPLITRL_WIKITEXT")
    return Path(env).expanduser() if env else DEFAULT_WIKITEXT_PATH


def load_wikitext2_test(path: str | os.PathLike | None = None, *, source: str = "file", verify: bool = True) -> str:
    """Return the WikiText-2 raw test split as one string with ``\\n`` line ends.

    Args:
        path: the ``wiki.test.raw`` file (default: see module docstring).
        source: ``"file"`` or ``"datasets"`` (online: Hugging Face ``wikitext-2-raw-v1`` test split).
        verify: check the file's SHA-256 against the published checksum.
    """
    if source == "datasets":
        try:
            from datasets import load_dataset
        except ImportError as e:
            raise CorpusError("source='datasets' needs `pip install datasets` and network access") from e
        return "".join(load_dataset("wikitext", "wikitext-2-raw-v1", split="test")["text"])
    if source != "file":
        raise CorpusError(f"corpus source must be 'file' or 'datasets', got {source!r}")
    p = wikitext_path(path)
    if not p.is_file():
        # An installed wheel has no checkout, so its default path is never there: say what it is.
        default = ""
        if p == DEFAULT_WIKITEXT_PATH:
            default = (" (the default, ../shared/data/... beside a checkout)" if checkout_root() is not None
                       else " (the default beside a checkout; this splitrl is installed without one)")
        raise CorpusError(
            f"WikiText-2 test file not found at {p}{default}. Point to it with --corpus PATH or "
            f"SPLITRL_WIKITEXT=PATH, or (online) use --corpus-source datasets"
        )
    raw = p.read_bytes()
    if verify:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != WIKITEXT2_TEST_SHA256:
            raise CorpusError(
                f"{p} has SHA-256 {digest}, expected {WIKITEXT2_TEST_SHA256} (WikiText-2 raw test); "
                "the file is corrupt or a different split"
            )
    return raw.decode("utf-8").replace("\r\n", "\n")


_TOKEN_CACHE: dict[tuple, torch.Tensor] = {}


def corpus_tokens(tokenizer, max_tokens: int | None = None, *, path=None, source: str = "file") -> torch.Tensor:
    """Token ids ``[1, N]`` of the corpus (first ``max_tokens`` if given), memoised per tokenizer."""
    if max_tokens is not None and max_tokens < 2:
        raise UsageError(f"tokens must be >= 2 to score at least one prediction, got {max_tokens}")
    key = (id(tokenizer), str(wikitext_path(path)) if source == "file" else "datasets", max_tokens)
    if key not in _TOKEN_CACHE:
        text = load_wikitext2_test(path, source=source)
        if max_tokens is not None and max_tokens > len(text):  # no tokenizer makes more tokens than characters
            raise CorpusError(f"tokens: {max_tokens} is more than the corpus holds ({len(text)} characters); "
                              "ask for fewer --tokens")
        if max_tokens is not None:
            # Tokenising the whole 1.3 MB file takes seconds; ~8 chars/token is a generous bound.
            chunk = text[: max(10_000, 8 * max_tokens)]
            ids = tokenizer(chunk, return_tensors="pt").input_ids
            if ids.shape[1] < max_tokens:
                ids = tokenizer(text, return_tensors="pt").input_ids
            if ids.shape[1] < max_tokens:
                raise CorpusError(f"tokens: {max_tokens} is more than the corpus's {ids.shape[1]} tokens "
                                  f"(for this tokenizer); use --tokens {ids.shape[1]} or fewer")
            ids = ids[:, :max_tokens]
        else:
            ids = tokenizer(text, return_tensors="pt").input_ids
        _TOKEN_CACHE[key] = ids
    return _TOKEN_CACHE[key]
