"""The model-based agent's decision as one compiled call (numba).

`MBRLAgent.plan` (numpy) is the reference. Serving a request first streams the model's weights
through the caches, so the planner's ~100 small numpy calls then run mostly from DRAM (measured:
111 µs back to back, 370–550 µs in the serving loop). `plan_decision` does the same arithmetic,
in the same order, in one compiled loop nest: the AR(1) forecast, the Gauss-Hermite expected
reward on the SNR grid, the known costs at the observed state (`splitrl.cost.kernel`), the
dynamic programme over the horizon and the margin/uncertainty the online-evaluation rule needs.
`tests/test_agents_mbrl.py::test_compiled_decisions_equal_the_numpy_planner` checks that it
decides exactly as the numpy planner.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from splitrl.cost.kernel import base_rewards_into

__all__ = ["plan_decision", "warm_up"]


@njit(cache=True, nogil=True)
def _row_at(grid, snr, lo0, hi0, step, out):
    """`MBRLAgent._interp` at one SNR: ``grid`` (rows over the SNR grid) interpolated at ``snr``."""
    x = min(max(snr, lo0), hi0)
    pos = (x - lo0) / step
    lo = min(math.floor(pos), grid.shape[0] - 2)
    w = pos - lo
    for j in range(grid.shape[1]):
        out[j] = (1 - w) * grid[lo, j] + w * grid[lo + 1, j]


@njit(cache=True, nogil=True)
def plan_decision(snr, cur, mu, phi, sigma, horizon, nodes, weights, r_grid, base_grid, sd_grid, use_sd, switch,
                  gamma, wq, lo0, hi0, step, use_state, splits, static, steps, consts, link, load, has_load,
                  edge_load, has_edge, battery, has_battery):
    """(index of the best split in ``splits``, best minus runner-up value, surrogate std of the best
    split at ``snr`` times ``wq`` — 0 without ``use_sd``) of `MBRLAgent.plan` from split index ``cur``."""
    S = splits.shape[0]
    Q = nodes.shape[0]
    H = horizon
    # AR(1) forecast (AR1ChannelModel.forecast)
    x0 = snr - mu
    den = max(1 - phi ** 2.0, 1e-9)
    r = np.zeros((H, S))
    tmp = np.empty(S)
    for h in range(H):
        mean = mu + (phi ** float(h)) * x0
        std = math.sqrt(max(sigma ** 2.0 * (1 - phi ** float(2 * h)) / den, 0.0))
        for q in range(Q):  # sum over q in q order, as the numpy planner
            _row_at(r_grid, mean + std * nodes[q], lo0, hi0, step, tmp)
            for j in range(S):
                if q == 0:
                    r[h, j] = tmp[j] * weights[0]
                else:
                    r[h, j] = r[h, j] + tmp[j] * weights[q]
    if use_state:  # known costs at the observed state replace the grid's at the current SNR
        known = np.empty(static.shape[1])
        base_rewards_into(known, static, steps, consts, link, load, has_load, edge_load, has_edge, battery, has_battery)
        _row_at(base_grid, snr, lo0, hi0, step, tmp)
        for j in range(S):
            off = known[splits[j]] - tmp[j]
            for h in range(H):
                r[h, j] = r[h, j] + off
    V = np.zeros(S)
    V2 = np.empty(S)
    for h in range(H - 1, 0, -1):
        for p in range(S):
            best = -np.inf
            for j in range(S):
                v = r[h, j] - switch[p, j] + gamma * V[j]
                if v > best or j == 0:
                    best = v
            V2[p] = best
        V[:] = V2
    k = 0
    top = -np.inf
    for j in range(S):
        v = r[0, j] - switch[cur, j] + gamma * V[j]
        tmp[j] = v
        if v > top or j == 0:
            top, k = v, j
    margin = np.inf
    if S > 1:
        second = -np.inf
        for j in range(S):
            if j != k and tmp[j] > second:
                second = tmp[j]
        margin = top - second
    sd = 0.0
    if use_sd:
        _row_at(sd_grid, snr, lo0, hi0, step, tmp)
        sd = tmp[k] * wq
    return k, margin, sd


def warm_up() -> None:
    """Compile (or load from numba's cache) once, so that no decision pays for it."""
    S, G, L = 2, 4, 3
    grid = np.zeros((G, S))
    static = np.zeros((7, L + 1))
    consts = np.ones(16)
    consts[15] = 0.0
    plan_decision(1.0, 0, 0.0, 0.5, 1.0, 2, np.zeros(1), np.ones(1), grid, grid, grid, True, np.zeros((S, S)), 0.9,
                  1.0, 0.0, 1.0, 0.5, True, np.arange(S), static, np.zeros(0), consts, np.ones((4, L + 1)), 0.0,
                  False, 0.0, False, 1.0, False)
