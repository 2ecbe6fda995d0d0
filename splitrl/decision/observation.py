"""What a split decision observes: `Observation` (the controller's view of one request) and
`ObservationSpec` (the vector layout the agents act on, and the action <-> split mapping).

The split-point envs and the deployed controller both build their vectors with
`ObservationSpec.vector`, so a trained agent sees identical inputs in training and in deployment.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

from splitrl.decision.config import ACTION_MODES
from splitrl.errors import UsageError

__all__ = ["SNR_BOUNDS_DB", "Observation", "ObservationSpec", "round_snr"]

SNR_BOUNDS_DB = (-50.0, 80.0)


def round_snr(snr_db: float, resolution_db: float) -> float:
    """``snr_db`` rounded to a multiple of ``resolution_db`` (unchanged when it is 0): how the
    split-point env quantises its channel and how the deployed observation matches it."""
    return round(snr_db / resolution_db) * resolution_db if resolution_db > 0 else snr_db



@dataclass(frozen=True)
class Observation:
    """What the controller knows before a request.

    Attributes:
        snr_db: SNR of this slot, dB.
        snr_history_db: SNRs of the previous slots, newest first (may be shorter than the spec's history).
        bandwidth_mhz: uplink bandwidth, MHz.
        split: the split in place (layers on the UE).
        battery: UE battery level in [0, 1] (None when not modelled).
        load: UE compute load in [0, 1] (None when not modelled).
        edge_load: shared edge server's utilisation in [0, 1) as last reported (None when not modelled).
        privacy_target: smallest split this request may use (None: the configured ``s_min``).
        edge_available: False after a fallback until the edge's health check passes.
    """

    snr_db: float
    snr_history_db: tuple[float, ...] = ()
    bandwidth_mhz: float = 0.0
    split: int = 0
    battery: float | None = None
    load: float | None = None
    edge_load: float | None = None
    privacy_target: int | None = None
    edge_available: bool = True


@dataclass(frozen=True)
class ObservationSpec:
    """The observation vector layout and the action -> split mapping of the split-point MDP.

    Vector: ``[snr, snr_1..snr_history (newest first, padded with snr), bandwidth_mhz, split
    (, battery, load)(, edge_load)(, privacy_target)]``, SNRs rounded to ``snr_resolution_db``
    (0: not rounded; the env's channel resolution) and clipped to `SNR_BOUNDS_DB`; the
    optional parts are present when ``include_ue_state`` / ``include_edge_load`` /
    ``include_privacy_target`` are set (`index` gives each field's position). ``edge_load`` is the
    edge's reported utilisation (0 when unknown); ``privacy_target`` is the request's smallest
    allowed split in layers (``s_min`` when the request has none).

    Actions: ``absolute`` — action ``a`` selects split ``s_min + a // num_options`` and option
    ``o = a % num_options`` (``num_options = num_codecs * num_precisions``), i.e. codec
    ``o // num_precisions`` and UE precision ``o % num_precisions`` (with one precision: codec
    ``a % num_codecs``, as before precisions existed); ``relative`` — moves the split in place by
    ``a - max_move``, clipped to ``[s_min, L]`` (one codec, one precision).
    """

    num_layers: int
    history: int = 4
    s_min: int = 1
    action_mode: str = "absolute"
    max_move: int = 4
    include_ue_state: bool = False
    include_edge_load: bool = False
    include_privacy_target: bool = False
    num_codecs: int = 1
    snr_resolution_db: float = 0.0
    num_precisions: int = 1

    def __post_init__(self) -> None:
        if self.action_mode not in ACTION_MODES:
            raise UsageError(f"action_mode must be one of {', '.join(ACTION_MODES)}, got {self.action_mode!r}")
        if not 0 <= self.s_min <= self.num_layers:
            raise UsageError(f"s_min must be in 0..{self.num_layers}, got {self.s_min}")
        if self.history < 0 or self.max_move < 1:
            raise UsageError(f"history must be >= 0 and max_move >= 1, got {self.history}, {self.max_move}")
        if not (math.isfinite(self.snr_resolution_db) and 0.0 <= self.snr_resolution_db <= 5.0):
            raise UsageError(f"snr_resolution_db must be in [0, 5], got {self.snr_resolution_db!r}")
        if self.num_codecs < 1 or (self.num_codecs > 1 and self.action_mode != "absolute"):
            raise UsageError(f"codecs: more than one codec needs action_mode absolute, got {self.num_codecs} "
                             f"codecs with {self.action_mode!r}")
        if self.num_precisions < 1 or (self.num_precisions > 1 and self.action_mode != "absolute"):
            raise UsageError(f"ue_precisions: more than one UE precision needs action_mode absolute, got "
                             f"{self.num_precisions} precisions with {self.action_mode!r}")

    @classmethod
    def from_config(cls, config: Any, num_layers: int) -> "ObservationSpec":
        """The spec of a `SplitPointConfig` for a model of ``num_layers`` layers."""
        return cls(num_layers=int(num_layers), history=config.history, s_min=config.s_min,
                   action_mode=config.action_mode, max_move=config.max_move, include_ue_state=config.include_ue_state,
                   include_edge_load=getattr(config, "edge_load", None) is not None,
                   include_privacy_target=bool(getattr(config, "privacy_targets", ())),
                   num_codecs=max(1, len(getattr(config, "codecs", None) or ())),
                   snr_resolution_db=float(getattr(config, "snr_resolution_db", 0.0)),
                   num_precisions=max(1, len(getattr(config, "ue_precisions", None) or ())))

    @property
    def L(self) -> int:
        return self.num_layers

    @property
    def size(self) -> int:
        return (self.history + 3 + (2 if self.include_ue_state else 0) + int(self.include_edge_load)
                + int(self.include_privacy_target))

    def box(self) -> spaces.Box:
        """The gymnasium ``Box`` of the vector (bounds per field)."""
        k = self.history
        low = [SNR_BOUNDS_DB[0]] * (k + 1) + [0.0, 0.0]
        high = [SNR_BOUNDS_DB[1]] * (k + 1) + [1e4, float(self.num_layers)]
        if self.include_ue_state:
            low += [0.0, 0.0]
            high += [1.0, 1.0]
        if self.include_edge_load:
            low.append(0.0)
            high.append(1.0)
        if self.include_privacy_target:
            low.append(0.0)
            high.append(float(self.num_layers))
        return spaces.Box(np.array(low, np.float32), np.array(high, np.float32), dtype=np.float32)

    def index(self, name: str) -> int:
        """Position of ``name`` (snr, bandwidth, split, battery, load, edge_load, privacy_target) in the vector."""
        k = self.history
        pos = {"snr": 0, "bandwidth": k + 1, "split": k + 2}
        i = k + 3
        if self.include_ue_state:
            pos["battery"], pos["load"] = i, i + 1
            i += 2
        if self.include_edge_load:
            pos["edge_load"] = i
            i += 1
        if self.include_privacy_target:
            pos["privacy_target"] = i
        if name not in pos:
            raise KeyError(f"{name!r} is not in this observation (fields: {', '.join(pos)})")
        return pos[name]

    @property
    def num_options(self) -> int:
        """(codec, UE precision) combinations per split."""
        return self.num_codecs * self.num_precisions

    @property
    def num_actions(self) -> int:
        if self.action_mode == "absolute":
            return (self.num_layers - self.s_min + 1) * self.num_options
        return 2 * self.max_move + 1

    def vector(self, obs: Observation) -> np.ndarray:
        """The float32 observation vector ``[size]`` the agents act on. SNRs are rounded to
        ``snr_resolution_db`` as the split-point env rounds its channel, so a deployed agent sees
        the values it was trained on."""
        hist = (list(obs.snr_history_db) + [obs.snr_db] * self.history)[: self.history]
        r = self.snr_resolution_db
        snrs = [round_snr(x, r) for x in (obs.snr_db, *hist)]
        lo, hi = SNR_BOUNDS_DB  # clipped before the float32 cast: the same values (the bounds are exact)
        v = [*(min(max(float(x), lo), hi) for x in snrs), obs.bandwidth_mhz, float(obs.split)]
        if self.include_ue_state:
            v += [1.0 if obs.battery is None else obs.battery, 0.3 if obs.load is None else obs.load]
        if self.include_edge_load:
            v.append(0.0 if obs.edge_load is None else float(obs.edge_load))
        if self.include_privacy_target:
            v.append(float(self.s_min if obs.privacy_target is None else obs.privacy_target))
        return np.asarray(v, dtype=np.float32)

    def snr_levels(self) -> list[float]:
        """Every SNR the vector can hold with ``snr_resolution_db > 0`` (as the agents read it:
        float32), within `SNR_BOUNDS_DB`; empty when SNRs are not rounded."""
        r = self.snr_resolution_db
        if r <= 0:
            return []
        lo, hi = SNR_BOUNDS_DB
        ks = range(math.ceil(lo / r - 1e-9), math.floor(hi / r + 1e-9) + 1)
        return sorted({float(np.float32(min(max(k * r, lo), hi))) for k in ks})

    def split_for_action(self, action: int, split_in_place: int) -> int:
        a = int(action)
        if not 0 <= a < self.num_actions:
            raise UsageError(f"action {action!r} outside Discrete({self.num_actions})")
        if self.action_mode == "absolute":
            return self.s_min + a // self.num_options
        return int(np.clip(split_in_place + a - self.max_move, self.s_min, self.num_layers))

    def option_for_action(self, action: int) -> int:
        """Index ``codec * num_precisions + precision`` of the option ``action`` selects (0 with one)."""
        return int(action) % self.num_options if self.action_mode == "absolute" else 0

    def codec_for_action(self, action: int) -> int:
        """Index of the codec ``action`` selects (0 with one codec)."""
        return self.option_for_action(action) // self.num_precisions

    def precision_for_action(self, action: int) -> int:
        """Index of the UE precision ``action`` selects (0 with one precision or none configured)."""
        return self.option_for_action(action) % self.num_precisions

    def action_for_split(self, split: int, split_in_place: int, codec: int = 0, precision: int = 0) -> int:
        if not self.s_min <= split <= self.num_layers:
            raise UsageError(f"split {split} outside {self.s_min}..{self.num_layers}")
        if not 0 <= codec < self.num_codecs:
            raise UsageError(f"codec {codec} outside 0..{self.num_codecs - 1}")
        if not 0 <= precision < self.num_precisions:
            raise UsageError(f"precision {precision} outside 0..{self.num_precisions - 1}")
        if self.action_mode == "absolute":
            return int((split - self.s_min) * self.num_options + codec * self.num_precisions + precision)
        return int(np.clip(split - split_in_place, -self.max_move, self.max_move) + self.max_move)
