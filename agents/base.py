"""The one interface every split-point agent implements, so the trainer, the evaluator and the
deployed controller can swap agents freely.

An agent maps an observation of the split-point MDP (`splitrl.envs.split_point`) to an action,
learns from interaction with an env, and saves/loads itself to a directory. ``real_evaluations``
counts the real perplexity evaluations (or measured table cells) it consumed while learning —
the budget the model-based agent is built to save.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np

StepCallback = Callable[[dict[str, Any]], bool | None]
"""Called by `Agent.learn` after each env step with a dict (step, obs, action, reward, info, ...);
returning False stops learning early."""


class Agent(ABC):
    """Acts on observations, learns from an env, saves and loads itself.

    Subclasses set ``kind`` (the name used by ``train.py --agent`` and in checkpoints).
    """

    kind: str = "agent"

    def __init__(self) -> None:
        self.real_evaluations = 0
        self.env_steps = 0

    @abstractmethod
    def act(self, obs: np.ndarray, *, deterministic: bool = True) -> int:
        """The action for ``obs`` (an index of the env's ``Discrete`` action space)."""

    def reset(self) -> None:
        """Forget per-episode state (called at every env reset); stateless agents need nothing."""

    def feedback(self, info: dict[str, Any]) -> bool:
        """The outcome of the last action (the env step's ``info``), offered after every step.

        An agent may *use* the measured quality in ``info`` only by paying a real evaluation
        (counted in ``real_evaluations``); it returns True when it did. The default ignores it.
        """
        return False

    def learn(self, env: gym.Env, total_steps: int, *, callback: StepCallback | None = None) -> "Agent":
        """Improve from ``total_steps`` env steps; exact baselines need none and return at once."""
        return self

    # --- persistence -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (counters, small parameters); big artefacts go in `save_artifacts`."""
        return {"real_evaluations": self.real_evaluations, "env_steps": self.env_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.real_evaluations = int(state.get("real_evaluations", 0))
        self.env_steps = int(state.get("env_steps", 0))

    def save_artifacts(self, directory: Path) -> None:
        """Write policy weights, surrogates, ... into ``directory`` (no pickle for untrusted data)."""

    def load_artifacts(self, directory: Path) -> None:
        """Read what `save_artifacts` wrote."""

    def save(self, directory: str | Path) -> Path:
        """Save to ``directory`` (created): ``agent.json`` + artefacts."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.save_artifacts(d)
        (d / "agent.json").write_text(json.dumps({"kind": self.kind, "state": self.state_dict()}, indent=2))
        return d

    def load(self, directory: str | Path) -> "Agent":
        """Restore this agent from ``directory``; errors name the file and what is wrong."""
        d = Path(directory)
        meta_path = d / "agent.json"
        try:
            meta = json.loads(meta_path.read_text())
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{meta_path} not found: not an agent checkpoint") from e
        except json.JSONDecodeError as e:
            raise ValueError(f"{meta_path} is corrupt: {e}") from e
        if meta.get("kind") != self.kind:
            raise ValueError(f"{d} holds a {meta.get('kind')!r} agent, not {self.kind!r}")
        self.load_state_dict(meta.get("state", {}))
        self.load_artifacts(d)
        return self
