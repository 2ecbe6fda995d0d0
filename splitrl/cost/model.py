"""Analytic latency / energy / memory / traffic of a UE-edge split, for one channel state.

Owns `CostModel` (and the `CostEstimate` / `CostTable` it returns) and `emulate_report`, which
attaches the model's figures to a real `RequestReport`. It is built once per (model, UE, edge,
link, codec) and then queried per (split, SNR, prompt length, output length) in O(1) numpy work:
per-layer costs are reduced to cumulative per-split arrays at construction, and no torch code runs
in `estimate` / `estimate_all`.

What one request costs at split ``s`` (UE: embeddings + layers ``[0, s)``; edge: layers ``[s, L)``
+ head; ``s = L`` keeps everything, head included, on the UE), mirroring `SplitRuntime.generate`:

* Prefill: the UE runs the ``T`` prompt tokens in one pass, token ``i`` attending to ``i``
  positions (attention FLOPs ``per_ctx * T (T + 1) / 2``); the activations ``[1, T, H]`` cross the
  uplink (the codec's exact frame bytes, header included; token ids at ``s = 0``: 2 or 4 bytes each,
  no frame); the edge runs its layers and the head on the last position; the sampled token id
  returns on the downlink. TTFT is the sum of these four terms (sequential, no pipelining) when
  ``prefill_chunks`` is 1. With ``prefill_chunks = C > 1`` the UE may send the prompt in ``c``
  chunks (``c = 1..C``, the TTFT-minimising count per split): the UE computes chunk ``k+1`` while
  chunk ``k`` is on the air and the edge computes chunk ``k-1``, so the prefill takes
  ``fill + (c - 1) * max(UE chunk time, chunk transfer time, edge chunk time)`` — fill being one
  chunk through all three stages — and is minimised where the stages balance. Each chunk is one
  uplink transfer (its own frame header, grant overhead and HARQ), the UE/edge chunk times are the
  roofline of a ``ceil(T / c)``-token pass attending to the whole prompt before it (the last,
  slowest chunk; head included on the edge), so the steady-state figure is conservative.
  Pipelining applies to ``0 < s < L`` only (``s = 0`` sends token ids in one transfer).
* Edge load: ``edge_slowdown`` (a factor, or one per split) multiplies the edge's compute time
  of every pass — the M/D/1 sojourn factor of a shared edge, see `splitrl.cost.edge_load`.
* Decode step ``k = 1 .. N-1`` processes one token attending to ``T + k`` positions, with the same
  four terms; TPOT is their mean over the ``N - 1`` steps (for ``N = 1`` or ``None``: the next step,
  at context ``T + 1``, so an RL environment always gets a meaningful per-token figure).
* Compute time of a pass on a device is a roofline plus dispatch overhead:
  ``max(FLOPs / flops_per_s, bytes / memory_bandwidth) + n_layers * layer_overhead_s``; bytes are
  the weights streamed once per pass (the whole lm_head when the head runs), the embedding rows
  read, and the KV cache read/written. Batch-1 decode is bandwidth-bound on every shipped UE.
* Transfers use the closed-form expected latency of `splitrl.channel.LatencyModel` (serialisation
  at the rate of the SNR, propagation, protocol overhead, HARQ retransmissions at the BLER),
  evaluated for all splits at once. Nothing is sent at ``s = L``. The downlink runs at
  ``snr_db + link.downlink_snr_offset_db``. On CQI-table links the modulation and coding scheme
  of each payload is the latency-minimising admissible CQI by default (see ``link_adaptation``).
* UE energy = idle power x request duration (baseline) + compute power x UE compute time
  + radio transmit power x uplink air time (first attempts + retransmissions; the HARQ waits are
  not air time) + receive power x downlink air time. The radio transmit power is
  ``link.tx_power_w / ue.pa_efficiency + ue.tx_circuit_power_w``.
* UE memory = weights it holds (embeddings for ``s >= 1``, its layers, the final norm and an untied
  lm_head at ``s = L``) at the UE's weight dtype + its KV cache at the final context ``T + N - 1``.
* UE weight precision (``ue_precision``, one of `splitrl.quant.precision.PRECISIONS`; None: the
  profile's ``weight_dtype`` as above): every linear weight the UE holds or streams (the decoder
  layers' projections; an untied lm_head) takes exactly `splitrl.quant.linear_weight_bytes` bytes
  (scales and zeros included), and the other parameters (embeddings, a head tied to them, norms,
  biases) their dense dtype at that precision: 4 B for fp32, 2 B (bf16) for bf16/int8/int4 — the
  low-bit kernels run on bf16 activations (`splitrl.quant.precision`). Those bytes set the UE's
  memory (and so the memory mask), the weights a pass streams and the embedding rows it reads;
  the UE's FLOP/s and bandwidth are the profile's rates at that precision (`UEProfile.rates_at`).
  The KV cache stays at the profile's ``kv_dtype``; the edge keeps its profile's weights.

The SNR is held for the whole request: callers with a time-varying channel query per step.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from splitrl.channel.fading import SPEED_OF_LIGHT_MPS
from splitrl.link.codec import Codec, get_codec
from splitrl.models.view import DecoderView
from splitrl.cost.profiles import EdgeProfile, LinkProfile, UEProfile, load_profile
from splitrl.quant.precision import check_precision, linear_weight_bytes
from splitrl.errors import UsageError

__all__ = [
    "LINK_ADAPTATIONS", "CostEstimate", "CostModel", "CostTable", "LatencyEnergy", "ModelCosts", "emulate_report",
    "sum_max_linear",
]

LINK_ADAPTATIONS: tuple[str, ...] = ("min_latency", "target_bler")

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class ModelCosts:
    """Analytic costs of a model, extracted once from a `DecoderView` (no torch afterwards).

    Attributes:
        num_layers, hidden_size, vocab_size: model sizes.
        layer_params: parameters per decoder layer ``[L]``.
        layer_flops_base: context-independent FLOPs per token per layer ``[L]``.
        layer_flops_per_ctx: FLOPs per token per attended position per layer ``[L]``.
        layer_kv_elements: K + V elements cached per token per layer ``[L]``.
        embed_params: token (+ learned position) embedding parameters.
        embed_row_elements: embedding elements read per token (``H``, or ``2H`` with learned positions).
        embed_flops_per_token: FLOPs of the embedding stage per token (the position add).
        head_params_resident: final norm + lm_head parameters NOT shared with the embeddings.
        head_params_read: final norm + lm_head parameters streamed when the head runs.
        head_flops_per_token: FLOPs of the head per token.
        token_id_bytes: bytes of one token id on the air.
        layer_linears: per decoder layer, the ``(out_features, in_features)`` of each linear weight
            (what a weight precision quantises); empty when not known.
        head_linear: ``(out, in)`` of the lm_head weight (None: not known).
        head_tied: the lm_head shares the token embedding's storage.
    """

    num_layers: int
    hidden_size: int
    vocab_size: int
    layer_params: FloatArray
    layer_flops_base: FloatArray
    layer_flops_per_ctx: FloatArray
    layer_kv_elements: FloatArray
    embed_params: int
    embed_row_elements: int
    embed_flops_per_token: int
    head_params_resident: int
    head_params_read: int
    head_flops_per_token: int
    token_id_bytes: int
    layer_linears: tuple[tuple[tuple[int, int], ...], ...] = ()
    head_linear: tuple[int, int] | None = None
    head_tied: bool = False

    @classmethod
    def from_view(cls, view: DecoderView) -> ModelCosts:
        if view.base_precision != "fp32":
            # A model loaded at a low-bit precision has no fp32 linears left to read shapes from:
            # describe the same architecture from an empty (meta) fp32 skeleton of its config.
            from accelerate import init_empty_weights
            from transformers import AutoModelForCausalLM

            with init_empty_weights():
                skeleton = AutoModelForCausalLM.from_config(view.config)
            return cls.from_view(DecoderView(skeleton))
        L, H = view.num_layers, view.hidden_size
        costs = [view.layer_cost(i) for i in range(L)]
        c = view.config
        if view.family == "llama":
            n_heads = int(c.num_attention_heads)
            head_dim = int(getattr(c, "head_dim", None) or H // n_heads)
            n_kv = int(getattr(c, "num_key_value_heads", None) or n_heads)
            kv_per_layer = 2 * n_kv * head_dim
        else:  # gpt2: full multi-head attention over n_embd
            kv_per_layer = 2 * int(getattr(c, "n_embd", H))
        embed_w = view.embed_tokens.weight
        embed_params = int(embed_w.numel())
        row = H
        pos_flops = 0
        if view.position_embed is not None:
            embed_params += int(view.position_embed.weight.numel())
            row += H
            pos_flops = H  # the learned position vector is added to every token
        norm_params = int(sum(p.numel() for p in view.final_norm.parameters()))
        head_w = view.lm_head.weight
        head_params = int(sum(p.numel() for p in view.lm_head.parameters()))
        tied = head_w is embed_w or (head_w.device.type != "meta" and head_w.data_ptr() == embed_w.data_ptr())
        return cls(
            num_layers=L, hidden_size=H, vocab_size=view.vocab_size,
            layer_params=np.array([lc.params for lc in costs], dtype=np.float64),
            layer_flops_base=np.array([lc.flops_per_token_base for lc in costs], dtype=np.float64),
            layer_flops_per_ctx=np.array([lc.flops_per_token_per_ctx for lc in costs], dtype=np.float64),
            layer_kv_elements=np.full(L, float(kv_per_layer)),
            embed_params=embed_params,
            embed_row_elements=row,
            embed_flops_per_token=pos_flops,
            head_params_resident=norm_params + (0 if tied else head_params),
            head_params_read=norm_params + head_params,
            head_flops_per_token=int(view.head_flops_per_token()),
            token_id_bytes=int(view.cut_bytes_per_token(0)),
            layer_linears=tuple(_linear_shapes(view.layers[i]) for i in range(L)),
            head_linear=(int(head_w.shape[0]), int(head_w.shape[1])), head_tied=bool(tied),
        )

    def precision_bytes(self, precision: str) -> tuple[FloatArray, float, float, float, float]:
        """Bytes at weight ``precision``: (per decoder layer ``[L]``, token embedding table (+ learned
        positions), one embedding row read per token, final norm + lm_head streamed when the head
        runs, final norm + lm_head held beyond the embeddings) — see the module docstring.

        These are the runtime's own storage (`splitrl.quant.weights`): linears at ``precision``
        (scales included, `linear_weight_bytes`); norms, biases and learned positions fp32; the
        token embedding at the vocabulary precision (fp32, bf16, else int8 rows with a bf16 scale
        each); the head shares the embedding when tied, except at int4, where it is its own int4
        matrix."""
        check_precision(precision)
        if len(self.layer_linears) != self.num_layers or self.head_linear is None:
            raise UsageError("these ModelCosts carry no linear shapes (build them with ModelCosts.from_view)")
        layers = np.array([
            sum(linear_weight_bytes(o, i, precision) for o, i in shapes)
            + (float(params) - sum(o * i for o, i in shapes)) * 4.0
            for shapes, params in zip(self.layer_linears, self.layer_params)], dtype=np.float64)
        v, h = self.head_linear
        vocab = "int8" if precision == "int4" else precision
        positions = self.embed_params - v * h            # GPT-2's learned positions (fp32)
        embed_table = float(linear_weight_bytes(v, h, vocab)) + positions * 4.0
        per_element = float(linear_weight_bytes(1, h, vocab)) / h
        embed_row = self.embed_row_elements * per_element if positions == 0 else h * per_element + (
            self.embed_row_elements - h) * 4.0
        head_extra = (self.head_params_read - v * h) * 4.0  # final norm (+ a head bias)
        own_head = not self.head_tied or precision == "int4"
        head_w = float(linear_weight_bytes(v, h, precision if own_head else vocab))
        return layers, embed_table, embed_row, head_extra + head_w, head_extra + (head_w if own_head else 0.0)


def _linear_shapes(module: Any) -> tuple[tuple[int, int], ...]:
    """``(out_features, in_features)`` of every linear weight in ``module`` (`torch.nn.Linear`, and
    GPT-2's ``Conv1D``, whose weight is stored ``[in, out]``)."""
    import torch

    out = []
    for m in module.modules():
        if isinstance(m, torch.nn.Linear):
            out.append((int(m.out_features), int(m.in_features)))
        elif type(m).__name__ == "Conv1D" and hasattr(m, "nf"):
            out.append((int(m.weight.shape[1]), int(m.weight.shape[0])))
    return tuple(out)


@dataclass(frozen=True)
class CostEstimate:
    """Expected cost of one request at one split and SNR (all times in seconds, energy in joules).

    TTFT decomposition: ``ttft_s == ue_prefill_s + uplink_prefill_s + edge_prefill_s + downlink_s``
    without pipelining (``prefill_chunks = 1``); pipelined, ``ttft_s`` is at most that sum.
    Per-token decomposition: ``tpot_s == ue_decode_s + uplink_decode_s + edge_decode_s + downlink_s``.
    ``e2e_latency_s == ttft_s + (new_tokens - 1) * tpot_s``.
    UE energy: ``ue_energy_j == ue_compute_energy_j + ue_radio_energy_j + ue_idle_energy_j``
    (whole request) and ``ue_energy_j_per_token == ue_energy_j / new_tokens``.
    Bytes: ``prompt_bytes`` (uplink, prefill), ``bytes_per_token`` (uplink per decode step: 2 at
    split 0 with a <=65536-token vocabulary, 0 at split L), ``downlink_bytes_per_token`` (token ids
    back to the UE), ``bytes_on_air`` (whole request, both directions).
    ``uplink_rate_bps`` / ``uplink_bler``: the rate and BLER used for the prompt's uplink transfer
    (see ``link_adaptation`` of `CostModel`; at split L, where nothing is sent, the link
    adaptation's choice); ``downlink_*`` likewise for the returned token id.
    ``uplink_loss_probability``: probability some uplink payload of the request is still lost after
    all retransmissions. Infinite latencies mean the rate is zero at this SNR (CQI 0).
    """

    split: int
    snr_db: float
    prompt_tokens: int
    new_tokens: int
    ttft_s: float
    tpot_s: float
    e2e_latency_s: float
    ue_prefill_s: float
    uplink_prefill_s: float
    edge_prefill_s: float
    downlink_s: float
    ue_decode_s: float
    uplink_decode_s: float
    edge_decode_s: float
    uplink_rate_bps: float
    uplink_bler: float
    downlink_rate_bps: float
    downlink_bler: float
    uplink_loss_probability: float
    prompt_bytes: int
    bytes_per_token: int
    downlink_bytes_per_token: int
    bytes_on_air: int
    ue_flops_prefill: float
    edge_flops_prefill: float
    ue_compute_energy_j: float
    ue_radio_energy_j: float
    ue_idle_energy_j: float
    ue_energy_j: float
    ue_energy_prefill_j: float
    ue_energy_decode_j_per_token: float
    ue_energy_j_per_token: float
    edge_energy_j_per_token: float
    ue_weight_bytes: int
    ue_kv_bytes: int
    ue_memory_bytes: int
    fits_ue_memory: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class CostTable:
    """`CostEstimate` for every split ``0..L`` at once: same fields, arrays indexed by split."""

    split: NDArray[np.int64]
    snr_db: float
    prompt_tokens: int
    new_tokens: int
    ttft_s: FloatArray
    tpot_s: FloatArray
    e2e_latency_s: FloatArray
    ue_prefill_s: FloatArray
    uplink_prefill_s: FloatArray
    edge_prefill_s: FloatArray
    downlink_s: FloatArray
    ue_decode_s: FloatArray
    uplink_decode_s: FloatArray
    edge_decode_s: FloatArray
    uplink_rate_bps: FloatArray
    uplink_bler: FloatArray
    downlink_rate_bps: FloatArray
    downlink_bler: FloatArray
    uplink_loss_probability: FloatArray
    prompt_bytes: NDArray[np.int64]
    bytes_per_token: NDArray[np.int64]
    downlink_bytes_per_token: NDArray[np.int64]
    bytes_on_air: NDArray[np.int64]
    ue_flops_prefill: FloatArray
    edge_flops_prefill: FloatArray
    ue_compute_energy_j: FloatArray
    ue_radio_energy_j: FloatArray
    ue_idle_energy_j: FloatArray
    ue_energy_j: FloatArray
    ue_energy_prefill_j: FloatArray
    ue_energy_decode_j_per_token: FloatArray
    ue_energy_j_per_token: FloatArray
    edge_energy_j_per_token: FloatArray
    ue_weight_bytes: NDArray[np.int64]
    ue_kv_bytes: NDArray[np.int64]
    ue_memory_bytes: NDArray[np.int64]
    fits_ue_memory: NDArray[np.bool_]

    def row(self, split: int) -> CostEstimate:
        """The `CostEstimate` of one split."""
        kw: dict[str, Any] = {}
        for name, kind in _ROW_SPEC:
            v = getattr(self, name)
            kw[name] = v if kind is None else kind(v[split])
        return CostEstimate(**kw)


# How each CostEstimate field is read from a CostTable: as is (request-level scalars) or one
# element converted to the field's Python type.
_REQUEST_FIELDS = frozenset({"snr_db", "prompt_tokens", "new_tokens"})
_ROW_SPEC: tuple[tuple[str, Any], ...] = tuple(
    (f.name, None if f.name in _REQUEST_FIELDS else {"int": int, "bool": bool}.get(str(f.type), float))
    for f in dataclasses.fields(CostEstimate)
)


def _sum_linear(a: FloatArray, b: FloatArray, p: Any, q: Any) -> FloatArray:
    """Sum of ``a + b c`` over integers ``c`` in ``[p, q)``."""
    n = q - p
    return n * a + b * n * (p + q - 1) / 2.0


@dataclass(frozen=True)
class _MaxOfLines:
    """``max(a1 + b1 c, a2 + b2 c)`` split at the crossing: ``before`` line for ``c < k``, ``after`` from ``k`` on.

    Two lines cross at most once, so a sum of the max over any range of ``c`` is two arithmetic
    series; the crossing depends only on the coefficients, so it is found once, not per query.
    """

    a_before: FloatArray
    b_before: FloatArray
    a_after: FloatArray
    b_after: FloatArray
    k: FloatArray  # first integer c at which the `after` line is the max (may be +-inf)

    @classmethod
    def of(cls, a1: Any, b1: Any, a2: Any, b2: Any) -> _MaxOfLines:
        a1, b1, a2, b2 = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (a1, b1, a2, b2)))
        da, db = a1 - a2, b1 - b2
        with np.errstate(divide="ignore", invalid="ignore"):
            cross = -da / db
        up, down = db > 0, db < 0  # line 1 wins for c >= cross / c <= cross
        flat1 = (db == 0) & (da >= 0)  # parallel: line 1 everywhere, or line 2 everywhere
        first_is_1 = down | flat1
        k = np.where(up, np.ceil(cross), np.where(down, np.floor(cross) + 1, np.inf))
        return cls(
            a_before=np.where(first_is_1, a1, a2), b_before=np.where(first_is_1, b1, b2),
            a_after=np.where(first_is_1, a2, a1), b_after=np.where(first_is_1, b2, b1), k=k,
        )

    def sum(self, c0: int, m: int) -> FloatArray:
        """``sum_{c=c0}^{c0+m-1} max(...)``, elementwise."""
        end = float(c0 + m)
        k = np.minimum(np.maximum(self.k, float(c0)), end)
        return _sum_linear(self.a_before, self.b_before, float(c0), k) + _sum_linear(self.a_after, self.b_after, k, end)


