"""The UE <-> edge wire format: a length-prefixed msgpack header, then the payload bytes.

One gRPC message on the session stream is one frame::

    offset   size   field
    0        4      H = header length (uint32, little-endian), 1 <= H <= MAX_HEADER_BYTES
    4        H      header: a msgpack map (keys below)
    4 + H    n      payload: exactly the bytes `splitrl.link` produced (``Frame.data``)

Header keys (every frame): ``v`` version (int, = WIRE_VERSION), ``t`` type, ``rid`` request id
(str, 1..128 chars), ``seq`` sequence number (int, 0..2**31-1, +1 per frame in each direction),
``n`` payload length, ``crc`` CRC-32 of the payload. Per type:

========  =====================================================================================
type      extra keys
========  =====================================================================================
open      ``cuts`` (list of int), ``L`` (layers), ``seg`` (segment the edge runs), ``sampling``
          (map: do_sample, temperature, top_k, top_p, seed), ``policy`` (map: repair_nonfinite,
          clip), ``fp`` (model SHA-256 the UE expects), ``prec`` (optional: the weight precision of
          each segment, `splitrl.quant.PRECISIONS`; absent = all fp32, the version-1 meaning)
step      ``ph`` phase (prefill/decode), ``b`` boundary, ``k`` kind (tokens/hidden), ``codec``
          (u16/u32 for tokens, else the codec name in the payload's own header), ``dt`` dtype the
          receiver decodes into, ``shape`` (list of int), ``q`` quantisation parameters: bytes of
          per-token scales at the front of the codec body (int, 0 for float codecs)
token     ``tok`` (int, the token sampled at the head), ``sec`` (edge compute seconds)
ok        — (acknowledges open/close)
error     ``msg`` (str, what was wrong; the stream ends after it)
close     —
========  =====================================================================================

Why this layout: the header is self-describing and small (~100 bytes) so a decoder can validate it
before touching the payload; the payload is *exactly* the link's frame, so bytes on the wire are
what the cost model counts; CRC-32 catches corruption of the transport itself (the emulated channel's
bit errors are applied by the sender *inside* the payload, on purpose, before the CRC is computed).
msgpack, not pickle: decoding data never runs code. Every limit is explicit (`decode` rejects
malformed, oversized or inconsistent frames with a `WireError` naming the field).
"""
from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import msgpack

from splitrl.quant.precision import PRECISIONS

__all__ = [
    "MAX_HEADER_BYTES", "MAX_PAYLOAD_BYTES", "MESSAGE_TYPES", "WIRE_VERSION", "Message", "WireError", "decode", "encode",
]

WIRE_VERSION = 1
MAX_HEADER_BYTES = 4096
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024  # a 64 MiB activation frame is ~29k tokens of SmolLM2 in fp32
MESSAGE_TYPES = ("open", "step", "token", "ok", "error", "close")
_LEN = struct.Struct("<I")
_PHASES = ("prefill", "decode")
_KINDS = ("tokens", "hidden")
_CODECS = ("u16", "u32", "fp64", "fp32", "fp16", "bf16", "int8", "int4")
_DTYPES = ("float32", "float64", "float16", "bfloat16")
_MAX_INT = 2**31 - 1


class WireError(ValueError):
    """A frame that is not a valid splitrl wire message; the message names the field."""


@dataclass(frozen=True)
class Message:
    """One decoded (or to-be-encoded) wire message: its type, ids, typed fields and payload."""

    type: str
    rid: str
    seq: int
    fields: dict[str, Any] = field(default_factory=dict)
    payload: bytes = b""

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


def _int(name: str, v: Any, lo: int = 0, hi: int = _MAX_INT) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise WireError(f"header field {name!r} must be an integer in {lo}..{hi}, got {v!r:.60}")
    return v


def _str(name: str, v: Any, choices: tuple[str, ...] | None = None, max_len: int = 128) -> str:
    if not isinstance(v, str) or not 1 <= len(v) <= max_len:
        raise WireError(f"header field {name!r} must be a string of 1..{max_len} characters, got {v!r:.60}")
    if choices is not None and v not in choices:
        raise WireError(f"header field {name!r} must be one of {', '.join(choices)}, got {v!r:.60}")
    return v


