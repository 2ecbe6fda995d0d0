"""The held-out comparison harness of ``splitrl/AirCompAssign-v0``'s policies (`agents.aircomp`).

`evaluate_policy` runs a policy on the held-out episode seeds through the one rollout loop
(`splitrl.rollout.rollout`) and reports the mean return and the mean quality, latency and energy
of its feasible steps.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from splitrl.rollout import rollout

__all__ = ["evaluate_policy"]


def evaluate_policy(env, policy: Any, seeds: list[int]) -> dict[str, float]:
    """Mean episode return, mean log-ppl ratio, latency and energy over the held-out episode ``seeds``
    (each episode run to the env's own end by `splitrl.rollout.rollout`)."""
    episodes = rollout(lambda _env, obs: policy.act(obs), env, seeds, None)
    feasible = [i for ep in episodes for i in ep.infos if i["feasible"]]
    logs, lats, ens = ([i[k] for i in feasible] for k in ("log_ppl_ratio", "latency_s", "energy_j"))
    infeasible = sum(ep.steps for ep in episodes) - len(feasible)
    return {"mean_return": float(np.mean([ep.total for ep in episodes])), "mean_log_ppl_ratio": float(np.mean(logs)) if logs else math.nan,
            "mean_latency_s": float(np.mean(lats)) if lats else math.nan,
            "mean_energy_j": float(np.mean(ens)) if ens else math.nan, "infeasible_steps": infeasible,
            "episodes": len(seeds)}
