"""The model-based agent: learn a quality surrogate and a channel model, plan on them.

* **Quality model**: a `splitrl.surrogate.Surrogate` of log(ppl/ppl_clean) over (split, SNR),
  fitted from the real evaluations the agent chooses to make — during learning by active
  acquisition (`splitrl.surrogate.propose`: among the splits whose optimistic reward can still
  beat the best pessimistic one at the observed SNR, the one the surrogate is least sure of).
* **Channel model**: `AR1ChannelModel` of the observed SNRs (free to observe), with forgetting so
  it follows a channel whose statistics change.
* **Planning**: receding-horizon, exact over the discrete splits — dynamic programming over
  ``horizon`` steps of predicted SNR (Gauss-Hermite quadrature over the forecast's spread), with
  the switching cost between consecutive splits. Latency/energy come from the analytic cost model.
  The surrogate's predictions and the costs are precomputed on an SNR grid at every refit, so a
  decision is a table interpolation, the known costs at the observed state and an
  O(horizon · S²) DP. `act` runs all of it as one compiled call (`splitrl.decision.kernel_numba`, numba;
  the same numbers as `plan`, which stays the reference): ~14 µs back to back, ~0.15 ms right
  after a generation step has flushed the caches (`benchmarks/control_smollm2.py`).
* **When to pay for a real evaluation** (deployment, via `feedback`): when the surrogate's
  uncertainty at the chosen split (in reward units) exceeds ``eval_threshold`` times the decision
  margin to the runner-up, or when the SNR is outside what the surrogate has seen — then the
  measured outcome is added and the surrogate refitted, within ``online_budget_fraction``.
* **Information** (`splitrl.agents.information`): with ``information: known-costs`` (default) the
  latency/energy/switching terms come from the cost model and only the quality term is learned.
  With ``reward-only`` the agent is told nothing but the reward: its surrogate learns the whole
  pre-switch reward of (split, SNR) and the switching cost ``c_fixed·[moved] + c_layer·|move|`` is
  estimated from the observed rewards by ridge regression (`estimate_switch_cost`) at every refit;
  online evaluations (`feedback`) are off, since the info's quality measurement is not the reward.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from splitrl.agents.base import Agent, StepCallback, problem_of
from splitrl.agents.baselines import action_towards
from splitrl.agents.channel_model import AR1ChannelModel
from splitrl.agents.hooks import at_boundary, log_scalars
from splitrl.decision.problem import SplitProblem
from splitrl.decision.reward import switch_cost
from splitrl.surrogate import SURROGATE_KINDS, load_surrogate, make_surrogate, propose
from splitrl.surrogate.features import spec_for
from splitrl.yamlio import short
from splitrl.errors import UsageError

SNR_GRID = np.arange(-20.0, 50.0 + 1e-9, 0.5)
_GRID_LO, _GRID_HI, _GRID_STEP = float(SNR_GRID[0]), float(SNR_GRID[-1]), float(SNR_GRID[1] - SNR_GRID[0])
_NO_LINK = np.zeros((0, 1))  # the kernel's link rows when no state-dependent costs are computed
_KERNEL: list = []  # splitrl.decision.kernel_numba.plan_decision, imported (numba) on the first compiled decision


def _plan_kernel():
    if not _KERNEL:
        # lazy: numba (and LLVM) loads only where a compiled decision runs, not for every agent
        from splitrl.decision.kernel_numba import plan_decision

        _KERNEL.append(plan_decision)
    return _KERNEL[0]


@dataclass
class MBRLConfig:
    """Model-based agent settings.

    Attributes:
        surrogate_kind: `splitrl.surrogate.SURROGATE_KINDS` key (``extratrees``, ``gbr``, ``gp``, ``mlp``).
        horizon: planning horizon in decisions (1 = greedy with switching cost), 1..32.
        discount: discount of future steps in the plan, in (0, 1].
        quadrature: Gauss-Hermite nodes over the forecast SNR spread, 1..9.
        warmup_evaluations: random-split evaluations before the first fit (>= 2).
        refit_every: refit the surrogate after this many new evaluations (>= 1).
        beta: width (in stds) of the confidence bounds used by active acquisition, >= 0.
        explore: ``active`` (uncertainty × reward at stake) or ``random`` acquisition while learning.
        eval_threshold: at deployment, pay a real evaluation when w_q·std at the chosen split exceeds
            this times the margin to the runner-up (>= 0; 0 disables online evaluations).
        online_budget_fraction: cap on online evaluations as a fraction of decisions, in [0, 1].
        channel_forgetting: forgetting factor of the channel model, in (0, 1].
        information: ``known-costs`` (the cost model's terms are given) or ``reward-only`` (learn the
            whole reward, switching cost included); see the module doc.
        compiled_decisions: decide with the compiled kernel (`splitrl.decision.kernel_numba`: the same
            numbers as the numpy planner, in one call) rather than numpy.
    """

    surrogate_kind: str = "extratrees"
    horizon: int = 4
    discount: float = 0.95
    quadrature: int = 5
    warmup_evaluations: int = 20
    refit_every: int = 10
    beta: float = 2.0
    explore: str = "active"
    eval_threshold: float = 1.0
    online_budget_fraction: float = 0.05
    channel_forgetting: float = 0.98
    information: str = "known-costs"
    compiled_decisions: bool = True

    def __post_init__(self) -> None:
        checks = [
            ("surrogate_kind", self.surrogate_kind in SURROGATE_KINDS, ", ".join(SURROGATE_KINDS)),
            ("horizon", 1 <= self.horizon <= 32, "1..32"),
            ("discount", 0 < self.discount <= 1, "(0, 1]"),
            ("quadrature", 1 <= self.quadrature <= 9, "1..9"),
            ("warmup_evaluations", self.warmup_evaluations >= 2, ">= 2"),
            ("refit_every", self.refit_every >= 1, ">= 1"),
            ("beta", self.beta >= 0, ">= 0"),
            ("explore", self.explore in ("active", "random"), "active, random"),
            ("eval_threshold", self.eval_threshold >= 0, ">= 0"),
            ("online_budget_fraction", 0 <= self.online_budget_fraction <= 1, "[0, 1]"),
            ("channel_forgetting", 0 < self.channel_forgetting <= 1, "(0, 1]"),
            ("information", self.information in ("known-costs", "reward-only"), "known-costs, reward-only"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise UsageError(f"MBRLConfig.{name} must be {allowed}, got {short(getattr(self, name))}")


class MBRLAgent(Agent):
    """Plans the split on a learned quality surrogate and a learned channel model (see module doc)."""

    kind = "mbrl"
    learns = True

    def __init__(self, source: SplitProblem | gym.Env, config: MBRLConfig | None = None, *, seed: int = 0) -> None:
        super().__init__()
        self.config = config or MBRLConfig()
        self.seed = int(seed)
        self.problem = p = problem_of(source)
        self.L, self.transport = p.L, p.config.transport
        self.splits = np.asarray(p.splits)
        self.reward_cfg = p.config.reward
        self.history = p.config.history
        # The surrogate's reference perplexity: the backend's own clean perplexity when built from
        # an env (a real evaluation's differs from the table's), else the sweep table's.
        unwrapped = getattr(source, "unwrapped", None)
        clean = float(unwrapped.ppl_clean) if unwrapped is not None else p.sweep_table().ppl_clean
        self.spec = spec_for(self.L, [self.transport], ppl_clean={self.transport: clean})
        self.rng = np.random.default_rng(self.seed)
        self.channel = AR1ChannelModel(forgetting=self.config.channel_forgetting)
        self.cells: list[tuple[str, int, float]] = []
        self.targets: list[float] = []
        # reward-only: the observed reward and the split in place before each evaluation
        self.rewards: list[float] = []
        self.previous: list[int] = []
        self.switch_coef = (0.0, 0.0)  # learned (fixed, per layer) switching cost, reward-only
        self.surrogate = None
        self.decisions = 0
        self.online_evaluations = 0
        self._since_fit = 0
        self._pending: dict | None = None
        self._last_obs: list[float] | None = None
        self._base_grid = self._precompute_costs()
        self._q_grid: np.ndarray | None = None
        self._sd_grid: np.ndarray | None = None
        self._r_grid: np.ndarray | None = None
        self._seen_snr = (np.inf, -np.inf)
        nodes, weights = np.polynomial.hermite_e.hermegauss(self.config.quadrature)
        self._gh = (nodes, weights / weights.sum())
        S = self.splits
        self._switch = self._switch_cost(S[None, :], S[:, None])  # [prev, next]

    @property
    def known_costs(self) -> bool:
        return self.config.information == "known-costs"

    @property
    def _wq(self) -> float:
        """Weight of the learned term in the reward (reward-only learns the reward itself: 1)."""
        return self.reward_cfg.w_quality if self.known_costs else 1.0

    def _switch_cost(self, split, previous) -> np.ndarray:
        """Weighted switching cost: the config's (known-costs) or the learned one (reward-only)."""
        if self.known_costs:
            return self.reward_cfg.w_switch * switch_cost(self.reward_cfg, split, previous)
        moved = np.abs(np.asarray(split) - np.asarray(previous))
        return np.where(moved > 0, self.switch_coef[0] + self.switch_coef[1] * moved, 0.0)

    # --- models -----------------------------------------------------------------------------
    def _precompute_costs(self) -> np.ndarray:
        """Reward at zero quality loss, [snr grid, allowed split], from the env's analytic costs
        (reward-only: zero; the surrogate then learns the whole pre-switch reward)."""
        if not self.known_costs:
            return np.zeros((len(SNR_GRID), len(self.splits)))
        return np.stack([self.problem.costs.base_rewards(float(snr))[self.splits] for snr in SNR_GRID])

    def _fit(self) -> None:
        self.surrogate = make_surrogate(self.config.surrogate_kind, self.spec, seed=self.seed)
        if self.known_costs:
            y = np.asarray(self.targets)
        else:  # learned term = -(reward + switching) = minus the pre-switch reward
            self.switch_coef = estimate_switch_cost([c[1] for c in self.cells], self.previous,
                                                    [c[2] for c in self.cells], self.rewards)
            S = self.splits
            self._switch = self._switch_cost(S[None, :], S[:, None])
            y = -(np.asarray(self.rewards) + self._switch_cost(np.array([c[1] for c in self.cells]),
                                                               np.asarray(self.previous)))
            self._base_grid = self._learned_base(y)
        self.surrogate.fit(self.cells, y)
        self._refresh_grids()
        self._since_fit = 0

    def _learned_base(self, y: np.ndarray) -> np.ndarray:
        """reward-only: the surrogate's structural zero at split == L (no link, no quality loss) does
        not hold for the whole reward, so the all-on-UE reward (no link: no SNR dependence) is the
        mean of its observed pre-switch rewards (0 — optimistic — until one is observed)."""
        base = np.zeros((len(SNR_GRID), len(self.splits)))
        at_l = np.array([c[1] for c in self.cells]) == self.L
        if at_l.any() and self.splits[-1] == self.L:
            base[:, -1] = -float(np.asarray(y)[at_l].mean())
        return base

    def _refresh_grids(self) -> None:
        """Tabulate the surrogate over SNR_GRID so decisions never call scikit-learn."""
        n = len(SNR_GRID)
        grid = ([self.transport] * (n * len(self.splits)), np.tile(self.splits, n), np.repeat(SNR_GRID, len(self.splits)))
        mu, sd = self.surrogate.predict_with_uncertainty(grid)
        self._q_grid = np.asarray(mu).reshape(n, len(self.splits))
        self._sd_grid = np.asarray(sd).reshape(n, len(self.splits))
        self._r_grid = None  # rebuilt lazily from the new quality grid
        snrs = np.array([c[2] for c in self.cells])
        self._seen_snr = (float(snrs.min()), float(snrs.max()))

    def _add(self, split: int, snr: float, log_ratio: float, *, reward: float | None = None,
             previous: int | None = None) -> None:
        if not self.known_costs:
            if reward is None or previous is None:
                raise UsageError("a reward-only MBRL agent learns from (reward, previous split), not the quality alone")
            self.rewards.append(float(reward))
            self.previous.append(int(previous))
        self.cells.append((self.transport, int(split), float(snr)))
        self.targets.append(float(log_ratio))
        self.real_evaluations += 1
        self._since_fit += 1
        if len(self.cells) >= 2 and (self.surrogate is None or self._since_fit >= self.config.refit_every):
            self._fit()

    def _interp(self, grid: np.ndarray, snr: np.ndarray) -> np.ndarray:
        """Rows of ``grid`` (over SNR_GRID) linearly interpolated at each ``snr`` -> [len(snr), S]."""
        x = np.clip(np.asarray(snr, float), SNR_GRID[0], SNR_GRID[-1])
        pos = (x - SNR_GRID[0]) / (SNR_GRID[1] - SNR_GRID[0])
        lo = np.minimum(np.floor(pos).astype(int), len(SNR_GRID) - 2)
        w = (pos - lo)[:, None]
        return (1 - w) * grid[lo] + w * grid[lo + 1]

    def expected_rewards(self, snr_now: float, obs: np.ndarray | None = None) -> np.ndarray:
        """Expected reward (before switching) of each allowed split at steps 0..horizon-1.

        The cost grid is over SNR only; with ``known-costs`` and an observation carrying UE/edge
        state (UE load, delayed edge load, battery), the known costs at the observed state replace
        the grid's at the current SNR, and the same state offset is assumed for the forecast steps
        (the state is persistent: a Markov load, a slowly draining battery)."""
        H = self.config.horizon
        mean, std = self.channel.forecast(snr_now, H)
        nodes, weights = self._gh
        snrs = (mean[:, None] + std[:, None] * nodes[None, :]).ravel()  # [H * Q]
        r = self._interp(self._reward_grid(), snrs).reshape(H, len(nodes), len(self.splits))
        out = np.einsum("hqs,q->hs", r, weights)
        if obs is not None and self.known_costs and self._has_state:
            offset = self._state_base(snr_now, obs) - self._interp(self._base_grid, np.array([snr_now]))[0]
            out = out + offset[None, :]
        return out

    def _reward_grid(self) -> np.ndarray:
        """Reward before switching on the SNR grid (rebuilt lazily after a refit)."""
        if self._r_grid is None:
            q = self._q_grid if self._q_grid is not None else 0.0
            self._r_grid = self._base_grid - self._wq * q
        return self._r_grid

    @property
    def _has_state(self) -> bool:
        c = self.problem.config
        return bool(c.include_ue_state or getattr(c, "edge_load", None) is not None)

    @property
    def _battery_charged(self) -> bool:
        """Whether the reward charges the battery level (then the observation's is a cost input)."""
        c = self.problem.config
        return bool(c.include_ue_state and c.battery_aware_energy)

    def _state_fields(self) -> tuple[int | None, int | None, int | None]:
        """Positions of (UE load, edge load, battery) in the observation (None: absent or unused)."""
        fields = self.__dict__.get("_fields")
        if fields is None:
            spec = self.problem.spec

            def at(name: str) -> int | None:
                try:
                    return spec.index(name)
                except KeyError:
                    return None

            fields = self._fields = (at("load"), at("edge_load"),
                                     at("battery") if self._battery_charged else None)
        return fields

    def _observed_state(self, obs) -> tuple[float | None, float | None, float | None]:
        """(UE load, edge load, battery) from the observation; None where absent or unused."""
        return tuple(None if i is None else float(obs[i]) for i in self._state_fields())  # type: ignore[return-value]

    def _state_base(self, snr: float, obs: np.ndarray) -> np.ndarray:
        """Known zero-loss reward of every allowed split at ``snr`` and the observed UE/edge state."""
        load, edge, battery = self._observed_state(obs)
        kw = {k: v for k, v in (("edge_load", edge), ("battery", battery)) if v is not None}
        return self.problem.costs.base_rewards(float(snr), load, **kw)[self.splits]

    def plan(self, snr_now: float, current_split: int, obs: np.ndarray | None = None) -> tuple[int, np.ndarray]:
        """(best split now, value of each first split) by exact DP over the horizon."""
        r = self.expected_rewards(snr_now, obs)
        S = self.splits
        gamma = self.config.discount
        V = np.zeros(len(S))
        for h in range(len(r) - 1, 0, -1):
            V = np.max(r[h][None, :] - self._switch + gamma * V[None, :], axis=1)
        i = int(np.clip(np.searchsorted(S, current_split), 0, len(S) - 1))
        if S[i] == current_split:
            switch_now = self._switch[i]
        else:  # the split in place is outside the allowed range (e.g. a reset state): pay for moving
            switch_now = self._switch_cost(S, current_split)
        first = r[0] - switch_now + gamma * V
        return int(S[int(np.argmax(first))]), first

    # --- Agent interface ---------------------------------------------------------------------
    def _parse(self, obs: np.ndarray) -> tuple[float, int]:
        return float(obs[0]), int(round(float(obs[self.history + 2])))

    def prepare_decisions(self) -> None:
        """Before serving (`splitrl.controller.policy.AgentPolicy` calls this when it loads an agent):
        compile the decision kernel (or load it from numba's on-disk cache), and work out the link
        terms of every SNR the rounded observation can hold — a decision's costs at a new SNR are
        mostly the link's (rates, HARQ, transfers), so none is computed inside the serving loop."""
        if self.config.compiled_decisions:
            # lazy: numba (and LLVM) loads only where a compiled decision runs, not for every agent
            from splitrl.decision.kernel_numba import warm_up

            warm_up()
        if self.known_costs and self._has_state:
            self.problem.costs.warm(self.problem.spec.snr_levels())

    def _compiled_plan(self, snr: float, current: int, obs) -> tuple[int, float, float] | None:
        """(best split, margin to the runner-up, weighted std at it) from `splitrl.decision.kernel_numba`;
        None where the numpy planner must decide (kernel off, or the split in place is outside
        the allowed range, which `plan` prices separately)."""
        if not self.config.compiled_decisions:
            return None
        fixed = self.__dict__.get("_kernel_fixed")
        if fixed is None:  # what does not change between decisions, looked up once (plain Python on the hot path)
            fixed = self._kernel_fixed = ({int(s): j for j, s in enumerate(self.splits)}, self.problem.costs,
                                          *self.problem.costs.kernel_inputs())
        index, costs, static, steps, consts = fixed
        plan_decision = _plan_kernel()
        i = index.get(current)
        if i is None:
            return None
        S = self.splits
        use_state = obs is not None and self.known_costs and self._has_state
        load = edge = battery = None
        link = _NO_LINK
        if use_state:
            load, edge, battery = self._observed_state(obs)
            if edge is not None:
                costs.check_edge_load(edge)
            link = costs.link_rows(snr)
        mu, phi, sigma = self.channel.params
        sd_grid = self._sd_grid if self._sd_grid is not None else self._base_grid
        k, margin, sd = plan_decision(  # every scalar typed as in kernels.warm_up: one compiled signature
            snr, i, float(mu), float(phi), float(sigma), int(self.config.horizon), self._gh[0], self._gh[1],
            self._reward_grid(), self._base_grid, sd_grid, self._sd_grid is not None, self._switch,
            float(self.config.discount), float(self._wq), _GRID_LO, _GRID_HI,
            _GRID_STEP, use_state, S, static, steps, consts, link, 0.0 if load is None else load, load is not None,
            0.0 if edge is None else edge, edge is not None, 1.0 if battery is None else battery, battery is not None)
        return int(S[k]), float(margin), float(sd)

    def act(self, obs: np.ndarray, *, deterministic: bool = True) -> int:
        """Plan at the observed SNR (fed to the channel model: acting is online)."""
        snr, current = self._parse(obs)
        self.channel.observe(snr)
        compiled = self._compiled_plan(snr, current, obs)
        if compiled is None:
            split, values = self.plan(snr, current, np.asarray(obs, dtype=float))
        else:
            split, margin, sd = compiled
        self.decisions += 1
        self._pending = None
        if self._sd_grid is not None and self.config.eval_threshold > 0:
            if compiled is None:
                i = int(np.searchsorted(self.splits, split))
                sd = float(self._interp(self._sd_grid, np.array([snr]))[0, i]) * self._wq
                ranked = np.sort(values)
                margin = float(ranked[-1] - ranked[-2]) if len(ranked) > 1 else np.inf
            unseen = not (self._seen_snr[0] - 1.0 <= snr <= self._seen_snr[1] + 1.0)
            if unseen or sd > self.config.eval_threshold * max(margin, 1e-9):
                self._pending = {"split": split, "snr": snr}
        return action_towards(self.problem, split, obs)

    def feedback(self, info: dict[str, Any]) -> bool:
        """Pay for the measured outcome when the last decision was flagged as worth it."""
        if self._pending is None or "log_ppl_ratio" not in info or not self.known_costs:
            return False
        budget = self.config.online_budget_fraction * max(self.decisions, 1)
        if self.online_evaluations + 1 > max(1.0, budget):
            return False
        self.online_evaluations += 1
        self._add(int(info["split"]), float(info["snr_db"]), float(info["log_ppl_ratio"]))
        self._pending = None
        return True

    def reset(self) -> None:
        self.channel.reset_episode()
        self._pending = None

    def learn(self, env: gym.Env, total_steps: int, *, callback: StepCallback | None = None) -> "MBRLAgent":
        """Spend ``total_steps`` real evaluations choosing informative splits, refitting as it goes.

        Follows the trainer's callback contract (`splitrl.agents.hooks`): one call per env step,
        a consistent boundary after every step (refits are synchronous), diagnostics after refits.
        A resumed agent continues from the observation it stopped at instead of resetting the env.
        """
        if self._last_obs is None:
            obs, _ = env.reset(seed=int(self.rng.integers(2**31 - 1)))
            self.channel.reset_episode()
        else:
            obs = np.asarray(self._last_obs, dtype=np.float32)
        completed = True
        for _ in range(int(total_steps)):
            snr = self._parse(obs)[0]
            self.channel.observe(snr)
            if self.surrogate is None or len(self.cells) < self.config.warmup_evaluations or self.config.explore == "random":
                split = int(self.rng.choice(self.splits))
            else:
                cand = [(self.transport, int(s), snr) for s in self.splits]
                i = propose(self.surrogate, cand, lambda tr, q: self._full_base(q), 1, beta=self.config.beta,
                            w_quality=self._wq, allowed_splits=self.splits,
                            seed=int(self.rng.integers(2**31 - 1)))[0]
                split = int(self.splits[int(i)])
            action = action_towards(self.problem, split, obs)
            next_obs, reward, terminated, truncated, info = env.step(action)
            self.env_steps += 1
            refits_before = self.surrogate
            self._add(int(info["split"]), float(info["snr_db"]), float(info["log_ppl_ratio"]), reward=float(reward),
                      previous=int(info["previous_split"]))
            done = bool(terminated or truncated)
            if done:
                next_obs, _ = env.reset()
                self.channel.reset_episode()
            self._last_obs = np.asarray(next_obs, dtype=np.float32).tolist()
            if callback is not None:
                if self.surrogate is not refits_before and self._sd_grid is not None:
                    mu, phi, sigma = self.channel.params
                    log_scalars(callback, {"surrogate/train_points": float(len(self.cells)),
                                           "surrogate/mean_std": float(self._sd_grid.mean()),
                                           "channel/model_mean_db": mu, "channel/model_phi": phi,
                                           "channel/model_sigma_db": sigma}, self.env_steps)
                keep = callback({"step": self.env_steps, "obs": obs, "action": action, "reward": reward,
                                 "next_obs": next_obs, "terminated": terminated, "truncated": truncated,
                                 "done": done, "info": info, "real_evaluations": self.real_evaluations})
                if keep is False or not at_boundary(callback, self.env_steps):
                    completed = False
                    break
            obs = next_obs
        # Fit on everything once the budget is spent (not at an interruption: a resumed run must
        # make exactly the refits an uninterrupted one makes).
        if completed and self.cells and self._since_fit:
            self._fit()
        return self

    def _full_base(self, snr: float) -> np.ndarray:
        """Zero-loss reward of every split 0..L at ``snr`` (what `propose` expects)."""
        out = np.full(self.L + 1, -np.inf)
        out[self.splits] = self._interp(self._base_grid, np.array([snr]))[0]
        return out

    # --- persistence -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        d = super().state_dict()
        d.update({"config": asdict(self.config), "seed": self.seed, "decisions": self.decisions,
                  "online_evaluations": self.online_evaluations, "channel": self.channel.state_dict(),
                  "rng": self.rng.bit_generator.state, "since_fit": self._since_fit, "last_obs": self._last_obs,
                  "switch_coef": list(self.switch_coef)})
        return d

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.config = MBRLConfig(**state["config"])
        self.seed = int(state["seed"])
        self.decisions = int(state["decisions"])
        self.online_evaluations = int(state["online_evaluations"])
        self.channel.load_state_dict(state["channel"])
        self.rng.bit_generator.state = state["rng"]
        self._since_fit = int(state.get("since_fit", 0))
        self._last_obs = state.get("last_obs")
        self.switch_coef = tuple(float(v) for v in state.get("switch_coef", (0.0, 0.0)))
        if not self.known_costs:  # the constructor tabulated the known costs; this setting learns them
            self._base_grid = self._precompute_costs()
        S = self.splits
        self._switch = self._switch_cost(S[None, :], S[:, None])

    def save_artifacts(self, directory: Path) -> None:
        (directory / "evaluations.json").write_text(json.dumps({"cells": self.cells, "targets": self.targets,
                                                                 "rewards": self.rewards, "previous": self.previous}))
        if self.surrogate is not None:
            self.surrogate.save(directory / "surrogate")

    def load_artifacts(self, directory: Path) -> None:
        """Read the measured cells; the surrogate is refitted from its own JSON file (no pickle:
        `splitrl.surrogate.base`), and must have been fitted on a prefix of these cells."""
        path = directory / "evaluations.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: not an {self.kind} checkpoint")
        data = json.loads(path.read_text())
        cells = [(str(t), int(s), float(q)) for t, s, q in data["cells"]]
        targets = [float(v) for v in data["targets"]]
        if len(cells) != len(targets) or not all(np.isfinite(targets)) or any(t != self.transport for t, *_ in cells):
            raise UsageError(f"{path}: cells and targets must pair up, be finite and use transport {self.transport!r}")
        self.cells, self.targets = cells, targets
        self.rewards = [float(v) for v in data.get("rewards", [])]
        self.previous = [int(v) for v in data.get("previous", [])]
        if not self.known_costs and (len(self.rewards) != len(cells) or len(self.previous) != len(cells)):
            raise UsageError(f"{path}: a reward-only agent needs a reward and a previous split per cell")
        if not self.known_costs and cells:
            y = -(np.asarray(self.rewards) + self._switch_cost(np.array([c[1] for c in cells]), np.asarray(self.previous)))
            self._base_grid = self._learned_base(y)
        if (directory / "surrogate.json").exists():
            self.surrogate = load_surrogate(directory / "surrogate", expected_spec=self.spec)
            if self.surrogate.n_train > len(self.cells):
                raise UsageError(f"{directory / 'surrogate.json'} was fitted on more cells than {path} holds")
            self._refresh_grids()


