"""The partitioned runtime: one model in memory, any partition per request, links at the cuts.

`SplitRuntime` owns the model once. `generate` is a *session driver*: for each request it opens a
session on one executor per segment (`splitrl.runtime.executor`: in-process `LocalExecutor`s by
default, remote ones from `splitrl.deploy`), runs prefill and token-by-token decode segment by
segment (each session has its own KV cache), sends what crosses each cut through that boundary's
`Link` sender half (the receiver half runs in the next segment's executor), receives the token
sampled where the head is, and returns the text with a `RequestReport` (tokens, bytes per
boundary, time per segment, tokens/s, split, fallbacks). `forward` (whole-sequence logits for
perplexity) runs in this process.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch

from splitrl.models.loader import LoadedModel
from splitrl.models.view import DecoderView
from splitrl.link.base import Frame, Link, LosslessLink, ReceiverPolicy, token_id_bytes
from splitrl.runtime.partition import Partition
from splitrl.runtime.executor import (
    Executor, ExecutorError, LocalExecutor, PeerUnavailable, SessionSpec,
)
from splitrl.runtime.sampling import SamplingConfig
from splitrl.runtime.segment import Segment
from splitrl.errors import UsageError


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
        fallback_segments: segments that a remote executor started and this process finished
            (the edge died or hung mid-request).
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
    fallback_segments: list[int] = field(default_factory=list)

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
        if self.fallback_segments:
            lines.append(f"  fallback: segment(s) {self.fallback_segments} finished on the UE")
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

    def partition(self, cuts: int | Sequence[int] | Partition,
                  precision: str | Sequence[str] | None = None) -> Partition:
        """A validated partition; ``precision`` (one name, or one per segment) overrides a given one's."""
        if isinstance(cuts, Partition):
            if cuts.num_layers != self.num_layers:
                raise UsageError(f"partition is for {cuts.num_layers} layers, the model has {self.num_layers}")
            return cuts if precision is None else cuts.with_precision(precision)
        if precision is None and self.view.base_precision != "fp32":
            precision = self.view.base_precision  # a model loaded at int4 runs int4 unless told
        return Partition.of(cuts, self.num_layers, precision)

    def segments(self, partition: Partition) -> list[Segment]:
        return [Segment(self.view, spec) for spec in partition.segments()]

    def links_for(self, partition: Partition, links: Link | Sequence[Link] | None) -> list[Link]:
        """One link per cut: None gives lossless links, a single link serves every cut."""
        n = len(partition.cuts)
        if links is None:
            return [LosslessLink(vocab_size=self.view.vocab_size) for _ in range(n)]
        if isinstance(links, Link):
            return [links] * n
        links = list(links)
        if len(links) != n:
            raise UsageError(f"need one link per cut: {n} cut(s), got {len(links)} link(s)")
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
        links: Link | Sequence[Link] | None = None, *, precision: str | Sequence[str] | None = None,
    ) -> torch.Tensor:
        """Logits ``[B, T, V]`` for a whole sequence through the partition (no KV cache)."""
        partition = self.partition(cuts, precision)
        segs = self.segments(partition)
        logits, _ = self._run(
            segs, partition, self.links_for(partition, links), input_ids,
            phase="eval", step=0, use_cache=False, logits_last_only=False,
        )
        return logits

    def encode(self, prompt: str) -> torch.Tensor:
        if self.tokenizer is None:
            raise UsageError("this runtime has no tokenizer: pass token ids instead of text")
        ids = self.tokenizer(prompt, return_tensors="pt").input_ids
        if ids.shape[1] == 0:
            raise UsageError("the prompt encodes to zero tokens; give a non-empty prompt")
        return ids

    def local_executors(self, partition: Partition) -> list[Executor]:
        """One in-process executor per segment (the default: everything in this process)."""
        return [LocalExecutor(self.view) for _ in range(partition.num_segments)]

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
        executors: Sequence[Executor] | None = None,
        fallback: Callable[[int], Executor] | None = None,
        session_id: str | None = None,
        precision: str | Sequence[str] | None = None,
    ) -> GenerationResult:
        """Generate through the partition: a session driver over one executor per segment.

        Args:
            prompt: text (needs a tokenizer) or token ids ``[1, T]``.
            cuts: split point ``s`` or a list of cut points.
            max_new_tokens: tokens to generate (>= 1).
            sampling: greedy by default; sampling runs where the head is.
            links: one link for all cuts, one per cut, or None (lossless).
            stop_at_eos: stop when the model emits its EOS token.
            on_token: called with each new token id as soon as it exists (streaming).
            executors: one per segment (default: all in this process); remote ones come from
                `splitrl.deploy`.
            fallback: ``fallback(k)`` gives a local executor for segment ``k`` when segment ``k``'s
                executor becomes unavailable (`PeerUnavailable`): the driver replays what it sent
                to that segment — rebuilding its KV cache (and the sampler's stream at the head)
                exactly — and finishes the request locally. Without it the error propagates.
            session_id: id of this request's sessions (default: a fresh uuid).
            precision: weight precision of every segment (``"int4"``) or of each (``("int4", "fp32")``);
                default fp32 (or the precision the model was loaded at).
        """
        if max_new_tokens < 1:
            raise UsageError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        partition = self.partition(cuts, precision)
        link_list = self.links_for(partition, links)
        for link in {id(l): l for l in link_list}.values():
            link.reset_stats()
        input_ids = self._prompt_ids(prompt, max_new_tokens)  # [1, T]
        sampling = sampling or SamplingConfig()
        eos = getattr(self.view.config, "eos_token_id", None)
        eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) if eos is not None else set()
        execs = list(executors) if executors is not None else self.local_executors(partition)
        if len(execs) != partition.num_segments:
            raise UsageError(f"need one executor per segment: {partition.num_segments} segment(s), got {len(execs)}")
        session = _Session(
            partition, link_list, execs, session_id or uuid.uuid4().hex, sampling, fallback,
        )
        try:
            session.open()
            generated, times = self._decode(session, input_ids, max_new_tokens,
                                            eos_ids if stop_at_eos else set(), on_token)
        finally:
            session.close()
        report = self._report(partition, link_list, session, int(input_ids.shape[1]), generated, *times)
        text = self.tokenizer.decode(generated, skip_special_tokens=True) if self.tokenizer is not None else ""
        return GenerationResult(token_ids=generated, text=text, report=report)

    def _prompt_ids(self, prompt: str | torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """The prompt as token ids ``[1, T]`` on the model's device, checked against its positions."""
        input_ids = self.encode(prompt) if isinstance(prompt, str) else prompt
        if input_ids.dim() != 2 or input_ids.shape[0] != 1:
            raise UsageError(f"prompt token ids must have shape [1, T], got {tuple(input_ids.shape)}")
        input_ids = input_ids.to(self.view.device)
        if self.view.max_positions and input_ids.shape[1] + max_new_tokens > self.view.max_positions:
            raise UsageError(
                f"prompt ({input_ids.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) exceeds "
                f"the model's {self.view.max_positions} positions"
            )
        return input_ids

    def _decode(self, session: _Session, input_ids: torch.Tensor, max_new_tokens: int, stop_ids: set[int],
                on_token: Callable[[int], None] | None) -> tuple[list[int], tuple[float, float, float]]:
        """Prefill then decode token by token; the tokens and the start / first-token / end times."""
        t_start = time.perf_counter()
        token = session.pass_through(input_ids, "prefill", 0)
        t_first = time.perf_counter()
        generated = [int(token.item())]
        if on_token:
            on_token(generated[-1])
        for step in range(1, max_new_tokens):
            if generated[-1] in stop_ids:
                break
            token = session.pass_through(token.view(1, 1).to(self.view.device), "decode", step)  # [1, 1]
            generated.append(int(token.item()))
            if on_token:
                on_token(generated[-1])
        return generated, (t_start, t_first, time.perf_counter())

    def _report(self, partition: Partition, link_list: list[Link], session: _Session, prompt_tokens: int,
                generated: list[int], t_start: float, t_first: float, t_end: float) -> RequestReport:
        """The `RequestReport` of a finished request: bytes per cut from the links' transfers, times, fallbacks."""
        n_cuts = len(partition.cuts)
        total = [0] * n_cuts
        prefill = [0] * n_cuts
        for link in {id(l): l for l in link_list}.values():
            for t in link.transfers:
                total[t.boundary] += t.nbytes
                if t.phase == "prefill":
                    prefill[t.boundary] += t.nbytes
        return_bytes = token_id_bytes(self.view.vocab_size) if partition.head_segment != 0 else 0
        decode_s = t_end - t_first
        return RequestReport(
            cuts=list(partition.cuts),
            roles=[s.role for s in partition.segments()],
            prompt_tokens=prompt_tokens,
            new_tokens=len(generated),
            bytes_per_boundary=total,
            prefill_bytes_per_boundary=prefill,
            token_return_bytes=return_bytes * len(generated),
            segment_seconds=session.segment_seconds,
            link_seconds=session.link_seconds,
            prefill_seconds=t_first - t_start,
            decode_seconds=decode_s,
            decode_tokens_per_s=(len(generated) - 1) / decode_s if decode_s > 0 and len(generated) > 1 else 0.0,
            fallback_segments=sorted(session.fell_back),
        )


class _Session:
    """One request's sessions on every executor, the frames sent to each, and the fallback path."""

    def __init__(self, partition: Partition, links: list[Link], executors: list[Executor], sid: str,
                 sampling: SamplingConfig, fallback: Callable[[int], Executor] | None) -> None:
        self.partition, self.links, self.executors, self.sid = partition, links, executors, sid
        self.sampling, self.fallback = sampling, fallback
        self.specs = partition.segments()
        self.segment_seconds = [0.0] * partition.num_segments
        self.link_seconds = 0.0
        self.sent: list[list[tuple[torch.Tensor | Frame, str]]] = [[] for _ in self.specs]  # inputs per segment
        self.tokens: list[int] = []  # tokens the head returned so far (checked on replay)
        self.fell_back: set[int] = set()
        self.opened: list[int] = []

    def _spec(self, k: int) -> SessionSpec:
        policy = self.links[k - 1].policy if k > 0 else ReceiverPolicy()
        return SessionSpec(self.sid, self.partition, k, self.sampling, policy)

    def open(self) -> None:
        for k, spec in enumerate(self.specs):
            if k > 0 and not self.partition.crosses(k - 1):
                break  # nothing reaches segments after a cut at L
            try:
                self.executors[k].open(self._spec(k))
            except PeerUnavailable:
                if self.fallback is None:
                    raise
                self._take_over(k, replay=False)
            self.opened.append(k)
            if spec.has_head:
                break

    def close(self) -> None:
        for k in self.opened:
            try:
                self.executors[k].close(self.sid)
            except Exception:  # closing must not hide the request's own outcome
                pass

    def _take_over(self, k: int, *, replay: bool = True) -> None:
        """Move segment ``k`` onto a local executor, replaying every input it already got."""
        assert self.fallback is not None
        try:
            self.executors[k].close(self.sid)
        except Exception:
            pass
        local = self.fallback(k)
        local.open(self._spec(k))
        self.executors[k] = local
        self.fell_back.add(k)
        if not replay:
            return
        for i, (payload, phase) in enumerate(self.sent[k]):
            out, _ = local.step(self.sid, payload, phase)
            if self.specs[k].has_head and int(out.item()) != self.tokens[i]:
                raise ExecutorError(
                    f"fallback replay of segment {k} sampled token {int(out.item())} at step {i}, "
                    f"the remote executor had returned {self.tokens[i]}: the replay is not exact")

    def _step(self, k: int, payload: torch.Tensor | Frame, phase: str) -> torch.Tensor:
        try:
            out, stats = self.executors[k].step(self.sid, payload, phase)
        except PeerUnavailable:
            if self.fallback is None or k in self.fell_back:
                raise
            self._take_over(k)
            out, stats = self.executors[k].step(self.sid, payload, phase)
        self.sent[k].append((payload, phase))
        self.segment_seconds[k] += stats.seconds
        if k > 0 and stats.receiver:
            self.links[k - 1].last_stats.update(stats.receiver)
        return out

    def pass_through(self, payload: torch.Tensor, phase: str, step: int) -> torch.Tensor:
        """Run one pass (prefill or one decode step) through the segments; returns the sampled token."""
        x: torch.Tensor | Frame = payload
        for k, spec in enumerate(self.specs):
            out = self._step(k, x, phase)
            if spec.has_head:
                self.tokens.append(int(out.item()))
                return out
            t0 = time.perf_counter()
            x = self.links[k].send(out, boundary=k, phase=phase, step=step)
            self.link_seconds += time.perf_counter() - t0
        raise ExecutorError("no segment owns the head")  # unreachable for a valid partition
