"""``splitrl sweep-merge``: append a shard of the same sweep (run in another process) to a sweep table."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="the sweep table to complete (appended to)")
    p.add_argument("--from", dest="src", required=True, help="a shard of the same sweep (e.g. other --splits)")


def run(args: argparse.Namespace) -> int:
    # lazy: --help and argument errors must not import torch
    from splitrl.sweep import merge_tables

    n = merge_tables(args.out, args.src)
    print(f"sweep-merge: {n} rows from {args.src} appended to {args.out}")
    return 0