def sum_max_linear(a1: Any, b1: Any, a2: Any, b2: Any, c0: int, m: int) -> FloatArray:
    """Closed form of ``sum_{c=c0}^{c0+m-1} max(a1 + b1 c, a2 + b2 c)``, elementwise over arrays."""
    return _MaxOfLines.of(a1, b1, a2, b2).sum(c0, m)


@dataclass(frozen=True)
class _Device:
    """Per-split arrays of one side (UE or edge), precomputed from `ModelCosts` and a profile."""

    flops_token: FloatArray      # FLOPs per token without attention and without the head
    flops_ctx: FloatArray        # attention FLOPs per token per attended position
    flops_head: FloatArray       # head FLOPs per pass (head runs on the last position only)
    weight_read: FloatArray      # weight bytes streamed per pass
    head_read: FloatArray        # the part of weight_read that is the head (final norm + lm_head)
    row_read: FloatArray         # embedding bytes read per token
    kv_token: FloatArray         # KV-cache bytes per token of context
    overhead: FloatArray         # dispatch overhead per pass (s)
    weight_resident: FloatArray  # weight bytes held
    flops_per_s: float
    bandwidth: float | None
    compute_power_w: float
    decode: _MaxOfLines          # per-step time at context c: max(compute line, memory line)

    def prefill_s(self, T: int) -> tuple[FloatArray, FloatArray]:
        flops = T * self.flops_token + self.flops_ctx * (T * (T + 1) / 2.0) + self.flops_head
        t = flops / self.flops_per_s
        if self.bandwidth is not None:
            t = np.maximum(t, (self.weight_read + T * (self.row_read + self.kv_token)) / self.bandwidth)
        return t + self.overhead, flops

    def decode_sum_s(self, c0: int, m: int) -> FloatArray:
        """Total compute time of ``m`` single-token passes at contexts ``c0 .. c0+m-1``."""
        return self.decode.sum(c0, m) + m * self.overhead

    def chunk_s(self, tokens: int, prior: int, *, head: bool) -> FloatArray:
        """Compute time of one prefill chunk of ``tokens`` tokens after ``prior`` cached positions
        (roofline: weights + embedding rows + KV read/written; the head only when ``head``)."""
        attn = self.flops_ctx * (tokens * prior + tokens * (tokens + 1) / 2.0)
        flops = tokens * self.flops_token + attn + (self.flops_head if head else 0.0)
        t = flops / self.flops_per_s
        if self.bandwidth is not None:
            kv = self.kv_token * (prior + tokens)
            weights = self.weight_read if head else self.weight_read - self.head_read
            t = np.maximum(t, (weights + tokens * self.row_read + kv) / self.bandwidth)
        return t + self.overhead


