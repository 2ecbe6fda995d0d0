"""Sliding-window perplexity of a split model, with a prefix cache of clean hidden states.

Windows follow the standard method (Hugging Face's perplexity guide): windows of ``window``
tokens start every ``stride`` tokens; each token is scored once, by the first window that ends
after it, with up to ``window - stride`` tokens of context; the corpus's first token is never
scored. For a fixed text the clean hidden states at every cut are computed once (`PrefixCache`),
so evaluating split ``s`` through a corrupting link runs only layers ``[s, L)`` and the head —
and the head only on the positions that are scored.
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from splitrl.eval.corpus import corpus_tokens
from splitrl.models.loader import LoadedModel
from splitrl.models.view import DecoderView
from splitrl.runtime.engine import SplitRuntime
from splitrl.link.base import Link
from splitrl.runtime.partition import Partition
from splitrl.errors import UsageError


@dataclass
class PerplexityConfig:
    """What text is scored and how.

    Attributes:
        tokens: number of corpus tokens to use (>= 2).
        window: tokens per forward pass (context window), >= 2.
        stride: tokens between window starts, in [1, window].
        corpus_path: WikiText-2 ``wiki.test.raw`` (None: ``$SPLITRL_WIKITEXT`` or ``../shared/data/...``).
        corpus_source: ``file`` or ``datasets`` (online).
    """

    tokens: int = 1024
    window: int = 512
    stride: int = 256
    corpus_path: str | None = None
    corpus_source: str = "file"

    def __post_init__(self) -> None:
        if self.tokens < 2:
            raise UsageError(f"tokens must be >= 2, got {self.tokens}")
        if self.window < 2:
            raise UsageError(f"window must be >= 2, got {self.window}")
        if not 1 <= self.stride <= self.window:
            raise UsageError(f"stride must be in [1, window={self.window}], got {self.stride}")


@dataclass(frozen=True)
class Window:
    """Tokens ``[begin, end)`` are run; predictions of tokens ``[score_from, end)`` are scored."""

    begin: int
    end: int
    score_from: int

    @property
    def n_scored(self) -> int:
        return self.end - self.score_from


def sliding_windows(n_tokens: int, window: int, stride: int) -> list[Window]:
    """The standard strided windows over ``n_tokens`` tokens (each token scored exactly once)."""
    out, prev_end = [], 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + window, n_tokens)
        out.append(Window(begin, end, max(prev_end, begin + 1)))
        prev_end = end
        if end == n_tokens:
            break
    return [w for w in out if w.n_scored > 0]


@dataclass
class PerplexityResult:
    """Perplexity of one evaluation. ``nll`` is the mean negative log-likelihood (nats/token)."""

    ppl: float
    nll: float
    tokens: int
    scored_tokens: int
    split: list[int]
    seconds: float
    window: int
    stride: int
    precision: list[str] = field(default_factory=list)  # of each segment

    def to_dict(self) -> dict:
        return asdict(self)


class PrefixCache:
    """Clean hidden states at every cut, per window, within a memory budget.

    Entries are evicted least-recently-used past ``max_bytes``; a missing cut is recomputed from
    the nearest cached cut below it (or from the embeddings), never from scratch if avoidable.
    """

    def __init__(self, view: DecoderView, input_ids: torch.Tensor, windows: Sequence[Window], max_bytes: int = 1 << 30) -> None:
        if max_bytes < 0:
            raise UsageError(f"max_bytes must be >= 0, got {max_bytes}")
        self.view, self.input_ids, self.windows, self.max_bytes = view, input_ids, list(windows), int(max_bytes)
        self._store: OrderedDict[tuple[int, int], torch.Tensor] = OrderedDict()
        self.bytes = 0
        self.layers_run = 0  # layer applications spent filling the cache (cost accounting)

    def _put(self, key: tuple[int, int], hidden: torch.Tensor) -> None:
        size = hidden.numel() * hidden.element_size()
        if size > self.max_bytes:
            return
        while self.bytes + size > self.max_bytes and self._store:
            _, old = self._store.popitem(last=False)
            self.bytes -= old.numel() * old.element_size()
        self._store[key] = hidden
        self.bytes += size

    def _positions(self, w: Window) -> torch.Tensor:
        return torch.arange(0, w.end - w.begin, device=self.input_ids.device).unsqueeze(0)

    @torch.inference_mode()
    def hidden(self, window_index: int, cut: int, precision: str | None = None) -> torch.Tensor:
        """Hidden states ``[1, T, H]`` entering layer ``cut`` (1 <= cut <= L) for one window, with
        layers ``[0, cut)`` at ``precision`` (the UE's; default the model's own)."""
        L = self.view.num_layers
        if not 1 <= cut <= L:
            raise UsageError(f"prefix cache holds cuts 1..{L}, asked for {cut}")
        p = precision or self.view.base_precision
        key = (window_index, cut, p)
        if key in self._store:
            self._store.move_to_end(key)
            return self._store[key]
        w = self.windows[window_index]
        pos = self._positions(w)
        start = max((c for (wi, c, q) in self._store if wi == window_index and q == p and c < cut), default=0)
        if start == 0:
            hidden = self.view.embed(self.input_ids[:, w.begin:w.end], pos, p)
        else:
            hidden = self._store[(window_index, start, p)]
        # Fill every cut up to L on a miss: the first request for a window is usually followed by others.
        for layer in range(start, L):
            hidden = self.view.run_layers(hidden, layer, layer + 1, pos, precision=p)
            self.layers_run += 1
            self._put((window_index, layer + 1, p), hidden)
        return self._store.get(key) if key in self._store else self._recompute(window_index, cut, p)

    def _recompute(self, window_index: int, cut: int, precision: str) -> torch.Tensor:
        # Budget too small to keep this entry: run from the embeddings without storing.
        w = self.windows[window_index]
        pos = self._positions(w)
        hidden = self.view.embed(self.input_ids[:, w.begin:w.end], pos, precision)
        hidden = self.view.run_layers(hidden, 0, cut, pos, precision=precision)
        self.layers_run += cut
        return hidden


class PerplexityEvaluator:
    """Perplexity of the model split at ``s`` (or any partition), through a link, on WikiText-2.

    Args:
        model: a `LoadedModel` (or a `DecoderView` plus ``tokenizer``).
        config: tokens, window, stride and corpus location.
        input_ids: score these token ids ``[1, N]`` instead of the corpus.
        cache_bytes: memory budget of the prefix cache (0 disables it).
        progress: show a progress bar over windows.
    """

    def __init__(
        self,
        model: LoadedModel | DecoderView,
        config: PerplexityConfig | None = None,
        *,
        tokenizer=None,
        input_ids: torch.Tensor | None = None,
        cache_bytes: int = 1 << 30,
        progress: bool = False,
    ) -> None:
        self.config = config or PerplexityConfig()
        self.runtime = SplitRuntime(model, tokenizer)
        self.view = self.runtime.view
        if input_ids is None:
            if self.runtime.tokenizer is None:
                raise UsageError("a tokenizer is needed to read the corpus; pass tokenizer= or input_ids=")
            input_ids = corpus_tokens(
                self.runtime.tokenizer, self.config.tokens,
                path=self.config.corpus_path, source=self.config.corpus_source,
            )
        self.input_ids = input_ids[:, : self.config.tokens].to(self.view.device)
        n = self.input_ids.shape[1]
        if self.view.max_positions and self.config.window > self.view.max_positions:
            raise UsageError(f"window {self.config.window} exceeds the model's {self.view.max_positions} positions")
        self.windows = sliding_windows(n, self.config.window, self.config.stride)
        self.prefix = PrefixCache(self.view, self.input_ids, self.windows, max_bytes=cache_bytes) if cache_bytes > 0 else None
        self.progress = progress

    @property
    def scored_tokens(self) -> int:
        return sum(w.n_scored for w in self.windows)

    def _window_nll(self, w: Window, hidden_final: torch.Tensor, precision: str | None = None) -> float:
        # hidden at local position i predicts token i+1: score targets [score_from, end).
        lo = w.score_from - w.begin
        logits = self.view.head(hidden_final[:, lo - 1 : w.end - w.begin - 1, :], precision).float()
        targets = self.input_ids[:, w.score_from : w.end]
        return float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"))

    def _iter(self, desc: str) -> Iterable[tuple[int, Window]]:
        it = enumerate(self.windows)
        if self.progress and len(self.windows) > 1:
            it = tqdm(it, total=len(self.windows), desc=desc, unit="win", leave=False)
        return it

    @torch.inference_mode()
    def evaluate(
        self,
        split: int | Sequence[int] | Partition,
        link: Link | Sequence[Link] | None = None,
        *,
        use_prefix_cache: bool = True,
        precision: str | Sequence[str] | None = None,
    ) -> PerplexityResult:
        """Perplexity with the model cut at ``split`` and ``link`` applied at each cut.

        A single split point uses the prefix cache (only layers ``[s, L)`` run); multi-cut
        partitions, or ``use_prefix_cache=False``, run the whole partition per window.
        ``precision``: one name or one per segment (see `SplitRuntime.generate`).
        """
        t0 = time.perf_counter()
        partition = self.runtime.partition(split, precision)
        L = self.view.num_layers
        ue_p = partition.precision_of(0)
        head_p = partition.precision_of(partition.head_segment)
        nll_sum = 0.0
        cached = use_prefix_cache and self.prefix is not None and len(partition.cuts) == 1
        for wi, w in self._iter(f"ppl split {list(partition.cuts)}"):
            pos = torch.arange(0, w.end - w.begin, device=self.input_ids.device).unsqueeze(0)
            if cached:
                s = partition.cuts[0]
                if s == 0:
                    # Token ids cross losslessly, so the edge computes the clean model: its final
                    # hidden states are already in the prefix cache. Recompute only if a link altered ids.
                    ids = self.input_ids[:, w.begin:w.end]
                    received = self._single_link(partition, link).transmit(ids, phase="eval") if link is not None else ids
                    if torch.equal(received, ids):
                        hidden = self.prefix.hidden(wi, L, head_p)
                    else:
                        hidden = self.view.run_layers(self.view.embed(received, pos, head_p), 0, L, pos,
                                                      precision=head_p)
                else:
                    hidden = self.prefix.hidden(wi, s, ue_p)
                    if s < L and link is not None:
                        hidden = self._single_link(partition, link).transmit(hidden, boundary=0, phase="eval")
                    hidden = self.view.run_layers(hidden, s, L, pos, precision=head_p)
            else:
                hidden = self._run_partition(partition, link, w, pos)
            nll_sum += self._window_nll(w, hidden, head_p)
        n = self.scored_tokens
        nll = nll_sum / n
        return PerplexityResult(
            ppl=math.exp(nll), nll=nll, tokens=int(self.input_ids.shape[1]), scored_tokens=n,
            split=list(partition.cuts), seconds=time.perf_counter() - t0,
            window=self.config.window, stride=self.config.stride,
            precision=[partition.precision_of(k) for k in range(partition.num_segments)],
        )

    def _single_link(self, partition: Partition, link: Link | Sequence[Link]) -> Link:
        return link if isinstance(link, Link) else self.runtime.links_for(partition, link)[0]

    def _run_partition(self, partition: Partition, link, w: Window, pos: torch.Tensor) -> torch.Tensor:
        """Final hidden states (before the head) of one window through every segment and link."""
        links = self.runtime.links_for(partition, link)
        payload = self.input_ids[:, w.begin:w.end]
        for spec in partition.segments():
            if not spec.is_empty:
                hidden = self.view.embed(payload, pos, spec.precision) if spec.has_embed else payload
                payload = self.view.run_layers(hidden, spec.start, spec.stop, pos, precision=spec.precision)
            if spec.index < len(partition.cuts) and partition.crosses(spec.index):
                payload = links[spec.index].transmit(payload, boundary=spec.index, phase="eval")
        return payload


@torch.inference_mode()
def reference_perplexity(model: torch.nn.Module, input_ids: torch.Tensor, window: int, stride: int) -> float:
    """Perplexity computed the standard way with plain ``transformers`` (``model(ids, labels=...)``).

    The baseline the evaluator is tested and benchmarked against: the whole model runs on every
    window and the loss is averaged over exactly the scored tokens.
    """
    nll_sum, n = 0.0, 0
    for w in sliding_windows(input_ids.shape[1], window, stride):
        ids = input_ids[:, w.begin:w.end]
        labels = ids.clone()
        labels[:, : w.score_from - w.begin] = -100
        loss = model(ids, labels=labels).loss
        k = int((labels[:, 1:] != -100).sum())
        nll_sum += float(loss) * k
        n += k
    return math.exp(nll_sum / n)
