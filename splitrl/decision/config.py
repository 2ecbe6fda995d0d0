"""The split-point MDP's configuration: `SplitPointConfig` and the action modes.

Owns the fields every split-point backend (table, real evaluation, surrogate) and the deployed
controller share, and their validation. It is plain data: building the cost model, the spaces
or the channel from it is `splitrl.decision.problem.SplitProblem`'s job.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from splitrl.cost.edge_load import EdgeLoadConfig
from splitrl.decision.reward import RewardConfig
from splitrl.link import LINK_NAMES
from splitrl.quant.precision import check_precision
from splitrl.errors import UsageError

__all__ = ["ACTION_MODES", "SplitPointConfig"]

ACTION_MODES = ("absolute", "relative")
"""``absolute``: the action names the split; ``relative``: it moves the split in place."""


@dataclass
class SplitPointConfig:
    """Configuration of the split-point MDP (all three backends).

    Attributes:
        model: model name (`splitrl.models.load_model`); the number of layers L comes from it.
        transport: link at the cut (`splitrl.link.LINK_NAMES`), e.g. ``awgn`` or ``int8-biterr``.
        modulation: maps SNR to BER for digital transports (uncoded, AWGN).
        s_min: smallest allowed split; 1 keeps raw tokens on the UE (privacy), 0 allows sending them.
        action_mode: ``absolute`` (Discrete over [s_min, L]) or ``relative`` (stay / move by 1..max_move).
        max_move: largest relative move in layers (relative mode), 1..8.
        history: number of past SNRs in the observation, >= 0.
        channel: channel spec for `splitrl.channel.make_channel` (None: the link profile's own fading
            channel, re-timed so one slot is one decision epoch).
        decision_interval_s: time between decisions (one request), seconds; sets the channel's
            correlation from one step to the next when ``channel`` is None.
        ue_profile, edge_profile, link_profile: device/link profiles (`splitrl.cost`).
        prompt_tokens, new_tokens: the request whose latency/energy the cost model emulates.
        reward: reward weights and references.
        include_ue_state: add battery level and compute load to the observation.
        battery_capacity_j: UE battery energy budget of an episode, joules (> 0).
        request_timeout_s: a request whose emulated latency exceeds this times out and is charged
            this latency (a dead link has infinite latency; the reward stays finite), > 0.
        initial_split: split in place at reset (None: drawn uniformly from the allowed splits).
        eval_tokens, eval_window: WikiText-2 tokens and window per real evaluation (SplitPoint-v0).
        table: sweep CSV backing SplitPointTable-v0 (None: the committed SmolLM2 sweep).
        prefill_chunks: largest number of chunks the UE pipelines the prompt in (1: sequential
            prefill, the old model); see `splitrl.cost.model`.
        edge_load: the shared edge's background utilisation process (`splitrl.cost.EdgeLoadConfig`
            or its dict; None: a dedicated idle edge). Adds the (delayed) edge load to the observation.
        battery_aware_energy: with ``include_ue_state``, the energy weight is scaled by
            ``1 / max(battery, 0.05)`` (`splitrl.decision.reward.battery_energy_scale`).
        battery_range: the battery level at reset is uniform in this range (``(1, 1)``: full).
        memory_mask: splits whose UE weights + KV cache exceed the UE profile's memory budget
            (`CostModel.feasible_splits`) are not allowed (an action selecting one runs the nearest
            allowed split; `action_masks` lists the allowed actions).
        privacy_table: privacy file (top-1 token recovery per cut, `splitrl.cost.privacy`);
            None: privacy not modelled. With it the reward charges ``reward.w_privacy * recovery``.
        privacy_targets: per-request privacy targets (largest tolerated recovery), one drawn
            uniformly per request; the smallest split meeting it is that request's floor (shown
            in the observation). Empty: no per-request floor. Needs ``privacy_table``.
        codecs: transports the action may choose per request (absolute mode; the action is
            (split, codec)); empty: ``transport`` only. Each needs its rows in the sweep table.
        snr_resolution_db: the channel's SNR is rounded to this step (0: not rounded). With a
            step > 0 the table env precomputes its per-state figures on that SNR grid (fast path).
        ue_precisions: weight precisions (`splitrl.quant.precision.PRECISIONS`) the action may run
            the UE's segment at (absolute mode; the action is (split, codec, UE precision), the
            edge stays fp32); empty (default): no precision in the action, the UE profile's
            ``weight_dtype`` — every result before precisions existed. Each needs ``precision_rates``
            in the UE profile and, for the table env, rows with that ``ue_precision`` in the sweep.
    """

    model: str = "smollm2-135m"
    transport: str = "awgn"
    modulation: str = "qpsk"
    s_min: int = 1
    action_mode: str = "absolute"
    max_move: int = 4
    history: int = 4
    channel: dict | None = None
    decision_interval_s: float = 0.5
    ue_profile: str = "phone-midrange"
    edge_profile: str = "edge-a100"
    link_profile: str = "nr-sub6-20mhz"
    prompt_tokens: int = 128
    new_tokens: int = 32
    reward: RewardConfig = field(default_factory=RewardConfig)
    include_ue_state: bool = False
    battery_capacity_j: float = 2000.0
    request_timeout_s: float = 10.0
    initial_split: int | None = None
    eval_tokens: int = 256
    eval_window: int = 256
    table: str | None = None
    prefill_chunks: int = 1
    edge_load: Any = None
    battery_aware_energy: bool = False
    battery_range: tuple[float, float] = (1.0, 1.0)
    memory_mask: bool = False
    privacy_table: str | None = None
    privacy_targets: tuple[float, ...] = ()
    codecs: tuple[str, ...] = ()
    snr_resolution_db: float = 0.0
    ue_precisions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.reward, dict):
            self.reward = RewardConfig(**self.reward)
        if isinstance(self.edge_load, dict):
            self.edge_load = EdgeLoadConfig(**self.edge_load)
        if self.edge_load is not None and not isinstance(self.edge_load, EdgeLoadConfig):
            raise UsageError(f"edge_load must be None or an EdgeLoadConfig mapping, got {self.edge_load!r}")
        if isinstance(self.prefill_chunks, bool) or not isinstance(self.prefill_chunks, int) or not 1 <= self.prefill_chunks <= 64:
            raise UsageError(f"prefill_chunks must be an integer in 1..64, got {self.prefill_chunks!r}")
        br = tuple(float(x) for x in self.battery_range)
        if len(br) != 2 or not 0.0 <= br[0] <= br[1] <= 1.0:
            raise UsageError(f"battery_range must be (low, high) with 0 <= low <= high <= 1, got {self.battery_range!r}")
        self.battery_range = br
        self.privacy_targets = tuple(float(x) for x in self.privacy_targets)
        if any(not 0.0 <= t <= 1.0 for t in self.privacy_targets):
            raise UsageError(f"privacy_targets must be recoveries in [0, 1], got {self.privacy_targets!r}")
        if self.privacy_targets and not self.privacy_table:
            raise UsageError("privacy_targets need privacy_table (the measured recovery per cut)")
        self.codecs = tuple(str(c) for c in self.codecs)
        for c in self.codecs:
            if c not in LINK_NAMES:
                raise UsageError(f"codecs: {c!r} not allowed; choose from {', '.join(LINK_NAMES)}")
        if len(set(self.codecs)) != len(self.codecs):
            raise UsageError(f"codecs must be distinct, got {self.codecs!r}")
        if not (math.isfinite(self.snr_resolution_db) and 0.0 <= self.snr_resolution_db <= 5.0):
            raise UsageError(f"snr_resolution_db must be in [0, 5], got {self.snr_resolution_db!r}")
        if len(self.codecs) > 1 and self.action_mode != "absolute":
            raise UsageError("codecs: choosing a codec per request needs action_mode absolute")
        if isinstance(self.ue_precisions, str):
            raise UsageError(f"ue_precisions must be a list of precisions, got the string {self.ue_precisions!r}")
        self.ue_precisions = tuple(check_precision(p, "ue_precisions") for p in self.ue_precisions)
        if len(set(self.ue_precisions)) != len(self.ue_precisions):
            raise UsageError(f"ue_precisions must be distinct, got {self.ue_precisions!r}")
        if len(self.ue_precisions) > 1 and self.action_mode != "absolute":
            raise UsageError("ue_precisions: choosing the UE precision per request needs action_mode absolute")
        if self.transport not in LINK_NAMES:
            raise UsageError(f"transport {self.transport!r} not allowed; choose from {', '.join(LINK_NAMES)}")
        if self.action_mode not in ACTION_MODES:
            raise UsageError(f"action_mode must be one of {', '.join(ACTION_MODES)}, got {self.action_mode!r}")
        if self.s_min < 0:
            raise UsageError(f"s_min must be >= 0, got {self.s_min}")
        if not 1 <= self.max_move <= 8:
            raise UsageError(f"max_move must be in 1..8, got {self.max_move}")
        if self.history < 0:
            raise UsageError(f"history must be >= 0, got {self.history}")
        for name in ("prompt_tokens", "new_tokens", "eval_tokens", "eval_window"):
            if getattr(self, name) < 1 + (name in ("eval_tokens", "eval_window")):
                raise UsageError(f"{name} must be >= {1 + (name in ('eval_tokens', 'eval_window'))}, got {getattr(self, name)}")
        if not self.decision_interval_s > 0:
            raise UsageError(f"decision_interval_s must be > 0, got {self.decision_interval_s}")
        if not self.request_timeout_s > 0:
            raise UsageError(f"request_timeout_s must be > 0, got {self.request_timeout_s}")
        if not self.battery_capacity_j > 0:
            raise UsageError(f"battery_capacity_j must be > 0, got {self.battery_capacity_j}")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def transports(self) -> tuple[str, ...]:
        """The transports an action may use: ``codecs``, or ``(transport,)``."""
        return self.codecs or (self.transport,)
