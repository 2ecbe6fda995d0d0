"""The measured quality tables of the split-point MDP and the table env's precomputed state figures.

`SweepTable` reads a sweep CSV (`splitrl sweep`) as log(ppl / ppl_clean)[split, SNR level, seed]
for one transport and UE precision; `StateTables` caches, per SNR bin, every per-state figure a
table-env step reads (the fast path). `DEFAULT_TABLE` is the committed SmolLM2 sweep.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from splitrl.decision.observation import SNR_BOUNDS_DB
from splitrl.errors import UsageError
from splitrl.resources import resource_path
from splitrl.quant.precision import PRECISIONS, check_precision

if TYPE_CHECKING:  # the problem holds the tables: a type-only reference, no import cycle
    from splitrl.decision.problem import SplitProblem

__all__ = ["DEFAULT_TABLE", "SweepTable", "StateTables", "table_key"]

DEFAULT_TABLE = resource_path("sweep_smollm2.csv")


def table_key(transport: str, precision: str | None) -> str | tuple[str, str]:
    """Key of a `SweepTable` in an env's ``tables``: the transport alone for fp32 (or no precision,
    the tables before precisions existed), else (transport, precision)."""
    return transport if precision in (None, "fp32") else (transport, precision)


class SweepTable:
    """A sweep CSV as arrays: log(ppl/ppl_clean)[split, level, seed] for one transport and UE precision.

    ``precision`` selects the rows whose ``ue_precision`` column is that precision; a table without
    the column is all ``fp32`` (the sweep before precisions existed). fp32 reads the sweep's own
    ``log_ppl_ratio``. Any other precision is scored against the **fp32** model's clean perplexity
    (the ``clean_ppl`` of the table's fp32 rows of the same model): its cells are
    ``log(ppl / ppl_clean_fp32)``, so a lower precision's own loss shows in the reward, and
    ``ppl_clean`` is that fp32 reference. A table lacking the precision is a `UsageError` naming it.
    """

    def __init__(self, path: str | Path, transport: str, splits: np.ndarray, *, model: str | None = None,
                 precision: str = "fp32") -> None:
        import pandas as pd  # lazy: pandas costs ~0.5 s to import and only a table env reads a CSV

        precision = check_precision(precision, "ue_precision")
        self.precision = precision

        path = Path(path)
        name = str(model or "MODEL")
        todo = (f"run `splitrl sweep --model {name} --splits all --transports {transport} --levels=-15:30:5 "
                f"--tokens 256 --window 256 --out sweep_{Path(name).stem}.csv` first, then pass --set env.table=sweep_{Path(name).stem}.csv")
        if not path.is_file():
            raise UsageError(f"sweep table {path} not found: {todo}")
        try:
            df = pd.read_csv(path)
        except (ValueError, UnicodeDecodeError, OSError) as e:
            raise UsageError(f"sweep table {path} is not a readable CSV ({type(e).__name__})") from None
        needed = {"model", "transport", "level_kind", "level", "split", "seed_index", "clean_ppl", "log_ppl_ratio"}
        if df.empty or needed - set(df.columns):
            raise UsageError(f"{path} is not a sweep table written by `splitrl sweep` (needs columns {sorted(needed)})")
        if model is not None and not (df.model.astype(str) == str(model)).all():
            raise UsageError(f"sweep table {path} was measured with model {sorted(set(df.model.astype(str)))[:3]}, "
                             f"not {model!r}: {todo}")
        prec_col = df["ue_precision"].astype(str) if "ue_precision" in df.columns else pd.Series("fp32", index=df.index)
        bad = sorted(set(prec_col) - set(PRECISIONS))
        if bad:
            raise UsageError(f"{path}: ue_precision values {bad[:4]} are not precisions ({', '.join(PRECISIONS)})")
        fp32_rows = df[prec_col == "fp32"]
        df = df[(df.transport == transport) & (prec_col == precision)]
        if df.empty:
            if precision != "fp32":
                have = sorted(set(prec_col))
                raise UsageError(f"{path} has no rows for UE precision {precision!r} (transport {transport!r}; the "
                                 f"table has ue_precision {', '.join(have)}): run the sweep at ue_precision "
                                 f"{precision} (issue 19) or drop {precision!r} from ue_precisions")
            raise UsageError(f"{path} has no rows for transport {transport!r}: {todo}")
        if (df.level_kind != "snr").any():
            raise UsageError(f"{path}: the table env needs an SNR sweep, found level_kind {set(df.level_kind)}")
        self.levels = np.sort(df.level.unique()).astype(float)
        self.seeds = int(df.seed_index.max()) + 1
        missing = sorted(set(splits.tolist()) - set(df.split.unique().tolist()))
        if missing:
            raise UsageError(f"{path} lacks splits {missing[:8]} for transport {transport!r} (a partial sweep): "
                             f"{todo} (a resumed sweep completes the table)")
        if int(df.split.max()) > int(splits.max()) or (df.split < 0).any() or (df.seed_index < 0).any():
            raise UsageError(f"{path} has split points outside 0..{int(splits.max())}: it is for another model")
        if not np.isfinite(df.log_ppl_ratio.to_numpy(float)).all():
            raise UsageError(f"{path} has non-finite log_ppl_ratio cells (NaN perplexities); re-run those cells")
        if precision == "fp32":
            self.ppl_clean = float(df.clean_ppl.iloc[0])
            cells = df.log_ppl_ratio.to_numpy(float)
        else:  # scored against the fp32 model (see the class docstring)
            if "ppl" not in df.columns:
                raise UsageError(f"{path} has no ppl column: UE precision {precision!r} is scored from it")
            if fp32_rows.empty:
                raise UsageError(f"{path} has UE precision {precision!r} rows but no fp32 rows: the fp32 model's clean "
                                 f"perplexity is the reference every precision is scored against")
            self.ppl_clean = float(fp32_rows.clean_ppl.iloc[0])
            with np.errstate(divide="ignore", invalid="ignore"):
                cells = np.log(df.ppl.to_numpy(float)) - math.log(self.ppl_clean)
            if not np.isfinite(cells).all():
                raise UsageError(f"{path} has non-finite perplexities for UE precision {precision!r}; re-run those cells")
        self.log_ratio = np.full((int(splits.max()) + 1, len(self.levels), self.seeds), np.nan)
        li = np.searchsorted(self.levels, df.level.to_numpy(float))
        self.log_ratio[df.split.to_numpy(int), li, df.seed_index.to_numpy(int)] = cells
        sub = self.log_ratio[splits]
        if np.isnan(sub).any():
            raise UsageError(f"{path} is incomplete for transport {transport!r}"
                             + ("" if precision == "fp32" else f" at UE precision {precision!r}")
                             + f": {int(np.isnan(sub).sum())} cells missing "
                             f"(a partial sweep): {todo} (a resumed sweep completes the table)")
        self.path = path

    def lookup(self, split: int, snr_db: float, seed_index: int | None = None) -> float:
        """Log ppl ratio at ``split`` and ``snr_db`` (linear in SNR between measured levels, clipped
        to the measured range); one measured seed, or the mean over seeds when ``seed_index`` is None."""
        snr = float(np.clip(snr_db, self.levels[0], self.levels[-1]))
        hi = int(np.clip(np.searchsorted(self.levels, snr), 1, len(self.levels) - 1))
        lo = hi - 1
        w = (snr - self.levels[lo]) / (self.levels[hi] - self.levels[lo])
        row = self.log_ratio[split]
        vals = row[:, seed_index] if seed_index is not None else row.mean(axis=1)
        return float((1 - w) * vals[lo] + w * vals[hi])

    def mean_table(self, snr_db: float, splits: np.ndarray) -> np.ndarray:
        return np.array([self.lookup(int(s), snr_db) for s in splits])


class _Bin:
    """Figures of one SNR bin for one transport: per edge-load level ``e`` and split ``s``."""

    __slots__ = ("lat", "energy", "ttft", "tpot", "ue_energy", "ue_extra", "q", "ppl_q")

    def __init__(self, lat, energy, ttft, tpot, ue_energy, ue_extra, q) -> None:
        self.lat, self.energy, self.ttft, self.tpot = lat, energy, ttft, tpot  # [E, L+1] python lists
        self.ue_energy, self.ue_extra, self.q = ue_energy, ue_extra, q  # [E, L+1], [L+1], [L+1][seeds]


class StateTables:
    """The table env's per-state figures, precomputed lazily per SNR bin (shared by vector envs).

    Keyed by (transport, SNR bin of ``snr_resolution_db`` over `SNR_BOUNDS_DB`); each bin holds,
    for every edge-load level of the Markov chain and every split, exactly what the slow path
    computes at that state (`RequestCostService.request_latency` without the UE-load term, the
    energy per token, TTFT/TPOT, the request's UE energy, the UE part the load stretches) and the
    sweep table's log-ppl ratio of every measured seed. Figures are plain Python lists: a step
    reads a handful of scalars.
    """

    def __init__(self, problem: "SplitProblem") -> None:
        c = problem.config
        self.res = float(c.snr_resolution_db)
        self.lo = SNR_BOUNDS_DB[0]
        self.costs, self.L = problem.costs, problem.L
        self.problem = problem
        levels = problem.edge_process.levels if problem.edge_process is not None else None
        self.levels = [None] if levels is None else [float(x) for x in levels]
        self.new_tokens = c.new_tokens
        self._bins: dict[tuple[int, int], _Bin] = {}

    def snr_of(self, i: int) -> float:
        return round(self.lo / self.res + i) * self.res

    def index(self, snr_db: float) -> int:
        return int(round(snr_db / self.res - self.lo / self.res))

    def get(self, t: int, transport: str, i: int, precision: str | None = None) -> _Bin:
        """The bin of SNR index ``i`` for action option ``t`` (its ``transport`` and UE ``precision``)."""
        b = self._bins.get((t, i))
        if b is None:
            b = self._bins[(t, i)] = self._fill(transport, i, precision)
        return b

    def _fill(self, transport: str, i: int, precision: str | None = None) -> _Bin:
        snr = self.snr_of(i)
        svc = self.costs
        lat, energy, ttft, tpot, ue_e = [], [], [], [], []
        for el in self.levels:
            tab = svc.costs_at(snr, edge_load=el, transport=transport, precision=precision)
            lat.append(svc.request_latency(snr, None, edge_load=el, transport=transport, precision=precision).tolist())
            energy.append(np.asarray(tab.ue_energy_j_per_token, dtype=float).tolist())
            ttft.append(tab.ttft_s.tolist())
            tpot.append(tab.tpot_s.tolist())
            ue_e.append(tab.ue_energy_j.tolist())
        t0 = svc.costs_at(snr, transport=transport, precision=precision)
        field = svc.latency_field
        extra = {"ttft_s": t0.ue_prefill_s, "tpot_s": t0.ue_decode_s,
                 "e2e_latency_s": t0.ue_prefill_s + t0.ue_decode_s * max(0, self.new_tokens - 1)}[field]
        table = self.problem.sweep_table(transport, precision)
        x = float(np.clip(snr, table.levels[0], table.levels[-1]))
        hi = int(np.clip(np.searchsorted(table.levels, x), 1, len(table.levels) - 1))
        lo = hi - 1
        w = (x - table.levels[lo]) / (table.levels[hi] - table.levels[lo])
        q = np.zeros((self.L + 1, table.seeds))
        rows = ~np.isnan(table.log_ratio[:, lo, 0])
        q[rows] = (1 - w) * table.log_ratio[rows, lo, :] + w * table.log_ratio[rows, hi, :]
        return _Bin(lat, energy, ttft, tpot, ue_e, np.asarray(extra, dtype=float).tolist(), q.tolist())
