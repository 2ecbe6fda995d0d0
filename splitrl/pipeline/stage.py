"""One stage of the ring: a process that owns a contiguous layer range and a KV cache per sample.

Member 0 of a generation is the *starter*: it holds the embeddings and the head, sends every
sample's prefill into the ring, turns the hidden state that comes back from the last member into
the next token, commits that token to the store, and feeds it on. Members ``1..K-1`` receive a
header and an activation from their predecessor, run their layers with that sample's cache and
pass the result on (the last one only the final position, which is all the head needs). With S
samples in flight every member works on a different sample at the same time: recurrent pipeline
parallelism (MDI-LLM).

Failure handling: any communication error (a dead or vanished neighbour) makes a stage leave its
process group — which closes its connections and so propagates the error around the ring within
milliseconds — acknowledge under ``ack/{g}/{id}`` and wait for the driver's ``plan/{g+1}``. It
then joins the new generation (possibly with another rank and layer range) on the same store. All
per-sample state that must survive (the committed tokens) lives in the store, so a re-formed ring
replays each unfinished sample from its last committed token.
"""
from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from transformers.cache_utils import DynamicCache

from splitrl.dist import Endpoint, backend_for, connect_store, form_group, leave_group
from splitrl.models import load_model
from splitrl.pipeline.hops import Hop, wait_until_us
from splitrl.pipeline.protocol import (
    RESET, SHUTDOWN, STOP, Header, JobSpec, Plan, decode_frame, encode_frame, frame_bytes, key,
)
from splitrl.proc import peak_rss_bytes, rss_bytes
from splitrl.quant.decoder import LeanLlamaLayer
from splitrl.quant.weights import QUANT_MODULES
from splitrl.runtime.sampling import SamplingConfig, TokenSampler
from splitrl.errors import UsageError

__all__ = ["StageReport", "run_stage", "select_token", "parse_committed", "load_for", "param_bytes"]

HEARTBEAT_S = 0.25
COMMIT_COALESCE_S = 0.02
MAX_TRACE = 4000


def select_token(job: JobSpec, sample: int, step: int, logits: torch.Tensor) -> int:
    """The token of ``sample`` at decode step ``step`` from last-position logits ``[1, V]``.

    Sampling draws from a generator seeded by (sample seed, step) only, so the text of a sample
    does not depend on how samples interleave, on the ring's size, or on a replay after a failure.
    """
    if not job.do_sample:
        return int(logits.argmax(dim=-1).item())
    seed = (job.sample_seed(sample) * 1_000_003 + step) % (2**63 - 1)
    cfg = SamplingConfig(do_sample=True, temperature=job.temperature, top_k=job.top_k, top_p=job.top_p, seed=seed)
    return int(TokenSampler(cfg)(logits).item())


def parse_committed(raw: bytes | str) -> list[int]:
    """Token ids from an ``out/{sid}`` value (``"12,7,"``)."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    return [int(t) for t in text.split(",") if t]


@dataclass
class StageReport:
    """What one member did in one generation (published as JSON under ``report/{g}/{id}``)."""

    stage: int
    generation: int
    rank: int
    world: int
    layers: tuple[int, int]
    messages: int = 0
    tokens: int = 0
    compute_s: float = 0.0
    recv_wait_s: float = 0.0
    air_wait_s: float = 0.0
    wall_s: float = 0.0
    t_start: float = 0.0
    t_end: float = 0.0
    hop: dict = field(default_factory=dict)
    peak_rss_bytes: int = 0     # this process's own peak resident set (VmHWM, `splitrl.proc.peak_rss_bytes`)
    rss_bytes: int = 0          # resident set at the end of the generation
    param_bytes: int = 0        # bytes of the weights this process materialised (the rest is on ``meta``)
    held_layers: list = field(default_factory=list)  # [start, stop) of the decoder layers it holds
    holds_embed_head: bool = False
    trace: list = field(default_factory=list)   # [sample, kind, t_start, t_end] (wall clock)

    def to_json(self) -> str:
        d = dict(self.__dict__)
        d["layers"] = list(self.layers)
        return json.dumps(d)


class _Heartbeat(threading.Thread):
    """Refreshes ``hb/{id}`` on its own store connection; exits the process if the driver's store is gone."""

    def __init__(self, endpoint: Endpoint, stage_id: int) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{stage_id}")
        self.store = connect_store(endpoint, host_store=False)
        self.key = key("hb", stage_id)
        self.stop_event = threading.Event()

    def run(self) -> None:
        failures = 0
        while not self.stop_event.is_set():
            try:
                self.store.set(self.key, f"{time.time():.6f}")
                failures = 0
            except Exception:  # the driver (store host) is gone: nobody can use our output any more
                failures += 1
                if failures >= 8:
                    os._exit(3)
            self.stop_event.wait(HEARTBEAT_S)


