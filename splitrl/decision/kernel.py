"""The numpy reference of the compiled known-cost reward (`splitrl.decision.kernel_numba`).

`base_rewards` evaluates, vectorised over splits, exactly the formula that
`kernel_numba.base_rewards_into` evaluates in one compiled loop, over the same packed inputs
(``static``, ``steps``, ``consts``, ``link``: see `kernel_numba`'s docstring for their rows, and
`RequestCostService.kernel_inputs` / `RequestCostService.link_rows` for where they come from).
Each elementwise operation comes in the compiled loop's order, so the two agree bit for bit
(`tests/test_decision_kernel.py` checks this on random inputs); a change to the formula changes
both, side by side. The cost model itself (`RequestCostService.base_rewards`) stays the
definition both pack.
"""
from __future__ import annotations

import numpy as np

__all__ = ["base_rewards"]


def base_rewards(static: np.ndarray, steps: np.ndarray, consts: np.ndarray, link: np.ndarray, *,
                 load: float | None = None, edge_load: float | None = None,
                 battery: float | None = None) -> np.ndarray:
    """The zero-quality, no-switch reward of every split 0..L (``[L+1]``) at a state: UE compute
    ``load``, background ``edge_load`` and ``battery`` level (None: not observed / not modelled)."""
    n_chunks = int(consts[15])
    N, m, m_eff, rho_max = consts[8], consts[9], consts[10], consts[11]
    field = int(consts[12])
    timeout = consts[5]
    scale = 1.0 if battery is None else 1.0 / max(battery, 0.05)  # splitrl.decision.reward.battery_energy_scale
    use_load = consts[13] > 0.0 and load is not None
    slow_ue = 1.0 / (1.0 - 0.5 * load) if use_load else 1.0
    if edge_load is not None:  # RequestCostService.edge_utilization, then cost.edge_load.md1_slowdown
        u = np.minimum(edge_load + static[4], rho_max)
        r = np.minimum(np.maximum(u, 0.0), rho_max)
        slow = 1.0 + r / (2.0 * (1.0 - r))
    else:
        slow = np.ones(static.shape[1])
    ue_pre, ue_dec = static[0], static[2]
    edge_pre = slow * static[1]
    edge_dec = slow * static[3] / m_eff
    dl = link[2]
    ttft = ue_pre + link[0] + edge_pre + dl
    if n_chunks > 0:  # CostModel._pipelined_prefill, for cuts inside the model
        best = np.full(static.shape[1], np.inf)
        for c in range(n_chunks):
            base = 7 + 4 * c
            air = link[4 + c]
            steady = np.maximum(np.maximum(static[base + 1], air), slow * static[base + 3])
            t = static[base] + air + slow * static[base + 2] + steps[c] * steady + dl
            best = np.minimum(best, t)
        ttft = np.where(static[6] > 0.0, np.minimum(ttft, best), ttft)
    tpot = ue_dec + link[1] + edge_dec + dl
    e2e = ttft + m * tpot if m > 0 else ttft + 0.0
    energy = (link[3] + consts[7] * e2e) / N
    if field == 0:
        lat, extra = ttft, ue_pre
    elif field == 1:
        lat, extra = tpot, ue_dec
    else:
        lat, extra = e2e, ue_pre + ue_dec * m
    if use_load:
        lat = lat + (slow_ue - 1.0) * extra
    timed_out = ~(lat <= timeout)  # timed out: charged the timeout and the energy until then
    energy = np.where(timed_out, np.minimum(energy, consts[6]), energy)
    lat = np.where(timed_out, timeout, lat)
    total = consts[0] * lat / consts[1] + consts[2] * scale * energy / consts[3]
    if consts[14] > 0.0:
        total = total + consts[4] * static[5]
    return -total
