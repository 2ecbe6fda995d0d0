"""A lean LLaMA-family decoder layer for the low-bit precisions: fewer kernel calls, no per-layer masks.

Once the matmuls are low-bit and fast, the per-operator Python dispatch of the Hugging Face layer
(rotary, cache and mask bookkeeping, seven projections) becomes a large share of a batch-1 decode
step; `benchmarks/decode_profile.py` reports what is left of it with this layer. `LeanLlamaLayer`
computes the same function with
- q/k/v fused into one projection and gate/up into another (rows concatenated before packing, so
  4 low-bit matmuls per layer instead of 7),
- the rotary angles and the attention mask computed once per segment call, not per layer,
- the KV cache kept in the segment's `transformers` `DynamicCache` (same object, same indexing by
  global layer, so the runtime's cache handling does not change).
It is used for bf16/int8/int4 segments of LLaMA-family models; fp32 keeps the Hugging Face layers
so fp32 results stay bit-identical to plain transformers. A test checks the lean layer against the
Hugging Face layer with the same quantised linears.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LeanLlamaLayer", "lean_mask", "rotate"]


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding in the Hugging Face (half-split) convention; cos/sin ``[1, 1, T, D]``."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def lean_mask(t: int, past: int, device: torch.device) -> torch.Tensor | None:
    """Boolean ``[T, past + T]`` causal mask (True = attend), or None for one new token."""
    if t == 1:
        return None
    q = torch.arange(past, past + t, device=device)[:, None]
    k = torch.arange(past + t, device=device)[None, :]
    return k <= q


class LeanLlamaLayer(nn.Module):
    """One LLaMA decoder layer over fused projections (see the module docstring).

    ``qkv``: linear ``H -> (nh + 2 nkv) * hd``; ``o``: ``nh * hd -> H``; ``gate_up``: ``H -> 2 I``;
    ``down``: ``I -> H``. Norm weights stay fp32.
    """

    def __init__(self, *, layer_idx: int, qkv: nn.Module, o: nn.Module, gate_up: nn.Module, down: nn.Module,
                 input_norm: torch.Tensor, post_norm: torch.Tensor, eps: float, n_heads: int, n_kv: int,
                 head_dim: int, intermediate: int, scaling: float) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.qkv, self.o, self.gate_up, self.down = qkv, o, gate_up, down
        self.register_buffer("input_norm", input_norm.detach().float().clone())
        self.register_buffer("post_norm", post_norm.detach().float().clone())
        self.eps, self.nh, self.nkv, self.hd, self.inter, self.scaling = eps, n_heads, n_kv, head_dim, intermediate, scaling
        self.hidden = int(input_norm.shape[0])

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache, mask: torch.Tensor | None,
                ) -> torch.Tensor:
        q, k, v = self._project(x, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)            # [B, nkv, past + T, hd]
        return self._attend(x, q, k, v, mask)

    def step(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, past_k: torch.Tensor,
             past_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`forward` for new tokens after ``past_k``/``past_v`` ``[B, nkv, past, hd]``, as tensors only.

        Returns (hidden ``[B, T, H]``, keys, values ``[B, nkv, past + T, hd]``): no cache object, so
        `splitrl.quant.compiled` can trace it. Attention is causal only for one new token (no mask).
        """
        q, k, v = self._project(x, cos, sin)
        k, v = torch.cat([past_k, k], dim=-2), torch.cat([past_v, v], dim=-2)
        return self._attend(x, q, k, v, None), k, v

    def _project(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, _ = x.shape                                        # x: [B, T, H]
        h = F.rms_norm(x, (self.hidden,), self.input_norm, self.eps)
        qkv = self.qkv(h)                                        # [B, T, (nh + 2 nkv) hd]
        q, k, v = qkv.split([self.nh * self.hd, self.nkv * self.hd, self.nkv * self.hd], dim=-1)
        q = rotate(q.view(b, t, self.nh, self.hd).transpose(1, 2), cos, sin)    # [B, nh, T, hd]
        k = rotate(k.view(b, t, self.nkv, self.hd).transpose(1, 2), cos, sin)   # [B, nkv, T, hd]
        v = v.view(b, t, self.nkv, self.hd).transpose(1, 2)
        return q, k, v

    def _attend(self, x: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        b, t, _ = x.shape
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling, enable_gqa=True)
        x = x + self.o(a.transpose(1, 2).reshape(b, t, self.nh * self.hd))
        h = F.rms_norm(x, (self.hidden,), self.post_norm, self.eps)
        gate, up = self.gate_up(h).split([self.inter, self.inter], dim=-1)
        return x + self.down(F.silu(gate) * up)