def _int_list(name: str, v: Any, max_len: int, lo: int = 0, hi: int = _MAX_INT) -> list[int]:
    if not isinstance(v, list) or not 1 <= len(v) <= max_len:
        raise WireError(f"header field {name!r} must be a list of 1..{max_len} integers, got {v!r:.60}")
    return [_int(f"{name}[{i}]", x, lo, hi) for i, x in enumerate(v)]


def _number(name: str, v: Any, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
        raise WireError(f"header field {name!r} must be a finite number in [{lo}, {hi}], got {v!r:.60}")
    return float(v)


def _map(name: str, v: Any, keys: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(v, dict) or set(v) - set(keys):
        raise WireError(f"header field {name!r} must be a map with keys {', '.join(keys)}, got {v!r:.80}")
    out = {}
    for k, check in keys.items():
        if k in v:
            out[k] = check(f"{name}.{k}", v[k])
    return out


def _bool(name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise WireError(f"header field {name!r} must be true or false, got {v!r:.60}")
    return v


_SAMPLING = {
    "do_sample": _bool,
    "temperature": lambda n, v: _number(n, v, 1e-6, 1e6),
    "top_k": lambda n, v: _int(n, v, 0, 10**7),
    "top_p": lambda n, v: _number(n, v, 1e-9, 1.0),
    "seed": lambda n, v: _int(n, v, 0, 2**63 - 1),
}
_POLICY = {
    "repair_nonfinite": _bool,
    "clip": lambda n, v: None if v is None else _number(n, v, 1e-30, 1e38),
}


def _check_fields(t: str, h: dict[str, Any]) -> dict[str, Any]:
    """Validate the type-specific header fields; returns them (typed)."""
    f: dict[str, Any] = {}
    if t == "open":
        f["L"] = _int("L", h.get("L"), 1, 100_000)
        f["cuts"] = _int_list("cuts", h.get("cuts"), 64, 0, f["L"])
        f["seg"] = _int("seg", h.get("seg"), 0, 64)
        f["sampling"] = _map("sampling", h.get("sampling", {}), _SAMPLING)
        f["policy"] = _map("policy", h.get("policy", {}), _POLICY)
        f["fp"] = _str("fp", h.get("fp"), max_len=128)
        prec = h.get("prec")
        if prec is not None:
            if not isinstance(prec, list) or len(prec) != len(f["cuts"]) + 1:
                raise WireError(f"header field 'prec' must list one precision per segment ({len(f['cuts']) + 1})")
            f["prec"] = [_str("prec", p, PRECISIONS) for p in prec]
    elif t == "step":
        f["ph"] = _str("ph", h.get("ph"), _PHASES)
        f["b"] = _int("b", h.get("b"), 0, 64)
        f["k"] = _str("k", h.get("k"), _KINDS)
        f["codec"] = _str("codec", h.get("codec"), _CODECS)
        f["dt"] = _str("dt", h.get("dt"), _DTYPES)
        f["shape"] = _int_list("shape", h.get("shape"), 8, 0, 2**31 - 1)
        f["q"] = _int("q", h.get("q", 0), 0, MAX_PAYLOAD_BYTES)
        if (f["k"] == "tokens") != (f["codec"] in ("u16", "u32")):
            raise WireError(f"header field 'codec' {f['codec']!r} does not match payload kind {f['k']!r}")
    elif t == "token":
        f["tok"] = _int("tok", h.get("tok"), 0, 2**32 - 1)
        f["sec"] = _number("sec", h.get("sec", 0.0), 0.0, 1e6)
    elif t == "error":
        f["msg"] = _str("msg", h.get("msg"), max_len=2000)
    return f


_ALLOWED = {
    "open": {"L", "cuts", "seg", "sampling", "policy", "fp", "prec"},
    "step": {"ph", "b", "k", "codec", "dt", "shape", "q"},
    "token": {"tok", "sec"},
    "ok": set(),
    "error": {"msg"},
    "close": set(),
}
_COMMON = {"v", "t", "rid", "seq", "n", "crc"}


def encode(msg: Message) -> bytes:
    """Serialise ``msg`` (fields are validated the same way `decode` validates them)."""
    if msg.type not in MESSAGE_TYPES:
        raise WireError(f"message type must be one of {', '.join(MESSAGE_TYPES)}, got {msg.type!r}")
    payload = bytes(msg.payload)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WireError(f"payload of {len(payload)} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit")
    header = {"v": WIRE_VERSION, "t": msg.type, "rid": msg.rid, "seq": msg.seq, "n": len(payload),
              "crc": zlib.crc32(payload), **msg.fields}
    _check_header(header)
    raw = msgpack.packb(header, use_bin_type=True)
    if len(raw) > MAX_HEADER_BYTES:
        raise WireError(f"header of {len(raw)} bytes exceeds the {MAX_HEADER_BYTES}-byte limit")
    return _LEN.pack(len(raw)) + raw + payload


def _check_header(h: Any) -> Message:
    if not isinstance(h, dict):
        raise WireError(f"header must be a msgpack map, got {type(h).__name__}")
    t = _str("t", h.get("t"), MESSAGE_TYPES)
    unknown = set(h) - _COMMON - _ALLOWED[t]
    if unknown:
        raise WireError(f"unknown header field(s) for a {t!r} frame: {', '.join(sorted(map(str, unknown)))[:200]}")
    v = h.get("v")
    if v != WIRE_VERSION:
        raise WireError(f"wire version {v!r:.20} is not supported (this side speaks version {WIRE_VERSION})")
    rid = _str("rid", h.get("rid"))
    seq = _int("seq", h.get("seq"))
    _int("n", h.get("n"), 0, MAX_PAYLOAD_BYTES)
    _int("crc", h.get("crc"), 0, 2**32 - 1)
    return Message(t, rid, seq, _check_fields(t, h))


def decode(data: bytes | bytearray | memoryview, *, max_payload: int = MAX_PAYLOAD_BYTES) -> Message:
    """Parse and validate one frame; any malformed input raises `WireError` (never anything else)."""
    data = bytes(data)
    if len(data) < _LEN.size + 1:
        raise WireError(f"frame of {len(data)} bytes is shorter than the minimum ({_LEN.size + 1})")
    (hlen,) = _LEN.unpack_from(data, 0)
    if not 1 <= hlen <= MAX_HEADER_BYTES:
        raise WireError(f"header length {hlen} outside 1..{MAX_HEADER_BYTES}")
    if _LEN.size + hlen > len(data):
        raise WireError(f"header length {hlen} runs past the end of a {len(data)}-byte frame")
    try:
        header = msgpack.unpackb(
            data[_LEN.size:_LEN.size + hlen], raw=False, strict_map_key=True, use_list=True,
            max_str_len=2048, max_bin_len=0, max_array_len=64, max_map_len=32,
            max_ext_len=0,
        )
    except WireError:
        raise
    except Exception as e:  # msgpack raises several types (ExtraData, FormatError, ValueError, ...)
        raise WireError(f"header is not valid msgpack: {type(e).__name__}: {str(e)[:120]}") from None
    msg = _check_header(header)
    payload = data[_LEN.size + hlen:]
    n = header["n"]
    if n > max_payload:
        raise WireError(f"payload of {n} bytes exceeds the {max_payload}-byte limit")
    if len(payload) != n:
        raise WireError(f"payload has {len(payload)} bytes, header field 'n' says {n}")
    if zlib.crc32(payload) != header["crc"]:
        raise WireError("payload CRC-32 does not match header field 'crc' (corrupted in transport)")
    if msg.type == "step":
        shape = msg.fields["shape"]
        if msg.fields["k"] == "tokens":
            width = 2 if msg.fields["codec"] == "u16" else 4
            if n != math.prod(shape) * width:
                raise WireError(f"token payload has {n} bytes, shape {shape} needs {math.prod(shape) * width}")
    return Message(msg.type, msg.rid, msg.seq, msg.fields, payload)
