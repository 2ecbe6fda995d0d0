"""The partitioned runtime: one model in memory, any partition per request, links at the cuts.

`SplitRuntime` owns the model once. Each request builds light `Segment`s over it for the
requested cut points, runs prefill and token-by-token decode segment by segment with a KV cache
per segment, passes what crosses each cut through that boundary's `Link`, and returns the text
with a `RequestReport` (tokens, bytes per boundary, time per segment, tokens/s, split).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch

from splitrl.models.loader import LoadedModel
from splitrl.models.view import DecoderView
from splitrl.runtime.link import IdentityLink, Link, token_id_bytes
from splitrl.runtime.partition import Partition
from splitrl.runtime.sampling import SamplingConfig, TokenSampler
from splitrl.runtime.segment import Segment


@dataclass
class RequestReport:
    """What one generation request did.

    Attributes:
        cuts: the partition's cut points (``[s]`` for a UE/edge split).
        roles: role of each segment (``ue``, ``hop1``.., ``edge``).
        prompt_tokens, new_tokens: token counts.
        bytes_per_boundary: bytes that crossed each cut (prefill + decode).
        prefill_bytes_per_boundary: of which during prefill.
        token_return_bytes: bytes of sampled token ids returned to the UE (downlink).
        segment_seconds: measured wall time per segment.
        link_seconds: wall time spent inside links (emulation cost, not air time).
        prefill_seconds: wall time to the first generated token.
        decode_seconds: wall time of the remaining decode steps.
        decode_tokens_per_s: tokens generated per second after the first.
        emulated: figures from a cost model (latency, energy), filled by callers that have one.
    """

    cuts: list[int]
    roles: list[str]
    prompt_tokens: int
    new_tokens: int
    bytes_per_boundary: list[int]
    prefill_bytes_per_boundary: list[int]
    token_return_bytes: int
    segment_seconds: list[float]
    link_seconds: float
    prefill_seconds: float
    decode_seconds: float
    decode_tokens_per_s: float
    emulated: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        """A short human-readable table."""
        lines = [
            f"split {self.cuts}  prompt {self.prompt_tokens} tok  new {self.new_tokens} tok",
            f"time to first token {self.prefill_seconds * 1e3:.1f} ms   decode {self.decode_tokens_per_s:.1f} tok/s",
        ]
        for k, (role, sec) in enumerate(zip(self.roles, self.segment_seconds)):
            lines.append(f"  segment {k} ({role:>5}): {sec * 1e3:8.1f} ms")
        for b, (tot, pre) in enumerate(zip(self.bytes_per_boundary, self.prefill_bytes_per_boundary)):
            lines.append(f"  cut {b} at layer {self.cuts[b]:>2}: {tot:>10,d} B  (prefill {pre:,d} B)")
        lines.append(f"  token ids returned to UE: {self.token_return_bytes} B")
        for k, v in self.emulated.items():
            lines.append(f"  emulated {k}: {v:.4g}" if isinstance(v, float) else f"  emulated {k}: {v}")
        return "\n".join(lines)


@dataclass
class GenerationResult:
    """Generated token ids (prompt excluded), decoded text and the request report."""

    token_ids: list[int]
    text: str
    report: RequestReport


class SplitRuntime:
    """Runs one loaded model under any partition, without reloading or copying weights."""

    def __init__(self, model: LoadedModel | DecoderView, tokenizer=None) -> None:
        if isinstance(model, LoadedModel):
            self.view, self.tokenizer = model.view, tokenizer or model.tokenizer
        else:
            self.view, self.tokenizer = model, tokenizer

    @property
    def num_layers(self) -> int:
        return self.view.num_layers

    def partition(self, cuts: int | Sequence[int] | Partition) -> Partition:
        if isinstance(cuts, Partition):
            if cuts.num_layers != self.num_layers:
                raise ValueError(f"partition is for {cuts.num_layers} layers, the model has {self.num_layers}")
            return cuts
        return Partition.of(cuts, self.num_layers)

    def segments(self, partition: Partition) -> list[Segment]:
        return [Segment(self.view, spec) for spec in partition.segments()]

    def links_for(self, partition: Partition, links: Link | Sequence[Link] | None) -> list[Link]:
        """One link per cut: None gives lossless links, a single link serves every cut."""
        n = len(partition.cuts)
        if links is None:
            return [IdentityLink(self.view.vocab_size) for _ in range(n)]
        if isinstance(links, Link):
            return [links] * n
        links = list(links)
        if len(links) != n:
            raise ValueError(f"need one link per cut: {n} cut(s), got {len(links)} link(s)")
        return links

    def _run(
        self, segments: list[Segment], partition: Partition, links: list[Link], payload: torch.Tensor,
        *, phase: str, step: int, use_cache: bool, logits_last_only: bool,
    ) -> tuple[torch.Tensor, float]:
        link_seconds = 0.0
        for k, segment in enumerate(segments):
            payload = segment.step(payload, use_cache=use_cache, logits_last_only=logits_last_only)
            if k < len(partition.cuts) and partition.crosses(k):
                t0 = time.perf_counter()
                payload = links[k].transmit(payload, boundary=k, phase=phase, step=step)
                link_seconds += time.perf_counter() - t0
        return payload, link_seconds

    @torch.inference_mode()
    def forward(
        self, input_ids: torch.Tensor, cuts: int | Sequence[int] | Partition,
        links: Link | Sequence[Link] | None = None,
    ) -> torch.Tensor:
        """Logits ``[B, T, V]`` for a whole sequence through the partition (no KV cache)."""
        partition = self.partition(cuts)
        segs = self.segments(partition)
        logits, _ = self._run(
            segs, partition, self.links_for(partition, links), input_ids,
            phase="eval", step=0, use_cache=False, logits_last_only=False,
        )
        return logits

    def encode(self, prompt: str) -> torch.Tensor:
        if self.tokenizer is None:
            raise ValueError("this runtime has no tokenizer: pass token ids instead of text")
        ids = self.tokenizer(prompt, return_tensors="pt").input_ids
        if ids.shape[1] == 0:
            raise ValueError("the prompt encodes to zero tokens; give a non-empty prompt")
        return ids

    @torch.inference_mode()
    def generate(
        self,
        prompt: str | torch.Tensor,
        cuts: int | Sequence[int] | Partition,
        *,
        max_new_tokens: int = 32,
        sampling: SamplingConfig | None = None,
        links: Link | Sequence[Link] | None = None,
        stop_at_eos: bool = True,
        on_token: Callable[[int], None] | None = None,
    ) -> GenerationResult:
        """Generate through the partition with a KV cache per segment.

        Args:
            prompt: text (needs a tokenizer) or token ids ``[1, T]``.
            cuts: split point ``s`` or a list of cut points.
            max_new_tokens: tokens to generate (>= 1).
            sampling: greedy by default.
            links: one link for all cuts, one per cut, or None (lossless fp32).
            stop_at_eos: stop when the model emits its EOS token.
            on_token: called with each new token id as soon as it exists (streaming).
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        partition = self.partition(cuts)
        link_list = self.links_for(partition, links)
        for link in {id(l): l for l in link_list}.values():
            link.reset_stats()
        input_ids = self.encode(prompt) if isinstance(prompt, str) else prompt
        if input_ids.dim() != 2 or input_ids.shape[0] != 1:
            raise ValueError(f"prompt token ids must have shape [1, T], got {tuple(input_ids.shape)}")
        input_ids = input_ids.to(self.view.device)
        if self.view.max_positions and input_ids.shape[1] + max_new_tokens > self.view.max_positions:
            raise ValueError(
                f"prompt ({input_ids.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) exceeds "
                f"the model's {self.view.max_positions} positions"
            )
        sampler = TokenSampler(sampling or SamplingConfig())
        eos = getattr(self.view.config, "eos_token_id", None)
        eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) if eos is not None else set()
        segs = self.segments(partition)
        for s in segs:
            s.reset()
        return_bytes = token_id_bytes(self.view.vocab_size) if partition.head_segment != 0 else 0

        t_start = time.perf_counter()
        logits, link_s = self._run(segs, partition, link_list, input_ids, phase="prefill", step=0,
                                   use_cache=True, logits_last_only=True)
        token = sampler(logits[:, -1, :])
        t_first = time.perf_counter()
        generated = [int(token.item())]
        if on_token:
            on_token(generated[-1])
        for step in range(1, max_new_tokens):
            if stop_at_eos and generated[-1] in eos_ids:
                break
            logits, ls = self._run(segs, partition, link_list, token.view(1, 1), phase="decode", step=step,
                                   use_cache=True, logits_last_only=True)
            link_s += ls
            token = sampler(logits[:, -1, :])
            generated.append(int(token.item()))
            if on_token:
                on_token(generated[-1])
        t_end = time.perf_counter()

        n_cuts = len(partition.cuts)
        total = [0] * n_cuts
        prefill = [0] * n_cuts
        for link in {id(l): l for l in link_list}.values():
            for t in link.transfers:
                total[t.boundary] += t.nbytes
                if t.phase == "prefill":
                    prefill[t.boundary] += t.nbytes
        decode_s = t_end - t_first
        report = RequestReport(
            cuts=list(partition.cuts),
            roles=[s.spec.role for s in segs],
            prompt_tokens=int(input_ids.shape[1]),
            new_tokens=len(generated),
            bytes_per_boundary=total,
            prefill_bytes_per_boundary=prefill,
            token_return_bytes=return_bytes * len(generated),
            segment_seconds=[s.seconds for s in segs],
            link_seconds=link_s,
            prefill_seconds=t_first - t_start,
            decode_seconds=decode_s,
            decode_tokens_per_s=(len(generated) - 1) / decode_s if decode_s > 0 and len(generated) > 1 else 0.0,
        )
        text = self.tokenizer.decode(generated, skip_special_tokens=True) if self.tokenizer is not None else ""
        return GenerationResult(token_ids=generated, text=text, report=report)
