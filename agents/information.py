"""What a learner is told about the reward: the two information settings of the agent comparison.

The split-point reward is ``-(w_q·quality loss + latency + energy + switching)`` (`splitrl.decision.reward`).
Only the quality loss needs a real evaluation; the other terms come from the analytic cost model
(`splitrl.decision.costs.RequestCostService`) and the split in place. A comparison in which the
model-based agent plans with those known terms while PPO/DQN must discover them from the reward is
not a comparison of learners, so every learner is reported in two settings:

``known-costs``  (a) every learner gets the known cost terms. Model-free learners see them as
                 observation features (`KnownCostsObservation` appends, for every action, the
                 reward that action would earn at zero quality loss, switching included); the
                 bandit, the threshold rule and the model-based agent read the same numbers
                 (`known_reward_parts`) and learn only the quality term.
``reward-only``  (b) no learner gets them: observations are the env's own and every learner —
                 the model-based one included — learns the whole reward from what it observes.

`known_reward_parts` is the single definition of "the known terms" for both.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from splitrl.agents.base import problem_of
from splitrl.decision.problem import SplitProblem
from splitrl.decision.reward import switch_cost
from splitrl.errors import UsageError

__all__ = ["INFO_SETTINGS", "known_reward_parts", "action_splits", "current_split", "KnownCostsObservation", "wrap_for_setting"]

INFO_SETTINGS = ("known-costs", "reward-only")


def current_split(problem: SplitProblem | gym.Env, obs: np.ndarray) -> int:
    """The split in place, as observed."""
    return int(round(float(np.asarray(obs)[problem_of(problem).spec.index("split")])))


def action_splits(problem: SplitProblem | gym.Env, obs: np.ndarray) -> np.ndarray:
    """The split every action selects from the state in ``obs`` (int array, one per action)."""
    p = problem_of(problem)
    cur = current_split(p, obs)
    return np.array([p.spec.split_for_action(a, cur) for a in range(p.spec.num_actions)], dtype=int)


def _observed(p: SplitProblem, obs: np.ndarray, name: str) -> float | None:
    try:
        return float(obs[p.spec.index(name)])
    except KeyError:
        return None


def known_reward_parts(problem: SplitProblem | gym.Env, obs: np.ndarray) -> np.ndarray:
    """For every action: the reward it earns from the state in ``obs`` at zero quality loss
    (latency, energy and — when the observation has them — UE load, observed edge load and battery
    from the cost model; minus the switching cost from the split in place). The true reward is this
    minus ``w_q · quality loss`` (and, where modelled, the privacy term)."""
    p = problem_of(problem)
    obs = np.asarray(obs, dtype=float)
    cur = current_split(p, obs)
    n = p.spec.num_actions
    splits = action_splits(p, obs)
    c = p.config
    state = {"edge_load": _observed(p, obs, "edge_load")}
    if c.include_ue_state and c.battery_aware_energy:  # the reward charges the battery level
        state["battery"] = _observed(p, obs, "battery")
    transports = c.transports
    option = np.array([p.spec.option_for_action(a) for a in range(n)], dtype=int)
    base = np.empty(n)
    for o in np.unique(option):
        t, pr = p.options[o]
        kw = dict(state, transport=t) if len(transports) > 1 else dict(state)
        if pr is not None:
            kw["precision"] = pr
        kw = {k: v for k, v in kw.items() if v is not None}
        b = p.costs.base_rewards(float(obs[0]), _observed(p, obs, "load"), **kw)  # [L + 1]
        base[option == o] = b[splits[option == o]]
    rc = c.reward
    sw = rc.w_switch * switch_cost(rc, splits, cur)
    return np.asarray(base - sw, dtype=float)  # [n_actions]


class KnownCostsObservation(gym.ObservationWrapper):
    """Appends `known_reward_parts` (one number per action) to the env's observation: setting (a)
    for learners that only see observations (PPO, DQN, A2C). The original entries keep their
    indices, so the exact baselines still read the wrapped observation correctly."""

    def __init__(self, env: gym.Env, *, bound: float = 10.0) -> None:
        super().__init__(env)
        self.problem = problem_of(env)
        base = env.observation_space
        n = int(env.action_space.n)
        # The rewards are bounded by the env's request timeout; ``bound`` only scales the features
        # for `splitrl.agents.sb3.BoundsScaler` (values beyond it are clipped).
        self.bound = float(bound)
        low = np.concatenate([base.low, np.full(n, -self.bound, np.float32)]).astype(np.float32)
        high = np.concatenate([base.high, np.full(n, self.bound, np.float32)]).astype(np.float32)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)

    def observation(self, observation):
        parts = np.clip(known_reward_parts(self.problem, observation), -self.bound, self.bound)
        return np.concatenate([np.asarray(observation, np.float32), parts.astype(np.float32)])


def wrap_for_setting(env: gym.Env, setting: str) -> gym.Env:
    """``env`` as learners see it in information ``setting`` (`INFO_SETTINGS`)."""
    if setting not in INFO_SETTINGS:
        raise UsageError(f"information setting must be one of {', '.join(INFO_SETTINGS)}, got {str(setting)[:40]!r}")
    return KnownCostsObservation(env) if setting == "known-costs" else env
