"""Policies for ``splitrl/AirCompAssign-v0``: the optimiser, equal shares, and a model-based agent.

* `OptimiserPolicy` solves the slow-timescale problem of the observed state (`assign.assign`,
  brute force over the K-into-N compositions of the objective "expected AirComp MSE in dB");
  it knows the physics and ignores the latency/energy terms of the reward.
* `EqualPolicy`: equal shares every step.
* `ModelBasedAgent` (the ideas of `agents.mbrl`, for this MDP): the latency and energy terms and
  feasibility come from the analytic cost model (`env.costs` on the observation — the "model"), the
  quality term is a learned surrogate of log(ppl/ppl_clean) fitted only from the real evaluations
  the agent made (``info["log_ppl_ratio"]``). Its features are the per-device received SNRs the
  assignment implies (gain + SNR at 1 W + transmit power left after compute, sorted ascending) and
  M — physics-shaped inputs, but the map to perplexity is learned. While learning it explores
  with an upper-confidence rule (ExtraTrees spread across trees, ``beta``); when acting it picks
  the feasible assignment of highest predicted reward.

The held-out comparison harness is `splitrl.experiments.aircomp.evaluate_policy`.
"""
from __future__ import annotations

import numpy as np
from sklearn.ensemble import ExtraTreesRegressor

from splitrl.aircomp.assign import assign

__all__ = ["EqualPolicy", "ModelBasedAgent", "OptimiserPolicy"]


class EqualPolicy:
    def __init__(self, env) -> None:
        self.env = env.unwrapped

    def act(self, obs: np.ndarray) -> int:
        return self.env.equal_action


class OptimiserPolicy:
    """Brute-force (or SCA) minimiser of the expected MSE (dB) of the observed state."""

    def __init__(self, env, method: str = "brute_force", samples: int = 200, seed: int = 0) -> None:
        self.env = env.unwrapped
        self.method, self.samples, self.seed = method, samples, seed

    def act(self, obs: np.ndarray) -> int:
        prob = self.env.problem(obs)
        try:
            res = assign(prob, self.method, seed=self.seed, eval_samples=self.samples)
        except ValueError:  # nothing feasible: any action is penalised alike
            return self.env.equal_action
        return self.env.assignments.index(tuple(res.units))


class ModelBasedAgent:
    """Learned quality surrogate + analytic costs, exhaustive planning over the discrete assignments."""

    def __init__(self, env, *, beta: float = 1.0, warmup: int = 24, seed: int = 0, trees: int = 100) -> None:
        self.env = env.unwrapped
        self.beta, self.warmup, self.trees = float(beta), int(warmup), int(trees)
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.x: list[np.ndarray] = []
        self.y: list[float] = []
        self.model = None
        self.evaluations = 0

    # features ---------------------------------------------------------------------------------
    def features(self, obs: np.ndarray, action: int) -> np.ndarray | None:
        env = self.env
        prob = env.problem(obs)
        k = np.array(env.assignments[action])
        watts = prob.tx_power_w(k)
        if np.any(watts <= 0):
            return None
        snr = env.config.snr_db_at_1w + np.array([d.gain_db for d in prob.devices]) + 10 * np.log10(watts)
        return np.concatenate([np.sort(snr), [env.config.antennas]])

    def _candidates(self, obs: np.ndarray) -> list[tuple[int, np.ndarray, dict]]:
        out = []
        for a in range(len(self.env.assignments)):
            costs = self.env.costs(a, obs)
            if not costs["feasible"]:
                continue
            f = self.features(obs, a)
            if f is not None:
                out.append((a, f, costs))
        return out

    def _predict(self, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        per_tree = np.stack([t.predict(feats) for t in self.model.estimators_])     # [trees, A]
        return per_tree.mean(axis=0), per_tree.std(axis=0)

    def _choose(self, obs: np.ndarray, explore: bool) -> int:
        cands = self._candidates(obs)
        if not cands:
            return self.env.equal_action
        if self.model is None:
            return int(cands[self.rng.integers(len(cands))][0])
        feats = np.stack([f for _, f, _ in cands])
        mean, std = self._predict(feats)
        q = mean - (self.beta * std if explore else 0.0)  # optimism: a lower predicted loss
        scores = [self.env.reward_of(qi, cost["latency_s"], cost["energy_j"]) for qi, (_, _, cost) in zip(q, cands)]
        return int(cands[int(np.argmax(scores))][0])

    def _fit(self) -> None:
        self.model = ExtraTreesRegressor(n_estimators=self.trees, min_samples_leaf=2, random_state=self.seed)
        self.model.fit(np.stack(self.x), np.asarray(self.y))

    # the agent interface ----------------------------------------------------------------------
    def act(self, obs: np.ndarray) -> int:
        return self._choose(obs, explore=False)

    def learn(self, env, steps: int, seed: int = 0) -> "ModelBasedAgent":
        """Interact for ``steps`` steps on training episodes; every feasible step is one real evaluation."""
        obs, _ = env.reset(seed=seed)
        ep = 0
        for t in range(steps):
            a = self._choose(obs, explore=True) if len(self.y) >= self.warmup else self._choose_random(obs)
            f = self.features(obs, a)
            obs2, _, term, trunc, info = env.step(a)
            if info.get("feasible") and f is not None and info["log_ppl_ratio"] is not None:
                self.x.append(f)
                self.y.append(float(info["log_ppl_ratio"]))
                self.evaluations += 1
                if len(self.y) >= self.warmup and (len(self.y) - self.warmup) % 8 == 0:
                    self._fit()
            obs = obs2
            if term or trunc:
                ep += 1
                obs, _ = env.reset(seed=seed + ep)
        if len(self.y) >= 2:
            self._fit()
        return self

    def _choose_random(self, obs: np.ndarray) -> int:
        cands = self._candidates(obs)
        return int(cands[self.rng.integers(len(cands))][0]) if cands else self.env.equal_action
