"""One device's share of a partitioned model: a layer range, its own KV cache, its own clock.

A `Segment` holds *references* to the shared model's modules (re-partitioning never copies or
reloads weights). The UE segment embeds token ids; the segment that owns layer ``L-1`` runs the
head. Each segment tracks how many tokens it has seen, so positions are derived locally — as a
real device, which sees only its own cache, would.
"""
from __future__ import annotations

import time

import torch
from transformers.cache_utils import DynamicCache

from splitrl.models.view import DecoderView
from splitrl.runtime.partition import SegmentSpec
from splitrl.errors import UsageError


class Segment:
    """Executes layers ``[spec.start, spec.stop)`` (plus embeddings/head when it owns them)."""

    def __init__(self, view: DecoderView, spec: SegmentSpec) -> None:
        self.view = view
        self.spec = spec
        self.cache: DynamicCache | None = None
        self.seen_tokens = 0
        self.seconds = 0.0

    def reset(self) -> None:
        """Drop the KV cache and the clock (start of a new request)."""
        self.cache = DynamicCache(config=self.view.config) if not self.spec.is_empty else None
        self.seen_tokens = 0
        self.seconds = 0.0

    def step(self, payload: torch.Tensor, *, use_cache: bool = True, logits_last_only: bool = True) -> torch.Tensor:
        """Run this segment on what arrived: token ids or hidden states in, hidden states or logits out.

        With ``use_cache`` the segment appends to its KV cache (prefill then decode); without, it
        runs the payload as one full causal sequence (perplexity evaluation).
        """
        spec = self.spec
        if spec.is_empty:
            return payload
        t0 = time.perf_counter()
        n = payload.shape[1]
        offset = self.seen_tokens if use_cache else 0
        position_ids = torch.arange(offset, offset + n, device=payload.device).unsqueeze(0)
        if spec.has_embed:
            if payload.is_floating_point():
                raise TypeError(f"segment {spec.index} ({spec.role}) embeds token ids, got a float payload")
            hidden = self.view.embed(payload, position_ids, spec.precision)
        else:
            if not payload.is_floating_point():
                raise TypeError(f"segment {spec.index} ({spec.role}) starts at layer {spec.start} and needs hidden states")
            if payload.shape[-1] != self.view.hidden_size:
                raise UsageError(
                    f"segment {spec.index} ({spec.role}) got hidden size {payload.shape[-1]}, "
                    f"expected {self.view.hidden_size}"
                )
            hidden = payload
        if use_cache and self.cache is None:
            self.reset()
        hidden = self.view.run_layers(
            hidden, spec.start, spec.stop, position_ids, cache=self.cache if use_cache else None,
            precision=spec.precision,
        )
        if use_cache:
            self.seen_tokens += n
        out = hidden
        if spec.has_head:
            out = self.view.head(hidden[:, -1:, :] if logits_last_only else hidden, spec.precision)
        self.seconds += time.perf_counter() - t0
        return out
