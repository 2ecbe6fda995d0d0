"""Model-based controllers of the ring's cut vector (``splitrl/PipelineSplit-v0``).

`RingPlanner` plans over the env's candidate partitions the way `agents.mbrl` plans over
split points: one `AR1ChannelModel` per device link (fitted online from the observed SNRs, with
forgetting), a persistence-with-decay forecast of each device's load (AR(1) in log space, its
coefficient fitted online), and a receding-horizon dynamic program over the candidates with the
switching cost between consecutive ones. What scores a step at a forecast state is the *step
model*: by default the env's exact analytic cost model (`PipelineSplitEnv.step_figures`, an
upper reference that needs no evaluations), or a learned `RingSurrogate`.

`RingSurrogate` is the learned model of the model-based agent: fitted from *real evaluations*
(`PipelineSplitEnv.measure`: a candidate run at a state, reporting per-stage compute and per-hop
times, as the runtime's stage reports do; each one counted) plus what the ring reports about the
steps it serves. It knows the ring's structure (a round is the stages plus the hops; throughput is
the closed form Θ(S)) but none of the devices or the link: per device it learns seconds per layer
and the starter's embed+head time (least squares on time ÷ load), per link the decode hop time
as a function of SNR (a piecewise-linear fit of log time on SNR), and the starter's energy as a
linear function of its stage and hop times. Switching cost uses the weight bytes it placed and the
link profile's rate table (the channel model the agent is given).

The comparison harness (held-out episodes, intervals) is `splitrl.experiments.ring`.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np

from splitrl.agents.channel_model import AR1ChannelModel
from splitrl.cost.pipeline import ring_throughput
from splitrl.errors import UsageError

__all__ = ["RingPlanner", "RingSurrogate"]


class RingPlanner:
    """Receding-horizon planning over candidate partitions with per-device channel and load models."""

    def __init__(self, env: Any, *, horizon: int = 3, discount: float = 0.9, forgetting: float = 0.98,
                 quadrature: int = 3, model: "RingSurrogate | None" = None) -> None:
        self.env = env.unwrapped if hasattr(env, "unwrapped") else env
        # the step model: the learned surrogate, or the env's exact cost model
        self.model = model
        self._figures = model.predict if model is not None else self.env.step_figures
        if horizon < 1 or not 0 < discount <= 1:
            raise UsageError("horizon must be >= 1 and discount in (0, 1]")
        self.horizon, self.discount = int(horizon), float(discount)
        mean = self.env.link.mean_snr_db()
        self.channels = [AR1ChannelModel(forgetting=forgetting, prior_mean_db=mean, prior_std_db=8.0)
                         for _ in range(self.env.N)]
        self.nodes, self.weights = np.polynomial.hermite_e.hermegauss(quadrature)
        self.weights = self.weights / self.weights.sum()
        self._prev_logload: np.ndarray | None = None
        self._sxx = 1e-3
        self._sxy = 0.0
        self._last_state: tuple[np.ndarray, np.ndarray] | None = None
        self._since_fit = 0

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

    def observe_step(self, action: int, info: dict, *, refit_every: int = 8) -> None:
        """Learn from what the ring reported about the step it just served (learned model only)."""
        if self.model is None or self._last_state is None:
            return
        snr, load = self._last_state
        m = {"stage_s": info["stage_s"], "hop_s": info["hop_s"], "energy": info["energy_j_per_token"],
             "round_s": info["round_s"], "throughput": info["throughput"]}
        self.model.add(action, snr, load, m, evaluation=False)
        self._since_fit += 1
        if self._since_fit >= refit_every:
            self.model.fit()
            self._since_fit = 0

    def act(self, obs: np.ndarray, *, deterministic: bool = True) -> int:
        env = self.env
        snr, load, waiting, current = self._parse(obs)
        self._last_state = (snr.copy(), load.copy())
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
        # step rewards r[h, prev, a] at the forecast state (quadrature over each link's forecast spread);
        # the step figures do not depend on prev, only the switching time does
        samples = min(int(waiting), env.config.max_samples)
        r = np.zeros((self.horizon, A, A))
        for h in range(self.horizon):
            ld = self._load_forecast(load, h)
            prevs = [current] if h == 0 else range(A)
            for z, w in zip(self.nodes, self.weights):
                s_h = np.array([m[h] + z * sd[h] for m, sd in forecasts])
                for a in range(A):
                    fig = self._figures(a, s_h, ld, samples)
                    for prev in prevs:
                        switch_s, _ = env.switch_time(prev, a, s_h, held)
                        r[h, prev, a] += w * env.combine_reward(fig, switch_s)[0]
        # backward DP over the horizon
        V = np.zeros(A)
        for h in range(self.horizon - 1, 0, -1):
            V = np.max(r[h] + self.discount * V[None, :], axis=1)
        q = r[0, current] + self.discount * V
        return int(np.argmax(q))


class RingSurrogate:
    """A learned step model of the ring (see the module docstring): fit from evaluations, predict any candidate.

    Args:
        env: the `PipelineSplitEnv` whose candidates, reward weights and link rate table it uses
            (never its cost model).
        knot_db: spacing of the SNR knots of the hop-time fit.
        ridge: smoothing of the hop-time fit (second differences of the knot values).
    """

    def __init__(self, env: Any, *, knot_db: float = 1.0, ridge: float = 1e-3) -> None:
        self.env = env.unwrapped if hasattr(env, "unwrapped") else env
        self.knot_db, self.ridge = float(knot_db), float(ridge)
        self.data: list[tuple[int, np.ndarray, np.ndarray, dict]] = []  # (action, snr, load, measured)
        self.evaluations = 0   # real evaluations (`measure` calls made for this model)
        self.observations = 0  # served steps the ring reported on
        self._fitted = False

    def clone(self) -> "RingSurrogate":
        """An independent copy (same env, copied data and fit): one per episode keeps episodes independent."""
        other = copy.copy(self)
        other.data = list(self.data)
        for k in ("stage_coef", "hop_logt", "energy_coef"):
            if hasattr(self, k):
                setattr(other, k, getattr(self, k).copy())
        return other

    # ---- data ----------------------------------------------------------------------------------
    def add(self, action: int, snr: np.ndarray, load: np.ndarray, measured: dict, *, evaluation: bool = True) -> None:
        self.data.append((int(action), np.asarray(snr, float).copy(), np.asarray(load, float).copy(), dict(measured)))
        if evaluation:
            self.evaluations += 1
        else:
            self.observations += 1

    # ---- fit -----------------------------------------------------------------------------------
    def fit(self) -> "RingSurrogate":
        env = self.env
        N, L = env.N, env.L
        if not self.data:
            raise UsageError("RingSurrogate.fit: no evaluations yet")
        # per device: stage time / load = sec_per_layer * n + head * starter + overhead
        rows: list[list[list[float]]] = [[] for _ in range(N)]
        ys: list[list[float]] = [[] for _ in range(N)]
        hop_pts: list[list[tuple[float, float]]] = [[] for _ in range(N)]
        e_rows, e_y = [], []
        T = env.config.timeout_s
        for a, snr, load, m in self.data:
            cand = env.candidates[a]
            b = [0, *cand.cuts, L]
            for k, d in enumerate(cand.active):
                rows[d].append([b[k + 1] - b[k], 1.0 if k == 0 else 0.0, 1.0])
                ys[d].append(m["stage_s"][k] / max(load[d], 1e-6))
                if len(cand.active) > 1:  # a hop capped at the timeout (outage) is learned as the cap
                    hop_pts[d].append((float(snr[d]), min(float(m["hop_s"][k]), T)))
            hop0 = m["hop_s"][0] if len(cand.active) > 1 else 0.0
            e_rows.append([m["stage_s"][0], hop0])
            e_y.append(m["energy"])
        self.stage_coef = np.zeros((N, 3))
        for d in range(N):
            if rows[d]:
                X, y = np.asarray(rows[d]), np.asarray(ys[d])
                coef = np.linalg.lstsq(X, y, rcond=None)[0]
                self.stage_coef[d] = coef
            else:  # never seen: borrow the mean of the devices seen (a guess the planner may revise)
                self.stage_coef[d] = np.nan
        seen = ~np.isnan(self.stage_coef[:, 0])
        self.stage_coef[~seen] = self.stage_coef[seen].mean(axis=0)
        # hop time per device link: log t = piecewise linear in SNR (hat basis on knots), ridge on curvature
        lo, hi = -10.0, 45.0
        self.knots = np.arange(lo, hi + self.knot_db, self.knot_db)
        self.hop_logt = np.zeros((N, len(self.knots)))
        K = len(self.knots)
        D2 = np.diff(np.eye(K), n=2, axis=0)
        all_pts = [p for pts in hop_pts for p in pts]
        for d in range(N):
            pts = hop_pts[d] if len(hop_pts[d]) >= 4 else all_pts
            if not pts:
                self.hop_logt[d] = np.log(T)
                continue
            x = np.array([p[0] for p in pts])
            y = np.log(np.array([p[1] for p in pts]))
            B = self._basis(x)
            A = B.T @ B + self.ridge * len(x) * D2.T @ D2 + 1e-9 * np.eye(K)
            self.hop_logt[d] = np.linalg.solve(A, B.T @ y)
        self.energy_coef = np.linalg.lstsq(np.asarray(e_rows), np.asarray(e_y), rcond=None)[0]
        self._fitted = True
        return self

    def _basis(self, x: np.ndarray) -> np.ndarray:
        """Linear-interpolation (hat) basis of SNRs ``x`` on the knots: ``[len(x), n_knots]``."""
        x = np.clip(np.asarray(x, float), self.knots[0], self.knots[-1])
        idx = np.clip(np.searchsorted(self.knots, x, side="right") - 1, 0, len(self.knots) - 2)
        w = (x - self.knots[idx]) / self.knot_db
        B = np.zeros((len(x), len(self.knots)))
        B[np.arange(len(x)), idx] = 1 - w
        B[np.arange(len(x)), idx + 1] = w
        return B

    # ---- predict -------------------------------------------------------------------------------
    def predict(self, action: int, snr: np.ndarray, load: np.ndarray, samples: int) -> dict[str, Any]:
        """Predicted step figures of candidate ``action`` at a state (same keys as `PipelineSplitEnv.measure`)."""
        if not self._fitted:
            raise UsageError("RingSurrogate: call fit() first")
        env = self.env
        cand = env.candidates[action]
        b = [0, *cand.cuts, env.L]
        T = env.config.timeout_s
        stage = []
        for k, d in enumerate(cand.active):
            c = self.stage_coef[d]
            t = c[0] * (b[k + 1] - b[k]) + (c[1] if k == 0 else 0.0) + c[2]
            stage.append(max(t, 1e-6) * float(load[d]))
        if len(cand.active) > 1:
            hops = [min(float(np.exp(self._basis([snr[d]])[0] @ self.hop_logt[d])), T) for d in cand.active]
        else:
            hops = [0.0]
        thr = ring_throughput(max(samples, 1), stage, hops) if samples > 0 else 0.0
        energy = float(self.energy_coef @ np.array([stage[0], hops[0] if len(cand.active) > 1 else 0.0]))
        return {"throughput": float(thr), "round_s": float(min(sum(stage) + sum(hops), T)),
                "energy": max(energy, 0.0), "stage_s": stage, "hop_s": hops}

    def predict_reward(self, action: int, prev_action: int, snr: np.ndarray, load: np.ndarray, waiting: int,
                       held: list[set[int]]) -> tuple[float, dict[str, Any]]:
        """`PipelineSplitEnv.predict_reward` with the learned step model in place of the cost model."""
        env = self.env
        samples = min(int(waiting), env.config.max_samples)
        m = self.predict(action, snr, load, samples)
        switch_s, _ = env.switch_time(prev_action, action, snr, held)
        r, served, _ = env.combine_reward(m, switch_s)
        return r, {"throughput": served, "switch_s": switch_s}

    def rel_error(self, data: list[tuple[int, np.ndarray, np.ndarray, dict]], samples: int) -> dict[str, float]:
        """Median relative error of predicted throughput and round time on held-out evaluations."""
        et, er = [], []
        for a, snr, load, m in data:
            p = self.predict(a, snr, load, samples)
            if m["throughput"] > 0:
                et.append(abs(p["throughput"] - m["throughput"]) / m["throughput"])
            er.append(abs(p["round_s"] - m["round_s"]) / max(m["round_s"], 1e-12))
        return {"throughput_median": float(np.median(et)) if et else float("nan"),
                "round_s_median": float(np.median(er))}
