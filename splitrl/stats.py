"""The project's interval estimates: one Student-t interval of a mean and one block bootstrap.

Every result that states an interval (agent comparisons over seeds, the pipeline controller, the
privacy probe, the MBRL end-to-end run) computes it here, so "95 % CI" means the same thing in
every result file.

* `t_interval` — the mean of independent replicates (one number per seed) with a Student-t
  interval; scipy's ``t.ppf`` gives the quantile. With fewer than two values the interval is the
  point itself (no spread can be estimated), never NaN.
* `block_bootstrap_ci` — the mean of a correlated series (steps within episodes, tokens within
  windows), resampling whole blocks so the within-block correlation is kept. Two block schemes,
  because the committed results use both and their numbers must not change:
  ``overlapping=True`` is the moving-block bootstrap (any run of ``block`` consecutive steps inside
  one episode is a block; for a time series whose correlation has no natural boundary),
  ``overlapping=False`` resamples the fixed, non-overlapping blocks the data came in (e.g. the
  probe's independent text windows, where a block boundary is real).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

from splitrl.errors import UsageError

__all__ = ["t_interval", "block_bootstrap_ci"]


def t_interval(values, level: float = 0.95) -> dict[str, float]:
    """``{"mean", "lo", "hi", "n"}``: the mean of ``values`` with a Student-t ``level`` interval."""
    if not 0.0 < level < 1.0:
        raise UsageError(f"level must be in (0, 1), got {level!r}")
    x = np.asarray(values, float).ravel()
    if x.size == 0:
        raise UsageError("t_interval needs at least one value")
    m = float(x.mean())
    if x.size < 2:
        return {"mean": m, "lo": m, "hi": m, "n": int(x.size)}
    h = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return {"mean": m, "lo": m - h, "hi": m + h, "n": int(x.size)}


def block_bootstrap_ci(x: np.ndarray, block: int, reps: int, rng: np.random.Generator, *,
                       overlapping: bool, level: float = 0.95) -> tuple[float, float]:
    """``level`` interval of the mean of ``x`` by resampling blocks of ``block`` consecutive values.

    Args:
        x: ``[episodes, steps]`` (``overlapping``) or a flat series of whole blocks
            (``not overlapping``: ``len(x)`` a multiple of ``block``).
        block: block length, >= 1.
        reps: bootstrap resamples, >= 1.
        rng: the generator the resamples draw from (callers seed it; one seed, one interval).
        overlapping: moving blocks inside each episode (True) or the fixed blocks (False).
    """
    if block < 1 or reps < 1:
        raise UsageError(f"block and reps must be >= 1, got block={block!r}, reps={reps!r}")
    if not 0.0 < level < 1.0:
        raise UsageError(f"level must be in (0, 1), got {level!r}")
    tail = (100.0 - 100.0 * level) / 2  # written so level=0.95 gives exactly 2.5 (quantiles 0.025/0.975)
    x = np.asarray(x, float)
    if not overlapping:
        if x.size == 0 or x.size % block:
            raise UsageError(f"fixed blocks: {x.size} values are not whole blocks of {block}")
        per_block = x.reshape(-1, block).mean(1)  # [n]
        idx = rng.integers(0, len(per_block), size=(reps, len(per_block)))
        lo, hi = np.percentile(per_block[idx].mean(1), [tail, 100.0 - tail])
        return float(lo), float(hi)
    if x.ndim != 2 or x.shape[1] < block:
        raise UsageError(f"moving blocks need x as [episodes, steps >= block={block}], got shape {x.shape}")
    E, T = x.shape
    starts = [(e, t) for e in range(E) for t in range(0, T - block + 1)]
    n_blocks = max(1, (E * T) // block)
    means = np.empty(reps)
    for r in range(reps):
        pick = rng.integers(len(starts), size=n_blocks)
        means[r] = np.mean([x[starts[i][0], starts[i][1]:starts[i][1] + block] for i in pick])
    return float(np.quantile(means, tail / 100.0)), float(np.quantile(means, (100.0 - tail) / 100.0))
