"""``splitrl sweep``: perplexity over split points x channel levels x transports x seeds (resumable CSV)."""
from __future__ import annotations

import argparse

from splitrl.cli import _common as c
from splitrl.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=c.DEFAULT_MODEL,
                   help=f"model name ({', '.join(c.NAMED_MODELS)}), local HF directory, .gguf file, or hub id")
    p.add_argument("--cache-dir", default=None, help="cache for dequantised GGUF models (default $SPLITRL_CACHE or ~/.cache/splitrl)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (see `splitrl ppl --help`)")
    p.add_argument("--splits", default="all", help="'all', a range 'a-b', or a list 'a,b,c'")
    p.add_argument("--levels", default="0:30:5", help="channel levels: 'start:stop:step' or 'a,b,c'")
    p.add_argument("--level-kind", default="snr", choices=["snr", "ber", "dropout"],
                   help="what --levels are: SNR in dB, bit error rate, or dropout probability")
    p.add_argument("--transports", default="awgn,int8-biterr", help="comma-separated link names")
    p.add_argument("--seeds", type=int, default=3, help="repeat draws per cell")
    p.add_argument("--base-seed", type=int, default=0, help="seed of the first draw (each cell's seeds derive from it)")
    p.add_argument("--modulation", default="qpsk", help="modulation mapping SNR to BER for digital links")
    p.add_argument("--tokens", type=int, default=1024, help="corpus tokens scored per cell")
    p.add_argument("--window", type=int, default=1024, help="context window per forward pass")
    p.add_argument("--stride", type=int, default=None, help="tokens between windows (default: window)")
    p.add_argument("--corpus", default=None, help="path of WikiText-2 wiki.test.raw (default ../shared/data/...)")
    p.add_argument("--ue-precisions", default="fp32",
                   help="comma-separated weight precisions of the UE's layers (the edge runs fp32), e.g. fp32,int8,int4")
    p.add_argument("--out", default="sweep.csv", help="CSV table, appended cell by cell (resumes if present)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    # lazy: --help and argument errors must not import torch
    import numpy as np
    import pandas as pd

    from splitrl.eval import CorpusError
    from splitrl.sweep import SweepConfig, parse_levels, parse_range, run_sweep

    loaded = c.load(args)
    try:
        config = SweepConfig(
            model=args.model, splits=parse_range(args.splits, loaded.view.num_layers), levels=parse_levels(args.levels),
            level_kind=args.level_kind, transports=[t for t in args.transports.split(",") if t], seeds=args.seeds,
            base_seed=args.base_seed, modulation=args.modulation, tokens=args.tokens, window=args.window,
            stride=args.stride or args.window, corpus_path=args.corpus,
            ue_precisions=[p.strip() for p in args.ue_precisions.split(",") if p.strip()],
        )
        path = run_sweep(config, args.out, progress=not args.no_progress, loaded=loaded)
    except (ValueError, CorpusError) as e:
        raise UsageError(str(e))
    df = pd.read_csv(path)
    bad = int((~np.isfinite(df["ppl"].to_numpy(float))).sum())
    print(f"sweep table: {path} ({len(df)} cells" + (f"; {bad} with a non-finite perplexity, ppl_finite=False" if bad else "")
          + f"; its 'seconds' column was timed with {c.torch_threads()} torch thread(s))")
    return 0
