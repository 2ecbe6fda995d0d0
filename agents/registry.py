"""The agent registry: ``train.py --agent KIND`` builds ``AGENTS[KIND]``.

``AGENTS = {kind: (AgentClass, ConfigClass)}``. An agent class is constructed as
``AgentClass(env, config, seed=seed)`` with ``config`` an instance of ``ConfigClass`` (a dataclass;
see `splitrl.agents.config` for documented, range-checked fields, which ``--set agent.FIELD=VALUE``
can override). A new agent joins with one line here (or one `register` call)::

    AGENTS["mbrl"] = (MBRLAgent, MBRLConfig)

Agents whose ``learns`` attribute is False (the exact baselines) are only rolled out by the
trainer; learning agents get ``learn(env, steps, callback=...)`` (see `splitrl.agents.hooks`).
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym

from splitrl.agents.base import Agent
from splitrl.agents.baselines import (
    AllOnUEAgent, BaselineConfig, FixedSplitAgent, FixedSplitConfig, LatencyOnlyAgent, MinUEAgent, OracleAgent,
    RandomAgent,
)
from splitrl.agents.bandits import BanditConfig, LinUCBAgent, ThresholdAgent, ThresholdConfig
from splitrl.agents.mbrl import MBRLAgent, MBRLConfig
from splitrl.agents.ppo_surrogate import PPOSurrogateAgent, PPOSurrogateConfig
from splitrl.agents.sb3 import A2CAgent, A2CConfig, DQNAgent, DQNConfig, PPOAgent, PPOConfig
from splitrl.errors import UsageError

__all__ = ["AGENTS", "register", "make_agent"]

AGENTS: dict[str, tuple[type[Agent], type]] = {
    "ppo": (PPOAgent, PPOConfig),
    "a2c": (A2CAgent, A2CConfig),
    "dqn": (DQNAgent, DQNConfig),
    "mbrl": (MBRLAgent, MBRLConfig),
    "ppo-surrogate": (PPOSurrogateAgent, PPOSurrogateConfig),
    "oracle": (OracleAgent, BaselineConfig),
    "fixed": (FixedSplitAgent, FixedSplitConfig),
    "all-on-ue": (AllOnUEAgent, BaselineConfig),
    "min-ue": (MinUEAgent, BaselineConfig),
    "latency-only": (LatencyOnlyAgent, BaselineConfig),
    "random": (RandomAgent, BaselineConfig),
    "threshold": (ThresholdAgent, ThresholdConfig),
    "bandit": (LinUCBAgent, BanditConfig),
}


def register(kind: str, agent_cls: type[Agent], config_cls: type, *, replace: bool = False) -> None:
    """Add an agent kind (``agent_cls.kind`` should equal ``kind``, the name checkpoints carry)."""
    if kind in AGENTS and not replace:
        raise UsageError(f"agent kind {kind!r} is already registered")
    AGENTS[kind] = (agent_cls, config_cls)


def make_agent(kind: str, env: gym.Env, config: Any = None, *, seed: int = 0) -> Agent:
    """Build a registered agent (``config`` None: the config class's defaults)."""
    try:
        agent_cls, config_cls = AGENTS[kind]
    except KeyError:
        raise UsageError(f"unknown agent {kind!r}; choose from {', '.join(AGENTS)}") from None
    return agent_cls(env, config if config is not None else config_cls(), seed=seed)
