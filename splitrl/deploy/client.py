"""The UE side: the executor contract over a gRPC stream, and the UE client with exact fallback.

`RemoteExecutor` implements `splitrl.runtime.Executor` against an edge (`splitrl.deploy.server`):
``open`` starts one bidirectional stream for the request, ``step`` sends a link frame and waits
for the token sampled at the edge, ``close`` ends the stream. Before a frame is released it waits
the emulated air time of its size at the slot's SNR (`AirClock`: off, real time, or scaled).

Failure detection is bounded: a SIGKILLed edge resets the connection (the channel also sends HTTP/2
keepalive pings every 0.5 s with a 1 s timeout); a SIGSTOPped or overloaded edge stops answering
and the step's deadline expires (1.5 s per decode step, 30 s for a prefill; both configurable).
Either way the executor raises `PeerUnavailable`, and the session driver (`SplitRuntime.generate`) replays what
it sent to a local executor, rebuilding the edge's KV cache (and the sampler's stream) exactly,
and finishes the request on the UE when the UE holds those layers.

`UEClient` (used by ``splitrl ue`` and ``splitrl serve``) holds the UE's model (by default all
layers, so any request can fall back), checks the edge with a handshake (same model SHA-256, the
layers it needs), runs requests through any split, and tracks the edge's health: after a fallback
``edge_available`` is False until a background health check passes again, so the controller keeps
the split on the UE meanwhile; an edge restarted at the same address is picked up without
restarting the UE. An edge that refuses a session because it is full (`EdgeBusy`) or because it
now serves another model (`EdgeMismatch`) counts as unavailable too: the request finishes on the
UE and ``edge_error`` says why (a mismatched edge fails every health check, so it stays down).
A stream is cancelled on every failure path of ``open``: an open stream holds an edge session.
"""
from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import grpc
import msgpack
import torch

from splitrl.log import get_logger
from splitrl.cost import CostModel
from splitrl.deploy import wire
from splitrl.deploy.server import SERVICE
from splitrl.link import link_at
from splitrl.link.base import Frame
from splitrl.link.codec import peek_header
from splitrl.quant.precision import PRECISIONS
from splitrl.runtime.engine import GenerationResult, SplitRuntime
from splitrl.runtime.executor import Executor, ExecutorError, LocalExecutor, PeerUnavailable, SessionSpec, StepStats
from splitrl.runtime.sampling import SamplingConfig
from splitrl.errors import UsageError

__all__ = ["AirClock", "EdgeBusy", "EdgeConnection", "EdgeInfo", "EdgeMismatch", "RemoteExecutor", "UEClient"]

log = get_logger("ue")
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
              grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.ABORTED,
              grpc.StatusCode.RESOURCE_EXHAUSTED}


class EdgeBusy(PeerUnavailable):
    """The edge refused a session because it is full (``--max-sessions``): fall back, as for a dead edge."""


class EdgeMismatch(PeerUnavailable):
    """The edge now serves another model (restarted with another ``--model``): fall back and mark it down."""


# What an edge's ``error`` frame says when the request could be served elsewhere (the UE finishes it).
_BUSY_MARKERS = ("too many open sessions", "edge busy")
_MISMATCH_MARKERS = ("model mismatch",)


