"""``splitrl surrogate-report``: how well, how cheaply and from how few real evaluations the
surrogate predicts quality — and whether it picks the same split as the measured table.

Protocol (`surrogate_report`), repeated for each seed in ``seeds``:

1. Cells are ``(transport, split, SNR level)`` of the sweep table at its measured SNR levels, for
   the splits an agent may choose except ``L`` (``s_min..L-1``; at ``L`` nothing crosses the link
   and the loss is structurally 0, so it is excluded from every metric). A random ``holdout``
   fraction of the cells (all their seeds) is HELD OUT; the rest is the acquisition pool.
2. Starting from ``initial`` random pool cells, ``budget`` real evaluations in total are spent,
   in batches of ``batch``, chosen by ``active`` acquisition (`splitrl.surrogate.acquisition.propose`)
   or uniformly at ``random``. One real evaluation = one measured seed of one cell, drawn at
   random (`table_oracle`); a cell is measured at most once. The same initial draw and holdout
   are used for both strategies and every surrogate kind at a given seed.
3. After every ``eval_every`` evaluations the surrogate is scored:
   * ``r2_log_ppl``: R^2 of the predicted mean against the held-out cells' mean over seeds;
   * ``spearman_per_snr``: Spearman rank correlation over the held-out splits of each
     (transport, SNR level), averaged over the groups with >= 3 held-out splits and a
     non-constant truth (``..._nonflat``: only groups whose truth spans >= 0.05, i.e. >= 5% in ppl —
     at high SNR the int8 link's losses differ by ~0.01 between splits, noise-level for a ranking;
     ``spearman_grid``: over all splits on the 1 dB grid, vs table interpolation);
   * ``best_split_agreement``: on a 1 dB SNR grid over the measured range (0..30 dB: 31 SNRs x
     transports), the split maximising the env's reward (default `RewardConfig`, analytic costs of
     `SplitPointTableEnv.costs_at`) with the surrogate's mean quality, compared with the split
     maximising it with the table's quality (mean over seeds, linearly interpolated over SNR as
     `SweepTable.lookup` does); agreement = the surrogate's split is the true best split or its
     true reward is within ``tolerance`` (1%) of the true best reward (``..._exact``: identical
     split). ``best_split_agreement_levels`` does the same at the measured levels only.
4. **Held-out SNRs** (`heldout_best_split_agreement`): the decision metrics above are computed
   on a grid that includes SNRs the surrogate was fitted at. To measure generalisation honestly,
   the default kind and strategy are re-run with whole interior SNR levels held out (every other
   interior measured level; no cell at those levels is ever measured) and scored only there:
   best-split agreement at the held-out levels, next to ``cost_only_agreement`` (the best split
   from the costs alone, quality loss taken as 0 — what you get with no quality model) at the
   same levels; Spearman and RMSE of the predicted log ppl ratio over the splits at each held-out
   level (``heldout_per_snr``). ``per_snr`` gives Spearman and RMSE per measured level for the
   held-out cells of step 1.
5. Learning curves are these metrics against the number of real evaluations, mean and std over
   seeds. The default kind is the one with the best final ``best_split_agreement`` (active),
   ties broken by ``r2_log_ppl``.

Costs: ``query_seconds_per_1000`` is the median wall time of one `predict` call on 1,000 random
cells (featurisation included); one real evaluation is the median wall time of a
`SplitPointEnv.step` on the model with default eval settings (256 WikiText-2 tokens, prefix cache
warm), ``real_repeats`` repeats after one warm-up step. ``query_speedup_vs_real`` = real step /
(query time per prediction); ``single_query_speedup_vs_real`` uses one `predict` call for one cell;
``query_speedup_vs_fastest_real`` / ``..._vs_fastest_sweep_cell`` divide the FASTEST real step / the
fastest sweep cell instead (conservative when the machine is shared and real steps are slowed).
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from splitrl.envs.split_point import SplitPointConfig, SplitPointEnv, SplitPointTableEnv
from splitrl.models import load_model
from splitrl.plotting import pyplot, save_figure
from splitrl.provenance import run_record
from splitrl.resources import results_dir
from splitrl.surrogate.acquisition import STRATEGIES, RewardModel, run_acquisition, table_oracle
from splitrl.surrogate.base import SURROGATE_KINDS, Surrogate, make_surrogate
from splitrl.surrogate.env import SurrogateEnv
from splitrl.surrogate.features import FeatureSpec, cut_statistics
from splitrl.sweep import read_sweep_table
from splitrl.errors import UsageError

__all__ = ["REPORT_HELP", "plot_report", "surrogate_report"]

REPORT_HELP = "fit quality surrogates on a sweep table (random vs active acquisition) and report accuracy and speed"
RESULTS = results_dir()  # the checkout's benchmarks/results/, or the current directory for an installed wheel
TARGET_AGREEMENT = 0.90
TARGET_SPEEDUP = 1e4
METRICS = ("best_split_agreement", "best_split_agreement_exact", "best_split_agreement_levels", "r2_log_ppl",
           "rmse_log_ppl", "spearman_per_snr", "spearman_per_snr_nonflat", "spearman_grid")
FLAT_LOG_PPL = 0.05  # a (transport, SNR) whose held-out splits span less than this is "flat" (< 5% ppl)


def _r2(y: np.ndarray, p: np.ndarray) -> float:
    ss = float(np.sum((y - y.mean()) ** 2))
    return float(1.0 - np.sum((y - p) ** 2) / ss) if ss > 0 else float("nan")


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if len(a) < 3 or np.ptp(a) <= 1e-12 or np.ptp(b) <= 1e-12:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def _nanmean(xs) -> float:
    xs = [x for x in xs if x == x]
    return float(np.mean(xs)) if xs else float("nan")


class _Truth:
    """The table's truth, held-out cells and decision grid shared by every run."""

    def __init__(self, tables: dict, rewards: RewardModel, splits: np.ndarray, levels: np.ndarray,
                 grid: np.ndarray, tolerance: float) -> None:
        self.tables, self.rewards, self.splits, self.levels, self.grid = tables, rewards, splits, levels, grid
        self.tolerance = tolerance
        self.transports = list(tables)
        # Cells: transport x split (s_min..L-1) x level, with the mean over seeds.
        rows = []
        for t, tab in tables.items():
            for s in splits:
                for li, lv in enumerate(levels):
                    rows.append((t, int(s), float(lv), float(np.mean(tab.log_ratio[s, li]))))
        self.cells = [(t, s, lv) for t, s, lv, _ in rows]
        self.mean = np.array([m for *_, m in rows])
        # Decisions: (transport, snr) on the grid and at the measured levels.
        self.decisions = {}
        for name, snrs in (("grid", grid), ("levels", levels)):
            out = []
            for t in self.transports:
                allowed = rewards.allowed(t)
                for snr in snrs:
                    true_q = tables[t].mean_table(float(snr), allowed)
                    true_r = rewards.reward(t, float(snr), true_q, allowed)
                    out.append((t, float(snr), allowed, true_q, true_r))
            self.decisions[name] = out

    def add_decisions(self, name: str, snrs: np.ndarray) -> None:
        """Decisions (best split per transport) at ``snrs`` under the key ``name``."""
        out = []
        for t in self.transports:
            allowed = self.rewards.allowed(t)
            for snr in snrs:
                true_q = self.tables[t].mean_table(float(snr), allowed)
                out.append((t, float(snr), allowed, true_q, self.rewards.reward(t, float(snr), true_q, allowed)))
        self.decisions[name] = out

    def per_snr(self, sur: Surrogate, mask: np.ndarray) -> dict[str, dict[str, float]]:
        """Spearman (over splits) and RMSE of the predicted mean log ppl ratio per (transport, level)
        of the cells in ``mask``."""
        idx = np.flatnonzero(mask)
        cells = [self.cells[i] for i in idx]
        y, p = self.mean[idx], np.asarray(sur.predict(cells), float)
        groups: dict[tuple, list[int]] = {}
        for k, (t, _, lv) in enumerate(cells):
            groups.setdefault((t, lv), []).append(k)
        return {f"{t}@{lv:g}dB": {"snr_db": float(lv), "transport": t, "splits": len(ix),
                                  "spearman": _spearman(y[ix], p[ix]),
                                  "rmse_log_ppl": float(np.sqrt(np.mean((y[ix] - p[ix]) ** 2))),
                                  "truth_span_log_ppl": float(np.ptp(y[ix]))}
                for (t, lv), ix in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1]))}

    def _decision_cells(self, which: str):
        """All (transport, split, snr) cells of the decisions, concatenated, and each decision's slice."""
        key = "_cells_" + which
        if not hasattr(self, key):
            t, s, q, slices, k = [], [], [], [], 0
            for tr, snr, allowed, _, _ in self.decisions[which]:
                t += [tr] * len(allowed)
                s.append(allowed)
                q.append(np.full(len(allowed), snr))
                slices.append(slice(k, k + len(allowed)))
                k += len(allowed)
            setattr(self, key, ((t, np.concatenate(s), np.concatenate(q)), slices))
        return getattr(self, key)

    def predicted_quality(self, predict: Callable[[Any], np.ndarray], which: str = "grid") -> list[np.ndarray]:
        """The predicted log ppl ratio of every allowed split, per decision (one batched call)."""
        cells, slices = self._decision_cells(which)
        p = np.asarray(predict(cells), dtype=float)
        return [p[sl] for sl in slices]

    def agreement(self, predicted: list[np.ndarray], which: str = "grid") -> tuple[float, float, list]:
        hits, exact, detail = [], [], []
        for (t, snr, allowed, true_q, true_r), q in zip(self.decisions[which], predicted):
            pred_r = self.rewards.reward(t, snr, q, allowed)
            i, j = int(np.argmax(pred_r)), int(np.argmax(true_r))
            best = float(true_r[j])
            ok = bool(true_r[i] >= best - self.tolerance * abs(best))
            hits.append(ok)
            exact.append(i == j)
            detail.append({"transport": t, "snr_db": snr, "chosen": int(allowed[i]), "best": int(allowed[j]), "agree": ok})
        return float(np.mean(hits)), float(np.mean(exact)), detail

    def metrics(self, sur: Surrogate, holdout: np.ndarray) -> dict[str, Any]:
        held = [self.cells[i] for i in np.flatnonzero(holdout)]
        y = self.mean[holdout]
        p = sur.predict(held)
        groups: dict[tuple, list[int]] = {}
        for k, (t, _, lv) in enumerate(held):
            groups.setdefault((t, lv), []).append(k)
        rho = _nanmean(_spearman(y[ix], p[ix]) for ix in groups.values())
        rho_nonflat = _nanmean(_spearman(y[ix], p[ix]) for ix in groups.values() if np.ptp(y[ix]) >= FLAT_LOG_PPL)
        grid_q = self.predicted_quality(sur.predict, "grid")
        agree, exact, _ = self.agreement(grid_q, "grid")
        agree_lv, _, _ = self.agreement(self.predicted_quality(sur.predict, "levels"), "levels")
        rho_grid = []
        for (t, snr, allowed, true_q, _), q in zip(self.decisions["grid"], grid_q):
            m = np.isin(allowed, self.splits)
            rho_grid.append(_spearman(true_q[m], q[m]))
        return {"best_split_agreement": agree, "best_split_agreement_exact": exact,
                "best_split_agreement_levels": agree_lv, "r2_log_ppl": _r2(y, p),
                "rmse_log_ppl": float(np.sqrt(np.mean((y - p) ** 2))), "spearman_per_snr": rho,
                "spearman_per_snr_nonflat": rho_nonflat,
                "spearman_grid": _nanmean(rho_grid)}


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    ts = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def measure_real_step(loaded, model: str, transport: str, repeats: int = 5, seed: int = 0) -> dict[str, Any]:
    """Median wall time of one `SplitPointEnv.step` (one real evaluation, default eval settings)."""
    env = SplitPointEnv(SplitPointConfig(model=model, transport=transport), loaded=loaded)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    env.step(int(rng.integers(env.action_space.n)))  # warm-up: fills the prefix cache
    ts = []
    for _ in range(max(1, repeats)):
        a = int(rng.integers(env.action_space.n))
        t0 = time.perf_counter()
        env.step(a)
        ts.append(time.perf_counter() - t0)
    return {"median_s": float(np.median(ts)), "all_s": [float(t) for t in ts], "repeats": len(ts),
            "eval_tokens": env.config.eval_tokens, "transport": transport}


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(f"[surrogate-report {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _check_arguments(kinds: Sequence[str], strategies: Sequence[str], budget: int, initial: int, batch: int,
                     holdout: float) -> None:
    if budget < 1 or initial < 2 or batch < 1:
        raise UsageError(f"budget must be >= 1, initial >= 2 and batch >= 1, got budget {budget}, initial {initial}, "
                         f"batch {batch}")
    unknown = [k for k in kinds if k not in SURROGATE_KINDS]
    if unknown or not kinds:
        raise UsageError(f"unknown surrogate kinds {unknown}; choose from {', '.join(SURROGATE_KINDS)}")
    bad = [s for s in strategies if s not in STRATEGIES]
    if bad or not strategies:
        raise UsageError(f"unknown strategies {bad}; choose from {', '.join(STRATEGIES)}")
    if not 0 < holdout < 1:
        raise UsageError(f"holdout must be in (0, 1), got {holdout}")