def estimate_switch_cost(splits, previous, snrs, rewards, *, ridge: float = 1e-2) -> tuple[float, float]:
    """(fixed, per-layer) switching cost estimated from observed rewards alone.

    Ridge regression of the reward on a free per-split function of the SNR (one-hot split x
    [1, SNR RBFs every 5 dB]) plus ``-[moved]`` and ``-|move|``; the two switching coefficients are
    not penalised and are clipped to >= 0. It is only as good as the data: if every step moved, the
    fixed part is confounded with the per-split intercepts (the ridge then shrinks it towards 0)."""
    s, p = np.asarray(splits, int), np.asarray(previous, int)
    y = np.asarray(rewards, float)
    if len(y) < 4:
        return 0.0, 0.0
    snr = np.asarray(snrs, float)
    centres = np.arange(-10.0, 45.0, 5.0)
    basis = np.concatenate([np.ones((len(y), 1)), np.exp(-0.5 * ((snr[:, None] - centres[None, :]) / 5.0) ** 2)], 1)
    uniq = np.unique(s)
    onehot = (s[:, None] == uniq[None, :]).astype(float)  # [n, U]
    X_split = (onehot[:, :, None] * basis[:, None, :]).reshape(len(y), -1)  # [n, U * B]
    move = np.abs(s - p).astype(float)
    X = np.concatenate([X_split, -(move > 0)[:, None].astype(float), -move[:, None]], 1)
    pen = np.full(X.shape[1], ridge)
    pen[-2:] = 1e-9
    coef = np.linalg.solve(X.T @ X + np.diag(pen), X.T @ y)
    return max(0.0, float(coef[-2])), max(0.0, float(coef[-1]))
