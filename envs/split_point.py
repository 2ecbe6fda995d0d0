"""The split-point MDP as Gymnasium envs: where to cut the LM, slot by slot, as the channel changes.

The decision itself (configuration, observation, costs, reward, tables) is `splitrl.decision`;
`splitrl.decision.problem.SplitProblem` holds its fixed parts. This module adapts it to
Gymnasium: the moving state (channel, edge load, battery, UE load, privacy floor), `reset`/`step`
and two quality backends: `SplitPointEnv` (a real perplexity evaluation of the split model
through the emulated link, each step) and `SplitPointTableEnv` (the measured sweep table).
`splitrl.surrogate.env.SurrogateEnv` is the third backend (a learned model).
"""
from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from splitrl.channel import CorrelatedFadingChannel
from splitrl.decision.channel import build_channel
from splitrl.decision.config import SplitPointConfig
from splitrl.decision.observation import SNR_BOUNDS_DB, Observation, round_snr
from splitrl.decision.problem import SplitProblem
from splitrl.decision.tables import DEFAULT_TABLE, StateTables, SweepTable, table_key
from splitrl.errors import UsageError
from splitrl.eval import PerplexityConfig, PerplexityEvaluator
from splitrl.link import link_at
from splitrl.models import load_model

# SplitPointConfig, SweepTable and DEFAULT_TABLE are part of this env module's interface (the
# env's config, its quality table): benchmarks and tests import them from here.
__all__ = ["SplitPointConfig", "SplitPointBaseEnv", "SplitPointEnv", "SplitPointTableEnv", "SweepTable",
           "DEFAULT_TABLE", "make_table_vec_env"]


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
    | ``battery_aware_energy`` | energy weight x 1/max(battery, 0.05); ``battery_range`` draws the level at reset | Lyapunov energy-queue weighting (`splitrl.decision.reward.battery_energy_scale`) |
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
    + w_p·recovery(s))``, see `splitrl.decision.reward`; ``k(b) = 1/max(b, 0.05)`` with
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

    def __init__(self, config: SplitPointConfig | None = None, *, num_layers: int | None = None, view=None,
                 problem: SplitProblem | None = None, **overrides: Any) -> None:
        super().__init__()
        if problem is None:
            config = config or SplitPointConfig()
            if overrides:
                config = SplitPointConfig(**{**asdict(config), **overrides})
            self._check_precisions(config)
            if view is None:
                view = load_model(config.model).view
            problem = SplitProblem.build(config, view)
        elif config is not None or overrides:
            raise UsageError("pass either a SplitProblem or a config (with overrides), not both")
        else:
            self._check_precisions(problem.config)
        if num_layers is not None and int(num_layers) != problem.L:
            raise UsageError(f"num_layers={num_layers} but the model has {problem.L} layers")
        self.problem = problem
        self.channel = build_channel(problem.config.channel, problem.costs.link_profile,
                                     problem.config.decision_interval_s, np.random.default_rng(0))
        # (the channel's generator is replaced at every reset by a child of self.np_random)
        # The edge-load state lives in plain attributes (_edge_i, _edge_past, _edge_rng) so that
        # training checkpoints capture it; `problem.edge_process` is the stateless model.
        self._edge_i = 0
        self._edge_past: list[float] = []
        self._edge_rng = np.random.default_rng(0)
        self.observation_space = problem.spec.box()
        self.action_space = spaces.Discrete(problem.spec.num_actions)
        self.real_evaluations = 0
        self._episode_evaluations = 0
        self._snr = 0.0
        self._history: list[float] = []
        self._split = problem.L
        self._battery, self._load = 1.0, 0.3
        self._privacy_floor: int | None = None

    def _check_precisions(self, config: SplitPointConfig) -> None:
        if config.ue_precisions and not self.supports_ue_precisions:
            raise UsageError(f"ue_precisions: {type(self).__name__} cannot measure quality per UE precision "
                             f"(use splitrl/SplitPointTable-v0 with a sweep that has ue_precision rows)")

    # Read-only views of the problem (wrappers, benchmarks and the trainer read these names).
    config = property(lambda self: self.problem.config)
    L = property(lambda self: self.problem.L)
    splits = property(lambda self: self.problem.splits)
    costs = property(lambda self: self.problem.costs)
    obs_spec = property(lambda self: self.problem.spec)
    options = property(lambda self: self.problem.options)
    precisions = property(lambda self: self.problem.precisions)
    transports = property(lambda self: self.problem.config.transports)
    edge_process = property(lambda self: self.problem.edge_process)
    memory_feasible = property(lambda self: self.problem.memory_feasible)
    cost_model = property(lambda self: self.problem.costs.cost_model)
    link_profile = property(lambda self: self.problem.costs.link_profile)
    latency_ref_s = property(lambda self: self.problem.costs.latency_ref_s)
    energy_ref_j = property(lambda self: self.problem.costs.energy_ref_j)
    bandwidth_mhz = property(lambda self: self.problem.costs.bandwidth_mhz)

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
        """See `SplitProblem.allowed_splits`."""
        return self.problem.allowed_splits(privacy_floor, precision)

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

    _nearest_allowed = staticmethod(SplitProblem.nearest_allowed)

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
        """See `SplitProblem.mean_quality` (the configured table, also for the real-evaluation env)."""
        return self.problem.mean_quality(snr_db, transport, precision)

    def action_values(self, previous_split: int | None = None) -> np.ndarray:
        """Expected reward ``[len(splits), num_options]`` of each (split, option) at the current TRUE
        state (edge load, battery, UE load, privacy floor), from ``previous_split`` (None: no switch
        charged); ``-inf`` where the split is not allowed this request. What an oracle maximises.
        Option ``j`` is codec ``j // n_prec`` at UE precision ``j % n_prec`` (`self.options`; with
        one precision: codec ``j``)."""
        return self.problem.action_values(self._snr, **self.state_kwargs(), privacy_floor=self._privacy_floor,
                                          previous_split=previous_split)

    def split_for_action(self, action: int) -> int:
        a = int(action)
        if not self.action_space.contains(a):
            raise UsageError(f"action {action!r} outside {self.action_space}")
        return self.obs_spec.split_for_action(a, self._split)

    def action_for_split(self, split: int, codec: int = 0, precision: int = 0) -> int:
        """The action selecting ``split`` (codec index ``codec``, UE precision index ``precision``),
        for baselines and planners."""
        return self.obs_spec.action_for_split(split, self._split, codec, precision)

    def action_for_option(self, split: int, option: int) -> int:
        """The action selecting ``split`` with option ``option`` (a column of `action_values`)."""
        codec, precision = divmod(int(option), self.obs_spec.num_precisions)
        return self.action_for_split(split, codec, precision)

    def observation(self) -> Observation:
        """The current state as a `splitrl.decision.observation.Observation`."""
        ue = self.problem.config.include_ue_state
        return Observation(snr_db=self._snr, snr_history_db=tuple(self._history), bandwidth_mhz=self.problem.costs.bandwidth_mhz,
                           split=self._split, battery=self._battery if ue else None, load=self._load if ue else None,
                           edge_load=self.observed_edge_load, privacy_target=self._privacy_floor)

    def observation_vector(self) -> np.ndarray:
        """The current observation, as `step` and `reset` return it."""
        return self._obs()

    def _obs(self) -> np.ndarray:
        return self.problem.spec.vector(self.observation())

    def _draw_privacy_floor(self) -> None:
        targets = self.problem.config.privacy_targets
        if targets:
            t = targets[int(self.np_random.integers(len(targets)))]
            self._privacy_floor = self.problem.privacy_floor(t)
        else:
            self._privacy_floor = None

    def _next_snr(self) -> float:
        return round_snr(float(self.channel.step().snr_db), self.problem.config.snr_resolution_db)

    def _advance_channel(self) -> None:
        problem = self.problem
        self._history = [self._snr, *self._history][: problem.config.history]
        self._snr = self._next_snr()
        edge = problem.edge_process
        if edge is not None:
            self._edge_i = edge.next(self._edge_i, self._edge_rng)
            self._edge_past = [*self._edge_past[1:], edge.value(self._edge_i)]
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
        cfg = config or SplitPointConfig()
        if overrides:
            cfg = SplitPointConfig(**{**asdict(cfg), **overrides})
        low = [p for p in cfg.ue_precisions if p != "fp32"]
        if low:
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
        link = link_at(transport or self.config.transport, seed=int(self.np_random.integers(2**31 - 1)), snr_db=snr_db,
                       modulation=self.config.modulation, vocab_size=self.loaded.view.vocab_size)
        ppl = self.evaluator.evaluate(split, link).ppl
        self.real_evaluations += 1
        return ppl, math.log(ppl / self._ppl_clean)


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
                 shared_tables: StateTables | None = None, problem: SplitProblem | None = None,
                 **overrides: Any) -> None:
        super().__init__(config, view=view, problem=problem, **overrides)
        cfg = self.config
        # Every table an action can read, checked against the model now rather than mid-episode.
        self.tables = {}
        for t, p in self.options:
            self.tables.setdefault(table_key(t, p), self.problem.sweep_table(t, p or "fp32"))
        self.tables.setdefault(cfg.transport, self.problem.sweep_table(cfg.transport, "fp32"))
        self.table = self.tables[table_key(cfg.transport, self.problem.default_precision)]
        self.fast_path = False
        self.state_tables: StateTables | None = None
        self._snr_buf: list[float] = []
        if fast_path and self._fast_path_possible():
            self.state_tables = shared_tables if shared_tables is not None else StateTables(self.problem)
            self.fast_path = True

    def _fast_path_possible(self) -> bool:
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
        # the problem's parts as locals: this is the env's hot loop (~5 property reads a step otherwise)
        problem = self.problem
        spec, c, costs = problem.spec, problem.config, problem.costs
        if not 0 <= a < spec.num_actions:
            raise UsageError(f"action {action!r} outside {self.action_space}")
        if c.action_mode == "absolute":
            no = spec.num_options
            requested, ti = c.s_min + a // no, a % no
        else:
            requested, ti = min(max(self._split + a - c.max_move, c.s_min), problem.L), 0
        pi = ti % spec.num_precisions
        split = self._nearest[pi][requested]
        transport, precision = problem.options[ti]
        snr = self._snr
        b = self.state_tables.get(ti, transport, self.state_tables.index(snr), precision)
        table = self.tables[transport if precision is None else table_key(transport, precision)]
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
            energy = min(energy, costs.timeout_energy_per_token)
        latency = min(lat, timeout)
        rc = c.reward
        scale = 1.0 if not (c.include_ue_state and c.battery_aware_energy) else 1.0 / max(self._battery, 0.05)
        prev = self._split
        moved = abs(split - prev)
        terms = {"quality": rc.w_quality * log_ratio,
                 "latency": rc.w_latency * latency / costs.latency_ref_s,
                 "energy": rc.w_energy * scale * energy / costs.energy_ref_j,
                 "switch": rc.w_switch * (rc.switch_fixed + rc.switch_per_layer * moved if moved > 0 else 0.0)}
        total = terms["quality"] + terms["latency"] + terms["energy"] + terms["switch"]
        rec = costs.privacy
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
        if problem.precisions:
            info["ue_precision"] = precision
        if split != requested:
            info["requested_split"] = requested
        if problem.edge_process is not None:
            info["edge_load"] = problem.edge_process.value(e)
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
        table = self.tables[table_key(transport or self.config.transport, p)]
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
        raise UsageError(f"n_envs must be an integer >= 1, got {n_envs!r}")
    cfg = config or SplitPointConfig()
    if overrides:
        cfg = SplitPointConfig(**{**asdict(cfg), **overrides})
    if view is None:
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
