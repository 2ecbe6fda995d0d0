"""A model-based controller for the ring's cut vector (``splitrl/PipelineSplit-v0``), and the comparison harness.

`RingPlanner` plans over the env's candidate partitions the way `splitrl.agents.mbrl` plans over
split points: one `AR1ChannelModel` per device link (fitted online from the observed SNRs, with
forgetting), a persistence-with-decay forecast of each device's load (AR(1) in log space, its
coefficient fitted online), and a receding-horizon dynamic program over the candidates with the
switching cost between consecutive ones, scoring each step with the env's analytic step model
(`PipelineSplitEnv.predict_reward`: the cost model of `splitrl.cost.pipeline`, the agent's
"surrogate" here — exact, so the agent needs no real evaluations) at the forecast state.

`evaluate_policies` runs policies on the same held-out episodes (same seeds) and reports mean
reward and throughput, and throughput as a fraction of the step-wise oracle's.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

__all__ = ["RingPlanner", "evaluate_policies"]


class RingPlanner:
    """Receding-horizon planning over candidate partitions with per-device channel and load models."""

    def __init__(self, env: Any, *, horizon: int = 3, discount: float = 0.9, forgetting: float = 0.98,
                 quadrature: int = 3) -> None:
        from splitrl.agents.channel_model import AR1ChannelModel

        self.env = env.unwrapped if hasattr(env, "unwrapped") else env
        if horizon < 1 or not 0 < discount <= 1:
            raise ValueError("horizon must be >= 1 and discount in (0, 1]")
        self.horizon, self.discount = int(horizon), float(discount)
        mean = self.env.link.mean_snr_db()
        self.channels = [AR1ChannelModel(forgetting=forgetting, prior_mean_db=mean, prior_std_db=8.0)
                         for _ in range(self.env.N)]
        self.nodes, self.weights = np.polynomial.hermite_e.hermegauss(quadrature)
        self.weights = self.weights / self.weights.sum()
        self._prev_logload: np.ndarray | None = None
        self._sxx = 1e-3
        self._sxy = 0.0

    def reset(self) -> None:
        for ch in self.channels:
            ch.reset_episode()
        self._prev_logload = None

    def _parse(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
        env, c = self.env, self.env.config
        N, H = env.N, c.history + 1
        snr = np.asarray(obs[: N * H], float).reshape(N, H)[:, -1] * 30.0
        load = np.asarray(obs[N * H: N * H + N], float)
        waiting = int(round(float(obs[N * H + N]) * c.max_samples))
        current = int(round(float(obs[N * H + N + 1]) * env.action_space.n))
        return snr, load, waiting, current

    def _load_forecast(self, load: np.ndarray, h: int) -> np.ndarray:
        rho = float(np.clip(self._sxy / self._sxx, 0.0, 0.999))
        return np.exp(np.log(np.maximum(load, 1e-6)) * rho**h)

    def act(self, obs: np.ndarray, *, deterministic: bool = True) -> int:
        env = self.env
        snr, load, waiting, current = self._parse(obs)
        for ch, s in zip(self.channels, snr):
            ch.observe(float(s))
        logload = np.log(np.maximum(load, 1e-6))
        if self._prev_logload is not None:  # least-squares AR(1) coefficient of the log loads (through 0)
            self._sxx += float(self._prev_logload @ self._prev_logload)
            self._sxy += float(self._prev_logload @ logload)
        self._prev_logload = logload
        A = env.action_space.n
        held = env.held
        forecasts = [ch.forecast(float(s), self.horizon) for ch, s in zip(self.channels, snr)]
        # step rewards r[h, prev, a] at the forecast state (quadrature over each link's forecast spread)
        r = np.zeros((self.horizon, A, A))
        for h in range(self.horizon):
            ld = self._load_forecast(load, h)
            for prev in range(A):
                if h == 0 and prev != current:
                    continue
                for a in range(A):
                    vals = []
                    for z, w in zip(self.nodes, self.weights):
                        s_h = np.array([m[h] + z * sd[h] for m, sd in forecasts])
                        vals.append(w * env.predict_reward(a, prev, s_h, ld, waiting, held)[0])
                    r[h, prev, a] = sum(vals)
        # backward DP over the horizon
        V = np.zeros(A)
        for h in range(self.horizon - 1, 0, -1):
            V = np.max(r[h] + self.discount * V[None, :], axis=1)
        q = r[0, current] + self.discount * V
        return int(np.argmax(q))


def evaluate_policies(make_env: Callable[[], Any], policies: dict[str, Callable[[Any, np.ndarray], int]],
                      seeds: list[int], steps: int) -> dict[str, Any]:
    """Run every policy on the same episodes (seeds); mean reward/throughput and the fraction of the oracle's."""
    out: dict[str, Any] = {}
    for name, policy in policies.items():
        rewards, thr, switches = [], [], []
        for seed in seeds:
            env = make_env()
            obs, _ = env.reset(seed=seed)
            if hasattr(policy, "reset"):
                policy.reset()
            tot_r = tot_t = 0.0
            sw = 0
            for _ in range(steps):
                a = policy(env, obs)
                obs, rew, term, trunc, info = env.step(a)
                tot_r += rew
                tot_t += info["throughput"]
                sw += info["switch_s"] > 0
                if term or trunc:
                    break
            rewards.append(tot_r / steps)
            thr.append(tot_t / steps)
            switches.append(sw)
        out[name] = {"mean_reward": float(np.mean(rewards)), "mean_throughput_tok_s": float(np.mean(thr)),
                     "per_episode_throughput": [float(t) for t in thr], "switches_per_episode": float(np.mean(switches))}
    if "oracle" in out:
        ref = out["oracle"]["mean_throughput_tok_s"]
        for name in out:
            out[name]["throughput_fraction_of_oracle"] = out[name]["mean_throughput_tok_s"] / ref if ref > 0 else None
    return out
