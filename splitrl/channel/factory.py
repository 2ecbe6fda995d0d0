"""Build channels, rate models and latency models from plain dicts (YAML) or config dataclasses.

Owns the spec format that environments and the CLI read from YAML. A channel spec is a mapping
with ``kind`` selecting the process and the remaining keys being that process's config fields:

.. code-block:: yaml

    channel:
      kind: fading               # fading | markov | trace
      mean_snr_db: 12.0          # or link_budget: {tx_power_dbm: 23, distance_m: 150, ...}
      fading: rician             # none | rayleigh | rician | nakagami
      rician_k: 4.0
      speed_mps: 1.5
      carrier_hz: 3.5e+9
      slot_s: 1.0e-3
      shadowing_sigma_db: 4.0
      rate: {kind: cqi, bandwidth_hz: 2.0e+7, overhead: 0.14}   # optional: fills rate_bps / bler
      ber_modulation: qpsk       # optional: fills ber (uncoded, at the slot SNR)

    # markov: explicit chain ...
      kind: markov
      bin_edges_db: [-5, 5, 15, 25]
      transition: [[0.9, 0.1, 0.0], [0.05, 0.9, 0.05], [0.0, 0.1, 0.9]]
      state_snr_db: [0, 10, 20]   # optional, default bin midpoints
    # ... or fitted from a trace:
      kind: markov
      fit_trace: traces/walk.csv
      bin_edges_db: [-5, 5, 15, 25]
      smoothing: 1.0

    # trace replay:
      kind: trace
      path: traces/walk.csv
      on_end: loop               # loop | stop
      random_start: true
      slot_s: 1.0e-3             # optional: zero-order hold on the time column

Unknown keys are errors (a misspelt key silently falling back to a default would corrupt an
experiment). Numeric strings such as ``"20e6"`` (PyYAML reads exponent literals without a dot as
strings) are converted for float fields.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from splitrl.yamlio import short

from .base import Channel, RateModel
from .fading import CorrelatedFadingChannel, CorrelatedFadingConfig, LinkBudget
from .latency import LatencyConfig, LatencyModel
from .markov import MarkovChannel, MarkovChannelConfig, fit_from_trace
from .rate import CqiRate, CqiRateConfig, ShannonRate, ShannonRateConfig
from .trace import TraceChannel, TraceChannelConfig, load_snr_trace
from splitrl.errors import UsageError

ChannelConfig = CorrelatedFadingConfig | MarkovChannelConfig | TraceChannelConfig

_KIND_ALIASES = {
    "fading": "fading", "correlated_fading": "fading",
    "markov": "markov", "fsmc": "markov",
    "trace": "trace",
}


def _build(cls: type, spec: Mapping[str, Any], where: str) -> Any:
    names = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(spec) - set(names))
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    kwargs: dict[str, Any] = {}
    for key, value in spec.items():
        if isinstance(value, str) and "float" in str(names[key].type):
            try:
                value = float(value)
            except ValueError:
                pass  # leave it; the config's own validation names the field
        if isinstance(value, list):
            value = tuple(tuple(x) if isinstance(x, list) else x for x in value)
        kwargs[key] = value
    return cls(**kwargs)


def _split_kind(spec: Mapping[str, Any], where: str, allowed: Mapping[str, str]) -> tuple[str, dict]:
    if not isinstance(spec, Mapping):
        raise TypeError(f"{where}: spec must be a mapping, got {type(spec).__name__}")
    body = dict(spec)
    kind = body.pop("kind", None)
    if not isinstance(kind, str) or kind not in allowed:
        raise UsageError(f"{where}.kind = {short(kind)}: must be one of {sorted(set(allowed))}")
    return allowed[kind], body


def make_rate_model(spec: Mapping[str, Any] | RateModel | None) -> RateModel | None:
    """``{kind: shannon|cqi, ...config fields}`` -> `ShannonRate` / `CqiRate`; None passes through."""
    if spec is None or isinstance(spec, (ShannonRate, CqiRate)):
        return spec
    if isinstance(spec, ShannonRateConfig):
        return ShannonRate(spec)
    if isinstance(spec, CqiRateConfig):
        return CqiRate(spec)
    kind, body = _split_kind(spec, "rate", {"shannon": "shannon", "cqi": "cqi"})
    if kind == "shannon":
        return ShannonRate(_build(ShannonRateConfig, body, "rate"))
    return CqiRate(_build(CqiRateConfig, body, "rate"))


def make_latency_model(spec: Mapping[str, Any] | LatencyConfig | None = None) -> LatencyModel:
    """LatencyConfig fields as a mapping (or a LatencyConfig; None for defaults) -> `LatencyModel`."""
    if spec is None or isinstance(spec, LatencyConfig):
        return LatencyModel(spec)
    if not isinstance(spec, Mapping):
        raise TypeError(f"latency: spec must be a mapping, got {type(spec).__name__}")
    return LatencyModel(_build(LatencyConfig, spec, "latency"))


def make_channel(
    spec: Mapping[str, Any] | ChannelConfig,
    rng: np.random.Generator,
    *,
    rate_model: RateModel | Mapping[str, Any] | None = None,
    ber_modulation: str | None = None,
) -> Channel:
    """Build a channel from a spec mapping (see module docstring) or a config dataclass.

    ``rate`` / ``ber_modulation`` inside a mapping spec and the keyword arguments are alternatives;
    giving both is an error.
    """
    if isinstance(spec, CorrelatedFadingConfig):
        return CorrelatedFadingChannel(
            spec, rng, rate_model=make_rate_model(rate_model), ber_modulation=ber_modulation
        )
    if isinstance(spec, MarkovChannelConfig):
        return MarkovChannel(
            spec, rng, rate_model=make_rate_model(rate_model), ber_modulation=ber_modulation
        )
    if isinstance(spec, TraceChannelConfig):
        return TraceChannel(
            spec, rng, rate_model=make_rate_model(rate_model), ber_modulation=ber_modulation
        )
    kind, body = _split_kind(spec, "channel", _KIND_ALIASES)
    if "rate" in body:
        if rate_model is not None:
            raise UsageError("channel: 'rate' given both in the spec and as rate_model")
        rate_model = body.pop("rate")
    if "ber_modulation" in body:
        if ber_modulation is not None:
            raise UsageError("channel: 'ber_modulation' given both in the spec and as an argument")
        ber_modulation = body.pop("ber_modulation")
    extras = {"rate_model": make_rate_model(rate_model), "ber_modulation": ber_modulation}

    if kind == "fading":
        lb = body.get("link_budget")
        if isinstance(lb, Mapping):
            body["link_budget"] = _build(LinkBudget, lb, "channel.link_budget")
        return CorrelatedFadingChannel(_build(CorrelatedFadingConfig, body, "channel"), rng, **extras)
    if kind == "markov":
        if "fit_trace" in body:
            path = body.pop("fit_trace")
            if "bin_edges_db" not in body:
                raise UsageError("channel: 'fit_trace' needs 'bin_edges_db'")
            edges = body.pop("bin_edges_db")
            smoothing = float(body.pop("smoothing", 1.0))
            initial = body.pop("initial_state", "stationary")
            if body:
                raise UsageError(
                    f"channel: unknown key(s) {sorted(body)} with fit_trace; allowed: "
                    "['bin_edges_db', 'fit_trace', 'initial_state', 'smoothing']"
                )
            trace = load_snr_trace(path)
            cfg = fit_from_trace(trace.snr_db, edges, smoothing=smoothing, initial_state=initial)
        else:
            cfg = _build(MarkovChannelConfig, body, "channel")
        return MarkovChannel(cfg, rng, **extras)
    return TraceChannel(_build(TraceChannelConfig, body, "channel"), rng, **extras)