def _edge_refusal(where: str, text: str) -> ExecutorError:
    """The exception for an edge's error frame: `EdgeBusy` / `EdgeMismatch` (both `PeerUnavailable`) or ExecutorError."""
    low = text.lower()
    if any(m in low for m in _BUSY_MARKERS):
        return EdgeBusy(f"{where} is busy: {text}")
    if any(m in low for m in _MISMATCH_MARKERS):
        return EdgeMismatch(f"{where}: {text}")
    return ExecutorError(f"{where}: {text}")


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """Client channel options: keepalive every 0.5 s, 1 s ack timeout (bounded hang detection)."""
    return [
        ("grpc.keepalive_time_ms", 500),
        ("grpc.keepalive_timeout_ms", 1000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.enable_retries", 0),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]


class AirClock:
    """How long a frame waits before release: the emulated air time of its size at the slot's SNR.

    ``mode``: ``"off"`` (no wait), ``"real"`` (the cost model's transfer time), or a float scale
    (``0.1`` = ten times faster than real time). The SNR is set per request (`set_snr`).
    """

    def __init__(self, cost_model=None, mode: str | float = "off") -> None:
        if mode not in ("off", "real"):
            try:
                mode = float(mode)
            except (TypeError, ValueError):
                raise UsageError(f"air time mode must be off, real or a scale > 0, got {mode!r}") from None
            if not mode > 0:
                raise UsageError(f"air time scale must be > 0, got {mode}")
        if mode != "off" and cost_model is None:
            raise UsageError("an air clock that waits needs a cost model (link profile)")
        self.cost_model, self.mode = cost_model, mode
        self.snr_db = 20.0
        self.waited_s = 0.0

    def set_snr(self, snr_db: float) -> None:
        self.snr_db = float(snr_db)

    def delay_s(self, nbytes: int, direction: str = "uplink") -> float:
        if self.mode == "off" or nbytes <= 0:
            return 0.0
        t = self.cost_model.transfer_s(nbytes, self.snr_db, direction)
        return t if self.mode == "real" else t * float(self.mode)

    def wait(self, nbytes: int, direction: str = "uplink") -> None:
        d = self.delay_s(nbytes, direction)
        if d > 0:
            time.sleep(min(d, 60.0))  # a dead link would wait forever: the step deadline handles it
            self.waited_s += d


@dataclass(frozen=True)
class EdgeInfo:
    """What the edge said in the handshake."""

    model: str
    fingerprint: str
    num_layers: int
    layers: tuple[int, int]
    embed: bool
    head: bool
    sessions: int
    precision: str = "fp32"
    streams: int = 0  # open gRPC streams (admitted, with or without a session); 0 from an older edge
    max_sessions: int = 0  # the edge's --max-sessions; 0 when it did not say

    @classmethod
    def from_reply(cls, d: Any) -> "EdgeInfo":
        try:
            precision = str(d.get("precision", "fp32"))  # an edge from before precisions runs fp32
            if precision not in PRECISIONS:
                raise UsageError(precision)
            return cls(str(d["model"]), str(d["fp"]), int(d["L"]), (int(d["layers"][0]), int(d["layers"][1])),
                       bool(d["embed"]), bool(d["head"]), int(d["sessions"]), precision,
                       int(d.get("streams", 0)), int(d.get("max_sessions", 0)))
        except (KeyError, TypeError, ValueError, IndexError):
            raise ExecutorError(f"the edge's handshake reply is malformed: {d!r:.200}") from None


class EdgeConnection:
    """A gRPC channel to one edge with the bearer token attached (TLS when a root cert is given)."""

    def __init__(self, address: str, token: str, *, tls_root: bytes | None = None, server_name: str | None = None,
                 max_message_bytes: int = wire.MAX_PAYLOAD_BYTES + wire.MAX_HEADER_BYTES + 4) -> None:
        self.address, self._token = address, token
        self.metadata = (("authorization", f"Bearer {token}"),)
        opts = channel_options(max_message_bytes)
        if tls_root is not None:
            if server_name:
                opts.append(("grpc.ssl_target_name_override", server_name))
            self.channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=tls_root), opts)
        else:
            self.channel = grpc.insecure_channel(address, opts)
        self._hello = self.channel.unary_unary(f"/{SERVICE}/Hello")
        self.session = self.channel.stream_stream(f"/{SERVICE}/Session")

    def hello(self, timeout_s: float = 2.0) -> EdgeInfo:
        """The handshake / health check; PeerUnavailable when the edge does not answer in time."""
        try:
            raw = self._hello(b"", metadata=self.metadata, timeout=timeout_s, wait_for_ready=False)
        except grpc.RpcError as e:
            raise _rpc_error(e, f"edge {self.address}") from None
        try:
            reply = msgpack.unpackb(raw[:1 << 16], raw=False, strict_map_key=True, max_bin_len=0, max_ext_len=0)
        except Exception as e:
            raise ExecutorError(f"edge {self.address} sent an unreadable handshake ({type(e).__name__})") from None
        return EdgeInfo.from_reply(reply)

    def close(self) -> None:
        self.channel.close()


def _rpc_error(e: grpc.RpcError, where: str) -> ExecutorError:
    code = e.code() if hasattr(e, "code") else None
    details = e.details() if hasattr(e, "details") else str(e)
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return ExecutorError(f"{where} refused the request: {details}")
    if code in _RETRYABLE or code is None:
        return PeerUnavailable(f"{where} unavailable ({code.name if code else 'error'}): {details}")
    return ExecutorError(f"{where} failed ({code.name}): {details}")


