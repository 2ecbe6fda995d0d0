"""The baselines a reviewer asks for first: a threshold rule on the SNR and a contextual bandit,
each tuned with a budget of real evaluations like the learners.

Both spend ``learn(env, n)``'s ``n`` env steps (each one a real evaluation: a measured table cell
or a perplexity run) exploring, then act greedily on what they measured. Both work in either
information setting (`splitrl.agents.information`): with ``information: known-costs`` they add the
known cost terms (`known_reward_parts`) and learn only the quality term (the residual
``reward - known``); with ``reward-only`` they learn the whole reward.

=============  ==============================================================================
``threshold``  SNR bands (equal-mass quantiles of the SNRs seen while learning); in each band the
               split with the best mean measured target (shrunk towards the split's mean over all
               bands when a cell has few samples). Exploration is round robin over the splits
               within the current band. Acting is a lookup: the rule is a set of SNR thresholds
               between candidate splits (`ThresholdAgent.rule`).
``bandit``     disjoint LinUCB (Li et al., WWW 2010): one ridge regression per split on features
               of the observation (bias, Gaussian RBFs of the SNR, the switch from the split in
               place, the UE/edge state entries); explores by the upper confidence bound
               ``theta·x + alpha·sqrt(x' A^-1 x)``, acts greedily.
=============  ==============================================================================

Neither plans ahead (switching is charged per step) and neither uses the SNR history.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from splitrl.agents.base import Agent, StepCallback, problem_of
from splitrl.agents.baselines import action_towards, reachable_splits
from splitrl.agents.config import ConfigError, documented, param, validate
from splitrl.agents.hooks import at_boundary
from splitrl.agents.information import INFO_SETTINGS, action_splits, current_split, known_reward_parts
from splitrl.decision.problem import SplitProblem
from splitrl.errors import UsageError

__all__ = ["ThresholdConfig", "ThresholdAgent", "BanditConfig", "LinUCBAgent"]


class _BudgetLearner(Agent):
    """Shared loop: explore for ``n`` real evaluations, record (obs, split, target), then act greedily.

    Subclasses implement ``_explore_split(obs)``, ``_record(obs, split, target)``, ``_scores(obs)``
    (predicted target of every allowed split, ``env.splits`` order) and their state."""

    learns = True

    def __init__(self, source: SplitProblem | gym.Env, config: Any, *, seed: int = 0) -> None:
        super().__init__()
        self.problem = problem_of(source)
        self.config = config
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.splits = np.asarray(self.problem.splits, dtype=int)
        self._last_obs: list[float] | None = None

    @property
    def known_costs(self) -> bool:
        return self.config.information == "known-costs"

    def _known_by_split(self, obs: np.ndarray) -> np.ndarray:
        """Known reward part of every allowed split (``env.splits`` order; unreachable: -inf)."""
        out = np.full(len(self.splits), -np.inf)
        parts = known_reward_parts(self.problem, obs)
        out[action_splits(self.problem, obs) - self.problem.config.s_min] = parts
        return out

    # --- acting -------------------------------------------------------------------------------
    def target_split(self, obs: np.ndarray) -> int:
        obs = np.asarray(obs, dtype=float)
        score = self._scores(obs)
        if self.known_costs:
            score = score + self._known_by_split(obs)
        reach = reachable_splits(self.problem, obs) - self.problem.config.s_min
        return int(self.splits[reach[int(np.argmax(score[reach]))]])

    def act(self, obs: np.ndarray, *, deterministic: bool = True) -> int:
        return action_towards(self.problem, self.target_split(obs), obs)

    # --- learning -----------------------------------------------------------------------------
    def learn(self, env: gym.Env, total_steps: int, *, callback: StepCallback | None = None) -> "_BudgetLearner":
        """Spend ``total_steps`` real evaluations exploring (trainer callback contract: one call per
        step, a boundary after each; a resumed agent continues from its saved observation)."""
        e = env.unwrapped
        if self._last_obs is None:
            obs, _ = env.reset(seed=int(self.rng.integers(2**31 - 1)))
        else:
            obs = np.asarray(self._last_obs, dtype=np.float32)
        for _ in range(int(total_steps)):
            split = self._explore_split(np.asarray(obs, dtype=float))
            action = action_towards(self.problem, split, obs)
            before = e.real_evaluations
            next_obs, reward, terminated, truncated, info = env.step(action)
            self.real_evaluations += e.real_evaluations - before
            self.env_steps += 1
            chosen = int(info["split"])
            target = float(reward)
            if self.known_costs:
                target -= float(self._known_by_split(np.asarray(obs, dtype=float))[chosen - self.problem.config.s_min])
            self._record(np.asarray(obs, dtype=float), chosen, target)
            done = bool(terminated or truncated)
            if done:
                next_obs, _ = env.reset()
            self._last_obs = np.asarray(next_obs, dtype=np.float32).tolist()
            if callback is not None:
                keep = callback({"step": self.env_steps, "obs": obs, "action": action, "reward": reward,
                                 "next_obs": next_obs, "terminated": terminated, "truncated": truncated, "done": done,
                                 "info": info, "real_evaluations": self.real_evaluations})
                if keep is False or not at_boundary(callback, self.env_steps):
                    break
            obs = next_obs
        self._finish()
        return self

    def _finish(self) -> None:
        """Called after each `learn` (greedy rule rebuilt from all data)."""

    # --- persistence --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "seed": self.seed, "config": asdict(self.config),
                "rng": self.rng.bit_generator.state, "last_obs": self._last_obs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.config = type(self.config)(**state["config"])
        self.seed = int(state["seed"])
        self.rng.bit_generator.state = state["rng"]
        self._last_obs = state.get("last_obs")


# --- the threshold rule -----------------------------------------------------------------------
@documented
@dataclass
class ThresholdConfig:
    """The SNR threshold rule (``threshold``)."""

    bands: int = param(6, "SNR bands (equal-mass quantiles of the SNRs seen while learning)", low=1, high=64)
    shrinkage: float = param(1.0, "pseudo-samples of the split's all-band mean added to each band's mean", low=0)
    information: str = param("known-costs", "what the rule is told about the reward (splitrl.agents.information)",
                             choices=INFO_SETTINGS)

    def __post_init__(self) -> None:
        validate(self)


class ThresholdAgent(_BudgetLearner):
    """Split per SNR band, tuned on its real evaluations (see the module doc)."""

    kind = "threshold"

    def __init__(self, source: SplitProblem | gym.Env, config: ThresholdConfig | None = None, *,
                 seed: int = 0) -> None:
        super().__init__(source, config if config is not None else ThresholdConfig(), seed=seed)
        self.snrs: list[float] = []
        self.chosen: list[int] = []
        self.targets: list[float] = []
        self.edges = np.zeros(0)
        self.table = np.zeros((1, len(self.splits)))  # [band, split]: predicted target

    def _band_edges(self, snrs: np.ndarray) -> np.ndarray:
        b = self.config.bands
        if len(snrs) < 2 * b or b == 1:
            return np.zeros(0)
        return np.unique(np.quantile(snrs, np.arange(1, b) / b))

    def _explore_split(self, obs: np.ndarray) -> int:
        snr = float(obs[0])
        snrs = np.asarray(self.snrs + [snr])
        edges = self._band_edges(snrs)
        band = int(np.searchsorted(edges, snr))
        mine = np.searchsorted(edges, np.asarray(self.snrs)) == band if self.snrs else np.zeros(0, bool)
        counts = np.bincount(np.asarray(self.chosen, int)[mine] - self.problem.config.s_min,
                             minlength=len(self.splits)) if mine.any() else np.zeros(len(self.splits), int)
        reach = reachable_splits(self.problem, obs) - self.problem.config.s_min
        c = counts[reach]
        least = reach[c == c.min()]
        return int(self.splits[int(self.rng.choice(least))])

    def _record(self, obs: np.ndarray, split: int, target: float) -> None:
        self.snrs.append(float(obs[0]))
        self.chosen.append(int(split))
        self.targets.append(float(target))

    def _finish(self) -> None:
        if not self.targets:
            return
        snrs, idx, y = np.asarray(self.snrs), np.asarray(self.chosen) - self.problem.config.s_min, np.asarray(self.targets)
        self.edges = self._band_edges(snrs)
        bands = np.searchsorted(self.edges, snrs)
        S, B, k = len(self.splits), len(self.edges) + 1, self.config.shrinkage
        n_all = np.bincount(idx, minlength=S).astype(float)
        s_all = np.bincount(idx, weights=y, minlength=S)
        grand = float(y.mean())
        prior = np.where(n_all > 0, s_all / np.maximum(n_all, 1), grand)  # [S]: the split's mean over all bands
        table = np.empty((B, S))
        for b in range(B):
            m = bands == b
            n = np.bincount(idx[m], minlength=S).astype(float)
            s = np.bincount(idx[m], weights=y[m], minlength=S)
            table[b] = (s + k * prior) / np.maximum(n + k, 1e-12)
        self.table = table

    def _scores(self, obs: np.ndarray) -> np.ndarray:
        return self.table[int(np.searchsorted(self.edges, float(obs[0])))]

    def rule(self) -> list[dict[str, float]]:
        """The learned rule as SNR intervals and the split each one gets at zero switching cost
        (with ``known-costs`` the split also depends on the costs at the exact SNR: the band's
        midpoint is used here)."""
        lo = [-np.inf, *self.edges.tolist()]
        hi = [*self.edges.tolist(), np.inf]
        out = []
        for b, (a, z) in enumerate(zip(lo, hi)):
            score = self.table[b].copy()
            if self.known_costs:
                mid = (a if np.isfinite(a) else z - 5.0) if not np.isfinite(z) else (z if not np.isfinite(a) else (a + z) / 2)
                score = score + self.problem.costs.base_rewards(float(mid))[self.splits]
            out.append({"snr_from_db": float(a), "snr_to_db": float(z), "split": int(self.splits[int(np.argmax(score))])})
        return out

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "snrs": self.snrs, "chosen": self.chosen, "targets": self.targets}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.snrs = [float(v) for v in state.get("snrs", [])]
        self.chosen = [int(v) for v in state.get("chosen", [])]
        self.targets = [float(v) for v in state.get("targets", [])]
        if len(self.snrs) != len(self.chosen) or len(self.snrs) != len(self.targets):
            raise UsageError("threshold agent state: snrs, chosen and targets must have equal lengths")
        self._finish()


# --- the contextual bandit --------------------------------------------------------------------
@documented
@dataclass
class BanditConfig:
    """Disjoint LinUCB over splits (``bandit``)."""

    alpha: float = param(0.5, "exploration width: UCB = mean + alpha * std of the ridge estimate", low=0)
    ridge: float = param(1.0, "ridge (prior precision) of every split's regression", low=0, low_open=True)
    rbf_centres_db: list[float] = param(doc="centres of the Gaussian RBF features of the SNR, dB",
                                        default_factory=lambda: [float(v) for v in range(-10, 45, 5)])
    rbf_width_db: float = param(5.0, "width (std) of each RBF, dB", low=0, low_open=True)
    information: str = param("known-costs", "what the bandit is told about the reward (splitrl.agents.information)",
                             choices=INFO_SETTINGS)

    def __post_init__(self) -> None:
        validate(self)
        if not self.rbf_centres_db:
            raise ConfigError("BanditConfig.rbf_centres_db must list at least one centre")


class LinUCBAgent(_BudgetLearner):
    """Disjoint LinUCB over the allowed splits (see the module doc)."""

    kind = "bandit"

    def __init__(self, source: SplitProblem | gym.Env, config: BanditConfig | None = None, *,
                 seed: int = 0) -> None:
        super().__init__(source, config if config is not None else BanditConfig(), seed=seed)
        k = self.problem.config.history
        n_obs = int(self.problem.spec.size)
        # UE/edge state entries after "split in place" (battery, load, ... when the env has them),
        # scaled to [0, 1] by the observation bounds.
        self._extra = np.arange(k + 3, n_obs)
        box = self.problem.spec.box()
        lo, hi = box.low, box.high
        self._extra_lo = lo[self._extra].astype(float)
        self._extra_span = np.maximum(hi[self._extra] - lo[self._extra], 1e-9).astype(float)
        self.dim = 1 + len(self.config.rbf_centres_db) + 2 + len(self._extra)
        S, d = len(self.splits), self.dim
        self.A = np.repeat(np.eye(d)[None] * self.config.ridge, S, axis=0)  # [S, d, d]
        self.b = np.zeros((S, d))  # [S, d]
        self._theta = np.zeros((S, d))
        self._Ainv = np.repeat(np.eye(d)[None] / self.config.ridge, S, axis=0)

    def features(self, obs: np.ndarray) -> np.ndarray:
        """Context of every allowed split -> [S, d]: bias, RBF(SNR), moved?, |move|/L, state entries."""
        obs = np.asarray(obs, dtype=float)
        c = np.asarray(self.config.rbf_centres_db, float)
        rbf = np.exp(-0.5 * ((float(obs[0]) - c) / self.config.rbf_width_db) ** 2)  # [C]
        cur = current_split(self.problem, obs)
        move = np.abs(self.splits - cur).astype(float)  # [S]
        extra = (obs[self._extra] - self._extra_lo) / self._extra_span
        S = len(self.splits)
        shared = np.concatenate([[1.0], rbf])
        return np.concatenate([np.tile(shared, (S, 1)), (move > 0)[:, None].astype(float), (move / self.problem.L)[:, None],
                               np.tile(extra, (S, 1))], axis=1)

    def _scores(self, obs: np.ndarray) -> np.ndarray:
        x = self.features(obs)  # [S, d]
        return np.einsum("sd,sd->s", self._theta, x)

    def _explore_split(self, obs: np.ndarray) -> int:
        x = self.features(obs)
        ucb = np.einsum("sd,sd->s", self._theta, x) + self.config.alpha * np.sqrt(
            np.maximum(np.einsum("sd,sde,se->s", x, self._Ainv, x), 0.0))
        if self.known_costs:
            ucb = ucb + self._known_by_split(obs)
        reach = reachable_splits(self.problem, obs) - self.problem.config.s_min
        best = reach[ucb[reach] >= ucb[reach].max() - 1e-12]
        return int(self.splits[int(self.rng.choice(best))])

    def _record(self, obs: np.ndarray, split: int, target: float) -> None:
        i = int(split) - self.problem.config.s_min
        x = self.features(obs)[i]
        self.A[i] += np.outer(x, x)
        self.b[i] += target * x
        self._Ainv[i] = np.linalg.inv(self.A[i])
        self._theta[i] = self._Ainv[i] @ self.b[i]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "A": self.A.tolist(), "b": self.b.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        A, b = np.asarray(state["A"], float), np.asarray(state["b"], float)
        if A.shape != self.A.shape or b.shape != self.b.shape or not (np.isfinite(A).all() and np.isfinite(b).all()):
            raise UsageError(f"bandit state: A must be {self.A.shape} and b {self.b.shape}, finite")
        self.A, self.b = A, b
        self._Ainv = np.linalg.inv(self.A)
        self._theta = np.einsum("sde,se->sd", self._Ainv, self.b)