@dataclass
class _Study:
    """What every run of one report shares: the sweep table, the model, the decision truth and
    the acquisition settings (``budget`` already capped to the pool)."""

    table_path: Path
    model: str
    loaded: Any
    df: Any
    transports: list[str]
    tables: dict
    rewards: RewardModel
    levels: np.ndarray
    s_min: int
    splits: np.ndarray
    lo: float
    hi: float
    grid: np.ndarray
    truth: _Truth
    modulation: str
    stats: dict | None
    stats_s: float
    holdout: float
    budget: int
    initial: int
    batch: int
    beta: float
    eval_at: list[int]
    kind_params: dict[str, dict]

    @property
    def num_layers(self) -> int:
        return self.loaded.view.num_layers

    @property
    def n_cells(self) -> int:
        return len(self.truth.cells)

    @property
    def n_held(self) -> int:
        return int(round(self.holdout * self.n_cells))

    def spec(self, with_stats: bool) -> FeatureSpec:
        """The surrogates' features, with or without the cut statistics (the ablation)."""
        stats = self.stats if with_stats else None
        return FeatureSpec(num_layers=self.num_layers, transports=self.transports, modulation=self.modulation,
                           snr_range=(self.lo, self.hi), cut_stats=stats["stats"] if stats else {},
                           cut_stats_source=stats["source"] if stats else {},
                           ppl_clean={t: tab.ppl_clean for t, tab in self.tables.items()})

    def held_out(self, seed: int) -> np.ndarray:
        """Seed ``seed``'s random held-out cells (protocol step 1), the same for every kind and strategy."""
        rng = np.random.default_rng([seed, 7])
        held = np.zeros(self.n_cells, dtype=bool)
        held[rng.choice(self.n_cells, size=self.n_held, replace=False)] = True
        return held

    def surrogate_factory(self, kind: str, spec: FeatureSpec, seed: int) -> Callable[[], Surrogate]:
        return lambda: make_surrogate(kind, spec, seed=seed, **self.kind_params.get(kind, {}))

    def run(self, kind: str, strategy: str, seed: int, spec: FeatureSpec):
        """One acquisition run (protocol steps 1-3) scored on the held-out cells at ``eval_at``."""
        held = self.held_out(seed)
        pool = [self.truth.cells[i] for i in np.flatnonzero(~held)]
        return run_acquisition(
            table_oracle(self.tables, seed=seed), self.budget, strategy, candidates=pool,
            surrogate_factory=self.surrogate_factory(kind, spec, seed), costs_fn=self.rewards,
            initial=self.initial, batch=self.batch, seed=seed, beta=self.beta,
            eval_fn=lambda sur: self.truth.metrics(sur, held), eval_at=self.eval_at)


