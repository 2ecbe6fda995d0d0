"""``splitrl info``: layers, sizes, per-layer FLOPs and bytes at each cut of a model."""
from __future__ import annotations

import argparse
import json

from splitrl.cli import _common as c


def add_arguments(p: argparse.ArgumentParser) -> None:
    c.model_args(p)
    p.add_argument("--context", type=int, default=128, help="context length for per-token FLOPs")


def run(args: argparse.Namespace) -> int:
    loaded = c.load(args)
    summary = loaded.view.summary(context_length=args.context)
    summary["source"] = loaded.source
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{loaded.name}  ({summary['model_type']}, {summary['family']} family)  from {loaded.source}")
    print(f"layers {summary['num_layers']}  hidden {summary['hidden_size']}  vocab {summary['vocab_size']}  "
          f"params {summary['params_total']:,d}  head {summary['head_flops_per_token'] / 1e6:.1f} MFLOP/token")
    print(f"{'layer':>5} {'params':>12} {f'MFLOP/tok@{args.context}':>16} {'bytes/tok at cut after':>24}")
    for row in summary["layers"]:
        print(f"{row['index']:>5} {row['params']:>12,d} {row['flops_per_token'] / 1e6:>16.2f} {row['bytes_per_token_at_cut_after']:>24,d}")
    print(f"cut 0 sends token ids ({summary['bytes_per_token_at_cut'][0]} B/token); cut {summary['num_layers']} sends nothing")
    return 0
