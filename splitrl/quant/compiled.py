"""``torch.compile`` for the low-bit decode step: one new token through a segment's lean layers.

Why: at batch 1 a low-bit decode step is short on arithmetic, so the eager step spends a large share
of its time dispatching the ~40 small operators per layer around the packed matmul kernels
(rms norms, rotary, casts, residual adds, the cache concatenation). Inductor fuses those into a few
C++ loops and calls the packed kernels (``_weight_int4pack_mm_for_cpu``, ``_weight_int8pack_mm``)
and SDPA as they are, so the step is the kernels plus little else. ``benchmarks/decode_speed.py``
measures eager and compiled side by side (``splitrl-<p>-t<n>`` and ``splitrl-<p>-compiled-t<n>``).

What is compiled, and why that shape:
- Decode steps only (one new token, a cache that already holds the prompt). Prefill is a large
  matmul per layer and gains nothing worth a second set of graphs; it stays eager.
- A graph is a *chunk of consecutive layers* taking and returning plain tensors: the hidden
  state, the rotary angles and each layer's cached keys/values (grown by one position and written
  back into the segment's ``DynamicCache``). No transformers object is traced, so a transformers
  upgrade cannot silently break the graph, and dynamo guards on the chunk's *length* and its
  layers' shapes, not on which layers they are: the UE segment ``[0, s)`` and the edge segment
  ``[s, L)`` of every cut reuse the same graphs.
- Chunk lengths are powers of two (a segment of ``n`` layers runs as the binary decomposition of
  ``n``), so an online controller that moves the cut never triggers more than ``log2(L) + 1``
  compilations per precision; the past length is a dynamic dimension, so a growing context does
  not recompile either. Each (layer kind, chunk length) gets its own code object, because dynamo
  counts recompilations per code object and would otherwise fall back to eager after eight.
- Numerics: inductor reorders elementwise arithmetic (fused norms), so the compiled step equals
  the eager step to float rounding, not bit for bit; tests bound it (logits within 1e-5 relative,
  the same greedy ids) and check that a split equals the unsplit model with compilation on.
- If compilation fails (e.g. no C++ compiler for inductor) the step logs one warning and runs
  eager from then on; results are the eager ones.
"""
from __future__ import annotations

import logging
import threading
import types

import torch
from torch import nn
from transformers.cache_utils import DynamicLayer

from splitrl.errors import UsageError
from splitrl.quant.decoder import LeanLlamaLayer

__all__ = ["CompiledDecode", "chunk_lengths"]

log = logging.getLogger(__name__)

MIN_PAST = 2  # a past length of 1 would be specialised by dynamo (sizes 0/1 are): eager instead


def chunk_lengths(n: int, largest: int = 16) -> list[int]:
    """``n`` as a sum of powers of two, largest first, none above ``largest`` (30 -> [16, 8, 4, 2])."""
    if n < 0:
        raise UsageError(f"n must be >= 0, got {n}")
    out: list[int] = []
    while n >= largest:
        out.append(largest)
        n -= largest
    bit = largest >> 1
    while n:
        if n >= bit:
            out.append(bit)
            n -= bit
        bit >>= 1
    return out


