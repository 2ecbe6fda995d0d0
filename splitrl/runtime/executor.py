"""The segment-executor contract: open a session, step it with what crossed the cut, close it.

An executor runs one segment of a partition for any number of concurrent *sessions* (one session =
one request). `SplitRuntime.generate` is a session driver over a list of executors, one per
segment, which may be local (`LocalExecutor`, this process) or remote (`splitrl.deploy.client.
RemoteExecutor`, an edge server over gRPC); both implement the same three calls:

* ``open(spec)`` — start session ``spec.session_id`` for segment ``spec.segment`` of
  ``spec.partition`` (its layers, whether it embeds / runs the head, sampling at the head, and the
  receiver policy for the frames that will arrive);
* ``step(session_id, payload, phase) -> (output, StepStats)`` — ``payload`` is token ids ``[1, T]``
  for the UE segment, else the `splitrl.link.Frame` the previous cut's sender half produced (the
  receiver half runs here, where the segment runs). The output is hidden states ``[1, T, H]``, or,
  for the segment that owns the head, the sampled next token ``[1, 1]`` (int64): sampling happens
  where the head is and the token travels back as a message;
* ``close(session_id)`` — free the session's KV cache.
"""
from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch

from splitrl.link.base import Frame, ReceiverPolicy, decode_tokens, receive_hidden
from splitrl.runtime.partition import Partition, SegmentSpec
from splitrl.runtime.sampling import SamplingConfig, TokenSampler
from splitrl.runtime.segment import Segment
from splitrl.errors import UsageError

__all__ = ["Executor", "ExecutorError", "LocalExecutor", "PeerUnavailable", "SessionSpec", "StepStats"]


class ExecutorError(RuntimeError):
    """A session call failed (unknown session, bad payload, a peer's error); the message says which."""


class PeerUnavailable(ExecutorError):
    """A remote executor stopped answering (dead, hung, unreachable): the driver may fall back."""


@dataclass(frozen=True)
class SessionSpec:
    """What an executor needs to run its segment of one request.

    Attributes:
        session_id: unique id of the request's session.
        partition: the request's partition (cut points over ``num_layers``).
        segment: index of the segment this executor runs (0 = UE).
        sampling: how the head segment picks the next token (greedy by default).
        policy: receiver policy for activation frames arriving at this segment.
    """

    session_id: str
    partition: Partition
    segment: int
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    policy: ReceiverPolicy = field(default_factory=ReceiverPolicy)

    def __post_init__(self) -> None:
        if not self.session_id or len(self.session_id) > 128:
            raise UsageError(f"session_id must be 1..128 characters, got {self.session_id!r:.140}")
        if not 0 <= self.segment < self.partition.num_segments:
            raise UsageError(f"segment must be in 0..{self.partition.num_segments - 1}, got {self.segment}")

    @property
    def spec(self) -> SegmentSpec:
        return self.partition.segments()[self.segment]


@dataclass
class StepStats:
    """What one step cost where it ran: compute seconds and the receiver's repair counters."""

    seconds: float = 0.0
    receiver: dict[str, Any] = field(default_factory=dict)


class Executor(ABC):
    """Runs one segment for many sessions (see the module docstring)."""

    @abstractmethod
    def open(self, spec: SessionSpec) -> None:
        """Start a session (its own KV cache)."""

    @abstractmethod
    def step(self, session_id: str, payload: torch.Tensor | Frame, phase: str) -> tuple[torch.Tensor, StepStats]:
        """Run the segment on what arrived; hidden states out, or the sampled token at the head."""

    @abstractmethod
    def close(self, session_id: str) -> None:
        """End a session and free its cache (unknown ids are ignored)."""


@dataclass
class _Session:
    spec: SessionSpec
    segment: Segment
    sampler: TokenSampler | None
    lock: threading.Lock = field(default_factory=threading.Lock)


class LocalExecutor(Executor):
    """Executes segments in this process over a shared `DecoderView` (thread-safe across sessions).

    ``held`` (``(start, stop)`` of the layers this process materialised, plus the view's own flags)
    is checked at open: a session whose segment needs layers this process does not hold is refused.
    """

    def __init__(self, view, *, max_sessions: int = 64) -> None:
        self.view = view
        self.max_sessions = int(max_sessions)
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()

    def can_run(self, seg: SegmentSpec) -> str | None:
        """None when this process holds what ``seg`` needs, else the reason it does not."""
        holds = getattr(self.view, "holds", None)
        if holds is None:
            return None
        return holds(seg.start, seg.stop, embed=seg.has_embed, head=seg.has_head, precision=seg.precision)

    def open(self, spec: SessionSpec) -> None:
        seg = spec.spec
        if spec.partition.num_layers != self.view.num_layers:
            raise ExecutorError(
                f"partition is for {spec.partition.num_layers} layers, this model has {self.view.num_layers}")
        reason = self.can_run(seg)
        if reason is not None:
            raise ExecutorError(f"cannot run segment {seg.index} (layers [{seg.start}, {seg.stop})): {reason}")
        segment = Segment(self.view, seg)
        segment.reset()
        sampler = TokenSampler(spec.sampling) if seg.has_head else None
        with self._lock:
            if spec.session_id in self._sessions:
                raise ExecutorError(f"session {spec.session_id!r} is already open")
            if len(self._sessions) >= self.max_sessions:
                raise ExecutorError(f"too many open sessions ({self.max_sessions}); close some first")
            self._sessions[spec.session_id] = _Session(spec, segment, sampler)

    def _get(self, session_id: str) -> _Session:
        with self._lock:
            s = self._sessions.get(session_id)
        if s is None:
            raise ExecutorError(f"no open session {session_id!r}")
        return s

    def receive(self, frame: Frame, policy: ReceiverPolicy, stats: dict[str, Any]) -> torch.Tensor:
        """The receiver half at this segment: a frame's bytes back into a tensor on this device."""
        if frame.kind == "tokens":
            return decode_tokens(frame.data, frame.shape, self.view.vocab_size, self.view.device)
        x = receive_hidden(frame.data, policy, self.view.dtype, self.view.device, stats)
        if tuple(x.shape) != tuple(frame.shape):
            raise UsageError(f"frame decodes to shape {tuple(x.shape)}, its header says {tuple(frame.shape)}")
        return x

    @torch.inference_mode()
    def step(self, session_id: str, payload: torch.Tensor | Frame, phase: str) -> tuple[torch.Tensor, StepStats]:
        s = self._get(session_id)
        stats = StepStats()
        with s.lock:  # one request's steps are sequential; different sessions run concurrently
            t0 = time.perf_counter()
            x = self.receive(payload, s.spec.policy, stats.receiver) if isinstance(payload, Frame) else payload
            if x.dim() != 2 + x.is_floating_point():
                raise UsageError(f"payload must be token ids [1, T] or hidden states [1, T, H], got shape {tuple(x.shape)}")
            out = s.segment.step(x, use_cache=True, logits_last_only=True)
            if s.sampler is not None:
                out = s.sampler(out[:, -1, :]).view(1, 1)  # [1, 1] next token, sampled where the head is
            stats.seconds = time.perf_counter() - t0
        return out, stats

    def close(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    @property
    def open_sessions(self) -> int:
        with self._lock:
            return len(self._sessions)