class _Committer(threading.Thread):
    """Writes the starter's tokens (``out/{sid}``) and finish marks (``done/{sid}``) to the store, in order.

    A synchronous store round trip per token sat on the ring's critical path (on a busy 2-core
    machine the driver that hosts the store must first be scheduled); this thread takes it off.
    Replay stays exact: the committed prefix is always a prefix of what was fed on, and token
    selection depends only on (sample, step), so a re-formed ring that replays from an older
    committed token regenerates the same tokens. Tokens queued for one sample are appended in one
    round trip; a ``done`` mark is written only after that sample's tokens.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(daemon=True, name="committer")
        self.store = connect_store(endpoint, host_store=False)
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.error: BaseException | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._pending = 0
        self._lock = threading.Lock()

    def token(self, sid: int, tok: int) -> None:
        self._put(("out", sid, f"{tok},"))

    def done(self, sid: int, reason: str) -> None:
        self._put(("done", sid, reason))

    def _put(self, item: tuple) -> None:
        if self.error is not None:
            raise RuntimeError(f"committing to the store failed: {self.error}")
        with self._lock:
            self._pending += 1
            self._idle.clear()
        self.queue.put(item)

    def run(self) -> None:
        while True:
            items = [self.queue.get()]
            if items[0] is None:
                return
            while True:  # take everything queued: one append per sample
                try:
                    items.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            stop = items[-1] is None
            items = [i for i in items if i is not None]
            try:
                out: dict[int, str] = {}
                for kind, sid, text in items:
                    if kind == "out":
                        out[sid] = out.get(sid, "") + text
                    else:  # done: its tokens first
                        if sid in out:
                            self.store.append(key("out", sid), out.pop(sid))
                        self.store.set(key("done", sid), text)
                for sid, text in out.items():
                    self.store.append(key("out", sid), text)
            except Exception as e:  # the driver is gone; the caller sees it at its next put or flush
                self.error = e
            with self._lock:
                self._pending -= len(items)
                if self._pending == 0:
                    self._idle.set()
            if stop:
                return
            time.sleep(COMMIT_COALESCE_S)  # let a few tokens gather: fewer wake-ups of this thread and the store

    def flush(self, timeout_s: float = 60.0) -> None:
        """Block until everything queued so far is in the store."""
        if not self._idle.wait(timeout_s):
            raise RuntimeError(f"committing to the store took more than {timeout_s} s")
        if self.error is not None:
            raise RuntimeError(f"committing to the store failed: {self.error}")

    def close(self) -> None:
        self.queue.put(None)


class _Ring:
    """Point-to-point messaging with the two neighbours of this member (tensors only, no pickle).

    Every message starts with one fixed-size frame (`protocol.frame_bytes`): the int64 header and
    room for one position's activation, so a decode step (and any control message) is a single
    gloo message per hop: two back-to-back messages cost the receiver two wake-ups, which on a
    loaded 2-core machine measured several times the round trip of one. A prefill (length > 1)
    sends its ``[1, T, H]`` activation as a second message.
    """

    def __init__(self, rank: int, world: int, hidden: int) -> None:
        self.rank, self.world, self.hidden = rank, world, hidden
        self.next = (rank + 1) % world
        self.prev = (rank - 1) % world
        self._pending: deque = deque()
        self._max_pending = 64
        self.recv_wait_s = 0.0
        self._rbuf = torch.empty(frame_bytes(hidden), dtype=torch.uint8)  # reused: parsed before the next receive

    def send(self, header: Header, payload: torch.Tensor | None = None) -> None:
        frame = encode_frame(header, payload, self.hidden)
        works = [dist.isend(frame, dst=self.next)]
        big = None
        if payload is not None and header.length > 1:
            big = payload.detach().to(torch.float32).contiguous()  # [1, T, H]
            works.append(dist.isend(big, dst=self.next))
        self._pending.append((works, frame, big))  # tensors stay alive until their send completed
        while len(self._pending) > self._max_pending:
            self._reap_one()

    def _reap_one(self) -> None:
        works, _, _ = self._pending.popleft()
        for w in works:
            w.wait()

    def flush(self) -> None:
        while self._pending:
            self._reap_one()

    def recv(self) -> tuple[Header, torch.Tensor | None]:
        t0 = time.perf_counter()
        dist.irecv(self._rbuf, src=self.prev).wait()
        header, payload = decode_frame(self._rbuf, self.hidden)
        if header.has_payload and payload is None:  # a prefill: the activation follows
            payload = torch.empty(1, header.length, self.hidden, dtype=torch.float32)
            dist.irecv(payload, src=self.prev).wait()
        self.recv_wait_s += time.perf_counter() - t0
        return header, payload


class _Worker:
    """The compute of one member in one generation."""

    def __init__(self, store, job: JobSpec, view, plan: Plan, stage_id: int, committer: _Committer) -> None:
        self.store, self.job, self.view, self.plan = store, job, view, plan
        self.committer = committer
        self.rank = plan.members.index(stage_id)
        self.world = plan.world
        self.start, self.stop = plan.bounds(view.num_layers)[self.rank]
        self.caches: dict[int, DynamicCache] = {}
        self.report = StageReport(stage_id, plan.generation, self.rank, self.world, (self.start, self.stop))
        self.hop: Hop | None = None
        if self.world > 1:
            links = job.hop_links or ["identity"]
            snr = job.snr_db[min(self.rank, len(job.snr_db) - 1)] if job.snr_db else None
            self.hop = Hop(
                self.rank, links[min(self.rank, len(links) - 1)], link_profile=job.link_profile, snr_db=snr,
                seed=job.seed * 31 + plan.generation, vocab_size=view.vocab_size,
            )
            self.ring = _Ring(self.rank, self.world, view.hidden_size)

    # ---- compute ---------------------------------------------------------------------------
    def _layers(self, sample: int, hidden: torch.Tensor, position: int, reset: bool) -> torch.Tensor:
        """Run this member's layers on ``hidden`` ``[1, T, H]`` for ``sample`` from ``position``."""
        if reset or sample not in self.caches:
            self.caches[sample] = DynamicCache(config=self.view.config)
        n = hidden.shape[1]
        pos = torch.arange(position, position + n).unsqueeze(0)  # [1, T]
        return self.view.run_layers(hidden, self.start, self.stop, pos, cache=self.caches[sample])

    def _timed(self, sample: int, kind: str, fn, *args):
        t0, p0 = time.time(), time.perf_counter()
        with torch.inference_mode():
            out = fn(*args)
        dt = time.perf_counter() - p0
        self.report.compute_s += dt
        if self.job.trace and len(self.report.trace) < MAX_TRACE:
            self.report.trace.append([sample, kind, t0, t0 + dt])
        return out

    def _forward(self, header: Header, hidden: torch.Tensor) -> None:
        """Pass this member's output to the next member through the outgoing hop."""
        assert self.hop is not None
        out, deliver = self.hop.carry(hidden)
        n = out.shape[1]  # the last member sends only the final position
        position = header.position + header.length - n
        self.ring.send(Header(header.sample, position, n, header.flags & RESET, deliver), out)

    # ---- member 1..K-1 ---------------------------------------------------------------------
    def run_relay(self) -> None:
        last = self.rank == self.world - 1
        while True:
            header, x = self.ring.recv()
            if header.flags & SHUTDOWN:
                self.ring.send(header)
                break
            if header.flags & STOP:
                self.caches.pop(header.sample, None)
                if not last:
                    self.ring.send(header)
                continue
            self.report.air_wait_s += wait_until_us(header.deliver_us)
            self.report.messages += 1

            def step(x=x, header=header):
                h = self._layers(header.sample, x, header.position, bool(header.flags & RESET))  # [1, T, H]
                return h[:, -1:, :] if last else h  # the head needs the last position only

            h = self._timed(header.sample, "prefill" if header.flags & RESET else "decode", step)
            self._forward(header, h)
        self.ring.flush()

    # ---- member 0 --------------------------------------------------------------------------
    def run_starter(self) -> None:
        job, view, store = self.job, self.view, self.store
        eos = job.eos_token_id
        committed: dict[int, list[int]] = {}
        local: deque = deque()  # world == 1: the "ring" is this process
        in_flight = 0

        def emit(sample: int, ids: list[int], position: int, reset: bool) -> None:
            def step():
                t = torch.tensor([ids], dtype=torch.long)                      # [1, T]
                pos = torch.arange(position, position + len(ids)).unsqueeze(0)  # [1, T]
                h = view.embed(t, pos)                                          # [1, T, H]
                return self._layers(sample, h, position, reset)

            h = self._timed(sample, "prefill" if reset else "decode", step)
            header = Header(sample, position, len(ids), RESET if reset else 0, 0)
            if self.world == 1:
                local.append((header, h[:, -1:, :]))
            else:
                self._forward(header, h)

        # (Re)start every unfinished sample from its prompt plus its committed tokens.
        for sid, prompt in enumerate(job.prompts):
            if store.check([key("done", sid)]):
                continue
            toks = parse_committed(store.get(key("out", sid))) if store.check([key("out", sid)]) else []
            committed[sid] = toks
            if toks and (len(toks) >= job.max_new_tokens[sid] or (eos is not None and toks[-1] == eos)):
                self.committer.done(sid, "eos" if toks[-1] == eos else "length")
                continue
            emit(sid, list(prompt) + toks, 0, True)
            in_flight += 1

        while in_flight:
            if self.world == 1:
                header, h = local.popleft()
            else:
                header, h = self.ring.recv()
                if not header.has_payload:
                    raise RuntimeError(f"starter got an unexpected control message {header}")
                self.report.air_wait_s += wait_until_us(header.deliver_us)
            sid = header.sample
            self.report.messages += 1
            toks = committed[sid]
            logits = self._timed(sid, "head", lambda: view.head(h[:, -1, :]))  # [1, V]
            tok = select_token(job, sid, len(toks), logits)
            toks.append(tok)
            # Commit (in order, off the critical path): a re-formed ring replays from the last committed token.
            self.committer.token(sid, tok)
            self.report.tokens += 1
            finished = (eos is not None and tok == eos) or len(toks) >= job.max_new_tokens[sid]
            if finished:
                self.committer.done(sid, "eos" if eos is not None and tok == eos else "length")
                in_flight -= 1
                if self.world > 1:
                    self.ring.send(Header(sid, 0, 0, STOP, 0))
            else:
                emit(sid, [tok], len(job.prompts[sid]) + len(toks) - 1, False)
        self.committer.flush()
        if self.world > 1:
            self.ring.send(Header(0, 0, 0, SHUTDOWN, 0))
            while True:  # every member has drained once the shutdown comes back around
                header, _ = self.ring.recv()
                if header.flags & SHUTDOWN:
                    break
            self.ring.flush()

    def run(self) -> StageReport:
        t0 = time.perf_counter()
        self.report.t_start = time.time()
        if self.rank == 0:
            self.run_starter()
        else:
            self.run_relay()
        r = self.report
        r.wall_s = time.perf_counter() - t0
        r.t_end = time.time()
        if self.world > 1:
            r.recv_wait_s = self.ring.recv_wait_s
            r.hop = {"index": self.hop.index, "link": self.hop.link_name, **self.hop.stats.to_dict()}
        # VmHWM, read in this process: getrusage's max-RSS would be the driver's peak inherited through fork + exec
        r.peak_rss_bytes = peak_rss_bytes()
        r.param_bytes = param_bytes(self.view.model)
        r.rss_bytes = rss_bytes()
        held = self.view.held_range()
        r.held_layers = list(held) if held is not None else ([] if not self.view.held_layers() else None)
        r.holds_embed_head = bool(self.view.holds_embed and self.view.holds_head)
        return r


