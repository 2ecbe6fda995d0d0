"""The link contract — a sender half and a receiver half around the bytes on the wire — and the lossless link.

A `Link` sits at one cut of a partition. Its **sender half** (`Link.send`) takes what leaves the
segment before the cut — token ids (int64 ``[B, T]``) at cut 0, hidden states (float ``[B, T, H]``)
otherwise — applies the link's effects (codec quantisation, bit errors, erasures, analog noise,
dropout) with the link's own seeded generators, and returns a `Frame`: the exact bytes that go on
the wire plus the bytes charged on the air. Its **receiver half** (`Link.receive`) turns a frame's
bytes back into a tensor under a `ReceiverPolicy`. In one process `transmit` is
``receive(send(x))``; across processes the UE runs `send`, the bytes travel (splitrl.deploy), and
the edge runs `receive` with the same policy — the same code path, so a two-process run equals the
in-process emulation with the same seed.

Every send is recorded as a `Transfer` (boundary, phase, step, bytes on the air) from the frame it
produced, so reports and cost models read the traffic that was actually sent.

What is on the wire (``Frame.data``):

=============  ===================================================================  ==================
payload        bytes                                                                air bytes charged
=============  ===================================================================  ==================
token ids      raw little-endian uint16 ids (uint32 past 65,536 ids), no header      = len(data)
codec links    the `splitrl.link.codec` frame (header | per-token scales | body)      = len(data) (+ retx)
lossless       the fp32 codec frame (fp64 for float64 models)                        = len(data)
analog         the received samples y = x + n as an fp32 frame (fp64 for float64)    channel uses (see
                                                                                     `splitrl.link.analog`)
dropout        the masked tensor as an fp32 frame                                    4 N (reference)
=============  ===================================================================  ==================

Why analog and dropout ship the *received* samples: analog symbols are not bytes, so the wire
carries what the receiver's ADC would see, losslessly, and the air is charged in channel uses; the
noise is drawn on the sender with the sender's seeded generator, which is what keeps the
two-process run bit-identical to the emulation.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from splitrl.channel.state import ChannelState
from splitrl.link.codec import (
    EncodedPayload, check_finite, codec_for_id, native_codec, token_id_bytes,
)
from splitrl.errors import UsageError

__all__ = [
    "ChannelLink", "Frame", "Link", "LosslessLink", "Phase", "ReceiverPolicy", "SeedLike", "Transfer",
    "clamp_to_dtype", "decode_tokens", "encode_tokens", "receive_hidden", "resolve_seed", "token_id_bytes",
]

Phase = Literal["prefill", "decode", "eval"]
SeedLike = int | np.integer | np.random.Generator


@dataclass(frozen=True)
class Transfer:
    """One payload crossing one boundary.

    Attributes:
        boundary: index of the cut in the partition (0 = first cut, between segment 0 and 1).
        phase: ``"prefill"``, ``"decode"`` or ``"eval"``.
        step: decode step (0 for prefill/eval).
        kind: ``"tokens"`` for token ids, ``"hidden"`` for activations.
        shape: payload shape.
        nbytes: bytes charged on the air for this payload, headers included.
        wire_bytes: bytes of the frame actually produced (``len(Frame.data)``).
    """

    boundary: int
    phase: str
    step: int
    kind: str
    shape: tuple[int, ...]
    nbytes: int
    wire_bytes: int = 0


@dataclass(frozen=True)
class Frame:
    """What the sender half produced: the wire bytes and what the air is charged.

    Attributes:
        kind: ``"tokens"`` or ``"hidden"``.
        shape: payload shape (the transport header carries it; codec frames also carry it).
        data: the bytes on the wire (see the module table).
        air_bytes: bytes charged on the air (equals ``len(data)`` except analog/dropout/retransmissions).
    """

    kind: str
    shape: tuple[int, ...]
    data: bytes
    air_bytes: int


@dataclass(frozen=True)
class ReceiverPolicy:
    """What the receiver does with decoded values (the only state the receiver half needs).

    Attributes:
        repair_nonfinite: replace NaN/±Inf decoded from corrupted bytes by 0 (what an erased block
            decodes to), counted as ``nonfinite_repaired``.
        clip: clamp decoded values to ±clip (a known activation bound), counted as ``clipped``; None = off.
    """

    repair_nonfinite: bool = True
    clip: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.repair_nonfinite, bool):
            raise UsageError(f"ReceiverPolicy.repair_nonfinite must be a bool, got {self.repair_nonfinite!r}")
        if self.clip is not None and not (isinstance(self.clip, (int, float)) and math.isfinite(self.clip) and self.clip > 0):
            raise UsageError(f"ReceiverPolicy.clip must be None or a finite number > 0, got {self.clip!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"repair_nonfinite": self.repair_nonfinite, "clip": self.clip}

    @classmethod
    def from_dict(cls, d: Any) -> "ReceiverPolicy":
        if not isinstance(d, dict) or set(d) - {"repair_nonfinite", "clip"}:
            raise UsageError(f"receiver policy must be a mapping with repair_nonfinite and clip, got {d!r:.200}")
        clip = d.get("clip")
        return cls(bool(d.get("repair_nonfinite", True)), None if clip is None else float(clip))


def clamp_to_dtype(x: torch.Tensor, dtype: torch.dtype, limit: float | None = None) -> torch.Tensor:
    """Clamp finite values so the cast to ``dtype`` cannot overflow to ±Inf."""
    bound = float(torch.finfo(dtype).max)
    if limit is not None:
        bound = min(bound, float(limit))
    if bound >= float(torch.finfo(x.dtype).max):
        return x
    return x.clamp(-bound, bound)


def encode_tokens(ids: torch.Tensor, vocab_size: int) -> bytes:
    """Token ids as raw little-endian uint16 (uint32 past 65,536 ids)."""
    width = token_id_bytes(vocab_size)
    arr = ids.detach().cpu().numpy().astype("<u2" if width == 2 else "<u4", copy=False)
    return arr.tobytes()


def decode_tokens(data: bytes, shape: tuple[int, ...], vocab_size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Inverse of `encode_tokens`; rejects a wrong length or ids outside the vocabulary."""
    width = token_id_bytes(vocab_size)
    n = math.prod(shape)
    if len(data) != n * width:
        raise UsageError(f"token frame has {len(data)} bytes, shape {tuple(shape)} needs {n * width}")
    arr = np.frombuffer(data, dtype="<u2" if width == 2 else "<u4").astype(np.int64)
    if arr.size and int(arr.max()) >= vocab_size:
        raise UsageError(f"token id {int(arr.max())} outside the vocabulary (0..{vocab_size - 1})")
    out = torch.from_numpy(arr.reshape(shape))
    return out.to(device) if device is not None else out


