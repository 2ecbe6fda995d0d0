"""``splitrl aircomp-worker``: one device of a real multi-process AirComp all-reduce (tests, demos).

Each worker joins the group on the driver's TCP store (`splitrl.dist.connect_store` /
`form_group`), reduces ``--calls`` synthetic partial sums [rows, dim] (seeded per call and rank,
with one outlier token x 2.4e4 like SmolLM2's) through `make_allreduce("aircomp", ...)`, and rank 0
— which can regenerate every rank's partials from the seed — writes a JSON report to ``--out``:
per call the error of the estimate normalised by the per-token scale c_t (its mean square should
equal the design's MSE), the design's predicted MSE, and whether the result equals the digital
star sum (reduce + broadcast of the same tensors) bit for bit.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Any

from splitrl.errors import UsageError

__all__ = ["add_arguments", "run", "synthetic_partial"]


def synthetic_partial(seed: int, call: int, rank: int, rows: int, dim: int) -> Any:
    """The partial sum [rows, dim] (a torch tensor) rank ``rank`` contributes in call ``call`` (one outlier token)."""
    # lazy: --help and argument errors must not import torch
    import torch

    g = torch.Generator().manual_seed(seed * 1_000_003 + call * 1009 + rank)
    x = torch.randn(rows, dim, generator=g)
    x[min(1, rows - 1)] *= 2.4e4
    return x


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", required=True, help="HOST:PORT of the driver's TCP store")
    p.add_argument("--rank", type=int, required=True, help="this device's rank (0 writes the report)")
    p.add_argument("--world", type=int, required=True, help="number of devices in the group")
    p.add_argument("--snr", type=float, default=20.0, help="transmit SNR in dB (inf = noiseless)")
    p.add_argument("--antennas", type=int, default=1, help="aggregator antennas M")
    p.add_argument("--design", default="sdr", help="transceiver design (splitrl.aircomp.design.DESIGNS)")
    p.add_argument("--calls", type=int, default=4, help="all-reduce calls to make")
    p.add_argument("--coherence-calls", type=int, default=1, help="calls per channel draw (the coherence time)")
    p.add_argument("--rows", type=int, default=16, help="rows (tokens) of each synthetic partial sum")
    p.add_argument("--dim", type=int, default=64, help="columns (hidden size) of each synthetic partial sum")
    p.add_argument("--seed", type=int, default=0, help="seed of the partial sums and the channel")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the store and the group")
    p.add_argument("--trusted-network", action="store_true",
                   help="allow a non-loopback --store (gloo has no authentication: trusted networks only)")
    p.add_argument("--out", default=None, help="rank 0 writes its JSON report here")


def run(args: Any) -> int:
    # lazy: --help and argument errors must not import torch
    import torch
    import torch.distributed as dist

    import splitrl.aircomp.allreduce  # noqa: F401  (registers the "aircomp" all-reduce)

    from splitrl.dist import Endpoint, check_trusted, connect_store, form_group, leave_group, make_allreduce

    torch.set_num_threads(1)
    for name in ("calls", "rows", "dim"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name}: an integer >= 1")
    ep = Endpoint.parse(args.store, field="--store")
    check_trusted(ep, args.trusted_network)
    store = connect_store(ep, host_store=False, timeout_s=args.timeout)
    form_group(store, args.rank, args.world, timeout_s=args.timeout)
    try:
        ar = make_allreduce("aircomp", snr_db=args.snr, antennas=args.antennas, design=args.design,
                            seed=args.seed, coherence_calls=args.coherence_calls)
        calls = []
        for k in range(args.calls):
            x = synthetic_partial(args.seed, k, args.rank, args.rows, args.dim)
            x_before = x.clone()
            est = ar.reduce(x)
            star = x.clone()
            dist.reduce(star, dst=0)
            dist.broadcast(star, src=0)
            if args.rank == 0:
                parts = torch.stack([synthetic_partial(args.seed, k, r, args.rows, args.dim) for r in range(args.world)])
                c = parts.pow(2).mean(-1).sqrt().amax(0)                           # [rows] per-token scales
                err = (est - parts.sum(0)) / c[:, None]
                tx = ar.last_design
                calls.append({
                    "normalised_mse": float(err.pow(2).mean()),
                    "predicted_mse": float(tx.mse) if tx is not None else None,
                    "equals_star": bool(torch.equal(est, star)),
                    "max_abs_error_vs_local_sum": float((est - parts.sum(0)).abs().max()),
                    "input_untouched": bool(torch.equal(x, x_before)),
                })
        if args.rank == 0 and args.out:
            report = {"world": args.world, "snr_db": args.snr, "antennas": args.antennas, "design": args.design,
                      "calls": calls, "stats": ar.stats.to_dict()}
            tmp = f"{args.out}.tmp"
            with open(tmp, "w") as f:
                json.dump(report, f, allow_nan=True)
            os.replace(tmp, args.out)
        dist.barrier()
    finally:
        leave_group()
    return 0
