"""The slow-timescale AirComp model-assignment MDP: which share of the model each device holds.

``splitrl/AirCompAssign-v0``. N devices run a K-unit tensor-parallel model (a unit = 1/K of every
layer's heads and MLP columns) and all-reduce over the air (`splitrl.aircomp`). Every step is one
slow-timescale epoch (many tokens); the fast timescale (per channel block transceiver design) stays
an optimisation inside the quality term, not RL.

* **State** (per device n): mean channel gain to the aggregator (dB; random walk of ``gain_walk_db``
  per step, clipped to [gain_min_db, gain_max_db]), per-token energy budget (mJ; battery- and
  policy-driven, drifts by ``energy_walk_mj``), compute speed (GFLOP/s; background load, drifts by
  ``speed_walk`` relatively). Drawn uniformly from the configured ranges at reset.
* **Observation** (Box, float32, 3N): ``[gain_db_1..N, energy_mj_1..N, gflops_1..N]``.
* **Action** (Discrete): an assignment k = (k_1..k_N), k_n >= 1, sum k_n = K, indexed in
  lexicographic order of the compositions of K into N parts (`AirCompAssignEnv.assignments`;
  K = 9, N = 3: 28 actions; index 0 = (1, 1, 7), the equal split is `equal_action`).
* **Reward** = -( w_q * log(ppl / ppl_clean) + w_l * latency / latency_ref + w_e * energy / energy_ref ):
  quality from the backend; latency = compute (max_n k_n W / F_n) + 2 L AirComp all-reduces per
  token (`airtime.aircomp_seconds`); energy = sum over devices of compute + transmit energy per
  token (`assign.AssignmentProblem`). An assignment that violates a device's memory, latency or
  energy limit is not run: reward ``-infeasible_penalty``, ``info["feasible"] = False``.
* **Quality backends**: ``calibrated`` (default) — draw ``channel_samples`` channel blocks of the
  step's statistics, compute the mean AirComp MSE (dB) of the assignment's transmit powers
  (`AssignmentProblem.objective_db`), and map it to log(ppl/ppl_clean) with the SmolLM2
  calibration measured by benchmarks/aircomp_benchmark.py (monotone interpolation of the AirComp
  rows: median design MSE in dB -> measured log-perplexity ratio); ``real`` — run the model
  (`eval_model`, ``eval_tokens`` WikiText-2 tokens) tensor-parallel in process with an AirComp
  reducer on the step's channel and powers (`splitrl.aircomp.emulate`) and measure it.
Episodes last ``episode_steps`` steps (no TimeLimit on top).
"""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from splitrl.aircomp.airtime import aircomp_seconds
from splitrl.aircomp.assign import AssignmentProblem, DeviceSpec
from splitrl.aircomp.channel import AirCompChannelConfig
from splitrl.aircomp.emulate import AirCompReducer, TPEmulation
from splitrl.errors import UsageError
from splitrl.eval.corpus import corpus_tokens
from splitrl.eval.perplexity import reference_perplexity
from splitrl.models import load_model
from splitrl.resources import resource_path

DEFAULT_CALIBRATION = resource_path("aircomp.json")


def calibration_from_benchmark(path: str | Path = DEFAULT_CALIBRATION) -> list[tuple[float, float]]:
    """(median design MSE dB, log ppl ratio) points of the AirComp rows of a committed aircomp.json."""
    data = json.loads(Path(path).read_text())
    ppl = data.get("perplexity")
    if not ppl:
        raise UsageError(f"calibration: {path} has no perplexity sweep; run benchmarks/aircomp_benchmark.py")
    clean = float(ppl["clean_ppl"])
    pts = [(float(r["median_design_mse_db"]), math.log(r["ppl"] / clean) if r["ppl"] else math.log(1e6 / clean))
           for r in ppl["rows"] if r["scheme"] == "aircomp"]
    return sorted(pts)