class _Stream:
    """One request's bidirectional stream: a send queue and a reader thread feeding a reply queue."""

    def __init__(self, conn: EdgeConnection, rid: str) -> None:
        self.rid = rid
        self.seq = 0
        self.expect = 0
        self.out: queue.Queue[bytes | None] = queue.Queue()
        self.replies: queue.Queue[Any] = queue.Queue()
        self.call = conn.session(iter(self.out.get, None), metadata=conn.metadata)
        self.where = f"edge {conn.address}"
        self.reader = threading.Thread(target=self._read, daemon=True, name=f"ue-read-{rid[:8]}")
        self.reader.start()

    def _read(self) -> None:
        try:
            for raw in self.call:
                self.replies.put(raw)
            self.replies.put(PeerUnavailable(f"{self.where} closed the stream"))
        except grpc.RpcError as e:
            self.replies.put(_rpc_error(e, self.where))
        except Exception as e:  # never let the reader die silently
            self.replies.put(PeerUnavailable(f"{self.where}: {type(e).__name__}: {e}"))

    def send(self, t: str, payload: bytes = b"", **fields) -> None:
        self.out.put(wire.encode(wire.Message(t, self.rid, self.seq, fields, payload)))
        self.seq += 1

    def recv(self, timeout_s: float) -> wire.Message:
        try:
            item = self.replies.get(timeout=timeout_s)
        except queue.Empty:
            self.cancel()
            raise PeerUnavailable(f"{self.where} did not answer within {timeout_s:g} s") from None
        if isinstance(item, Exception):
            raise item
        try:
            msg = wire.decode(item)
        except wire.WireError as e:
            self.cancel()
            raise ExecutorError(f"{self.where} sent a bad frame: {e}") from None
        if msg.seq != self.expect:
            self.cancel()
            raise ExecutorError(f"{self.where} answered out of order (seq {msg.seq}, expected {self.expect})")
        self.expect += 1
        if msg.type == "error":
            self.cancel()
            raise _edge_refusal(self.where, str(msg.get("msg")))
        return msg

    def cancel(self) -> None:
        self.out.put(None)
        self.call.cancel()


class RemoteExecutor(Executor):
    """The executor contract over one gRPC stream per session (see the module docstring)."""

    def __init__(self, conn: EdgeConnection, fingerprint: str, *, air: AirClock | None = None,
                 open_timeout_s: float = 10.0, step_timeout_s: float = 1.5, prefill_timeout_s: float = 30.0) -> None:
        self.conn, self.fingerprint = conn, fingerprint
        self.air = air or AirClock()
        self.open_timeout_s, self.step_timeout_s, self.prefill_timeout_s = open_timeout_s, step_timeout_s, prefill_timeout_s
        self._streams: dict[str, _Stream] = {}
        self.dtype = "float32"
        self.last_unavailable: str | None = None  # why the edge was last unavailable (for the UE's health report)

    def open(self, spec: SessionSpec) -> None:
        """Open the session's stream; on ANY failure (a value the wire refuses, a refusal, a timeout) the
        stream is cancelled before the error propagates: an open stream holds one of the edge's sessions."""
        s = _Stream(self.conn, spec.session_id)
        self._streams[spec.session_id] = s
        c = spec.sampling
        try:
            s.send("open", cuts=list(spec.partition.cuts), L=spec.partition.num_layers, seg=spec.segment,
                   sampling={"do_sample": bool(c.do_sample), "temperature": float(c.temperature),
                             "top_k": int(c.top_k), "top_p": float(c.top_p), "seed": int(c.seed)},
                   policy=spec.policy.to_dict(), fp=self.fingerprint,
                   **({"prec": list(spec.partition.precisions)} if spec.partition.precisions else {}))
            msg = s.recv(self.open_timeout_s)
            if msg.type != "ok":
                raise ExecutorError(f"{s.where} answered {msg.type!r} to open")
        except BaseException as e:
            self._streams.pop(spec.session_id, None)
            s.cancel()
            if isinstance(e, PeerUnavailable):
                self.last_unavailable = str(e)
            if isinstance(e, wire.WireError):
                raise ExecutorError(f"cannot open a session on {s.where}: {e}") from None
            raise

    def step(self, session_id: str, payload: torch.Tensor | Frame, phase: str) -> tuple[torch.Tensor, StepStats]:
        s = self._streams.get(session_id)
        if s is None:
            raise ExecutorError(f"no open remote session {session_id!r}")
        if not isinstance(payload, Frame):
            raise ExecutorError("a remote segment receives link frames, not tensors (segment 0 runs on the UE)")
        self.air.wait(payload.air_bytes, "uplink")
        if payload.kind == "tokens":
            width = len(payload.data) // max(1, math.prod(payload.shape))
            codec, q = ("u16" if width == 2 else "u32"), 0
        else:
            c, shape = peek_header(payload.data)
            codec, q = c.name, c.meta_nbytes(shape)
        try:
            s.send("step", payload.data, ph=phase, b=0, k=payload.kind, codec=codec, dt=self.dtype,
                   shape=list(payload.shape), q=q)
        except wire.WireError as e:
            raise ExecutorError(f"cannot send step {s.seq} to {s.where}: {e}") from None
        try:
            msg = s.recv(self.prefill_timeout_s if phase == "prefill" else self.step_timeout_s)
        except PeerUnavailable as e:
            self.last_unavailable = str(e)
            raise
        if msg.type != "token":
            raise ExecutorError(f"{s.where} answered {msg.type!r} to a step")
        self.air.wait(2, "downlink")  # the token id travels back over the air too
        return torch.tensor([[msg.get("tok")]], dtype=torch.long), StepStats(seconds=float(msg.get("sec", 0.0)))

    def close(self, session_id: str) -> None:
        s = self._streams.pop(session_id, None)
        if s is None:
            return
        if s.call.done():  # the stream already failed or was cancelled: nothing to say goodbye to
            s.out.put(None)
            return
        try:
            s.send("close")
            s.recv(1.0)
        except ExecutorError:
            pass
        finally:
            s.cancel()  # ends the call on both sides whatever the edge answered


