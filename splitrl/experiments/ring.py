"""The comparison harness of the ring's controllers (``splitrl/PipelineSplit-v0``).

`collect_evaluations` draws real evaluations for fitting `agents.ring.RingSurrogate`;
`evaluate_policies` runs policies on the same held-out episodes (same seeds, through the one
rollout loop `splitrl.rollout.rollout`) and reports mean reward and throughput, and throughput as
a fraction of the step-wise oracle's, with intervals.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from splitrl.rollout import rollout
from splitrl.stats import t_interval

__all__ = ["collect_evaluations", "evaluate_policies", "mean_ci"]


def collect_evaluations(env: Any, n: int, rng: np.random.Generator, *, noise: float = 0.05,
                        samples: int | None = None) -> list[tuple[int, np.ndarray, np.ndarray, dict]]:
    """``n`` real evaluations at random (candidate, state) pairs: SNRs drawn from each link's fading
    process, loads log-normal with the env's spread; measured with multiplicative noise ``noise``."""
    env = env.unwrapped if hasattr(env, "unwrapped") else env
    c = env.config
    S = c.max_samples if samples is None else int(samples)
    chans = [env.link.make_channel(np.random.default_rng(rng.integers(2**63))) for _ in range(env.N)]
    out = []
    for _ in range(int(n)):
        a = int(rng.integers(env.action_space.n))
        snr = np.array([ch.sample(int(rng.integers(1, 50)))[-1] for ch in chans])
        load = np.exp(c.load_sigma * rng.normal(size=env.N))
        load[0] = 1.0
        out.append((a, snr, load, env.measure(a, snr, load, S, noise=noise, rng=rng)))
    return out


def mean_ci(values: list[float], level: float = 0.95) -> dict[str, float]:
    """Mean and a Student-t interval of ``values`` (`splitrl.stats.t_interval`)."""
    return t_interval(values, level)


def evaluate_policies(make_env: Callable[[], Any], policies: dict[str, Callable[[Any, np.ndarray], int]],
                      seeds: list[int], steps: int) -> dict[str, Any]:
    """Run every policy on the same episodes (seeds): mean reward/throughput, and each episode's
    throughput as a fraction of the oracle's on that episode (mean with a 95 % t-interval).

    A policy with an ``observe_step(env, action, info)`` attribute is told what each step served.
    """
    out: dict[str, Any] = {}
    for name, policy in policies.items():
        episodes = rollout(policy, make_env, seeds, steps, new_env_per_episode=True,
                           reset=getattr(policy, "reset", None), on_step=getattr(policy, "observe_step", None))
        rewards = [ep.total / steps for ep in episodes]
        thr = []
        for ep in episodes:
            t = 0.0
            for i in ep.infos:
                t += i["throughput"]
            thr.append(t / steps)
        switches = [sum(i["switch_s"] > 0 for i in ep.infos) for ep in episodes]
        out[name] = {"mean_reward": float(np.mean(rewards)), "mean_throughput_tok_s": float(np.mean(thr)),
                     "reward_ci95": mean_ci(rewards),
                     "per_episode_throughput": [float(t) for t in thr],
                     "per_episode_reward": [float(r) for r in rewards],
                     "switches_per_episode": float(np.mean(switches))}
    if "oracle" in out:
        ref = out["oracle"]["per_episode_throughput"]
        for name in out:
            fr = [t / o for t, o in zip(out[name]["per_episode_throughput"], ref) if o > 0]
            out[name]["throughput_fraction_of_oracle"] = float(np.mean(fr)) if fr else None
            out[name]["throughput_fraction_of_oracle_ci95"] = mean_ci(fr) if fr else None
    return out
