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

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from splitrl.decision.reward import switch_cost

__all__ = ["INFO_SETTINGS", "known_reward_parts", "action_splits", "KnownCostsObservation", "wrap_for_setting"]

INFO_SETTINGS = ("known-costs", "reward-only")


def _env(env: Any):
    from splitrl.agents.baselines import split_point_env

    return split_point_env(env)


def action_splits(env: Any, obs: np.ndarray) -> np.ndarray:
    """The split every action selects from the state in ``obs`` (int array, one per action)."""
    from splitrl.agents.baselines import current_split

    e = _env(env)
    cur = current_split(e, obs)
    return np.array([e.obs_spec.split_for_action(a, cur) for a in range(int(e.action_space.n))], dtype=int)


def _observed(e, obs: np.ndarray, name: str) -> float | None:
    try:
        return float(obs[e.obs_spec.index(name)])
    except KeyError:
        return None


def known_reward_parts(env: Any, obs: np.ndarray) -> np.ndarray:
    """For every action: the reward it earns from the state in ``obs`` at zero quality loss
    (latency, energy and — when the observation has them — UE load, observed edge load and battery
    from the cost model; minus the switching cost from the split in place). The true reward is this
    minus ``w_q · quality loss`` (and, where modelled, the privacy term)."""
    from splitrl.agents.baselines import current_split

    e = _env(env)
    obs = np.asarray(obs, dtype=float)
    cur = current_split(e, obs)
    n = int(e.action_space.n)
    splits = action_splits(e, obs)
    state = {"edge_load": _observed(e, obs, "edge_load")}
    if getattr(e, "battery", None) is not None:
        state["battery"] = _observed(e, obs, "battery")
    transports = getattr(e, "transports", (e.config.transport,))
    options = getattr(e, "options", None) or tuple((t, None) for t in transports)
    option = np.array([e.obs_spec.option_for_action(a) if hasattr(e.obs_spec, "option_for_action")
                       else e.obs_spec.codec_for_action(a) for a in range(n)], dtype=int)
    base = np.empty(n)
    for c in np.unique(option):
        t, p = options[c]
        kw = dict(state, transport=t) if len(transports) > 1 else dict(state)
        if p is not None:
            kw["precision"] = p
        kw = {k: v for k, v in kw.items() if v is not None}
        b = e.base_rewards(float(obs[0]), _observed(e, obs, "load"), **kw)  # [L + 1]
        base[option == c] = b[splits[option == c]]
    rc = e.config.reward
    sw = rc.w_switch * switch_cost(rc, splits, cur)
    return np.asarray(base - sw, dtype=float)  # [n_actions]


class KnownCostsObservation(gym.ObservationWrapper):
    """Appends `known_reward_parts` (one number per action) to the env's observation: setting (a)
    for learners that only see observations (PPO, DQN, A2C). The original entries keep their
    indices, so the exact baselines still read the wrapped observation correctly."""

    def __init__(self, env: gym.Env, *, bound: float = 10.0) -> None:
        super().__init__(env)
        base = env.observation_space
        n = int(env.action_space.n)
        # The rewards are bounded by the env's request timeout; ``bound`` only scales the features
        # for `splitrl.agents.sb3.BoundsScaler` (values beyond it are clipped).
        self.bound = float(bound)
        low = np.concatenate([base.low, np.full(n, -self.bound, np.float32)]).astype(np.float32)
        high = np.concatenate([base.high, np.full(n, self.bound, np.float32)]).astype(np.float32)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)

    def observation(self, observation):
        parts = np.clip(known_reward_parts(self.env, observation), -self.bound, self.bound)
        return np.concatenate([np.asarray(observation, np.float32), parts.astype(np.float32)])


def wrap_for_setting(env: gym.Env, setting: str) -> gym.Env:
    """``env`` as learners see it in information ``setting`` (`INFO_SETTINGS`)."""
    if setting not in INFO_SETTINGS:
        from splitrl.errors import UsageError

        raise UsageError(f"information setting must be one of {', '.join(INFO_SETTINGS)}, got {str(setting)[:40]!r}")
    return KnownCostsObservation(env) if setting == "known-costs" else env