class UEClient:
    """The UE: its model part, the edge connection, health tracking and exact local fallback.

    Satisfies `splitrl.controller.backend.GenerationBackend` (``generate``, ``edge_available``,
    ``tokenizer``, ``view``, ``model_name``).
    """

    def __init__(self, edge: str, token: str, loaded, *, tls_root: bytes | None = None, server_name: str | None = None,
                 air_time: str | float = "off", link_profile: str = "nr-sub6-20mhz", ue_profile: str = "phone-midrange",
                 edge_profile: str = "edge-a100", step_timeout_s: float = 1.5, prefill_timeout_s: float = 30.0,
                 health_interval_s: float = 1.0, handshake: bool = True) -> None:
        self.loaded, self.view, self.tokenizer = loaded, loaded.view, loaded.tokenizer
        self.model_name = loaded.name
        self.runtime = SplitRuntime(loaded)
        self.conn = EdgeConnection(edge, token, tls_root=tls_root, server_name=server_name)
        cost_model = None
        if air_time != "off":
            cost_model = CostModel(self.view, ue_profile, edge_profile, link_profile)
        self.air = AirClock(cost_model, air_time)
        self.step_timeout_s, self.prefill_timeout_s = step_timeout_s, prefill_timeout_s
        self.health_interval_s = health_interval_s
        self._available = threading.Event()
        self._stop = threading.Event()
        self._checker: threading.Thread | None = None
        self.edge_info: EdgeInfo | None = None
        self.fallbacks = 0
        self.edge_error: str | None = None  # why the edge is marked down (None while it is available)
        if handshake:
            self.handshake()

    # -- the edge ------------------------------------------------------------------------
    def handshake(self, timeout_s: float = 5.0, *, require_capacity: bool = False) -> EdgeInfo:
        """Check the edge runs the same model and holds what this UE will ask of it (and, with
        ``require_capacity``, that it has a session free: the health check of an edge marked down
        as busy must not pass while it is still full)."""
        info = self.conn.hello(timeout_s)
        if info.fingerprint != self.loaded.fingerprint:
            raise ExecutorError(
                f"model mismatch: this UE runs {self.loaded.name} ({self.loaded.fingerprint[:16]}…), the edge at "
                f"{self.conn.address} runs {info.model} ({info.fingerprint[:16]}…); start both with the same --model")
        if info.num_layers != self.view.num_layers:
            raise ExecutorError(f"the edge's model has {info.num_layers} layers, this UE's {self.view.num_layers}")
        if info.layers[1] != info.num_layers or not info.head:
            raise ExecutorError(f"the edge holds layers [{info.layers[0]}, {info.layers[1]}) head={info.head}; "
                                "it must hold the layers up to L and the head")
        if require_capacity and info.max_sessions and info.sessions >= info.max_sessions:
            raise ExecutorError(f"edge {self.conn.address} is busy: {info.sessions} of {info.max_sessions} "
                                "sessions open")
        self.edge_info = info
        self.edge_error = None
        self._available.set()
        return info

    @property
    def edge_available(self) -> bool:
        return self._available.is_set()

    def min_split(self) -> int:
        """Smallest split the edge can serve (it holds layers from ``edge_info.layers[0]``)."""
        return self.edge_info.layers[0] if self.edge_info else self.view.num_layers

    def _mark_down(self, reason: str | None = None) -> None:
        self.fallbacks += 1
        self._available.clear()
        self.edge_error = (reason or "the edge stopped answering").splitlines()[0][:300]
        log.warning("edge %s marked down (%s); serving on the UE until it passes a health check",
                    self.conn.address, self.edge_error)
        if self._checker is None or not self._checker.is_alive():
            self._checker = threading.Thread(target=self._check_health, daemon=True, name="ue-health")
            self._checker.start()

    def _check_health(self) -> None:
        while not self._stop.is_set() and not self._available.is_set():
            try:
                self.handshake(timeout_s=self.health_interval_s, require_capacity=True)
                log.info("edge %s is back", self.conn.address)
                return
            except ExecutorError as e:  # still down (or up with another model: a mismatch stays down)
                self.edge_error = str(e).splitlines()[0][:300]
                self._stop.wait(self.health_interval_s)

    def wait_available(self, timeout_s: float) -> bool:
        return self._available.wait(timeout_s)

    # -- requests ------------------------------------------------------------------------
    def generate(self, prompt_ids: torch.Tensor, split: int, *, link: str = "identity", snr_db: float = 20.0,
                 seed: int = 0, sampling: SamplingConfig | None = None, max_new_tokens: int = 32,
                 stop_at_eos: bool = True, on_token: Callable[[int], None] | None = None,
                 modulation: str = "qpsk") -> GenerationResult:
        """Run one request through ``split`` (UE layers [0, split), edge the rest) over the real transport."""
        L = self.view.num_layers
        ue_p = self.view.base_precision
        edge_p = self.edge_info.precision if self.edge_info is not None else ue_p
        partition = self.runtime.partition(int(split), (ue_p, edge_p))
        links = None if link == "identity" else link_at(link, seed=seed, snr_db=snr_db, modulation=modulation,
                                                        vocab_size=self.view.vocab_size)
        self.air.set_snr(snr_db)
        ue_holds_all = self.view.holds(0, L, embed=True, head=True) is None
        # An exact mid-request fallback replays the edge's segment here at the edge's precision,
        # which this UE can do when it runs that precision or holds fp32 (it then quantises).
        exact_fallback = ue_holds_all and self.view.holds(0, 0, precision=edge_p) is None
        remote = partition.cuts[0] < L
        if remote and not self.edge_available:
            if not ue_holds_all:
                raise ExecutorError(f"the edge at {self.conn.address} is unavailable and this UE does not hold "
                                    f"layers [{partition.cuts[0]}, {L}) to finish the request itself")
            remote = False  # the health check has not passed yet: run the same partition on the UE
            if not exact_fallback:
                partition = partition.with_precision(ue_p)  # the whole request at the UE's own precision
        remote_exec = None
        if remote:
            remote_exec = RemoteExecutor(self.conn, self.loaded.fingerprint, air=self.air,
                                         step_timeout_s=self.step_timeout_s, prefill_timeout_s=self.prefill_timeout_s)
            executors = [LocalExecutor(self.view), remote_exec]
        else:
            executors = self.runtime.local_executors(partition)
        try:
            result = self.runtime.generate(
                prompt_ids, partition, max_new_tokens=max_new_tokens, sampling=sampling, links=links,
                stop_at_eos=stop_at_eos, on_token=on_token, executors=executors,
                fallback=(lambda k: LocalExecutor(self.view)) if exact_fallback else None,
            )
        except PeerUnavailable as e:
            self._mark_down(str(e))
            why = (f"this UE does not hold layers [{partition.cuts[0]}, {L}) and the head" if not ue_holds_all else
                   f"this UE holds its layers at {ue_p}, not the edge's {edge_p}, so it cannot replay the edge exactly")
            raise ExecutorError(f"{e}; {why}, so the request cannot finish locally") from None
        if remote and result.report.fallback_segments:  # dead, hung, busy or another model: finished here
            self._mark_down(remote_exec.last_unavailable if remote_exec is not None else None)
        elif not remote and partition.cuts[0] < L:
            result.report.fallback_segments = [1]  # served on the UE because the edge was down
        return result

    def close(self) -> None:
        self._stop.set()
        self.conn.close()
