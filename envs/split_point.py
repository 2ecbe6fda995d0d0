"""The split-point MDP: where to cut the LM, slot by slot, as the wireless channel changes.

Owns the environment logic shared by every backend (channel evolution, observation, actions,
reward) and two quality backends: `SplitPointEnv` (a real perplexity evaluation of the split
model through the emulated link, each step) and `SplitPointTableEnv` (the measured sweep table).
`splitrl.surrogate.SurrogateEnv` is the third backend (a learned model).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from splitrl.controller.policy import ACTION_MODES, SNR_BOUNDS_DB, round_snr
from splitrl.quant.precision import PRECISIONS
from splitrl.resources import resource_path
from splitrl.reward import RewardConfig

DEFAULT_TABLE = resource_path("sweep_smollm2.csv")


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
            ``1 / max(battery, 0.05)`` (`splitrl.reward.battery_energy_scale`).
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
        from splitrl.cost.edge_load import EdgeLoadConfig
        from splitrl.link import LINK_NAMES

        if isinstance(self.reward, dict):
            self.reward = RewardConfig(**self.reward)
        if isinstance(self.edge_load, dict):
            self.edge_load = EdgeLoadConfig(**self.edge_load)
        if self.edge_load is not None and not isinstance(self.edge_load, EdgeLoadConfig):
            raise ValueError(f"edge_load must be None or an EdgeLoadConfig mapping, got {self.edge_load!r}")
        if isinstance(self.prefill_chunks, bool) or not isinstance(self.prefill_chunks, int) or not 1 <= self.prefill_chunks <= 64:
            raise ValueError(f"prefill_chunks must be an integer in 1..64, got {self.prefill_chunks!r}")
        br = tuple(float(x) for x in self.battery_range)
        if len(br) != 2 or not 0.0 <= br[0] <= br[1] <= 1.0:
            raise ValueError(f"battery_range must be (low, high) with 0 <= low <= high <= 1, got {self.battery_range!r}")
        self.battery_range = br
        self.privacy_targets = tuple(float(x) for x in self.privacy_targets)
        if any(not 0.0 <= t <= 1.0 for t in self.privacy_targets):
            raise ValueError(f"privacy_targets must be recoveries in [0, 1], got {self.privacy_targets!r}")
        if self.privacy_targets and not self.privacy_table:
            raise ValueError("privacy_targets need privacy_table (the measured recovery per cut)")
        self.codecs = tuple(str(c) for c in self.codecs)
        for c in self.codecs:
            if c not in LINK_NAMES:
                raise ValueError(f"codecs: {c!r} not allowed; choose from {', '.join(LINK_NAMES)}")
        if len(set(self.codecs)) != len(self.codecs):
            raise ValueError(f"codecs must be distinct, got {self.codecs!r}")
        if not (math.isfinite(self.snr_resolution_db) and 0.0 <= self.snr_resolution_db <= 5.0):
            raise ValueError(f"snr_resolution_db must be in [0, 5], got {self.snr_resolution_db!r}")
        if len(self.codecs) > 1 and self.action_mode != "absolute":
            raise ValueError("codecs: choosing a codec per request needs action_mode absolute")
        from splitrl.quant.precision import check_precision

        if isinstance(self.ue_precisions, str):
            raise ValueError(f"ue_precisions must be a list of precisions, got the string {self.ue_precisions!r}")
        self.ue_precisions = tuple(check_precision(p, "ue_precisions") for p in self.ue_precisions)
        if len(set(self.ue_precisions)) != len(self.ue_precisions):
            raise ValueError(f"ue_precisions must be distinct, got {self.ue_precisions!r}")
        if len(self.ue_precisions) > 1 and self.action_mode != "absolute":
            raise ValueError("ue_precisions: choosing the UE precision per request needs action_mode absolute")
        if self.transport not in LINK_NAMES:
            raise ValueError(f"transport {self.transport!r} not allowed; choose from {', '.join(LINK_NAMES)}")
        if self.action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode must be one of {', '.join(ACTION_MODES)}, got {self.action_mode!r}")
        if self.s_min < 0:
            raise ValueError(f"s_min must be >= 0, got {self.s_min}")
        if not 1 <= self.max_move <= 8:
            raise ValueError(f"max_move must be in 1..8, got {self.max_move}")
        if self.history < 0:
            raise ValueError(f"history must be >= 0, got {self.history}")
        for name in ("prompt_tokens", "new_tokens", "eval_tokens", "eval_window"):
            if getattr(self, name) < 1 + (name in ("eval_tokens", "eval_window")):
                raise ValueError(f"{name} must be >= {1 + (name in ('eval_tokens', 'eval_window'))}, got {getattr(self, name)}")
        if not self.decision_interval_s > 0:
            raise ValueError(f"decision_interval_s must be > 0, got {self.decision_interval_s}")
        if not self.request_timeout_s > 0:
            raise ValueError(f"request_timeout_s must be > 0, got {self.request_timeout_s}")
        if not self.battery_capacity_j > 0:
            raise ValueError(f"battery_capacity_j must be > 0, got {self.battery_capacity_j}")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def transports(self) -> tuple[str, ...]:
        """The transports an action may use: ``codecs``, or ``(transport,)``."""
        return self.codecs or (self.transport,)


class SplitPointBaseEnv(gym.Env):
    """Split-point control of a transformer LM between a UE and an edge server over a fading link.

    ## Description
    Each step is one decision epoch (one inference request). The UE observes the channel SNR
    of this slot (and the last ``history`` ones) and chooses the split point ``s``: the UE runs
    embeddings + layers ``[0, s)``, sends the activations at the cut over the emulated link
    (``config.transport``, or the codec the action picks), and the edge runs layers ``[s, L)`` +
    head. The link corrupts what crosses it depending on the SNR; the request's latency and UE
    energy come from the device cost model (`splitrl.cost.CostModel`). Then the channel moves to
    the next slot (correlated fading, a Markov channel or a replayed trace).

    Every richer term is a config switch (`SplitPointConfig`; the dataclass defaults keep the
    original MDP, ``configs/base.yaml`` switches them on):

    | switch | what it models | source / reason |
    |---|---|---|
    | ``prefill_chunks`` | pipelined prefill: TTFT = fill + (c-1)·max(UE chunk, air, edge chunk), best c <= C per split | `splitrl.cost.model` (chunked prefill; per-chunk grant + HARQ) |
    | ``edge_load`` | shared edge: background utilisation (Markov or trace) observed with ``delay_steps`` delay; edge per-layer time x M/D/1 factor 1 + rho/(2(1-rho)); this UE's own edge work per decision interval adds to rho | `splitrl.cost.edge_load` (cluster-trace utilisation levels) |
    | ``include_ue_state`` | battery level and UE background/thermal load (UE compute x 1/(1 - load/2)) | AR(1) load around 0.3 |
    | ``battery_aware_energy`` | energy weight x 1/max(battery, 0.05); ``battery_range`` draws the level at reset | Lyapunov energy-queue weighting (`splitrl.reward.battery_energy_scale`) |
    | ``memory_mask`` | splits whose UE weights + KV cache exceed the UE profile's ``memory_budget_bytes`` are not allowed | `CostModel.feasible_splits`, the profile's budget |
    | ``privacy_table`` / ``privacy_targets`` | reward ``w_privacy`` x probe top-1 token recovery at the cut; per-request target -> smallest split meeting it is that request's floor | measured probe (`splitrl.cost.privacy`) |
    | ``codecs`` | the action is (split, codec): bytes per codec from the codec's frame size, quality per (split, codec, SNR) from the sweep | sweep table rows per transport |
    | ``ue_precisions`` | the action is (split, codec, UE weight precision): UE weight bytes (`splitrl.quant.linear_weight_bytes`), memory mask, compute/bandwidth at that precision; quality per (split, precision, SNR) from the sweep, relative to the fp32 model's clean perplexity | UE profile ``precision_rates``; sweep rows per ``ue_precision`` |

    ## Action space
    ``absolute`` (default): ``Discrete((L - s_min + 1) * n_codecs * n_prec)``; action ``a`` selects
    split ``s_min + a // (n_codecs * n_prec)`` and option ``o = a % (n_codecs * n_prec)``: codec
    ``codecs[o // n_prec]`` and UE precision ``ue_precisions[o % n_prec]`` (``n_codecs = 1`` without
    ``codecs``, ``n_prec = 1`` without ``ue_precisions``: then action ``a`` is split ``s_min + a // n_codecs``,
    codec ``a % n_codecs`` as before).
    ``relative``: ``Discrete(2 * max_move + 1)``; action ``a`` moves the split by ``a - max_move``
    layers (0 = stay), clipped to ``[s_min, L]``.
    A split that is not allowed for this request (below its privacy floor, or over the UE memory
    budget) runs as the nearest allowed split above it (``info["requested_split"]`` records the
    ask); `action_masks` gives the allowed actions (sb3-contrib MaskablePPO convention).

    ## Observation space
    ``Box(float32)`` of length ``history + 3`` (+2 with ``include_ue_state``, +1 with
    ``edge_load``, +1 with ``privacy_targets``), in this order (`ObservationSpec.index`):

    | index | observation | unit | min | max |
    |---|---|---|---|---|
    | 0 | SNR of this slot | dB | -50 | 80 |
    | 1..k | SNR of the k previous slots (newest first) | dB | -50 | 80 |
    | k+1 | uplink bandwidth | MHz | 0 | 10000 |
    | k+2 | split currently in place | layers | 0 | L |
    | (opt.) | battery level (``include_ue_state``) | fraction | 0 | 1 |
    | (opt.) | UE compute load (``include_ue_state``) | fraction | 0 | 1 |
    | (opt.) | edge utilisation as last reported, ``delay_steps`` old (``edge_load``) | fraction | 0 | 1 |
    | (opt.) | this request's privacy floor (``privacy_targets``) | layers | 0 | L |

    ## Reward
    ``-(w_q·log(ppl/ppl_clean) + w_l·latency/latency_ref + w_e·k(b)·energy/energy_ref + w_s·switch
    + w_p·recovery(s))``, see `splitrl.reward`; ``k(b) = 1/max(b, 0.05)`` with
    ``battery_aware_energy`` (else 1); the privacy term only with ``privacy_table``. References
    default to the all-on-UE split (no link involved). Latency includes the edge's queueing at
    the TRUE edge load (the observation's is delayed).

    ## Starting state
    The channel and the edge load restart from their stationary laws (seeded by
    ``reset(seed=)``); the split in place is ``initial_split`` or uniform over the allowed splits;
    battery uniform in ``battery_range`` (full by default), UE load 0.3.

    ## Episode end
    The process is continuing: ``terminated`` is always False. Registration wraps the env in
    ``TimeLimit(max_episode_steps)``, which sets ``truncated`` at the cut.

    ## Info
    ``split, previous_split, snr_db, ppl, ppl_clean, log_ppl_ratio, latency_s, ttft_s, tpot_s,
    energy_j, bytes_on_air, timed_out, reward_terms, real_evaluations`` (running count, within the episode,
    of real perplexity evaluations — or of measured table cells consumed); plus ``edge_load`` (true
    utilisation) with an edge-load process, ``privacy_floor`` with privacy targets, ``transport``
    with ``codecs``, ``ue_precision`` with ``ue_precisions`` and ``requested_split`` when the action's
    split was not allowed. The lifetime
    total is ``env.unwrapped.real_evaluations`` (kept out of ``info`` so that equal seeds give equal infos).

    ## Version history
    * v0: initial version; the richer terms above are opt-in config switches of the same id.
    """

    metadata = {"render_modes": []}
    supports_ue_precisions = False  # a quality backend that can measure each UE precision sets this

    def __init__(self, config: SplitPointConfig | None = None, *, num_layers: int, view=None, **overrides: Any) -> None:
        super().__init__()
        config = config or SplitPointConfig()
        if overrides:
            config = SplitPointConfig(**{**asdict(config), **overrides})
        self.config = config
        self.L = int(num_layers)
        if not 0 <= config.s_min <= self.L:
            raise ValueError(f"s_min must be in 0..{self.L}, got {config.s_min}")
        if config.initial_split is not None and not config.s_min <= config.initial_split <= self.L:
            raise ValueError(f"initial_split must be in {config.s_min}..{self.L}, got {config.initial_split}")
        self.splits = np.arange(config.s_min, self.L + 1)
        self.transports = config.transports
        self.precisions: tuple[str, ...] = tuple(config.ue_precisions)
        if self.precisions and not self.supports_ue_precisions:
            from splitrl.errors import UsageError

            raise UsageError(f"ue_precisions: {type(self).__name__} cannot measure quality per UE precision "
                             f"(use splitrl/SplitPointTable-v0 with a sweep that has ue_precision rows)")
        self._setup_costs(view)
        # (transport, UE precision) of each action option, in action order (precision None: off).
        self.options: tuple[tuple[str, str | None], ...] = self.costs.options
        self._setup_channel()
        # The edge-load state lives in plain attributes (_edge_i, _edge_past, _edge_rng) so that
        # training checkpoints capture it; `edge_process` is the stateless model.
        self.edge_process = None
        if config.edge_load is not None:
            from splitrl.cost.edge_load import EdgeLoadModel

            self.edge_process = EdgeLoadModel(config.edge_load)
        self._edge_i = 0
        self._edge_past: list[float] = []
        self._edge_rng = np.random.default_rng(0)
        # Splits whose weights + KV cache fit the UE's memory budget (every split without the mask).
        # With UE precisions, one mask per precision: each precision's weight bytes decide what fits.
        self._memory_fit: dict[str | None, np.ndarray] = {}
        for p in (self.precisions or (None,)):
            fit = np.ones(self.L + 1, dtype=bool)
            if config.memory_mask:
                fit[:] = False
                cm = self.costs.model_for(None, p) if p is not None else self.cost_model
                fit[cm.feasible_splits(config.prompt_tokens + config.new_tokens - 1)] = True
            self._memory_fit[p] = fit
        if config.memory_mask and not any(f[self.splits].any() for f in self._memory_fit.values()):
            raise ValueError(f"memory_mask: no split in {config.s_min}..{self.L} fits the UE memory budget "
                             f"of {config.ue_profile}" + (f" at any of {', '.join(self.precisions)}" if self.precisions else ""))
        self.memory_feasible = self._memory_fit[self.precisions[0] if self.precisions else None]
        self.observation_space = self.obs_spec.box()
        self.action_space = spaces.Discrete(self.obs_spec.num_actions)
        self.real_evaluations = 0
        self._episode_evaluations = 0
        self._snr = 0.0
        self._history: list[float] = []
        self._split = self.L
        self._battery, self._load = 1.0, 0.3
        self._privacy_floor: int | None = None

    # --- set-up -------------------------------------------------------------------------
    def _setup_costs(self, view) -> None:
        from splitrl.controller.costs import RequestCostService
        from splitrl.controller.policy import ObservationSpec

        if view is None:
            from splitrl.models import load_model

            view = load_model(self.config.model).view
        # Costs, references and the reward live in the service the deployed controller uses too.
        self.costs = RequestCostService(self.config, view)
        self.obs_spec = ObservationSpec.from_config(self.config, self.L)

    # Read-only views of the cost service (agents, baselines and benchmarks read these names).
    cost_model = property(lambda self: self.costs.cost_model)
    link_profile = property(lambda self: self.costs.link_profile)
    latency_ref_s = property(lambda self: self.costs.latency_ref_s)
    energy_ref_j = property(lambda self: self.costs.energy_ref_j)
    bandwidth_mhz = property(lambda self: self.costs.bandwidth_mhz)
    _latency_field = property(lambda self: self.costs.latency_field)
    _timeout_energy_per_token = property(lambda self: self.costs.timeout_energy_per_token)

    def _setup_channel(self) -> None:
        from splitrl.controller.channel import build_channel

        rng = np.random.default_rng(0)  # replaced at every reset by a child of self.np_random
        self.channel = build_channel(self.config.channel, self.link_profile, self.config.decision_interval_s, rng)

    # --- quality backend ----------------------------------------------------------------
    def quality(self, split: int, snr_db: float, transport: str | None = None) -> tuple[float, float]:
        """(ppl, log(ppl / ppl_clean)) of one request at ``split`` and ``snr_db`` over ``transport``
        (None: ``config.transport``)."""
        raise NotImplementedError

    @property
    def ppl_clean(self) -> float:
        raise NotImplementedError

    # --- state ----------------------------------------------------------------------------
    @property
    def edge_load(self) -> float | None:
        """True background utilisation of the edge this epoch (None: not modelled)."""
        return None if self.edge_process is None else self.edge_process.value(self._edge_i)

    @property
    def observed_edge_load(self) -> float | None:
        """The edge load the controller sees (reported with a delay; None: not modelled)."""
        return None if self.edge_process is None else self._edge_past[0]

    @property
    def battery(self) -> float | None:
        """Battery level charged in the reward (None unless ``include_ue_state`` and ``battery_aware_energy``)."""
        c = self.config
        return self._battery if (c.include_ue_state and c.battery_aware_energy) else None

    @property
    def ue_load(self) -> float | None:
        return self._load if self.config.include_ue_state else None

    def state_kwargs(self) -> dict[str, Any]:
        """The current state as `RequestCostService` keyword arguments (true edge load, battery)."""
        return {"load": self.ue_load, "edge_load": self.edge_load, "battery": self.battery}

    def allowed_splits(self, privacy_floor: int | None = None, precision: str | None = None) -> np.ndarray:
        """Boolean mask over splits 0..L allowed for a request with ``privacy_floor`` (s_min, memory
        at UE ``precision``; None: the first configured precision, or the profile's dtype)."""
        ok = (self.memory_feasible if precision is None else self._memory_fit[precision]).copy()
        ok[: max(self.config.s_min, privacy_floor or 0)] = False
        if not ok.any():  # the privacy floor and the memory budget exclude each other: all on the UE
            ok[self.L] = True
        return ok

    def action_masks(self) -> np.ndarray:
        """Which actions select an allowed split this step (sb3-contrib MaskablePPO's convention)."""
        ok = self.allowed_splits(self._privacy_floor)
        if self.config.action_mode == "absolute":
            if not self.precisions:
                return np.repeat(ok[self.splits], self.obs_spec.num_codecs)
            per = {p: self.allowed_splits(self._privacy_floor, p)[self.splits] for p in self.precisions}
            return np.stack([per[p] for _, p in self.options], axis=1).ravel()
        m = self.config.max_move
        return np.array([ok[int(np.clip(self._split + a - m, self.config.s_min, self.L))] for a in range(2 * m + 1)])

    def _nearest_allowed(self, split: int, ok: np.ndarray) -> int:
        if ok[split]:
            return split
        up = np.flatnonzero(ok[split:])
        if len(up):
            return int(split + up[0])
        return int(np.flatnonzero(ok)[-1])

    # --- dynamics (costs: `RequestCostService`; observation/actions: `ObservationSpec`) ----------
    def costs_at(self, snr_db: float, *, edge_load: float | None = None, transport: str | None = None,
                 precision: str | None = None):
        """Cost-model figures of every split at ``snr_db`` (a `CostTable`)."""
        return self.costs.costs_at(snr_db, edge_load=edge_load, transport=transport, precision=precision)

    def request_latency(self, snr_db: float, load: float | None = None, **state: Any) -> np.ndarray:
        """See `RequestCostService.request_latency` (keywords ``edge_load``, ``battery``, ``transport``)."""
        return self.costs.request_latency(snr_db, load, **state)

    def request_costs(self, snr_db: float, load: float | None = None, **state: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """See `RequestCostService.request_costs` (keywords ``edge_load``, ``battery``, ``transport``)."""
        return self.costs.request_costs(snr_db, load, **state)

    def base_rewards(self, snr_db: float, load: float | None = None, **state: Any) -> np.ndarray:
        """See `RequestCostService.base_rewards` (keywords ``edge_load``, ``battery``, ``transport``)."""
        return self.costs.base_rewards(snr_db, load, **state)

    def mean_quality(self, snr_db: float, transport: str | None = None, precision: str | None = None) -> np.ndarray:
        """Expected log(ppl / ppl_clean) of every split 0..L at ``snr_db`` (the sweep table's mean
        over measured seeds; the configured table for the real-evaluation env) at UE ``precision``
        (None: the first configured precision; fp32 without any)."""
        tables = getattr(self, "tables", None)
        if tables is None:
            tables = self.__dict__.setdefault("_mean_tables", {})
        key = _table_key(transport or self.config.transport, precision or (self.precisions[0] if self.precisions else None))
        if key not in tables:
            t, p = (key, "fp32") if isinstance(key, str) else key
            tables[key] = SweepTable(self.config.table or DEFAULT_TABLE, t, self.splits, model=self.config.model,
                                     precision=p)
        out = np.zeros(self.L + 1)
        out[self.splits] = tables[key].mean_table(snr_db, self.splits)
        return out

    def action_values(self, previous_split: int | None = None) -> np.ndarray:
        """Expected reward ``[len(splits), num_options]`` of each (split, option) at the current TRUE
        state (edge load, battery, UE load, privacy floor), from ``previous_split`` (None: no switch
        charged); ``-inf`` where the split is not allowed this request. What an oracle maximises.
        Option ``j`` is codec ``j // n_prec`` at UE precision ``j % n_prec`` (`self.options`; with
        one precision: codec ``j``)."""
        st = self.state_kwargs()
        rc = self.config.reward
        out = np.empty((len(self.splits), len(self.options)))
        for j, (t, p) in enumerate(self.options):
            ok = self.allowed_splits(self._privacy_floor, p)[self.splits]
            base = self.costs.base_rewards(self._snr, st["load"], edge_load=st["edge_load"], battery=st["battery"],
                                           transport=t, precision=p)
            v = base[self.splits] - rc.w_quality * self.mean_quality(self._snr, t, p)[self.splits]
            if previous_split is not None:
                from splitrl.reward import switch_cost

                v = v - rc.w_switch * switch_cost(rc, self.splits, int(previous_split))
            out[:, j] = np.where(ok, v, -np.inf)
        return out

    def split_for_action(self, action: int) -> int:
        a = int(action)
        if not self.action_space.contains(a):
            raise ValueError(f"action {action!r} outside {self.action_space}")
        return self.obs_spec.split_for_action(a, self._split)

    def action_for_split(self, split: int, codec: int = 0, precision: int = 0) -> int:
        """The action selecting ``split`` (codec index ``codec``, UE precision index ``precision``),
        for baselines and planners."""
        return self.obs_spec.action_for_split(split, self._split, codec, precision)

    def action_for_option(self, split: int, option: int) -> int:
        """The action selecting ``split`` with option ``option`` (a column of `action_values`)."""
        codec, precision = divmod(int(option), self.obs_spec.num_precisions)
        return self.action_for_split(split, codec, precision)

    def observation(self):
        """The current state as a `splitrl.controller.policy.Observation`."""
        from splitrl.controller.policy import Observation

        ue = self.config.include_ue_state
        return Observation(snr_db=self._snr, snr_history_db=tuple(self._history), bandwidth_mhz=self.bandwidth_mhz,
                           split=self._split, battery=self._battery if ue else None, load=self._load if ue else None,
                           edge_load=self.observed_edge_load, privacy_target=self._privacy_floor)

    def _obs(self) -> np.ndarray:
        return self.obs_spec.vector(self.observation())

    def _draw_privacy_floor(self) -> None:
        targets = self.config.privacy_targets
        if targets:
            t = targets[int(self.np_random.integers(len(targets)))]
            self._privacy_floor = max(self.config.s_min, self.costs.privacy_min_split(t))
        else:
            self._privacy_floor = None

    def _next_snr(self) -> float:
        return round_snr(float(self.channel.step().snr_db), self.config.snr_resolution_db)

    def _advance_channel(self) -> None:
        self._history = [self._snr, *self._history][: self.config.history]
        self._snr = self._next_snr()
        if self.edge_process is not None:
            self._edge_i = self.edge_process.next(self._edge_i, self._edge_rng)
            self._edge_past = [*self._edge_past[1:], self.edge_process.value(self._edge_i)]
        self._draw_privacy_floor()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.channel.reset(np.random.default_rng(int(self.np_random.integers(2**63 - 1))))
        self._snr = self._next_snr()
        self._history = []
        c = self.config
        ok = self.allowed_splits()
        self._split = int(c.initial_split if c.initial_split is not None else self.np_random.choice(np.flatnonzero(ok[self.splits]) + c.s_min))
        lo, hi = c.battery_range
        self._battery = 1.0 if lo == hi == 1.0 else float(self.np_random.uniform(lo, hi))
        self._load = 0.3
        if self.edge_process is not None:
            self._edge_rng = np.random.default_rng(int(self.np_random.integers(2**63 - 1)))
            self._edge_i = self.edge_process.initial(self._edge_rng)
            self._edge_past = [self.edge_process.value(self._edge_i)] * (c.edge_load.delay_steps + 1)
        self._draw_privacy_floor()
        self._episode_evaluations = self.real_evaluations
        return self._obs(), {"snr_db": self._snr, "split": self._split, "real_evaluations": 0}

    def step(self, action):
        requested = self.split_for_action(action)
        transport, precision = self.options[self.obs_spec.option_for_action(action)]
        split = self._nearest_allowed(requested, self.allowed_splits(self._privacy_floor, precision))
        snr = self._snr
        # Backends written before codecs (e.g. the surrogate) take (split, snr) only.
        if precision is not None:
            ppl, log_ratio = self.quality(split, snr, transport, precision=precision)
        elif transport == self.config.transport:
            ppl, log_ratio = self.quality(split, snr)
        else:
            ppl, log_ratio = self.quality(split, snr, transport)
        state = self.state_kwargs()
        table = self.costs_at(snr, edge_load=state["edge_load"], transport=transport, precision=precision)
        i = split  # CostTable rows are indexed by split 0..L
        latencies, energies, timeouts = self.request_costs(snr, state["load"], edge_load=state["edge_load"],
                                                           transport=transport, precision=precision)
        latency, energy, timed_out = float(latencies[i]), float(energies[i]), bool(timeouts[i])
        rec = self.costs.privacy_recovery(transport)
        terms = self.costs.reward(log_ppl_ratio=log_ratio, latency_s=latency, energy_j=energy, split=split,
                                  previous_split=self._split, battery=state["battery"],
                                  privacy_recovery=None if rec is None else float(rec[i]))
        reward = float(terms["reward"])
        info = {
            "split": split, "previous_split": self._split, "snr_db": snr, "ppl": ppl, "ppl_clean": self.ppl_clean,
            "log_ppl_ratio": log_ratio, "latency_s": latency, "ttft_s": float(table.ttft_s[i]),
            "tpot_s": float(table.tpot_s[i]), "energy_j": energy, "bytes_on_air": int(table.bytes_on_air[i]),
            "timed_out": timed_out,
            "reward_terms": {k: float(v) for k, v in terms.items() if k != "reward"},
            "real_evaluations": self.real_evaluations - self._episode_evaluations,
        }
        if self.config.codecs:
            info["transport"] = transport
        if self.precisions:
            info["ue_precision"] = precision
        if split != requested:
            info["requested_split"] = requested
        if self.edge_process is not None:
            info["edge_load"] = float(state["edge_load"])
        if self._privacy_floor is not None:
            info["privacy_floor"] = int(self._privacy_floor)
        self._split = split
        if self.config.include_ue_state:
            request_j = float(table.ue_energy_j[i])
            self._battery = max(0.0, self._battery - request_j / self.config.battery_capacity_j)
            self._load = float(np.clip(0.8 * self._load + 0.2 * 0.3 + 0.1 * self.np_random.standard_normal(), 0, 1))
        self._advance_channel()
        return self._obs(), reward, False, False, info


class SplitPointEnv(SplitPointBaseEnv):
    """`SplitPointBaseEnv` whose quality is a real perplexity evaluation each step (``splitrl/SplitPoint-v0``).

    Each step evaluates the split model on ``eval_tokens`` WikiText-2 tokens through the link at
    this slot's SNR, with fresh noise drawn from ``self.np_random``. The prefix cache keeps clean
    hidden states at every cut, so a step runs only layers ``[s, L)`` and the head.
    See `SplitPointBaseEnv` for spaces, reward and episode structure.
    """

    supports_ue_precisions = True  # fp32 only: the runtime evaluated here runs fp32 weights

    def __init__(self, config: SplitPointConfig | None = None, *, loaded=None, **overrides: Any) -> None:
        from splitrl.eval import PerplexityConfig, PerplexityEvaluator
        from splitrl.models import load_model

        cfg = config or SplitPointConfig()
        if overrides:
            cfg = SplitPointConfig(**{**asdict(cfg), **overrides})
        low = [p for p in cfg.ue_precisions if p != "fp32"]
        if low:
            from splitrl.errors import UsageError

            raise UsageError(f"ue_precisions {low}: SplitPoint-v0 evaluates the fp32 runtime only; use "
                             f"splitrl/SplitPointTable-v0 with sweep rows per ue_precision")
        self.loaded = loaded or load_model(cfg.model)
        super().__init__(cfg, num_layers=self.loaded.view.num_layers, view=self.loaded.view)
        self.evaluator = PerplexityEvaluator(
            self.loaded, PerplexityConfig(tokens=cfg.eval_tokens, window=cfg.eval_window, stride=cfg.eval_window)
        )
        self._ppl_clean = self.evaluator.evaluate(self.L).ppl

    @property
    def ppl_clean(self) -> float:
        return self._ppl_clean

    def quality(self, split: int, snr_db: float, transport: str | None = None, *,
                precision: str | None = None) -> tuple[float, float]:
        from splitrl.link import link_at

        link = link_at(transport or self.config.transport, seed=int(self.np_random.integers(2**31 - 1)), snr_db=snr_db,
                       modulation=self.config.modulation, vocab_size=self.loaded.view.vocab_size)
        ppl = self.evaluator.evaluate(split, link).ppl
        self.real_evaluations += 1
        return ppl, math.log(ppl / self._ppl_clean)


def _table_key(transport: str, precision: str | None):
    """Key of a `SweepTable` in an env's ``tables``: the transport alone for fp32 (or no precision,
    the tables before precisions existed), else (transport, precision)."""
    return transport if precision in (None, "fp32") else (transport, precision)


class SweepTable:
    """A sweep CSV as arrays: log(ppl/ppl_clean)[split, level, seed] for one transport and UE precision.

    ``precision`` selects the rows whose ``ue_precision`` column is that precision; a table without
    the column is all ``fp32`` (the sweep before precisions existed). fp32 reads the sweep's own
    ``log_ppl_ratio``. Any other precision is scored against the **fp32** model's clean perplexity
    (the ``clean_ppl`` of the table's fp32 rows of the same model): its cells are
    ``log(ppl / ppl_clean_fp32)``, so a lower precision's own loss shows in the reward, and
    ``ppl_clean`` is that fp32 reference. A table lacking the precision is a `UsageError` naming it.
    """

    def __init__(self, path: str | Path, transport: str, splits: np.ndarray, *, model: str | None = None,
                 precision: str = "fp32") -> None:
        import pandas as pd

        from splitrl.errors import UsageError
        from splitrl.quant.precision import check_precision

        precision = check_precision(precision, "ue_precision")
        self.precision = precision

        path = Path(path)
        name = str(model or "MODEL")
        todo = (f"run `splitrl sweep --model {name} --splits all --transports {transport} --levels=-15:30:5 "
                f"--tokens 256 --window 256 --out sweep_{Path(name).stem}.csv` first, then pass --set env.table=sweep_{Path(name).stem}.csv")
        if not path.is_file():
            raise UsageError(f"sweep table {path} not found: {todo}")
        try:
            df = pd.read_csv(path)
        except (ValueError, UnicodeDecodeError, OSError) as e:
            raise UsageError(f"sweep table {path} is not a readable CSV ({type(e).__name__})") from None
        needed = {"model", "transport", "level_kind", "level", "split", "seed_index", "clean_ppl", "log_ppl_ratio"}
        if df.empty or needed - set(df.columns):
            raise UsageError(f"{path} is not a sweep table written by `splitrl sweep` (needs columns {sorted(needed)})")
        if model is not None and not (df.model.astype(str) == str(model)).all():
            raise UsageError(f"sweep table {path} was measured with model {sorted(set(df.model.astype(str)))[:3]}, "
                             f"not {model!r}: {todo}")
        prec_col = df["ue_precision"].astype(str) if "ue_precision" in df.columns else pd.Series("fp32", index=df.index)
        bad = sorted(set(prec_col) - set(PRECISIONS))
        if bad:
            raise UsageError(f"{path}: ue_precision values {bad[:4]} are not precisions ({', '.join(PRECISIONS)})")
        fp32_rows = df[prec_col == "fp32"]
        df = df[(df.transport == transport) & (prec_col == precision)]
        if df.empty:
            if precision != "fp32":
                have = sorted(set(prec_col))
                raise UsageError(f"{path} has no rows for UE precision {precision!r} (transport {transport!r}; the "
                                 f"table has ue_precision {', '.join(have)}): run the sweep at ue_precision "
                                 f"{precision} (issue 19) or drop {precision!r} from ue_precisions")
            raise UsageError(f"{path} has no rows for transport {transport!r}: {todo}")
        if (df.level_kind != "snr").any():
            raise UsageError(f"{path}: the table env needs an SNR sweep, found level_kind {set(df.level_kind)}")
        self.levels = np.sort(df.level.unique()).astype(float)
        self.seeds = int(df.seed_index.max()) + 1
        missing = sorted(set(splits.tolist()) - set(df.split.unique().tolist()))
        if missing:
            raise UsageError(f"{path} lacks splits {missing[:8]} for transport {transport!r} (a partial sweep): "
                             f"{todo} (a resumed sweep completes the table)")
        if int(df.split.max()) > int(splits.max()) or (df.split < 0).any() or (df.seed_index < 0).any():
            raise UsageError(f"{path} has split points outside 0..{int(splits.max())}: it is for another model")
        if not np.isfinite(df.log_ppl_ratio.to_numpy(float)).all():
            raise UsageError(f"{path} has non-finite log_ppl_ratio cells (NaN perplexities); re-run those cells")
        if precision == "fp32":
            self.ppl_clean = float(df.clean_ppl.iloc[0])
            cells = df.log_ppl_ratio.to_numpy(float)
        else:  # scored against the fp32 model (see the class docstring)
            if "ppl" not in df.columns:
                raise UsageError(f"{path} has no ppl column: UE precision {precision!r} is scored from it")
            if fp32_rows.empty:
                raise UsageError(f"{path} has UE precision {precision!r} rows but no fp32 rows: the fp32 model's clean "
                                 f"perplexity is the reference every precision is scored against")
            self.ppl_clean = float(fp32_rows.clean_ppl.iloc[0])
            with np.errstate(divide="ignore", invalid="ignore"):
                cells = np.log(df.ppl.to_numpy(float)) - math.log(self.ppl_clean)
            if not np.isfinite(cells).all():
                raise UsageError(f"{path} has non-finite perplexities for UE precision {precision!r}; re-run those cells")
        self.log_ratio = np.full((int(splits.max()) + 1, len(self.levels), self.seeds), np.nan)
        li = np.searchsorted(self.levels, df.level.to_numpy(float))
        self.log_ratio[df.split.to_numpy(int), li, df.seed_index.to_numpy(int)] = cells
        sub = self.log_ratio[splits]
        if np.isnan(sub).any():
            raise UsageError(f"{path} is incomplete for transport {transport!r}"
                             + ("" if precision == "fp32" else f" at UE precision {precision!r}")
                             + f": {int(np.isnan(sub).sum())} cells missing "
                             f"(a partial sweep): {todo} (a resumed sweep completes the table)")
        self.path = path

    def lookup(self, split: int, snr_db: float, seed_index: int | None = None) -> float:
        """Log ppl ratio at ``split`` and ``snr_db`` (linear in SNR between measured levels, clipped
        to the measured range); one measured seed, or the mean over seeds when ``seed_index`` is None."""
        snr = float(np.clip(snr_db, self.levels[0], self.levels[-1]))
        hi = int(np.clip(np.searchsorted(self.levels, snr), 1, len(self.levels) - 1))
        lo = hi - 1
        w = (snr - self.levels[lo]) / (self.levels[hi] - self.levels[lo])
        row = self.log_ratio[split]
        vals = row[:, seed_index] if seed_index is not None else row.mean(axis=1)
        return float((1 - w) * vals[lo] + w * vals[hi])

    def mean_table(self, snr_db: float, splits: np.ndarray) -> np.ndarray:
        return np.array([self.lookup(int(s), snr_db) for s in splits])


class _Bin:
    """Figures of one SNR bin for one transport: per edge-load level ``e`` and split ``s``."""

    __slots__ = ("lat", "energy", "ttft", "tpot", "ue_energy", "ue_extra", "q", "ppl_q")

    def __init__(self, lat, energy, ttft, tpot, ue_energy, ue_extra, q) -> None:
        self.lat, self.energy, self.ttft, self.tpot = lat, energy, ttft, tpot  # [E, L+1] python lists
        self.ue_energy, self.ue_extra, self.q = ue_energy, ue_extra, q  # [E, L+1], [L+1], [L+1][seeds]


class StateTables:
    """The table env's per-state figures, precomputed lazily per SNR bin (shared by vector envs).

    Keyed by (transport, SNR bin of ``snr_resolution_db`` over `SNR_BOUNDS_DB`); each bin holds,
    for every edge-load level of the Markov chain and every split, exactly what the slow path
    computes at that state (`RequestCostService.request_latency` without the UE-load term, the
    energy per token, TTFT/TPOT, the request's UE energy, the UE part the load stretches) and the
    sweep table's log-ppl ratio of every measured seed. Figures are plain Python lists: a step
    reads a handful of scalars.
    """

    def __init__(self, env: "SplitPointTableEnv") -> None:
        c = env.config
        self.res = float(c.snr_resolution_db)
        self.lo = SNR_BOUNDS_DB[0]
        self.costs, self.tables, self.L = env.costs, env.tables, env.L
        self.levels = [None] if env.edge_process is None else [float(x) for x in env.edge_process.levels]
        self.new_tokens = c.new_tokens
        self._bins: dict[tuple[int, int], _Bin] = {}

    def snr_of(self, i: int) -> float:
        return round(self.lo / self.res + i) * self.res

    def index(self, snr_db: float) -> int:
        return int(round(snr_db / self.res - self.lo / self.res))

    def get(self, t: int, transport: str, i: int, precision: str | None = None) -> _Bin:
        """The bin of SNR index ``i`` for action option ``t`` (its ``transport`` and UE ``precision``)."""
        b = self._bins.get((t, i))
        if b is None:
            b = self._bins[(t, i)] = self._fill(transport, i, precision)
        return b

    def _fill(self, transport: str, i: int, precision: str | None = None) -> _Bin:
        snr = self.snr_of(i)
        svc = self.costs
        lat, energy, ttft, tpot, ue_e = [], [], [], [], []
        for el in self.levels:
            tab = svc.costs_at(snr, edge_load=el, transport=transport, precision=precision)
            lat.append(svc.request_latency(snr, None, edge_load=el, transport=transport, precision=precision).tolist())
            energy.append(np.asarray(tab.ue_energy_j_per_token, dtype=float).tolist())
            ttft.append(tab.ttft_s.tolist())
            tpot.append(tab.tpot_s.tolist())
            ue_e.append(tab.ue_energy_j.tolist())
        t0 = svc.costs_at(snr, transport=transport, precision=precision)
        field = svc.latency_field
        extra = {"ttft_s": t0.ue_prefill_s, "tpot_s": t0.ue_decode_s,
                 "e2e_latency_s": t0.ue_prefill_s + t0.ue_decode_s * max(0, self.new_tokens - 1)}[field]
        table = self.tables[_table_key(transport, precision)]
        x = float(np.clip(snr, table.levels[0], table.levels[-1]))
        hi = int(np.clip(np.searchsorted(table.levels, x), 1, len(table.levels) - 1))
        lo = hi - 1
        w = (x - table.levels[lo]) / (table.levels[hi] - table.levels[lo])
        q = np.zeros((self.L + 1, table.seeds))
        rows = ~np.isnan(table.log_ratio[:, lo, 0])
        q[rows] = (1 - w) * table.log_ratio[rows, lo, :] + w * table.log_ratio[rows, hi, :]
        return _Bin(lat, energy, ttft, tpot, ue_e, np.asarray(extra, dtype=float).tolist(), q.tolist())


class SplitPointTableEnv(SplitPointBaseEnv):
    """`SplitPointBaseEnv` backed by a measured sweep table (``splitrl/SplitPointTable-v0``).

    A step samples one of the measured seeds of the (split, SNR) cell, interpolating linearly
    over SNR between measured levels (clipped to the measured range); each step counts as one real
    evaluation consumed (every lookup is a measured cell). The cost model needs the model's shape:
    pass ``view=`` to reuse a loaded model.

    Fast path: with ``snr_resolution_db > 0``, a fading channel and a Markov edge load (or none),
    a step reads precomputed figures of its state from `StateTables` (filled lazily per SNR bin,
    shareable between copies: `make_table_vec_env`) instead of running the cost model; the
    figures equal the slow path's at the same state (tested), and ``fast_path=False`` forces the
    slow path. ``benchmarks/env_speed.py`` measures both.
    """

    def __init__(self, config: SplitPointConfig | None = None, *, view=None, fast_path: bool = True,
                 shared_tables: "StateTables | None" = None, **overrides: Any) -> None:
        cfg = config or SplitPointConfig()
        if overrides:
            cfg = SplitPointConfig(**{**asdict(cfg), **overrides})
        if view is None:
            from splitrl.models import load_model

            view = load_model(cfg.model).view
        super().__init__(cfg, num_layers=view.num_layers, view=view)
        self.tables = {}
        for t, p in self.options:
            key = _table_key(t, p)
            if key not in self.tables:
                self.tables[key] = SweepTable(cfg.table or DEFAULT_TABLE, t, self.splits, model=cfg.model,
                                              precision=p or "fp32")
        if cfg.transport not in self.tables:
            self.tables[cfg.transport] = SweepTable(cfg.table or DEFAULT_TABLE, cfg.transport, self.splits, model=cfg.model)
        self.table = self.tables[_table_key(cfg.transport, self.precisions[0] if self.precisions else None)]
        self.fast_path = False
        self.state_tables: StateTables | None = None
        self._snr_buf: list[float] = []
        if fast_path and self._fast_path_possible():
            self.state_tables = shared_tables if shared_tables is not None else StateTables(self)
            self.fast_path = True

    def _fast_path_possible(self) -> bool:
        from splitrl.channel import CorrelatedFadingChannel

        c = self.config
        return (c.snr_resolution_db > 0 and (c.edge_load is None or c.edge_load.kind == "markov")
                and isinstance(self.channel, CorrelatedFadingChannel))

    @property
    def ppl_clean(self) -> float:
        return self.table.ppl_clean

    # --- fast path ------------------------------------------------------------------------
    def _next_snr(self) -> float:
        if not self.fast_path:
            return super()._next_snr()
        # The fading channel's sample(n) and n step() calls draw identical sequences
        # (`CorrelatedFadingChannel.sample_detail`), so buffering changes no trajectory.
        if not self._snr_buf:
            self._snr_buf = self.channel.sample(256)[::-1].tolist()
        r = self.config.snr_resolution_db
        return round(self._snr_buf.pop() / r) * r

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self._snr_buf = []
        out = super().reset(seed=seed, options=options)
        if self.fast_path:
            self._cache_allowed()
        return out

    def _draw_privacy_floor(self) -> None:
        super()._draw_privacy_floor()
        if self.fast_path:
            self._cache_allowed()

    def _cache_allowed(self) -> None:
        cache = self.__dict__.setdefault("_nearest_by_floor", {})
        nearest = cache.get(self._privacy_floor)
        if nearest is None:  # one list per UE precision (one without precisions)
            nearest = cache[self._privacy_floor] = []
            for p in (self.precisions or (None,)):
                ok = self.allowed_splits(self._privacy_floor, p)
                nearest.append([self._nearest_allowed(s, ok) for s in range(self.L + 1)])
        self._nearest = nearest

    def step(self, action):
        if not self.fast_path:
            return super().step(action)
        a = int(action)
        spec = self.obs_spec
        if not 0 <= a < spec.num_actions:
            raise ValueError(f"action {action!r} outside {self.action_space}")
        c = self.config
        if c.action_mode == "absolute":
            no = spec.num_options
            requested, ti = c.s_min + a // no, a % no
        else:
            requested, ti = min(max(self._split + a - c.max_move, c.s_min), self.L), 0
        pi = ti % spec.num_precisions
        split = self._nearest[pi][requested]
        transport, precision = self.options[ti]
        snr = self._snr
        b = self.state_tables.get(ti, transport, self.state_tables.index(snr), precision)
        table = self.tables[transport if precision is None else _table_key(transport, precision)]
        log_ratio = b.q[split][int(self.np_random.integers(table.seeds))]
        self.real_evaluations += 1
        ppl = table.ppl_clean * math.exp(log_ratio)
        e = self._edge_i
        lat = b.lat[e][split]
        if c.include_ue_state:
            lat = lat + (1.0 / (1.0 - 0.5 * self._load) - 1.0) * b.ue_extra[split]
        timeout = c.request_timeout_s
        timed_out = not lat <= timeout
        energy = b.energy[e][split]
        if timed_out:
            energy = min(energy, self.costs.timeout_energy_per_token)
        latency = min(lat, timeout)
        rc = c.reward
        scale = 1.0 if not (c.include_ue_state and c.battery_aware_energy) else 1.0 / max(self._battery, 0.05)
        prev = self._split
        moved = abs(split - prev)
        terms = {"quality": rc.w_quality * log_ratio,
                 "latency": rc.w_latency * latency / self.costs.latency_ref_s,
                 "energy": rc.w_energy * scale * energy / self.costs.energy_ref_j,
                 "switch": rc.w_switch * (rc.switch_fixed + rc.switch_per_layer * moved if moved > 0 else 0.0)}
        total = terms["quality"] + terms["latency"] + terms["energy"] + terms["switch"]
        rec = self.costs.privacy
        if rec is not None:
            terms["privacy"] = rc.w_privacy * float(rec.recovery[split])
            total = total + terms["privacy"]
        info = {
            "split": split, "previous_split": prev, "snr_db": snr, "ppl": ppl, "ppl_clean": table.ppl_clean,
            "log_ppl_ratio": log_ratio, "latency_s": latency, "ttft_s": b.ttft[e][split], "tpot_s": b.tpot[e][split],
            "energy_j": energy, "bytes_on_air": self._bytes[ti][split], "timed_out": timed_out,
            "reward_terms": terms, "real_evaluations": self.real_evaluations - self._episode_evaluations,
        }
        if c.codecs:
            info["transport"] = transport
        if self.precisions:
            info["ue_precision"] = precision
        if split != requested:
            info["requested_split"] = requested
        if self.edge_process is not None:
            info["edge_load"] = self.edge_process.value(e)
        if self._privacy_floor is not None:
            info["privacy_floor"] = self._privacy_floor
        self._split = split
        if c.include_ue_state:
            self._battery = max(0.0, self._battery - b.ue_energy[e][split] / c.battery_capacity_j)
            self._load = min(max(0.8 * self._load + 0.2 * 0.3 + 0.1 * float(self.np_random.standard_normal()), 0.0), 1.0)
        self._advance_channel()
        return self._obs(), -total, False, False, info

    def _obs(self) -> np.ndarray:
        if not self.fast_path:
            return super()._obs()
        # `ObservationSpec.vector` without building an Observation (same values, same order).
        spec, snr = self.obs_spec, self._snr
        lo, hi = SNR_BOUNDS_DB
        k = spec.history
        hist = self._history + [snr] * (k - len(self._history))
        v = [min(max(x, lo), hi) for x in (snr, *hist)]
        v += (self.bandwidth_mhz, float(self._split))
        if spec.include_ue_state:
            v += (self._battery, self._load)
        if spec.include_edge_load:
            v.append(self._edge_past[0])
        if spec.include_privacy_target:
            v.append(float(spec.s_min if self._privacy_floor is None else self._privacy_floor))
        return np.array(v, dtype=np.float32)

    @property
    def _bytes(self) -> list[list[int]]:
        b = self.__dict__.get("_bytes_cache")
        if b is None:
            b = self.__dict__["_bytes_cache"] = [
                [int(x) for x in self.costs.costs_at(30.0, transport=t, precision=p).bytes_on_air] for t, p in self.options]
        return b

    supports_ue_precisions = True

    def quality(self, split: int, snr_db: float, transport: str | None = None, *,
                precision: str | None = None) -> tuple[float, float]:
        p = precision or (self.precisions[0] if self.precisions else None)
        table = self.tables[_table_key(transport or self.config.transport, p)]
        log_ratio = table.lookup(split, snr_db, int(self.np_random.integers(table.seeds)))
        self.real_evaluations += 1
        return table.ppl_clean * math.exp(log_ratio), log_ratio


def make_table_vec_env(config: SplitPointConfig | None = None, n_envs: int = 8, *, seed: int = 0, view=None,
                       max_episode_steps: int = 256, **overrides: Any):
    """An SB3 ``DummyVecEnv`` of ``n_envs`` `SplitPointTableEnv` copies sharing one `StateTables`
    (each SNR bin's figures are computed once for all copies); env ``i`` is seeded ``seed + i``.

    Each copy is wrapped in ``TimeLimit(max_episode_steps)`` and SB3's ``Monitor`` (episode
    returns for the logger), as ``stable_baselines3.common.env_util.make_vec_env`` does.
    """
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    if isinstance(n_envs, bool) or not isinstance(n_envs, int) or n_envs < 1:
        raise ValueError(f"n_envs must be an integer >= 1, got {n_envs!r}")
    cfg = config or SplitPointConfig()
    if overrides:
        cfg = SplitPointConfig(**{**asdict(cfg), **overrides})
    if view is None:
        from splitrl.models import load_model

        view = load_model(cfg.model).view
    first = SplitPointTableEnv(cfg, view=view)
    shared = first.state_tables

    def factory(i: int):
        def make():
            env = first if i == 0 else SplitPointTableEnv(cfg, view=view, shared_tables=shared)
            return Monitor(gym.wrappers.TimeLimit(env, max_episode_steps=max_episode_steps))
        return make

    vec = DummyVecEnv([factory(i) for i in range(n_envs)])
    vec.seed(seed)
    return vec
