"""A model's layers at another precision: quantised copies built from the fp32 weights, once.

`quantize_layer` returns a decoder layer whose linears are `Int8Linear`/`Int4Linear`/`BF16Linear`
(norms, rotary buffers and biases stay fp32), either as a copy (the fp32 layer is kept: one process
serving several precisions) or in place (a process that runs one precision frees its fp32 weights).
`PrecisionWeights` caches those copies per (precision, layer) for a `DecoderView`, so switching a
segment's precision between requests costs one quantisation per layer, ever, and never a reload.

The embeddings and the LM head follow the segment's precision, except that the embedding *lookup*
stays int8 at int4 (see `vocab_modules`).
"""
from __future__ import annotations

import copy
import logging
import threading
from typing import Callable

import torch
from torch import nn

from splitrl.quant.decoder import LeanLlamaLayer
from splitrl.quant.gguf import GGUFCodes
from splitrl.quant.linear import BF16Linear, Int4Linear, Int8Linear, QuantEmbedding, as_nk, int4_codes, int8_codes
from splitrl.quant.precision import INT4_GROUP_SIZE
from splitrl.quant.precision import check_precision
from splitrl.errors import UsageError

log = logging.getLogger(__name__)

__all__ = [
    "PrecisionWeights", "QUANT_MODULES", "count_params", "fused_linear", "lean_llama_layer", "precision_layer",
    "quantize_in_place", "quantize_layer", "quantize_layer_at", "quantize_linear", "vocab_modules",
]

QUANT_MODULES = (BF16Linear, Int8Linear, Int4Linear, QuantEmbedding)
CodesLookup = Callable[[str, torch.Tensor], tuple | None]


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def quantize_linear(module: nn.Module, precision: str, q4_codes: tuple | None = None) -> nn.Module:
    """The low-bit replacement of one linear (``q4_codes``: the GGUF's own int4 codes, d, m)."""
    if precision == "bf16":
        return BF16Linear(*as_nk(module))
    if precision == "int8":
        return Int8Linear.from_module(module)
    if precision == "int4":
        if q4_codes is not None:
            codes, d, m = (torch.from_numpy(a) for a in q4_codes)
            return Int4Linear(codes, d, m, as_nk(module)[1])
        return Int4Linear.from_module(module)
    raise UsageError(f"no quantised linear for precision {precision!r}")


def quantize_layer(layer: nn.Module, precision: str, *, prefix: str = "", codes: CodesLookup | None = None,
                   in_place: bool = False) -> nn.Module:
    """``layer`` with every linear at ``precision``; a copy unless ``in_place``.

    ``codes(name, weight)`` may supply ready int4 codes for the parameter ``prefix + name``.
    """
    check_precision(precision)
    if precision == "fp32":
        return layer
    linears = {name: m for name, m in layer.named_modules() if name and _is_linear(m)}
    if in_place:
        target = layer
    else:
        # Copy the structure without copying the linears' fp32 weights: they are replaced anyway.
        memo = {id(m.weight): nn.Parameter(torch.empty(0), requires_grad=False) for m in linears.values()}
        target = copy.deepcopy(layer, memo)
    for name, original in linears.items():
        q4 = codes(f"{prefix}{name}.weight", original.weight) if (codes is not None and precision == "int4") else None
        parent_name, _, attr = name.rpartition(".")
        parent = target.get_submodule(parent_name) if parent_name else target
        setattr(parent, attr, quantize_linear(original, precision, q4))
    return target


def fused_linear(parts: list[nn.Module], precision: str, codes: list[tuple | None]) -> nn.Module:
    """One low-bit linear computing ``parts`` side by side (their output rows concatenated).

    Per-row int8 scales and per-row int4 groups do not mix rows, so quantising each part and
    concatenating equals quantising the concatenation: fusing changes no weight.
    """
    ws, bs = zip(*(as_nk(m) for m in parts))
    bias = None
    if any(b is not None for b in bs):
        bias = torch.cat([b if b is not None else torch.zeros(w.shape[0]) for w, b in zip(ws, bs)])
    if precision == "bf16":
        return BF16Linear(torch.cat(ws), bias)
    if precision == "int8":
        q, sc = zip(*(int8_codes(w) for w in ws))
        return Int8Linear(torch.cat(q), torch.cat(sc), bias)
    k = ws[0].shape[1]
    pad = -k % INT4_GROUP_SIZE
    pieces = []
    for w, c in zip(ws, codes):
        if c is not None and not pad:
            pieces.append(tuple(torch.from_numpy(a) for a in c))
        else:
            pieces.append(int4_codes(torch.nn.functional.pad(w, (0, pad)) if pad else w))
    q, d, m = (torch.cat(x) for x in zip(*pieces))
    return Int4Linear(q, d, m, bias, in_features=k)


