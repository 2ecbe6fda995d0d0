"""Slow-timescale model assignment: how many of the K tensor-parallel units (heads, with their share
of MLP columns) each device holds, given compute, memory, energy and channel statistics.

Model (per generated token; one "unit" = 1/K of every layer's attention heads and MLP columns):

* compute: device n runs k_n units: k_n W FLOPs in k_n W / F_n seconds (<= ``latency_budget_s``),
  spending k_n W e_n joules; memory k_n S bytes <= its memory;
* communication: 2 L all-reduces per token, each ``channel_uses`` complex uses: the device
  transmits for tau = ``tx_seconds_per_token`` seconds; whatever energy is left in its per-token
  budget E_n powers the transmission, capped at its maximum power:
  P_n(k_n) = min(P_max,n, (E_n - k_n W e_n) / tau) — this is how the assignment couples to the
  air interface (a device that computes more has less power left to transmit);
* objective: the expected AirComp MSE of one all-reduce over the channel statistics, in dB,
  J(k) = E_h[ 10 log10 MSE(h, P(k)) ], MSE from `design.design` (M = 1: sigma^2 / min_n P_n |h_n|^2
  exactly; M > 1: the closed-form ``eig`` design by default, so that brute force stays affordable).
  Why dB and not the linear mean the paper writes: with one receive antenna and any fading law
  whose power density is positive at 0 (Rayleigh, Rician), E[1 / |h|^2] is infinite, so the linear
  expected MSE does not exist and its sample mean is dominated by the deepest fade in the sample;
  the mean dB (the log of the geometric mean) exists for every M and keeps the problem convex
  (-log P_n(a) is convex where P_n is concave). The linear mean is reported as well for M > 1.

Solvers, all scored on the SAME evaluation channel sample:
* ``equal`` and ``proportional`` (k_n ∝ F_n, largest remainder) baselines;
* ``brute_force``: every feasible composition of K into N positive parts (small instances);
* ``stochastic_sca``: the paper's method — stochastic successive convex approximation on the
  continuous relaxation: at iteration t draw fresh channels, average the stochastic gradients
  recursively (weight rho_t = t^-0.55), minimise the strongly convex surrogate
  <g_t, a> + tau_s ||a - a_t||^2 over {lo <= a <= hi, sum a = K} (a projection, exact by
  bisection), step a_{t+1} = (1 - gamma_t) a_t + gamma_t a_hat (gamma_t = t^-0.6), then round to
  the best feasible integer neighbour;
* ``saa_convex`` (M = 1 check): for fixed channel samples the relaxed problem is convex
  (1/P_n(a) = max(1/P_max, tau / (E_n - a_n W e_n)) is convex in a_n, and a max of convex functions
  is convex; so is -log of a concave function), so cvxpy solves the sample-average problem
  globally — SCA is shown to reach it.

``proportional`` is repaired to feasibility (units above a device's bound move, one at a time, to
the device with the most slack), so that every baseline is an assignment one could run.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from splitrl.aircomp.channel import AirCompChannel, AirCompChannelConfig
from splitrl.aircomp.design import design
from splitrl.errors import UsageError

__all__ = ["AssignmentProblem", "AssignmentResult", "DeviceSpec", "assign", "default_problem", "ASSIGNERS"]

ASSIGNERS: tuple[str, ...] = ("equal", "proportional", "brute_force", "stochastic_sca", "saa_convex")


@dataclass(frozen=True)
class DeviceSpec:
    """One device: compute speed, energy per FLOP, memory, per-token energy budget, max power, path gain."""

    flops_per_s: float
    joules_per_flop: float
    memory_bytes: float
    energy_per_token_j: float
    max_power_w: float = 0.2
    gain_db: float = 0.0

    def __post_init__(self) -> None:
        for name in ("flops_per_s", "joules_per_flop", "memory_bytes", "energy_per_token_j", "max_power_w"):
            val = float(getattr(self, name))
            if not (val > 0 and math.isfinite(val)):
                raise UsageError(f"DeviceSpec.{name}: a positive finite number, got {getattr(self, name)!r}")
        if not -60.0 <= float(self.gain_db) <= 20.0:
            raise UsageError(f"DeviceSpec.gain_db: in [-60, 20] dB, got {self.gain_db!r}")


@dataclass(frozen=True)
class AssignmentProblem:
    """The slow-timescale problem (see the module docstring); validated.

    Attributes:
        devices: the N devices.
        units: K, the number of tensor-parallel units to distribute (each device gets >= 1).
        flops_per_unit: W, FLOPs per token of one unit.
        bytes_per_unit: S, weight bytes of one unit.
        tx_seconds_per_token: tau, transmit time per token (2 L all-reduces x channel uses / bandwidth).
        latency_budget_s: compute time allowed per token on every device.
        snr_db_at_1w: SNR of 1 W transmitted at 0 dB path gain (sigma^2 = 1 scale).
        antennas, rician_k, rx_correlation: the aggregator's channel statistics.
    """

    devices: tuple[DeviceSpec, ...]
    units: int = 9
    flops_per_unit: float = 3.0e7
    bytes_per_unit: float = 6.0e7
    tx_seconds_per_token: float = 0.0173
    latency_budget_s: float = 0.05
    snr_db_at_1w: float = 27.0
    antennas: int = 1
    rician_k: float = 0.0
    rx_correlation: float = 0.0
    channel: AirCompChannelConfig = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.devices)
        if not 1 <= n <= 16:
            raise UsageError(f"devices: 1..16 devices, got {n}")
        if isinstance(self.units, bool) or not isinstance(self.units, int) or not n <= self.units <= 256:
            raise UsageError(f"units: an integer in {n}..256 (every device holds at least one), got {self.units!r}")
        for name in ("flops_per_unit", "bytes_per_unit", "tx_seconds_per_token", "latency_budget_s"):
            val = float(getattr(self, name))
            if not (val > 0 and math.isfinite(val)):
                raise UsageError(f"{name}: a positive finite number, got {getattr(self, name)!r}")
        cfg = AirCompChannelConfig(devices=n, antennas=self.antennas, snr_db=self.snr_db_at_1w,
                                   gain_db=tuple(d.gain_db for d in self.devices), rician_k=self.rician_k,
                                   rx_correlation=self.rx_correlation)
        object.__setattr__(self, "channel", cfg)

    # -- model ---------------------------------------------------------------------------------
    def upper_bounds(self) -> NDArray[np.float64]:
        """Largest real share per device allowed by memory, latency and energy (some power must remain)."""
        out = []
        for d in self.devices:
            mem = d.memory_bytes / self.bytes_per_unit
            lat = self.latency_budget_s * d.flops_per_s / self.flops_per_unit
            # keep at least 1% of max power for transmission
            energy = (d.energy_per_token_j - 0.01 * d.max_power_w * self.tx_seconds_per_token) / (
                self.flops_per_unit * d.joules_per_flop)
            out.append(min(mem, lat, energy))
        return np.asarray(out)

    def feasible(self, k: NDArray) -> bool:
        k = np.asarray(k)
        return bool(np.all(k >= 1) and int(round(k.sum())) == self.units and np.all(k <= self.upper_bounds() + 1e-9))

    def tx_power_w(self, k: NDArray) -> NDArray[np.float64]:
        """P_n(k_n) = min(P_max, (E_n - k_n W e_n) / tau) in watts [N] (may be <= 0 if infeasible)."""
        k = np.asarray(k, dtype=float)
        e = np.array([d.energy_per_token_j for d in self.devices])
        w = np.array([d.joules_per_flop for d in self.devices]) * self.flops_per_unit
        pmax = np.array([d.max_power_w for d in self.devices])
        return np.minimum(pmax, (e - k * w) / self.tx_seconds_per_token)

    def power_limits(self, k: NDArray) -> NDArray[np.float64]:
        """P_n / sigma^2 for the design (linear)."""
        return 10.0 ** (self.snr_db_at_1w / 10.0) * self.tx_power_w(k)

    def sample_channels(self, count: int, seed: int) -> NDArray[np.complex128]:
        return AirCompChannel(self.channel, seed=seed).sample(count)                # [S, N, M]

    def mse_samples(self, k: NDArray, channels: NDArray[np.complex128], method: str = "eig") -> NDArray[np.float64]:
        """The design's MSE on every channel sample [S] (inf everywhere if some power is <= 0)."""
        p = self.power_limits(k)
        if np.any(p <= 0):
            return np.full(channels.shape[0], math.inf)
        if channels.shape[-1] == 1:
            g = np.abs(channels[..., 0]) ** 2                                      # [S, N]
            return 1.0 / np.min(p[None, :] * g, axis=1)
        return np.array([design(h, p, 1.0, method).mse for h in channels])

    def objective_db(self, k: NDArray, channels: NDArray[np.complex128], method: str = "eig") -> float:
        """J(k) = mean over samples of 10 log10 MSE (inf if infeasible)."""
        mse = self.mse_samples(k, channels, method)
        return float(np.mean(10.0 * np.log10(mse))) if np.all(np.isfinite(mse)) else math.inf

    def energy_per_token_j(self, k: NDArray) -> NDArray[np.float64]:
        """Compute + transmit energy per token per device [N]."""
        k = np.asarray(k, dtype=float)
        w = np.array([d.joules_per_flop for d in self.devices]) * self.flops_per_unit
        return k * w + np.maximum(self.tx_power_w(k), 0.0) * self.tx_seconds_per_token

    def compute_latency_s(self, k: NDArray) -> float:
        k = np.asarray(k, dtype=float)
        return float(np.max(k * self.flops_per_unit / np.array([d.flops_per_s for d in self.devices])))

    # -- gradient of the per-sample objective (for SCA) ----------------------------------------
    def _sample_grad(self, a: NDArray, h: NDArray[np.complex128], method: str) -> NDArray[np.float64]:
        """Subgradient of f(a; h) = 10 log10( sigma^2 ||m||^2 max_n 1/(P_n(a_n) |m^H h_n|^2) ) with m held at the
        design for P(a) (envelope theorem: m is optimal, so its own variation does not enter to first order)."""
        p = self.power_limits(a)
        m = np.ones(1, dtype=np.complex128) if h.shape[1] == 1 else design(h, p, 1.0, method).m
        g = np.abs(h @ m.conj()) ** 2 / float(np.vdot(m, m).real)                  # [N]
        n = int(np.argmax(1.0 / (p * g)))
        grad = np.zeros_like(a, dtype=float)
        d = self.devices[n]
        if self.tx_power_w(a)[n] < d.max_power_w:  # not capped: dP/da = -W e / tau
            dp = -10.0 ** (self.snr_db_at_1w / 10.0) * self.flops_per_unit * d.joules_per_flop / self.tx_seconds_per_token
            grad[n] = -10.0 / math.log(10.0) * dp / p[n]
        return grad