def _open_study(table_path: Path, *, model: str, loaded, holdout: float, tolerance: float, grid_step_db: float,
                use_cut_stats: bool, stats_tokens: int, budget: int, initial: int, batch: int, beta: float,
                eval_every: int, kind_params: dict[str, dict] | None, progress: bool) -> _Study:
    """Read the table, load the model (if not given), build the decision truth and the cut statistics."""
    df = read_sweep_table(table_path)
    transports = list(dict.fromkeys(df["transport"]))
    loaded = loaded or load_model(model)
    envs = {t: SplitPointTableEnv(SplitPointConfig(model=model, transport=t, table=str(table_path)), view=loaded.view)
            for t in transports}
    tables = {t: e.table for t, e in envs.items()}
    rewards = RewardModel({t: e.problem for t, e in envs.items()})
    levels = tables[transports[0]].levels
    s_min = int(envs[transports[0]].config.s_min)
    splits = np.arange(s_min, loaded.view.num_layers)
    lo, hi = float(levels.min()), float(levels.max())
    grid = np.round(np.arange(lo, hi + 1e-9, grid_step_db), 9)
    truth = _Truth(tables, rewards, splits, levels, grid, tolerance)
    meta_path = table_path.with_suffix(table_path.suffix + ".meta.json")
    modulation = json.loads(meta_path.read_text()).get("modulation", "qpsk") if meta_path.is_file() else "qpsk"

    stats, stats_s = None, 0.0
    if use_cut_stats:
        t0 = time.perf_counter()
        stats = cut_statistics(loaded, stats_tokens)
        stats_s = time.perf_counter() - t0
        _log(progress, f"cut statistics over {stats_tokens} tokens in {stats_s:.1f} s")
    n_cells = len(truth.cells)
    budget = int(min(budget, n_cells - max(1, int(round(holdout * n_cells)))))
    eval_at = sorted(set([min(initial, budget)] + list(range(eval_every, budget + 1, eval_every)) + [budget]))
    return _Study(table_path, model, loaded, df, transports, tables, rewards, levels, s_min, splits, lo, hi, grid,
                  truth, modulation, stats, stats_s, holdout, budget, initial, batch, beta, eval_at, kind_params or {})


