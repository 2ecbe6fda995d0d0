"""The multi-cut MDP: which devices run the ring and where its K-1 cuts go, step by step.

Owns `PipelineSplitEnv` (``splitrl/PipelineSplit-v0``). A starter device (index 0, holding the
embeddings and the head) and up to N-1 helper devices form a ring (`splitrl.pipeline`); each
device transmits on its own wireless link whose SNR follows its profile's fading process, and each
device's compute is slowed by a background load that drifts. Requests arrive at random; up to
``max_samples`` of them are in flight in the ring at once (recurrent pipeline parallelism).

* Observation (Box, float32, clipped to its bounds): per-device link SNR now and ``history`` past
  values (dB / 30, in [-5, 5]), per-device load factor ([0, 20]), samples waiting (/ max_samples,
  [0, 100]), the current action (/ n_actions).
* Action (Discrete): an index into `candidates` — for every set of active devices that contains
  the starter, the DP-balanced cuts for the nominal state (mean SNR, load 1) and the equal split.
* Dynamics per step of ``decision_interval_s``: the ring serves ``Θ(S) dt`` tokens with
  S = min(waiting, max_samples) and Θ the closed form of `splitrl.cost.pipeline` at the true
  state (stage times x load, hop times at the SNRs); changing the partition first pays the
  switching time: the weight bytes of every layer that moves to a device not already holding it,
  sent over the receiving device's link (devices keep the layers they once held), at most `max_switch_s`.
* Reward: ``throughput / ref_throughput - w_latency * round_s / ref_round_s - w_energy * starter
  energy per token / ref_energy - w_switch * switch_s / decision_interval_s``.

`oracle_action` is the step-wise oracle that knows the true state (it evaluates every candidate's
reward); `static_action` / `equal_action` are the fixed baselines.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from splitrl.cost.pipeline import PipelineCostModel, ring_throughput
from splitrl.cost.profiles import load_profile
from splitrl.models import load_model
from splitrl.pipeline.partition import cost_fn, dp_cuts, equal_cuts
from splitrl.errors import UsageError

__all__ = ["PipelineSplitConfig", "PipelineSplitEnv"]


@dataclass
class PipelineSplitConfig:
    """Configuration of the multi-cut MDP.

    Attributes:
        model: model name (`splitrl.models.load_model`; only its sizes are used).
        devices: device profiles, device 0 is the starter.
        link_profile: every device's uplink profile (`splitrl.cost` link profile name).
        codec: activation codec on every hop.
        context: context length the stage times are priced at.
        new_tokens: tokens per request (a request leaves after this many).
        max_samples: samples in flight at most.
        arrival_rate: mean requests arriving per second (Poisson).
        decision_interval_s: time between decisions, seconds.
        history: past SNRs per device in the observation.
        load_sigma, load_rho: log-normal AR(1) of each helper's background load (starter: 1).
        w_latency, w_energy, w_switch: reward weights.
        weight_dtype_bytes: bytes per parameter moved when a layer changes device.
        timeout_s: a hop (or a round) slower than this is charged this (a link in outage has an
            infinite transfer time; the reward stays finite).
        preload_all: every device stores every layer from the start (switching is free); else a
            device holds only the layers it was given so far.
        max_switch_s: a weight transfer slower than this (a receiving link in outage) is charged
            this: the ring is stalled for the whole step and the penalty stays bounded.
    """

    model: str = "smollm2-135m"
    devices: tuple[str, ...] = ("jetson-orin", "jetson-orin", "phone-flagship")
    link_profile: str = "wifi6-20mhz"
    codec: str = "fp16"
    context: int = 128
    new_tokens: int = 32
    max_samples: int = 8
    arrival_rate: float = 6.0
    decision_interval_s: float = 0.5
    history: int = 2
    load_sigma: float = 0.35
    load_rho: float = 0.8
    w_latency: float = 0.2
    w_energy: float = 0.1
    w_switch: float = 1.0
    weight_dtype_bytes: float = 2.0
    timeout_s: float = 2.0
    preload_all: bool = False
    max_switch_s: float = 5.0

    def __post_init__(self) -> None:
        self.devices = tuple(self.devices)
        if len(self.devices) < 1:
            raise UsageError("devices: at least the starter")
        for name, v, lo in (("context", self.context, 1), ("new_tokens", self.new_tokens, 1),
                            ("max_samples", self.max_samples, 1), ("history", self.history, 0)):
            if int(v) < lo:
                raise UsageError(f"{name} must be >= {lo}, got {v}")
        if not self.timeout_s > 0 or not self.max_switch_s > 0:
            raise UsageError(f"timeout_s and max_switch_s must be > 0, got {self.timeout_s}, {self.max_switch_s}")
        if not self.arrival_rate >= 0 or not self.decision_interval_s > 0:
            raise UsageError("arrival_rate must be >= 0 and decision_interval_s > 0")
        if not 0 <= self.load_rho < 1 or self.load_sigma < 0:
            raise UsageError("load_rho must be in [0, 1) and load_sigma >= 0")


@dataclass
class _Candidate:
    active: tuple[int, ...]
    cuts: tuple[int, ...]
    kind: str


class PipelineSplitEnv(gym.Env):
    """Choose the ring's active devices and cut vector as links and loads change (see the module docstring)."""

    metadata = {"render_modes": []}

    def __init__(self, config: PipelineSplitConfig | None = None, *, view: Any = None, **kwargs: Any) -> None:
        self.config = c = config or PipelineSplitConfig(**kwargs)
        if view is None:
            view = load_model(c.model).view
        self.view = view
        N = len(c.devices)
        self.N = N
        self.cost = PipelineCostModel(view, list(c.devices), c.link_profile, codec=c.codec)
        self.L = self.cost.num_layers
        self.link = load_profile("link", c.link_profile)
        self._rate = self.link.rate_model()
        layer_params = self.cost.costs.layer_params
        self._layer_bytes = np.asarray(layer_params, float) * c.weight_dtype_bytes
        # Candidates: every active set containing the starter, DP (nominal state) and equal cuts.
        cands: list[_Candidate] = []
        seen = set()
        for r in range(0, N):
            for helpers in itertools.combinations(range(1, N), r):
                active = (0, *helpers)
                sub = PipelineCostModel(view, [c.devices[i] for i in active], c.link_profile, codec=c.codec)
                stage, hops = cost_fn(sub, context=c.context, samples=c.max_samples)
                dp, v = dp_cuts(self.L, len(active), stage, hops)
                options = [("equal", tuple(equal_cuts(self.L, len(active))))]
                if np.isfinite(v):
                    options.insert(0, ("dp", tuple(dp)))
                for kind, cuts in options:
                    if (active, cuts) not in seen:
                        seen.add((active, cuts))
                        cands.append(_Candidate(active, cuts, kind))
        self.candidates = cands
        self.action_space = spaces.Discrete(len(cands))
        n_snr = N * (c.history + 1)
        low = np.concatenate([np.full(n_snr, -5.0), np.zeros(N), [0.0, 0.0]]).astype(np.float32)
        high = np.concatenate([np.full(n_snr, 5.0), np.full(N, 20.0), [100.0, 1.0]]).astype(np.float32)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        # references for the reward: the static all-device DP ring at the nominal state, S = max_samples
        self._static = next(i for i, k in enumerate(cands) if k.active == tuple(range(N)) and k.kind == "dp") \
            if any(k.active == tuple(range(N)) and k.kind == "dp" for k in cands) else 0
        self._equal = next(i for i, k in enumerate(cands) if k.active == tuple(range(N)) and k.kind == "equal")
        self._mean_snr = self.link.mean_snr_db()
        self._channels = None
        ref = self._evaluate(self._static, np.full(N, self._mean_snr), np.ones(N), c.max_samples)
        self.ref_throughput = max(ref["throughput"], 1e-9)
        self.ref_round_s = max(ref["round_s"], 1e-9)
        self.ref_energy = max(ref["energy"], 1e-12)
        self.evaluations = 0  # calls of `measure` (real evaluations handed to a learned model)

    # ---- model of one step ----------------------------------------------------------------------
    def _evaluate(self, action: int, snr: np.ndarray, load: np.ndarray, samples: int) -> dict[str, float]:
        """Throughput (tok/s), round time, starter energy per token of candidate ``action`` at a state."""
        cand = self.candidates[action]
        b = [0, *cand.cuts, self.L]
        K = len(cand.active)
        stage = [self.cost.stage_time(d, b[k], b[k + 1], self.config.context, starter=(k == 0)) * load[d]
                 for k, d in enumerate(cand.active)]
        T = self.config.timeout_s
        hops = [min(self.cost.hop_time(d, float(snr[d]))[0], T) for d in cand.active] if K > 1 else [0.0]
        thr = ring_throughput(max(samples, 1), stage, hops) if samples > 0 else 0.0
        p0 = self.cost.profiles[0]
        energy = p0.compute_power_w * stage[0]
        if K > 1:
            air = min(self.cost.hop_time(0, float(snr[0]))[1], T)
            energy += p0.radio_tx_power_w(self.cost.links[0].tx_power_w) * air if hasattr(p0, "radio_tx_power_w") else 0.0
        return {"throughput": float(thr), "round_s": float(min(sum(stage) + sum(hops), T)), "energy": float(energy),
                "stage_s": [float(t) for t in stage], "hop_s": [float(t) for t in hops]}

    def step_figures(self, action: int, snr: np.ndarray, load: np.ndarray, samples: int) -> dict[str, Any]:
        """The exact step model (uncounted): throughput, round time, energy, per-stage and per-hop times."""
        return self._evaluate(int(action), np.asarray(snr, float), np.asarray(load, float), int(samples))

    def measure(self, action: int, snr: np.ndarray, load: np.ndarray, samples: int, *,
                noise: float = 0.0, rng: np.random.Generator | None = None) -> dict[str, Any]:
        """One *real evaluation*: run candidate ``action`` at a state and report what a ring reports
        (per-stage compute time, per-hop time, starter energy per token, throughput, round time).

        ``noise`` multiplies every measured time by an independent log-normal factor (a real run
        is not exact). Each call is counted in ``evaluations`` so a learned model's data cost shows.
        """
        self.evaluations += 1
        m = self._evaluate(int(action), np.asarray(snr, float), np.asarray(load, float), int(samples))
        if noise > 0:
            r = rng if rng is not None else self.np_random
            m["stage_s"] = [t * float(np.exp(noise * r.normal())) for t in m["stage_s"]]
            m["hop_s"] = [t * float(np.exp(noise * r.normal())) for t in m["hop_s"]]
            m["energy"] *= float(np.exp(noise * r.normal()))
        return m

    def combine_reward(self, m: dict[str, float], switch_s: float) -> tuple[float, float, float]:
        """(reward, served throughput, tokens) of step figures ``m`` (throughput, round_s, energy) after
        paying ``switch_s`` of switching: the reward formula of the module docstring."""
        c = self.config
        useful = max(0.0, c.decision_interval_s - switch_s)
        served = m["throughput"] * useful / c.decision_interval_s
        r = served / self.ref_throughput - c.w_latency * m["round_s"] / self.ref_round_s \
            - c.w_energy * m["energy"] / self.ref_energy - c.w_switch * switch_s / c.decision_interval_s
        return float(r), float(served), float(m["throughput"] * useful)

    def switch_time(self, old: int, new: int, snr: np.ndarray, held: list[set[int]]) -> tuple[float, list[set[int]]]:
        """Seconds to move weights from partition ``old`` to ``new`` given who ``held`` what, and the holdings after."""
        held = [set(h) for h in held]
        cand = self.candidates[new]
        b = [0, *cand.cuts, self.L]
        t = 0.0
        for k, d in enumerate(cand.active):
            need = set(range(b[k], b[k + 1])) - held[d]
            if need:
                rate = max(float(self._rate.rate_bps(float(snr[d]))), 1.0)
                t = max(t, 8.0 * float(self._layer_bytes[list(need)].sum()) / rate)  # devices load in parallel
            held[d] |= set(range(b[k], b[k + 1]))
        return (min(t, self.config.max_switch_s) if new != old else 0.0), held

    def predict_reward(self, action: int, prev_action: int, snr: np.ndarray, load: np.ndarray, waiting: int,
                       held: list[set[int]]) -> tuple[float, dict[str, Any]]:
        """Reward and figures of ``action`` after ``prev_action`` at a (true or predicted) state — the step's model."""
        c = self.config
        samples = min(int(waiting), c.max_samples)
        m = self._evaluate(action, snr, load, samples)
        switch_s, held_after = self.switch_time(prev_action, action, snr, held)
        r, served, tokens = self.combine_reward(m, switch_s)
        info = {"throughput": served, "tokens": tokens,
                "round_s": m["round_s"], "energy_j_per_token": m["energy"], "switch_s": switch_s,
                "samples": samples, "_held": held_after,
                # what the ring itself reports about the step it ran (a controller may learn from it)
                "stage_s": m["stage_s"], "hop_s": m["hop_s"]}
        return r, info

    def _reward(self, action: int, snr: np.ndarray, load: np.ndarray) -> tuple[float, dict[str, Any]]:
        return self.predict_reward(action, self._action, snr, load, self._waiting, self._held)

    @property
    def held(self) -> list[set[int]]:
        """Layers each device holds (what a controller may know: it placed them)."""
        return [set(h) for h in self._held]

    # ---- gym API -------------------------------------------------------------------------------
    def _obs(self) -> np.ndarray:
        c = self.config
        snr = np.asarray(self._snr_hist, dtype=np.float64)  # [history + 1, N]
        obs = np.concatenate([
            snr.T.reshape(-1) / 30.0, self._load, [self._waiting / c.max_samples, self._action / max(1, self.action_space.n)],
        ])
        return np.clip(obs, self.observation_space.low, self.observation_space.high).astype(np.float32)

    def _advance_state(self) -> None:
        c = self.config
        slots = max(1, int(round(c.decision_interval_s / self.link.slot_s)))
        snr = np.array([ch.sample(slots)[-1] for ch in self._channels])
        self._snr_hist = [*self._snr_hist[1:], snr]
        z = self.np_random.normal(size=self.N)
        self._logload = c.load_rho * self._logload + np.sqrt(1 - c.load_rho**2) * c.load_sigma * z
        self._logload[0] = 0.0
        self._load = np.exp(self._logload)
        self._waiting += int(self.np_random.poisson(c.arrival_rate * c.decision_interval_s))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        c = self.config
        self._channels = [self.link.make_channel(np.random.default_rng(self.np_random.integers(2**63)))
                          for _ in range(self.N)]
        first = np.array([ch.sample(1)[-1] for ch in self._channels])
        self._snr_hist = [first] * (c.history + 1)
        self._logload = np.zeros(self.N)
        self._load = np.ones(self.N)
        self._waiting = int(self.np_random.poisson(c.arrival_rate * c.decision_interval_s)) + 1
        self._action = self._static
        cand = self.candidates[self._action]
        b = [0, *cand.cuts, self.L]
        self._held = [set(range(self.L)) if c.preload_all else set() for _ in range(self.N)]
        for k, d in enumerate(cand.active):
            self._held[d] |= set(range(b[k], b[k + 1]))
        return self._obs(), {"candidates": len(self.candidates)}

    def step(self, action):
        a = int(action)
        if not 0 <= a < self.action_space.n:
            raise UsageError(f"action must be in 0..{self.action_space.n - 1}, got {action}")
        snr, load = self._snr_hist[-1], self._load
        r, info = self._reward(a, snr, load)
        self._held = info.pop("_held")
        self._action = a
        done_requests = info["tokens"] / self.config.new_tokens
        self._waiting = max(0, int(round(self._waiting - done_requests)))
        self._advance_state()
        info["candidate"] = {"active": list(self.candidates[a].active), "cuts": list(self.candidates[a].cuts),
                             "kind": self.candidates[a].kind}
        return self._obs(), r, False, False, info

    # ---- baselines -------------------------------------------------------------------------------
    def oracle_action(self) -> int:
        """The candidate with the best reward at the true current state (switching cost included)."""
        snr, load = self._snr_hist[-1], self._load
        return int(np.argmax([self._reward(a, snr, load)[0] for a in range(self.action_space.n)]))

    def static_action(self) -> int:
        return self._static

    def equal_action(self) -> int:
        return self._equal

    def describe(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "candidates": [asdict(k) for k in self.candidates],
                "ref_throughput": self.ref_throughput}
