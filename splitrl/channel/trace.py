"""Replay of a measured or pre-generated SNR trace from CSV.

Owns the trace file format and its replay. The CSV needs a header row with at least the columns
``time`` (seconds, strictly increasing) and ``snr_db``; other columns are ignored, blank lines and
lines starting with ``#`` are skipped. Any malformed row is reported as ``<file>:<line>: <problem>``.

Replay has two clocks:

* ``slot_s = None``: one trace row per slot (the trace was recorded at the slot rate).
* ``slot_s > 0``: slot k reads the trace at time offset + k * slot_s with zero-order hold (the
  value of the last row at or before that time), so a 100 ms measurement log can drive 1 ms slots.
  The trace covers [t_0, t_last + dt_last), the last row holding for one more sampling interval.

At the end the replay either wraps around (``on_end="loop"``) or raises `TraceExhausted`
(``on_end="stop"``). With ``random_start`` the starting row (or time offset) is drawn from the
channel's generator at every reset, so episodes see different segments of one trace.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _validate as v
from .base import Channel, RateModel
from splitrl.errors import UsageError

# |SNR| above this is no radio link (and 10**(SNR/10) overflows to inf): a unit or file mistake.
SNR_DB_LIMIT = 200.0


class TraceFormatError(ValueError):
    """A trace file is malformed; the message starts with ``<file>:<line>:`` where known."""


class TraceExhausted(RuntimeError):
    """A non-looping trace has no slots left."""


@dataclass(frozen=True, eq=False)
class SnrTrace:
    """An SNR time series: ``time_s`` strictly increasing, ``snr_db`` finite, equal lengths >= 1."""

    time_s: NDArray[np.float64]
    snr_db: NDArray[np.float64]
    source: str = "<memory>"

    def __post_init__(self) -> None:
        t = np.asarray(self.time_s, dtype=float)
        s = np.asarray(self.snr_db, dtype=float)
        if t.ndim != 1 or s.shape != t.shape or t.size < 1:
            raise UsageError(
                f"{self.source}: time_s and snr_db must be 1-D of equal length >= 1, "
                f"got {t.shape} and {s.shape}"
            )
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(s))):
            raise UsageError(f"{self.source}: time_s and snr_db must be finite")
        if s.size and np.max(np.abs(s)) > SNR_DB_LIMIT:
            raise UsageError(f"{self.source}: snr_db must be within [-{SNR_DB_LIMIT:g}, {SNR_DB_LIMIT:g}] dB")
        if np.any(np.diff(t) <= 0):
            raise UsageError(f"{self.source}: time_s must be strictly increasing")
        object.__setattr__(self, "time_s", t)
        object.__setattr__(self, "snr_db", s)

    def __len__(self) -> int:
        return int(self.snr_db.size)

    @property
    def duration_s(self) -> float:
        """Span covered by the trace when the last row holds for one sampling interval."""
        t = self.time_s
        if t.size < 2:
            return math.nan
        return float(t[-1] - t[0] + (t[-1] - t[-2]))


def load_snr_trace(
    path: str | PathLike[str], *, time_column: str = "time", snr_column: str = "snr_db"
) -> SnrTrace:
    """Read a ``time,snr_db`` CSV (header required) into an `SnrTrace`, with line-precise errors."""
    p = Path(path)
    times: list[float] = []
    snrs: list[float] = []
    with p.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header: list[str] | None = None
        i_t = i_s = -1
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
                continue
            if header is None:
                header = [c.strip() for c in row]
                dup = sorted({c for c in header if header.count(c) > 1})
                if dup:
                    raise TraceFormatError(f"{p}:{line}: duplicate column(s) {dup} in header")
                missing = [c for c in (time_column, snr_column) if c not in header]
                if missing:
                    raise TraceFormatError(
                        f"{p}:{line}: header {header} lacks column(s) {missing}; the first "
                        f"non-comment row must be a header naming '{time_column}' and '{snr_column}'"
                    )
                i_t, i_s = header.index(time_column), header.index(snr_column)
                continue
            if len(row) != len(header):
                raise TraceFormatError(
                    f"{p}:{line}: expected {len(header)} fields ({','.join(header)}), got {len(row)}"
                )
            vals = []
            for name, idx in ((time_column, i_t), (snr_column, i_s)):
                raw = row[idx].strip()
                try:
                    x = float(raw)
                except ValueError:
                    raise TraceFormatError(
                        f"{p}:{line}: column '{name}': {raw!r} is not a number"
                    ) from None
                if not math.isfinite(x):
                    raise TraceFormatError(f"{p}:{line}: column '{name}': {raw!r} is not finite")
                if name == snr_column and not -SNR_DB_LIMIT <= x <= SNR_DB_LIMIT:
                    raise TraceFormatError(f"{p}:{line}: column '{name}': {raw!r} dB is outside "
                                           f"[-{SNR_DB_LIMIT:g}, {SNR_DB_LIMIT:g}] dB (not a physical SNR)")
                vals.append(x)
            if times and vals[0] <= times[-1]:
                raise TraceFormatError(
                    f"{p}:{line}: column '{time_column}': {vals[0]!r} is not after the previous "
                    f"time {times[-1]!r} (times must be strictly increasing)"
                )
            times.append(vals[0])
            snrs.append(vals[1])
    if header is None:
        raise TraceFormatError(f"{p}: empty file; expected a header with '{time_column}' and '{snr_column}'")
    if not times:
        raise TraceFormatError(f"{p}: header but no data rows")
    return SnrTrace(np.asarray(times), np.asarray(snrs), source=str(p))


def write_snr_trace(path: str | PathLike[str], time_s: ArrayLike, snr_db: ArrayLike) -> None:
    """Write a trace in the format `load_snr_trace` reads (round-trips exactly via repr floats)."""
    tr = SnrTrace(np.asarray(time_s, dtype=float), np.asarray(snr_db, dtype=float), source=str(path))
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["time", "snr_db"])
        for t, s in zip(tr.time_s.tolist(), tr.snr_db.tolist()):
            w.writerow([repr(t), repr(s)])


@dataclass(frozen=True)
class TraceChannelConfig:
    """Configuration of `TraceChannel`.

    Attributes:
        path: CSV file with a header naming ``time`` and ``snr_db`` (may be empty when a trace is
            passed to `TraceChannel` directly).
        on_end: ``"loop"`` (wrap around) or ``"stop"`` (raise `TraceExhausted`).
        random_start: draw the starting row (or time offset) from the generator at each reset.
        slot_s: None for one row per slot, or the slot duration (> 0) for zero-order-hold replay
            on the time column.
    """

    path: str = ""
    on_end: Literal["loop", "stop"] = "loop"
    random_start: bool = False
    slot_s: float | None = None

    def __post_init__(self) -> None:
        o = "TraceChannelConfig"
        if not isinstance(self.path, (str, PathLike)):
            raise v.fail(o, "path", self.path, "a file path string")
        object.__setattr__(self, "path", str(self.path))
        v.one_of(o, "on_end", self.on_end, ("loop", "stop"))
        if not isinstance(self.random_start, bool):
            raise v.fail(o, "random_start", self.random_start, "true or false")
        if self.slot_s is not None:
            v.positive(o, "slot_s", self.slot_s)


class TraceChannel(Channel):
    """Replays an `SnrTrace` slot by slot (see the module docstring for the clocks and the end)."""

    def __init__(
        self,
        config: TraceChannelConfig,
        rng: np.random.Generator,
        *,
        trace: SnrTrace | None = None,
        rate_model: RateModel | None = None,
        ber_modulation: str | None = None,
    ) -> None:
        super().__init__(rng, rate_model=rate_model, ber_modulation=ber_modulation)
        if not isinstance(config, TraceChannelConfig):
            raise TypeError(f"config must be a TraceChannelConfig, got {type(config).__name__}")
        if trace is None:
            if not config.path:
                raise UsageError("TraceChannelConfig.path = '': must name a CSV file when no trace is given")
            trace = load_snr_trace(config.path)
        self.config = config
        self.trace = trace
        if config.slot_s is not None:
            dur = trace.duration_s
            # A single-row trace has no sampling interval; it then covers exactly one slot.
            self._period = config.slot_s if math.isnan(dur) else dur
        self._reset()

    def _reset(self) -> None:
        c = self.config
        self._k = 0
        if c.slot_s is None:
            self._offset = float(self.rng.integers(0, len(self.trace))) if c.random_start else 0.0
        else:
            self._offset = float(self.rng.uniform(0.0, self._period)) if c.random_start else 0.0

    @property
    def remaining(self) -> float:
        """Slots left before a ``"stop"`` trace is exhausted (inf when looping)."""
        if self.config.on_end == "loop":
            return math.inf
        if self.config.slot_s is None:
            return float(len(self.trace) - int(self._offset) - self._k)
        # slots k with offset + k * slot_s < period; the 1e-6 absorbs rounding in period / slot_s
        # (0.4 / 0.1 = 4.000000000000001 must give 4 slots, not 5)
        total = math.ceil((self._period - self._offset) / self.config.slot_s - 1e-6)
        return float(max(0, total - self._k))

    def _indices(self, n: int) -> NDArray[np.int64]:
        c = self.config
        k = self._k + np.arange(n)
        if c.slot_s is None:
            pos = int(self._offset) + k
            return pos % len(self.trace) if c.on_end == "loop" else pos
        tau = self._offset + k * c.slot_s
        if c.on_end == "loop":
            tau = np.mod(tau, self._period)
        rel = self.trace.time_s - self.trace.time_s[0]
        # k * slot_s can land a few ulps below a row's time (3 * 0.1 < 0.3 style); nudge so a slot
        # that starts exactly on a row reads that row.
        return np.searchsorted(rel, tau + 1e-9 * c.slot_s, side="right") - 1

    def _sample(self, n: int) -> NDArray[np.float64]:
        if n > self.remaining:
            raise TraceExhausted(
                f"{self.trace.source}: asked for {n} slot(s) but only {int(self.remaining)} remain "
                f"(on_end='stop'); call reset() to replay"
            )
        idx = self._indices(n)
        self._k += n
        return self.trace.snr_db[idx].copy()
