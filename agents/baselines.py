"""Exact (non-learning) split-point baselines, all implementing `splitrl.agents.base.Agent`.

Each is built from the problem it decides (``Agent(problem, config, seed=...)``, a
`splitrl.decision.problem.SplitProblem`, or a split-point env that adapts one): it reads the
problem's configuration, cost model and — for the oracle — its sweep table, and then acts from
observations alone, so it may act in any env instance of the same configuration (e.g. a separate
evaluation env). Two baselines use an env beyond that: ``fixed`` rolls one out to pick its split,
and ``oracle`` reads the true state of the env it was built on. Every baseline works in both action modes: it decides on a target *split* and turns it into
an action with `action_towards` (absolute: the action selecting that split; relative: the move
towards it from the split in place, read from the observation, clipped to ``max_move``).

=================  ==========================================================================
``oracle``         true best split per state: maximises the expected reward (the sweep table's
                   mean quality over seeds + the analytic latency/energy + the switching cost from
                   the split in place) over the splits reachable this step. Greedy: with switching
                   costs, a policy that plans ahead can occasionally do better; see `OracleAgent`.
``fixed``          one split for every state: the one with the best mean reward over rollouts on
                   training seeds (``FixedSplitConfig``), or a given split.
``all-on-ue``      s = L: everything on the UE, nothing crosses the link.
``min-ue``         s = s_min: as little as allowed on the UE.
``latency-only``   Neurosurgeon-style: the split with the smallest latency (the reward's latency
                   metric) at the observed SNR by the cost model, ignoring quality and energy.
``random``         a uniformly random allowed split each step (seeded).
=================  ==========================================================================
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from splitrl.agents.base import Agent, problem_of
from splitrl.agents.config import documented, param, validate
from splitrl.agents.information import action_splits, current_split, known_reward_parts
from splitrl.decision.problem import SplitProblem
from splitrl.decision.reward import reward_terms
from splitrl.decision.tables import SweepTable
from splitrl.envs.split_point import SplitPointBaseEnv
from splitrl.errors import UsageError

__all__ = [
    "BaselineConfig", "FixedSplitConfig", "OracleAgent", "FixedSplitAgent", "AllOnUEAgent", "MinUEAgent",
    "LatencyOnlyAgent", "RandomAgent", "split_point_env", "current_split", "action_towards", "reachable_splits",
    "quality_table", "latency_per_split", "expected_rewards",
]


# --- helpers shared by the baselines (and usable by planners) ---------------------------------
# Each takes the `SplitProblem` (or a split-point env adapting one: `problem_of`).
def split_point_env(env: gym.Env) -> SplitPointBaseEnv:
    """The `SplitPointBaseEnv` under ``env``'s wrappers (TypeError for any other env)."""
    base = getattr(env, "unwrapped", env)
    if not isinstance(base, SplitPointBaseEnv):
        raise TypeError(f"exact baselines need a split-point env (SplitPointBaseEnv), got {type(base).__name__}")
    return base


def observed_load(problem: SplitProblem | gym.Env, obs: np.ndarray) -> float | None:
    """The UE compute load from the observation (None without ``include_ue_state``)."""
    p = problem_of(problem)
    return float(np.asarray(obs)[p.spec.index("load")]) if p.config.include_ue_state else None


def action_towards(problem: SplitProblem | gym.Env, split: int, obs: np.ndarray) -> int:
    """The action that selects ``split`` (absolute mode) or moves towards it from the observed split
    in place (relative mode, at most ``max_move`` layers). Equals ``env.action_for_split(split)``
    when ``obs`` is the env's current observation, but needs no env state."""
    p = problem_of(problem)
    c = p.config
    split = min(max(int(split), c.s_min), p.L)  # scalar clips: this runs on every decision
    if c.action_mode == "absolute":
        # the first (codec, UE precision) option of the split: action (split - s_min) * options
        return int((split - c.s_min) * p.spec.num_options)
    move = min(max(split - current_split(p, obs), -c.max_move), c.max_move)
    return move + c.max_move


def reachable_splits(problem: SplitProblem | gym.Env, obs: np.ndarray) -> np.ndarray:
    """The splits one action can select from the state in ``obs``."""
    p = problem_of(problem)
    if p.config.action_mode == "absolute":
        return p.splits
    cur = current_split(p, obs)
    m = p.config.max_move
    return p.splits[(p.splits >= cur - m) & (p.splits <= cur + m)]


def quality_table(problem: SplitProblem | gym.Env) -> SweepTable:
    """The sweep table of the configured transport at the default UE precision: the table env's
    own quality, else the configured table (read without checking its model)."""
    env = getattr(problem, "unwrapped", problem)
    table = getattr(env, "table", None)
    if table is not None:
        return table
    return problem_of(problem).sweep_table(check_model=False)