def _fit_every_kind(study: _Study, spec: FeatureSpec, kinds: Sequence[str], strategies: Sequence[str],
                    seeds: Sequence[int], progress: bool) -> tuple[dict[str, Any], dict[str, Surrogate], dict[str, float]]:
    """Protocol steps 1-3 and 5 for every kind x strategy x seed: (per-model results, each kind's
    surrogate of the first strategy and seed, seconds per kind)."""
    per_model: dict[str, Any] = {}
    last_surrogates: dict[str, Surrogate] = {}
    fit_seconds: dict[str, float] = {}
    for kind in kinds:
        per_model[kind] = {}
        t_kind = time.perf_counter()
        for strategy in strategies:
            curves, runs = [], []
            for seed in seeds:
                res = study.run(kind, strategy, seed, spec)
                curves.append(res.curve)
                runs.append(res.curve[-1])
                if strategy == strategies[0] and seed == seeds[0]:
                    last_surrogates[kind] = res.surrogate
                _log(progress, f"{kind:10s} {strategy:6s} seed {seed}: n={res.real_evaluations} "
                     f"agree={res.curve[-1]['best_split_agreement']:.3f} r2={res.curve[-1]['r2_log_ppl']:.3f}")
            per_model[kind][strategy] = {"final": _agg(runs), "curve": _agg_curves(curves), "per_seed_final": runs}
        fit_seconds[kind] = time.perf_counter() - t_kind
    return per_model, last_surrogates, fit_seconds


def _default_kind(per_model: dict[str, Any], kinds: Sequence[str], strategies: Sequence[str]) -> tuple[str, str]:
    """(default kind, its strategy): best final agreement with ``active``, ties broken by R^2."""
    def key(kind):
        f = per_model[kind].get("active", per_model[kind][strategies[0]])["final"]
        return (_z(f["best_split_agreement"]["mean"]), _z(f["r2_log_ppl"]["mean"]))

    return max(kinds, key=key), "active" if "active" in strategies else strategies[0]


