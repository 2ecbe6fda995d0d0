"""The edge server (``splitrl edge``): runs the edge's segment for UE sessions over gRPC.

Service ``splitrl.Edge`` (generic handlers, raw bytes, no generated code):

* ``Hello`` (unary) — the handshake and health check: msgpack map with the model's SHA-256, its
  layer count and the layers/embeddings/head this process holds, and how many sessions are open.
* ``Session`` (bidirectional stream, one per request) — `splitrl.deploy.wire` frames: ``open``
  (partition, segment, sampling, receiver policy, expected model SHA-256) -> ``ok``; ``step``
  (a link frame) -> ``token`` (sampled where the head is); ``close`` -> ``ok``.

Robustness: every stream is authenticated (bearer token, constant-time compare); any bad frame,
wrong token, oversized message, unknown session or a client that disconnects mid-stream ends THAT
stream with an ``error`` frame (or just its cleanup) and one log line; the server keeps serving the
others. Keepalive pings are accepted every 100 ms so a UE can notice a hung edge quickly.

Open streams are bounded, so silent clients cannot hold every session (and with them the worker
threads that ``Hello`` needs): a stream that waits longer than ``idle_timeout_s`` for its next frame
is cancelled (``--idle-timeout``), and one client (one connection, ``context.peer()``) may hold at
most ``max_streams_per_client`` streams at once (``--max-streams-per-client``); the one over the
cap is refused with ``RESOURCE_EXHAUSTED`` (the UE treats it like an unavailable edge). A session
may not grow past the model's maximum positions: the step that would is refused with a
``context length`` error before any compute (a 32k-token prefill on a 512-position model used to
run for seconds and grow the process by hundreds of MB).
"""
from __future__ import annotations

import threading
import time
import uuid
from concurrent import futures
from typing import Iterator

import grpc
import msgpack

from splitrl.log import get_logger
from splitrl.deploy import wire
from splitrl.deploy.security import check_token
from splitrl.link.base import Frame, ReceiverPolicy
from splitrl.runtime.executor import ExecutorError, LocalExecutor, SessionSpec
from splitrl.runtime.partition import InvalidPartitionError, Partition
from splitrl.runtime.sampling import SamplingConfig
from splitrl.errors import UsageError

__all__ = ["DEFAULT_IDLE_TIMEOUT_S", "DEFAULT_MAX_STREAMS_PER_CLIENT", "SERVICE", "EdgeServer", "server_options"]

SERVICE = "splitrl.Edge"
DEFAULT_IDLE_TIMEOUT_S = 30.0        # longer than any gap a UE leaves between frames (its prefill deadline)
DEFAULT_MAX_STREAMS_PER_CLIENT = 4
log = get_logger("edge")


