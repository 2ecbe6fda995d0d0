"""The pipeline's wire and control-plane formats: the int64 message header and the store keys.

Data plane (torch.distributed point-to-point, tensors only): every message between two stages
starts with one fixed-size *frame*, ``uint8[frame_bytes(H)] = uint8[8 * HEADER_LEN + 4 * H]``:
bytes ``0 .. 8*HEADER_LEN`` are the header ``int64[HEADER_LEN]`` (little-endian, native), the rest
room for one position's float32 activation ``[H]``. A decode step (``length == 1``) carries its
activation inside the frame (one message per hop); a control message (STOP, SHUTDOWN) leaves it
zero; a prefill (``length > 1``) leaves it zero and sends the activation ``float32[1, length, H]``
as a second message. Byte-exact header layout (``int64`` slots):

=====  ==========  =============================================================================
slot   field       meaning
=====  ==========  =============================================================================
0      sample      sample id (index into the job's prompts), >= 0
1      position    position of the first token of the payload in that sample's sequence
2      length      number of positions in the payload (prompt length on a prefill, 1 after)
3      flags       bit 0 STOP: the sample finished, drop its KV cache (no payload);
                   bit 1 SHUTDOWN: every sample finished, forward and exit (no payload);
                   bit 2 RESET: a (re)prefill: drop any cache of this sample first
4      deliver_us  wall clock (microseconds) at which the payload has fully arrived over the
                   emulated link: the receiver waits until then (0 = no link emulation)
=====  ==========  =============================================================================

Control plane (the driver's TCPStore; plain UTF-8 JSON or ASCII, never pickle):

* ``job`` — the `JobSpec` JSON every stage reads at start-up.
* ``plan/{g}`` — generation ``g``: ordered member stage ids (ring order, member 0 = starter) and cuts.
* ``hb/{id}`` — a stage's heartbeat (its wall clock, seconds, as text), refreshed by a thread.
* ``out/{sid}`` — the committed token ids of sample ``sid`` (ASCII ``"id,"`` appended per token):
  the starter commits every token here *before* feeding it on, so a re-formed ring replays a
  sample from its last committed token and nothing is lost when the starter itself dies.
* ``done/{sid}`` — present once sample ``sid`` finished (value: ``eos`` or ``length``).
* ``abort/{g}`` — the driver's verdict that generation ``g`` is broken (JSON: dead stages, in flight).
* ``ack/{g}/{id}`` — stage ``id`` left generation ``g`` and waits for ``plan/{g+1}``.
* ``report/{g}/{id}`` — stage ``id``'s timing report for generation ``g`` (JSON).
* ``error/{id}`` — a stage's fatal error message (text), so the driver can show it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from splitrl.errors import UsageError

__all__ = [
    "HEADER_LEN", "STOP", "SHUTDOWN", "RESET", "Header", "JobSpec", "Plan", "key",
    "frame_bytes", "encode_frame", "decode_frame",
]

HEADER_LEN = 5
STOP = 1
SHUTDOWN = 2
RESET = 4


@dataclass(frozen=True)
class Header:
    """One decoded message header (see the module docstring for the slots)."""

    sample: int
    position: int
    length: int
    flags: int = 0
    deliver_us: int = 0

    def tensor(self) -> torch.Tensor:
        return torch.tensor([self.sample, self.position, self.length, self.flags, self.deliver_us], dtype=torch.int64)

    @classmethod
    def from_tensor(cls, t: torch.Tensor) -> "Header":
        if t.dtype != torch.int64 or t.shape != (HEADER_LEN,):
            raise UsageError(f"header must be int64[{HEADER_LEN}], got {t.dtype}{list(t.shape)}")
        s, p, n, f, ts = (int(v) for v in t.tolist())
        if s < 0 or p < 0 or n < 0 or f & ~(STOP | SHUTDOWN | RESET):
            raise UsageError(f"malformed header {[s, p, n, f, ts]}")
        return cls(s, p, n, f, ts)

    @property
    def has_payload(self) -> bool:
        return not self.flags & (STOP | SHUTDOWN)


def frame_bytes(hidden: int) -> int:
    """Size of the fixed first message of every hop: the header plus one float32 position."""
    return 8 * HEADER_LEN + 4 * int(hidden)


def encode_frame(header: Header, payload: torch.Tensor | None, hidden: int) -> torch.Tensor:
    """The frame ``uint8[frame_bytes(hidden)]`` for ``header``; a one-position ``payload`` ``[1, 1, H]`` goes inside."""
    frame = torch.zeros(frame_bytes(hidden), dtype=torch.uint8)
    frame[: 8 * HEADER_LEN].view(torch.int64).copy_(header.tensor())
    if payload is not None and header.length == 1:
        if payload.numel() != hidden:
            raise UsageError(f"a one-position payload has {hidden} values, got shape {list(payload.shape)}")
        frame[8 * HEADER_LEN:].view(torch.float32).copy_(payload.detach().reshape(-1))
    return frame


def decode_frame(frame: torch.Tensor, hidden: int) -> tuple[Header, torch.Tensor | None]:
    """(header, the inline activation ``[1, 1, H]`` (a copy) or None) of a received frame.

    None also for a prefill, whose activation arrives as the next message.
    """
    if frame.dtype != torch.uint8 or frame.shape != (frame_bytes(hidden),):
        raise UsageError(f"frame must be uint8[{frame_bytes(hidden)}], got {frame.dtype}{list(frame.shape)}")
    header = Header.from_tensor(frame[: 8 * HEADER_LEN].view(torch.int64))
    if header.has_payload and header.length < 1:
        raise UsageError(f"header {header} carries a payload of length 0")
    if header.has_payload and header.length == 1:
        return header, frame[8 * HEADER_LEN:].view(torch.float32).clone().view(1, 1, hidden)
    return header, None


@dataclass
class JobSpec:
    """Everything a stage needs to take part, published once by the driver as JSON under ``job``.

    Attributes:
        model: model name or path for `splitrl.models.load_model` (every stage loads it itself).
        prompts: token ids of every sample's prompt.
        max_new_tokens: per sample, how many tokens to generate at most.
        eos_token_id: generation of a sample stops at this token (None: only at max_new_tokens).
        do_sample, temperature, top_k, top_p, seed: token selection; sample ``i``'s step ``t`` draws
            from its own generator seeded by (seed, i, t), so the text never depends on interleaving.
        seeds: optional per-sample seeds replacing ``seed + i``.
        hop_links: per hop ``k`` (stage k -> k+1, the last one back to the starter): link name.
        link_profile: a `splitrl.cost` link profile emulated on every hop (air time), or None.
        snr_db: fixed SNR per hop (None: the profile's fading process, seeded per hop).
        timeout_s: torch.distributed timeout (a dead peer becomes an error after at most this).
        trace: record a per-stage schedule (start/end of every compute step) in the reports.
        num_layers: the model's decoder layers (a stage loads only its range of them before loading).
        fingerprint: `LoadedModel.fingerprint` of the driver's model; a stage whose weights differ refuses.
        precisions: weight precision per stage id (None: fp32 everywhere).
    """

    model: str
    prompts: list[list[int]]
    max_new_tokens: list[int]
    eos_token_id: int | None = None
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    seeds: list[int] | None = None
    hop_links: list[str] = field(default_factory=list)
    link_profile: str | None = None
    snr_db: list[float] | None = None
    timeout_s: float = 60.0
    trace: bool = True
    num_layers: int = 0
    fingerprint: str = ""
    precisions: list[str] | None = None

    def precision_of(self, stage_id: int) -> str:
        return "fp32" if not self.precisions else self.precisions[stage_id]

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> "JobSpec":
        data: dict[str, Any] = json.loads(text)
        return cls(**data)

    def sample_seed(self, sample: int) -> int:
        return int(self.seeds[sample]) if self.seeds is not None else int(self.seed) + int(sample)


@dataclass
class Plan:
    """Generation ``g`` of the ring: member stage ids in ring order (member 0 is the starter) and its cuts."""

    generation: int
    members: list[int]
    cuts: list[int]

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> "Plan":
        d = json.loads(text)
        return cls(int(d["generation"]), [int(m) for m in d["members"]], [int(c) for c in d["cuts"]])

    @property
    def world(self) -> int:
        return len(self.members)

    def bounds(self, num_layers: int) -> list[tuple[int, int]]:
        """Layer range ``[start, stop)`` of every member."""
        b = [0, *self.cuts, num_layers]
        return [(b[k], b[k + 1]) for k in range(self.world)]


def key(*parts: object) -> str:
    """A store key from its parts: ``key("plan", 3) == "plan/3"``."""
    return "/".join(str(p) for p in parts)