def _heldout_snr(study: _Study, spec: FeatureSpec, kind: str, strategy: str, seeds: Sequence[int],
                 progress: bool) -> dict[str, Any] | None:
    """Protocol step 4: re-run ``kind`` with every other interior SNR level never measured, scored
    there (``None`` when the table has no interior level). Adds the ``heldout`` decisions to the truth."""
    truth, levels, grid = study.truth, study.levels, study.grid
    interior = levels[1:-1]
    held_levels = interior[::2] if len(interior) else levels[:0]
    if not len(held_levels):
        return None
    # decisions on the 1 dB grid wherever the nearest measured level is a held-out one
    step_lv = float(np.min(np.diff(levels))) if len(levels) > 1 else 1.0
    near = np.array([g for g in grid if np.min(np.abs(levels - g)) == np.min(np.abs(held_levels - g))
                     and np.min(np.abs(held_levels - g)) < step_lv / 2])
    truth.add_decisions("heldout", near if len(near) else held_levels)
    at_held = np.isin(np.array([c[2] for c in truth.cells]), held_levels)
    pool_h = [truth.cells[i] for i in np.flatnonzero(~at_held)]
    h_runs, h_per_snr = [], []
    for seed in seeds:
        res = run_acquisition(
            table_oracle(study.tables, seed=seed), min(study.budget, len(pool_h)), strategy, candidates=pool_h,
            surrogate_factory=study.surrogate_factory(kind, spec, seed), costs_fn=study.rewards,
            initial=study.initial, batch=study.batch, seed=seed, beta=study.beta)
        agree_h, exact_h, _ = truth.agreement(truth.predicted_quality(res.surrogate.predict, "heldout"), "heldout")
        h_runs.append({"agreement": agree_h, "exact": exact_h})
        h_per_snr.append(truth.per_snr(res.surrogate, at_held))
    blind_h, blind_h_exact, _ = truth.agreement(truth.predicted_quality(lambda c: np.zeros(len(c[1])), "heldout"), "heldout")
    per_snr_mean = {k: {**h_per_snr[0][k],
                        "spearman": _nanmean(r[k]["spearman"] for r in h_per_snr),
                        "rmse_log_ppl": float(np.mean([r[k]["rmse_log_ppl"] for r in h_per_snr]))}
                    for k in h_per_snr[0]}
    out = {
        "levels_db": held_levels.tolist(), "decision_snrs_db": (near if len(near) else held_levels).tolist(),
        "kind": kind, "strategy": strategy,
        "decisions": len(truth.decisions["heldout"]), "pool_cells": len(pool_h),
        "best_split_agreement": float(np.mean([r["agreement"] for r in h_runs])),
        "best_split_agreement_std": float(np.std([r["agreement"] for r in h_runs])),
        "best_split_agreement_exact": float(np.mean([r["exact"] for r in h_runs])),
        "cost_only_agreement": blind_h, "cost_only_agreement_exact": blind_h_exact,
        "per_snr": per_snr_mean, "per_seed": h_runs,
    }
    _log(progress, f"held-out SNR levels {held_levels.tolist()}: agreement {out['best_split_agreement']:.3f} "
         f"(cost-only {blind_h:.3f})")
    return out


def _timings(study: _Study, surrogates: dict[str, Surrogate], default_kind: str, fit_seconds: dict[str, float], *,
             measure_real: bool, real_repeats: int, query_repeats: int) -> dict[str, Any]:
    """Costs: query time per 1,000 predictions and per single prediction vs one real evaluation,
    the sweep's own cell times and one surrogate-env step."""
    df, s_min, lo = study.df, study.s_min, study.lo
    qrng = np.random.default_rng(0)
    qcells = (list(qrng.choice(study.transports, 1000)), qrng.integers(s_min, study.num_layers + 1, 1000),
              qrng.uniform(lo, study.hi, 1000))
    timings: dict[str, Any] = {"query_seconds_per_1000": {}, "single_query_seconds": {}}
    for kind, sur in surrogates.items():
        sur.predict(qcells)
        timings["query_seconds_per_1000"][kind] = _median_time(lambda: sur.predict(qcells), query_repeats)
        one = [(study.transports[0], int(s_min), float(lo))]
        timings["single_query_seconds"][kind] = _median_time(lambda: sur.predict(one), 5 * query_repeats)
    timings["fit_and_evaluate_seconds"] = fit_seconds
    timings["cut_statistics_seconds"] = study.stats_s
    timings["sweep_cell_median_seconds"] = float(df["seconds"].median()) if "seconds" in df else None
    real = measure_real_step(study.loaded, study.model, study.transports[0], real_repeats) if measure_real else None
    if real is not None:
        try:
            real["load_average_1min"] = os.getloadavg()[0]
        except OSError:  # pragma: no cover
            pass
    timings["real_step"] = real
    # The sweep's own real evaluations (1,024 tokens each, timed while the sweep ran): the fastest
    # cell (few layers after the cut) is a contention-robust lower bound on a real evaluation's cost.
    timings["sweep_cell_min_seconds"] = float(df["seconds"].min()) if "seconds" in df else None
    # The surrogate env: one step (predictions for all splits at a fresh SNR each step).
    senv = SurrogateEnv(surrogates[default_kind], SplitPointConfig(model=study.model, transport=study.transports[0]),
                        view=study.loaded.view)
    senv.reset(seed=0)
    timings["surrogate_env_step_seconds"] = _median_time(lambda: senv.step(0), 20)
    return timings


def _speed_keys(timings: dict[str, Any], default_kind: str) -> dict[str, Any]:
    """The report's latency and speedup keys of the default kind (``None`` without a real step)."""
    q1000 = timings["query_seconds_per_1000"][default_kind]
    q1 = timings["single_query_seconds"][default_kind]
    real, sweep_min = timings["real_step"], timings["sweep_cell_min_seconds"]
    return {
        "single_query_latency_s": q1,
        "batched_query_latency_per_prediction_s": q1000 / 1000.0,
        "speedup": real["median_s"] / (q1000 / 1000.0) if real else None,
        "single_speedup": real["median_s"] / q1 if real else None,
        "conservative": min(real["all_s"]) / (q1000 / 1000.0) if real else None,  # fastest real step observed
        "vs_sweep": None if sweep_min is None else sweep_min / (q1000 / 1000.0),
    }


def _protocol(study: _Study, seeds: Sequence[int], tolerance: float, grid_step_db: float) -> dict[str, Any]:
    return {
        "table": str(study.table_path), "rows": int(len(study.df)), "transports": study.transports,
        "levels_db": study.levels.tolist(), "splits": [int(study.splits[0]), int(study.splits[-1])],
        "cells": study.n_cells, "holdout_fraction": study.holdout, "held_out_cells": study.n_held,
        "budget": study.budget, "initial": study.initial, "batch": study.batch, "seeds": list(seeds),
        "beta": study.beta, "tolerance": tolerance, "grid_db": [study.lo, study.hi, grid_step_db],
        "eval_at": study.eval_at, "reward": "default RewardConfig, analytic costs (SplitPointTableEnv.costs_at)",
        "description": __doc__.split("Protocol (`surrogate_report`)", 1)[1].split("Costs:", 1)[0].strip(),
    }