@dataclass
class AssignmentResult:
    """An assignment and its score on the evaluation sample."""

    method: str
    units: tuple[int, ...]
    objective_db: float
    relaxed: tuple[float, ...] | None = None
    relaxed_objective_db: float | None = None
    history: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"method": self.method, "units": list(self.units), "objective_db": self.objective_db,
                "relaxed": None if self.relaxed is None else list(self.relaxed),
                "relaxed_objective_db": self.relaxed_objective_db}


def _largest_remainder(weights: NDArray, total: int) -> NDArray[np.int64]:
    w = np.asarray(weights, dtype=float)
    base = np.ones(len(w), dtype=np.int64)
    rest = total - len(w)
    share = w / w.sum() * rest
    k = np.floor(share).astype(np.int64)
    order = np.argsort(-(share - k))
    k[order[: rest - int(k.sum())]] += 1
    return base + k


def _repair(prob: AssignmentProblem, k: NDArray) -> NDArray[np.int64]:
    """Move units from devices above their bound to the device with the most slack, one at a time."""
    k = np.array(k, dtype=np.int64)
    hi = np.floor(prob.upper_bounds() + 1e-9).astype(np.int64)
    for _ in range(prob.units):
        over = np.flatnonzero(k > hi)
        if not len(over):
            break
        k[over[0]] -= 1
        k[int(np.argmax(hi - k))] += 1
    return k


