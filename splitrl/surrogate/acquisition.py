"""Which real evaluations to spend next: uncertainty where the reward is at stake, not a grid.

`propose` ranks candidate cells ``(transport, split, snr_db)`` for the next real evaluations.
For each (transport, SNR) among the candidates it predicts the quality loss of EVERY allowed
split with the surrogate and turns it into reward bounds with the analytic costs::

    reward(s)  = base(s) - w_quality * log_ppl_ratio(s)        (base: reward at zero quality loss)
    UCB(s)     = base(s) - w_quality * (mean(s) - beta * std(s))
    LCB(s)     = base(s) - w_quality * (mean(s) + beta * std(s))

A candidate is *relevant* when its UCB reaches the best LCB of its (transport, SNR): it could still
be (or beat) the best split. Relevant candidates come first, ordered by the surrogate's std
(in reward units, ``w_quality * std``), then the rest by std; exact ties are broken by a seeded
random permutation. The top ``k`` distinct candidates are returned (no duplicates, at most ``k``).

`run_acquisition` is the loop around it: an initial random design, then batches chosen by
``active`` (`propose`) or ``random`` sampling from the pool, each measured by ``oracle_fn`` and
fed to `Surrogate.update`, recording a learning curve.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from splitrl.surrogate.base import Surrogate
from splitrl.surrogate.features import as_cells
from splitrl.errors import UsageError

if TYPE_CHECKING:  # a type only: the decision core imports torch, and `splitrl surrogate-report --help` reads this package
    from splitrl.decision.problem import SplitProblem

__all__ = ["STRATEGIES", "AcquisitionResult", "RewardModel", "propose", "run_acquisition", "table_oracle"]

STRATEGIES = ("active", "random")


class RewardModel:
    """Reward of every split at (transport, SNR) from the problem's analytic costs (`splitrl.decision`).

    ``base(transport, snr)[s]`` is the step reward at split ``s`` with zero quality loss and no
    switch (previous split = s), i.e. `RequestCostService.base_rewards`; the reward at quality loss
    ``q`` is ``base - w_quality * q`` (`reward`). Built from one `SplitProblem` per transport.
    Results are cached per (transport, SNR). Callable as ``base``.
    """

    def __init__(self, problems: Mapping[str, SplitProblem]) -> None:
        if not problems:
            raise UsageError("RewardModel needs at least one problem")
        self.problems = dict(problems)
        self._cache: dict[tuple[str, float], np.ndarray] = {}

    def _problem(self, transport: str) -> SplitProblem:
        try:
            return self.problems[transport]
        except KeyError:
            raise UsageError(f"no problem for transport {transport!r}; have {sorted(self.problems)}") from None

    def w_quality(self, transport: str) -> float:
        return float(self._problem(transport).config.reward.w_quality)

    def allowed(self, transport: str) -> np.ndarray:
        """Splits the agent may choose (``s_min..L``)."""
        return np.asarray(self._problem(transport).splits, dtype=int)

    def base(self, transport: str, snr_db: float) -> np.ndarray:
        key = (transport, round(float(snr_db), 9))
        if key not in self._cache:
            self._cache[key] = self._problem(transport).costs.base_rewards(float(snr_db))
        return self._cache[key]

    __call__ = base

    def reward(self, transport: str, snr_db: float, log_ppl_ratio: np.ndarray, splits: np.ndarray | None = None) -> np.ndarray:
        """Reward of ``splits`` (default all 0..L) given their log ppl ratios."""
        b = self.base(transport, snr_db)
        b = b if splits is None else b[np.asarray(splits, int)]
        return b - self.w_quality(transport) * np.asarray(log_ppl_ratio, float)


def _resolve_costs(costs_fn, transport: str, w_quality: float | None, allowed_splits, num_layers: int):
    if isinstance(costs_fn, RewardModel):
        w = costs_fn.w_quality(transport) if w_quality is None else float(w_quality)
        allowed = costs_fn.allowed(transport) if allowed_splits is None else np.asarray(allowed_splits, int)
    else:
        w = 1.0 if w_quality is None else float(w_quality)
        allowed = np.arange(1, num_layers + 1) if allowed_splits is None else np.asarray(allowed_splits, int)
    return w, allowed


def propose(
    surrogate: Surrogate,
    candidates: Any,
    costs_fn: RewardModel | Callable[[str, float], np.ndarray],
    k: int,
    *,
    beta: float = 2.0,
    w_quality: float | None = None,
    allowed_splits: Sequence[int] | None = None,
    seed: int | np.random.Generator | None = 0,
    return_scores: bool = False,
):
    """Indices (into ``candidates``) of the ``k`` cells to evaluate next (see module doc).

    Args:
        surrogate: a fitted `Surrogate`.
        candidates: cells not yet measured (see `as_cells`).
        costs_fn: a `RewardModel`, or ``(transport, snr_db) -> base reward per split 0..L``
            (reward at zero quality loss); then ``w_quality`` defaults to 1 and the allowed
            splits to ``1..L``.
        k: how many to return (fewer if there are fewer candidates).
        beta: width of the confidence bounds in stds.
        seed: tie-breaking seed (or a Generator).
        return_scores: also return ``(relevant, score)`` per candidate.
    """
    t, s, q = as_cells(candidates)
    n = len(s)
    k = int(k)
    if k < 0:
        raise UsageError(f"k must be >= 0, got {k}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    relevant = np.zeros(n, dtype=bool)
    score = np.zeros(n)
    L = surrogate.spec.num_layers
    groups = [(tr, snr) for tr in dict.fromkeys(t.tolist()) for snr in dict.fromkeys(q[t == tr].tolist())]
    resolved = [_resolve_costs(costs_fn, tr, w_quality, allowed_splits, L) for tr, _ in groups]
    # One batched prediction for every allowed split of every (transport, SNR) group.
    gt = [tr for (tr, _), (_, al) in zip(groups, resolved) for _ in al]
    gs = np.concatenate([al for _, al in resolved]) if groups else np.zeros(0, int)
    gq = np.concatenate([np.full(len(al), snr) for (_, snr), (_, al) in zip(groups, resolved)]) if groups else np.zeros(0)
    mu_all, sd_all = surrogate.predict_with_uncertainty((gt, gs, gq)) if groups else (np.zeros(0), np.zeros(0))
    k0 = 0
    for (tr, snr), (w, allowed) in zip(groups, resolved):
        mu, sd = mu_all[k0:k0 + len(allowed)], sd_all[k0:k0 + len(allowed)]
        k0 += len(allowed)
        base = np.asarray(costs_fn(tr, snr), dtype=float)[allowed]
        best_lcb = float(np.max(base - w * (mu + beta * sd)))
        pos = {int(a): i for i, a in enumerate(allowed)}
        for m in np.flatnonzero((t == tr) & (q == snr)):
            i = pos.get(int(s[m]))
            if i is None:  # not a split the agent can choose: never relevant
                continue
            ucb = base[i] - w * (mu[i] - beta * sd[i])
            relevant[m] = ucb >= best_lcb - 1e-12
            score[m] = w * sd[i]
    perm = rng.permutation(n)
    order = np.lexsort((perm, -score, ~relevant))
    chosen = order[: min(k, n)].astype(int)
    if return_scores:
        return chosen, relevant, score
    return chosen


@dataclass
class AcquisitionResult:
    """What `run_acquisition` did: the measured cells in order, their values, the learning curve."""

    strategy: str
    cells: list[tuple[str, int, float]] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    curve: list[dict[str, Any]] = field(default_factory=list)
    surrogate: Surrogate | None = None

    @property
    def real_evaluations(self) -> int:
        return len(self.values)


def run_acquisition(
    oracle_fn: Callable[[str, int, float], float],
    budget: int,
    strategy: str = "active",
    *,
    candidates: Any,
    surrogate_factory: Callable[[], Surrogate],
    costs_fn: RewardModel | Callable[[str, float], np.ndarray] | None = None,
    initial: int = 20,
    batch: int = 10,
    seed: int = 0,
    beta: float = 2.0,
    eval_fn: Callable[[Surrogate], dict[str, Any]] | None = None,
    eval_at: Sequence[int] | None = None,
) -> AcquisitionResult:
    """Spend ``budget`` real evaluations on ``candidates``, learning a surrogate as it goes.

    ``initial`` cells are drawn at random (the same draw for both strategies at equal ``seed``);
    then batches of ``batch`` are chosen by ``strategy`` — ``active`` (`propose` with
    ``costs_fn``) or ``random`` (uniform over the unmeasured pool) — measured with
    ``oracle_fn(transport, split, snr_db) -> log(ppl/ppl_clean)`` and added with
    `Surrogate.update`. Each cell is measured at most once. ``eval_fn(surrogate)`` is recorded in
    the curve after every batch whose size reaches a number in ``eval_at`` (default: every batch).
    """
    if strategy not in STRATEGIES:
        raise UsageError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if budget < 2:
        raise UsageError(f"budget must be >= 2, got {budget}")
    if batch < 1 or initial < 2:
        raise UsageError("batch must be >= 1 and initial >= 2")
    if strategy == "active" and costs_fn is None:
        raise UsageError("the active strategy needs costs_fn")
    t, s, q = as_cells(candidates)
    pool = list(range(len(s)))
    if len(pool) < 2:
        raise UsageError("need at least 2 candidate cells")
    rng = np.random.default_rng(seed)
    tie_rng = np.random.default_rng([seed, 1])
    result = AcquisitionResult(strategy=strategy)
    marks = None if eval_at is None else sorted(set(int(x) for x in eval_at))
    next_mark = 0

    def measure(idx: Sequence[int]) -> tuple[list, list]:
        cells = [(str(t[i]), int(s[i]), float(q[i])) for i in idx]
        vals = [float(oracle_fn(*c)) for c in cells]
        result.cells.extend(cells)
        result.values.extend(vals)
        for i in sorted(idx, reverse=True):
            pool.remove(i)
        return cells, vals

    def record(sur: Surrogate) -> None:
        nonlocal next_mark
        n = result.real_evaluations
        if eval_fn is None:
            return
        if marks is None:
            result.curve.append({"n": n, **eval_fn(sur)})
            return
        while next_mark < len(marks) and marks[next_mark] <= n:
            next_mark += 1
            if not result.curve or result.curve[-1]["n"] != n:
                result.curve.append({"n": n, **eval_fn(sur)})

    first = rng.choice(len(pool), size=min(initial, budget, len(pool)), replace=False)
    cells, vals = measure([pool[i] for i in sorted(first)])
    sur = surrogate_factory().fit(cells, vals)
    record(sur)
    while result.real_evaluations < budget and pool:
        kk = min(batch, budget - result.real_evaluations, len(pool))
        if strategy == "random":
            pick = [pool[i] for i in rng.choice(len(pool), size=kk, replace=False)]
        else:
            sub = ([t[i] for i in pool], [s[i] for i in pool], [q[i] for i in pool])
            pick = [pool[i] for i in propose(sur, sub, costs_fn, kk, beta=beta, seed=tie_rng)]
        cells, vals = measure(pick)
        sur.update(cells, vals)
        record(sur)
    result.surrogate = sur
    return result


def table_oracle(tables: Mapping[str, Any], seed: int = 0) -> Callable[[str, int, float], float]:
    """A stand-in for real evaluations: ``(transport, split, snr) -> `` one measured seed of the
    sweep cell (drawn with ``seed``), from `SweepTable` objects keyed by transport."""
    rng = np.random.default_rng(seed)

    def oracle(transport: str, split: int, snr_db: float) -> float:
        table = tables[transport]
        return float(table.lookup(int(split), float(snr_db), int(rng.integers(table.seeds))))

    return oracle