def lean_llama_layer(layer: nn.Module, precision: str, *, prefix: str = "", codes: CodesLookup | None = None,
                     ) -> LeanLlamaLayer:
    """A Hugging Face LLaMA-family decoder layer as a `LeanLlamaLayer` at ``precision``."""
    attn, mlp = layer.self_attn, layer.mlp
    cfg = attn.config

    def c(name: str, module: nn.Module) -> tuple | None:
        return codes(f"{prefix}{name}.weight", module.weight) if (codes is not None and precision == "int4") else None

    qkv_parts = [attn.q_proj, attn.k_proj, attn.v_proj]
    qkv = fused_linear(qkv_parts, precision, [c(f"self_attn.{n}", m) for n, m in
                                              zip(("q_proj", "k_proj", "v_proj"), qkv_parts)])
    gu_parts = [mlp.gate_proj, mlp.up_proj]
    gate_up = fused_linear(gu_parts, precision, [c(f"mlp.{n}", m) for n, m in zip(("gate_proj", "up_proj"), gu_parts)])
    o = fused_linear([attn.o_proj], precision, [c("self_attn.o_proj", attn.o_proj)])
    down = fused_linear([mlp.down_proj], precision, [c("mlp.down_proj", mlp.down_proj)])
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
    return LeanLlamaLayer(
        layer_idx=int(attn.layer_idx), qkv=qkv, o=o, gate_up=gate_up, down=down,
        input_norm=layer.input_layernorm.weight, post_norm=layer.post_attention_layernorm.weight,
        eps=float(layer.input_layernorm.variance_epsilon), n_heads=int(cfg.num_attention_heads),
        n_kv=int(cfg.num_key_value_heads), head_dim=head_dim, intermediate=int(mlp.gate_proj.out_features),
        scaling=float(attn.scaling),
    )


def count_params(module: nn.Module) -> int:
    """Parameters of ``module`` counting each quantised linear as its original ``N * K (+ N)``."""
    if isinstance(module, QuantEmbedding):
        return module.num_embeddings * module.embedding_dim
    if isinstance(module, LeanLlamaLayer):
        h, i = module.hidden, module.inter
        return 2 * h + h * (module.nh + 2 * module.nkv) * module.hd + module.nh * module.hd * h + 3 * h * i
    if isinstance(module, (BF16Linear, Int8Linear, Int4Linear)):
        return module.out_features * module.in_features + (0 if module.bias is None else module.out_features)
    own = sum(p.numel() for p in module.parameters(recurse=False))
    return own + sum(count_params(child) for child in module.children())


