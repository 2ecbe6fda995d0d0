"""``splitrl surrogate-report``: fit quality surrogates on a sweep table and report accuracy and speed
(`splitrl.surrogate.report` holds the protocol)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from splitrl.cli._common import set_threads
from splitrl.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``splitrl surrogate-report``."""
    # lazy: --help and argument errors must not import torch
    from splitrl.surrogate.acquisition import STRATEGIES
    from splitrl.surrogate.base import SURROGATE_KINDS
    from splitrl.resources import results_dir

    p.add_argument("table", nargs="?", default=None, help="sweep CSV (default: the committed SmolLM2 sweep, "
                   "splitrl/data/sweep_smollm2.csv)")
    p.add_argument("--model", default="smollm2-135m", help="model the sweep was measured on (costs, cut statistics, timing)")
    p.add_argument("--kinds", default=",".join(SURROGATE_KINDS), help=f"comma-separated surrogate kinds ({', '.join(SURROGATE_KINDS)})")
    p.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated: active, random")
    p.add_argument("--budget", type=int, default=200, help="real evaluations per run")
    p.add_argument("--initial", type=int, default=20, help="initial random evaluations")
    p.add_argument("--batch", type=int, default=10, help="evaluations chosen per acquisition round")
    p.add_argument("--holdout", type=float, default=0.3, help="fraction of cells held out from fitting")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (holdout, draws, models)")
    p.add_argument("--no-real", action="store_true", help="skip timing a real SplitPointEnv step")
    p.add_argument("--real-repeats", type=int, default=7, help="timed real SplitPointEnv steps (median kept)")
    p.add_argument("--no-ablation", action="store_true", help="skip the without-cut-statistics ablation")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", default=str(results_dir() / "surrogate_report.json"), help="report JSON (PNG and .md beside it)")
    p.add_argument("--json", action="store_true", help="print the report JSON")



def run(args: argparse.Namespace) -> int:
    """Handler of ``splitrl surrogate-report``; 0 on success, 2 with one line on stderr for bad input."""
    # lazy: --help and argument errors must not import torch
    from splitrl.decision.tables import DEFAULT_TABLE
    from splitrl.surrogate import report as rp

    try:
        try:
            seeds = [int(x) for x in str(args.seeds).split(",") if x.strip()]
        except ValueError:
            raise UsageError(f"--seeds must be comma-separated integers, got {str(args.seeds)[:40]!r}") from None
        if not seeds:
            raise UsageError("--seeds names no seed")
        kinds = [k for k in str(args.kinds).split(",") if k]
        strategies = [s for s in str(args.strategies).split(",") if s]
        if getattr(args, "threads", None):
            set_threads(int(args.threads))
        out = Path(args.out)
        report = rp.surrogate_report(
            args.table or DEFAULT_TABLE, model=args.model, kinds=kinds, strategies=strategies, budget=args.budget, initial=args.initial,
            batch=args.batch, holdout=args.holdout, seeds=seeds, measure_real=not args.no_real,
            real_repeats=args.real_repeats,
            ablation=not args.no_ablation, out_json=out, out_png=out.with_suffix(".png"), out_md=out.with_suffix(".md"),
            progress=not args.json)
    except (ValueError, FileNotFoundError) as e:
        print(f"splitrl surrogate-report: error: {' '.join(str(e).split())[:500]}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report))
    else:
        print(rp.markdown_table(report))
        print(f"wrote {out}, {out.with_suffix('.png')}, {out.with_suffix('.md')}")
    return 0

