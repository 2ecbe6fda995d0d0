"""Weight precisions a segment can run at, and what each costs in bytes.

A precision names how a segment's *weights* are stored and multiplied; activations that cross a
cut are fp32 whatever the precision (the link codecs choose their own wire format).

| name | storage per linear weight ``[N, K]`` | kernel (CPU) |
|---|---|---|
| ``fp32`` | 4 B per weight | ``F.linear`` (MKL) |
| ``bf16`` | 2 B per weight | ``F.linear`` on bf16 |
| ``int8`` | 1 B per weight + one bf16 scale per output channel | ``torch._weight_int8pack_mm`` |
| ``int4`` | 0.5 B per weight + bf16 scale and zero per group of 32 | ``torch._weight_int4pack_mm_for_cpu`` |

Why these kernels (their speed is measured in `benchmarks/decode_speed.py` and
`benchmarks/decode_profile.py`): they are torch's own packed weight-only kernels, and on this
AVX-512 CPU they are fast only with **bf16 activations** (with fp32 activations int4 falls back to
a far slower scalar path), so the low-bit linears cast their input to bf16 and their output back
to fp32. Group size 32 is Q4_1's block size, so the GGUF's own 4-bit codes load without requantising.
"""
from __future__ import annotations

from splitrl.errors import UsageError

__all__ = ["PRECISIONS", "LOW_BIT", "INT4_GROUP_SIZE", "check_precision", "linear_weight_bytes"]

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8", "int4")
LOW_BIT: tuple[str, ...] = ("int8", "int4")
INT4_GROUP_SIZE = 32
_SCALE_BYTES = 2  # bf16 scales and zeros


def check_precision(value: object, field: str = "precision") -> str:
    """The precision name, or a `UsageError` naming ``field`` and the allowed names."""
    if not isinstance(value, str) or value not in PRECISIONS:
        raise UsageError(f"{field} = {value!r}: must be one of {', '.join(PRECISIONS)}")
    return value


def linear_weight_bytes(out_features: int, in_features: int, precision: str) -> int:
    """Bytes one ``[out_features, in_features]`` weight takes at ``precision`` (scales included)."""
    check_precision(precision)
    n, k = int(out_features), int(in_features)
    if precision == "fp32":
        return 4 * n * k
    if precision == "bf16":
        return 2 * n * k
    if precision == "int8":
        return n * k + _SCALE_BYTES * n
    # The packed kernel needs N a multiple of 16 and K of the group size: `Int4Linear` pads with zeros.
    n, k = -(-n // 16) * 16, -(-k // INT4_GROUP_SIZE) * INT4_GROUP_SIZE
    return n * k // 2 + 2 * _SCALE_BYTES * n * (k // INT4_GROUP_SIZE)
