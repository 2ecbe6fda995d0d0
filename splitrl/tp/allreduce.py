"""Tensor-parallel all-reduces (`engine`, `star`, `ring`) and the master's broadcast, over emulated links.

Each class implements `splitrl.dist.AllReduce` and registers itself by name, so the TP runtime
builds whichever one the config names with ``make_allreduce(name, **kwargs)`` — including
all-reduces defined elsewhere (AirComp) that follow the same contract.

* ``engine``: ``torch.distributed.all_reduce`` (gloo picks ring / halving-doubling itself).
* ``star`` (TPI-LLM): every worker sends its partial sum to the master (rank 0), the master adds
  them in rank order and sends the total back. 2 message latencies per all-reduce, whatever N:
  it wins when link latency dominates.
* ``ring``: reduce-scatter then all-gather on ``isend``/``irecv`` (2(N-1) steps of 1/N of the
  tensor): bandwidth-optimal, but 2(N-1) message latencies.

Emulated link (`LinkSpec`): every message a rank sends passes through a `splitrl.link` link
(codec quantisation, bit errors, AWGN, ...) *at the sender*, so what the peer receives is what
that link would deliver; ``bytes_sent`` counts the codec's exact frame bytes, and air time comes
from `splitrl.channel.latency.LatencyModel` (rate + per-message latency + HARQ). With
``emulate_delay`` the sender also sleeps that air time (real-time emulation). A lossy downlink
gives each worker its own noisy copy of the sum — exactly what a wireless star would do.

Every wait has the group's timeout; a dead or hung peer becomes a `PeerError` naming that peer.
"""
from __future__ import annotations

import datetime as _dt
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.distributed as dist

from splitrl.channel.latency import LatencyConfig, LatencyModel
from splitrl.dist import DEFAULT_TIMEOUT_S, AllReduce, CollectiveStats, register_allreduce
from splitrl.errors import UsageError
from splitrl.link import LINK_NAMES, link_at

__all__ = [
    "EngineAllReduce", "LinkSpec", "MasterBroadcast", "PeerError", "RingAllReduce", "StarAllReduce", "EmulatedLink",
]


class PeerError(RuntimeError):
    """A collective failed or timed out because of one peer; ``peer`` is that peer's rank (or None)."""

    def __init__(self, message: str, peer: int | None = None) -> None:
        super().__init__(message)
        self.peer = peer


@dataclass(frozen=True)
class LinkSpec:
    """The emulated link every collective message crosses (plain data: travels as JSON in configs).

    Attributes:
        name: a `splitrl.link` link name (``identity``, ``fp16``, ``int8``, ``int8-biterr``, ``awgn``, ...).
        snr_db, ber: channel level for stochastic links (see `splitrl.link.link_at`).
        seed: base seed; each (sender, receiver) pair derives its own stream.
        rate_bps: link rate for the air time (None: no serialisation time).
        latency_s: fixed per-message latency (propagation + protocol overhead), >= 0.
        bler: block error rate for HARQ retransmissions in the air time (None: error-free).
        emulate_delay: sleep the air time on every send (real-time emulation).
    """

    name: str = "identity"
    snr_db: float | None = None
    ber: float | None = None
    seed: int = 0
    rate_bps: float | None = None
    latency_s: float = 0.0
    bler: float | None = None
    emulate_delay: bool = False

    def __post_init__(self) -> None:
        if self.name not in LINK_NAMES:
            raise UsageError(f"--link: unknown link {self.name!r}; allowed: {', '.join(LINK_NAMES)}")
        if self.rate_bps is not None and not self.rate_bps > 0:
            raise UsageError(f"--link-rate: must be > 0 bit/s, got {self.rate_bps}")
        if not self.latency_s >= 0:
            raise UsageError(f"--link-latency: must be >= 0 s, got {self.latency_s}")
        stochastic = self.name in ("awgn", "analog") or self.name.endswith(("-biterr", "-erasure"))
        if stochastic and self.snr_db is None and self.ber is None:
            raise UsageError(f"--link {self.name}: needs a channel level, --link-snr DB or --link-ber P")
        if self.name == "dropout":
            raise UsageError("--link dropout: not supported for collectives; use a codec, -biterr, -erasure or awgn link")

    @property
    def is_identity(self) -> bool:
        return self.name == "identity" and self.rate_bps is None and self.latency_s == 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def coerce(cls, spec: "LinkSpec | dict | str | None") -> "LinkSpec":
        if spec is None:
            return cls()
        if isinstance(spec, LinkSpec):
            return spec
        if isinstance(spec, str):
            return cls(name=spec)
        if isinstance(spec, dict):
            return cls(**spec)
        raise UsageError(f"link: expected a LinkSpec, dict or link name, got {type(spec).__name__}")


