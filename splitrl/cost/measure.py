"""Measure this machine: per-layer prefill times, a fitted effective FLOP/s, and a UE profile YAML.

Owns `measure_layer_times` and its `ProfileResult`. Each decoder layer and the head are timed with
torch (``torch.inference_mode``, warm-up calls, median of repeats) on a prefill of ``T`` tokens for
each context length. The times are fitted against the analytic FLOPs of `DecoderView.layer_cost`
with the same model the cost model uses, ``t = layer_overhead_s + FLOPs / flops_per_s`` (non-negative
least squares, one point per layer/head and context length); the plain through-origin fit
``t = FLOPs / R`` is kept too. A streaming copy measures the sustained memory bandwidth.

The YAML written by `ProfileResult.write_yaml` is a UE profile (``name: this-machine``) that
``load_profile("ue", path)`` loads: measured compute figures plus the raw timings under
``measurement``. Power and radio figures cannot be measured here; they are copied from a shipped
profile (``power_like``) and the description says so. `splitrl.cost.profiles.time_scale` turns
times measured here into times on an emulated device.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import yaml
from scipy.optimize import nnls

from splitrl.cost.model import ModelCosts
from splitrl.cost.profiles import UEProfile, load_profile, profile_from_dict
from splitrl.models.view import DecoderView
from splitrl.quant import check_precision
from splitrl.errors import UsageError

__all__ = ["ProfileResult", "fit_quality", "measure_layer_times", "measure_memory_bandwidth", "measure_precision_rates",
           "physical_memory_bytes"]

_DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
_FLOP_SCALE = 1e9  # fit in GFLOP units so the two NNLS columns have comparable magnitudes


@dataclass
class ProfileResult:
    """What `measure_layer_times` measured and fitted.

    Attributes:
        model: model name (or class name when unknown).
        family, num_layers, hidden_size, vocab_size, dtype: the measured model.
        context_lengths: prefill lengths timed.
        repeats, warmup, threads: timing settings.
        layer_times_s: median seconds per (context, layer), ``[len(context_lengths)][num_layers]``.
        head_times_s: median seconds of the head on all ``T`` positions, per context.
        layer_flops, head_flops: analytic FLOPs of the same calls.
        flops_per_s: fitted effective FLOP/s (slope of the overhead + FLOPs fit).
        layer_overhead_s: fitted fixed time per layer call (intercept, >= 0).
        flops_per_s_through_origin: the fit ``t = FLOPs / R`` without overhead.
        fit_r2: coefficient of determination of the overhead + FLOPs fit.
        memory_bandwidth_bytes_per_s: measured streaming-copy bandwidth, or None if not measured.
        memory_bytes: physical memory of this machine, or None if unknown.
        machine: platform description (processor, cores, torch version).
    """

    model: str
    family: str
    num_layers: int
    hidden_size: int
    vocab_size: int
    dtype: str
    context_lengths: list[int]
    repeats: int
    warmup: int
    threads: int
    layer_times_s: list[list[float]]
    head_times_s: list[float]
    layer_flops: list[list[float]]
    head_flops: list[float]
    flops_per_s: float
    layer_overhead_s: float
    flops_per_s_through_origin: float
    fit_r2: float
    memory_bandwidth_bytes_per_s: float | None
    memory_bytes: int | None
    machine: dict[str, Any] = field(default_factory=dict)
    precision_rates: dict[str, Any] | None = None  # `measure_precision_rates`, when asked for

    def to_profile_dict(
        self, *, name: str = "this-machine", power_like: str | UEProfile = "phone-midrange"
    ) -> dict[str, Any]:
        """A UE profile mapping: measured compute, power/radio copied from ``power_like``."""
        ref: UEProfile = load_profile("ue", power_like)  # type: ignore[assignment]
        budget = self.memory_bytes if self.memory_bytes else ref.memory_budget_bytes
        data: dict[str, Any] = {
            "kind": "ue",
            "name": name,
            "description": (
                f"this machine ({self.machine.get('processor') or self.machine.get('machine', '?')}, "
                f"{self.threads} torch threads), measured with {self.model} {self.dtype}; "
                f"power and radio figures copied from {ref.name!r}, not measured"
            ),
            "flops_per_s": float(self.flops_per_s),
            "layer_overhead_s": float(self.layer_overhead_s),
            "weight_dtype": self.dtype,
            "kv_dtype": self.dtype,
            "memory_budget_bytes": float(budget),
            "compute_power_w": ref.compute_power_w,
            "idle_power_w": ref.idle_power_w,
            "pa_efficiency": ref.pa_efficiency,
            "tx_circuit_power_w": ref.tx_circuit_power_w,
            "rx_power_w": ref.rx_power_w,
        }
        if self.memory_bandwidth_bytes_per_s is not None:
            data["memory_bandwidth_bytes_per_s"] = float(self.memory_bandwidth_bytes_per_s)
        if self.precision_rates is not None:
            data["precision_rates"] = {p: {k: float(v) for k, v in r.items()}
                                       for p, r in self.precision_rates["precision_rates"].items()}
        raw = _plain(asdict(self))
        data["measurement"] = {k: raw[k] for k in (
            "model", "family", "num_layers", "hidden_size", "vocab_size", "dtype", "context_lengths",
            "repeats", "warmup", "threads", "layer_times_s", "head_times_s", "layer_flops", "head_flops",
            "flops_per_s_through_origin", "fit_r2", "memory_bytes", "machine", "precision_rates",
        )}
        return data

    def to_ue_profile(self, *, name: str = "this-machine", power_like: str | UEProfile = "phone-midrange") -> UEProfile:
        return profile_from_dict("ue", self.to_profile_dict(name=name, power_like=power_like))  # type: ignore[return-value]

    def write_yaml(self, path: str | Path, *, name: str = "this-machine",
                   power_like: str | UEProfile = "phone-midrange") -> Path:
        """Write the UE profile YAML (validated first, so a written file always loads)."""
        data = self.to_profile_dict(name=name, power_like=power_like)
        profile_from_dict("ue", data, where=str(path))
        path = Path(path)
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        header = (
            f"# Measured by `splitrl profile` on {self.machine.get('date', '?')}: prefill timings of "
            f"{self.model} ({self.dtype}), contexts {self.context_lengths}, median of {self.repeats}.\n"
            "# flops_per_s and layer_overhead_s: non-negative least squares of\n"
            "#   t = layer_overhead_s + FLOPs / flops_per_s over every (layer | head, context) call;\n"
            "# memory_bandwidth_bytes_per_s: streaming copy (read + write bytes / time).\n"
            "# Power and radio fields are NOT measured (see description).\n"
        )
        path.write_text(header + yaml.safe_dump(data, sort_keys=False, default_flow_style=None), encoding="utf-8")
        return path


def _plain(obj: Any) -> Any:
    """Builtin types only (numpy scalars, str subclasses such as torch's version), for safe YAML."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj)
    if isinstance(obj, str):
        return str(obj)
    return obj


@contextmanager
def _torch_threads(n: int | None) -> Iterator[int]:
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def _median_time(fn, warmup: int, repeats: int, sync=None) -> tuple[float, Any]:
    """Median wall time of ``fn()``; ``sync`` waits for asynchronous devices (CUDA) before the clock stops."""
    out = None
    for _ in range(warmup):
        out = fn()
    if sync is not None:
        sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


@torch.inference_mode()
def measure_precision_rates(loaded_model, precisions: Sequence[str], *, context: int = 128, repeats: int = 3,
                            warmup: int = 1, threads: int | None = None) -> dict[str, Any]:
    """This machine's ``precision_rates`` (`splitrl.cost.profiles`), measured with the real kernels.

    For each precision the whole model runs (a) a prefill of ``context`` tokens through every layer
    and the head and (b) one decode step after it. ``compute`` is fp32's prefill time over the
    precision's (the factor on the fp32-fitted FLOP/s); ``memory`` is the effective bandwidth
    factor of a decode step, ``(bytes_p / bytes_fp32) * (t_fp32 / t_p)``, with the bytes of
    `splitrl.cost.model.ModelCosts.precision_bytes` (what the runtime stores). fp32 is 1, 1.
    """
    from transformers.cache_utils import DynamicCache

    view: DecoderView = getattr(loaded_model, "view", loaded_model)
    names = ["fp32"] + [check_precision(p, "--precisions") for p in precisions if p != "fp32"]
    costs = ModelCosts.from_view(view)
    L = view.num_layers
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, view.vocab_size, (1, context), generator=gen)
    pos = torch.arange(context).unsqueeze(0)
    nxt = torch.tensor([[context]])
    raw: dict[str, dict[str, float]] = {}
    with _torch_threads(threads):
        for p in names:
            def prefill(p=p):
                return view.head(view.run_layers(view.embed(ids, pos, p), 0, L, pos, precision=p)[:, -1:], p)

            def decode(p=p):
                cache = DynamicCache(config=view.config)
                view.run_layers(view.embed(ids, pos, p), 0, L, pos, cache, precision=p)
                t0 = time.perf_counter()
                view.head(view.run_layers(view.embed(ids[:, -1:], nxt, p), 0, L, nxt, cache, precision=p), p)
                return time.perf_counter() - t0

            t_prefill, _ = _median_time(prefill, warmup, repeats)
            for _ in range(warmup):
                decode()
            t_decode = statistics.median(decode() for _ in range(repeats))
            layers, _, row, head_read, _ = costs.precision_bytes(p)
            raw[p] = {"prefill_s": t_prefill, "decode_step_s": t_decode,
                      "decode_bytes": float(layers.sum() + row + head_read)}
    base = raw["fp32"]
    rates = {p: {"compute": base["prefill_s"] / r["prefill_s"],
                 "memory": (r["decode_bytes"] / base["decode_bytes"]) * (base["decode_step_s"] / r["decode_step_s"])}
             for p, r in raw.items()}
    return {"precision_rates": rates, "context": context, "repeats": repeats, "timings": raw}


