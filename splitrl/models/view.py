"""A uniform view of a decoder-only causal LM, so the runtime can cut it anywhere.

`DecoderView` hides the differences between the LLaMA family (LLaMA, SmolLM2, Mistral, Qwen2:
pre-norm blocks, rotary position embeddings passed into every layer) and the GPT-2 family
(learned absolute position embeddings added at the input): embeddings, the list of decoder
layers, the head (final norm + lm_head), and an analytic cost model per layer (parameters,
FLOPs per token as a function of context, bytes crossing each cut).

With ``compile_decode`` on, one-token decode steps of low-bit segments run as ``torch.compile``
graphs (`splitrl.quant.compiled`); everything else is eager.

`embed`, `run_layers` and `head` take a ``precision``: the model's own modules at the precision it
was loaded at (``base_precision``), else the quantised copies `splitrl.quant.weights.PrecisionWeights`
builds from the fp32 weights once per layer.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.cache_utils import Cache
from transformers.masking_utils import create_causal_mask

from splitrl.link.codec import token_id_bytes
from splitrl.quant.compiled import CompiledDecode
from splitrl.quant.decoder import LeanLlamaLayer, lean_mask
from splitrl.quant.weights import PrecisionWeights, count_params
from splitrl.errors import UsageError

LLAMA_FAMILY = ("llama", "mistral", "qwen2")
GPT2_FAMILY = ("gpt2",)
SUPPORTED_MODEL_TYPES = LLAMA_FAMILY + GPT2_FAMILY


class UnsupportedModelError(ValueError):
    """The model's architecture is not one the runtime knows how to cut."""


@dataclass(frozen=True)
class LayerCost:
    """Analytic costs of one decoder layer.

    Attributes:
        params: parameter count.
        flops_per_token_base: FLOPs per token that do not depend on context (projections, MLP).
        flops_per_token_per_ctx: FLOPs per token per context position (QK^T and AV).
    """

    params: int
    flops_per_token_base: int
    flops_per_token_per_ctx: int

    def flops_per_token(self, context_length: int) -> int:
        """FLOPs (multiply-add = 2) to process one token attending over ``context_length`` positions."""
        return self.flops_per_token_base + self.flops_per_token_per_ctx * int(context_length)


