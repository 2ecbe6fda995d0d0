"""Next-token selection: greedy, or sampling with temperature / top-k / top-p from a seeded generator."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from splitrl.errors import UsageError


@dataclass
class SamplingConfig:
    """How the next token is chosen.

    Attributes:
        do_sample: False = greedy (argmax); True = sample from the filtered distribution.
        temperature: softmax temperature, > 0.
        top_k: keep the k most likely tokens (0 = off).
        top_p: nucleus sampling, keep the smallest set with cumulative probability >= top_p (1.0 = off), in (0, 1].
        seed: seed of the sampling generator (same seed -> same tokens).
    """

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise UsageError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise UsageError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise UsageError(f"top_p must be in (0, 1], got {self.top_p}")


class TokenSampler:
    """Applies a `SamplingConfig` to last-position logits ``[B, V]``."""

    def __init__(self, config: SamplingConfig) -> None:
        self.config = config
        self.generator = torch.Generator().manual_seed(int(config.seed))

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        c = self.config
        if not c.do_sample:
            return logits.argmax(dim=-1)
        scores = logits.float() / c.temperature
        if c.top_k > 0:
            kth = torch.topk(scores, min(c.top_k, scores.shape[-1]), dim=-1).values[..., -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if c.top_p < 1.0:
            sorted_scores, order = torch.sort(scores, descending=False, dim=-1)
            cum = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
            remove_sorted = cum <= (1 - c.top_p)
            remove_sorted[..., -1] = False  # always keep the most likely token
            remove = remove_sorted.scatter(-1, order, remove_sorted)
            scores = scores.masked_fill(remove, float("-inf"))
        probs = scores.softmax(dim=-1)
        return torch.multinomial(probs.cpu(), 1, generator=self.generator).squeeze(-1).to(logits.device)
