"""Split policies: an observation of the channel and the UE -> the split for the next request.

`Observation` is what the controller sees before a request; `ObservationSpec` is the vector
layout the agents were trained on and the action -> split mapping (the split-point env uses the
same code, so a trained agent sees identical inputs in training and in deployment). A
`SplitPolicy` decides from an `Observation` alone — no gym env is stepped at decision time:

* `AgentPolicy` wraps a trained agent (from a checkpoint) or an exact baseline kind. It reads
  the decision problem (`splitrl.decision.SplitProblem`: config, costs, spec, tables) the agent
  was built on; the agent itself may have been built on an env adapting that problem (SB3
  agents need one; the ``fixed`` baseline picks its split by rolling one out), built once at
  load time and never stepped while serving.
* `FixedPolicy` always returns one split.

Every policy returns ``L`` (everything on the UE) while ``edge_available`` is False: after a
fallback the split stays on the UE until the edge's health check passes again.
"""
from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from splitrl.agents.registry import AGENTS, make_agent
from splitrl.decision.observation import Observation
from splitrl.decision.problem import SplitProblem, problem_of
from splitrl.envs.split_point import SplitPointTableEnv
from splitrl.errors import UsageError
from splitrl.training.checkpoint import CheckpointError, latest_checkpoint
from splitrl.training.config import RunConfig
from splitrl.training.trainer import make_env

__all__ = ["SplitPolicy", "AgentPolicy", "FixedPolicy", "Decision", "load_checkpointed_agent"]

@dataclass
class Decision:
    """A policy's choice: the split, the agent's raw action (None for fixed policies), the time it
    took, and the UE's weight precision the action selects (None: not chosen by the policy — no
    ``ue_precisions`` configured — the runtime's own)."""

    split: int
    action: int | None = None
    decision_us: float = 0.0
    reason: str = "policy"
    ue_precision: str | None = None


class SplitPolicy(ABC):
    """Observation -> split. Subclasses implement `_choose`; `decide` adds the edge fallback rule."""

    name: str = "policy"
    num_layers: int
    problem: SplitProblem | None = None  # the decision problem the policy's agent was built on, if any

    def decide(self, obs: Observation) -> Decision:
        if not obs.edge_available:
            return Decision(split=self.num_layers, reason="edge unavailable: all on the UE")
        t0 = time.perf_counter_ns()
        split, action = self._choose(obs)
        us = (time.perf_counter_ns() - t0) / 1e3
        return Decision(split=int(split), action=action, decision_us=us, ue_precision=self.precision_of(action))

    def precision_of(self, action: int | None) -> str | None:
        """The UE precision ``action`` selects (None: this policy does not choose one)."""
        return None

    @abstractmethod
    def _choose(self, obs: Observation) -> tuple[int, int | None]:
        """(split, action) for ``obs``."""

    def reset(self) -> None:
        """Forget per-session state."""

    def feedback(self, info: dict[str, Any]) -> bool:
        """The measured outcome of the last request; True when the policy paid for it."""
        return False

    @property
    def real_evaluations(self) -> int:
        return 0


class FixedPolicy(SplitPolicy):
    """One split for every request (``split`` layers on the UE)."""

    def __init__(self, split: int, num_layers: int) -> None:
        if not 0 <= int(split) <= int(num_layers):
            raise UsageError(f"--split must be in 0..{num_layers}, got {split}")
        self.split, self.num_layers = int(split), int(num_layers)
        self.name = f"fixed-split-{self.split}"

    def _choose(self, obs: Observation) -> tuple[int, int | None]:
        return self.split, None


def load_checkpointed_agent(path: str | Path, *, env_overrides: dict | None = None, models: dict | None = None):
    """(agent, env, run config) from a run or checkpoint folder; the env is the run's own (unwrapped).

    A missing or damaged checkpoint is a `UsageError` naming the folder.
    """
    p = Path(path)
    if not p.exists():
        raise UsageError(f"--checkpoint: {p} does not exist (give checkpoints/<run> or a checkpoint folder)")
    try:
        ckpt = p if (p / "manifest.json").is_file() else latest_checkpoint(p)
        config = RunConfig.from_dict(yaml.safe_load((ckpt / "config.yaml").read_text()))
    except (OSError, ValueError, yaml.YAMLError, TypeError, AttributeError, CheckpointError) as e:
        raise UsageError(f"--checkpoint: {p} is not a usable checkpoint: {e}".splitlines()[0]) from None
    for k, v in (env_overrides or {}).items():  # the reward mapping is merged field by field
        base = config.env.get(k)
        config.env[k] = {**base, **v} if k == "reward" and isinstance(v, dict) and isinstance(base, dict) else v
    env = make_env(config, models=models)
    try:
        agent = make_agent(config.kind, env, config.agent, seed=config.seed).load(ckpt / "agent")
    except (OSError, ValueError) as e:
        raise UsageError(f"--checkpoint: {ckpt} holds no loadable agent: {e}".splitlines()[0]) from None
    return agent, env.unwrapped, config


class AgentPolicy(SplitPolicy):
    """A trained agent or an exact baseline acting on `ObservationSpec` vectors.

    ``source`` is the `SplitProblem` the agent was built on, or the split-point env adapting it
    (only its problem is read; the env is never stepped).
    """

    def __init__(self, agent, source: SplitProblem | Any, name: str) -> None:
        self.agent, self.name = agent, name
        self.problem = problem_of(source)
        self.spec = self.problem.spec
        self.num_layers = int(self.problem.num_layers)
        prepare = getattr(agent, "prepare_decisions", None)
        if prepare is not None:  # e.g. compile a decision kernel before the first request, not during it
            prepare()

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, env_overrides: dict | None = None, loaded=None) -> "AgentPolicy":
        models: dict[str, Any] = {}
        if loaded is not None:
            models[loaded.name] = loaded
        agent, env, run = load_checkpointed_agent(path, env_overrides=env_overrides, models=models)
        policy = cls(agent, env, f"{run.kind}@{path}")
        policy.loaded = models.get(policy.problem.config.model)
        return policy

    @classmethod
    def baseline(cls, kind: str, env_config, view, *, seed: int = 0) -> "AgentPolicy":
        """An exact baseline (``oracle``, ``fixed``, ``latency-only``, ...) for ``env_config``."""
        if kind not in AGENTS:
            raise UsageError(f"--agent: unknown agent {kind!r}; choose from {', '.join(AGENTS)}")
        try:
            env = SplitPointTableEnv(env_config, view=view)
        except (IndexError, KeyError) as e:  # a sweep table measured on another model
            raise UsageError(f"--agent {kind}: the sweep table {env_config.table or 'default'} does not fit "
                             f"{env_config.model} ({type(e).__name__}: {e}); pass --set env.table=FILE") from None
        return cls(make_agent(kind, env, seed=seed), env, kind)

    def _choose(self, obs: Observation) -> tuple[int, int | None]:
        action = int(self.agent.act(self.spec.vector(obs)))
        return self.spec.split_for_action(action, obs.split), action

    def precision_of(self, action: int | None) -> str | None:
        precisions = tuple(self.problem.config.ue_precisions or ())
        if action is None or not precisions:
            return None
        return precisions[self.spec.precision_for_action(action)]

    def reset(self) -> None:
        self.agent.reset()

    def feedback(self, info: dict[str, Any]) -> bool:
        return bool(self.agent.feedback(info))

    @property
    def real_evaluations(self) -> int:
        return int(getattr(self.agent, "real_evaluations", 0))