def _project(v: NDArray, lo: NDArray, hi: NDArray, total: float) -> NDArray[np.float64]:
    """Euclidean projection onto {lo <= a <= hi, sum a = total} (bisection on the shift)."""
    a, b = float(np.min(v - hi)) - 1.0, float(np.max(v - lo)) + 1.0
    for _ in range(100):
        mu = (a + b) / 2
        if np.clip(v - mu, lo, hi).sum() > total:
            a = mu
        else:
            b = mu
    return np.clip(v - (a + b) / 2, lo, hi)


def _compositions(total: int, parts: int):
    for cuts in itertools.combinations(range(1, total), parts - 1):
        edges = (0,) + cuts + (total,)
        yield np.array([edges[i + 1] - edges[i] for i in range(parts)])


def _round(prob: AssignmentProblem, a: NDArray, channels, method: str) -> tuple[NDArray, float]:
    """Best feasible integer point among floor/ceil roundings of ``a`` that sum to K."""
    lo = np.floor(a).astype(int)
    best, best_val = None, math.inf
    for bits in itertools.product((0, 1), repeat=len(a)):
        k = lo + np.array(bits)
        if prob.feasible(k):
            val = prob.objective_db(k, channels, method)
            if val < best_val:
                best, best_val = k, val
    if best is None:  # fall back to the nearest feasible composition
        best = _largest_remainder(np.maximum(a - 1, 1e-9), prob.units)
        best_val = prob.objective_db(best, channels, method)
    return best, best_val


