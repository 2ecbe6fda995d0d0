"""Device and link profiles: typed, validated descriptions of the UE, the edge server and the radio.

Owns the profile schema and the YAML files shipped in ``splitrl/cost/profiles/`` (one profile per
file, ``<name>.yaml``, with ``kind: ue | edge | link``). Every number in a shipped file carries its
source or derivation in a YAML comment. Loading validates every field and raises a ValueError of
the form ``"<Class> '<name>': <field> = <value>: must be <allowed range>"``; unknown keys are errors
(a misspelt key silently falling back to a default would corrupt an experiment).

Compute profiles (`UEProfile`, `EdgeProfile`) describe a roofline: a *sustained* FLOP/s for batch-1
transformer inference (NOT the datasheet peak: shipped files give the peak and a utilisation factor
and ``flops_per_s = peak_flops_per_s * utilization``), an optional sustained memory bandwidth (decode
at batch 1 is bandwidth-bound: every step streams all weights), and a fixed per-layer dispatch
overhead (kernel launches / operator dispatch), plus power draws for energy accounting.

**Weight precisions** (`splitrl.quant.precision.PRECISIONS`: ``fp32 bf16 int8 int4``): a compute
profile may list, in ``precision_rates``, the precisions the device runs its segment at and each
one's sustained rates *relative to* ``flops_per_s`` / ``memory_bandwidth_bytes_per_s`` (which are
measured or sourced at ``weight_dtype``): ``compute`` multiplies the FLOP/s (e.g. fp32 NEON has half
the fp16 lanes; dequantising int4 costs ALU work) and ``memory`` the bandwidth a decode at that
precision sustains (low-bit kernels do not stream their fewer bytes at the full rate). The *bytes*
of each precision are not a factor here: `splitrl.cost.model` takes them from
`splitrl.quant.linear_weight_bytes` (the runtime's exact storage, scales included). A precision
absent from the mapping is one the device does not run (`rates_at` raises).

`LinkProfile` is the radio: a link budget (`splitrl.channel.LinkBudget`), the fading process, a rate
model (Shannon with gap, or the NR CQI table) and the HARQ/latency settings, with helpers that build
the `splitrl.channel` objects from it.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np
import yaml

from splitrl.channel import (
    CorrelatedFadingChannel,
    CorrelatedFadingConfig,
    CqiRate,
    CqiRateConfig,
    LatencyConfig,
    LatencyModel,
    LinkBudget,
    ShannonRate,
    ShannonRateConfig,
    make_channel,
)
from splitrl.channel.fading import FADING_MODELS
from splitrl.quant.precision import PRECISIONS, check_precision
from splitrl.yamlio import load_yaml_file, short
from splitrl.errors import UsageError

__all__ = [
    "DTYPE_BYTES",
    "PROFILE_DIR",
    "PROFILE_KINDS",
    "EdgeProfile",
    "HarqSpec",
    "LinkProfile",
    "Profile",
    "ProfileKind",
    "RateSpec",
    "UEProfile",
    "dbm_to_w",
    "list_profiles",
    "load_profile",
    "profile_from_dict",
    "time_scale",
]

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
ProfileKind = Literal["ue", "edge", "link"]
PROFILE_KINDS: tuple[str, ...] = ("ue", "edge", "link")

# Bytes per stored element at a profile's ``weight_dtype`` (the model without a UE precision).
# int4 packs two weights per byte; per-group scales are not counted here. A cost model given a
# weight *precision* (`CostModel(ue_precision=...)`) counts exact bytes with
# `splitrl.quant.linear_weight_bytes` instead.
DTYPE_BYTES: dict[str, float] = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0, "int4": 0.5}


def dbm_to_w(dbm: float) -> float:
    """Power in watts from dBm."""
    return 10.0 ** ((float(dbm) - 30.0) / 10.0)


# ---- validation helpers (one error shape for every profile) ---------------------------------
def _fail(owner: str, name: str, fld: str, value: Any, allowed: str) -> UsageError:
    return UsageError(f"{owner} {short(name)}: {fld} = {short(value)}: must be {allowed}")


def _num(owner: str, name: str, fld: str, value: Any, lo: float, hi: float, *,
         lo_open: bool = False, hi_open: bool = False) -> float:
    """Coerce to a finite float in [lo, hi] (open ends on request) or raise naming the field."""
    lb, rb = ("(" if lo_open else "["), (")" if hi_open else "]")
    allowed = f"a number in {lb}{lo:g}, {hi:g}{rb}"
    if isinstance(value, bool):
        raise _fail(owner, name, fld, value, allowed)
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise _fail(owner, name, fld, value, allowed) from None
    ok = math.isfinite(x) and (x > lo if lo_open else x >= lo) and (x < hi if hi_open else x <= hi)
    if not ok:
        raise _fail(owner, name, fld, value, allowed)
    return x


def _int(owner: str, name: str, fld: str, value: Any, lo: int, hi: int) -> int:
    # bool is an int subclass: `true` for a retransmission count is a typo, not 1.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise _fail(owner, name, fld, value, f"an integer in [{lo}, {hi}]")
    return int(value)


def _choice(owner: str, name: str, fld: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise _fail(owner, name, fld, value, "one of " + ", ".join(repr(a) for a in allowed))
    return str(value)


def _set(obj: Any, fld: str, value: Any) -> None:
    object.__setattr__(obj, fld, value)  # frozen dataclasses normalise in __post_init__


# ---- compute profiles --------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class _ComputeProfile:
    """Fields shared by UE and edge profiles (see the module docstring for the roofline).

    Attributes:
        name: profile name (the YAML file stem for shipped profiles).
        description: one line saying what hardware this is.
        flops_per_s: sustained FLOP/s for batch-1 transformer inference, in (1e6, 1e18]. Optional
            in YAML when ``peak_flops_per_s`` and ``utilization`` are given (their product).
        peak_flops_per_s: datasheet peak at ``weight_dtype`` (informational), None or (1e6, 1e18].
        utilization: sustained / peak, None or (0, 1].
        memory_bandwidth_bytes_per_s: sustained DRAM bandwidth, None (compute-only model) or
            (1e6, 1e15].
        layer_overhead_s: fixed time per decoder layer (and per head) per forward pass, [0, 1].
        weight_dtype: storage dtype of the weights: fp32 | fp16 | bf16 | int8 | int4.
        kv_dtype: dtype of the KV cache (default: ``weight_dtype``; int4 weights -> fp16 KV).
        compute_power_w: power drawn above ``idle_power_w`` while computing, [0, 2000] W.
        idle_power_w: baseline power drawn for the whole request duration, [0, 2000] W.
        measurement: raw timings of a measured profile (`splitrl.cost.measure`), else None.
        precision_rates: None, or ``{precision: {"compute": c, "memory": m}}`` for the weight
            precisions (`splitrl.quant.precision.PRECISIONS`) the device runs: the sustained FLOP/s
            and bandwidth at that precision are ``c * flops_per_s`` and ``m * memory_bandwidth``,
            each factor in (0, 100] (see the module docstring).
    """

    name: str
    description: str = ""
    flops_per_s: float | None = None
    peak_flops_per_s: float | None = None
    utilization: float | None = None
    memory_bandwidth_bytes_per_s: float | None = None
    layer_overhead_s: float = 0.0
    weight_dtype: str = "fp16"
    kv_dtype: str | None = None
    compute_power_w: float
    idle_power_w: float = 0.0
    measurement: dict | None = None
    precision_rates: dict | None = None

    def __post_init__(self) -> None:
        o, n = type(self).__name__, self.name
        if not isinstance(n, str) or not n.strip():
            raise UsageError(f"{o}: name = {n!r}: must be a non-empty string")
        if not isinstance(self.description, str):
            raise _fail(o, n, "description", self.description, "a string")
        peak = None if self.peak_flops_per_s is None else _num(
            o, n, "peak_flops_per_s", self.peak_flops_per_s, 1e6, 1e18, lo_open=True)
        util = None if self.utilization is None else _num(
            o, n, "utilization", self.utilization, 0.0, 1.0, lo_open=True)
        _set(self, "peak_flops_per_s", peak)
        _set(self, "utilization", util)
        if self.flops_per_s is None:
            if peak is None or util is None:
                raise _fail(o, n, "flops_per_s", None,
                            "given, or derived from both peak_flops_per_s and utilization")
            flops = peak * util
        else:
            flops = _num(o, n, "flops_per_s", self.flops_per_s, 1e6, 1e18, lo_open=True)
            if peak is not None and util is not None and not math.isclose(flops, peak * util, rel_tol=1e-3):
                raise _fail(o, n, "flops_per_s", self.flops_per_s,
                            f"peak_flops_per_s * utilization = {peak * util:.6g} when all three are given")
        if peak is not None and flops > peak * (1 + 1e-9):
            raise _fail(o, n, "flops_per_s", flops, f"<= peak_flops_per_s = {peak:g}")
        _set(self, "flops_per_s", flops)
        if self.memory_bandwidth_bytes_per_s is not None:
            _set(self, "memory_bandwidth_bytes_per_s", _num(
                o, n, "memory_bandwidth_bytes_per_s", self.memory_bandwidth_bytes_per_s, 1e6, 1e15, lo_open=True))
        _set(self, "layer_overhead_s", _num(o, n, "layer_overhead_s", self.layer_overhead_s, 0.0, 1.0))
        _choice(o, n, "weight_dtype", self.weight_dtype, tuple(DTYPE_BYTES))
        kv = self.kv_dtype
        if kv is None:
            kv = "fp16" if self.weight_dtype in ("int8", "int4") else self.weight_dtype
        _set(self, "kv_dtype", _choice(o, n, "kv_dtype", kv, tuple(DTYPE_BYTES)))
        _set(self, "compute_power_w", _num(o, n, "compute_power_w", self.compute_power_w, 0.0, 2000.0))
        _set(self, "idle_power_w", _num(o, n, "idle_power_w", self.idle_power_w, 0.0, 2000.0))
        if self.measurement is not None and not isinstance(self.measurement, Mapping):
            raise _fail(o, n, "measurement", self.measurement, "a mapping or None")
        _set(self, "precision_rates", self._check_precision_rates(o, n, self.precision_rates))

    @staticmethod
    def _check_precision_rates(o: str, n: str, rates: Any) -> dict | None:
        if rates is None:
            return None
        if not isinstance(rates, Mapping) or not rates:
            raise _fail(o, n, "precision_rates", rates, "None or a non-empty mapping {precision: {compute, memory}}")
        out: dict[str, dict[str, float]] = {}
        for prec, factors in rates.items():
            _choice(o, n, "precision_rates key", prec, PRECISIONS)
            fld = f"precision_rates.{prec}"
            if not isinstance(factors, Mapping) or set(factors) != {"compute", "memory"}:
                raise _fail(o, n, fld, factors, "a mapping with exactly the keys 'compute' and 'memory'")
            out[str(prec)] = {k: _num(o, n, f"{fld}.{k}", factors[k], 0.0, 100.0, lo_open=True)
                              for k in ("compute", "memory")}
        return out

    @property
    def supported_precisions(self) -> tuple[str, ...]:
        """The weight precisions ``precision_rates`` lists, in `PRECISIONS` order (empty: none)."""
        rates = self.precision_rates or {}
        return tuple(p for p in PRECISIONS if p in rates)

    def rates_at(self, precision: str) -> tuple[float, float | None]:
        """(sustained FLOP/s, sustained bandwidth or None) at weight ``precision``; a ValueError naming
        the profile and the precisions it lists when the device does not run ``precision``."""
        check_precision(precision)
        rates = self.precision_rates or {}
        if precision not in rates:
            listed = ", ".join(self.supported_precisions) or "none"
            raise _fail(type(self).__name__, self.name, "precision", precision,
                        f"one the profile's precision_rates lists ({listed}); add its sourced rates to the profile")
        f = rates[precision]
        bw = self.memory_bandwidth_bytes_per_s
        return float(self.flops_per_s) * f["compute"], None if bw is None else float(bw) * f["memory"]  # type: ignore[arg-type]

    @property
    def weight_bytes_per_param(self) -> float:
        return DTYPE_BYTES[self.weight_dtype]

    @property
    def kv_bytes_per_element(self) -> float:
        return DTYPE_BYTES[self.kv_dtype]  # type: ignore[index]

    def scaled(self, factor: float, name: str | None = None):
        """A copy whose compute speed (FLOP/s, bandwidth) is multiplied by ``factor`` (> 0).

        Overheads and powers are kept: this models a faster/slower part of the same design.
        """
        f = _num(type(self).__name__, self.name, "factor", factor, 0.0, 1e9, lo_open=True)
        bw = self.memory_bandwidth_bytes_per_s
        peak = self.peak_flops_per_s
        return dataclasses.replace(
            self, name=name or f"{self.name}-x{f:g}", flops_per_s=self.flops_per_s * f,
            peak_flops_per_s=None if peak is None else peak * f, utilization=self.utilization,
            memory_bandwidth_bytes_per_s=None if bw is None else bw * f,
        )


@dataclass(frozen=True, kw_only=True)
class UEProfile(_ComputeProfile):
    """The user device (phone, embedded board). See `_ComputeProfile` for the compute fields.

    Attributes:
        memory_budget_bytes: memory the model (weights + KV cache) may use, in (0, 1e13].
        pa_efficiency: power-amplifier efficiency at the link's transmit power, (0, 1]. The radio
            draws ``tx_power / pa_efficiency + tx_circuit_power_w`` while transmitting, where
            ``tx_power`` is the radiated power of the link profile.
        tx_circuit_power_w: RF chain + baseband power while transmitting, [0, 100] W.
        rx_power_w: radio power while receiving, [0, 100] W.
    """

    memory_budget_bytes: float
    pa_efficiency: float = 1.0
    tx_circuit_power_w: float = 0.0
    rx_power_w: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        o, n = type(self).__name__, self.name
        _set(self, "memory_budget_bytes",
             _num(o, n, "memory_budget_bytes", self.memory_budget_bytes, 0.0, 1e13, lo_open=True))
        _set(self, "pa_efficiency", _num(o, n, "pa_efficiency", self.pa_efficiency, 0.0, 1.0, lo_open=True))
        _set(self, "tx_circuit_power_w", _num(o, n, "tx_circuit_power_w", self.tx_circuit_power_w, 0.0, 100.0))
        _set(self, "rx_power_w", _num(o, n, "rx_power_w", self.rx_power_w, 0.0, 100.0))

    def radio_tx_power_w(self, radiated_w: float) -> float:
        """Electrical power drawn while transmitting ``radiated_w`` watts over the air."""
        return float(radiated_w) / self.pa_efficiency + self.tx_circuit_power_w


@dataclass(frozen=True, kw_only=True)
class EdgeProfile(_ComputeProfile):
    """The edge server. See `_ComputeProfile` for the fields."""


# ---- link profile ------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class RateSpec:
    """How the slot SNR becomes a rate and a block error rate.

    Attributes:
        mode: ``"shannon"`` (gap-to-capacity, `splitrl.channel.ShannonRate`) or ``"cqi"`` (NR CQI
            table 1 link adaptation, `splitrl.channel.CqiRate`).
        overhead: fraction of resources not carrying data, [0, 1).
        gap_db: shannon only: implementation gap, [0, 20] dB.
        max_spectral_efficiency: shannon only: cap in b/s/Hz, None or (0, 100].
        residual_bler: shannon only: block error rate the rate control operates at, [0, 1)
            (the capacity formula has none; a real rate controller accepts some).
        backoff_db: cqi only: link-adaptation margin, [-10, 20] dB.
        target_bler: cqi only: BLER the link adaptation accepts, (0, 1).
        bler_slope_per_db: cqi only: logistic waterfall slope, (0, 20].
    """

    mode: str = "cqi"
    overhead: float = 0.0
    gap_db: float = 0.0
    max_spectral_efficiency: float | None = None
    residual_bler: float = 0.0
    backoff_db: float = 0.0
    target_bler: float = 0.1
    bler_slope_per_db: float = 1.5


@dataclass(frozen=True, kw_only=True)
class HarqSpec:
    """Retransmission settings (see `splitrl.channel.LatencyConfig`).

    Attributes:
        max_retransmissions: retransmissions per block after the first attempt, [0, 32].
        harq_rtt_s: extra delay per retransmission, [0, 1] s.
        transport_block_bytes: bytes per retransmission unit, [1, 1e7].
    """

    max_retransmissions: int = 3
    harq_rtt_s: float = 1e-3
    transport_block_bytes: int = 1056


@dataclass(frozen=True, kw_only=True)
class LinkProfile:
    """A radio link between the UE and the edge.

    Attributes:
        name, description: as for compute profiles.
        bandwidth_hz: occupied bandwidth, (1e3, 1e10].
        carrier_hz: carrier frequency, [1e8, 1e11].
        tx_power_dbm: UE (uplink) radiated power, [-50, 60] dBm.
        noise_figure_db: receiver noise figure, [0, 30] dB.
        antenna_gain_db: sum of transmit and receive antenna gains, [-20, 60] dB.
        distance_m: UE-edge distance, (0, 1e5] m.
        path_loss_exponent: log-distance exponent, [1, 8].
        ref_distance_m: reference distance of the log-distance law, (0, 1e4] m.
        ref_loss_db: loss at the reference distance, None (free space) or [0, 200] dB.
        shadowing_sigma_db: log-normal shadowing std, [0, 20] dB.
        shadowing_decorr_m: shadowing decorrelation distance, (0, 1e4] m.
        fading: none | rayleigh | rician | nakagami.
        rician_k: linear Rician K factor, [0, 1000].
        nakagami_m: Nakagami shape, [0.5, 1000].
        speed_mps: UE speed, [0, 150] m/s.
        slot_s: channel slot duration, (0, 60] s.
        rate: `RateSpec`.
        harq: `HarqSpec`.
        uplink_overhead_s: fixed protocol latency per uplink transfer (scheduling request and
            grant, channel access), [0, 10] s.
        downlink_overhead_s: fixed protocol latency per downlink transfer, [0, 10] s.
        downlink_snr_offset_db: downlink SNR minus uplink SNR (edge transmit power and receiver
            differences), [-50, 80] dB.
    """

    name: str
    description: str = ""
    bandwidth_hz: float
    carrier_hz: float
    tx_power_dbm: float
    noise_figure_db: float
    antenna_gain_db: float = 0.0
    distance_m: float
    path_loss_exponent: float
    ref_distance_m: float = 1.0
    ref_loss_db: float | None = None
    shadowing_sigma_db: float = 0.0
    shadowing_decorr_m: float = 50.0
    fading: str = "rayleigh"
    rician_k: float = 3.0
    nakagami_m: float = 1.0
    speed_mps: float = 1.0
    slot_s: float = 1e-3
    rate: RateSpec = field(default_factory=RateSpec)
    harq: HarqSpec = field(default_factory=HarqSpec)
    uplink_overhead_s: float = 0.0
    downlink_overhead_s: float = 0.0
    downlink_snr_offset_db: float = 0.0

    def __post_init__(self) -> None:
        o, n = "LinkProfile", self.name
        if not isinstance(n, str) or not n.strip():
            raise UsageError(f"{o}: name = {n!r}: must be a non-empty string")
        checks: dict[str, tuple[float, float, bool]] = {
            "bandwidth_hz": (1e3, 1e10, True), "carrier_hz": (1e8, 1e11, False),
            "tx_power_dbm": (-50.0, 60.0, False), "noise_figure_db": (0.0, 30.0, False),
            "antenna_gain_db": (-20.0, 60.0, False), "distance_m": (0.0, 1e5, True),
            "path_loss_exponent": (1.0, 8.0, False), "ref_distance_m": (0.0, 1e4, True),
            "shadowing_sigma_db": (0.0, 20.0, False), "shadowing_decorr_m": (0.0, 1e4, True),
            "rician_k": (0.0, 1000.0, False), "nakagami_m": (0.5, 1000.0, False),
            "speed_mps": (0.0, 150.0, False), "slot_s": (0.0, 60.0, True),
            "uplink_overhead_s": (0.0, 10.0, False), "downlink_overhead_s": (0.0, 10.0, False),
            "downlink_snr_offset_db": (-50.0, 80.0, False),
        }
        for fld, (lo, hi, lo_open) in checks.items():
            _set(self, fld, _num(o, n, fld, getattr(self, fld), lo, hi, lo_open=lo_open))
        if self.ref_loss_db is not None:
            _set(self, "ref_loss_db", _num(o, n, "ref_loss_db", self.ref_loss_db, 0.0, 200.0))
        _choice(o, n, "fading", self.fading, FADING_MODELS)
        r = self.rate
        if not isinstance(r, RateSpec):
            raise _fail(o, n, "rate", r, "a RateSpec (a mapping in YAML)")
        _choice(o, n, "rate.mode", r.mode, ("shannon", "cqi"))
        rate_vals = {
            "overhead": _num(o, n, "rate.overhead", r.overhead, 0.0, 1.0, hi_open=True),
            "gap_db": _num(o, n, "rate.gap_db", r.gap_db, 0.0, 20.0),
            "residual_bler": _num(o, n, "rate.residual_bler", r.residual_bler, 0.0, 1.0, hi_open=True),
            "backoff_db": _num(o, n, "rate.backoff_db", r.backoff_db, -10.0, 20.0),
            "target_bler": _num(o, n, "rate.target_bler", r.target_bler, 0.0, 1.0, lo_open=True, hi_open=True),
            "bler_slope_per_db": _num(o, n, "rate.bler_slope_per_db", r.bler_slope_per_db, 0.0, 20.0, lo_open=True),
            "max_spectral_efficiency": None if r.max_spectral_efficiency is None else _num(
                o, n, "rate.max_spectral_efficiency", r.max_spectral_efficiency, 0.0, 100.0, lo_open=True),
        }
        _set(self, "rate", dataclasses.replace(r, **rate_vals))
        h = self.harq
        if not isinstance(h, HarqSpec):
            raise _fail(o, n, "harq", h, "a HarqSpec (a mapping in YAML)")
        _set(self, "harq", HarqSpec(
            max_retransmissions=_int(o, n, "harq.max_retransmissions", h.max_retransmissions, 0, 32),
            harq_rtt_s=_num(o, n, "harq.harq_rtt_s", h.harq_rtt_s, 0.0, 1.0),
            transport_block_bytes=_int(o, n, "harq.transport_block_bytes", h.transport_block_bytes, 1, 10**7),
        ))

    # ---- builders for the splitrl.channel objects -----------------------------------------
    @property
    def tx_power_w(self) -> float:
        """Uplink radiated power in watts."""
        return dbm_to_w(self.tx_power_dbm)

    def link_budget(self) -> LinkBudget:
        return LinkBudget(
            tx_power_dbm=self.tx_power_dbm, bandwidth_hz=self.bandwidth_hz,
            noise_figure_db=self.noise_figure_db, distance_m=self.distance_m,
            path_loss_exponent=self.path_loss_exponent, ref_distance_m=self.ref_distance_m,
            ref_loss_db=self.ref_loss_db, antenna_gain_db=self.antenna_gain_db,
        )

    def mean_snr_db(self) -> float:
        """Mean uplink SNR from the link budget (before shadowing and fading)."""
        return self.link_budget().mean_snr_db(self.carrier_hz)

    def rate_model(self) -> ShannonRate | CqiRate:
        r = self.rate
        if r.mode == "shannon":
            return ShannonRate(ShannonRateConfig(
                bandwidth_hz=self.bandwidth_hz, gap_db=r.gap_db, overhead=r.overhead,
                max_spectral_efficiency=r.max_spectral_efficiency,
            ))
        return CqiRate(CqiRateConfig(
            bandwidth_hz=self.bandwidth_hz, overhead=r.overhead, bler_slope_per_db=r.bler_slope_per_db,
            target_bler=r.target_bler, backoff_db=r.backoff_db,
        ))

    def latency_config(self, direction: Literal["uplink", "downlink"] = "uplink") -> LatencyConfig:
        overhead = self.uplink_overhead_s if direction == "uplink" else self.downlink_overhead_s
        return LatencyConfig(
            distance_m=self.distance_m, overhead_s=overhead,
            transport_block_bytes=self.harq.transport_block_bytes,
            max_retransmissions=self.harq.max_retransmissions, harq_rtt_s=self.harq.harq_rtt_s,
        )

    def latency_model(self, direction: Literal["uplink", "downlink"] = "uplink") -> LatencyModel:
        return LatencyModel(self.latency_config(direction))

    def fading_config(self) -> CorrelatedFadingConfig:
        """The uplink SNR process of this link (link budget + shadowing + fading)."""
        return CorrelatedFadingConfig(
            link_budget=self.link_budget(), fading=self.fading,  # type: ignore[arg-type]
            rician_k=self.rician_k, nakagami_m=self.nakagami_m, speed_mps=self.speed_mps,
            carrier_hz=self.carrier_hz, slot_s=self.slot_s,
            shadowing_sigma_db=self.shadowing_sigma_db, shadowing_decorr_m=self.shadowing_decorr_m,
        )

    def make_channel(self, rng: np.random.Generator) -> CorrelatedFadingChannel:
        """A `CorrelatedFadingChannel` for this link, with its rate model attached."""
        return make_channel(self.fading_config(), rng, rate_model=self.rate_model())  # type: ignore[return-value]


Profile = Union[UEProfile, EdgeProfile, LinkProfile]
_CLASSES: dict[str, type] = {"ue": UEProfile, "edge": EdgeProfile, "link": LinkProfile}
_NESTED: dict[str, type] = {"rate": RateSpec, "harq": HarqSpec}


def _coerce_numeric_strings(value: Any) -> Any:
    # PyYAML reads exponent literals without a dot ("20e6") as strings; accept them as numbers.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _kwargs_for(cls: type, data: Mapping[str, Any], where: str, text_fields: tuple[str, ...]) -> dict:
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    missing = sorted(
        f.name for f in dataclasses.fields(cls)
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
        and f.name not in data
    )
    if missing:
        raise UsageError(f"{where}: missing required key(s) {missing}")
    return {k: (v if k in text_fields else _coerce_numeric_strings(v)) for k, v in data.items()}


def profile_from_dict(kind: str, data: Mapping[str, Any], *, where: str = "profile") -> Profile:
    """Build and validate a profile of ``kind`` from a mapping (a parsed YAML document).

    The optional ``kind`` key must match; unknown keys and missing required keys are errors.
    """
    kind = _check_kind(kind)
    if not isinstance(data, Mapping):
        raise UsageError(f"{where}: a profile must be a mapping, got {type(data).__name__}")
    body = dict(data)
    declared = body.pop("kind", kind)
    if declared != kind:
        raise UsageError(f"{where}: is a {declared!r} profile, not {kind!r}")
    cls = _CLASSES[kind]
    text = ("name", "description", "weight_dtype", "kv_dtype", "fading", "measurement", "precision_rates")
    kwargs = _kwargs_for(cls, body, where, text)
    if kind == "link":
        for key, sub in _NESTED.items():
            if key in kwargs:
                if not isinstance(kwargs[key], Mapping):
                    raise UsageError(f"{where}: {key} must be a mapping, got {kwargs[key]!r}")
                kwargs[key] = sub(**_kwargs_for(sub, kwargs[key], f"{where}.{key}", ("mode",)))
    return cls(**kwargs)


def _check_kind(kind: str) -> str:
    if kind not in PROFILE_KINDS:
        raise UsageError(f"profile kind {kind!r} is unknown; allowed: {', '.join(PROFILE_KINDS)}")
    return kind


@functools.lru_cache(maxsize=1)
def _shipped_index() -> dict[str, tuple[str, Path]]:
    """name -> (kind, path) for every shipped YAML (read once per process)."""
    index: dict[str, tuple[str, Path]] = {}
    for path in sorted(PROFILE_DIR.glob("*.yaml")):
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
        kind = data.get("kind") if isinstance(data, Mapping) else None
        if kind not in PROFILE_KINDS:
            raise UsageError(f"{path}: 'kind' must be one of {', '.join(PROFILE_KINDS)}, got {kind!r}")
        if data.get("name") != path.stem:
            raise UsageError(f"{path}: 'name' ({data.get('name')!r}) must equal the file stem {path.stem!r}")
        index[path.stem] = (kind, path)
    return index


def list_profiles(kind: str) -> list[str]:
    """Sorted names of the shipped profiles of ``kind`` (``ue``, ``edge`` or ``link``)."""
    kind = _check_kind(kind)
    return sorted(name for name, (k, _) in _shipped_index().items() if k == kind)


def load_profile(kind: str, name_or_path: str | Path | Profile) -> Profile:
    """A shipped profile by name, or a profile YAML file by path (a profile object passes through).

    Raises ValueError for an unknown name (listing the available ones), a file of another kind,
    or an invalid field.
    """
    kind = _check_kind(kind)
    cls = _CLASSES[kind]
    if isinstance(name_or_path, (UEProfile, EdgeProfile, LinkProfile)):
        if not isinstance(name_or_path, cls):
            raise UsageError(f"expected a {kind} profile ({cls.__name__}), got {type(name_or_path).__name__}")
        return name_or_path
    text = str(name_or_path)
    path = Path(text).expanduser()
    if isinstance(name_or_path, Path) or text.endswith((".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            raise UsageError(f"{kind} profile file {text!r} does not exist")
    else:
        index = _shipped_index()
        if text not in index or index[text][0] != kind:
            available = ", ".join(list_profiles(kind))
            hint = f" (it is a {index[text][0]} profile)" if text in index else ""
            raise UsageError(
                f"unknown {kind} profile {text!r}{hint}; available: {available}, or a path to a .yaml file"
            )
        path = index[text][1]

    data = load_yaml_file(path, what=f"{kind} profile")  # bounded, one-line errors (a UsageError is a ValueError)
    return profile_from_dict(kind, data, where=str(path))


def time_scale(target: UEProfile | EdgeProfile, reference: UEProfile | EdgeProfile) -> float:
    """Factor turning compute time measured on ``reference`` into time on ``target``.

    The ratio of sustained FLOP/s: e.g. with ``reference = load_profile("ue", "this-machine.yaml")``
    from `splitrl.cost.measure`, a segment that took ``t`` seconds here takes about
    ``t * time_scale(phone, reference)`` on the phone (compute-bound work; overheads not scaled).
    """
    return float(reference.flops_per_s) / float(target.flops_per_s)  # type: ignore[arg-type]