class EmulatedLink:
    """One directed link (sender -> receiver): codec/channel effect, exact bytes, air time."""

    def __init__(self, spec: LinkSpec, src: int, dst: int, vocab_size: int = 65536) -> None:
        self.spec = spec
        seed = (int(spec.seed) * 1_000_003 + (src + 1) * 1009 + dst + 1) % (2**62)
        self.link = link_at(spec.name, seed=seed, snr_db=spec.snr_db, ber=spec.ber, vocab_size=vocab_size)
        self.latency = LatencyModel(LatencyConfig(distance_m=0.0, overhead_s=spec.latency_s))

    def send(self, x: torch.Tensor) -> tuple[torch.Tensor, int, float]:
        """(what the receiver gets, bytes on the air, air seconds) for one message ``x``."""
        if self.spec.name == "identity":
            received, nbytes = x, x.numel() * x.element_size()
        else:
            # Links work on [..., H] rows in float32; keep the caller's dtype on the wire result.
            flat = x.reshape(1, -1, x.shape[-1]) if x.dim() >= 2 else x.reshape(1, 1, -1)
            received = self.link.transmit(flat.float(), phase="decode").reshape(x.shape).to(x.dtype)
            nbytes = self.link.transfers[-1].nbytes
            self.link.transfers.clear()  # the stats below are the record; do not grow without bound
        if self.spec.rate_bps is not None:
            air = self.latency.expected(int(nbytes), float(self.spec.rate_bps), self.spec.bler).total_s
        else:
            air = self.spec.latency_s
        if self.spec.emulate_delay and air > 0:
            time.sleep(air)
        return received, int(nbytes), float(air)


class _P2P(AllReduce):
    """Shared machinery: lazily built links per peer, timeouts that name the peer."""

    name = "_p2p"

    def __init__(self, link: LinkSpec | dict | str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 vocab_size: int = 65536) -> None:
        super().__init__()
        self.link_spec = LinkSpec.coerce(link)
        if not timeout_s > 0:
            raise UsageError(f"--timeout: must be > 0 s, got {timeout_s}")
        self.timeout = _dt.timedelta(seconds=float(timeout_s))
        self.timeout_s = float(timeout_s)
        self.vocab_size = vocab_size
        self._links: dict[tuple[int, int], EmulatedLink] = {}

    @staticmethod
    def _me() -> tuple[int, int]:
        return dist.get_rank(), dist.get_world_size()

    def _send_payload(self, x: torch.Tensor, dst: int) -> torch.Tensor:
        """What ``dst`` should receive for ``x`` (link applied), counted in ``stats``."""
        src = dist.get_rank()
        key = (src, dst)
        link = self._links.get(key)
        if link is None:
            link = self._links[key] = EmulatedLink(self.link_spec, src, dst, self.vocab_size)
        out, nbytes, air = link.send(x)
        self.stats.bytes_sent += nbytes
        self.stats.air_seconds += air
        return out.contiguous()

    def _wait(self, work: Any, what: str, peer: int) -> None:
        try:
            work.wait(self.timeout)
        except Exception as e:  # gloo raises RuntimeError on timeout or a closed peer connection
            raise PeerError(
                f"rank {dist.get_rank()}: {what} rank {peer} failed or timed out after {self.timeout_s:g} s "
                f"(rank {peer} dead or hung?): {str(e).splitlines()[0] if str(e) else type(e).__name__}", peer,
            ) from None

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Time and count one all-reduce; a group of one returns a copy, others run `_reduce`."""
        t0 = time.perf_counter()
        rank, world = self._me()
        out, received = (x.clone(), 0) if world == 1 else self._reduce(x, rank, world)
        self._account(x, t0, received)
        return out

    def _reduce(self, x: torch.Tensor, rank: int, world: int) -> tuple[torch.Tensor, int]:
        """(the sum, bytes this rank received) for a group of ``world`` >= 2 ranks."""
        raise NotImplementedError

    def _account(self, x: torch.Tensor, t0: float, received: int) -> None:
        self.stats.calls += 1
        self.stats.elements += x.numel()
        self.stats.bytes_received += received
        self.stats.seconds += time.perf_counter() - t0


@register_allreduce("star")
class StarAllReduce(_P2P):
    """TPI-LLM's star: reduce to the master (rank 0) in rank order, then send the sum back."""

    name = "star"

    def _reduce(self, x: torch.Tensor, rank: int, world: int) -> tuple[torch.Tensor, int]:
        nb = x.numel() * x.element_size()
        received = 0
        if rank == 0:
            bufs = [torch.empty_like(x) for _ in range(world)]
            works = [(r, dist.irecv(bufs[r], src=r)) for r in range(1, world)]
            total = x.clone()
            for r, w in works:
                self._wait(w, "receiving the partial sum of", r)
                received += nb
            for r in range(1, world):  # fixed order: every rank sees the same bits
                total += bufs[r]
            sends = [(r, dist.isend(self._send_payload(total, r), dst=r)) for r in range(1, world)]
            for r, w in sends:
                self._wait(w, "sending the sum to", r)
            out = total
        else:
            out = torch.empty_like(x)
            recv = dist.irecv(out, src=0)
            send = dist.isend(self._send_payload(x, 0), dst=0)
            self._wait(send, "sending the partial sum to the master", 0)
            self._wait(recv, "receiving the sum from the master", 0)
            received += nb
        return out, received


