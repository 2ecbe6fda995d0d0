"""Pricing tensor parallelism (split *within* layers) and weight streaming, next to the layer split.

For a device set and the links between them this module estimates, per generated token:

* **within layers** (TPI-LLM): every device computes its share of every layer (shares follow
  the plan's ratios); 2·L all-reduces of one hidden row each plus one broadcast from the master.
  All-reduce time per algorithm with per-message latency ``a`` and rate ``R`` for ``B`` bytes
  over ``N`` devices:

  ====== ============================================ =========================================
  kind   time                                         why
  ====== ============================================ =========================================
  star   2 (a + B / R)                                workers -> master in parallel, master -> all
  star*  2 a + 2 (N - 1) B / R                        the same on one shared medium (``shared_medium``)
  ring   2 (N - 1) (a + B / (N R))                    reduce-scatter + all-gather
  tree   2 ceil(log2 N) (a + B / R)                   reduce + broadcast along a binary tree
  ====== ============================================ =========================================

  The star needs 2 message latencies whatever N, the ring 2(N-1): when the link latency
  dominates (edge devices on Wi-Fi) the star wins — TPI-LLM's argument.
* **between layers** (one request, pipeline of contiguous layer ranges): the devices run one
  after another, so per-token time is the sum of each range's compute plus one hidden-state hop
  per cut (no speed-up for a single stream; the gain is memory).
* **stream weights** (the sliding-window scheduler): a device holds ``window`` blocks; loading a
  block takes ``block_bytes / disk_bytes_per_s``; with ``window >= 2`` it overlaps the compute and
  communication of the block before it, so the stall per block is ``max(0, load - busy)``
  (``load`` whole with ``window == 1``).

Units: seconds, bytes, FLOP. Inputs are plain numbers (or `splitrl.cost` profiles via
`TPDevice.from_profile`), so environments and the controller can call it per slot.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from splitrl.errors import UsageError

__all__ = [
    "ALLREDUCE_MODELS", "TPDevice", "TPLink", "TPModelShape", "TensorParallelCost", "allreduce_time_s",
    "allreduce_messages",
]

ALLREDUCE_MODELS = ("star", "ring", "tree", "engine")


def allreduce_messages(kind: str, n: int) -> int:
    """Sequential message latencies one all-reduce pays (``engine`` is priced as gloo's ring)."""
    if n <= 1:
        return 0
    if kind == "star":
        return 2
    if kind in ("ring", "engine"):
        return 2 * (n - 1)
    if kind == "tree":
        return 2 * math.ceil(math.log2(n))
    raise UsageError(f"allreduce kind: {kind!r}; allowed: {', '.join(ALLREDUCE_MODELS)}")


def allreduce_time_s(kind: str, n: int, nbytes: float, latency_s: float, rate_bps: float | None,
                     *, shared_medium: bool = False) -> float:
    """Time of one all-reduce of ``nbytes`` per rank over ``n`` ranks (see the module table)."""
    if n <= 1:
        return 0.0
    if latency_s < 0 or (rate_bps is not None and rate_bps <= 0):
        raise UsageError("link: latency must be >= 0 and rate > 0")
    ser = 0.0 if rate_bps is None else 8.0 * nbytes / rate_bps  # one full payload on the air
    if kind == "star":
        return 2 * latency_s + (2 * (n - 1) * ser if shared_medium else 2 * ser)
    if kind in ("ring", "engine"):
        return 2 * (n - 1) * (latency_s + ser / n)
    if kind == "tree":
        return 2 * math.ceil(math.log2(n)) * (latency_s + ser)
    raise UsageError(f"allreduce kind: {kind!r}; allowed: {', '.join(ALLREDUCE_MODELS)}")


@dataclass(frozen=True)
class TPDevice:
    """A device's compute speed, memory and disk (for weight streaming)."""

    name: str
    flops_per_s: float
    memory_bytes: float = float("inf")
    disk_bytes_per_s: float = 1e9

    def __post_init__(self) -> None:
        if not self.flops_per_s > 0 or not self.disk_bytes_per_s > 0 or not self.memory_bytes > 0:
            raise UsageError(f"device {self.name}: flops_per_s, disk_bytes_per_s and memory_bytes must be > 0")

    @classmethod
    def from_profile(cls, profile: Any, *, disk_bytes_per_s: float = 1e9) -> "TPDevice":
        """From a `UEProfile` / `EdgeProfile` (effective FLOP/s; a UE's memory budget)."""
        flops = profile.flops_per_s or (profile.peak_flops_per_s * (profile.utilization or 1.0))
        mem = getattr(profile, "memory_budget_bytes", float("inf"))
        return cls(profile.name, float(flops), float(mem), float(disk_bytes_per_s))


@dataclass(frozen=True)
class TPLink:
    """The links between devices: per-message latency, rate, bytes per element on the wire."""

    latency_s: float = 1e-3
    rate_bps: float | None = 100e6
    bytes_per_element: float = 4.0
    shared_medium: bool = False

    def __post_init__(self) -> None:
        if self.latency_s < 0 or (self.rate_bps is not None and self.rate_bps <= 0) or self.bytes_per_element <= 0:
            raise UsageError("link: latency_s >= 0, rate_bps > 0 and bytes_per_element > 0 required")


@dataclass(frozen=True)
class TPModelShape:
    """What the estimate needs from a model: layers, hidden size, FLOPs and bytes per layer, head."""

    num_layers: int
    hidden_size: int
    layer_flops_per_token: float  # at the context length of interest
    layer_param_bytes: float
    head_flops_per_token: float
    master_param_bytes: float  # embeddings + head

    @classmethod
    def from_view(cls, view: Any, context: int = 128, bytes_per_param: float = 4.0) -> "TPModelShape":
        lc = view.layer_cost(0)
        master = view.embed_tokens.weight.numel() + (0 if getattr(view.config, "tie_word_embeddings", False)
                                                    else view.lm_head.weight.numel())
        return cls(view.num_layers, view.hidden_size, float(lc.flops_per_token(context)),
                   float(lc.params * bytes_per_param), float(view.head_flops_per_token()), float(master * bytes_per_param))


class TensorParallelCost:
    """Per-token latency and memory of within-layer, between-layer and streamed execution."""

    def __init__(self, shape: TPModelShape, devices: Sequence[TPDevice], link: TPLink,
                 ratios: Sequence[float] | None = None) -> None:
        if not devices:
            raise UsageError("devices: at least one")
        self.shape, self.devices, self.link = shape, list(devices), link
        if ratios is None:  # proportional to speed: every device finishes its share together
            tot = sum(d.flops_per_s for d in devices)
            ratios = [d.flops_per_s / tot for d in devices]
        if len(ratios) != len(devices) or any(r <= 0 for r in ratios):
            raise UsageError("ratios: one positive share per device")
        s = sum(ratios)
        self.ratios = [r / s for r in ratios]

    @property
    def n(self) -> int:
        return len(self.devices)

    def row_bytes(self) -> float:
        return self.shape.hidden_size * self.link.bytes_per_element

    def compute_s(self) -> float:
        """Compute per token: the slowest share of the layers, plus the head on the master."""
        L, f = self.shape.num_layers, self.shape.layer_flops_per_token
        layer = max(r * L * f / d.flops_per_s for r, d in zip(self.ratios, self.devices))
        return layer + self.shape.head_flops_per_token / self.devices[0].flops_per_s

    def comm_s(self, kind: str = "star") -> float:
        """2·L all-reduces of one hidden row plus the master's broadcast, per token."""
        lk = self.link
        ar = allreduce_time_s(kind, self.n, self.row_bytes(), lk.latency_s, lk.rate_bps, shared_medium=lk.shared_medium)
        bc = 0.0 if self.n == 1 else lk.latency_s + (0.0 if lk.rate_bps is None else 8 * self.row_bytes() / lk.rate_bps)
        return 2 * self.shape.num_layers * ar + bc

    def within_layers_s(self, kind: str = "star") -> float:
        return self.compute_s() + self.comm_s(kind)

    def one_device_s(self, device: int = 0) -> float:
        d = self.devices[device]
        return (self.shape.num_layers * self.shape.layer_flops_per_token + self.shape.head_flops_per_token) / d.flops_per_s

    def between_layers_s(self) -> float:
        """Layers split into contiguous ranges by the ratios, run one after another (one stream)."""
        L, f = self.shape.num_layers, self.shape.layer_flops_per_token
        t = sum(r * L * f / d.flops_per_s for r, d in zip(self.ratios, self.devices))
        lk = self.link
        hop = lk.latency_s + (0.0 if lk.rate_bps is None else 8 * self.row_bytes() / lk.rate_bps)
        return t + self.shape.head_flops_per_token / self.devices[-1].flops_per_s + (self.n - 1) * hop

    def crossover_latency_s(self, kind: str = "star") -> float:
        """Per-message link latency below which within-layer TP beats one device (inf/0 at the extremes)."""
        msgs = 2 * self.shape.num_layers * allreduce_messages(kind, self.n) + (1 if self.n > 1 else 0)
        base = self.within_layers_s(kind) - msgs * self.link.latency_s  # the latency-free part
        gain = self.one_device_s() - base
        if msgs == 0:
            return math.inf if gain >= 0 else 0.0
        return max(0.0, gain / msgs)

    # -- memory and streaming -----------------------------------------------------------------
    def weight_bytes(self, device: int, window: int = 0) -> float:
        """Weights resident on ``device``: its share of all layers, or ``window`` of its 2·L blocks."""
        share = self.ratios[device] * self.shape.layer_param_bytes
        master = self.shape.master_param_bytes if device == 0 else 0.0
        if window and window < 2 * self.shape.num_layers:
            return window * share / 2 + master  # a block is half a layer (attention or FFN) on average
        return self.shape.num_layers * share + master

    def stream_stall_s(self, device: int, window: int, kind: str = "star") -> float:
        """Expected stall per token from streaming ``device``'s blocks with ``window`` resident."""
        blocks = 2 * self.shape.num_layers
        load = (self.ratios[device] * self.shape.layer_param_bytes / 2) / self.devices[device].disk_bytes_per_s
        busy = self.within_layers_s(kind) / blocks
        return blocks * (load if window <= 1 else max(0.0, load - busy))

    def compare(self, kind: str = "star", window: int = 0) -> dict[str, Any]:
        """The options side by side (seconds per token, peak weight bytes per device)."""
        return {
            "one_device_s": self.one_device_s(),
            "between_layers_s": self.between_layers_s(),
            "within_layers_s": self.within_layers_s(kind),
            "within_layers_streamed_s": self.within_layers_s(kind) + max(
                self.stream_stall_s(i, window, kind) for i in range(self.n)) if window else self.within_layers_s(kind),
            "comm_s": self.comm_s(kind),
            "crossover_latency_s": self.crossover_latency_s(kind),
            "weight_bytes": [self.weight_bytes(i, window) for i in range(self.n)],
            "fits": [self.weight_bytes(i, window) <= d.memory_bytes for i, d in enumerate(self.devices)],
        }