def param_bytes(model: torch.nn.Module) -> int:
    """Bytes of the materialised (not ``meta``) weights, each shared tensor once (tied embeddings):
    parameters, plus the buffers of quantised modules (their weights are buffers)."""
    seen, total = set(), 0
    for p in model.parameters():  # parameters() already skips duplicates of a tied tensor
        if p.device.type != "meta" and id(p) not in seen:
            seen.add(id(p))
            total += p.numel() * p.element_size()
    for m in model.modules():  # modules() visits a shared (tied) module once
        if isinstance(m, (*QUANT_MODULES, LeanLlamaLayer)):
            total += sum(b.numel() * b.element_size() for b in m.buffers(recurse=False)
                         if b is not None and b.device.type != "meta")
    return total


def load_for(job: JobSpec, plan: Plan, stage_id: int, current=None):
    """The `LoadedModel` this member needs in ``plan``: only its layer range (the starter: plus the
    embeddings and the head). ``current`` is kept when it already holds all of that; otherwise the
    newly owned range is read (after a re-formation a survivor usually owns more layers)."""
    rank = plan.members.index(stage_id)
    start, stop = plan.bounds(job.num_layers)[rank]
    starter = rank == 0
    precision = job.precision_of(stage_id)
    if current is not None and current.view.holds(start, stop, embed=starter, head=starter,
                                                  precision=precision) is None:
        return current
    del current  # free the old range before reading the new one
    lm = load_model(job.model, layers=(start, stop), embed=starter, head=starter, precision=precision)
    if job.fingerprint and lm.fingerprint != job.fingerprint:
        raise UsageError(f"this stage's model {job.model!r} has fingerprint {lm.fingerprint[:12]}, the driver's "
                         f"{job.fingerprint[:12]}: every stage must hold parts of the same weights")
    if lm.view.num_layers != job.num_layers:
        raise UsageError(f"model has {lm.view.num_layers} layers, the job {job.num_layers}")
    return lm


