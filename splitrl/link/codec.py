"""Activation codecs: how hidden states at a cut become bytes on the air, and back.

A codec turns a float tensor ``[..., H]`` (normally ``[B, T, H]``) into an `EncodedPayload` — a
fixed header, a metadata section (per-token scales for the integer codecs) and a body — and
decodes it back. Byte counts are exact: ``len(payload.to_bytes()) == payload.nbytes ==
codec.nbytes(shape)``, so cost models can use `Codec.nbytes` without encoding anything.

Frame layout (all multi-byte fields little-endian)::

    offset        size      field
    0             1         codec id (uint8): 0 fp32, 1 fp16, 2 bf16, 3 int8, 4 int4
    1             1         ndim d (uint8, 1..255)
    2             2         reserved flags (uint16, 0)
    4             4*d       shape, one uint32 per dim
    4+4d          M         metadata: per-token scales, fp32 (int codecs only; M = 4*R)
    4+4d+M        Bd        body

with ``N`` = number of elements, ``R = N / H`` = number of token rows (product of all dims but
the last) and the header size ``4 + 4d`` (16 bytes for ``[B, T, H]``):

    ====== ================ ============================
    codec  M (metadata)     Bd (body)
    ====== ================ ============================
    fp64   0                8 N   (id 5, wire-only: lossless links of float64 models)
    fp32   0                4 N
    fp16   0                2 N
    bf16   0                2 N
    int8   4 R              N
    int4   4 R              ceil(N / 2)
    ====== ================ ============================

Design choices (and why):

* Integer codecs scale PER TOKEN (absmax over the hidden dim, symmetric, no zero point).
  Middle-layer hidden states of small LMs (e.g. SmolLM2) carry a few "massive activation"
  tokens with magnitudes ~2.4e4 while ordinary tokens sit at ~1-10; one per-tensor scale would
  quantise every ordinary token to (almost) zero. Per-token scales confine the damage to the
  outlier row itself.
* Scales travel as fp32 (4 bytes per token): fp16 scales would add a ~5e-4 relative error to
  every element of a row for a 2-byte saving per token (<0.4 % of an int8 row at H = 576).
* The integer grids are symmetric: int8 uses codes -127..127, int4 codes -7..7. The unused
  codes (-128, -8) can only appear after channel bit errors; the decoder maps them to the
  nearest valid code, so a decoded element never exceeds its row's absmax.
* Scales are non-negative by construction, so the decoder ignores the sign bit of a received
  scale (a flipped sign bit would otherwise silently negate a whole token).
* An all-zero row has scale 0 and decodes to zeros (no division by zero). Bytes that are all
  zero decode to 0.0 for every codec, which is what block-erasure zero-fill relies on.
* Float codecs SATURATE: values beyond the wire format's finite range (fp16: |x| > 65504) are
  clamped to ±max before the cast instead of becoming ±Inf; the count is reported as
  ``EncodedPayload.saturated``. SmolLM2 outliers (~2.4e4) fit in fp16, so saturation is a
  corner case, but an Inf on the air would poison every downstream layer.
* Non-finite inputs (NaN/Inf) are rejected with a ValueError: they are an upstream numerics
  bug, not a channel effect, and quietly encoding them would hide it.
* ``fp64`` (id 5) exists only so the lossless link stays lossless for float64 models; it is not
  a link name (``CODEC_NAMES``), since no radio would carry doubles.
* Token ids (cut 0) are not a codec frame: they travel as raw little-endian uint16 ids (uint32
  when the vocabulary exceeds 65,536), no header — the transport header carries their shape
  (`token_id_bytes`).
* The original dtype is NOT on the air: the receiver knows the model's dtype. It rides along
  in `EncodedPayload.dtype` only so `decode` can restore it.
"""
from __future__ import annotations

import math
import struct
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch
from splitrl.errors import UsageError

__all__ = [
    "CODEC_NAMES",
    "BF16Codec",
    "Codec",
    "EncodedPayload",
    "FP16Codec",
    "FP32Codec",
    "Int4Codec",
    "Int8Codec",
    "check_finite",
    "codec_for_id",
    "peek_header",
    "get_codec",
    "header_nbytes",
    "native_codec",
    "token_id_bytes",
]