def server_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """gRPC server options: message limits and permissive keepalive (the UE pings every 0.5 s)."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 100),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.so_reuseport", 0),
    ]


class EdgeServer:
    """Serves the segments this process holds to authenticated UE sessions (see module docstring)."""

    def __init__(self, loaded, token: str, *, max_sessions: int = 16,
                 max_message_bytes: int = wire.MAX_PAYLOAD_BYTES + wire.MAX_HEADER_BYTES + 4,
                 idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
                 max_streams_per_client: int = DEFAULT_MAX_STREAMS_PER_CLIENT) -> None:
        if not idle_timeout_s > 0:
            raise UsageError(f"idle_timeout_s must be > 0, got {idle_timeout_s}")
        if max_streams_per_client < 1:
            raise UsageError(f"max_streams_per_client must be >= 1, got {max_streams_per_client}")
        self.loaded = loaded
        self.view = loaded.view
        self.fingerprint = loaded.fingerprint
        self._token = token
        self.max_message_bytes = int(max_message_bytes)
        self.executor = LocalExecutor(self.view, max_sessions=max_sessions)
        self.max_sessions = int(max_sessions)
        self._server: grpc.Server | None = None
        self.port: int | None = None
        self.stats = {"sessions": 0, "steps": 0, "errors": 0, "auth_failures": 0, "idle_closed": 0,
                      "refused_per_client": 0}
        self._stats_lock = threading.Lock()
        self.idle_timeout_s = float(idle_timeout_s)
        self.max_streams_per_client = int(max_streams_per_client)
        # Open streams: key -> [peer, context, waiting since (monotonic; None while a frame is processed)].
        self._streams: dict[int, list] = {}
        self._streams_lock = threading.Lock()
        self._stream_ids = iter(range(1 << 62))
        self._watchdog_stop = threading.Event()
        self._watchdog: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0, *, tls: tuple[bytes, bytes] | None = None) -> int:
        """Bind ``host:port`` (TLS when ``tls = (cert_pem, key_pem)``) and start serving; returns the port."""
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.max_sessions + 4, thread_name_prefix="edge"),
            options=server_options(self.max_message_bytes),
            maximum_concurrent_rpcs=self.max_sessions + 4,
        )
        handlers = {
            "Hello": grpc.unary_unary_rpc_method_handler(self._hello),
            "Session": grpc.stream_stream_rpc_method_handler(self._session),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if tls is not None:
            creds = grpc.ssl_server_credentials([(tls[1], tls[0])])
            bound = server.add_secure_port(addr, creds)
        else:
            bound = server.add_insecure_port(addr)
        if not bound:
            raise OSError(f"could not bind {addr}")
        server.start()
        self._server, self.port = server, bound
        self._watchdog_stop.clear()
        self._watchdog = threading.Thread(target=self._watch_idle, daemon=True, name="edge-idle-watchdog")
        self._watchdog.start()
        return bound

    def stop(self, grace_s: float = 1.0) -> None:
        self._watchdog_stop.set()
        if self._server is not None:
            self._server.stop(grace_s).wait()
            self._server = None

    def wait(self) -> None:
        if self._server is not None:
            self._server.wait_for_termination()

    # -- helpers -------------------------------------------------------------------------
    def _count(self, key: str) -> None:
        with self._stats_lock:
            self.stats[key] += 1

    def _authorized(self, context: grpc.ServicerContext) -> bool:
        md = dict((k.lower(), v) for k, v in context.invocation_metadata())
        if check_token(md.get("authorization"), self._token):
            return True
        self._count("auth_failures")
        log.warning("refused a call from %s: missing or wrong bearer token", context.peer())
        context.abort(grpc.StatusCode.UNAUTHENTICATED,
                      "missing or wrong bearer token (authorization: Bearer <token from --token-file>)")
        return False

    def info(self) -> dict:
        held = self.view.held_layers()
        return {
            "v": wire.WIRE_VERSION, "model": self.loaded.name, "fp": self.fingerprint, "L": self.view.num_layers,
            "layers": [held[0], held[-1] + 1] if held else [0, 0], "embed": self.view.holds_embed,
            "head": self.view.holds_head, "hidden": self.view.hidden_size, "vocab": self.view.vocab_size,
            "dtype": str(self.view.dtype).replace("torch.", ""), "sessions": self.executor.open_sessions,
            "streams": self.open_streams, "max_sessions": self.max_sessions, "precision": self.view.base_precision,
        }

    # -- RPCs ----------------------------------------------------------------------------
    def _hello(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._authorized(context)
        return msgpack.packb(self.info(), use_bin_type=True)

    # -- open streams: the per-client cap and the idle deadline --------------------------
    def _admit(self, context: grpc.ServicerContext) -> int:
        """Register a new stream of ``context.peer()``, or abort it when that client is at its cap."""
        peer = context.peer()
        with self._streams_lock:
            held = sum(1 for entry in self._streams.values() if entry[0] == peer)
            if held < self.max_streams_per_client:
                key = next(self._stream_ids)
                self._streams[key] = [peer, context, time.monotonic()]
                return key
        self._count("refused_per_client")
        log.warning("refused a stream from %s: it already holds %d open streams (--max-streams-per-client)",
                    peer, held)
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                      f"splitrl edge busy: this client already holds {held} open streams "
                      f"(--max-streams-per-client {self.max_streams_per_client})")
        raise AssertionError("unreachable")  # abort raises

    def _waiting(self, key: int, waiting: bool) -> None:
        with self._streams_lock:
            entry = self._streams.get(key)
            if entry is not None:
                entry[2] = time.monotonic() if waiting else None

    def _release(self, key: int) -> None:
        with self._streams_lock:
            self._streams.pop(key, None)

    def _watch_idle(self) -> None:
        """Cancel every stream that has waited longer than ``idle_timeout_s`` for its next frame."""
        period = min(1.0, self.idle_timeout_s / 4)
        while not self._watchdog_stop.wait(period):
            now = time.monotonic()
            with self._streams_lock:
                idle = [(k, e) for k, e in self._streams.items() if e[2] is not None and now - e[2] > self.idle_timeout_s]
                for k, _ in idle:
                    self._streams.pop(k, None)
            for _, (peer, context, since) in idle:
                self._count("idle_closed")
                log.warning("closed a stream from %s: no frame for %.0f s (--idle-timeout %g)",
                            peer, now - since, self.idle_timeout_s)
                context.cancel()

    @property
    def open_streams(self) -> int:
        with self._streams_lock:
            return len(self._streams)

    def _session(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        self._authorized(context)
        key = self._admit(context)
        try:
            yield from self._serve_stream(requests, context, key)
        finally:
            self._release(key)

    def _serve_stream(self, requests: Iterator[bytes], context: grpc.ServicerContext, key: int) -> Iterator[bytes]:
        sid: str | None = None
        rid = "-"
        seq_in = seq_out = 0
        peer = context.peer()
        positions = 0  # context length of this session so far (prefill + decode tokens)
        limit = int(self.view.max_positions or 0)

        def reply(t: str, **fields) -> bytes:
            nonlocal seq_out
            msg = wire.Message(t, rid, seq_out, fields)
            seq_out += 1
            return wire.encode(msg)

        def fail(text: str) -> bytes:
            self._count("errors")
            log.warning("session %s from %s: %s", rid, peer, text)
            return reply("error", msg=text[:2000])

        try:
            for raw in requests:
                self._waiting(key, False)
                try:
                    msg = wire.decode(raw)
                except wire.WireError as e:
                    yield fail(f"bad frame: {e}")
                    return
                rid = msg.rid
                if msg.seq != seq_in:
                    yield fail(f"frame out of order: seq {msg.seq}, expected {seq_in}")
                    return
                seq_in += 1
                if msg.type == "open":
                    if sid is not None:
                        yield fail("a session is already open on this stream")
                        return
                    try:
                        spec = self._open_spec(msg)
                        self.executor.open(spec)
                    except (ExecutorError, InvalidPartitionError, ValueError) as e:
                        yield fail(str(e))
                        return
                    sid = spec.session_id
                    self._count("sessions")
                    yield reply("ok")
                    self._waiting(key, True)
                elif msg.type == "step":
                    if sid is None:
                        yield fail("step before open")
                        return
                    f = msg.fields
                    shape = tuple(f["shape"])
                    n_new = shape[1] if len(shape) > 1 else 1
                    if limit and positions + n_new > limit:  # refused before any compute or cache growth
                        yield fail(f"context length: step {msg.seq} brings the session to {positions + n_new} "
                                   f"positions; this model holds at most {limit}")
                        return
                    positions += n_new
                    frame = Frame(f["k"], shape, msg.payload, len(msg.payload))
                    try:
                        out, stats = self.executor.step(sid, frame, f["ph"])
                    except (ExecutorError, ValueError, TypeError, RuntimeError) as e:
                        yield fail(f"step {msg.seq} failed: {e}")
                        return
                    self._count("steps")
                    yield reply("token", tok=int(out.reshape(-1)[0].item()), sec=float(stats.seconds))
                    self._waiting(key, True)
                elif msg.type == "close":
                    yield reply("ok")
                    return
                else:
                    yield fail(f"unexpected {msg.type!r} frame from a UE")
                    return
        except grpc.RpcError:
            pass  # the client went away mid-stream: nothing to answer, clean up below
        finally:
            if sid is not None:
                self.executor.close(sid)

    def _open_spec(self, msg: wire.Message) -> SessionSpec:
        f = msg.fields
        if f["fp"] != self.fingerprint:
            raise UsageError(
                f"model mismatch: the UE runs model {f['fp'][:16]}…, this edge holds {self.loaded.name} "
                f"({self.fingerprint[:16]}…)")
        if f["L"] != self.view.num_layers:
            raise UsageError(f"the UE's model has {f['L']} layers, this edge's has {self.view.num_layers}")
        partition = Partition.of(list(f["cuts"]), f["L"], f.get("prec"))
        want = partition.precision_of(f["seg"]) if f["seg"] < partition.num_segments else None
        if want is not None and self.view.holds(0, 0, precision=want) is not None:
            raise UsageError(
                f"precision mismatch: the UE asks this edge to run its segment at {want}, this edge holds "
                f"{self.loaded.name} at {self.view.base_precision} (start it with --precision {want})")
        seg = f["seg"]
        if seg >= partition.num_segments:
            raise UsageError(f"segment {seg} does not exist in a partition with cuts {list(partition.cuts)}")
        if not partition.segments()[seg].has_head:
            raise UsageError("this edge serves only the last segment (the one that runs the head)")
        sampling = SamplingConfig(**f["sampling"])
        policy = ReceiverPolicy(**f["policy"]) if f["policy"] else ReceiverPolicy()
        return SessionSpec(f"{uuid.uuid4().hex}:{msg.rid}"[:128], partition, seg, sampling, policy)
