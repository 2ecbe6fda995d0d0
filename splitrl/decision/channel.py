"""The channel process the controller observes: one slot per request, no gym env.

`channel_spec` turns the ``--channel`` text (``fading``, ``markov``, ``trace:FILE.csv``,
``FILE.csv`` or a ``spec.yaml``) into a `splitrl.channel.make_channel` spec; `build_channel`
makes the channel object (the split-point env builds its channel with it too), and
`ChannelProcess` advances it one slot per request and keeps the SNR history the observation needs.

A trace is replayed on its own time column: requests arrive every ``slot_s`` seconds (one
decision interval, i.e. at rate ``1 / slot_s``) and each sees the SNR the trace holds at its
arrival time (zero-order hold, `splitrl.channel.trace`), not one row per request whatever the
rows' times are. For arrivals at given timestamps, and an edge-load trace beside the channel,
use a scenario (`splitrl.controller.scenario`, which builds on this module).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from splitrl.channel import CorrelatedFadingChannel, make_channel
from splitrl.errors import UsageError

__all__ = ["DEFAULT_MARKOV", "channel_spec", "build_channel", "ChannelProcess"]

DEFAULT_MARKOV = {
    "kind": "markov",
    "bin_edges_db": [-10.0, 4.0, 12.0, 20.0, 40.0],
    "state_snr_db": [0.0, 8.0, 16.0, 26.0],
    "transition": [[0.85, 0.15, 0.0, 0.0], [0.1, 0.8, 0.1, 0.0], [0.0, 0.1, 0.8, 0.1], [0.0, 0.0, 0.15, 0.85]],
}


def channel_spec(text: str) -> dict | None:
    """``fading`` (the link profile's own), ``markov`` (a 4-state default), ``trace:FILE.csv`` or
    ``FILE.csv`` (replay), or a YAML file holding a `splitrl.channel.make_channel` spec."""
    if text in ("fading", "profile"):
        return None
    if text == "markov":
        return dict(DEFAULT_MARKOV)
    path = text.split(":", 1)[1] if text.startswith("trace:") else text
    p = Path(path)
    if p.suffix == ".csv":
        if not p.is_file():
            raise UsageError(f"--channel: trace file {p} not found")
        return {"kind": "trace", "path": str(p), "on_end": "loop"}
    if p.suffix in (".yaml", ".yml") and p.is_file():
        import yaml

        spec = yaml.safe_load(p.read_text())
        if not isinstance(spec, dict) or "kind" not in spec:
            raise UsageError(f"--channel: {p} must hold a mapping with a 'kind' (fading, markov, trace)")
        return spec
    raise UsageError(f"--channel must be fading, markov, trace:FILE.csv, FILE.csv or a spec.yaml; got {text!r}")


def build_channel(spec: dict | None, link_profile, slot_s: float, rng: np.random.Generator):
    """The channel of ``spec`` (None: ``link_profile``'s correlated fading, re-timed so that one
    slot lasts ``slot_s`` — one decision epoch)."""
    if spec is None:
        return CorrelatedFadingChannel(replace(link_profile.fading_config(), slot_s=slot_s), rng)
    return make_channel(dict(spec), rng)


class ChannelProcess:
    """A channel advanced one slot per request, with the SNR history (newest first).

    ``reset(seed)`` draws the channel's stream the way the env does at ``reset(seed=)`` (a child
    of a generator seeded with ``seed``), so a controller and an env with the same seed see the
    same SNRs.
    """

    edge_load: float | None = None  # no shared-edge process here: a scenario has one
    edge_load_reported: float | None = None

    def __init__(self, spec: dict | None, link_profile, *, slot_s: float, history: int, seed: int = 0) -> None:
        self.history_len = int(history)
        self.slot_s = float(slot_s)
        if spec is not None and spec.get("kind") == "trace" and spec.get("slot_s") is None:
            spec = {**spec, "slot_s": self.slot_s}  # read the trace at the arrival times (its time column)
        self.spec = spec
        self.channel = build_channel(spec, link_profile, slot_s, np.random.default_rng(0))
        self.rng = np.random.default_rng(seed)
        self.reset(seed)

    def reset(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.channel.reset(np.random.default_rng(int(self.rng.integers(2**63 - 1))))
        self.snr_db = float(self.channel.step().snr_db)
        self.history: list[float] = []
        self.k = 0

    @property
    def time_s(self) -> float:
        """This request's arrival time, s from the first request (one slot per request)."""
        return self.k * self.slot_s

    def advance(self) -> float:
        """Move to the next slot; returns its SNR."""
        self.history = [self.snr_db, *self.history][: self.history_len]
        self.snr_db = float(self.channel.step().snr_db)
        self.k += 1
        return self.snr_db