_HEADER_FIXED = struct.Struct("<BBH")  # codec id, ndim, reserved flags
_SCALE_BYTES = 4  # per-token scales are fp32 on the air


def token_id_bytes(vocab_size: int) -> int:
    """Bytes one token id takes on the air: 2 while the vocabulary fits in uint16, else 4."""
    return 2 if int(vocab_size) <= 65536 else 4


def header_nbytes(ndim: int) -> int:
    """Bytes of the frame header for a tensor with ``ndim`` dims: ``4 + 4 * ndim``."""
    return _HEADER_FIXED.size + 4 * int(ndim)


def check_finite(hidden: torch.Tensor, what: str = "hidden states") -> None:
    """Raise a ValueError naming the problem when ``hidden`` holds NaN or ±Inf."""
    if not hidden.is_floating_point():
        return
    finite = torch.isfinite(hidden)
    if bool(finite.all()):
        return
    n_nan = int(torch.isnan(hidden).sum())
    n_inf = int((~finite).sum()) - n_nan
    raise UsageError(
        f"{what} of shape {tuple(hidden.shape)} contain {n_nan} NaN and {n_inf} ±Inf values; "
        "links refuse non-finite activations (a non-finite hidden state is an upstream "
        "numerics bug, not a channel effect)"
    )


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if not 1 <= len(shape) <= 255:
        raise UsageError(f"payload ndim must be in [1, 255], got {len(shape)} (shape {shape})")
    if any(s < 0 or s >= 2**32 for s in shape):
        raise UsageError(f"payload dims must be in [0, 2**32), got shape {shape}")
    return shape


def _numel(shape: Sequence[int]) -> int:
    return math.prod(shape)


def _rows(shape: Sequence[int]) -> int:
    """Number of token rows (all dims but the hidden dim)."""
    return math.prod(shape[:-1])


