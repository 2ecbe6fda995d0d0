"""Compiled known-cost rewards for a decision's hot path (numba).

`RequestCostService.base_rewards` is the reference: the zero-quality, no-switch reward of every
split at a state (SNR, UE load, edge load, battery). A controller calls it once per decision, and
right after a generation step (which streams the model's weights through the caches) its ~40
small numpy calls run mostly from DRAM: hundreds of microseconds. `base_rewards_into` computes the
same numbers, in the same order of operations, in one compiled loop over the splits, from arrays
the cost model already caches: the link terms of the SNR (`CostModel.link_rows`) and the
channel-independent figures of the request lengths (`RequestCostService.kernel_inputs`).
`tests/test_env_richer_mdp.py::test_compiled_base_rewards_equal_the_service` checks it equals the
reference bit for bit on every state term.

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
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["base_rewards_into", "warm_up"]


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
        scale = 1.0 / max(battery, 0.05)  # splitrl.reward.battery_energy_scale
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


def warm_up() -> None:
    """Compile (or load from numba's cache) once, so that no decision pays for it."""
    L = 3
    static = np.zeros((7 + 4, L + 1))
    consts = np.ones(16)
    consts[15] = 1.0
    base_rewards_into(np.zeros(L + 1), static, np.ones(1), consts, np.ones((5, L + 1)), 0.0, False, 0.0, False,
                      1.0, False)
    _ = math  # noqa: F841  (math is used by the compiled code of agents' kernels importing this module)