def _device_arrays(mc: ModelCosts, profile: UEProfile | EdgeProfile, side: str, precision: str | None = None) -> _Device:
    L = mc.num_layers
    s = np.arange(L + 1)
    cum = lambda x: np.concatenate([[0.0], np.cumsum(x)])  # noqa: E731  cum(x)[s] = sum_{i<s} x_i
    c_params, c_base = cum(mc.layer_params), cum(mc.layer_flops_base)
    c_ctx, c_kv = cum(mc.layer_flops_per_ctx), cum(mc.layer_kv_elements)
    if side == "ue":
        has_embed, has_head = (s > 0), (s == L)
        params, base, ctx, kv = c_params, c_base, c_ctx, c_kv
        n_layers = s.astype(np.float64)
    else:
        has_embed, has_head = (s == 0), (s < L)
        params, base, ctx, kv = (c_params[L] - c_params, c_base[L] - c_base, c_ctx[L] - c_ctx, c_kv[L] - c_kv)
        n_layers = (L - s).astype(np.float64)
    wb, kvb = profile.weight_bytes_per_param, profile.kv_bytes_per_element
    he, hh = has_embed.astype(np.float64), has_head.astype(np.float64)
    R, bw = float(profile.flops_per_s), profile.memory_bandwidth_bytes_per_s  # type: ignore[arg-type]
    flops_token = base + he * mc.embed_flops_per_token
    flops_head = hh * mc.head_flops_per_token
    kv_token = kv * kvb
    if precision is not None:  # exact bytes of the runtime's storage at this precision (module docstring)
        R, bw = profile.rates_at(precision)
        layer_b, embed_b, row_b, head_read_b, head_res_b = mc.precision_bytes(precision)
        c_bytes = cum(layer_b)
        lbytes = c_bytes if side == "ue" else c_bytes[L] - c_bytes
        weight_read = lbytes + hh * head_read_b
        row_read = he * row_b
        decode = _MaxOfLines.of(
            (flops_token + flops_head) / R, ctx / R,
            np.zeros(L + 1) if bw is None else (weight_read + row_read) / bw,
            np.zeros(L + 1) if bw is None else kv_token / bw,
        )
        return _Device(
            flops_token=flops_token, flops_ctx=ctx, flops_head=flops_head, weight_read=weight_read,
            head_read=hh * head_read_b, row_read=row_read, kv_token=kv_token,
            overhead=(n_layers + hh) * profile.layer_overhead_s,
            weight_resident=he * embed_b + lbytes + hh * head_res_b,
            flops_per_s=R, bandwidth=bw, compute_power_w=profile.compute_power_w, decode=decode,
        )
    weight_read = (params + hh * mc.head_params_read) * wb
    row_read = he * mc.embed_row_elements * wb
    # Decode step at context c: compute line (F_token + F_head + F_ctx c) / R against memory line
    # (weights + embedding row + KV of c positions) / bandwidth; no memory line without a bandwidth.
    zero = np.zeros(L + 1)
    decode = _MaxOfLines.of(
        (flops_token + flops_head) / R, ctx / R,
        zero if bw is None else (weight_read + row_read) / bw, zero if bw is None else kv_token / bw,
    )
    return _Device(
        flops_token=flops_token, flops_ctx=ctx, flops_head=flops_head, weight_read=weight_read,
        head_read=hh * mc.head_params_read * wb, row_read=row_read, kv_token=kv_token,
        overhead=(n_layers + hh) * profile.layer_overhead_s,
        weight_resident=(he * mc.embed_params + params + hh * mc.head_params_resident) * wb,
        flops_per_s=R, bandwidth=bw, compute_power_w=profile.compute_power_w, decode=decode,
    )