def receive_hidden(
    data: bytes, policy: ReceiverPolicy, dtype: torch.dtype, device: torch.device | str | None = None,
    stats: dict[str, Any] | None = None,
) -> torch.Tensor:
    """The receiver half for activations: parse a codec frame, decode, apply ``policy``, cast to ``dtype``."""
    payload = EncodedPayload.from_bytes(data, dtype=dtype, device=device)
    codec = codec_for_id(payload.codec_id)
    wide = torch.float64 if dtype == torch.float64 else torch.float32
    x = codec.decode(payload, dtype=wide)
    n_bad = 0
    if policy.repair_nonfinite:
        bad = ~torch.isfinite(x)
        n_bad = int(bad.sum())
        if n_bad:
            x = x.masked_fill(bad, 0.0)
    clipped = int((x.abs() > policy.clip).sum()) if policy.clip is not None else 0
    if stats is not None:
        stats["nonfinite_repaired"] = n_bad
        stats["clipped"] = clipped
    return clamp_to_dtype(x, dtype, policy.clip).to(dtype)


class Link(ABC):
    """Sender half (`send`) + receiver half (`receive`); ``transmit = receive ∘ send``.

    Subclasses implement `_encode(hidden) -> (wire bytes, air bytes)` and set ``policy``. The payload
    is never modified in place.
    """

    policy: ReceiverPolicy = ReceiverPolicy()

    def __init__(self, vocab_size: int = 65536) -> None:
        self.vocab_size = int(vocab_size)
        self.transfers: list[Transfer] = []
        self.last_stats: dict[str, Any] = {}

    # -- sender half ---------------------------------------------------------------------
    def send(self, payload: torch.Tensor, *, boundary: int = 0, phase: Phase = "eval", step: int = 0) -> Frame:
        """Apply the link's effects to ``payload`` and return the frame to put on the wire (recorded)."""
        shape = tuple(int(d) for d in payload.shape)
        if not payload.is_floating_point():
            data = encode_tokens(payload, self.vocab_size)
            frame = Frame("tokens", shape, data, len(data))
        else:
            data, air = self._encode(payload)
            frame = Frame("hidden", shape, data, int(air))
        self.transfers.append(Transfer(boundary, phase, step, frame.kind, shape, frame.air_bytes, len(frame.data)))
        return frame

    @abstractmethod
    def _encode(self, hidden: torch.Tensor) -> tuple[bytes, int]:
        """(wire bytes, air bytes) for one activation payload, channel effects applied."""

    # -- receiver half -------------------------------------------------------------------
    def receive(
        self, frame: Frame, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Turn a frame back into a tensor (token ids, or activations of ``dtype`` under ``self.policy``)."""
        if frame.kind == "tokens":
            return decode_tokens(frame.data, frame.shape, self.vocab_size, device)
        stats: dict[str, Any] = {}
        out = receive_hidden(frame.data, self.policy, dtype, device, stats)
        if tuple(out.shape) != tuple(frame.shape):
            raise UsageError(f"frame decodes to shape {tuple(out.shape)}, its header says {tuple(frame.shape)}")
        self.last_stats.update(stats)
        return out

    def transmit(
        self, payload: torch.Tensor, *, boundary: int = 0, phase: Phase = "eval", step: int = 0
    ) -> torch.Tensor:
        """Carry ``payload`` across the link in one process: ``receive(send(payload))``."""
        frame = self.send(payload, boundary=boundary, phase=phase, step=step)
        received = self.receive(frame, dtype=payload.dtype, device=payload.device)
        if received.shape != payload.shape:
            raise UsageError(
                f"{type(self).__name__} returned shape {tuple(received.shape)} for a payload "
                f"of shape {tuple(payload.shape)}; a link must preserve the shape"
            )
        return received

    def reset_stats(self) -> None:
        """Forget recorded transfers (the runtime does this at the start of each request)."""
        self.transfers.clear()

    @property
    def bytes_total(self) -> int:
        return sum(t.nbytes for t in self.transfers)


def resolve_seed(seed: SeedLike) -> int:
    """An integer seed; a numpy Generator is consumed once to derive one."""
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(0, 2**63 - 1))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int or a numpy.random.Generator, got {type(seed).__name__}")
    if seed < 0:
        raise UsageError(f"seed must be >= 0, got {seed}")
    return int(seed)


class ChannelLink(Link):
    """Base of the wireless links: channel state, private RNGs, ``last_stats``.

    * receives the per-slot `ChannelState` through `set_state` (the state persists until the next call);
    * owns its randomness: a numpy ``Generator`` (bit-flip counts and positions, block losses) and
      ``torch.Generator``s (Gaussian noise, dropout masks), all derived from one integer seed with
      ``numpy.random.SeedSequence``. The global RNGs are never touched, so two links built with the
      same seed produce bit-identical outputs over the same sequence of sends;
    * rejects non-finite hidden states (ValueError) before any channel effect.
    """

    def __init__(self, *, seed: SeedLike = 0, vocab_size: int = 65536) -> None:
        super().__init__(vocab_size=vocab_size)
        self.state: ChannelState | None = None
        self.reseed(seed)

    # -- channel state -------------------------------------------------------------------
    def set_state(self, state: ChannelState) -> None:
        """Install the channel state used by the following sends."""
        if not isinstance(state, ChannelState):
            raise TypeError(f"set_state expects a ChannelState, got {type(state).__name__}")
        self.state = state

    def _require_state(self) -> ChannelState:
        if self.state is None:
            raise UsageError(
                f"{type(self).__name__} needs a channel state: call set_state(ChannelState(...)) "
                "before transmit"
            )
        return self.state

    # -- randomness ------------------------------------------------------------------------
    def reseed(self, seed: SeedLike) -> None:
        """Restart this link's random streams from ``seed`` (int or numpy Generator)."""
        self.seed = resolve_seed(seed)
        np_ss, torch_ss = np.random.SeedSequence(self.seed).spawn(2)
        self._np_rng = np.random.default_rng(np_ss)
        # torch.manual_seed takes < 2**64; keep it in the positive int64 range to be safe.
        self._torch_seed = int(torch_ss.generate_state(1, np.uint64)[0] >> np.uint64(1))
        self._torch_gens: dict[str, torch.Generator] = {}

    def _torch_gen(self, device: torch.device) -> torch.Generator:
        """This link's torch generator on ``device`` (one stream per device, lazily seeded)."""
        key = str(device)
        gen = self._torch_gens.get(key)
        if gen is None:
            gen = torch.Generator(device=device)
            gen.manual_seed(self._torch_seed)
            self._torch_gens[key] = gen
        return gen

    @property
    def np_rng(self) -> np.random.Generator:
        return self._np_rng

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed})"


class LosslessLink(ChannelLink):
    """The one lossless link: activations travel bit-exactly as an fp32 codec frame (fp64 for float64)."""

    def _encode(self, hidden: torch.Tensor) -> tuple[bytes, int]:
        check_finite(hidden)
        self.last_stats = {}
        data = native_codec(hidden.dtype).encode(hidden).to_bytes()
        return data, len(data)