def _assemble(study: _Study, spec: FeatureSpec, *, kinds: Sequence[str], seeds: Sequence[int], tolerance: float,
              grid_step_db: float, per_model: dict[str, Any], default_kind: str, strategy: str,
              heldout: dict[str, Any] | None, per_snr: dict[str, Any], baselines: dict[str, Any],
              ablation: dict[str, Any] | None, detail: list, timings: dict[str, Any], t_start: float) -> dict[str, Any]:
    """The report's keys, in its order (before provenance and `_clean`)."""
    head = per_model[default_kind][strategy]["final"]
    speed = _speed_keys(timings, default_kind)
    return {
        "heldout_best_split_agreement": None if heldout is None else heldout["best_split_agreement"],
        "cost_only_agreement": None if heldout is None else heldout["cost_only_agreement"],
        "heldout_levels_db": None if heldout is None else heldout["levels_db"],
        "heldout_snr": heldout,
        "per_snr": per_snr,
        "single_query_latency_s": speed["single_query_latency_s"],
        "batched_query_latency_per_prediction_s": speed["batched_query_latency_per_prediction_s"],
        "best_split_agreement": head["best_split_agreement"]["mean"],
        "best_split_agreement_std": head["best_split_agreement"]["std"],
        "best_split_agreement_exact": head["best_split_agreement_exact"]["mean"],
        "best_split_agreement_levels": head["best_split_agreement_levels"]["mean"],
        "r2_log_ppl": head["r2_log_ppl"]["mean"],
        "r2_log_ppl_std": head["r2_log_ppl"]["std"],
        "spearman_per_snr": head["spearman_per_snr"]["mean"],
        "spearman_per_snr_nonflat": head["spearman_per_snr_nonflat"]["mean"],
        "spearman_grid": head["spearman_grid"]["mean"],
        "real_evaluations": study.budget,
        "query_speedup_vs_real": speed["speedup"],
        "single_query_speedup_vs_real": speed["single_speedup"],
        "query_speedup_vs_fastest_real": speed["conservative"],
        "query_speedup_vs_fastest_sweep_cell": speed["vs_sweep"],
        "default_kind": default_kind,
        "strategy": strategy,
        "targets": {
            "best_split_agreement": TARGET_AGREEMENT, "query_speedup_vs_real": TARGET_SPEEDUP,
            "agreement_met": bool(head["best_split_agreement"]["mean"] >= TARGET_AGREEMENT),
            "speedup_met": None if speed["speedup"] is None else bool(speed["speedup"] >= TARGET_SPEEDUP),
        },
        "per_model": per_model,
        "baselines": baselines,
        "feature_ablation": ablation,
        "decisions_default_kind_seed0": detail,
        "timings": timings,
        "protocol": _protocol(study, seeds, tolerance, grid_step_db),
        "feature_names": spec.feature_names,
        "cut_stats": study.stats,
        "kinds": {k: {"params": {**SURROGATE_KINDS[k].DEFAULTS, **study.kind_params.get(k, {})}} for k in kinds},
        "runtime_s": time.perf_counter() - t_start,
    }


