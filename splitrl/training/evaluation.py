"""Evaluation on held-out channel seeds, against the oracle on the same seeds.

Each evaluation episode resets the (unwrapped) evaluation env with a fixed seed and runs the agent
deterministically for a fixed number of steps. Agent and oracle see the same channel and — since
the table env draws its measured seed per step independently of the action — the same table
noise (common random numbers), so the regret is a low-variance paired difference. Rewards below
``reward_floor`` count as ``reward_floor`` (a guard: the split-point envs cap latency at their
request timeout, so their rewards are finite). With ``feedback`` the agent is offered each step's
info (`Agent.feedback`): an online-adapting agent then adapts — and pays real evaluations — while
evaluated; without it evaluation is a pure measurement.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from splitrl.agents.base import Agent
from splitrl.agents.baselines import OracleAgent
from splitrl.rollout import rollout as run_episodes

__all__ = ["EvalResult", "rollout", "Evaluator"]


@dataclass
class EvalResult:
    """Per-episode returns and every split chosen."""

    returns: list[float]
    splits: list[int] = field(default_factory=list)
    actions: list[int] = field(default_factory=list)

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns)) if self.returns else float("nan")


def rollout(agent: Agent, env: Any, seeds: Sequence[int], steps: int, *, reward_floor: float = -np.inf,
            deterministic: bool = True, feedback: bool = False, progress: str | None = None) -> EvalResult:
    """Run ``agent`` for ``steps`` steps from ``env.reset(seed=s)`` for each seed (with ``feedback``,
    each step's info is offered to ``agent.feedback``) through `splitrl.rollout.rollout`.
    ``progress``: a progress-bar label (for envs whose steps are slow real evaluations), None for none."""
    episodes = run_episodes(lambda _env, obs: agent.act(obs, deterministic=deterministic), env, seeds, int(steps),
                            reset=agent.reset, feedback=agent.feedback if feedback else None,
                            reward_floor=reward_floor, progress=progress)
    return EvalResult(returns=[ep.total for ep in episodes],
                      splits=[int(i.get("split", -1)) for ep in episodes for i in ep.infos],
                      actions=[int(a) for ep in episodes for a in ep.actions])


class Evaluator:
    """Evaluates agents on ``episodes`` held-out seeds (``seed0, seed0 + 1, ...``) of ``env``
    (built like the training env); the oracle's returns on the same seeds are computed once."""

    def __init__(self, env: Any, *, episodes: int, steps: int, seed0: int, reward_floor: float,
                 feedback: bool = False, progress: bool = False) -> None:
        self.env = env.unwrapped if hasattr(env, "unwrapped") else env
        self.seeds = [int(seed0) + i for i in range(int(episodes))]
        self.steps = int(steps)
        self.reward_floor = float(reward_floor)
        self.feedback = bool(feedback)
        self.progress = bool(progress)
        self._label = "eval"
        try:
            oracle = OracleAgent(self.env)
        except (TypeError, FileNotFoundError, ValueError):
            oracle = None  # not a split-point env, or no sweep table: evaluate without regret
        self._label = "eval: oracle reference"
        self.oracle_result = self._run(oracle) if oracle is not None else None
        self._label = "eval: agent"

    def _run(self, agent: Agent) -> EvalResult:
        return rollout(agent, self.env, self.seeds, self.steps, reward_floor=self.reward_floor, feedback=self.feedback,
                       progress=self._label if self.progress else None)

    def __call__(self, agent: Agent) -> dict[str, float]:
        res = self._run(agent)
        metrics = {"eval/return": res.mean_return, "eval/split_mean": float(np.mean(res.splits)) if res.splits else float("nan")}
        if self.oracle_result is not None:
            regret = np.asarray(self.oracle_result.returns) - np.asarray(res.returns)
            metrics["eval/oracle_return"] = self.oracle_result.mean_return
            metrics["eval/regret_vs_oracle"] = float(regret.mean())
            metrics["eval/regret_per_step"] = float(regret.mean() / max(1, self.steps))
        return metrics
