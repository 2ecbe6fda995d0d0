"""Serving scenarios: what the deployed controller faces over time, as files a reviewer can read.

A scenario is a YAML file (paths inside it are relative to it) holding:

=========================  ==================================================================
``name``                   short name (results and logs carry it)
``description``            one paragraph: where the traces come from (a reason or a source)
``channel``                CSV ``time,snr_db`` (`splitrl.channel.trace` format): the UE's SNR
``edge_load``              optional CSV ``time,edge_load``: the shared edge's utilisation in [0, 1)
``edge_load_delay_s``      how old the edge's load report is when a request arrives, s (>= 0; 0)
``arrivals``               ``{rate_hz: R}`` (request k at t0 + k / R) or ``{times: [t, ...]}`` /
                           ``{times: FILE.csv}`` (column ``time``): when requests arrive, s
``requests``               number of requests (with ``rate_hz``; with ``times`` it is their count)
``battery_start``          optional UE battery level in (0, 1] at the first request (None: not modelled)
``battery_capacity_j``     optional battery budget, J (> 0; None: the env config's)
``privacy_target``         optional smallest split any request may use (a hard floor, >= 0)
``env``                    optional `SplitPointConfig` overrides (transport, reward weights, ...)
=========================  ==================================================================

Time is the traces' own clock: request k at time ``t_k`` sees the SNR and the edge load that hold
at ``t_k`` (zero-order hold: the last row at or before ``t_k``), and the controller observes the
edge load that held at ``t_k - edge_load_delay_s`` (the report's age). Every arrival must fall
inside the channel trace (and the edge-load trace, when given): a scenario never silently loops.

`load_scenario` validates a file into a frozen `Scenario` (a `UsageError` naming the field on any
problem); `ScenarioProcess` replays it request by request for `splitrl.controller.serving`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from splitrl.channel.trace import TraceFormatError, load_snr_trace
from splitrl.errors import UsageError
from splitrl.yamlio import load_yaml_file

__all__ = ["Scenario", "ScenarioProcess", "TimeSeries", "load_scenario", "load_time_series", "FIELDS"]

FIELDS = ("name", "description", "channel", "edge_load", "edge_load_delay_s", "arrivals", "requests",
          "battery_start", "battery_capacity_j", "privacy_target", "env")


@dataclass(frozen=True, eq=False)
class TimeSeries:
    """A value over time, read by zero-order hold. ``time_s`` strictly increasing, ``values`` finite.

    The series covers ``[time_s[0], time_s[-1] + last interval]`` (the last row holds for one
    more sampling interval, as in `splitrl.channel.trace`)."""

    time_s: np.ndarray  # [N]
    values: np.ndarray  # [N]
    source: str

    @property
    def end_s(self) -> float:
        t = self.time_s
        return float(t[-1] + (t[-1] - t[-2])) if t.size > 1 else float(t[-1])

    def at(self, t: float | np.ndarray) -> np.ndarray:
        """The value holding at time(s) ``t`` (before the first row: the first row)."""
        # the 1e-9 nudge: an arrival computed as k / rate can land a few ulps before a row's time
        idx = np.searchsorted(self.time_s, np.asarray(t, dtype=float) + 1e-9, side="right") - 1
        return self.values[np.clip(idx, 0, self.values.size - 1)]


def load_time_series(path: str | Path, column: str, *, where: str) -> TimeSeries:
    """A ``time,<column>`` CSV (the trace format of `splitrl.channel.trace`) as a `TimeSeries`;
    a missing or malformed file is a `UsageError` starting with ``where``."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{where}: file {p} not found")
    try:
        tr = load_snr_trace(p, snr_column=column)
    except (TraceFormatError, ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"{where}: {e}".splitlines()[0]) from None
    return TimeSeries(tr.time_s, tr.snr_db, str(p))