def physical_memory_bytes() -> int | None:
    """Total physical memory (POSIX sysconf), or None where it cannot be read."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def measure_memory_bandwidth(nbytes: int = 64 << 20, repeats: int = 5) -> float:
    """Sustained bandwidth of a streaming copy of ``nbytes`` (bytes read + written per second)."""
    n = max(int(nbytes) // 4, 1)
    src = torch.ones(n, dtype=torch.float32)
    dst = torch.empty_like(src)
    t, _ = _median_time(lambda: dst.copy_(src), warmup=1, repeats=max(int(repeats), 1))
    return 2.0 * n * 4 / max(t, 1e-12)


def _fit(flops: np.ndarray, times: np.ndarray) -> tuple[float, float, float, float]:
    """(flops_per_s, overhead_s, through-origin flops_per_s, r2) of t = o + F / R."""
    origin = float(np.dot(flops, flops) / np.dot(flops, times))
    A = np.column_stack([np.ones_like(flops), flops / _FLOP_SCALE])
    (o, slope), _ = nnls(A, times)
    if slope <= 0.0:
        # Time does not grow with FLOPs at these sizes (all overhead): the slope is unidentifiable,
        # so fall back to the through-origin rate, which still reproduces the mean time per FLOP.
        rate, o = origin, 0.0
        pred = flops / rate
    else:
        rate = _FLOP_SCALE / slope
        pred = o + flops / rate
    ss_tot = float(np.sum((times - times.mean()) ** 2))
    r2 = 1.0 - float(np.sum((times - pred) ** 2)) / ss_tot if ss_tot > 0 else 1.0
    return rate, float(o), origin, r2


@torch.inference_mode()
def measure_layer_times(
    loaded_model: Any,
    context_lengths: Sequence[int] = (64, 128, 256),
    repeats: int = 3,
    *,
    warmup: int = 1,
    threads: int | None = None,
    measure_bandwidth: bool = True,
    out: str | Path | None = None,
    name: str = "this-machine",
    power_like: str | UEProfile = "phone-midrange",
    seed: int = 0,
    progress: bool = False,
) -> ProfileResult:
    """Time every decoder layer and the head on a ``T``-token prefill for each ``T``; fit FLOP/s.

    Args:
        loaded_model: a `LoadedModel` or a `DecoderView`.
        context_lengths: prefill lengths ``T`` (each >= 1 and within the model's positions).
        repeats: timed calls per measurement (the median is kept); ``warmup`` untimed calls first.
        threads: torch CPU threads during the measurement (restored afterwards); None keeps the
            current setting.
        measure_bandwidth: also time a 64 MiB streaming copy for the memory bandwidth.
        out: when given, write the UE profile YAML there (see `ProfileResult.write_yaml`).
        name, power_like: profile name and the shipped UE profile whose power/radio figures are
            copied into the YAML.
        seed: seed of the random prompt token ids.
    """
    view, ctxs, dtype = _checked_inputs(loaded_model, context_lengths, repeats, warmup, threads)
    view.model.eval()
    gen = torch.Generator().manual_seed(seed)
    costs = [view.layer_cost(i) for i in range(view.num_layers)]
    head_fpt = view.head_flops_per_token()
    # CUDA kernels run asynchronously: without a synchronize the clock would time the launch only.
    sync = torch.cuda.synchronize if view.device.type == "cuda" else None

    layer_times: list[list[float]] = []
    layer_flops: list[list[float]] = []
    head_times: list[float] = []
    head_flops: list[float] = []
    from tqdm.auto import tqdm

    bar = tqdm(total=len(ctxs) * (view.num_layers + 1), desc="profile: timing layers", unit="layer",
               disable=not progress, leave=False)
    with _torch_threads(threads) as n_threads:
        for T in ctxs:
            row_t, row_f, t_head = _time_prefill(view, T, gen, costs, warmup, int(repeats), sync, bar)
            layer_times.append(row_t)
            layer_flops.append(row_f)
            head_times.append(t_head)
            head_flops.append(float(T * head_fpt))
        bar.close()
        bandwidth = measure_memory_bandwidth() if measure_bandwidth else None

    flops = np.array([f for row in layer_flops for f in row] + head_flops)
    times = np.array([t for row in layer_times for t in row] + head_times)
    rate, overhead, origin, r2 = _fit(flops, times)
    result = ProfileResult(
        model=str(getattr(loaded_model, "name", type(view.model).__name__)),
        family=view.family, num_layers=view.num_layers, hidden_size=view.hidden_size,
        vocab_size=view.vocab_size, dtype=dtype, context_lengths=ctxs, repeats=int(repeats),
        warmup=int(warmup), threads=int(n_threads), layer_times_s=layer_times, head_times_s=head_times,
        layer_flops=layer_flops, head_flops=head_flops, flops_per_s=rate, layer_overhead_s=overhead,
        flops_per_s_through_origin=origin, fit_r2=r2, memory_bandwidth_bytes_per_s=bandwidth,
        memory_bytes=physical_memory_bytes(), machine=_machine(),
    )
    if out is not None:
        result.write_yaml(out, name=name, power_like=power_like)
    return result


def _checked_inputs(loaded_model: Any, context_lengths: Sequence[int], repeats: int, warmup: int,
                    threads: int | None) -> tuple[DecoderView, list[int], str]:
    """The model's view, the context lengths and its dtype name; a clear error for any bad argument."""
    view: DecoderView = getattr(loaded_model, "view", loaded_model)
    if not isinstance(view, DecoderView):
        raise TypeError(f"loaded_model must be a LoadedModel or DecoderView, got {type(loaded_model).__name__}")
    ctxs = [int(t) for t in context_lengths]
    if not ctxs or any(t < 1 for t in ctxs):
        raise UsageError(f"context_lengths = {list(context_lengths)!r}: must be a non-empty list of integers >= 1")
    if view.max_positions and max(ctxs) > view.max_positions:
        raise UsageError(f"context length {max(ctxs)} exceeds the model's {view.max_positions} positions")
    if isinstance(repeats, bool) or int(repeats) < 1 or isinstance(warmup, bool) or int(warmup) < 0:
        raise UsageError(f"repeats = {repeats!r} must be >= 1 and warmup = {warmup!r} >= 0")
    if threads is not None and int(threads) < 1:
        raise UsageError(f"threads = {threads!r}: must be None or >= 1")
    dtype = _DTYPE_NAMES.get(view.dtype)
    if dtype is None:
        raise UsageError(f"model dtype {view.dtype} is not one of {sorted(str(d) for d in _DTYPE_NAMES)}")
    return view, ctxs, dtype


def _time_prefill(view: DecoderView, T: int, gen: torch.Generator, costs: list, warmup: int, repeats: int,
                  sync: Any, bar: Any) -> tuple[list[float], list[float], float]:
    """Median time and FLOPs of each layer on a random ``T``-token prefill, then the head's time."""
    ids = torch.randint(0, view.vocab_size, (1, T), generator=gen).to(view.device)  # [1, T]
    pos = torch.arange(T, device=view.device).unsqueeze(0)  # [1, T]
    hidden = view.embed(ids, pos)  # [1, T, H]
    kwargs = view.layer_context(hidden, pos, None, 0)
    row_t, row_f = [], []
    for i, layer in enumerate(view.layers):
        def call(layer=layer, h=hidden):
            y = layer(h, past_key_values=None, use_cache=False, **kwargs)
            return y[0] if isinstance(y, tuple) else y
        t, hidden = _median_time(call, warmup, repeats, sync)
        bar.update(1)
        row_t.append(t)
        # Prefill: token j attends to j positions, j = 1..T.
        lc = costs[i]
        row_f.append(float(T * lc.flops_per_token_base + lc.flops_per_token_per_ctx * T * (T + 1) / 2))
    t_head, _ = _median_time(lambda h=hidden: view.head(h), warmup, repeats, sync)
    bar.update(1)
    return row_t, row_f, t_head


def _machine() -> dict[str, Any]:
    """What the profile records of the machine it was measured on."""
    return {
        "processor": platform.processor() or platform.machine(), "machine": platform.machine(),
        "system": platform.system(), "cpu_count": os.cpu_count(), "torch": str(torch.__version__),
        "date": _dt.date.today().isoformat(),
    }


def fit_quality(result: Any) -> dict[str, float]:
    """R^2 and relative residuals of the ``t = overhead + FLOPs / rate`` fit of a `ProfileResult`."""
    flops = np.array([f for row in result.layer_flops for f in row] + list(result.head_flops))
    times = np.array([t for row in result.layer_times_s for t in row] + list(result.head_times_s))
    pred = result.layer_overhead_s + flops / result.flops_per_s
    rel = np.abs(times - pred) / np.maximum(times, 1e-12)
    return {"r2": float(result.fit_r2), "median_abs_rel_residual": float(np.median(rel)),
            "max_abs_rel_residual": float(np.max(rel)), "points": int(len(times))}