class PrecisionWeights:
    """Per-precision copies of a view's layers, embeddings and head, built on first use (thread-safe)."""

    def __init__(self, view, codes: CodesLookup | None = None) -> None:
        self.view = view
        self.codes = codes
        self.gguf_path = None  # set by the loader: int4 copies then use the GGUF's own codes
        self._layers: dict[tuple[str, int], nn.Module] = {}
        self._vocab_at: dict[str, tuple[nn.Module | None, nn.Module | None]] = {}  # (embedding, head)
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        # A copy (gymnasium and SB3 deep-copy envs, which hold the view) starts with empty caches:
        # the lock cannot be copied, and the quantised copies are rebuilt on first use.
        return {**self.__dict__, "codes": None if self.gguf_path is not None else self.codes,
                "_layers": {}, "_vocab_at": {}, "_lock": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _check_source(self, precision: str) -> None:
        base = self.view.base_precision
        if base != "fp32":
            raise UsageError(
                f"this process holds its weights at {base}; precision {precision!r} needs them at fp32 "
                f"(load the model at fp32 to run several precisions)")

    def layer(self, index: int, precision: str) -> nn.Module:
        key = (precision, index)
        hit = self._layers.get(key)
        if hit is not None:
            return hit
        self._check_source(precision)
        with self._lock:
            if precision == "int4" and self.codes is None and self.gguf_path is not None:
                self.codes = GGUFCodes(self.gguf_path)
            if key not in self._layers:
                self._layers[key] = precision_layer(self.view.layers[index], self.view.family, precision,
                                                    prefix=f"{self.view.layer_prefix}{index}.", codes=self.codes)
            return self._layers[key]

    def embedding(self, precision: str) -> nn.Module:
        return self._vocab(precision)[0]

    def head(self, precision: str) -> nn.Module:
        return self._vocab(precision)[1]

    def _vocab(self, precision: str) -> tuple[nn.Module | None, nn.Module | None]:
        hit = self._vocab_at.get(precision)
        if hit is None:
            self._check_source(precision)
            with self._lock:
                if precision not in self._vocab_at:
                    v = self.view
                    self._vocab_at[precision] = vocab_modules(
                        v.embed_tokens, v.lm_head, precision, embed=v.holds_embed, head=v.holds_head)
            hit = self._vocab_at[precision]
        return hit


def vocab_modules(embed_tokens: nn.Module, lm_head: nn.Module, precision: str, *, embed: bool, head: bool,
                  ) -> tuple[nn.Module | None, nn.Module | None]:
    """(embedding, head) at ``precision``; None for a part not asked for (not held by this process).

    The embedding *lookup* is int8 at int8 and at int4 (the published GGUF keeps ``token_embd`` at
    8 bits, and a row lookup costs nothing at any width); the head at int4 is `Int4Linear`,
    because torch's int4 kernel is the faster of its two at batch 1 (`decode_profile.json`: an
    int8 decode step takes 1.5x an int4 one). A tied bf16/int8 model stores its vocabulary matrix once.
    """
    embed_q = QuantEmbedding(embed_tokens.weight.detach(), "int8" if precision == "int4" else precision) if embed else None
    head_q = None
    if head:
        tied = embed_q is not None and lm_head.weight is embed_tokens.weight
        head_q = embed_q.head if (tied and precision != "int4") else quantize_linear(lm_head, precision)
    return embed_q, head_q


def precision_layer(layer: nn.Module, family: str, precision: str, *, prefix: str = "",
                    codes: CodesLookup | None = None, in_place: bool = False) -> nn.Module:
    """A decoder layer at ``precision``: a `LeanLlamaLayer` for the LLaMA family (always a new
    module), else the Hugging Face layer with quantised linears (a copy unless ``in_place``)."""
    if family == "llama" and precision != "fp32":
        return lean_llama_layer(layer, precision, prefix=prefix, codes=codes)
    return quantize_layer(layer, precision, prefix=prefix, codes=codes, in_place=in_place)


def quantize_layer_at(model: nn.Module, index: int, precision: str, codes: CodesLookup | None = None) -> nn.Module:
    """The decoder layer ``index`` of a loaded HF model at ``precision``, replacing its fp32 weights."""
    family, layer_list, prefix = _layer_list(model)
    return precision_layer(layer_list[index], family, precision, prefix=f"{prefix}{index}.", codes=codes,
                           in_place=True)


def _layer_list(model) -> tuple[str, nn.ModuleList, str]:
    if hasattr(model, "model") and hasattr(model.model, "layers"):
        return "llama", model.model.layers, "model.layers."
    return "gpt2", model.transformer.h, "transformer.h."


def _held(module: nn.Module) -> bool:
    return all(t.device.type != "meta" for t in (*module.parameters(), *module.buffers()))


def quantize_in_place(model: nn.Module, precision: str, codes: CodesLookup | None = None, *,
                      layers: bool = True, vocab: bool = True) -> None:
    """Turn a loaded HF model's held layers (and embeddings/head) into ``precision`` modules in place.

    Its fp32 weights are dropped as each part is converted, so a one-precision process ends with
    only low-bit weights in memory. Afterwards the model runs through `DecoderView` (the lean
    layers do not take the Hugging Face layer call).
    """
    check_precision(precision)
    if precision == "fp32":
        return
    family, layer_list, _ = _layer_list(model)
    if layers:
        for i in range(len(layer_list)):
            if _held(layer_list[i]) and not isinstance(layer_list[i], LeanLlamaLayer):
                layer_list[i] = quantize_layer_at(model, i, precision, codes)
    if vocab:
        base = model.model if family == "llama" else model.transformer
        embed_name = "embed_tokens" if family == "llama" else "wte"
        embed_tokens = getattr(base, embed_name)
        embed, head = vocab_modules(
            embed_tokens, model.lm_head, precision, embed=_held(embed_tokens),
            head=_held(model.lm_head) and _held(base.norm if family == "llama" else base.ln_f))
        if embed is not None:
            setattr(base, embed_name, embed)
        if head is not None:
            model.lm_head = head
        elif getattr(model.lm_head, "weight", None) is embed_tokens.weight:
            # A tied head this process does not run must not keep the fp32 embedding alive.
            model.lm_head.weight = nn.Parameter(torch.empty_like(embed_tokens.weight, device="meta"), requires_grad=False)