def surrogate_report(
    table_path: str | Path,
    *,
    model: str = "smollm2-135m",
    loaded=None,
    kinds: Sequence[str] = tuple(SURROGATE_KINDS),
    strategies: Sequence[str] = STRATEGIES,
    budget: int = 200,
    initial: int = 20,
    batch: int = 10,
    holdout: float = 0.3,
    seeds: Sequence[int] = (0, 1, 2),
    beta: float = 2.0,
    tolerance: float = 0.01,
    grid_step_db: float = 1.0,
    eval_every: int = 20,
    use_cut_stats: bool = True,
    stats_tokens: int = 256,
    ablation: bool = True,
    measure_real: bool = True,
    real_repeats: int = 5,
    query_repeats: int = 7,
    kind_params: dict[str, dict] | None = None,
    out_json: str | Path | None = None,
    out_png: str | Path | None = None,
    out_md: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the protocol of the module docstring on a sweep table; return (and optionally write) the report.

    ``loaded`` is the model (`splitrl.models.load_model(model)` if None): its shape feeds the cost
    model, its clean activations the cut statistics, and it runs the real-evaluation timing.
    """
    t_start = time.perf_counter()
    table_path = Path(table_path)
    _check_arguments(kinds, strategies, budget, initial, batch, holdout)
    study = _open_study(table_path, model=model, loaded=loaded, holdout=holdout, tolerance=tolerance,
                        grid_step_db=grid_step_db, use_cut_stats=use_cut_stats, stats_tokens=stats_tokens,
                        budget=budget, initial=initial, batch=batch, beta=beta, eval_every=eval_every,
                        kind_params=kind_params, progress=progress)
    spec = study.spec(True)
    per_model, surrogates, fit_seconds = _fit_every_kind(study, spec, kinds, strategies, seeds, progress)
    default_kind, strategy = _default_kind(per_model, kinds, strategies)
    # The order below is the measurement order (the held-out run adds its decisions to the truth first).
    heldout = _heldout_snr(study, spec, default_kind, strategy, seeds, progress)
    truth, best = study.truth, surrogates[default_kind]
    # Spearman / RMSE per level on the random held-out cells (seed 0's holdout, default kind).
    per_snr = truth.per_snr(best, study.held_out(seeds[0]))
    # Baselines: quality-blind (costs only) and the table itself on the decision grid.
    blind, blind_exact, _ = truth.agreement(truth.predicted_quality(lambda c: np.zeros(len(c[1]))), "grid")
    baselines = {"costs_only_agreement": blind, "costs_only_agreement_exact": blind_exact,
                 "decisions": len(truth.decisions["grid"])}
    _, _, detail = truth.agreement(truth.predicted_quality(best.predict), "grid")
    ablation_out = None
    if ablation and use_cut_stats and study.stats:
        runs = [study.run(default_kind, strategy, seed, study.spec(False)).curve[-1] for seed in seeds]
        ablation_out = {"kind": default_kind, "strategy": strategy, "without_cut_stats": _agg(runs),
                        "with_cut_stats": per_model[default_kind][strategy]["final"]}
        _log(progress, f"ablation without cut stats: agree={ablation_out['without_cut_stats']['best_split_agreement']['mean']:.3f}")
    timings = _timings(study, surrogates, default_kind, fit_seconds, measure_real=measure_real,
                       real_repeats=real_repeats, query_repeats=query_repeats)
    report = _assemble(study, spec, kinds=kinds, seeds=seeds, tolerance=tolerance, grid_step_db=grid_step_db,
                       per_model=per_model, default_kind=default_kind, strategy=strategy, heldout=heldout,
                       per_snr=per_snr, baselines=baselines, ablation=ablation_out, detail=detail, timings=timings,
                       t_start=t_start)

    report = _clean({**run_record(), **report})
    if out_json:
        Path(out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(out_json).write_text(json.dumps(report, indent=1))
    if out_png:
        plot_report(report, out_png)
    if out_md:
        Path(out_md).write_text(markdown_table(report))
    return report


def _z(x) -> float:
    return -1.0 if x is None or x != x else float(x)


def _agg(runs: list[dict]) -> dict[str, dict[str, float]]:
    out = {}
    for m in METRICS:
        v = np.array([r[m] for r in runs], dtype=float)
        ok = v[~np.isnan(v)]
        out[m] = {"mean": float(ok.mean()) if len(ok) else float("nan"), "std": float(ok.std()) if len(ok) else float("nan")}
    return out


def _agg_curves(curves: list[list[dict]]) -> list[dict]:
    ns = sorted(set.intersection(*[set(p["n"] for p in c) for c in curves]))
    out = []
    for n in ns:
        pts = [next(p for p in c if p["n"] == n) for c in curves]
        row = {"n": n}
        for m, v in _agg(pts).items():
            row[m] = v["mean"]
            row[m + "_std"] = v["std"]
        out.append(row)
    return out


def _clean(x):
    """NaN -> None so the JSON is standard."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def markdown_table(report: dict) -> str:
    """Final metrics per kind and strategy, and the agreement learning curves, as Markdown."""
    def f(v, fmt="{:.3f}"):
        return "—" if v is None else fmt.format(v)

    p = report["protocol"]
    lines = [f"Surrogate report on `{p['table']}` ({p['cells']} cells, {p['held_out_cells']} held out; "
             f"{p['budget']} real evaluations; seeds {p['seeds']}; mean ± std over seeds)", "",
             "| kind | strategy | best-split agreement | exact | R² log ppl (held out) | Spearman per SNR | "
             "Spearman, non-flat SNRs | RMSE |",
             "|---|---|---|---|---|---|---|---|"]
    for kind, by in report["per_model"].items():
        for strat, d in by.items():
            fi = d["final"]
            lines.append(f"| {kind}{' (default)' if kind == report['default_kind'] else ''} | {strat} | "
                         f"{f(fi['best_split_agreement']['mean'])} ± {f(fi['best_split_agreement']['std'])} | "
                         f"{f(fi['best_split_agreement_exact']['mean'])} | {f(fi['r2_log_ppl']['mean'])} ± {f(fi['r2_log_ppl']['std'])} | "
                         f"{f(fi['spearman_per_snr']['mean'])} | {f(fi['spearman_per_snr_nonflat']['mean'])} | "
                         f"{f(fi['rmse_log_ppl']['mean'])} |")
    ns = [c["n"] for c in next(iter(next(iter(report["per_model"].values())).values()))["curve"]]
    lines += ["", "Best-split agreement vs real evaluations (mean over seeds):", "",
              "| kind | strategy | " + " | ".join(f"n={n}" for n in ns) + " |", "|---|---|" + "---|" * len(ns)]
    for kind, by in report["per_model"].items():
        for strat, d in by.items():
            lines.append(f"| {kind} | {strat} | " + " | ".join(f(c["best_split_agreement"], "{:.2f}") for c in d["curve"]) + " |")
    t = report["timings"]
    real = t.get("real_step") or {}
    lines += ["", f"Costs-only baseline (quality ignored) agreement: {f(report['baselines']['costs_only_agreement'])} "
              f"over {report['baselines']['decisions']} decisions."]
    ab = report.get("feature_ablation")
    if ab:
        w, wo = ab["with_cut_stats"], ab["without_cut_stats"]
        lines.append(f"Cut-statistics ablation ({ab['kind']}, {ab['strategy']}): agreement {f(w['best_split_agreement']['mean'])} with, "
                     f"{f(wo['best_split_agreement']['mean'])} without; R² {f(w['r2_log_ppl']['mean'])} with, "
                     f"{f(wo['r2_log_ppl']['mean'])} without.")
    lines += [f"Query: {f(t['query_seconds_per_1000'][report['default_kind']] * 1e3, '{:.2f}')} ms per 1,000 predictions "
              f"({report['default_kind']}); one real evaluation (SplitPointEnv step, median of {real.get('repeats', 0)}): "
              f"{f(real.get('median_s'), '{:.3f}')} s → speedup {f(report['query_speedup_vs_real'], '{:.3g}')}× "
              f"(vs the fastest real step {f(report.get('query_speedup_vs_fastest_real'), '{:.3g}')}×; vs the fastest "
              f"sweep cell, {f(t.get('sweep_cell_min_seconds'), '{:.2f}')} s: "
              f"{f(report.get('query_speedup_vs_fastest_sweep_cell'), '{:.3g}')}×; one-cell predict call "
              f"{f(t['single_query_seconds'][report['default_kind']] * 1e3, '{:.2f}')} ms → "
              f"{f(report['single_query_speedup_vs_real'], '{:.3g}')}×). Real steps timed at 1-min load average "
              f"{f(real.get('load_average_1min'), '{:.1f}')} on {_cpus()} CPUs.", ""]
    h = report.get("heldout_snr")
    if h:
        lines += ["## Held-out SNR levels (never measured while fitting)", "",
                  f"Levels {h['levels_db']} dB held out ({h['kind']}, {h['strategy']}, {h['pool_cells']} pool cells): "
                  f"best-split agreement **{f(h['best_split_agreement'])}** ± {f(h['best_split_agreement_std'])} "
                  f"(exact {f(h['best_split_agreement_exact'])}) vs cost-only (no quality model) "
                  f"**{f(h['cost_only_agreement'])}** over {h['decisions']} decisions.", "",
                  "| transport @ SNR | splits | Spearman | RMSE log ppl | truth span |", "|---|---:|---:|---:|---:|"]
        for k, v in h["per_snr"].items():
            lines.append(f"| {k} | {v['splits']} | {f(v['spearman'])} | {f(v['rmse_log_ppl'])} | {f(v['truth_span_log_ppl'])} |")
        lines.append("")
    if report.get("per_snr"):
        lines += ["## Per SNR on the held-out cells (seed 0's random holdout, default kind)", "",
                  "| transport @ SNR | held-out splits | Spearman | RMSE log ppl | truth span |", "|---|---:|---:|---:|---:|"]
        for k, v in report["per_snr"].items():
            lines.append(f"| {k} | {v['splits']} | {f(v['spearman'])} | {f(v['rmse_log_ppl'])} | {f(v['truth_span_log_ppl'])} |")
        lines.append("")
    lines.append(f"Single-query latency {f(report.get('single_query_latency_s', 0) * 1e3, '{:.2f}')} ms (one cell, one call) "
                 f"vs {f(report.get('batched_query_latency_per_prediction_s', 0) * 1e6, '{:.1f}')} µs per prediction batched "
                 "(1,000 cells per call): the batched speedup is not the latency of one decision.")
    return "\n".join(lines) + "\n"


def _cpus() -> int:
    import os

    return os.cpu_count() or 1


def plot_report(report: dict, out: str | Path) -> Path:
    """Learning curves (metric vs real evaluations), active solid vs random dashed, one colour per kind."""
    plt = pyplot()

    panels = [("best_split_agreement", "best-split agreement"), ("r2_log_ppl", "R² of log ppl ratio (held out)"),
              ("spearman_per_snr", "Spearman over splits per SNR (held out)")]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ci, (kind, by) in enumerate(report["per_model"].items()):
        for strat, d in by.items():
            c = d["curve"]
            n = [p["n"] for p in c]
            for ax, (m, _) in zip(axes, panels):
                mu = np.array([np.nan if p[m] is None else p[m] for p in c], float)
                sd = np.array([0.0 if p[m + "_std"] is None else p[m + "_std"] for p in c], float)
                ls = "-" if strat == "active" else "--"
                ax.plot(n, mu, ls, color=colours[ci % len(colours)], lw=2 if kind == report["default_kind"] else 1.2,
                        label=f"{kind} {strat}", marker="o" if strat == "active" else None, ms=3)
                if kind == report["default_kind"]:
                    ax.fill_between(n, mu - sd, mu + sd, color=colours[ci % len(colours)], alpha=0.12)
    axes[0].axhline(TARGET_AGREEMENT, color="k", lw=0.8, ls=":", label="target 0.90")
    axes[0].axhline(report["baselines"]["costs_only_agreement"], color="grey", lw=0.8, ls="-.", label="costs only")
    for ax, (_, title) in zip(axes, panels):
        ax.set_xlabel("real evaluations (one seed of one cell each)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[1].set_ylim(bottom=max(-0.5, axes[1].get_ylim()[0]))
    axes[0].legend(fontsize=7, ncol=2, loc="lower right")
    p = report["protocol"]
    fig.suptitle(f"Quality surrogate learning curves: active (solid) vs random (dashed); {p['held_out_cells']} of "
                 f"{p['cells']} cells held out; mean over seeds {p['seeds']} (band: ±1 std, default kind)")
    out = Path(out)
    save_figure(fig, out, dpi=120)
    return out