@dataclass(frozen=True, eq=False)
class Scenario:
    """A validated scenario (see the module doc for the fields). Build it with `load_scenario`."""

    name: str
    channel: TimeSeries
    arrivals_s: np.ndarray  # [requests] arrival times, strictly increasing, on the traces' clock
    description: str = ""
    edge_load: TimeSeries | None = None
    edge_load_delay_s: float = 0.0
    battery_start: float | None = None
    battery_capacity_j: float | None = None
    privacy_target: int | None = None
    env: dict = field(default_factory=dict)
    arrival_rule: str = ""
    source: str = "<memory>"

    @property
    def requests(self) -> int:
        return int(self.arrivals_s.size)

    def snr_at(self, t: float | np.ndarray) -> np.ndarray:
        return self.channel.at(t)

    def edge_load_at(self, t: float | np.ndarray) -> np.ndarray | None:
        return None if self.edge_load is None else self.edge_load.at(t)

    def summary(self) -> dict[str, Any]:
        """The scenario as plain values (for result files)."""
        return {"name": self.name, "source": self.source, "description": self.description,
                "channel": self.channel.source, "edge_load": None if self.edge_load is None else self.edge_load.source,
                "edge_load_delay_s": self.edge_load_delay_s, "arrivals": self.arrival_rule, "requests": self.requests,
                "span_s": [float(self.arrivals_s[0]), float(self.arrivals_s[-1])],
                "battery_start": self.battery_start, "battery_capacity_j": self.battery_capacity_j,
                "privacy_target": self.privacy_target, "env": self.env}