@dataclass(frozen=True)
class _Transfer:
    latency: FloatArray  # expected transfer latency per split (0 where nothing crosses)
    air: FloatArray      # expected transmitter-on time: first attempts + retransmissions
    loss: FloatArray     # probability the payload is still lost after all retransmissions
    rate: FloatArray     # rate (bit/s) of the modulation and coding scheme used, per split
    bler: FloatArray     # its block error rate

    def row(self, i: int) -> "_Transfer":
        """Payload ``i`` of a ``[K, S]`` transfer."""
        return _Transfer(self.latency[i], self.air[i], self.loss[i], self.rate[i], self.bler[i])


@dataclass(frozen=True)
class _ChunkPlan:
    """Channel-independent figures of pipelined prefill, one row per chunk count c = 2..C."""

    steps: NDArray[np.int64]  # [C-1, 1] c - 1: how many times the slowest stage repeats
    ue_first: FloatArray      # [C-1, S] UE time of the first chunk
    ue_last: FloatArray       # [C-1, S] UE time of the last (largest-context) chunk
    edge_first: FloatArray    # [C-1, S] edge time of the first chunk, idle edge
    edge_last: FloatArray     # [C-1, S] edge time of the last chunk (with the head), idle edge
    nbytes: NDArray[np.int64] # [C-1, S] uplink bytes of one chunk


@dataclass(frozen=True)
class _LinkTerms:
    """The channel-dependent, load-independent figures of one (SNR, prompt, output) state."""

    ue_pre: FloatArray               # UE prefill time, UE decode time per step (channel-free, kept at hand)
    ue_dec: FloatArray
    ul_pre: _Transfer                # the prompt's uplink transfer
    ul_dec: _Transfer                # one decode step's uplink transfer
    dl: _Transfer                    # one token's downlink transfer
    chunk_air: FloatArray | None     # [C-1, S] uplink latency of one prefill chunk per chunk count
    plan: _ChunkPlan | None
    e_pre_compute: FloatArray        # UE energy of the prefill's compute, radio
    e_pre_radio: FloatArray
    e_step_compute: FloatArray       # ... of one decode step
    e_step_radio: FloatArray
    e_compute: FloatArray            # whole request
    e_radio: FloatArray
    e_compute_radio: FloatArray      # e_compute + e_radio (the request's energy before idle power)
    rows: FloatArray                 # [4 + C-1, S] the link rows of `splitrl.decision.kernel_numba` (see its docstring)


class LatencyEnergy(NamedTuple):
    """Per-split latency and UE energy figures of `CostModel.latency_energy` (the same fields and
    values as the `CostTable` of `CostModel.estimate_all`)."""

    ttft_s: FloatArray
    tpot_s: FloatArray
    e2e_latency_s: FloatArray
    ue_energy_j_per_token: FloatArray
    ue_prefill_s: FloatArray
    ue_decode_s: FloatArray


def _over_steps(m: int, x: FloatArray) -> FloatArray:
    """``m * x``, except that no steps cost nothing even where x is inf (0 * inf would be nan)."""
    return m * x if m else np.zeros_like(x)


