"""Where to cut a model over K devices in a ring: exact DP, brute force, equal split, MDI-LLM's table.

The objective is the ring's steady-state bottleneck, the slowest *resource*: every stage's
compute time per token (layers + embeddings/head on the starter) and every hop's transfer time
(`splitrl.cost.pipeline`). With enough samples in flight the throughput is ``1 / bottleneck``,
so minimising it maximises throughput. A stage whose weights + KV cache exceed its device's
memory budget is infeasible.

`dp_cuts` is exact: ``best[k][j]`` = the smallest bottleneck of stages ``0..k-1`` covering layers
``[0, j)``; ``best[k+1][j] = min_{i <= j} max(best[k][i], stage_k(i, j))`` over feasible stages,
O(K L^2) stage evaluations; among equal bottlenecks it prefers a smaller sum of stage times
(shorter round, better at few samples in flight). Stages may be empty (a relay), as in the runtime. `brute_force_cuts`
enumerates every non-decreasing cut vector and is the DP's test oracle.
"""
from __future__ import annotations

import itertools
import math
from typing import Any, Callable, Sequence

from splitrl.cost.pipeline import PipelineCostModel
from splitrl.pipeline.driver import equal_cuts as _eq
from splitrl.errors import UsageError

__all__ = ["StageCost", "brute_force_cuts", "compare_partitions", "dp_cuts", "equal_cuts", "mdi_llm_cuts",
           "cost_fn"]

# stage_cost(k, start, stop) -> seconds, or math.inf when stage k cannot hold layers [start, stop)
StageCost = Callable[[int, int, int], float]


def equal_cuts(num_layers: int, stages: int) -> list[int]:
    """Layer counts that differ by at most one (the later stages get the extra layers)."""
    return _eq(num_layers, stages)


def mdi_llm_cuts(num_layers: int, stages: int) -> list[int]:
    """MDI-LLM's static rule: the starter (which also runs embeddings, head and sampling) gets fewer layers.

    Its published configuration gives the starter about ``L / (3 (K - 1))`` layers (e.g. 4 of 12 on
    two nodes, 2 of 12 on three) and splits the rest equally among the other nodes; this function
    applies that pattern to any L and K (our reading of its table, not a copy of it).
    """
    if stages == 1:
        return []
    start = max(1, round(num_layers / (3 * (stages - 1))))
    rest = num_layers - start
    base, extra = divmod(rest, stages - 1)
    cuts, acc = [start], start
    for k in range(stages - 2):
        acc += base + (1 if k >= stages - 1 - extra else 0)
        cuts.append(acc)
    return cuts


def cost_fn(model: PipelineCostModel, *, context: int, samples: int) -> tuple[StageCost, list[float]]:
    """(stage cost with memory limits, hop times) of ``model`` for the DP and the brute force."""

    def stage(k: int, a: int, b: int) -> float:
        if model.memory(k, a, b, context, samples, starter=(k == 0)) > model.memory_budget(k):
            return math.inf
        return model.stage_time(k, a, b, context, starter=(k == 0))

    hops = [model.hop_time(k)[0] for k in range(len(model.profiles))]
    return stage, hops


def _bottleneck(cuts: Sequence[int], num_layers: int, stage: StageCost, hop_s: Sequence[float]) -> float:
    b = [0, *cuts, num_layers]
    K = len(b) - 1
    worst = max(stage(k, b[k], b[k + 1]) for k in range(K))
    return max(worst, max(hop_s[:K]) if K > 1 else 0.0)


def dp_cuts(num_layers: int, stages: int, stage: StageCost, hop_s: Sequence[float] = ()) -> tuple[list[int], float]:
    """The exact min-bottleneck cut vector for ``stages`` devices: (cuts, bottleneck seconds); inf if infeasible."""
    L, K = int(num_layers), int(stages)
    if K < 1:
        raise UsageError(f"stages must be >= 1, got {K}")
    inf = math.inf
    best = [[inf] * (L + 1) for _ in range(K + 1)]
    total = [[inf] * (L + 1) for _ in range(K + 1)]  # tie-break: smaller sum of stage times (round time)
    arg = [[0] * (L + 1) for _ in range(K + 1)]
    best[0][0] = total[0][0] = 0.0
    for k in range(K):
        for j in range(L + 1):
            if k == K - 1 and j != L:
                continue  # the last stage must end at L
            for i in range(j + 1):
                if best[k][i] == inf:
                    continue
                c = stage(k, i, j)
                v, t = max(best[k][i], c), total[k][i] + c
                if v < best[k + 1][j] or (v == best[k + 1][j] and t < total[k + 1][j]):
                    best[k + 1][j], total[k + 1][j], arg[k + 1][j] = v, t, i
    if best[K][L] == inf:
        return [], inf
    cuts, j = [], L
    for k in range(K, 1, -1):
        j = arg[k][j]
        cuts.append(j)
    cuts.reverse()
    hop = max(hop_s[:K]) if K > 1 and len(hop_s) else 0.0
    return cuts, max(best[K][L], hop)


def brute_force_cuts(num_layers: int, stages: int, stage: StageCost, hop_s: Sequence[float] = ()) -> tuple[list[int], float]:
    """Every non-decreasing cut vector; the one with the smallest bottleneck (first in lexicographic order)."""
    best, best_cuts = math.inf, []
    for cuts in itertools.combinations_with_replacement(range(num_layers + 1), stages - 1):
        v = _bottleneck(cuts, num_layers, stage, hop_s)
        if v < best:
            best, best_cuts = v, list(cuts)
    return best_cuts, best


def compare_partitions(model: PipelineCostModel, *, context: int = 128, samples: int = 4,
                       stages: int | None = None) -> dict[str, Any]:
    """DP vs equal split vs MDI-LLM's table on ``model``'s devices: cuts, per-stage times, throughput."""
    K = stages or len(model.profiles)
    stage, hops = cost_fn(model, context=context, samples=samples)
    dp, _ = dp_cuts(model.num_layers, K, stage, hops)
    out: dict[str, Any] = {"devices": model.names[:K], "context": context, "samples": samples}
    for name, cuts in (("dp", dp), ("equal", equal_cuts(model.num_layers, K)), ("mdi_llm", mdi_llm_cuts(model.num_layers, K))):
        if name == "dp" and not cuts and K > 1:
            out[name] = {"feasible": False}
            continue
        est = model.estimate(cuts, context=context, samples=samples)
        out[name] = {
            "cuts": cuts, "stage_ms": [t * 1e3 for t in est.stage_s], "hop_ms": [t * 1e3 for t in est.hop_s],
            "memory_MiB": [m / 2**20 for m in est.memory_bytes], "memory_ok": est.memory_ok,
            "throughput_tok_s": est.throughput_tok_s,
            "bottleneck_tok_s": 1.0 / max(max(est.stage_s), max(est.hop_s)),
        }
    return out