def assign(
    prob: AssignmentProblem, method: str, *, eval_channels: NDArray[np.complex128] | None = None, seed: int = 0,
    design_method: str = "eig", iterations: int = 300, batch: int = 8, eval_samples: int = 2000,
) -> AssignmentResult:
    """Solve the assignment with ``method`` (one of `ASSIGNERS`); score on ``eval_channels`` (or a seeded sample)."""
    if method not in ASSIGNERS:
        raise UsageError(f"assigner: one of {', '.join(ASSIGNERS)}, got {method!r}")
    ch = eval_channels if eval_channels is not None else prob.sample_channels(eval_samples, seed + 1)
    n, k_total = len(prob.devices), prob.units
    score = lambda k: prob.objective_db(k, ch, design_method)  # noqa: E731
    if method == "equal":
        k = _largest_remainder(np.ones(n), k_total)
        return AssignmentResult(method, tuple(int(x) for x in k), score(k))
    if method == "proportional":
        k = _repair(prob, _largest_remainder(np.array([d.flops_per_s for d in prob.devices]), k_total))
        return AssignmentResult(method, tuple(int(x) for x in k), score(k))
    if method == "brute_force":
        best, best_val = None, math.inf
        for k in _compositions(k_total, n):
            if prob.feasible(k):
                val = score(k)
                if val < best_val:
                    best, best_val = k, val
        if best is None:
            raise UsageError("assignment: no feasible assignment (raise budgets or lower the units)")
        return AssignmentResult(method, tuple(int(x) for x in best), best_val)
    lo, hi = np.ones(n), np.minimum(prob.upper_bounds(), float(k_total))
    if lo.sum() > k_total or hi.sum() < k_total or np.any(hi < lo):
        raise UsageError("assignment: no feasible assignment (raise budgets or lower the units)")
    if method == "saa_convex":
        a = _saa_convex(prob, ch, lo, hi)
    else:
        a, hist = _stochastic_sca(prob, lo, hi, seed, design_method, iterations, batch)
    k, val = _round(prob, a, ch, design_method)
    res = AssignmentResult(method, tuple(int(x) for x in k), val, tuple(float(x) for x in a), score(a))
    if method == "stochastic_sca":
        res.history = hist
    return res