def latency_per_split(problem: SplitProblem | gym.Env, snr_db: float, load: float | None = None) -> np.ndarray:
    """The reward's latency of every allowed split at ``snr_db`` under ``load``, exactly as the env
    charges it before the request timeout (`RequestCostService.request_latency`)."""
    p = problem_of(problem)
    return p.costs.request_latency(snr_db, load)[p.splits]


def expected_rewards(problem: SplitProblem | gym.Env, snr_db: float, previous_split: int, *,
                     load: float | None = None, table: SweepTable | None = None) -> np.ndarray:
    """Expected reward of every allowed split (``splits`` order) at ``snr_db`` coming from
    ``previous_split``: the table's mean log-ppl ratio over seeds plus the exact cost terms."""
    p = problem_of(problem)
    table = table if table is not None else quality_table(problem)
    s = p.splits
    latency, energy, _ = p.costs.request_costs(snr_db, load)
    terms = reward_terms(
        p.config.reward, log_ppl_ratio=table.mean_table(snr_db, s), latency_s=latency[s], energy_j=energy[s],
        split=s, previous_split=int(previous_split), latency_ref_s=p.costs.latency_ref_s,
        energy_ref_j=p.costs.energy_ref_j,
    )
    return np.asarray(terms["reward"], dtype=float)


# --- configs ----------------------------------------------------------------------------------
@documented
@dataclass
class BaselineConfig:
    """Baselines without settings (oracle, all-on-ue, min-ue, latency-only, random)."""


@documented
@dataclass
class FixedSplitConfig:
    """How `FixedSplitAgent` picks its split."""

    split: int | None = param(None, "the split to use (None: the best mean reward over rollouts on training seeds)", low=0)
    episodes: int = param(4, "rollout episodes per candidate split (training seeds seed, seed+1, ...)", low=1)
    episode_steps: int | None = param(None, "steps per rollout episode (None: the env's episode limit, else 256)", low=1)
    reward_floor: float = param(-100.0, "rewards count as at least this in the comparison (a guard against non-finite rewards)")

    def __post_init__(self) -> None:
        validate(self)


# --- agents -----------------------------------------------------------------------------------
class _Baseline(Agent):
    """Shared plumbing: the problem, a target split per observation, `action_towards`.

    ``source`` is the `SplitProblem` or a split-point env adapting one; ``self.env`` is that env
    (unwrapped; None when built from a bare problem)."""

    learns = False  # learn() is a no-op: the trainer only rolls the agent out
    config_cls: type = BaselineConfig

    def __init__(self, source: SplitProblem | gym.Env, config: Any = None, *, seed: int = 0) -> None:
        super().__init__()
        self.problem = problem_of(source)
        self.env: SplitPointBaseEnv | None = None if isinstance(source, SplitProblem) else split_point_env(source)
        self.config = config if config is not None else self.config_cls()
        self.seed = int(seed)

    def target_split(self, obs: np.ndarray) -> int:
        raise NotImplementedError

    def act(self, obs: np.ndarray, *, deterministic: bool = True) -> int:
        return action_towards(self.problem, self.target_split(obs), obs)


class OracleAgent(_Baseline):
    """The best split per state by the true expected reward (table mean quality + exact costs).

    Maximises ``reward_terms`` at the observed SNR (and UE load) *including* the switching cost
    from the split in place (read from the observation), over the splits reachable in one action.
    It knows the quality table, so its regret is the price of not knowing it. It is greedy: the
    channel's future is not planned for, so with non-zero switching costs a far-sighted policy
    can occasionally beat it by avoiding back-and-forth moves (then ``eval/regret_vs_oracle`` is
    slightly negative); without switching costs it is the optimal policy.
    """

    kind = "oracle"

    def __init__(self, source: SplitProblem | gym.Env, config: Any = None, *, seed: int = 0) -> None:
        super().__init__(source, config, seed=seed)
        self.table = quality_table(source)
        # Knows the TRUE state of the env it was built on (edge load before its delayed report,
        # battery, privacy floor, memory mask: `SplitPointBaseEnv.action_values`) when it acts on
        # that env's current observation; on any other observation (another env instance, e.g.
        # the trainer's evaluation env), built from a bare problem, or with False it decides from
        # the observed state.
        self.use_true_state = self.env is not None

    def _best(self, obs: np.ndarray) -> tuple[int, int]:
        """(split, option index: codec * n_precisions + UE precision) of the best reachable action."""
        obs = np.asarray(obs)
        p = self.problem
        cur = current_split(p, obs)
        reach = reachable_splits(p, obs)
        idx = reach - p.config.s_min
        if self.use_true_state and np.array_equal(np.asarray(self.env.observation_vector(), np.float32), obs.astype(np.float32)):
            v = self.env.action_values(cur)[idx]  # [reachable splits, codecs]
            i, j = np.unravel_index(int(np.argmax(v)), v.shape)
            return int(reach[i]), int(j)
        # Another env instance (e.g. the trainer's evaluation env), or told to: the observed state.
        parts = known_reward_parts(p, obs)  # [actions]
        a_splits = action_splits(p, obs)
        if len(p.options) > 1:  # quality per (codec, UE precision) option of each action
            by_option = [p.mean_quality(float(obs[0]), t, pr) for t, pr in p.options]
            qa = np.array([by_option[p.spec.option_for_action(a)][s] for a, s in enumerate(a_splits)])
        else:
            qa = p.mean_quality(float(obs[0]))[a_splits]
        v = parts - p.config.reward.w_quality * qa
        a = int(np.argmax(v))
        return int(a_splits[a]), int(p.spec.option_for_action(a))

    def target_split(self, obs: np.ndarray) -> int:
        return self._best(obs)[0]

    def act(self, obs: np.ndarray, *, deterministic: bool = True) -> int:
        split, option = self._best(obs)
        p = self.problem
        if option and p.config.action_mode == "absolute":
            codec, precision = divmod(option, p.spec.num_precisions)
            return int(p.spec.action_for_split(split, current_split(p, obs), codec, precision))
        return action_towards(p, split, obs)


