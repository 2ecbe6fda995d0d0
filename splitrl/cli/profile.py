"""``splitrl profile``: time each layer on this machine, fit its FLOP/s and write a UE profile YAML.

`run` returns 0 on success, 2 with one line on stderr for a bad argument or model.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from splitrl.cli._common import DEFAULT_MODEL, NAMED_MODELS
from splitrl.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``splitrl profile``."""
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"model to time ({', '.join(NAMED_MODELS)}, local HF directory, .gguf file, or hub id)")
    p.add_argument("--cache-dir", default=None, help="cache for dequantised GGUF models (default $SPLITRL_CACHE or ~/.cache/splitrl)")
    p.add_argument("--contexts", default="64,128,256", help="comma-separated prefill lengths to time")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (median kept)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls before each measurement")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads during the measurement (default: torch's)")
    p.add_argument("--out", default="this-machine.yaml", help="where to write the UE profile YAML")
    p.add_argument("--name", default="this-machine", help="profile name written into the YAML")
    p.add_argument("--power-like", default="phone-midrange",
                   help="UE profile whose power/radio figures are copied (they cannot be measured here)")
    p.add_argument("--no-bandwidth", action="store_true", help="skip the memory-bandwidth measurement")
    p.add_argument("--precisions", default="fp32",
                   help="weight precisions to measure rates for (comma-separated, e.g. fp32,bf16,int8,int4): writes "
                        "precision_rates, each precision's prefill and decode speed relative to fp32 with the real kernels")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--min-r2", type=float, default=0.9, help="refuse to write the profile below this fit R^2")
    p.add_argument("--max-residual", type=float, default=0.25,
                   help="warn above this median relative residual of the fit")
    p.add_argument("--accept-poor-fit", action="store_true", help="write the profile even when the fit is poor (warns)")


def _parse_contexts(text: str) -> list[int]:
    try:
        ctxs = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--contexts must be comma-separated integers >= 1, got {text!r}") from None
    if not ctxs or any(c < 1 for c in ctxs):
        raise UsageError(f"--contexts must be comma-separated integers >= 1, got {text!r}")
    return ctxs


def run(args: argparse.Namespace) -> int:
    """Handler of ``splitrl profile``; returns the exit code."""
    # lazy: --help and argument errors must not import torch
    from splitrl.cost.measure import fit_quality, measure_layer_times, measure_precision_rates
    from splitrl.cost.profiles import load_profile
    from splitrl.models import ModelNotFoundError, UnsupportedModelError, load_model

    try:
        ctxs = _parse_contexts(args.contexts)
        if args.repeats < 1:
            raise UsageError(f"--repeats must be >= 1, got {args.repeats}")
        if args.threads is not None and args.threads < 1:
            raise UsageError(f"--threads must be >= 1, got {args.threads}")
        power_like = load_profile("ue", args.power_like)
        if Path(args.out).is_dir():
            raise UsageError(f"--out {args.out} is a folder; give a .yaml file path")
        if not 0 <= args.min_r2 <= 1 or not 0 < args.max_residual:
            raise UsageError("--min-r2 must be in [0, 1] and --max-residual > 0")
        loaded = load_model(args.model, cache_dir=args.cache_dir)
        result = measure_layer_times(
            loaded, ctxs, args.repeats, warmup=args.warmup, threads=args.threads,
            measure_bandwidth=not args.no_bandwidth, out=None, name=args.name, power_like=power_like,
            progress=not args.json,
        )
        rates = None
        precisions = [x.strip() for x in args.precisions.split(",") if x.strip()]
        if any(x != "fp32" for x in precisions):
            rates = measure_precision_rates(loaded, precisions, repeats=args.repeats, warmup=args.warmup,
                                            threads=args.threads)
            result.precision_rates = rates
        fit = fit_quality(result)
        poor = fit["r2"] < args.min_r2
        if poor and not args.accept_poor_fit:
            raise UsageError(
                f"poor fit (R^2 {fit['r2']:.3f} < --min-r2 {args.min_r2}; median |residual| "
                f"{fit['median_abs_rel_residual']:.0%}, worst {fit['max_abs_rel_residual']:.0%}): the timings do not "
                f"follow overhead + FLOPs/rate, so {args.out} was NOT written. Re-run on an idle machine with more "
                "--repeats and --threads 1, or pass --accept-poor-fit")
        result.write_yaml(args.out, name=args.name, power_like=power_like)
    except (ModelNotFoundError, UnsupportedModelError, ValueError, OSError) as e:
        print(f"splitrl profile: error: {' '.join(str(e).split())[:600]}", file=sys.stderr)
        return 2
    if poor or fit["median_abs_rel_residual"] > args.max_residual:
        print(f"splitrl profile: warning: {'poor fit accepted' if poor else 'large residuals'} (R^2 {fit['r2']:.3f}, "
              f"median |residual| {fit['median_abs_rel_residual']:.0%} of the measured time, worst "
              f"{fit['max_abs_rel_residual']:.0%}); per-layer times predicted from {args.out} are that far off",
              file=sys.stderr)
    if args.json:
        print(json.dumps({"out": str(args.out), "fit": fit,
                          **result.to_profile_dict(name=args.name, power_like=power_like)}))
        return 0
    print(f"{result.model} ({result.dtype}, {result.num_layers} layers) on {result.machine.get('processor')}, "
          f"{result.threads} threads")
    print(f"{'T':>6} {'median layer ms':>16} {'head ms':>10}")
    for T, row, th in zip(result.context_lengths, result.layer_times_s, result.head_times_s):
        print(f"{T:>6} {sorted(row)[len(row) // 2] * 1e3:>16.3f} {th * 1e3:>10.3f}")
    print(f"fitted {result.flops_per_s / 1e9:.2f} GFLOP/s + {result.layer_overhead_s * 1e6:.1f} us/layer "
          f"(R^2 {result.fit_r2:.3f}, median |residual| {fit['median_abs_rel_residual']:.1%}, worst "
          f"{fit['max_abs_rel_residual']:.1%}; through origin {result.flops_per_s_through_origin / 1e9:.2f} GFLOP/s)")
    if result.memory_bandwidth_bytes_per_s is not None:
        print(f"memory bandwidth {result.memory_bandwidth_bytes_per_s / 1e9:.2f} GB/s")
    if rates is not None:
        for p, r in rates["precision_rates"].items():
            t = rates["timings"][p]
            print(f"{p:>5}: prefill {t['prefill_s'] * 1e3:8.1f} ms  decode step {t['decode_step_s'] * 1e3:6.1f} ms  "
                  f"-> compute x{r['compute']:.2f}, memory x{r['memory']:.2f}")
    print(f"wrote {args.out}")
    return 0

