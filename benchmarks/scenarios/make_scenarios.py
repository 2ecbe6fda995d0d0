"""Writes the committed scenario traces under benchmarks/scenarios/ (deterministic: seed 0).

Run: ``python benchmarks/scenarios/make_scenarios.py``. Each trace is generated from a stated
physical model (not tuned to a result); the YAML files next to them say which.

* ``walk_away``: a pedestrian walks from 20 m to 250 m from a sub-6 GHz small cell at 1.4 m/s.
  Mean SNR from the 3GPP TR 38.901 UMi-street-canyon NLOS path loss
  (PL = 35.3 log10(d) + 22.4 + 21.3 log10(f_GHz), f = 3.5 GHz), 23 dBm UE transmit power over a
  20 MHz uplink (noise -174 dBm/Hz + 10 log10(20e6) + 7 dB noise figure), shadowing with 4 dB std
  and 10 m decorrelation distance (Gudmundson), sampled every 0.5 s. The shared edge runs at a
  typical utilisation: an AR(1) around 0.5 (std 0.1, 10 s correlation), the mean of the
  `splitrl.cost.EdgeLoadConfig` default (public cluster traces: machines mostly 20-60 % busy).
  Requests arrive every 2 s.
* ``busy_hour``: a stationary UE at a good-but-not-great SNR (12 dB mean, the same shadowing
  model with a slow 0.05 m/s drift, i.e. almost static) while the shared edge goes through a
  busy hour compressed into 120 s: utilisation ramps 0.2 -> 0.92 -> 0.3 (a raised-cosine
  peak, +- 0.03 noise, clipped to [0, 0.95]); the load report is 2 s old. Requests arrive at
  the timestamps of a Poisson process at 0.5 requests/s (seeded), battery starts at 0.35.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _shadowing(n: int, step_m: float, rng: np.random.Generator, std_db: float = 4.0, decorr_m: float = 10.0) -> np.ndarray:
    """Gudmundson AR(1) log-normal shadowing sampled every ``step_m`` metres."""
    rho = np.exp(-step_m / decorr_m)
    x = np.empty(n)
    x[0] = rng.normal(0, std_db)
    for i in range(1, n):
        x[i] = rho * x[i - 1] + np.sqrt(1 - rho**2) * rng.normal(0, std_db)
    return x


def _snr_db(distance_m: np.ndarray) -> np.ndarray:
    pl = 35.3 * np.log10(distance_m) + 22.4 + 21.3 * np.log10(3.5)
    noise_dbm = -174 + 10 * np.log10(20e6) + 7
    return 23.0 - pl - noise_dbm


def _write(path: Path, column: str, t: np.ndarray, v: np.ndarray) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["time", column])
        for a, b in zip(t, v):
            w.writerow([f"{a:.2f}", f"{b:.3f}"])


def main() -> None:
    rng = np.random.default_rng(0)
    # walk_away: 0.5 s samples over 165 s (20 m -> 251 m at 1.4 m/s)
    t = np.arange(0, 165, 0.5)
    d = 20.0 + 1.4 * t
    snr = _snr_db(d) + _shadowing(t.size, 0.7, rng)
    _write(HERE / "walk_away_snr.csv", "snr_db", t, snr)
    rho = np.exp(-0.5 / 10.0)  # 0.5 s samples, 10 s correlation time
    dev = np.empty(t.size)
    dev[0] = rng.normal(0, 0.1)
    for i in range(1, t.size):
        dev[i] = rho * dev[i - 1] + np.sqrt(1 - rho**2) * rng.normal(0, 0.1)
    load = np.clip(0.5 + dev, 0.0, 0.95)
    _write(HERE / "walk_away_edge_load.csv", "edge_load", t, load)
    # busy_hour: 0.5 s samples over 120 s
    t = np.arange(0, 120, 0.5)
    snr = 12.0 + _shadowing(t.size, 0.025, rng)
    _write(HERE / "busy_hour_snr.csv", "snr_db", t, snr)
    peak = 0.5 * (1 - np.cos(2 * np.pi * np.clip((t - 10) / 100, 0, 1)))  # 0 -> 1 -> 0 over t = 10..110 s
    base = np.where(t < 60, 0.2, 0.3)
    load = np.clip(base + (0.92 - base) * peak + 0.03 * rng.standard_normal(t.size), 0.0, 0.95)
    _write(HERE / "busy_hour_edge_load.csv", "edge_load", t, load)
    arrivals = np.cumsum(rng.exponential(2.0, 200))
    arrivals = arrivals[arrivals < 119.0]
    with (HERE / "busy_hour_arrivals.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["time"])
        for a in arrivals:
            w.writerow([f"{a:.3f}"])
    print(f"wrote traces under {HERE} ({arrivals.size} busy-hour arrivals)")


if __name__ == "__main__":
    main()