class AllOnUEAgent(_Baseline):
    """s = L: the whole model on the UE; nothing crosses the link."""

    kind = "all-on-ue"

    def target_split(self, obs: np.ndarray) -> int:
        return int(self.problem.L)


class MinUEAgent(_Baseline):
    """s = s_min: as little of the model on the UE as allowed."""

    kind = "min-ue"

    def target_split(self, obs: np.ndarray) -> int:
        return int(self.problem.config.s_min)


class LatencyOnlyAgent(_Baseline):
    """Neurosurgeon-style: the fastest split at the observed SNR by the cost model.

    Uses the reward's latency metric (``ttft``/``tpot``/``e2e``) with the UE slow-down under the
    observed load; quality, energy and switching are ignored. Ties go to the smaller split.
    """

    kind = "latency-only"

    def target_split(self, obs: np.ndarray) -> int:
        obs = np.asarray(obs)
        lat = latency_per_split(self.problem, float(obs[0]), observed_load(self.problem, obs))
        return int(self.problem.splits[int(np.argmin(lat))])


class FixedSplitAgent(_Baseline):
    """One split for every state: ``config.split``, or the split with the best mean reward over
    rollouts on training seeds.

    The rollouts (``episodes`` per candidate split, seeds ``seed, seed + 1, ...``, in the env given
    at construction, unwrapped) happen at construction; the table cells they consume are counted in
    ``real_evaluations``. They reset that env, so build the agent before resetting it for training.
    """

    kind = "fixed"
    config_cls = FixedSplitConfig

    def __init__(self, source: SplitProblem | gym.Env, config: FixedSplitConfig | None = None, *,
                 seed: int = 0) -> None:
        super().__init__(source, config, seed=seed)
        c = self.config
        p = self.problem
        self.scores: dict[int, float] = {}
        if c.split is not None:
            if not p.config.s_min <= c.split <= p.L:
                raise UsageError(f"FixedSplitConfig.split must be in {p.config.s_min}..{p.L}, got {c.split}")
            self.split = int(c.split)
        else:
            if self.env is None:
                raise UsageError("FixedSplitConfig.split is None: picking the split rolls out an env, so build "
                                 "the fixed agent from one (or give agent.split)")
            spec = getattr(source, "spec", None)
            steps = c.episode_steps or (spec.max_episode_steps if spec is not None and spec.max_episode_steps else 256)
            self.split = self._select(int(steps))

    def _select(self, steps: int) -> int:
        env = self.env
        before = env.real_evaluations
        for s in env.splits:
            total = 0.0
            for e in range(self.config.episodes):
                obs, _ = env.reset(seed=self.seed + e)
                for _ in range(steps):
                    obs, r, terminated, _, _ = env.step(action_towards(self.problem, int(s), obs))
                    r = float(r)
                    total += r if r >= self.config.reward_floor else self.config.reward_floor
                    if terminated:
                        break
            self.scores[int(s)] = total / (self.config.episodes * steps)
        self.real_evaluations += env.real_evaluations - before
        return int(max(self.scores, key=lambda k: (self.scores[k], -k)))

    def target_split(self, obs: np.ndarray) -> int:
        return self.split

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "split": self.split, "scores": {str(k): v for k, v in self.scores.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "split" in state:
            self.split = int(state["split"])
        self.scores = {int(k): float(v) for k, v in state.get("scores", {}).items()}


class RandomAgent(_Baseline):
    """A uniformly random allowed split each step, from its own generator seeded with ``seed``
    (relative mode: a move towards it). ``deterministic`` is ignored. The generator's state is part
    of `state_dict`, so a reloaded agent continues the same sequence."""

    kind = "random"

    def __init__(self, source: SplitProblem | gym.Env, config: Any = None, *, seed: int = 0) -> None:
        super().__init__(source, config, seed=seed)
        self.rng = np.random.default_rng(self.seed)

    def target_split(self, obs: np.ndarray) -> int:
        return int(self.rng.choice(self.problem.splits))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if "rng" in state:
            self.rng.bit_generator.state = state["rng"]
