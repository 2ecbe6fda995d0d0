"""``splitrl plot``: a sweep table as perplexity-vs-SNR lines per split, latency/energy heatmaps,
the best-split map and a printed table."""
from __future__ import annotations

import argparse
import math
import os

from splitrl.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("table", help="sweep CSV written by `splitrl sweep`")
    p.add_argument("--out", default=None, help="PNG path (default: next to the table, .png)")
    p.add_argument("--tolerance", type=float, default=0.05,
                   help="best split = lowest emulated latency among splits within this fraction of clean perplexity")


def run(args: argparse.Namespace) -> int:
    # lazy: --help and argument errors must not import torch
    from splitrl.sweep import best_splits, plot_sweep, read_sweep_table, record_plot, table_text

    if not (math.isfinite(args.tolerance) and args.tolerance >= 0):
        raise UsageError(f"--tolerance must be a finite fraction >= 0, got {args.tolerance}")
    if args.out is not None and os.path.isdir(args.out):
        raise UsageError(f"--out {args.out} is a folder; give a .png path")
    df = read_sweep_table(args.table)
    try:
        png = plot_sweep(args.table, args.out, tolerance=args.tolerance)
    except (ValueError, KeyError) as e:
        raise UsageError(f"{args.table}: {' '.join(str(e).split())[:300]}")
    record_plot(args.table, png)  # the sidecar names the command that drew the committed PNG
    print(table_text(df))
    if str(df["level_kind"].iloc[0]) == "snr" and "emulated_e2e_latency_s" in df:
        best = best_splits(df, args.tolerance)
        print(f"\nbest split per SNR (lowest emulated latency within {args.tolerance:.0%} of clean perplexity):")
        for t, b in best.groupby("transport"):
            print(f"  {t}: " + ", ".join(f"{lv:g} dB -> {'none' if sp is None or sp != sp else int(sp)}"
                                         for lv, sp in zip(b.level, b.split)))
    print(f"\nplot: {png}")
    return 0