@dataclass
class AirCompAssignConfig:
    """Configuration of `AirCompAssignEnv` (see the module docstring for the MDP)."""

    devices: int = 3
    units: int = 9
    antennas: int = 1
    snr_db_at_1w: float = 37.0
    layers: int = 30
    hidden: int = 576
    bandwidth_hz: float = 1e6
    flops_per_unit: float = 3.0e7
    bytes_per_unit: float = 6.0e7
    memory_bytes: float = 6.0e8
    joules_per_flop: tuple[float, ...] = (2e-10, 1e-10, 1.5e-10)
    max_power_w: float = 0.2
    gain_range_db: tuple[float, float] = (-10.0, 0.0)
    energy_range_mj: tuple[float, float] = (14.0, 26.0)
    gflops_range: tuple[float, float] = (10.0, 40.0)
    gain_walk_db: float = 1.0
    energy_walk_mj: float = 1.0
    speed_walk: float = 0.05
    latency_budget_s: float = 0.05
    episode_steps: int = 16
    quality: str = "calibrated"
    calibration: list[tuple[float, float]] | None = None
    channel_samples: int = 64
    eval_model: str = "smollm2-135m"
    eval_tokens: int = 256
    w_quality: float = 1.0
    w_latency: float = 0.5
    w_energy: float = 0.5
    latency_ref_s: float = 0.05
    energy_ref_j: float = 0.06
    infeasible_penalty: float = 20.0
    rician_k: float = 0.0
    rx_correlation: float = 0.0
    tx_seconds_per_token: float = field(init=False)

    def __post_init__(self) -> None:
        if not 1 <= self.devices <= 8:
            raise UsageError(f"devices: 1..8, got {self.devices}")
        if not self.devices <= self.units <= 32:
            raise UsageError(f"units: {self.devices}..32, got {self.units}")
        if len(self.joules_per_flop) != self.devices:
            raise UsageError(f"joules_per_flop: one value per device ({self.devices})")
        if self.quality not in ("calibrated", "real"):
            raise UsageError(f"quality: calibrated or real, got {self.quality!r}")
        if self.episode_steps < 1 or self.channel_samples < 1:
            raise UsageError("episode_steps and channel_samples: >= 1")
        for name in ("gain_range_db", "energy_range_mj", "gflops_range"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise UsageError(f"{name}: (low, high) with low <= high, got {(lo, hi)}")
        # 2 L all-reduces per token, ceil(hidden / 2) complex uses each, at the band's symbol rate.
        self.tx_seconds_per_token = 2 * self.layers * math.ceil(self.hidden / 2) / self.bandwidth_hz


class AirCompAssignEnv(gym.Env):
    """``splitrl/AirCompAssign-v0`` (see the module docstring)."""

    metadata = {"render_modes": []}

    def __init__(self, config: AirCompAssignConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        self.config = config or AirCompAssignConfig(**overrides)
        c = self.config
        self.assignments: list[tuple[int, ...]] = [
            tuple(b - a for a, b in zip((0,) + cuts, cuts + (c.units,)))
            for cuts in itertools.combinations(range(1, c.units), c.devices - 1)
        ]
        equal = tuple(int(x) for x in _equal(c.units, c.devices))
        self.equal_action = self.assignments.index(equal)
        self.action_space = spaces.Discrete(len(self.assignments))
        n = c.devices
        low = np.array([c.gain_range_db[0] - 20] * n + [0.0] * n + [0.0] * n, np.float32)
        high = np.array([c.gain_range_db[1] + 20] * n + [200.0] * n + [1000.0] * n, np.float32)
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self._calibration = None
        if c.quality == "calibrated":
            pts = c.calibration if c.calibration is not None else calibration_from_benchmark()
            xs, ys = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
            order = np.argsort(xs)
            # Monotone (non-decreasing in MSE) envelope of the measured points: more noise never helps.
            self._calibration = (xs[order], np.maximum.accumulate(ys[order]))
        self._real = None
        self._quality_rng = np.random.default_rng(0)
        self.state_gain = self.state_energy = self.state_gflops = np.zeros(n)
        self._t = 0

    # -- state ---------------------------------------------------------------------------------
    def _obs(self) -> np.ndarray:
        return np.concatenate([self.state_gain, self.state_energy, self.state_gflops]).astype(np.float32)

    def problem(self, obs: np.ndarray | None = None) -> AssignmentProblem:
        """The `AssignmentProblem` of an observation (default: the current state) — what the optimiser solves."""
        c = self.config
        n = c.devices
        o = self._obs() if obs is None else np.asarray(obs, dtype=float)
        gain, energy, gflops = o[:n], o[n:2 * n], o[2 * n:3 * n]
        devs = tuple(
            DeviceSpec(flops_per_s=max(float(gflops[i]), 1e-3) * 1e9, joules_per_flop=c.joules_per_flop[i],
                       memory_bytes=c.memory_bytes, energy_per_token_j=max(float(energy[i]), 1e-3) * 1e-3,
                       max_power_w=c.max_power_w, gain_db=float(np.clip(gain[i], -60.0, 20.0)))
            for i in range(n)
        )
        return AssignmentProblem(devices=devs, units=c.units, flops_per_unit=c.flops_per_unit,
                                 bytes_per_unit=c.bytes_per_unit, tx_seconds_per_token=c.tx_seconds_per_token,
                                 latency_budget_s=c.latency_budget_s, snr_db_at_1w=c.snr_db_at_1w,
                                 antennas=c.antennas, rician_k=c.rician_k, rx_correlation=c.rx_correlation)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        c = self.config
        r = self.np_random
        self.state_gain = r.uniform(*c.gain_range_db, size=c.devices)
        self.state_energy = r.uniform(*c.energy_range_mj, size=c.devices)
        self.state_gflops = r.uniform(*c.gflops_range, size=c.devices)
        self._t = 0
        # Quality draws use their own stream, so the state trajectory of an episode is the same
        # whatever the policy does (held-out episodes compare policies on identical states).
        self._quality_rng = np.random.default_rng(int(r.integers(2**63)))
        return self._obs(), {}

    def _evolve(self) -> None:
        c, r = self.config, self.np_random
        self.state_gain = np.clip(self.state_gain + r.normal(0, c.gain_walk_db, c.devices),
                                  c.gain_range_db[0] - 20, c.gain_range_db[1] + 20)
        self.state_energy = np.clip(self.state_energy + r.normal(0, c.energy_walk_mj, c.devices), 1.0, 200.0)
        self.state_gflops = np.clip(self.state_gflops * (1 + r.normal(0, c.speed_walk, c.devices)), 0.5, 1000.0)

    # -- reward terms --------------------------------------------------------------------------
    def costs(self, action: int, obs: np.ndarray | None = None) -> dict[str, Any]:
        """Feasibility, latency and energy of ``action`` in ``obs`` (default: the current state); no quality."""
        c = self.config
        prob = self.problem(obs)
        k = np.array(self.assignments[int(action)])
        out: dict[str, Any] = {"assignment": tuple(int(x) for x in k), "feasible": prob.feasible(k)}
        allreduce = aircomp_seconds((1, c.hidden), np.full(c.devices, 20.0), c.bandwidth_hz).total_s
        out["latency_s"] = prob.compute_latency_s(k) + 2 * c.layers * allreduce
        out["energy_j"] = float(prob.energy_per_token_j(k).sum())
        return out

    def quality(self, action: int) -> tuple[float, float]:
        """(log ppl ratio, mean AirComp MSE dB) of ``action`` in the current state, from the backend."""
        prob = self.problem()
        k = np.array(self.assignments[int(action)])
        seed = int(self._quality_rng.integers(2**31))
        mse_db = prob.objective_db(k, prob.sample_channels(self.config.channel_samples, seed))
        if self._calibration is not None:
            xs, ys = self._calibration
            return float(np.interp(mse_db, xs, ys)), mse_db
        return self._real_quality(prob, k, seed), mse_db

    def _real_quality(self, prob: AssignmentProblem, k: np.ndarray, seed: int) -> float:
        import torch

        c = self.config
        if self._real is None:
            lm = load_model(c.eval_model)
            ids = corpus_tokens(lm.tokenizer, c.eval_tokens)
            with torch.no_grad():
                clean = reference_perplexity(lm.model, ids, c.eval_tokens, c.eval_tokens)
            self._real = (lm, ids, clean)
        lm, ids, clean = self._real
        cfg = AirCompChannelConfig(devices=c.devices, antennas=c.antennas, snr_db=c.snr_db_at_1w,
                                   gain_db=tuple(float(g) for g in self.state_gain),
                                   power=tuple(float(p) for p in prob.tx_power_w(k)),
                                   rician_k=c.rician_k, rx_correlation=c.rx_correlation)
        with torch.no_grad(), TPEmulation(lm.model, [float(x) for x in k], AirCompReducer(cfg, "sdr", seed=seed)):
            ppl = reference_perplexity(lm.model, ids, c.eval_tokens, c.eval_tokens)
        return math.log(ppl / clean) if math.isfinite(ppl) else math.log(1e6)

    def reward_of(self, log_ratio: float, latency_s: float, energy_j: float) -> float:
        c = self.config
        return -(c.w_quality * log_ratio + c.w_latency * latency_s / c.latency_ref_s + c.w_energy * energy_j / c.energy_ref_j)

    def step(self, action: int):
        if not self.action_space.contains(int(action)):
            raise UsageError(f"action: an integer in 0..{self.action_space.n - 1}, got {action!r}")
        info = self.costs(action)
        if info["feasible"]:
            info["log_ppl_ratio"], info["mse_db"] = self.quality(action)
            reward = self.reward_of(info["log_ppl_ratio"], info["latency_s"], info["energy_j"])
        else:
            info["log_ppl_ratio"] = info["mse_db"] = None  # not run (None, not NaN: info stays comparable)
            reward = -self.config.infeasible_penalty
        info["obs_before"] = self._obs()
        self._t += 1
        self._evolve()
        truncated = self._t >= self.config.episode_steps
        return self._obs(), float(reward), False, truncated, info


def _equal(total: int, parts: int) -> list[int]:
    base = [total // parts] * parts
    for i in range(total - sum(base)):
        base[i] += 1
    return base