@register_allreduce("ring")
class RingAllReduce(_P2P):
    """Reduce-scatter + all-gather around the ring ``r -> r+1`` on point-to-point sends."""

    name = "ring"

    def _reduce(self, x: torch.Tensor, rank: int, world: int) -> tuple[torch.Tensor, int]:
        out = x.detach().clone().reshape(-1)  # [numel]
        chunks = list(torch.tensor_split(out, world))  # views into out
        right, left = (rank + 1) % world, (rank - 1) % world
        received = 0

        def exchange(send_idx: int, recv_idx: int, what: str) -> torch.Tensor:
            nonlocal received
            buf = torch.empty_like(chunks[recv_idx])
            rw = dist.irecv(buf, src=left)
            sw = dist.isend(self._send_payload(chunks[send_idx], right), dst=right)
            self._wait(sw, f"{what}: sending to", right)
            self._wait(rw, f"{what}: receiving from", left)
            received += buf.numel() * buf.element_size()
            return buf

        for s in range(world - 1):  # reduce-scatter: rank ends owning the sum of chunk (rank+1) % world
            si, ri = (rank - s) % world, (rank - s - 1) % world
            chunks[ri].add_(exchange(si, ri, "reduce-scatter"))
        for s in range(world - 1):  # all-gather: pass the owned, fully reduced chunks around
            si, ri = (rank + 1 - s) % world, (rank - s) % world
            chunks[ri].copy_(exchange(si, ri, "all-gather"))
        return out.reshape(x.shape), received


@register_allreduce("engine")
class EngineAllReduce(_P2P):
    """``torch.distributed.all_reduce`` (the backend's own algorithm).

    With a lossy link, this rank's contribution crosses the link once before the reduce; the bytes
    counted are the contribution's frame bytes x 2(N-1)/N, the traffic of a bandwidth-optimal
    all-reduce (what gloo's ring and halving-doubling algorithms send per rank).
    """

    name = "engine"

    def _reduce(self, x: torch.Tensor, rank: int, world: int) -> tuple[torch.Tensor, int]:
        if self.link_spec.is_identity:
            y = x.clone()
            nbytes = x.numel() * x.element_size()
        else:
            key = (rank, -1)
            link = self._links.get(key) or self._links.setdefault(key, EmulatedLink(self.link_spec, rank, 0, self.vocab_size))
            y, nbytes, air = link.send(x)
            y = y.clone()
            self.stats.air_seconds += air * 2 * (world - 1) / world
        share = 2 * (world - 1) * nbytes // world
        self.stats.bytes_sent += share
        work = dist.all_reduce(y, async_op=True)
        self._wait(work, "all_reduce with", -1)
        return y, share


class MasterBroadcast(_P2P):
    """The master's per-token broadcast (the next token's embedding) as point-to-point sends over the link."""

    name = "broadcast"

    def reduce(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - not an all-reduce
        raise TypeError("MasterBroadcast is not an all-reduce; use broadcast()")

    def broadcast(self, x: torch.Tensor) -> torch.Tensor:
        """Rank 0 passes ``x``; the others pass a buffer of the same shape/dtype and get rank 0's data."""
        t0 = time.perf_counter()
        rank, world = self._me()
        received = 0
        if world > 1:
            if rank == 0:
                sends = [(r, dist.isend(self._send_payload(x, r), dst=r)) for r in range(1, world)]
                for r, w in sends:
                    self._wait(w, "broadcasting to", r)
            else:
                buf = torch.empty_like(x)
                self._wait(dist.irecv(buf, src=0), "receiving the broadcast from the master", 0)
                x = buf
                received = x.numel() * x.element_size()
        self._account(x, t0, received)
        return x


def allreduce_stats(ar: AllReduce) -> dict[str, Any]:
    """``ar.stats`` as a dict (any registered all-reduce)."""
    s: CollectiveStats = ar.stats
    return s.to_dict()
