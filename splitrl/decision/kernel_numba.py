"""The decision's compiled kernels (numba): the known-cost reward of every split, and the
model-based agent's whole decision, each one compiled call.

Numpy references: `splitrl.decision.kernel.base_rewards` for `base_rewards_into` (the same
formula over the same packed inputs, vectorised over splits; `tests/test_decision_kernel.py`
checks that they agree bit for bit on random inputs) and `MBRLAgent.plan` for `plan_decision`
(`tests/test_agents_mbrl.py::test_compiled_decisions_equal_the_numpy_planner`).

**base_rewards_into.** `RequestCostService.base_rewards` is the model it packs: the zero-quality, no-switch reward of every
split at a state (SNR, UE load, edge load, battery). A controller calls it once per decision, and
right after a generation step (which streams the model's weights through the caches) its ~40
small numpy calls run mostly from DRAM: hundreds of microseconds. `base_rewards_into` computes the
same numbers, in the same order of operations, in one compiled loop over the splits, from arrays
the cost model already caches: the link terms of the SNR (`CostModel.link_rows`) and the
channel-independent figures of the request lengths (`RequestCostService.kernel_inputs`).
`tests/test_env_richer_mdp.py::test_compiled_base_rewards_equal_the_service` checks it equals the
service bit for bit on every state term.

Constants (``consts``), in this order (`RequestCostService.kernel_inputs`):
  0 w_latency, 1 latency_ref_s, 2 w_energy, 3 energy_ref_j, 4 w_privacy, 5 request_timeout_s,
  6 timeout_energy_per_token, 7 ue idle power W, 8 new_tokens N, 9 m = N - 1, 10 max(m, 1),
  11 RHO_MAX, 12 latency metric (0 ttft, 1 tpot, 2 e2e), 13 include_ue_state, 14 privacy modelled,
  15 chunk counts C - 1 (0: no pipelined prefill).
Static rows (``static``, [rows, L+1]): 0 UE prefill s, 1 idle-edge prefill s, 2 UE decode s per
step, 3 idle-edge decode s over m_eff steps, 4 this UE's edge utilisation per decision (0 without
self-load), 5 privacy recovery (0 without), 6 1.0 where the cut is inside the model, then C - 1
rows each of: first-chunk UE s, last-chunk UE s, first-chunk edge s, last-chunk edge s; ``steps``:
c - 1 per chunk count. Link rows (``link``, [4 + C - 1, L+1]): uplink prompt latency, uplink
decode-step latency, downlink latency, UE compute + radio energy of the request, then one
uplink-chunk latency per chunk count.

**plan_decision.** `MBRLAgent.plan` (numpy) is the reference. Serving a request first streams the model's weights
through the caches, so the planner's ~100 small numpy calls then run mostly from DRAM (measured:
111 µs back to back, 370–550 µs in the serving loop). `plan_decision` does the same arithmetic,
in the same order, in one compiled loop nest: the AR(1) forecast, the Gauss-Hermite expected
reward on the SNR grid, the known costs at the observed state (`base_rewards_into`), the
dynamic programme over the horizon and the margin/uncertainty the online-evaluation rule needs.
`tests/test_agents_mbrl.py::test_compiled_decisions_equal_the_numpy_planner` checks that it
decides exactly as the numpy planner.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["base_rewards_into", "plan_decision", "warm_up"]


@njit(cache=True, nogil=True)
def base_rewards_into(out, static, steps, consts, link, load, has_load, edge_load, has_edge, battery, has_battery):
    """Write `RequestCostService.base_rewards` at this state into ``out`` [L+1]."""
    n_chunks = int(consts[15])
    N = consts[8]
    m = consts[9]
    m_eff = consts[10]
    rho_max = consts[11]
    field = int(consts[12])
    timeout = consts[5]
    scale = 1.0
    if has_battery:
        scale = 1.0 / max(battery, 0.05)  # splitrl.decision.reward.battery_energy_scale
    slow_ue = 1.0
    use_load = consts[13] > 0.0 and has_load
    if use_load:
        slow_ue = 1.0 / (1.0 - 0.5 * load)
    for s in range(out.shape[0]):
        slow = 1.0
        if has_edge:  # RequestCostService.edge_utilization, then cost.edge_load.md1_slowdown
            u = min(edge_load + static[4, s], rho_max)
            r = min(max(u, 0.0), rho_max)
            slow = 1.0 + r / (2.0 * (1.0 - r))
        ue_pre = static[0, s]
        ue_dec = static[2, s]
        edge_pre = slow * static[1, s]
        edge_dec = slow * static[3, s] / m_eff
        dl = link[2, s]
        ttft = ue_pre + link[0, s] + edge_pre + dl
        if n_chunks > 0 and static[6, s] > 0.0:  # CostModel._pipelined_prefill
            best = np.inf
            for c in range(n_chunks):
                base = 7 + 4 * c
                air = link[4 + c, s]
                steady = max(max(static[base + 1, s], air), slow * static[base + 3, s])
                t = static[base, s] + air + slow * static[base + 2, s] + steps[c] * steady + dl
                best = min(best, t)
            ttft = min(ttft, best)
        tpot = ue_dec + link[1, s] + edge_dec + dl
        e2e = ttft + m * tpot if m > 0 else ttft + 0.0
        energy = (link[3, s] + consts[7] * e2e) / N
        if field == 0:
            lat, extra = ttft, ue_pre
        elif field == 1:
            lat, extra = tpot, ue_dec
        else:
            lat, extra = e2e, ue_pre + ue_dec * m
        if use_load:
            lat = lat + (slow_ue - 1.0) * extra
        if not lat <= timeout:  # timed out: charged the timeout and the energy until then
            energy = min(energy, consts[6])
            lat = timeout
        total = consts[0] * lat / consts[1] + consts[2] * scale * energy / consts[3]
        if consts[14] > 0.0:
            total = total + consts[4] * static[5, s]
        out[s] = -total


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
    """Compile (or load from numba's cache) both kernels once, so that no decision pays for it."""
    L = 3
    static = np.zeros((7 + 4, L + 1))
    consts = np.ones(16)
    consts[15] = 1.0
    base_rewards_into(np.zeros(L + 1), static, np.ones(1), consts, np.ones((5, L + 1)), 0.0, False, 0.0, False,
                      1.0, False)
    S, G = 2, 4
    grid = np.zeros((G, S))
    static = np.zeros((7, L + 1))
    consts = np.ones(16)
    consts[15] = 0.0
    plan_decision(1.0, 0, 0.0, 0.5, 1.0, 2, np.zeros(1), np.ones(1), grid, grid, grid, True, np.zeros((S, S)), 0.9,
                  1.0, 0.0, 1.0, 0.5, True, np.arange(S), static, np.zeros(0), consts, np.ones((4, L + 1)), 0.0,
                  False, 0.0, False, 1.0, False)