class DecoderView:
    """Uniform access to a Hugging Face causal LM's pieces; holds references, never copies weights."""

    def __init__(self, model: nn.Module) -> None:
        config = model.config
        self.model_type: str = getattr(config, "model_type", "?")
        if self.model_type in LLAMA_FAMILY:
            self.family = "llama"
            self.layer_prefix = "model.layers."
            base = model.model
            self.embed_tokens: nn.Module = base.embed_tokens
            self.layers: list[nn.Module] = list(base.layers[: config.num_hidden_layers])
            self.final_norm: nn.Module = base.norm
            self.rotary_emb: nn.Module | None = base.rotary_emb
            self.position_embed: nn.Module | None = None
            self.embed_dropout: nn.Module | None = None
        elif self.model_type in GPT2_FAMILY:
            self.family = "gpt2"
            self.layer_prefix = "transformer.h."
            base = model.transformer
            self.embed_tokens = base.wte
            self.position_embed = base.wpe
            self.embed_dropout = base.drop
            self.layers = list(base.h)
            self.final_norm = base.ln_f
            self.rotary_emb = None
        else:
            raise UnsupportedModelError(
                f"model_type {self.model_type!r} is not supported; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        self.model = model
        self.config = config
        self.lm_head: nn.Module = model.lm_head
        self.num_layers: int = len(self.layers)
        self.hidden_size: int = int(config.hidden_size)
        self.vocab_size: int = int(config.vocab_size)
        self.max_positions: int = int(
            getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", 0) or 0
        )
        # The precision of the model's own modules (the loader quantises in place for a
        # one-precision process), and the quantised copies of an fp32 model (built on first use).
        self.base_precision: str = "fp32"
        self.precision_weights = PrecisionWeights(self)
        # torch.compile'd decode steps for low-bit (lean) segments; off by default because the first
        # step of each chunk length compiles (seconds) and needs a C++ compiler (`splitrl.quant.compiled`).
        self.compile_decode: bool = False
        self.compiled_decode = CompiledDecode()

    def _layers_at(self, start: int, stop: int, precision: str | None) -> list[nn.Module]:
        if precision is None or precision == self.base_precision:
            return self.layers[start:stop]
        return [self.precision_weights.layer(i, precision) for i in range(start, stop)]

    # ---- computation ---------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return torch.float32 if self.base_precision != "fp32" else self.lm_head.weight.dtype

    @property
    def device(self) -> torch.device:
        """Where the held weights live (a partial load keeps the rest on ``meta``)."""
        cached = self.__dict__.get("_device")
        if cached is None:  # asked per decode step: walk the modules once
            cached = next((t.device for t in (*self.model.parameters(), *self.model.buffers())
                           if t.device.type != "meta"), torch.device("cpu"))
            self.__dict__["_device"] = cached
        return cached

    @staticmethod
    def _held(module: nn.Module) -> bool:
        return all(p.device.type != "meta" for p in module.parameters()) and all(
            b.device.type != "meta" for b in module.buffers())

    def held_layers(self) -> list[int]:
        """Indices of the decoder layers whose weights this process materialised."""
        return [i for i, layer in enumerate(self.layers) if self._held(layer)]

    @property
    def holds_embed(self) -> bool:
        return self._held(self.embed_tokens) and (self.position_embed is None or self._held(self.position_embed))

    @property
    def holds_head(self) -> bool:
        return self._held(self.lm_head) and self._held(self.final_norm)

    def holds(self, start: int, stop: int, *, embed: bool = False, head: bool = False,
              precision: str | None = None) -> str | None:
        """None when layers ``[start, stop)`` (and the embeddings / head if asked) are materialised
        at ``precision`` or can be made from fp32, else a sentence saying what is missing."""
        if precision is not None and precision != self.base_precision and self.base_precision != "fp32":
            return (f"this process holds its weights at {self.base_precision}, not {precision} "
                    f"(start it with --precision {precision}, or at fp32 to serve several precisions)")
        missing = [i for i in range(start, stop) if not self._held(self.layers[i])]
        if missing:
            return f"layers {missing[0]}..{missing[-1]} are not loaded in this process"
        if embed and not self.holds_embed:
            return "the embeddings are not loaded in this process"
        if head and not self.holds_head:
            return "the head (final norm + LM head) is not loaded in this process"
        return None

    def held_range(self) -> tuple[int, int] | None:
        """``(start, stop)`` of the contiguous held layers (None when none or not contiguous)."""
        held = self.held_layers()
        if not held or held != list(range(held[0], held[-1] + 1)):
            return None
        return held[0], held[-1] + 1

    def embed(self, input_ids: torch.Tensor, position_ids: torch.Tensor, precision: str | None = None) -> torch.Tensor:
        """Token ids ``[B, T]`` -> hidden states ``[B, T, H]`` at cut 0."""
        if precision is None or precision == self.base_precision:
            hidden = self.embed_tokens(input_ids)
        else:
            hidden = self.precision_weights.embedding(precision)(input_ids)
        if self.position_embed is not None:
            hidden = hidden + self.position_embed(position_ids)
        if self.embed_dropout is not None:
            hidden = self.embed_dropout(hidden)
        return hidden

    def layer_context(
        self, hidden: torch.Tensor, position_ids: torch.Tensor, cache: Cache | None, first_layer: int
    ) -> dict:
        """Per-call keyword arguments shared by the layers of one segment (mask, rotary angles).

        The mask is sized against ``first_layer`` of ``cache`` because a segment's cache holds
        only its own layers.
        """
        mask = create_causal_mask(
            config=self.config,
            inputs_embeds=hidden,
            attention_mask=None,
            past_key_values=cache,
            position_ids=position_ids,
            layer_idx=first_layer if cache is not None else None,
        )
        ctx: dict = {"attention_mask": mask, "position_ids": position_ids}
        if self.rotary_emb is not None:
            ctx["position_embeddings"] = self.rotary_emb(hidden, position_ids=position_ids)
        return ctx

    def run_layers(
        self,
        hidden: torch.Tensor,
        start: int,
        stop: int,
        position_ids: torch.Tensor,
        cache: Cache | None = None,
        precision: str | None = None,
    ) -> torch.Tensor:
        """Run layers ``[start, stop)`` at ``precision`` on ``hidden``; with a cache, append to it (KV reuse)."""
        if start >= stop:
            return hidden
        layers = self._layers_at(start, stop, precision)
        if isinstance(layers[0], LeanLlamaLayer):
            cos, sin = self.rotary_emb(hidden, position_ids=position_ids)   # [B, T, hd] each
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
            if self.compile_decode:
                out = self.compiled_decode.run(layers, hidden, cos, sin, cache)
                if out is not None:
                    return out
            mask = lean_mask(hidden.shape[1], int(position_ids[0, 0]), hidden.device)
            for layer in layers:
                hidden = layer(hidden, cos, sin, cache, mask)
            return hidden
        ctx = self.layer_context(hidden, position_ids, cache, start)
        use_cache = cache is not None
        for layer in layers:
            hidden = layer(hidden, past_key_values=cache, use_cache=use_cache, **ctx)
            if isinstance(hidden, tuple):  # transformers <5 returned tuples
                hidden = hidden[0]
        return hidden

    @torch.inference_mode()
    def warm_up_compiled_decode(self, start: int, stop: int, precision: str | None = None) -> list[int]:
        """Compile now every decode graph a segment inside layers ``[start, stop)`` can need.

        A segment of ``n`` layers runs as power-of-two chunks (`splitrl.quant.compiled`), so one
        dummy decode step through the first ``c`` layers for each power of two ``c <= stop - start``
        compiles them all; a server calls this before it accepts requests, so no request waits on a
        compiler (a UE would otherwise time the step out and fall back). Returns the chunk lengths
        compiled (empty when the layers are not low-bit LLaMA-family ones or compilation is off).
        """
        from transformers.cache_utils import DynamicCache

        if not self.compile_decode or stop <= start or not isinstance(self._layers_at(start, start + 1, precision)[0],
                                                                       LeanLlamaLayer):
            return []
        done = []
        n = 1
        while n <= stop - start and self.compiled_decode.failed is None:
            cache = DynamicCache(config=self.config)
            past = torch.zeros(1, 4, self.hidden_size, device=self.device)              # [1, 4, H]
            self.run_layers(past, start, start + n, torch.arange(4, device=self.device).unsqueeze(0), cache, precision)
            before = self.compiled_decode.compiled_steps
            self.run_layers(past[:, :1], start, start + n, torch.tensor([[4]], device=self.device), cache, precision)
            if self.compiled_decode.compiled_steps > before:
                done.append(n)
            n *= 2
        return done

    def head(self, hidden: torch.Tensor, precision: str | None = None) -> torch.Tensor:
        """Final norm + lm_head: hidden ``[..., H]`` -> logits ``[..., V]``."""
        if precision is None or precision == self.base_precision:
            return self.lm_head(self.final_norm(hidden))
        return self.precision_weights.head(precision)(self.final_norm(hidden))

    # ---- analytic costs -----------------------------------------------------------------
    def layer_cost(self, index: int) -> LayerCost:
        """Parameters and FLOPs per token of decoder layer ``index``."""
        if not 0 <= index < self.num_layers:
            raise UsageError(f"layer index {index} out of range [0, {self.num_layers - 1}]")
        c = self.config
        h = self.hidden_size
        params = count_params(self.layers[index])
        if self.family == "llama":
            n_heads = c.num_attention_heads
            head_dim = getattr(c, "head_dim", None) or h // n_heads
            n_kv = getattr(c, "num_key_value_heads", None) or n_heads
            q, kv = n_heads * head_dim, n_kv * head_dim
            proj = h * q + 2 * h * kv + q * h
            mlp = 3 * h * c.intermediate_size
            attn_per_ctx = 2 * n_heads * head_dim  # QK^T + AV, per context position
        else:
            inner = getattr(c, "n_inner", None) or 4 * h
            proj = 4 * h * h
            mlp = 2 * h * inner
            attn_per_ctx = 2 * h
        return LayerCost(params=int(params), flops_per_token_base=2 * (proj + mlp), flops_per_token_per_ctx=2 * attn_per_ctx)

    def _params_total(self) -> int:
        tied = self.lm_head is self.embed_tokens or getattr(self.config, "tie_word_embeddings", False)
        parts = [self.embed_tokens, self.final_norm, *self.layers]
        parts += [self.position_embed] if self.position_embed is not None else []
        return sum(count_params(m) for m in parts) + (0 if tied else count_params(self.lm_head))

    def head_flops_per_token(self) -> int:
        return 2 * self.hidden_size * self.vocab_size

    def cut_bytes_per_token(self, cut: int, bytes_per_element: int = 4) -> int:
        """Bytes per token crossing cut ``cut`` (0..L): token id at 0, nothing at L, hidden otherwise."""
        if not 0 <= cut <= self.num_layers:
            raise UsageError(f"cut {cut} out of range [0, {self.num_layers}]")
        if cut == 0:
            return token_id_bytes(self.vocab_size)
        if cut == self.num_layers:
            return 0
        return self.hidden_size * bytes_per_element

    def summary(self, context_length: int = 128) -> dict:
        """Sizes and per-layer costs as a JSON-friendly dict (used by ``splitrl info``)."""
        return {
            "model_type": self.model_type,
            "family": self.family,
            "num_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "vocab_size": self.vocab_size,
            "params_total": int(sum(p.numel() for p in self.model.parameters())) if self.base_precision == "fp32"
            else self._params_total(),
            "embed_params": int(self.embed_tokens.weight.numel()),
            "precision": self.base_precision,
            "head_flops_per_token": self.head_flops_per_token(),
            "context_length": context_length,
            "layers": [
                {
                    "index": i,
                    "params": (lc := self.layer_cost(i)).params,
                    "flops_per_token": lc.flops_per_token(context_length),
                    "bytes_per_token_at_cut_after": self.cut_bytes_per_token(i + 1),
                }
                for i in range(self.num_layers)
            ],
            "bytes_per_token_at_cut": [self.cut_bytes_per_token(s) for s in range(self.num_layers + 1)],
        }
