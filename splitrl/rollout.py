"""The one rollout loop: run a policy on held-out episodes of an env, episode by episode.

Every evaluation of the project goes through `rollout` — the trainer's held-out evaluation
(`splitrl.training.evaluation`), ``splitrl evaluate`` (timed decisions), the AirComp assignment
policies and the pipeline ring planner — so "an episode", "its return" and "the decision time"
mean the same everywhere:

* an episode starts at ``env.reset(seed=s)`` (the policy's ``reset`` is called after it) and ends
  at ``steps`` steps or when the env reports ``terminated`` or ``truncated``, whichever is first
  (``steps=None``: only the env ends it);
* a step's reward counts as ``max(reward, reward_floor)`` in the return (a guard for envs whose
  reward can be hugely negative; the split-point envs cap latency, so theirs are finite);
* ``feedback(info)`` (online-adapting agents) is offered each step's info, and every truthy answer
  counts as one paid online evaluation;
* with ``timed`` every decision (the ``act`` call alone) is timed with ``perf_counter_ns``.

The loop imports nothing from envs, agents or training (it sees only the Gymnasium API and plain
callables), so lower layers — the pipeline and AirComp controllers — can use it too.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

from splitrl.errors import UsageError

DEFAULT_SEED = 2_000_000  # seed of the first held-out episode of `splitrl evaluate` (then +1, ...): far from training seeds

__all__ = ["Episode", "rollout"]


@dataclass
class Episode:
    """One held-out episode: its seed, per-step actions, floored rewards and infos."""

    seed: int
    actions: list[Any] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    infos: list[dict] = field(default_factory=list)
    act_ns: list[int] = field(default_factory=list)
    paid_evaluations: int = 0

    @property
    def total(self) -> float:
        """The return: the sum of the (floored) rewards, summed in step order."""
        t = 0.0
        for r in self.rewards:
            t += r
        return t

    @property
    def steps(self) -> int:
        return len(self.rewards)


def rollout(act: Callable[[Any, Any], Any], env: Any | Callable[[], Any], seeds: Sequence[int],
            steps: int | None, *, reset: Callable[[], None] | None = None,
            feedback: Callable[[dict], Any] | None = None,
            on_step: Callable[[Any, Any, dict], None] | None = None, reward_floor: float = -math.inf,
            timed: bool = False, new_env_per_episode: bool = False, progress: str | None = None) -> list[Episode]:
    """Run ``act(env, obs) -> action`` on one episode per seed; returns the episodes in seed order.

    Args:
        act: the policy; it gets the env (policies that read the env's exact state, e.g. an
            oracle) and the observation.
        env: the env, or (``new_env_per_episode``) a factory called once per episode.
        steps: the most steps per episode (None: until the env ends it).
        reset: called after each ``env.reset`` (an agent's per-episode state).
        feedback: offered each step's info (see module doc).
        on_step: called as ``on_step(env, action, info)`` after each step.
        progress: a progress-bar label (envs whose steps are slow real evaluations), None for none.
    """
    if steps is not None and steps < 0:
        raise UsageError(f"steps must be >= 0 or None, got {steps!r}")
    total = len(seeds) * int(steps) if steps is not None else None
    bar = tqdm(total=total, desc=progress, unit="step", disable=progress is None, leave=False)
    episodes: list[Episode] = []
    for s in seeds:
        e = env() if new_env_per_episode else env
        obs, _ = e.reset(seed=int(s))
        if reset is not None:
            reset()
        ep = Episode(seed=int(s))
        while steps is None or ep.steps < steps:
            if timed:
                t0 = time.perf_counter_ns()
                a = act(e, obs)
                ep.act_ns.append(time.perf_counter_ns() - t0)
            else:
                a = act(e, obs)
            obs, r, terminated, truncated, info = e.step(a)
            if feedback is not None and feedback(info):
                ep.paid_evaluations += 1
            if on_step is not None:
                on_step(e, a, info)
            r = float(r)
            ep.rewards.append(r if r >= reward_floor else reward_floor)
            ep.actions.append(a)
            ep.infos.append(info)
            bar.update(1)
            if terminated or truncated:
                break
        episodes.append(ep)
    bar.close()
    return episodes
