"""Low-bit linears and embeddings: the modules a segment's weights become at ``bf16``/``int8``/``int4``.

Each module keeps the call shape of the ``nn.Linear`` (or GPT-2 ``Conv1D``) it replaces: fp32 in
``[..., K]``, fp32 out ``[..., N]``. Inside, activations are cast to bf16 because torch's packed
weight-only kernels (``_weight_int8pack_mm``, ``_weight_int4pack_mm_for_cpu``) take their fast
AVX-512 path only for bf16 inputs (see `splitrl.quant.precision`). Biases stay fp32 and are added
after the cast back.

Quantisation (when the weights are not already low-bit, see `splitrl.quant.gguf`):
- int8: symmetric per output channel, ``w ~= scale[n] * q[n, k]``, ``q`` in [-127, 127];
- int4: asymmetric per group of 32 inputs, ``w ~= d * q + m`` with ``q`` in [0, 15] (the Q4_1
  form); the kernel's (scale, zero) pair is ``(d, m + 8 d)`` because it computes ``(q - 8) * scale
  + zero``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from splitrl.quant.precision import INT4_GROUP_SIZE

__all__ = ["BF16Linear", "Int4Linear", "Int8Linear", "QuantEmbedding", "as_nk", "int4_codes", "int8_codes"]

_ACT = torch.bfloat16
_INNER_K_TILES = 2  # the CPU packer's tile width; K must be a multiple of 16 * this (padding does it)


def as_nk(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight ``[N, K]``, bias ``[N]`` or None) of an ``nn.Linear`` or a GPT-2 ``Conv1D`` (``[K, N]``)."""
    w = module.weight.detach()
    if type(module).__name__ == "Conv1D":
        w = w.t()
    b = getattr(module, "bias", None)
    return w.float().contiguous(), (None if b is None else b.detach().float().clone())


_ROWS = 4096  # rows quantised at a time: a 49k-row vocabulary never needs full-size fp32 temporaries


def _by_rows(fn, w: torch.Tensor) -> tuple[torch.Tensor, ...]:
    parts = [fn(w[i:i + _ROWS]) for i in range(0, w.shape[0], _ROWS)]
    return tuple(torch.cat(x) for x in zip(*parts))


def _int8_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12).to(_ACT)
    return torch.round(w / scale.float()[:, None]).clamp(-127, 127).to(torch.int8), scale


def int8_codes(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: (codes ``[N, K]`` int8, scales ``[N]`` bf16) with ``w ~= codes * scales``."""
    return _by_rows(_int8_rows, w)


def _int4_rows(w: torch.Tensor, group: int = INT4_GROUP_SIZE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n, k = w.shape
    g = w.reshape(n, k // group, group)
    lo, hi = g.amin(dim=2), g.amax(dim=2)
    d = ((hi - lo) / 15.0).clamp(min=1e-12)
    q = torch.round((g - lo[..., None]) / d[..., None]).clamp(0, 15)
    return q.reshape(n, k).to(torch.uint8), d, lo


def int4_codes(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric group-wise 4-bit (Q4_1 form): codes ``[N, K]`` in 0..15, ``d``, ``m`` ``[N, K/32]``."""
    return _by_rows(_int4_rows, w)


class BF16Linear(nn.Module):
    """bf16 weights, fp32 in and out."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", weight.to(_ACT).contiguous())
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x.to(_ACT), self.weight).float()
        return y if self.bias is None else y + self.bias


class Int8Linear(nn.Module):
    """int8 weights with one bf16 scale per output channel (``torch._weight_int8pack_mm``)."""

    def __init__(self, codes: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = codes.shape
        self.register_buffer("codes", codes.contiguous())   # [N, K] int8
        self.register_buffer("scales", scales.to(_ACT).contiguous())  # [N]
        self.register_buffer("bias", bias)

    @classmethod
    def from_module(cls, module: nn.Module) -> "Int8Linear":
        w, b = as_nk(module)
        return cls(*int8_codes(w), b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        y = torch._weight_int8pack_mm(x.reshape(-1, self.in_features).to(_ACT), self.codes, self.scales)
        y = y.float().reshape(*lead, self.out_features)
        return y if self.bias is None else y + self.bias


class Int4Linear(nn.Module):
    """4-bit weights packed for ``torch._weight_int4pack_mm_for_cpu``, bf16 scale and zero per 32 inputs.

    The packer needs ``N`` a multiple of 16 and the kernel ``K`` a multiple of 32: other shapes
    (GPT-2's 50,257-row head, the tiny test models) are padded with zero weights (and the input
    with zeros), and the padded outputs dropped, so every shape runs the same kernel.
    """

    def __init__(self, codes: torch.Tensor, d: torch.Tensor, m: torch.Tensor, bias: torch.Tensor | None,
                 in_features: int | None = None) -> None:
        super().__init__()
        n, k_padded = codes.shape
        self.out_features = n
        self.in_features = int(in_features if in_features is not None else k_padded)
        self.pad = k_padded - self.in_features
        rows = -n % 16
        if rows:
            codes = F.pad(codes, (0, 0, 0, rows))
            d, m = F.pad(d, (0, 0, 0, rows)), F.pad(m, (0, 0, 0, rows))
        packed = torch._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32).contiguous(), _INNER_K_TILES)
        self.register_buffer("packed", packed)
        # [K/group, N, 2]: the kernel's layout; zero = m + 8 d (it computes (q - 8) * scale + zero).
        sz = torch.stack([d.float(), m.float() + 8.0 * d.float()], dim=-1).transpose(0, 1)
        self.register_buffer("scales_zeros", sz.to(_ACT).contiguous())
        self.register_buffer("bias", bias)

    @classmethod
    def from_module(cls, module: nn.Module) -> "Int4Linear":
        w, b = as_nk(module)
        k = w.shape[1]
        pad = -k % INT4_GROUP_SIZE
        if pad:
            w = F.pad(w, (0, pad))
        return cls(*int4_codes(w), b, in_features=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).to(_ACT)
        if self.pad:
            x2 = F.pad(x2, (0, self.pad))
        y = torch._weight_int4pack_mm_for_cpu(x2, self.packed, INT4_GROUP_SIZE, self.scales_zeros)
        if y.shape[-1] != self.out_features:
            y = y[:, : self.out_features]
        y = y.float().reshape(*lead, self.out_features)
        return y if self.bias is None else y + self.bias


class QuantEmbedding(nn.Module):
    """A token embedding held as int8 rows (or bf16) that also serves as the tied LM head.

    Looking up a row dequantises it (``codes[ids] * scale[ids]``); the head multiplies with the
    same codes through `Int8Linear`'s kernel, so a tied model stores its vocabulary matrix once.
    """

    def __init__(self, weight: torch.Tensor, precision: str) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = weight.shape
        self.precision = precision
        if precision == "bf16":
            self.head = BF16Linear(weight, None)
        else:
            self.head = Int8Linear(*int8_codes(weight.float()), None)

    @property
    def weight(self) -> torch.Tensor:  # shape queries only (DecoderView.summary counts params)
        return torch.empty(self.num_embeddings, self.embedding_dim, device="meta")

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.precision == "bf16":
            return self.head.weight[ids].float()
        return self.head.codes[ids].float() * self.head.scales[ids].float()[..., None]