def _stochastic_sca(prob, lo, hi, seed, design_method, iterations, batch):
    rng = np.random.default_rng(seed)
    chan = AirCompChannel(prob.channel, seed=rng)
    a = _project(np.full(len(lo), prob.units / len(lo)), lo, hi, prob.units)
    grad = np.zeros_like(a)
    hist: list[float] = []
    scale = None
    probe = chan.sample(200)  # a fixed sample to record the objective's trajectory
    for t in range(1, iterations + 1):
        hs = chan.sample(batch)
        g = np.mean([prob._sample_grad(a, h, design_method) for h in hs], axis=0)
        rho, gamma = t ** -0.55, t ** -0.6  # 0.5 < 0.55 < 0.6 <= 1: the averaging outlives the steps
        grad = (1 - rho) * grad + rho * g
        if scale is None:  # proximal weight: a first step of about three units
            scale = max(float(np.abs(grad).max()), 1e-12) / 3.0
        a_hat = _project(a - grad / scale, lo, hi, prob.units)   # argmin <grad, x> + (scale/2)||x - a||^2
        a = (1 - gamma) * a + gamma * a_hat
        if t % 25 == 0:
            hist.append(float(prob.objective_db(a, probe, design_method)))
    return a, hist


def _saa_convex(prob, ch, lo, hi):
    import cvxpy as cp

    if ch.shape[-1] != 1:
        raise UsageError("saa_convex: the convex sample-average check is for a single-antenna aggregator")
    n = len(lo)
    g = np.abs(ch[..., 0]) ** 2                                                    # [S, N]
    snr1 = 10.0 ** (prob.snr_db_at_1w / 10.0)
    e = np.array([d.energy_per_token_j for d in prob.devices])
    w = np.array([d.joules_per_flop for d in prob.devices]) * prob.flops_per_unit
    pmax = np.array([d.max_power_w for d in prob.devices])
    a = cp.Variable(n)
    t = cp.Variable(g.shape[0])
    c = 10.0 / math.log(10.0)
    cons = [a >= lo, a <= hi, cp.sum(a) == prob.units]
    for i in range(n):
        # t_s >= 10 log10(1 / (snr1 g_si P_i(a))) with P_i(a) = min(pmax, (e_i - a_i w_i)/tau): both branches
        watts = (e[i] - a[i] * w[i]) / prob.tx_seconds_per_token
        cons.append(t >= -c * (np.log(snr1 * g[:, i]) + cp.log(watts)))
        cons.append(t >= -c * np.log(snr1 * g[:, i] * pmax[i]))
    problem = cp.Problem(cp.Minimize(cp.sum(t) / g.shape[0]), cons)
    for solver in ("CLARABEL", "SCS"):
        try:
            problem.solve(solver=solver)
            break
        except cp.error.SolverError:
            continue
    if a.value is None:
        raise RuntimeError("saa_convex: the solver found no solution")
    return np.clip(np.asarray(a.value), lo, hi)


def default_problem(antennas: int = 1, scenario: str = "heterogeneous") -> AssignmentProblem:
    """The benchmark's 3-device SmolLM2-like instance (9 units = 9 heads, 30 MFLOP and 60 MB of fp32 weights each).

    ``heterogeneous``: a fast phone near the aggregator with a small energy budget, a laptop-class
    device far away with plenty of energy, and a mid device — equal and compute-proportional
    splits then load the wrong device.
    """
    if scenario == "heterogeneous":
        devs = (
            DeviceSpec(flops_per_s=4e10, joules_per_flop=2e-10, memory_bytes=4e8, energy_per_token_j=0.020, gain_db=-8.0),
            DeviceSpec(flops_per_s=1.5e10, joules_per_flop=1e-10, memory_bytes=6e8, energy_per_token_j=0.020, gain_db=0.0),
            DeviceSpec(flops_per_s=2e10, joules_per_flop=1.5e-10, memory_bytes=6e8, energy_per_token_j=0.018, gain_db=-3.0),
        )
    elif scenario == "homogeneous":
        devs = tuple(DeviceSpec(flops_per_s=2e10, joules_per_flop=1.5e-10, memory_bytes=6e8, energy_per_token_j=0.025)
                     for _ in range(3))
    else:
        raise UsageError(f"scenario: heterogeneous or homogeneous, got {scenario!r}")
    return AssignmentProblem(devices=devs, antennas=antennas)
