"""The one interface every split-point agent implements, so the trainer, the evaluator and the
deployed controller can swap agents freely.

An agent maps an observation of the split-point MDP (`splitrl.decision`; as a Gymnasium env:
`splitrl.envs.split_point`) to an action,
learns from interaction with an env, and saves/loads itself to a directory. ``real_evaluations``
counts the real perplexity evaluations (or measured table cells) it consumed while learning —
the budget the model-based agent is built to save.
"""
from __future__ import annotations

import json
import pickle  # only for its exception type: torch.load(weights_only=True) raises UnpicklingError
import zipfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from splitrl.decision.problem import SplitProblem, problem_of  # noqa: F401  (agents build from a problem)
from splitrl.errors import UsageError
from splitrl.integrity import (IntegrityError, list_files, read_json_object, read_manifest, sha256_file,
                               verify_listed_files)


class AgentLoadError(UsageError):
    """An agent folder cannot be loaded (missing, corrupt, another kind, unlisted files)."""


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

    def learning_progress(self) -> tuple[int, ...]:
        """Counters that change whenever the agent's policy may have changed. The trainer compares
        them to decide whether a final evaluation and checkpoint are due: an agent that keeps
        learning after its last env step (e.g. ``ppo-surrogate``'s free surrogate phase) must
        include that learning here, or its final checkpoint would hold the policy from before it."""
        return (int(self.env_steps), int(self.real_evaluations))

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
        """Save to ``directory`` (created, and expected empty): the artefacts, then ``agent.json``
        (kind, state, and the SHA-256 of every artefact, which `load` checks)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.save_artifacts(d)
        files = {rel: sha256_file(p) for rel, p in sorted(list_files(d, frozenset({"agent.json"})).items())}
        (d / "agent.json").write_text(json.dumps({"kind": self.kind, "state": self.state_dict(), "files": files}, indent=2))
        return d

    def load(self, directory: str | Path) -> "Agent":
        """Restore this agent from ``directory`` (an `Agent.save` folder); errors are one line
        (`splitrl.errors.UsageError`) naming the file and what is wrong.

        Before anything is read the folder is verified against the file list in ``agent.json``
        (and, for the ``agent/`` folder of a trainer checkpoint, against the checkpoint's
        manifest): a missing, changed or unlisted file is refused. Artefacts are data only (see
        `splitrl.training.checkpoint`), so even a forged folder cannot run code."""
        d = Path(directory)
        meta_path = d / "agent.json"
        if not d.is_dir():
            raise AgentLoadError(f"agent checkpoint {d} is not a folder")
        meta = read_json_object(meta_path, AgentLoadError, missing="not an agent checkpoint",
                                what="an agent description (a JSON object)")
        if meta.get("kind") != self.kind:
            raise AgentLoadError(f"{d} holds a {str(meta.get('kind'))[:40]!r} agent, not {self.kind!r}")
        if "files" not in meta:
            raise AgentLoadError(f"{meta_path} lists no files (written by an older splitrl); retrain or re-save the agent")
        if d.name == "agent" and (d.parent / "manifest.json").is_file():
            read_manifest(d.parent, verify=True)  # the whole checkpoint, not only the agent folder
        verify_listed_files(d, meta["files"], listed_in=str(meta_path), exclude=frozenset({"agent.json"}))
        state = meta.get("state", {})
        if not isinstance(state, dict):
            raise AgentLoadError(f"{meta_path}: 'state' must be a JSON object")
        try:
            self.load_state_dict(state)
            self.load_artifacts(d)
        except (IntegrityError, AgentLoadError):
            raise
        except UsageError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, OSError, RuntimeError, EOFError,
                pickle.UnpicklingError, zipfile.BadZipFile) as e:
            # A well-formed file list but content this agent cannot use (hand-edited, another
            # version, a pickle where tensors belong): one line, not a traceback.
            raise AgentLoadError(f"{d}: cannot load the {self.kind} agent: {type(e).__name__}: {str(e)[:200]}") from None
        return self