def _expected_retransmissions(p: FloatArray, k_max: int) -> FloatArray:
    """Vectorised `splitrl.channel.latency.expected_retransmissions`: sum_{k=1}^{K} p^k."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ek = p * (1.0 - p**k_max) / (1.0 - p)
    return np.where(p >= 1.0, float(k_max), ek)


class CostModel:
    """Latency, energy, memory and traffic of every split of one model on one UE/edge/link.

    Args:
        view: the model (`DecoderView` or a `LoadedModel`); read once at construction.
        ue, edge, link_profile: profiles, shipped profile names, or YAML paths.
        codec: activation codec at the cut (``fp32``, ``fp16``, ``bf16``, ``int8``, ``int4``) or a
            `Codec`; its exact frame size (header included) is what crosses the uplink.
        link_adaptation: CQI-table links only. ``"target_bler"``: the highest CQI meeting the
            BLER target after the back-off, i.e. `splitrl.channel.CqiRate.select_cqi`, what a
            `ChannelState` from the channel emulator reports. ``"min_latency"`` (default): among
            those admissible CQIs (1..select_cqi), the one with the lowest expected latency for
            each payload. The highest admissible CQI is not always the fastest: just above a
            switching SNR it runs at the target BLER, and the HARQ round trips of a multi-block
            payload can outweigh its higher rate, so with ``"target_bler"`` latency can rise by a
            few % as the SNR improves. ``"min_latency"`` is non-increasing in SNR by construction
            (a growing admissible set of CQIs whose BLER each fall with SNR).
        cache_size: how many ``estimate_all`` results (keyed by SNR, prompt and output length and
            edge slow-down) are kept; 0 disables the cache. Results are immutable, so sharing them is safe.
        prefill_chunks: largest number of chunks the prompt may be pipelined in (1: no pipelining,
            the sequential prefill); see the module docstring.
        ue_precision: weight precision of the UE's segment (`splitrl.quant.precision.PRECISIONS`;
            the UE profile must list it in ``precision_rates``), or None (default): the profile's
            ``weight_dtype`` and rates, the model before precisions existed (unchanged figures).
    """

    def __init__(
        self,
        view: Any,
        ue: UEProfile | str,
        edge: EdgeProfile | str,
        link_profile: LinkProfile | str,
        codec: str | Codec = "fp32",
        *,
        link_adaptation: str = "min_latency",
        cache_size: int = 4096,
        prefill_chunks: int = 1,
        ue_precision: str | None = None,
    ) -> None:
        view = getattr(view, "view", view)  # accept a LoadedModel
        if not isinstance(view, DecoderView):
            raise TypeError(f"view must be a DecoderView or LoadedModel, got {type(view).__name__}")
        self.ue: UEProfile = load_profile("ue", ue)  # type: ignore[assignment]
        self.edge: EdgeProfile = load_profile("edge", edge)  # type: ignore[assignment]
        self.link: LinkProfile = load_profile("link", link_profile)  # type: ignore[assignment]
        self.codec: Codec = get_codec(codec)
        self.costs = ModelCosts.from_view(view)
        self.num_layers = self.costs.num_layers
        L = self.num_layers
        self._splits = np.arange(L + 1)
        self._crosses = self._splits < L
        self._is_tokens = self._splits == 0
        self._is_hidden = (self._splits > 0) & (self._splits < L)
        self.ue_precision = None if ue_precision is None else check_precision(ue_precision, "ue_precision")
        self._ue = _device_arrays(self.costs, self.ue, "ue", self.ue_precision)
        self._edge = _device_arrays(self.costs, self.edge, "edge")
        self._ue_kv_token = self._ue.kv_token
        self._rate_model = self.link.rate_model()
        self._shannon = self.link.rate.mode == "shannon"
        if link_adaptation not in LINK_ADAPTATIONS:
            raise UsageError(f"link_adaptation = {link_adaptation!r}: must be one of {', '.join(LINK_ADAPTATIONS)}")
        self.link_adaptation = link_adaptation
        if not self._shannon:
            # Rates of CQI 1..15 at this bandwidth and overhead (index q-1).
            self._cqi_rates = np.asarray(self._rate_model.rate_bps(0.0, np.arange(1, 16)), dtype=np.float64)
            self._cqi_index = np.arange(1, 16)
        self._prop_s = self.link.distance_m / SPEED_OF_LIGHT_MPS
        self.radio_tx_power_w = self.ue.radio_tx_power_w(self.link.tx_power_w)
        tok = self.costs.token_id_bytes
        self._dl_bytes = np.where(self._crosses, tok, 0).astype(np.int64)
        self._decode_bytes = self._uplink_bytes(1)
        self._prompt_bytes_cache: dict[int, NDArray[np.int64]] = {}
        self._chunk_plans: dict[int, _ChunkPlan | None] = {}
        self._compute_cache: dict[tuple[int, int], tuple[FloatArray, ...]] = {}
        self._index_cache: dict[tuple[int, ...], tuple[np.ndarray, ...]] = {}
        self._link_cache: dict[tuple[float, int, int], _LinkTerms] = {}
        self._no_slowdown = np.ones(L + 1)
        self._no_slowdown.flags.writeable = False
        if isinstance(prefill_chunks, bool) or not isinstance(prefill_chunks, (int, np.integer)) or not 1 <= prefill_chunks <= 64:
            raise UsageError(f"prefill_chunks = {prefill_chunks!r}: must be an integer in 1..64")
        self.prefill_chunks = int(prefill_chunks)
        self.cache_size = int(cache_size)
        self._cache: dict[tuple[float, int, int], CostTable] = {}

    # ---- pieces -------------------------------------------------------------------------------
    def _uplink_bytes(self, tokens: int) -> NDArray[np.int64]:
        """Uplink bytes per split for one pass of ``tokens`` tokens: ids at 0, a frame inside, 0 at L."""
        frame = self.codec.nbytes((1, tokens, self.costs.hidden_size))
        out = np.where(self._is_tokens, tokens * self.costs.token_id_bytes, 0)
        return np.where(self._is_hidden, frame, out).astype(np.int64)

    def prompt_bytes(self, prompt_tokens: int) -> NDArray[np.int64]:
        """Uplink bytes of the prefill for every split (cached per prompt length)."""
        b = self._prompt_bytes_cache.get(prompt_tokens)
        if b is None:
            if len(self._prompt_bytes_cache) > 4096:  # bounded: prompt lengths are few in practice
                self._prompt_bytes_cache.clear()
            b = self._prompt_bytes_cache[prompt_tokens] = self._uplink_bytes(prompt_tokens)
        return b

    def rate(self, snr_db: float, direction: str = "uplink") -> tuple[float, float]:
        """(rate in bit/s, BLER) the link adaptation targets at ``snr_db`` (the downlink adds its offset).

        CQI links: the highest admissible CQI (`CqiRate.select_cqi`), whatever ``link_adaptation``
        says; Shannon links: the capacity rate with the profile's ``residual_bler``.
        """
        if direction == "downlink":
            snr_db = snr_db + self.link.downlink_snr_offset_db
        rate = float(self._rate_model.rate_bps(snr_db))
        if self._shannon:
            return rate, self.link.rate.residual_bler
        return rate, float(self._rate_model.bler(snr_db))  # type: ignore[arg-type]

    def _options(self, snr_db: float, direction: str) -> tuple[FloatArray, FloatArray]:
        """Candidate (rates, BLERs) for a transfer: one for Shannon / target_bler, the admissible CQIs otherwise."""
        if direction == "downlink":
            snr_db = snr_db + self.link.downlink_snr_offset_db
        if self._shannon:
            return np.array([float(self._rate_model.rate_bps(snr_db))]), np.array([self.link.rate.residual_bler])
        q_max = int(self._rate_model.select_cqi(snr_db))  # type: ignore[union-attr]
        if q_max == 0:  # CQI 0: out of range, nothing can be sent
            return np.zeros(1), np.ones(1)
        q = self._cqi_index[q_max - 1:q_max] if self.link_adaptation == "target_bler" else self._cqi_index[:q_max]
        bler = np.asarray(self._rate_model.bler_curve(snr_db, q), dtype=np.float64)  # type: ignore[union-attr]
        return self._cqi_rates[q - 1], bler

    def _payload_index(self, shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
        """Broadcasting index arrays of a payload array of ``shape`` (cached: shapes are few)."""
        idx = self._index_cache.get(shape)
        if idx is None:
            idx = self._index_cache[shape] = tuple(np.indices(shape, sparse=True))
        return idx

    def _transfer(
        self, nbytes: NDArray[np.int64], options: tuple[FloatArray, FloatArray], overhead_s: float
    ) -> _Transfer:
        """Expected latency, air time and loss per split (closed form of `LatencyModel.expected`).

        ``nbytes`` is ``[S]`` or ``[K, S]`` (K payloads per split, e.g. one per prefill chunk
        count: one call instead of K). With several candidate (rate, BLER) options, each payload
        uses the one with the lowest expected latency; with one option this is exactly
        `LatencyModel.expected`.
        """
        rates, blers = options
        h = self.link.harq
        lead = (slice(None),) + (None,) * nbytes.ndim  # options first: [Q, (K,) S]
        ek = _expected_retransmissions(blers, h.max_retransmissions)[lead]
        n_blocks = np.ceil(nbytes / h.transport_block_bytes)                   # [(K,) S]
        r = rates[lead]
        with np.errstate(divide="ignore", invalid="ignore"):
            ser = np.where(r > 0, 8.0 * nbytes / r, np.where(nbytes > 0, np.inf, 0.0))  # [Q, (K,) S]
        latency = ser + self._prop_s + overhead_s + ek * (ser + n_blocks * h.harq_rtt_s)
        air = ser * (1.0 + ek)
        if len(rates) > 1:
            # Payloads of zero bytes report the link adaptation's own (highest admissible) choice.
            pick = np.where(nbytes > 0, np.argmin(latency, axis=0), len(rates) - 1)
            at = (pick, *self._payload_index(nbytes.shape))
            latency, air = latency[at], air[at]
            rate, bler = rates[pick], blers[pick]
        else:
            latency, air = latency[0], air[0]
            rate, bler = np.full(nbytes.shape, rates[0]), np.full(nbytes.shape, blers[0])
        residual = bler ** (h.max_retransmissions + 1)
        loss = 1.0 - (1.0 - residual) ** n_blocks
        c = self._crosses
        return _Transfer(
            latency=np.where(c, latency, 0.0), air=np.where(c, air, 0.0), loss=np.where(c, loss, 0.0),
            rate=rate, bler=bler,
        )

    def _compute_times(self, T: int, m_eff: int) -> tuple[FloatArray, ...]:
        """(UE prefill, its FLOPs, idle-edge prefill, its FLOPs, UE decode per step, idle-edge decode
        over ``m_eff`` steps) per split: channel-independent, so cached per (prompt, steps)."""
        key = (T, m_eff)
        out = self._compute_cache.get(key)
        if out is None:
            ue_pre, ue_flops = self._ue.prefill_s(T)
            edge_pre, edge_flops = self._edge.prefill_s(T)
            out = (ue_pre, ue_flops, edge_pre, edge_flops, self._ue.decode_sum_s(T + 1, m_eff) / m_eff,
                   self._edge.decode_sum_s(T + 1, m_eff))
            for a in out:
                a.flags.writeable = False  # shared by every table at these lengths
            if len(self._compute_cache) > 4096:  # bounded: prompt/output lengths are few in practice
                self._compute_cache.clear()
            self._compute_cache[key] = out
        return out

    def _chunk_plan(self, T: int) -> "_ChunkPlan | None":
        """What does not depend on the channel in `_pipelined_prefill`, for every chunk count
        ``c`` in ``2..C`` at once (cached per prompt length: it is the same for every SNR)."""
        plan = self._chunk_plans.get(T)
        if plan is None and T not in self._chunk_plans:
            counts = np.arange(2, min(self.prefill_chunks, T) + 1)
            if len(counts):
                tc = -(-T // counts)                 # tokens of the largest chunk, per count
                prior = T - tc                       # context the last chunk attends to
                rows = lambda dev, pri, head: np.stack(  # noqa: E731
                    [dev.chunk_s(int(t), int(p), head=head) for t, p in zip(tc, pri)])
                plan = _ChunkPlan(
                    steps=(counts - 1)[:, None], ue_first=rows(self._ue, 0 * prior, False),
                    ue_last=rows(self._ue, prior, False), edge_first=rows(self._edge, 0 * prior, False),
                    edge_last=rows(self._edge, prior, True),
                    nbytes=np.stack([self._uplink_bytes(int(t)) for t in tc]))
            if len(self._chunk_plans) > 4096:  # bounded: prompt lengths are few in practice
                self._chunk_plans.clear()
            self._chunk_plans[T] = plan
        return plan

    def _pipelined_prefill(self, plan: _ChunkPlan, air: FloatArray, slow: FloatArray, ttft_seq: FloatArray,
                           dl_latency: FloatArray) -> FloatArray:
        """TTFT per split with the prompt pipelined in the best chunk count ``c`` in ``1..C``;
        ``air`` ``[C-1, S]`` is the uplink latency of one chunk per count.

        All chunk counts are evaluated together (arrays ``[C-1, S]``); a minimum is exact in any
        order, so this equals trying the counts one by one."""
        steady = np.maximum(np.maximum(plan.ue_last, air), slow * plan.edge_last)
        ttft = plan.ue_first + air + slow * plan.edge_first + plan.steps * steady + dl_latency  # [C-1, S]
        return np.where(self._is_hidden, np.minimum(ttft_seq, ttft.min(axis=0)), ttft_seq)

    # ---- public API ---------------------------------------------------------------------------
    def _slowdown(self, edge_slowdown: Any) -> FloatArray:
        """The per-split edge slow-down [S] (ones for an idle edge), validated."""
        if edge_slowdown is None:
            return self._no_slowdown
        slow = np.broadcast_to(np.asarray(edge_slowdown, dtype=np.float64), self._no_slowdown.shape)
        if not (np.isfinite(slow).all() and (slow >= 1.0).all()):
            raise UsageError(f"edge_slowdown must be finite factors >= 1, got {edge_slowdown!r}")
        return slow

    def _link(self, snr_db: float, T: int, N: int) -> _LinkTerms:
        """Everything that depends on the channel but not on the edge's load (cached per SNR and lengths):
        a decision at a new edge load reuses the SNR's transfers and UE energy."""
        key = (snr_db, T, N)
        link = self._link_cache.pop(key, None)
        if link is not None:
            self._link_cache[key] = link  # least recently used first: warmed SNRs stay while in use
            return link
        m = N - 1
        m_eff = max(m, 1)
        ue_pre, _, _, _, ue_dec, _ = self._compute_times(T, m_eff)
        ul_opts, dl_opts = self._options(snr_db, "uplink"), self._options(snr_db, "downlink")
        # Every uplink payload in one call (they share the channel): the prompt, one decode step,
        # and one chunk per pipelined-prefill chunk count.
        plan = self._chunk_plan(T) if self.prefill_chunks > 1 else None
        payloads = [self.prompt_bytes(T)[None], self._decode_bytes[None]] + ([plan.nbytes] if plan is not None else [])
        ul = self._transfer(np.concatenate(payloads), ul_opts, self.link.uplink_overhead_s)  # [2 (+C-1), S]
        ul_pre, ul_dec = ul.row(0), ul.row(1)
        dl = self._transfer(self._dl_bytes, dl_opts, self.link.downlink_overhead_s)
        p = self.ue
        ptx, prx = self.radio_tx_power_w, p.rx_power_w
        e_pre_compute = p.compute_power_w * ue_pre
        e_pre_radio = ptx * ul_pre.air + prx * dl.air
        e_step_compute = p.compute_power_w * ue_dec
        e_step_radio = ptx * ul_dec.air + prx * dl.air
        e_compute = e_pre_compute + _over_steps(m, e_step_compute)
        e_radio = e_pre_radio + _over_steps(m, e_step_radio)
        link = _LinkTerms(ue_pre=ue_pre, ue_dec=ue_dec, ul_pre=ul_pre, ul_dec=ul_dec, dl=dl, chunk_air=ul.latency[2:] if plan is not None else None,
                          plan=plan, e_pre_compute=e_pre_compute, e_pre_radio=e_pre_radio,
                          e_step_compute=e_step_compute, e_step_radio=e_step_radio, e_compute=e_compute,
                          e_radio=e_radio, e_compute_radio=e_compute + e_radio,
                          rows=np.vstack([ul_pre.latency, ul_dec.latency, dl.latency, e_compute + e_radio]
                                         + ([ul.latency[2:]] if plan is not None else [])))
        if self.cache_size > 0:
            if len(self._link_cache) >= self.cache_size:
                self._link_cache.pop(next(iter(self._link_cache)))  # the least recently used
            self._link_cache[key] = link
        return link

    def _latencies(self, link: _LinkTerms, slow: FloatArray, T: int, N: int
                   ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
        """(TTFT, TPOT, end-to-end latency, UE energy of the request, edge prefill, edge decode per
        step) at edge slow-down ``slow``: the load-dependent part, shared by `estimate_all` and
        `latency_energy` so that both compute the same numbers the same way."""
        m = N - 1
        m_eff = max(m, 1)
        ue_pre, _, edge_pre, _, ue_dec, edge_dec_sum = self._compute_times(T, m_eff)
        edge_pre = slow * edge_pre
        edge_dec = slow * edge_dec_sum / m_eff
        dl = link.dl.latency
        ttft = ue_pre + link.ul_pre.latency + edge_pre + dl
        if link.plan is not None:
            ttft = self._pipelined_prefill(link.plan, link.chunk_air, slow, ttft, dl)
        tpot = ue_dec + link.ul_dec.latency + edge_dec + dl
        e2e = ttft + _over_steps(m, tpot)
        e_total = link.e_compute_radio + self.ue.idle_power_w * e2e
        return ttft, tpot, e2e, e_total, edge_pre, edge_dec

    def latency_energy(self, snr_db: float, prompt_tokens: int, new_tokens: int | None = None, *,
                       edge_slowdown: Any = None) -> LatencyEnergy:
        """The latency and UE-energy figures of `estimate_all` (identical values) without the rest of
        the table: what a reward needs, for a decision's hot path (a new edge load at a seen SNR
        costs a few vector operations)."""
        snr_db, T, N = self._check(snr_db, prompt_tokens, new_tokens)
        slow = self._slowdown(edge_slowdown)
        link = self._link(snr_db, T, N)
        ttft, tpot, e2e, e_total, _, _ = self._latencies(link, slow, T, N)
        ue_pre, ue_dec = link.ue_pre, link.ue_dec
        return LatencyEnergy(ttft_s=ttft, tpot_s=tpot, e2e_latency_s=e2e, ue_energy_j_per_token=e_total / N,
                             ue_prefill_s=ue_pre, ue_decode_s=ue_dec)

    def link_rows(self, snr_db: float, prompt_tokens: int, new_tokens: int | None = None) -> FloatArray:
        """The channel-dependent rows `splitrl.decision.kernel_numba` reads at this SNR (cached per SNR)."""
        snr_db, T, N = self._check(snr_db, prompt_tokens, new_tokens)
        return self._link(snr_db, T, N).rows

    def kernel_static(self, prompt_tokens: int, new_tokens: int | None = None) -> tuple[FloatArray, FloatArray]:
        """(rows 0-3 and the chunk rows of `splitrl.decision.kernel_numba`'s static array, chunk steps): the
        channel-independent figures of these request lengths. Rows 4-6 are the caller's."""
        _, T, N = self._check(0.0, prompt_tokens, new_tokens)
        m_eff = max(N - 1, 1)
        ue_pre, _, edge_pre, _, ue_dec, edge_dec_sum = self._compute_times(T, m_eff)
        plan = self._chunk_plan(T) if self.prefill_chunks > 1 else None
        rows = [ue_pre, edge_pre, ue_dec, edge_dec_sum]
        steps = np.zeros(0)
        if plan is not None:
            steps = plan.steps[:, 0].astype(np.float64)
            for c in range(len(steps)):
                rows += [plan.ue_first[c], plan.ue_last[c], plan.edge_first[c], plan.edge_last[c]]
        return np.vstack(rows), steps

    def estimate_all(self, snr_db: float, prompt_tokens: int, new_tokens: int | None = None, *,
                     edge_slowdown: Any = None) -> CostTable:
        """Costs of every split ``0..L`` at uplink SNR ``snr_db`` (see the module docstring).

        ``edge_slowdown``: None (an idle, dedicated edge), a factor >= 1 or one factor per split
        ``[L+1]`` multiplying the edge's compute time (a shared edge's queueing, `splitrl.cost.edge_load`).
        """
        snr_db, T, N = self._check(snr_db, prompt_tokens, new_tokens)
        slow = self._slowdown(edge_slowdown)
        key = (snr_db, T, N, None if edge_slowdown is None else slow.tobytes())
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        m = N - 1               # decode steps actually run
        ue, edge = self._ue, self._edge
        ue_pre, ue_flops, _, edge_flops, ue_dec, _ = self._compute_times(T, max(m, 1))
        link = self._link(snr_db, T, N)
        ul_pre, ul_dec, dl = link.ul_pre, link.ul_dec, link.dl
        ttft, tpot, e2e, e_total, edge_pre, edge_dec = self._latencies(link, slow, T, N)

        p = self.ue
        e_pre = link.e_pre_compute + link.e_pre_radio + p.idle_power_w * ttft
        e_step = link.e_step_compute + link.e_step_radio + p.idle_power_w * tpot
        e_idle = p.idle_power_w * e2e

        prompt_bytes = self.prompt_bytes(T)
        kv_bytes = np.round(self._ue_kv_token * (T + N - 1)).astype(np.int64)
        w_bytes = np.round(ue.weight_resident).astype(np.int64)
        mem = w_bytes + kv_bytes
        on_air = prompt_bytes + m * self._decode_bytes + N * self._dl_bytes
        with np.errstate(invalid="ignore"):
            ul_loss = 1.0 - (1.0 - ul_pre.loss) * (1.0 - ul_dec.loss) ** m
        edge_energy = edge.compute_power_w * (edge_pre + _over_steps(m, edge_dec)) / N
        table = CostTable(
            split=self._splits.copy(), snr_db=snr_db, prompt_tokens=T, new_tokens=N,
            ttft_s=ttft, tpot_s=tpot, e2e_latency_s=e2e,
            ue_prefill_s=ue_pre, uplink_prefill_s=ul_pre.latency, edge_prefill_s=edge_pre, downlink_s=dl.latency,
            ue_decode_s=ue_dec, uplink_decode_s=ul_dec.latency, edge_decode_s=edge_dec,
            uplink_rate_bps=ul_pre.rate, uplink_bler=ul_pre.bler,
            downlink_rate_bps=dl.rate, downlink_bler=dl.bler,
            uplink_loss_probability=ul_loss,
            prompt_bytes=prompt_bytes.copy(), bytes_per_token=self._decode_bytes.copy(),
            downlink_bytes_per_token=self._dl_bytes.copy(), bytes_on_air=on_air.astype(np.int64),
            ue_flops_prefill=ue_flops, edge_flops_prefill=edge_flops,
            ue_compute_energy_j=link.e_compute, ue_radio_energy_j=link.e_radio, ue_idle_energy_j=e_idle,
            ue_energy_j=e_total, ue_energy_prefill_j=e_pre, ue_energy_decode_j_per_token=e_step,
            ue_energy_j_per_token=e_total / N, edge_energy_j_per_token=edge_energy,
            ue_weight_bytes=w_bytes, ue_kv_bytes=kv_bytes, ue_memory_bytes=mem,
            fits_ue_memory=mem <= p.memory_budget_bytes,
        )
        # Tables are shared through the cache (an RL env revisits the same quantised states), so
        # their arrays are made read-only: a caller cannot corrupt another caller's result.
        for name, kind in _ROW_SPEC:
            if kind is not None:
                getattr(table, name).flags.writeable = False
        table.split.flags.writeable = False
        if self.cache_size > 0:
            if len(self._cache) >= self.cache_size:
                self._cache.pop(next(iter(self._cache)))  # drop the oldest entry (FIFO)
            self._cache[key] = table
        return table

    def transfer_s(self, nbytes: int, snr_db: float, direction: str = "uplink") -> float:
        """Expected latency of ONE transfer of ``nbytes`` at ``snr_db`` — the closed form the per-split
        estimates use (serialisation at the adapted rate, propagation, protocol overhead, HARQ).

        This is what an emulated air interface waits before releasing a frame (`splitrl.deploy`).
        """
        if direction not in ("uplink", "downlink"):
            raise UsageError(f"direction must be 'uplink' or 'downlink', got {direction!r}")
        nbytes = int(nbytes)
        if nbytes <= 0:
            return 0.0
        rates, blers = self._options(float(snr_db), direction)
        h = self.link.harq
        ek = _expected_retransmissions(blers, h.max_retransmissions)
        overhead = self.link.uplink_overhead_s if direction == "uplink" else self.link.downlink_overhead_s
        n_blocks = math.ceil(nbytes / h.transport_block_bytes)
        with np.errstate(divide="ignore"):
            ser = np.where(rates > 0, 8.0 * nbytes / np.maximum(rates, 1e-300), np.inf)
        latency = ser + self._prop_s + overhead + ek * (ser + n_blocks * h.harq_rtt_s)
        return float(np.min(latency))

    def estimate(self, split: int, snr_db: float, prompt_tokens: int, new_tokens: int | None = None) -> CostEstimate:
        """Costs of one split (see `CostEstimate`); ``new_tokens=None`` means one new token."""
        if isinstance(split, bool) or not isinstance(split, (int, np.integer)) or not 0 <= split <= self.num_layers:
            raise UsageError(f"split = {split!r}: must be an integer in [0, {self.num_layers}]")
        # All splits cost the same handful of vector ops as one (L+1 is small), so one code path
        # serves both and `estimate(s)` can never drift from `estimate_all()[s]`.
        return self.estimate_all(snr_db, prompt_tokens, new_tokens).row(int(split))

    def ue_memory_bytes(self, context_tokens: int) -> NDArray[np.int64]:
        """UE memory (weights + KV cache of ``context_tokens`` positions) for every split."""
        if isinstance(context_tokens, bool) or not isinstance(context_tokens, (int, np.integer)) or context_tokens < 0:
            raise UsageError(f"context_tokens = {context_tokens!r}: must be an integer >= 0")
        return (np.round(self._ue.weight_resident) + np.round(self._ue_kv_token * context_tokens)).astype(np.int64)

    def feasible_splits(self, context_tokens: int) -> NDArray[np.int64]:
        """Splits whose UE memory at ``context_tokens`` fits the UE's memory budget."""
        return np.flatnonzero(self.ue_memory_bytes(context_tokens) <= self.ue.memory_budget_bytes)

    def _check(self, snr_db: float, prompt_tokens: int, new_tokens: int | None) -> tuple[float, int, int]:
        try:
            snr = float(snr_db)
        except (TypeError, ValueError):
            raise UsageError(f"snr_db = {snr_db!r}: must be a finite number") from None
        if not math.isfinite(snr):
            raise UsageError(f"snr_db = {snr_db!r}: must be a finite number")
        if isinstance(prompt_tokens, bool) or not isinstance(prompt_tokens, (int, np.integer)) or prompt_tokens < 1:
            raise UsageError(f"prompt_tokens = {prompt_tokens!r}: must be an integer >= 1")
        n = 1 if new_tokens is None else new_tokens
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise UsageError(f"new_tokens = {new_tokens!r}: must be None or an integer >= 1")
        return snr, int(prompt_tokens), int(n)

    def __repr__(self) -> str:
        prec = "" if self.ue_precision is None else f", ue_precision={self.ue_precision!r}"
        return (f"CostModel(L={self.num_layers}, ue={self.ue.name!r}, edge={self.edge.name!r}, "
                f"link={self.link.name!r}, codec={self.codec.name!r}{prec})")


def emulate_report(report: Any, cost_model: CostModel, snr_db: float) -> dict[str, Any]:
    """Emulated figures for a request the runtime actually ran; also stored in ``report.emulated``.

    Uses the report's prompt/new token counts and its split (``report.cuts``: one cut point, or
    several equal ones). Returns ``ttft_s``, ``tpot_s``, ``e2e_latency_s``, ``ue_energy_j_per_token``,
    ``ue_memory_bytes``, ``fits_ue_memory``, ``bytes_on_air`` (uplink + downlink), ``uplink_bytes``,
    ``downlink_bytes``, ``split``, ``snr_db`` and the profile/codec names.
    """
    cuts = list(report.cuts)
    if not cuts or len(set(cuts)) != 1:
        raise UsageError(
            f"emulate_report models one UE/edge split; the report has cut points {cuts} "
            "(multi-hop partitions are not covered by CostModel)"
        )
    split = int(cuts[0])
    if split > cost_model.num_layers:
        raise UsageError(f"report split {split} exceeds the cost model's {cost_model.num_layers} layers")
    est = cost_model.estimate(split, snr_db, int(report.prompt_tokens), int(report.new_tokens))
    uplink = est.prompt_bytes + (est.new_tokens - 1) * est.bytes_per_token
    downlink = est.new_tokens * est.downlink_bytes_per_token
    out: dict[str, Any] = {
        "split": split,
        "snr_db": est.snr_db,
        "ttft_s": est.ttft_s,
        "tpot_s": est.tpot_s,
        "e2e_latency_s": est.e2e_latency_s,
        "ue_energy_j_per_token": est.ue_energy_j_per_token,
        "ue_memory_bytes": est.ue_memory_bytes,
        "fits_ue_memory": est.fits_ue_memory,
        "bytes_on_air": est.bytes_on_air,
        "uplink_bytes": int(uplink),
        "downlink_bytes": int(downlink),
        "ue_profile": cost_model.ue.name,
        "edge_profile": cost_model.edge.name,
        "link_profile": cost_model.link.name,
        "codec": cost_model.codec.name,
    }
    if cost_model.ue_precision is not None:
        out["ue_precision"] = cost_model.ue_precision
    report.emulated.update(out)
    return out
