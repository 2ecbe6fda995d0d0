"""The split-point reward: quality loss, emulated latency, UE energy and switching, weighted.

    reward = -( w_quality * log(ppl / ppl_clean)
              + w_latency * latency_s / latency_ref_s
              + w_energy  * ue_energy_j / energy_ref_j
              + w_switch  * [s != s_prev] * (switch_fixed + switch_per_layer * |s - s_prev|)
              + w_privacy * recovery(s) )

Quality is the log perplexity ratio against the unsplit, lossless model (0 when nothing is
lost). Latency and energy are divided by references (by default the all-on-UE split ``s = L``,
which needs no link), so each term is "how many all-on-UE requests' worth" it costs. Moving the
split costs a fixed part (re-planning, re-establishing the pipeline) plus a part per layer whose
weights and KV cache must change device. ``recovery(s)`` is the measured top-1 token recovery of
an inversion probe on what crosses the link at cut ``s`` (`splitrl.cost.privacy`; 0 when privacy
is not modelled). The energy weight may be scaled per request (``energy_scale``: the battery-aware
weight of `battery_energy_scale`, 1 when the battery is not modelled). Every function here is
vectorised over splits so the envs, the oracle and the planners share one definition.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from splitrl.errors import UsageError

LATENCY_METRICS = ("ttft", "tpot", "e2e")


@dataclass
class RewardConfig:
    """Weights and references of the split-point reward.

    Attributes:
        w_quality: weight of log(ppl / ppl_clean), >= 0.
        w_latency: weight of latency / latency_ref_s, >= 0.
        w_energy: weight of UE energy / energy_ref_j, >= 0.
        w_switch: weight of the switching cost, >= 0.
        latency_metric: ``ttft`` (time to first token), ``tpot`` (time per output token) or ``e2e`` (whole request).
        latency_ref_s: latency reference in seconds (None: the all-on-UE split's latency).
        energy_ref_j: UE energy reference in joules per token (None: the all-on-UE split's).
        switch_fixed: switching cost of any move, in reward units before ``w_switch``.
        switch_per_layer: additional switching cost per layer moved.
        w_privacy: weight of the probe's top-1 token recovery at the cut (a fraction in [0, 1]), >= 0;
            only charged when the env models privacy (``SplitPointConfig.privacy_table``).
    """

    w_quality: float = 1.0
    w_latency: float = 1.0
    w_energy: float = 0.5
    w_switch: float = 1.0
    latency_metric: str = "e2e"
    latency_ref_s: float | None = None
    energy_ref_j: float | None = None
    switch_fixed: float = 0.05
    switch_per_layer: float = 0.005
    w_privacy: float = 0.0

    def __post_init__(self) -> None:
        for name in ("w_quality", "w_latency", "w_energy", "w_switch", "switch_fixed", "switch_per_layer", "w_privacy"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v >= 0):
                raise UsageError(f"RewardConfig.{name} must be a finite number >= 0, got {v!r}")
        if self.latency_metric not in LATENCY_METRICS:
            raise UsageError(f"RewardConfig.latency_metric must be one of {', '.join(LATENCY_METRICS)}, got {self.latency_metric!r}")
        for name in ("latency_ref_s", "energy_ref_j"):
            v = getattr(self, name)
            if v is not None and not (np.isfinite(v) and v > 0):
                raise UsageError(f"RewardConfig.{name} must be > 0 or None, got {v!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def switch_cost(config: RewardConfig, split, previous) -> np.ndarray:
    """Switching cost (before ``w_switch``) of moving from ``previous`` to ``split`` (broadcasts)."""
    moved = np.abs(np.asarray(split) - np.asarray(previous))
    return np.where(moved > 0, config.switch_fixed + config.switch_per_layer * moved, 0.0)


def reward_terms(
    config: RewardConfig,
    *,
    log_ppl_ratio,
    latency_s,
    energy_j,
    split,
    previous_split,
    latency_ref_s: float,
    energy_ref_j: float,
    privacy_recovery=None,
    energy_scale=1.0,
) -> dict[str, np.ndarray]:
    """Each weighted cost term and the total reward; every argument broadcasts (e.g. over splits).

    ``privacy_recovery`` (None: privacy not modelled, no ``privacy`` term) is the probe's top-1
    recovery at the cut; ``energy_scale`` multiplies ``w_energy`` (the battery-aware weight).
    """
    terms = {
        "quality": config.w_quality * np.asarray(log_ppl_ratio, dtype=float),
        "latency": config.w_latency * np.asarray(latency_s, dtype=float) / latency_ref_s,
        "energy": config.w_energy * np.asarray(energy_scale, dtype=float) * np.asarray(energy_j, dtype=float) / energy_ref_j,
        "switch": config.w_switch * switch_cost(config, split, previous_split),
    }
    total = terms["quality"] + terms["latency"] + terms["energy"] + terms["switch"]
    if privacy_recovery is not None:
        terms["privacy"] = config.w_privacy * np.asarray(privacy_recovery, dtype=float)
        total = total + terms["privacy"]
    terms["reward"] = -total
    return terms


def battery_energy_scale(battery, floor: float = 0.05):
    """Battery-aware energy weight multiplier ``1 / max(battery, floor)`` (1 at a full battery).

    Why this shape: with a battery level ``b`` the marginal value of a joule is inversely
    proportional to what is left — the drift-plus-penalty weight of Lyapunov energy-queue
    offloading policies (e.g. Mao, Zhang, Letaief, "Dynamic computation offloading for mobile-edge
    computing with energy harvesting devices", IEEE JSAC 34(12), 2016, where the energy weight is
    the battery deficit). The floor keeps the weight finite on an empty battery (x20 at 5 %).
    """
    return 1.0 / np.maximum(np.asarray(battery, dtype=float), floor)
