"""The GGUF's own 4-bit weights: Q4_1 blocks read as (codes, scale, min), mapped onto HF names.

A Q4_1 block is 32 weights in 20 bytes: ``d`` (fp16), ``m`` (fp16), then 16 bytes whose low
nibbles are weights 0..15 and high nibbles weights 16..31; ``w = d * q + m``. That is exactly
group-wise asymmetric int4 with group 32, so `Int4Linear` runs the published codes without
requantising (only ``d`` and ``m + 8 d`` are rounded to the kernel's bf16).

Transformers un-permutes the rows of the q/k projections when it loads a LLaMA GGUF (llama.cpp
stores them interleaved for its rotary layout). Rather than re-deriving that permutation, each HF
row is matched to the GGUF row whose dequantised values equal it *bit for bit*; a tensor whose
rows do not all match (another converter, another layout) is reported and quantised from the
dequantised weights instead, so a mismatch can never silently load wrong weights.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

__all__ = ["GGUFCodes", "Q4Codes", "match_rows"]

_BLOCK = 32
_HF_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_NAME = re.compile(r"^blk\.(\d+)\.(\w+)\.weight$")

Q4Codes = tuple[np.ndarray, np.ndarray, np.ndarray]  # codes [N, K] uint8, d [N, K/32] fp32, m [N, K/32] fp32


def _decode_q4_1(raw: np.ndarray, n: int, k: int) -> Q4Codes:
    blocks = np.ascontiguousarray(raw).reshape(n, k // _BLOCK, 20)
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    m = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
    qs = blocks[..., 4:]
    codes = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).reshape(n, k)
    return codes, d, m


def _q4_1_tensors(path: str | Path, layers: set[int] | None = None) -> dict:
    """HF name -> a function decoding that Q4_1 tensor (the file is memory-mapped; nothing read yet)."""
    from gguf import GGUFReader

    out: dict = {}
    for t in GGUFReader(str(path)).tensors:
        if t.tensor_type.name != "Q4_1":
            continue
        hit = _NAME.match(t.name)
        if hit is None or hit.group(2) not in _HF_NAMES or (layers is not None and int(hit.group(1)) not in layers):
            continue
        k, n = (int(x) for x in t.shape)  # GGUF lists the fastest-varying (input) dimension first
        out[f"model.layers.{hit.group(1)}.{_HF_NAMES[hit.group(2)]}.weight"] = (
            lambda data=t.data, n=n, k=k: _decode_q4_1(data, n, k))
    return out


class GGUFCodes:
    """A `CodesLookup` over one GGUF: ``(name, weight)`` -> the published codes in ``weight``'s row
    order, or None (not Q4_1 there, or rows that do not match exactly; logged once per tensor)."""

    def __init__(self, path: str | Path, layers: set[int] | None = None) -> None:
        self.path = Path(path)
        self._codes = _q4_1_tensors(self.path, layers)  # decoded one tensor at a time, when asked
        self.used = 0
        self.unmatched: list[str] = []

    def __call__(self, name: str, weight: torch.Tensor) -> Q4Codes | None:
        decode = self._codes.pop(name, None)  # each tensor is consumed once
        if decode is None:
            return None
        hit = match_rows(decode(), weight)
        if hit is None:
            self.unmatched.append(name)
            log.warning("%s: the GGUF's Q4_1 rows do not equal the loaded weights; quantising from fp32", name)
        else:
            self.used += 1
        return hit


def match_rows(q4: Q4Codes, weight: torch.Tensor) -> Q4Codes | None:
    """The GGUF codes reordered to ``weight``'s rows, or None unless every row matches exactly."""
    codes, d, m = q4
    n, k = codes.shape
    if tuple(weight.shape) != (n, k):
        return None
    deq = (np.repeat(d, _BLOCK, axis=1) * codes.astype(np.float32) + np.repeat(m, _BLOCK, axis=1)).astype(np.float32)
    index = {deq[i].tobytes(): i for i in range(n)}
    w = weight.detach().float().cpu().numpy()
    order = [index.get(w[i].tobytes()) for i in range(n)]
    if any(o is None for o in order):
        return None
    order_arr = np.asarray(order)
    return codes[order_arr], d[order_arr], m[order_arr]
