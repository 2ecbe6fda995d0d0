"""The cost of a K-stage pipeline (ring): per-stage decode times, bytes and air time per hop, memory, energy.

`CostModel` prices one UE/edge split; this module prices a ring of K devices, each running a
contiguous layer range, with stage 0 (the starter) also running the embeddings and the head and
K hops (stage k -> k+1, the last one back to the starter). It reuses `ModelCosts` and the device
roofline of `splitrl.cost.model` per layer, and the link profile's `LatencyModel` per hop:

* stage time per decoded token at context ``c`` on device ``d`` for layers ``[i, j)``:
  ``max(FLOPs / flops_per_s, bytes / bandwidth) + (j - i) * layer_overhead_s`` where FLOPs and
  bytes are the sums over its layers (weights streamed once, KV of ``c`` positions read), plus the
  embedding row and the head on the starter. Measured per-layer times (``splitrl profile`` or
  `measure_stage_times`) can replace the roofline: `DeviceTimes`.
* hop time: the expected latency of one decode activation frame (the codec's exact bytes for
  ``[1, 1, H]``) at the hop's SNR: serialisation, overhead, HARQ (`LatencyModel.expected`).
* memory: weights held (its layers, plus embeddings and the untied head on the starter) at the
  device's weight dtype + the KV cache of ``samples`` sequences of ``context`` positions.
* energy per token: compute power x stage time + the radio's transmit power x the hop's air time
  for devices with a radio (UE profiles).
* throughput with S samples in flight (recurrent pipeline parallelism): one token of a sample
  needs a full round ``T_round = sum(stage) + sum(hop)``; stages and hops are separate resources,
  so ``Θ(S) = min(S / T_round, 1 / max stage, 1 / max hop)`` tokens/s.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from splitrl.cost.model import ModelCosts
from splitrl.cost.profiles import EdgeProfile, LinkProfile, UEProfile, load_profile
from splitrl.link.codec import get_codec
from splitrl.errors import UsageError

__all__ = ["DeviceTimes", "PipelineCostModel", "PipelineEstimate", "measure_decode_times", "ring_throughput"]


def ring_throughput(samples: int, stage_s: Sequence[float], hop_s: Sequence[float]) -> float:
    """Closed-form tokens/s of a ring with fixed times: min(S / T_round, 1 / max stage, 1 / max hop)."""
    stage, hop = np.asarray(stage_s, float), np.asarray(hop_s, float)
    t_round = float(stage.sum() + hop.sum())
    bottleneck = float(max(stage.max(initial=0.0), hop.max(initial=0.0)))
    if t_round <= 0:
        return float("inf")
    return min(samples / t_round, 1.0 / bottleneck if bottleneck > 0 else float("inf"))


@dataclass(frozen=True)
class DeviceTimes:
    """Measured (or scaled) decode times of one device: per layer ``[L]``, embedding and head per token.

    Attributes:
        name: device name.
        layer_s: seconds per decoded token per layer (at the context of the measurement).
        embed_s, head_s: seconds per token of the embedding lookup and of norm + lm_head.
    """

    name: str
    layer_s: tuple[float, ...]
    embed_s: float
    head_s: float

    def scaled(self, factor: float, name: str) -> "DeviceTimes":
        """Times of a device ``factor`` times faster."""
        return DeviceTimes(name, tuple(t / factor for t in self.layer_s), self.embed_s / factor, self.head_s / factor)


@dataclass
class PipelineEstimate:
    """What a cut vector costs on a device ring (per decoded token unless said otherwise)."""

    cuts: list[int]
    devices: list[str]
    layers: list[tuple[int, int]]
    stage_s: list[float]
    hop_s: list[float]
    hop_bytes: list[int]
    hop_air_s: list[float]
    memory_bytes: list[float]
    memory_budget_bytes: list[float]
    energy_j: list[float]
    round_s: float
    samples: int
    throughput_tok_s: float

    @property
    def memory_ok(self) -> bool:
        return all(m <= b for m, b in zip(self.memory_bytes, self.memory_budget_bytes))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["memory_ok"] = self.memory_ok
        d["memory_budget_bytes"] = [None if np.isinf(b) else b for b in self.memory_budget_bytes]
        return d

    def format(self) -> str:
        lines = [f"predicted: cuts {self.cuts}, S={self.samples}: {self.throughput_tok_s:.1f} tok/s "
                 f"(round {self.round_s * 1e3:.2f} ms)"]
        for k, dev in enumerate(self.devices):
            lines.append(
                f"  stage {k} {dev:>16} layers {self.layers[k][0]:>2}-{self.layers[k][1]:<3} "
                f"{self.stage_s[k] * 1e3:8.3f} ms  hop {self.hop_s[k] * 1e3:7.3f} ms {self.hop_bytes[k]:>6} B  "
                f"mem {self.memory_bytes[k] / 2**20:8.1f} MiB  {self.energy_j[k] * 1e3:7.3f} mJ/tok"
            )
        return "\n".join(lines)


def _load_device(name_or_profile: Any) -> UEProfile | EdgeProfile:
    if isinstance(name_or_profile, (UEProfile, EdgeProfile)):
        return name_or_profile
    try:
        return load_profile("ue", name_or_profile)  # type: ignore[return-value]
    except Exception:
        return load_profile("edge", name_or_profile)  # type: ignore[return-value]


class PipelineCostModel:
    """Per-stage / per-hop costs of any cut vector of one model over an ordered list of devices.

    Args:
        view: the model (`DecoderView` or `LoadedModel`), read once.
        devices: profiles (or shipped names) of the devices in ring order; device 0 is the starter.
        link_profile: the link every hop uses (profile or name), or one per hop (K of them).
        codec: activation codec on every hop.
        snr_db: SNR of every hop (default: each link's mean SNR from its link budget); a scalar or per hop.
        times: optional measured `DeviceTimes` per device, replacing the roofline compute model.
    """

    def __init__(
        self, view: Any, devices: Sequence[Any], link_profile: Any = "wifi6-20mhz", *, codec: str = "fp32",
        snr_db: float | Sequence[float] | None = None, times: Sequence[DeviceTimes] | None = None,
    ) -> None:
        view = getattr(view, "view", view)
        if not devices:
            raise UsageError("devices: at least one device profile")
        self.costs = ModelCosts.from_view(view)
        self.num_layers = self.costs.num_layers
        self.profiles = [_load_device(d) for d in devices]
        self.names = [p.name for p in self.profiles]
        links = list(link_profile) if isinstance(link_profile, (list, tuple)) else [link_profile] * len(devices)
        if len(links) != len(devices):
            raise UsageError(f"link_profile: one, or one per hop ({len(devices)}), got {len(links)}")
        self.links: list[LinkProfile] = [load_profile("link", lp) for lp in links]  # type: ignore[misc]
        self.codec = get_codec(codec)
        if snr_db is None:
            self.snr_db = [lp.mean_snr_db() for lp in self.links]
        elif np.isscalar(snr_db):
            self.snr_db = [float(snr_db)] * len(devices)  # type: ignore[arg-type]
        else:
            self.snr_db = [float(s) for s in snr_db]  # type: ignore[union-attr]
        if times is not None and len(times) != len(devices):
            raise UsageError(f"times: one DeviceTimes per device ({len(devices)}), got {len(times)}")
        self.times = list(times) if times is not None else None
        c = self.costs
        cum = lambda x: np.concatenate([[0.0], np.cumsum(x)])  # noqa: E731  cum(x)[s] = sum_{i<s} x_i
        self._c_params, self._c_base = cum(c.layer_params), cum(c.layer_flops_base)
        self._c_ctx, self._c_kv = cum(c.layer_flops_per_ctx), cum(c.layer_kv_elements)
        if self.times is not None:
            self._c_time = [cum(np.asarray(t.layer_s, float)) for t in self.times]
            for t in self.times:
                if len(t.layer_s) != self.num_layers:
                    raise UsageError(f"times[{t.name}]: {len(t.layer_s)} layer times for {self.num_layers} layers")

    # ---- pieces ---------------------------------------------------------------------------------
    def stage_time(self, device: int, start: int, stop: int, context: int, *, starter: bool) -> float:
        """Seconds for ``device`` to process one decode token through layers ``[start, stop)`` (+ embed/head)."""
        if self.times is not None:
            t = self.times[device]
            s = float(self._c_time[device][stop] - self._c_time[device][start])
            return s + (t.embed_s + t.head_s if starter else 0.0)
        p, c = self.profiles[device], self.costs
        wb, kvb = p.weight_bytes_per_param, p.kv_bytes_per_element
        flops = (self._c_base[stop] - self._c_base[start]) + (self._c_ctx[stop] - self._c_ctx[start]) * context
        nbytes = (self._c_params[stop] - self._c_params[start]) * wb + (self._c_kv[stop] - self._c_kv[start]) * context * kvb
        n_over = stop - start
        if starter:
            flops += c.embed_flops_per_token + c.head_flops_per_token
            nbytes += c.embed_row_elements * wb + c.head_params_read * wb
            n_over += 1
        t = flops / p.flops_per_s
        if p.memory_bandwidth_bytes_per_s is not None:
            t = max(t, nbytes / p.memory_bandwidth_bytes_per_s)
        return float(t + n_over * p.layer_overhead_s)

    def hop_bytes(self) -> int:
        """On-air bytes of one decode activation ``[1, 1, H]`` (every hop, the return hop included)."""
        return int(self.codec.nbytes((1, 1, self.costs.hidden_size)))

    def hop_time(self, hop: int, snr_db: float | None = None, nbytes: int | None = None) -> tuple[float, float]:
        """(expected latency, expected air time) of one decode frame on hop ``hop`` at ``snr_db``."""
        lp = self.links[hop]
        snr = self.snr_db[hop] if snr_db is None else float(snr_db)
        rm = lp.rate_model()
        rate = float(rm.rate_bps(snr))
        bler = rm.bler(snr)
        bler = lp.rate.residual_bler if bler is None else float(bler)
        b = self.hop_bytes() if nbytes is None else int(nbytes)
        br = lp.latency_model("uplink").expected(b, rate, bler)
        if not np.isfinite(br.total_s):  # outage (no rate): nothing gets through
            return float("inf"), float("inf")
        ek = br.retransmissions / br.n_blocks if br.n_blocks else 0.0  # expected retransmissions per block
        return float(br.total_s), float(br.serialisation_s * (1.0 + ek))

    def memory(self, device: int, start: int, stop: int, context: int, samples: int, *, starter: bool) -> float:
        """Bytes ``device`` holds: its weights and the KV cache of ``samples`` sequences of ``context`` positions."""
        p, c = self.profiles[device], self.costs
        params = self._c_params[stop] - self._c_params[start]
        if starter:
            params += c.embed_params + c.head_params_resident
        kv = (self._c_kv[stop] - self._c_kv[start]) * context * samples
        return float(params * p.weight_bytes_per_param + kv * p.kv_bytes_per_element)

    def memory_budget(self, device: int) -> float:
        return float(getattr(self.profiles[device], "memory_budget_bytes", np.inf))

    # ---- whole ring -------------------------------------------------------------------------------
    def estimate(self, cuts: Sequence[int], *, context: int = 128, samples: int = 1,
                 snr_db: Sequence[float] | None = None) -> PipelineEstimate:
        """Costs of ``cuts`` (K-1 cut points over the first K devices) with ``samples`` in flight."""
        cuts = [int(x) for x in cuts]
        K = len(cuts) + 1
        if K > len(self.profiles):
            raise UsageError(f"cuts: {K} stages but only {len(self.profiles)} devices")
        bounds = [0, *cuts, self.num_layers]
        if any(b < a for a, b in zip(bounds, bounds[1:])) or bounds[0] < 0 or cuts and cuts[-1] > self.num_layers:
            raise UsageError(f"cuts must be non-decreasing in 0..{self.num_layers}, got {cuts}")
        layers = [(bounds[k], bounds[k + 1]) for k in range(K)]
        stage = [self.stage_time(k, a, b, context, starter=(k == 0)) for k, (a, b) in enumerate(layers)]
        if K > 1:
            hops = [self.hop_time(k, None if snr_db is None else snr_db[k]) for k in range(K)]
        else:
            hops = [(0.0, 0.0)]
        hop_s, air_s = [h[0] for h in hops], [h[1] for h in hops]
        mem = [self.memory(k, a, b, context, samples, starter=(k == 0)) for k, (a, b) in enumerate(layers)]
        energy = []
        for k in range(K):
            p = self.profiles[k]
            e = p.compute_power_w * stage[k]
            if isinstance(p, UEProfile) and K > 1:
                e += p.radio_tx_power_w(self.links[k].tx_power_w) * air_s[k]
            energy.append(float(e))
        return PipelineEstimate(
            cuts=cuts, devices=self.names[:K], layers=layers, stage_s=stage, hop_s=hop_s,
            hop_bytes=[self.hop_bytes() if K > 1 else 0] * K, hop_air_s=air_s, memory_bytes=mem,
            memory_budget_bytes=[self.memory_budget(k) for k in range(K)], energy_j=energy,
            round_s=float(sum(stage) + sum(hop_s)), samples=int(samples),
            throughput_tok_s=ring_throughput(samples, stage, hop_s),
        )


def measure_decode_times(view: Any, *, context: int = 64, steps: int = 16, warmup: int = 2, name: str = "this-machine",
                         seed: int = 0) -> DeviceTimes:
    """Time one decoded token per layer, the embedding and the head on this machine (current torch threads).

    A random prompt of ``context`` tokens is prefilled, then ``warmup + steps`` tokens are decoded
    one layer at a time; the median over ``steps`` of each layer's time is kept (context grows from
    ``context`` to ``context + steps``, as in real decoding).
    """
    import time

    import torch
    from transformers.cache_utils import DynamicCache

    view = getattr(view, "view", view)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, view.vocab_size, (1, context), generator=g)  # [1, T]
    cache = DynamicCache(config=view.config)
    L = view.num_layers
    per_layer: list[list[float]] = [[] for _ in range(L)]
    embed_t, head_t = [], []
    with torch.inference_mode():
        pos = torch.arange(context).unsqueeze(0)
        h = view.run_layers(view.embed(ids, pos), 0, L, pos, cache=cache)
        tok = view.head(h[:, -1, :]).argmax(-1, keepdim=True)  # [1, 1]
        for step in range(warmup + steps):
            p = torch.tensor([[context + step]])
            t0 = time.perf_counter()
            h = view.embed(tok, p)
            t_embed = time.perf_counter() - t0
            times = []
            for i in range(L):
                t0 = time.perf_counter()
                h = view.run_layers(h, i, i + 1, p, cache=cache)
                times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            tok = view.head(h[:, -1, :]).argmax(-1, keepdim=True)
            t_head = time.perf_counter() - t0
            if step >= warmup:
                embed_t.append(t_embed)
                head_t.append(t_head)
                for i in range(L):
                    per_layer[i].append(times[i])
    med = lambda x: float(np.median(x))  # noqa: E731
    return DeviceTimes(name, tuple(med(t) for t in per_layer), med(embed_t), med(head_t))
