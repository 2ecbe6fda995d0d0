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

from splitrl.controller.policy import ACTION_MODES, SNR_BOUNDS_DB
from splitrl.reward import RewardConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TABLE = REPO_ROOT / "benchmarks" / "results" / "sweep_smollm2.csv"


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

    def __post_init__(self) -> None:
        from splitrl.link import LINK_NAMES

        if isinstance(self.reward, dict):
            self.reward = RewardConfig(**self.reward)
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


class SplitPointBaseEnv(gym.Env):
    """Split-point control of a transformer LM between a UE and an edge server over a fading link.

    ## Description
    Each step is one decision epoch (one inference request). The UE observes the channel SNR
    of this slot (and the last ``history`` ones) and chooses the split point ``s``: the UE runs
    embeddings + layers ``[0, s)``, sends the activations at the cut over the emulated link
    (``config.transport``), and the edge runs layers ``[s, L)`` + head. The link corrupts what
    crosses it depending on the SNR; the request's latency and UE energy come from the device
    cost model (`splitrl.cost.CostModel`). Then the channel moves to the next slot
    (correlated fading, a Markov channel or a replayed trace).

    ## Action space
    ``absolute`` (default): ``Discrete(L - s_min + 1)``; action ``a`` selects split ``s_min + a``.
    ``relative``: ``Discrete(2 * max_move + 1)``; action ``a`` moves the split by ``a - max_move``
    layers (0 = stay), clipped to ``[s_min, L]``.

    ## Observation space
    ``Box(float32)`` of length ``history + 3`` (+2 with ``include_ue_state``):

    | index | observation | unit | min | max |
    |---|---|---|---|---|
    | 0 | SNR of this slot | dB | -50 | 80 |
    | 1..k | SNR of the k previous slots (newest first) | dB | -50 | 80 |
    | k+1 | uplink bandwidth | MHz | 0 | 10000 |
    | k+2 | split currently in place | layers | 0 | L |
    | k+3 | battery level (optional) | fraction | 0 | 1 |
    | k+4 | UE compute load (optional) | fraction | 0 | 1 |

    ## Reward
    ``-(w_q·log(ppl/ppl_clean) + w_l·latency/latency_ref + w_e·energy/energy_ref + w_s·switch)``,
    see `splitrl.reward`. References default to the all-on-UE split (no link involved).

    ## Starting state
    The channel restarts from its stationary law (seeded by ``reset(seed=)``); the split in
    place is ``initial_split`` or uniform over the allowed splits; battery full, load 0.3.

    ## Episode end
    The process is continuing: ``terminated`` is always False. Registration wraps the env in
    ``TimeLimit(max_episode_steps)``, which sets ``truncated`` at the cut.

    ## Info
    ``split, previous_split, snr_db, ppl, ppl_clean, log_ppl_ratio, latency_s, ttft_s, tpot_s,
    energy_j, bytes_on_air, timed_out, reward_terms, real_evaluations`` (running count, within the episode,
    of real perplexity evaluations — or of measured table cells consumed). The lifetime total is
    ``env.unwrapped.real_evaluations`` (kept out of ``info`` so that equal seeds give equal infos).

    ## Version history
    * v0: initial version.
    """

    metadata = {"render_modes": []}

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
        self._setup_costs(view)
        self._setup_channel()
        k = config.history
        low = [SNR_BOUNDS_DB[0]] * (k + 1) + [0.0, 0.0]
        high = [SNR_BOUNDS_DB[1]] * (k + 1) + [1e4, float(self.L)]
        if config.include_ue_state:
            low += [0.0, 0.0]
            high += [1.0, 1.0]
        self.observation_space = spaces.Box(np.array(low, np.float32), np.array(high, np.float32), dtype=np.float32)
        n = len(self.splits) if config.action_mode == "absolute" else 2 * config.max_move + 1
        self.action_space = spaces.Discrete(n)
        self.real_evaluations = 0
        self._episode_evaluations = 0
        self._snr = 0.0
        self._history: list[float] = []
        self._split = self.L
        self._battery, self._load = 1.0, 0.3

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
    def quality(self, split: int, snr_db: float) -> tuple[float, float]:
        """(ppl, log(ppl / ppl_clean)) of one request at ``split`` and ``snr_db``."""
        raise NotImplementedError

    @property
    def ppl_clean(self) -> float:
        raise NotImplementedError

    # --- dynamics (costs: `RequestCostService`; observation/actions: `ObservationSpec`) ----------
    def costs_at(self, snr_db: float):
        """Cost-model figures of every split at ``snr_db`` (a `CostTable`)."""
        return self.costs.costs_at(snr_db)

    def request_latency(self, snr_db: float, load: float | None = None) -> np.ndarray:
        """See `RequestCostService.request_latency`."""
        return self.costs.request_latency(snr_db, load)

    def request_costs(self, snr_db: float, load: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """See `RequestCostService.request_costs`."""
        return self.costs.request_costs(snr_db, load)

    def base_rewards(self, snr_db: float, load: float | None = None) -> np.ndarray:
        """See `RequestCostService.base_rewards`."""
        return self.costs.base_rewards(snr_db, load)

    def split_for_action(self, action: int) -> int:
        a = int(action)
        if not self.action_space.contains(a):
            raise ValueError(f"action {action!r} outside {self.action_space}")
        return self.obs_spec.split_for_action(a, self._split)

    def action_for_split(self, split: int) -> int:
        """The action selecting ``split`` (for baselines and planners)."""
        return self.obs_spec.action_for_split(split, self._split)

    def observation(self):
        """The current state as a `splitrl.controller.policy.Observation`."""
        from splitrl.controller.policy import Observation

        ue = self.config.include_ue_state
        return Observation(snr_db=self._snr, snr_history_db=tuple(self._history), bandwidth_mhz=self.bandwidth_mhz,
                           split=self._split, battery=self._battery if ue else None, load=self._load if ue else None)

    def _obs(self) -> np.ndarray:
        return self.obs_spec.vector(self.observation())

    def _advance_channel(self) -> None:
        self._history = [self._snr, *self._history][: self.config.history]
        self._snr = float(self.channel.step().snr_db)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.channel.reset(np.random.default_rng(int(self.np_random.integers(2**63 - 1))))
        self._snr = float(self.channel.step().snr_db)
        self._history = []
        c = self.config
        self._split = int(c.initial_split if c.initial_split is not None else self.np_random.choice(self.splits))
        self._battery, self._load = 1.0, 0.3
        self._episode_evaluations = self.real_evaluations
        return self._obs(), {"snr_db": self._snr, "split": self._split, "real_evaluations": 0}

    def step(self, action):
        split = self.split_for_action(action)
        snr = self._snr
        ppl, log_ratio = self.quality(split, snr)
        table = self.costs_at(snr)
        i = split  # CostTable rows are indexed by split 0..L
        latencies, energies, timeouts = self.request_costs(snr, self._load if self.config.include_ue_state else None)
        latency, energy, timed_out = float(latencies[i]), float(energies[i]), bool(timeouts[i])
        terms = self.costs.reward(log_ppl_ratio=log_ratio, latency_s=latency, energy_j=energy, split=split,
                                  previous_split=self._split)
        reward = float(terms["reward"])
        info = {
            "split": split, "previous_split": self._split, "snr_db": snr, "ppl": ppl, "ppl_clean": self.ppl_clean,
            "log_ppl_ratio": log_ratio, "latency_s": latency, "ttft_s": float(table.ttft_s[i]),
            "tpot_s": float(table.tpot_s[i]), "energy_j": energy, "bytes_on_air": int(table.bytes_on_air[i]),
            "timed_out": timed_out,
            "reward_terms": {k: float(v) for k, v in terms.items() if k != "reward"},
            "real_evaluations": self.real_evaluations - self._episode_evaluations,
        }
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

    def __init__(self, config: SplitPointConfig | None = None, *, loaded=None, **overrides: Any) -> None:
        from splitrl.eval import PerplexityConfig, PerplexityEvaluator
        from splitrl.models import load_model

        cfg = config or SplitPointConfig()
        if overrides:
            cfg = SplitPointConfig(**{**asdict(cfg), **overrides})
        self.loaded = loaded or load_model(cfg.model)
        super().__init__(cfg, num_layers=self.loaded.view.num_layers, view=self.loaded.view)
        self.evaluator = PerplexityEvaluator(
            self.loaded, PerplexityConfig(tokens=cfg.eval_tokens, window=cfg.eval_window, stride=cfg.eval_window)
        )
        self._ppl_clean = self.evaluator.evaluate(self.L).ppl

    @property
    def ppl_clean(self) -> float:
        return self._ppl_clean

    def quality(self, split: int, snr_db: float) -> tuple[float, float]:
        from splitrl.link import link_at

        link = link_at(self.config.transport, seed=int(self.np_random.integers(2**31 - 1)), snr_db=snr_db,
                       modulation=self.config.modulation, vocab_size=self.loaded.view.vocab_size)
        ppl = self.evaluator.evaluate(split, link).ppl
        self.real_evaluations += 1
        return ppl, math.log(ppl / self._ppl_clean)


class SweepTable:
    """A sweep CSV as arrays: log(ppl/ppl_clean)[split, level, seed] for one transport."""

    def __init__(self, path: str | Path, transport: str, splits: np.ndarray, *, model: str | None = None) -> None:
        import pandas as pd

        from splitrl.errors import UsageError

        path = Path(path)
        name = str(model or "MODEL")
        todo = (f"run `splitrl sweep --model {name} --splits all --transports {transport} --levels 0:30:5 "
                f"--out sweep_{Path(name).stem}.csv` first, then pass --set env.table=sweep_{Path(name).stem}.csv")
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
        df = df[df.transport == transport]
        if df.empty:
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
        self.ppl_clean = float(df.clean_ppl.iloc[0])
        self.log_ratio = np.full((int(splits.max()) + 1, len(self.levels), self.seeds), np.nan)
        li = np.searchsorted(self.levels, df.level.to_numpy(float))
        self.log_ratio[df.split.to_numpy(int), li, df.seed_index.to_numpy(int)] = df.log_ppl_ratio.to_numpy(float)
        sub = self.log_ratio[splits]
        if np.isnan(sub).any():
            raise UsageError(f"{path} is incomplete for transport {transport!r}: {int(np.isnan(sub).sum())} cells missing "
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


class SplitPointTableEnv(SplitPointBaseEnv):
    """`SplitPointBaseEnv` backed by a measured sweep table (``splitrl/SplitPointTable-v0``).

    A step samples one of the measured seeds of the (split, SNR) cell, interpolating linearly
    over SNR between measured levels (clipped to the measured range). Thousands of steps per
    second; each step counts as one real evaluation consumed (every lookup is a measured cell).
    The cost model needs the model's shape: pass ``view=`` to reuse a loaded model.
    """

    def __init__(self, config: SplitPointConfig | None = None, *, view=None, **overrides: Any) -> None:
        cfg = config or SplitPointConfig()
        if overrides:
            cfg = SplitPointConfig(**{**asdict(cfg), **overrides})
        if view is None:
            from splitrl.models import load_model

            view = load_model(cfg.model).view
        super().__init__(cfg, num_layers=view.num_layers, view=view)
        self.table = SweepTable(cfg.table or DEFAULT_TABLE, cfg.transport, self.splits, model=cfg.model)

    @property
    def ppl_clean(self) -> float:
        return self.table.ppl_clean

    def quality(self, split: int, snr_db: float) -> tuple[float, float]:
        log_ratio = self.table.lookup(split, snr_db, int(self.np_random.integers(self.table.seeds)))
        self.real_evaluations += 1
        return self.table.ppl_clean * math.exp(log_ratio), log_ratio