def _wait_for_plan(store, generation: int, timeout_s: float) -> Plan | None:
    """The driver's plan for ``generation``; None if the driver ended the job (``final`` key) or time ran out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if store.check([key("plan", generation)]):
            return Plan.from_json(store.get(key("plan", generation)))
        if store.check(["final"]):
            return None
        time.sleep(0.02)
    return None


def run_stage(endpoint: Endpoint, stage_id: int, *, world: int | None = None, device: str = "cpu") -> int:
    """Take part in the job published on the store at ``endpoint`` as stage ``stage_id``; returns an exit code."""
    store = connect_store(endpoint, host_store=False, timeout_s=120.0)
    beat = _Heartbeat(endpoint, stage_id)
    beat.start()
    committer = _Committer(endpoint)
    committer.start()
    try:
        job = JobSpec.from_json(store.get("job"))
        plan = _wait_for_plan(store, 0, 120.0)
        if plan is not None and world is not None and plan.world != world:
            raise UsageError(f"--world {world} does not match the driver's plan of {plan.world} stages")
        generation = 0
        lm = None
        while plan is not None and stage_id in plan.members:
            rank = plan.members.index(stage_id)
            lm = load_for(job, plan, stage_id, lm)  # only this member's layers (+ embeddings/head on the starter)
            view = lm.view
            try:
                form_group(store, rank, plan.world, generation=generation, backend=backend_for(device),
                           timeout_s=job.timeout_s)
                report = _Worker(store, job, view, plan, stage_id, committer).run()
            except (RuntimeError, dist.DistBackendError, ConnectionError) as e:
                # A neighbour is gone (or the driver aborted this generation): leave, which closes our
                # connections and so tells our own neighbours, then wait for the next plan.
                leave_group()
                try:  # what this member committed must be in the store before the next starter replays
                    committer.flush(timeout_s=job.timeout_s)
                except RuntimeError:
                    pass
                store.set(key("ack", generation, stage_id), str(e)[:500])
                generation += 1
                plan = _wait_for_plan(store, generation, 600.0)
                continue
            store.set(key("report", generation, stage_id), report.to_json())
            leave_group()
            return 0
        return 0
    except Exception as e:
        try:
            store.set(key("error", stage_id), f"{type(e).__name__}: {e}"[:2000])
        except Exception:
            pass
        raise
    finally:
        leave_group()
        committer.close()
        beat.stop_event.set()