def _number(where: str, value: Any, *, low: float | None = None, high: float | None = None,
            low_open: bool = False, integer: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if integer:
        ok = ok and float(value).is_integer()
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        rng = f"{'(' if low_open else '['}{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise UsageError(f"{where}: must be {'an integer' if integer else 'a number'} in {rng}, got {value!r}")
    return float(value)


def _arrivals(raw: Any, requests: Any, base: Path, where: str, t0: float) -> tuple[np.ndarray, str]:
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in ("rate_hz", "times"):
        raise UsageError(f"{where}.arrivals: must be {{rate_hz: R}} or {{times: [t, ...] | FILE.csv}}, got {raw!r}"[:200])
    key, value = next(iter(raw.items()))
    if key == "rate_hz":
        rate = _number(f"{where}.arrivals.rate_hz", value, low=0.0, low_open=True)
        if requests is None:
            raise UsageError(f"{where}.requests: required with arrivals.rate_hz (how many requests arrive)")
        n = int(_number(f"{where}.requests", requests, low=1, integer=True))
        return t0 + np.arange(n) / rate, f"rate {rate:g}/s from t={t0:g} s"
    if isinstance(value, str):
        p = base / value
        if not p.is_file():
            raise UsageError(f"{where}.arrivals.times: file {p} not found")
        import csv

        with p.open(newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.reader(fh) if r and not r[0].lstrip().startswith("#")]
        if not rows or rows[0][0].strip() != "time":
            raise UsageError(f"{where}.arrivals.times: {p} must be a CSV whose first column is headed 'time'")
        try:
            times = [float(r[0]) for r in rows[1:]]
        except ValueError as e:
            raise UsageError(f"{where}.arrivals.times: {p}: {e}") from None
        rule = f"timestamps from {p.name}"
    elif isinstance(value, list):
        times = [_number(f"{where}.arrivals.times[{i}]", x) for i, x in enumerate(value)]
        rule = "timestamps listed in the scenario"
    else:
        raise UsageError(f"{where}.arrivals.times: must be a list of seconds or a CSV file, got {value!r}"[:200])
    t = np.asarray(times, dtype=float)
    if t.size < 1 or not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
        raise UsageError(f"{where}.arrivals.times: need >= 1 finite, strictly increasing times")
    if requests is not None and int(requests) != t.size:
        raise UsageError(f"{where}.requests: {requests!r} but arrivals.times lists {t.size} requests (omit requests)")
    return t, rule


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario YAML file (see the module doc); `UsageError` names the field."""
    p = Path(path)
    where = f"scenario {p}"
    if not p.is_file():
        raise UsageError(f"--scenario: {p} not found")
    raw = load_yaml_file(p, what="scenario")
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: must hold a mapping with the fields {', '.join(FIELDS)}")
    unknown = sorted(set(map(str, raw)) - set(FIELDS))
    if unknown:
        raise UsageError(f"{where}: unknown field(s) {unknown}; allowed: {', '.join(FIELDS)}")
    for need in ("name", "channel", "arrivals"):
        if need not in raw:
            raise UsageError(f"{where}.{need}: required")
    name = raw["name"]
    if not isinstance(name, str) or not name.strip():
        raise UsageError(f"{where}.name: must be a non-empty string")
    base = p.parent
    for key in ("channel", "edge_load"):
        if key in raw and raw[key] is not None and not isinstance(raw[key], str):
            raise UsageError(f"{where}.{key}: must be a CSV file path (relative to the scenario), got {raw[key]!r}")
    channel = load_time_series(base / raw["channel"], "snr_db", where=f"{where}.channel")
    edge = None
    if raw.get("edge_load") is not None:
        edge = load_time_series(base / raw["edge_load"], "edge_load", where=f"{where}.edge_load")
        bad = (edge.values < 0) | (edge.values >= 1)
        if bad.any():
            raise UsageError(f"{where}.edge_load: utilisation must be in [0, 1), {edge.source} has "
                             f"{float(edge.values[bad][0])!r} at time {float(edge.time_s[bad][0])!r}")
    delay = _number(f"{where}.edge_load_delay_s", raw.get("edge_load_delay_s", 0.0), low=0.0)
    arrivals, rule = _arrivals(raw["arrivals"], raw.get("requests"), base, where, float(channel.time_s[0]))
    for key, series in (("channel", channel), ("edge_load", edge)):
        if series is None:
            continue
        if arrivals[0] < series.time_s[0] - 1e-9 or arrivals[-1] > series.end_s + 1e-9:
            raise UsageError(f"{where}.arrivals: requests arrive over [{arrivals[0]:g}, {arrivals[-1]:g}] s but the "
                             f"{key} trace covers [{series.time_s[0]:g}, {series.end_s:g}] s")
    battery = raw.get("battery_start")
    if battery is not None:
        battery = _number(f"{where}.battery_start", battery, low=0.0, high=1.0, low_open=True)
    capacity = raw.get("battery_capacity_j")
    if capacity is not None:
        capacity = _number(f"{where}.battery_capacity_j", capacity, low=0.0, low_open=True)
    privacy = raw.get("privacy_target")
    if privacy is not None:
        privacy = int(_number(f"{where}.privacy_target", privacy, low=0, integer=True))
    env = raw.get("env") or {}
    if not isinstance(env, dict):
        raise UsageError(f"{where}.env: must be a mapping of SplitPointConfig fields, got {env!r}"[:200])
    desc = raw.get("description", "")
    if not isinstance(desc, str):
        raise UsageError(f"{where}.description: must be a string")
    return Scenario(name=name.strip(), channel=channel, arrivals_s=arrivals, description=desc.strip(),
                    edge_load=edge, edge_load_delay_s=delay, battery_start=battery, battery_capacity_j=capacity,
                    privacy_target=privacy, env=dict(env), arrival_rule=rule, source=str(p))


class ScenarioProcess:
    """A scenario replayed request by request: the same interface as
    `splitrl.decision.channel.ChannelProcess` (``snr_db``, ``history``, ``time_s``,
    ``edge_load``, ``edge_load_reported``, ``advance``, ``reset``) on the scenario's clock.

    ``history`` holds the SNRs the previous requests saw (newest first), as the observation's
    history is one entry per decision. Replay is deterministic (``reset``'s seed is unused: the
    traces are the randomness)."""

    def __init__(self, scenario: Scenario, *, history: int) -> None:
        self.scenario = scenario
        self.history_len = int(history)
        s = scenario
        # Everything a request needs, precomputed once: serving only indexes these arrays.
        self._snr = s.snr_at(s.arrivals_s).astype(float)  # [requests]
        self._load = s.edge_load_at(s.arrivals_s)  # [requests] or None
        # before the first row the report holds the first row's value (`TimeSeries.at`)
        self._reported = s.edge_load_at(s.arrivals_s - s.edge_load_delay_s)
        self.reset(0)

    def reset(self, seed: int = 0) -> None:
        self.k = 0
        self.history: list[float] = []

    @property
    def remaining(self) -> int:
        return self.scenario.requests - self.k

    def _check(self) -> int:
        if self.k >= self.scenario.requests:
            raise UsageError(f"--requests: scenario {self.scenario.name} has {self.scenario.requests} requests")
        return self.k

    @property
    def time_s(self) -> float:
        return float(self.scenario.arrivals_s[self._check()])

    @property
    def snr_db(self) -> float:
        return float(self._snr[self._check()])

    @property
    def edge_load(self) -> float | None:
        """The true edge utilisation at this request's arrival (what the request is charged)."""
        return None if self._load is None else float(self._load[self._check()])

    @property
    def edge_load_reported(self) -> float | None:
        """The utilisation the controller observes: the report ``edge_load_delay_s`` old."""
        return None if self._reported is None else float(self._reported[self._check()])

    def advance(self) -> float | None:
        """Move to the next request; returns its SNR (None after the last request)."""
        self.history = [float(self._snr[self.k]), *self.history][: self.history_len]
        self.k += 1
        return float(self._snr[self.k]) if self.k < self.scenario.requests else None