@dataclass(frozen=True)
class EncodedPayload:
    """One encoded activation payload.

    Attributes:
        codec_id: id of the codec that produced it (see the module docstring).
        shape: shape of the original tensor (on the air, in the header).
        dtype: dtype to decode into (receiver-side knowledge, NOT on the air).
        body: 1-D uint8 tensor, the body bytes.
        meta: 1-D uint8 tensor, the metadata bytes (fp32 per-token scales; empty for float
            codecs).
        saturated: number of input elements the encoder clamped to the wire format's finite
            range (encoder-side statistic, NOT on the air).
    """

    codec_id: int
    shape: tuple[int, ...]
    dtype: torch.dtype
    body: torch.Tensor
    meta: torch.Tensor
    saturated: int = 0

    @property
    def header(self) -> bytes:
        """The frame header bytes (layout in the module docstring)."""
        return _HEADER_FIXED.pack(self.codec_id, len(self.shape), 0) + struct.pack(
            f"<{len(self.shape)}I", *self.shape
        )

    @property
    def header_nbytes(self) -> int:
        return header_nbytes(len(self.shape))

    @property
    def nbytes(self) -> int:
        """Exact bytes on the air: header + metadata + body."""
        return self.header_nbytes + int(self.meta.numel()) + int(self.body.numel())

    def with_bytes(self, meta: torch.Tensor, body: torch.Tensor) -> EncodedPayload:
        """The same frame with replaced (e.g. channel-corrupted) metadata and body bytes."""
        if meta.shape != self.meta.shape or body.shape != self.body.shape:
            raise UsageError("replacement meta/body must keep their byte lengths")
        return EncodedPayload(self.codec_id, self.shape, self.dtype, body, meta, self.saturated)

    def to_bytes(self) -> bytes:
        """Serialise the whole frame: header | metadata | body."""
        return (
            self.header
            + self.meta.detach().cpu().numpy().tobytes()
            + self.body.detach().cpu().numpy().tobytes()
        )

    @classmethod
    def from_bytes(
        cls,
        frame: bytes | bytearray | memoryview,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> EncodedPayload:
        """Parse a frame written by `to_bytes` (the receiver supplies ``dtype``)."""
        frame = bytes(frame)
        if len(frame) < _HEADER_FIXED.size:
            raise UsageError(f"frame of {len(frame)} bytes is shorter than the fixed header")
        codec_id, ndim, _flags = _HEADER_FIXED.unpack_from(frame, 0)
        if codec_id not in _CODECS_BY_ID:
            raise UsageError(f"unknown codec id {codec_id} in frame header")
        hdr = header_nbytes(ndim)
        if len(frame) < hdr:
            raise UsageError(f"frame of {len(frame)} bytes is shorter than its {hdr}-byte header")
        shape = _check_shape(struct.unpack_from(f"<{ndim}I", frame, _HEADER_FIXED.size))
        codec = _CODECS_BY_ID[codec_id]()
        m, b = codec.meta_nbytes(shape), codec.body_nbytes(shape)
        if len(frame) != hdr + m + b:
            raise UsageError(
                f"frame has {len(frame)} bytes, codec {codec.name} with shape {shape} needs "
                f"{hdr + m + b}"
            )

        def _u8(chunk: bytes) -> torch.Tensor:
            t = torch.frombuffer(bytearray(chunk), dtype=torch.uint8) if chunk else torch.empty(
                0, dtype=torch.uint8
            )
            return t.to(device) if device is not None else t

        return cls(
            codec_id, shape, dtype, body=_u8(frame[hdr + m :]), meta=_u8(frame[hdr : hdr + m])
        )


class Codec(ABC):
    """Encodes a float tensor ``[..., H]`` into an `EncodedPayload` and back."""

    name: ClassVar[str]
    codec_id: ClassVar[int]

    @abstractmethod
    def meta_nbytes(self, shape: Sequence[int]) -> int:
        """Metadata bytes for a tensor of ``shape``."""

    @abstractmethod
    def body_nbytes(self, shape: Sequence[int]) -> int:
        """Body bytes for a tensor of ``shape``."""

    def nbytes(self, shape: Sequence[int]) -> int:
        """Exact bytes on the air for a tensor of ``shape`` (header included)."""
        shape = _check_shape(shape)
        return header_nbytes(len(shape)) + self.meta_nbytes(shape) + self.body_nbytes(shape)

    @abstractmethod
    def encode(self, hidden: torch.Tensor) -> EncodedPayload:
        """Encode a finite float tensor (raises ValueError on NaN/Inf)."""

    @abstractmethod
    def decode(self, payload: EncodedPayload, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Decode to ``dtype`` (default: ``payload.dtype``), shape ``payload.shape``.

        Decoding never raises on corrupted bytes: received garbage (e.g. fp32 exponent flips)
        may decode to huge or non-finite values; the receiver policy for those lives in the
        link (`splitrl.link.digital`).
        """

    def _prepare(self, hidden: torch.Tensor) -> tuple[int, ...]:
        if not hidden.is_floating_point():
            raise UsageError(f"codec {self.name} encodes float tensors, got dtype {hidden.dtype}")
        shape = _check_shape(hidden.shape)
        check_finite(hidden)
        return shape

    def _check_payload(self, payload: EncodedPayload) -> None:
        if payload.codec_id != self.codec_id:
            raise UsageError(
                f"codec {self.name} (id {self.codec_id}) cannot decode a payload of codec id "
                f"{payload.codec_id}"
            )
        m, b = self.meta_nbytes(payload.shape), self.body_nbytes(payload.shape)
        if payload.meta.numel() != m or payload.body.numel() != b:
            raise UsageError(
                f"payload has {payload.meta.numel()}/{payload.body.numel()} meta/body bytes, "
                f"codec {self.name} expects {m}/{b} for shape {payload.shape}"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class _FloatCodec(Codec):
    """IEEE-style float on the air, no metadata; saturates to the wire format's finite range."""

    wire_dtype: ClassVar[torch.dtype]

    def meta_nbytes(self, shape: Sequence[int]) -> int:
        return 0

    def body_nbytes(self, shape: Sequence[int]) -> int:
        return _numel(shape) * torch.finfo(self.wire_dtype).bits // 8

    def encode(self, hidden: torch.Tensor) -> EncodedPayload:
        shape = self._prepare(hidden)
        x = hidden.detach()
        fmax = torch.finfo(self.wire_dtype).max
        # Only wider inputs can exceed the wire range; skip the pass otherwise.
        if torch.finfo(x.dtype).max > fmax:
            x = x.to(torch.float32) if x.dtype != torch.float64 else x
            over = x.abs() > fmax
            saturated = int(over.sum())
            if saturated:
                x = x.clamp(-fmax, fmax)
        else:
            saturated = 0
        wire = x.to(self.wire_dtype).contiguous().reshape(-1)
        if wire.data_ptr() == hidden.data_ptr():
            # Same dtype in and out: the cast is a no-op view. Copy, so the payload's bytes can
            # be corrupted in place without touching the sender's tensor.
            wire = wire.clone()
        body = wire.view(torch.uint8)
        meta = torch.empty(0, dtype=torch.uint8, device=body.device)
        return EncodedPayload(self.codec_id, shape, hidden.dtype, body, meta, saturated)

    def decode(self, payload: EncodedPayload, dtype: torch.dtype | None = None) -> torch.Tensor:
        self._check_payload(payload)
        out_dtype = dtype or payload.dtype
        wire = payload.body.contiguous().view(self.wire_dtype)
        return wire.reshape(payload.shape).to(out_dtype)


class FP32Codec(_FloatCodec):
    """fp32 on the air: 4 bytes per element (lossless for fp32/fp16/bf16 inputs)."""

    name = "fp32"
    codec_id = 0
    wire_dtype = torch.float32


class FP64Codec(_FloatCodec):
    """fp64 on the wire (8 bytes per element): lossless links of float64 models; not a link name."""

    name = "fp64"
    codec_id = 5
    wire_dtype = torch.float64


class FP16Codec(_FloatCodec):
    """fp16 on the air: 2 bytes per element; |x| > 65504 saturates to ±65504."""

    name = "fp16"
    codec_id = 1
    wire_dtype = torch.float16


class BF16Codec(_FloatCodec):
    """bf16 on the air: 2 bytes per element; fp32 range, 8-bit mantissa."""

    name = "bf16"
    codec_id = 2
    wire_dtype = torch.bfloat16


class _PerTokenIntCodec(Codec):
    """Symmetric integer grid with one fp32 absmax scale per token row."""

    bits: ClassVar[int]

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1

    def meta_nbytes(self, shape: Sequence[int]) -> int:
        return _SCALE_BYTES * _rows(shape)

    def _quantise(self, hidden: torch.Tensor) -> tuple[tuple[int, ...], torch.Tensor, torch.Tensor]:
        shape = self._prepare(hidden)
        if shape[-1] == 0:
            n_rows = _rows(shape)
            return (
                shape,
                torch.zeros(0, dtype=torch.int8, device=hidden.device),
                torch.zeros(n_rows, dtype=torch.float32, device=hidden.device),
            )
        x = hidden.detach().to(torch.float32).reshape(-1, shape[-1])
        scale = x.abs().amax(dim=1) / self.qmax  # [R]; 0 for all-zero rows
        # Divide by 1 where the scale is 0: the row is all zeros (or below fp32 resolution of
        # absmax / qmax) and quantises to code 0, decoding to exact zeros.
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        q = torch.round(x / safe[:, None]).clamp_(-self.qmax, self.qmax).to(torch.int8)
        return shape, q.reshape(-1), scale

    def _dequantise(
        self, q: torch.Tensor, scale_bytes: torch.Tensor, payload: EncodedPayload,
        dtype: torch.dtype | None,
    ) -> torch.Tensor:
        out_dtype = dtype or payload.dtype
        shape = payload.shape
        # Receiver-side sanity from the format itself: unused codes (-qmax-1) map to -qmax,
        # scales are non-negative by construction so their sign bit is ignored.
        q = q.to(torch.int16).clamp_(-self.qmax, self.qmax)
        scale = scale_bytes.contiguous().view(torch.float32).abs()
        if shape[-1] == 0:
            return torch.zeros(shape, dtype=out_dtype, device=q.device)
        x = q.reshape(-1, shape[-1]).to(torch.float32) * scale[:, None]
        return x.reshape(shape).to(out_dtype)


class Int8Codec(_PerTokenIntCodec):
    """int8 codes -127..127 with a per-token fp32 absmax scale: N + 4R bytes + header."""

    name = "int8"
    codec_id = 3
    bits = 8

    def body_nbytes(self, shape: Sequence[int]) -> int:
        return _numel(shape)

    def encode(self, hidden: torch.Tensor) -> EncodedPayload:
        shape, q, scale = self._quantise(hidden)
        body = q.contiguous().view(torch.uint8)
        meta = scale.contiguous().view(torch.uint8)
        return EncodedPayload(self.codec_id, shape, hidden.dtype, body, meta)

    def decode(self, payload: EncodedPayload, dtype: torch.dtype | None = None) -> torch.Tensor:
        self._check_payload(payload)
        q = payload.body.contiguous().view(torch.int8)
        return self._dequantise(q, payload.meta, payload, dtype)


class Int4Codec(_PerTokenIntCodec):
    """int4 codes -7..7 (two's-complement nibbles) with a per-token fp32 scale.

    Packing: the tensor is flattened row-major; element ``2i`` goes to the LOW nibble of body
    byte ``i`` and element ``2i+1`` to the HIGH nibble. An odd element count pads the last high
    nibble with 0. Bytes: ceil(N/2) + 4R + header.
    """

    name = "int4"
    codec_id = 4
    bits = 4

    def body_nbytes(self, shape: Sequence[int]) -> int:
        return (_numel(shape) + 1) // 2

    def encode(self, hidden: torch.Tensor) -> EncodedPayload:
        shape, q, scale = self._quantise(hidden)
        nib = q.view(torch.uint8) & 0x0F  # two's-complement low nibble
        if nib.numel() % 2:
            nib = torch.cat([nib, nib.new_zeros(1)])
        pairs = nib.reshape(-1, 2)
        body = pairs[:, 0] | (pairs[:, 1] << 4)
        meta = scale.contiguous().view(torch.uint8)
        return EncodedPayload(self.codec_id, shape, hidden.dtype, body.contiguous(), meta)

    def decode(self, payload: EncodedPayload, dtype: torch.dtype | None = None) -> torch.Tensor:
        self._check_payload(payload)
        b = payload.body
        nib = torch.stack([b & 0x0F, b >> 4], dim=1).reshape(-1)[: _numel(payload.shape)]
        q = (nib.to(torch.int16) ^ 8) - 8  # sign-extend the nibble
        return self._dequantise(q, payload.meta, payload, dtype)


_CODECS_BY_NAME: dict[str, type[Codec]] = {
    c.name: c for c in (FP32Codec, FP16Codec, BF16Codec, Int8Codec, Int4Codec)
}
CODEC_NAMES: tuple[str, ...] = tuple(_CODECS_BY_NAME)
_CODECS_BY_ID: dict[int, type[Codec]] = {c.codec_id: c for c in (*_CODECS_BY_NAME.values(), FP64Codec)}


def native_codec(dtype: torch.dtype) -> Codec:
    """The lossless wire codec for activations of ``dtype``: fp64 for float64, else fp32."""
    return FP64Codec() if dtype == torch.float64 else FP32Codec()


def peek_header(frame: bytes) -> tuple[Codec, tuple[int, ...]]:
    """(codec, shape) from a frame's header alone, without parsing the body (ValueError if malformed)."""
    if len(frame) < _HEADER_FIXED.size:
        raise UsageError(f"frame of {len(frame)} bytes is shorter than the fixed header")
    codec_id, ndim, _flags = _HEADER_FIXED.unpack_from(frame, 0)
    if len(frame) < header_nbytes(ndim):
        raise UsageError(f"frame of {len(frame)} bytes is shorter than its {header_nbytes(ndim)}-byte header")
    return codec_for_id(codec_id), _check_shape(struct.unpack_from(f"<{ndim}I", frame, _HEADER_FIXED.size))


def codec_for_id(codec_id: int) -> Codec:
    """The codec whose frames carry ``codec_id`` in their header (ValueError for unknown ids)."""
    try:
        return _CODECS_BY_ID[int(codec_id)]()
    except (KeyError, TypeError, ValueError):
        raise UsageError(f"unknown codec id {codec_id!r}; known: {sorted(_CODECS_BY_ID)}") from None


def get_codec(codec: str | Codec) -> Codec:
    """A codec instance by name (``fp32``, ``fp16``, ``bf16``, ``int8``, ``int4``) or as given."""
    if isinstance(codec, Codec):
        return codec
    try:
        return _CODECS_BY_NAME[codec]()
    except (KeyError, TypeError):
        raise UsageError(
            f"unknown codec {codec!r}; allowed: {', '.join(CODEC_NAMES)}"
        ) from None