def _decode_chunk(layers: list[LeanLlamaLayer], hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                  keys: list[torch.Tensor], values: list[torch.Tensor],
                  ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    new_k, new_v = [], []
    for layer, past_k, past_v in zip(layers, keys, values):
        hidden, k, v = layer.step(hidden, cos, sin, past_k, past_v)   # hidden [B, 1, H]; k, v [B, nkv, past+1, hd]
        new_k.append(k)
        new_v.append(v)
    return hidden, new_k, new_v


def _own_code(fn: types.FunctionType, name: str) -> types.FunctionType:
    """A copy of ``fn`` with a code object of its own (dynamo keeps graphs and recompile counts per code object)."""
    return types.FunctionType(fn.__code__.replace(co_name=name), fn.__globals__, name, fn.__defaults__, fn.__closure__)


def _module_guards_off(entries) -> list[bool]:
    """Keep every guard except those on the layers' attributes and buffers.

    Evaluating them costs more than the fused arithmetic saves (hundreds of microseconds per call
    for a 16-layer chunk), and `CompiledDecode` already dispatches on what they would check: one
    instance per model view, one graph per (layer kind, chunk length), and the layers of one kind
    in one model share every shape.
    """
    return [not e.orig_guard.source.is_unspecialized_nn_module() for e in entries]


def _cache_layers(cache, start: int, stop: int) -> list | None:
    """The cache's per-layer entries for ``[start, stop)`` when each is a filled plain ``DynamicLayer``."""
    entries = getattr(cache, "layers", None)
    if entries is None or len(entries) < stop:
        return None
    got = entries[start:stop]
    if not all(type(e) is DynamicLayer and e.is_initialized and e.keys.shape[-2] >= MIN_PAST for e in got):
        return None
    return got


class CompiledDecode:
    """The compiled decode graphs of one model view (see the module docstring).

    ``run(layers, hidden, cos, sin, cache)`` returns the new hidden state, or None when this step
    is not one it compiles (then the caller runs the eager layers).
    """

    def __init__(self, largest_chunk: int = 16) -> None:
        if largest_chunk < 1 or largest_chunk & (largest_chunk - 1):
            raise UsageError(f"largest_chunk must be a power of two >= 1, got {largest_chunk}")
        self.largest_chunk = largest_chunk
        self._fns: dict[tuple[str, int], object] = {}
        self._lock = threading.Lock()
        self.failed: str | None = None  # why compilation was given up (then every step is eager)
        self.compiled_steps = 0         # segment steps that ran compiled (benchmarks and tests read it)

    def __deepcopy__(self, memo) -> "CompiledDecode":  # graphs hold the original modules: a copy compiles its own
        return CompiledDecode(self.largest_chunk)

    def __getstate__(self) -> dict:
        return {"largest_chunk": self.largest_chunk}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["largest_chunk"])

    def _fn(self, kind: str, n: int):
        key = (kind, n)
        fn = self._fns.get(key)
        if fn is None:
            with self._lock:
                fn = self._fns.get(key)
                if fn is None:
                    log.info("compiling the decode step for chunks of %d %s layers (once per process)", n, kind)
                    own = _own_code(_decode_chunk, f"decode_chunk_{kind}_{n}")
                    fn = self._fns[key] = torch.compile(own, dynamic=True, fullgraph=True,
                                                        options={"guard_filter_fn": _module_guards_off, "size_asserts": False, "cpp_wrapper": True})
        return fn

    def run(self, layers: list[nn.Module], hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
            cache) -> torch.Tensor | None:
        if self.failed is not None or cache is None or hidden.shape[1] != 1 or not layers:
            return None
        if not all(isinstance(layer, LeanLlamaLayer) for layer in layers):
            return None
        start = layers[0].layer_idx
        entries = _cache_layers(cache, start, start + len(layers))
        if entries is None or [layer.layer_idx for layer in layers] != list(range(start, start + len(layers))):
            return None
        kind = type(layers[0].qkv).__name__
        i = 0
        try:
            for n in chunk_lengths(len(layers), self.largest_chunk):
                part = entries[i:i + n]
                hidden, new_k, new_v = self._fn(kind, n)(
                    layers[i:i + n], hidden, cos, sin, [e.keys for e in part], [e.values for e in part])
                for e, k, v in zip(part, new_k, new_v):
                    e.keys, e.values = k, v
                i += n
        except Exception as e:  # noqa: BLE001 - inductor's failures have many types; the eager path is exact
            if i:  # some layers already appended this token: the caller cannot redo the step
                raise
            self.failed = f"{type(e).__name__}: {e}"
            log.warning("torch.compile of the decode step failed, running eager from now on: %s", self.failed)
            return None
        self.compiled_steps += 1
        return hidden
