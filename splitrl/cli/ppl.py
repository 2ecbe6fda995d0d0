"""``splitrl ppl``: perplexity of a split model on WikiText-2 (with the clean reference)."""
from __future__ import annotations

import argparse
import json
import math

from splitrl.cli import _common as c
from splitrl.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    c.model_args(p)
    p.add_argument("--split", default=None, help="split point s in 0..L, or comma-separated cut points (default L/2)")
    p.add_argument("--tokens", type=int, default=1024, help="corpus tokens to score")
    p.add_argument("--window", type=int, default=512, help="context window per forward pass")
    p.add_argument("--stride", type=int, default=None, help="tokens between windows (default window/2)")
    p.add_argument("--corpus", default=None, help="path of WikiText-2 wiki.test.raw (default ../shared/data/...)")
    p.add_argument("--corpus-source", default="file", choices=["file", "datasets"], help="where the corpus comes from")
    p.add_argument("--seed", type=int, default=0, help="seed for link noise")
    c.precision_arg(p)
    c.link_args(p, costs=False)


def run(args: argparse.Namespace) -> int:
    # lazy: --help and argument errors must not import torch
    from splitrl.eval import CorpusError, PerplexityConfig, PerplexityEvaluator

    c.check_link_options(args, getattr(args, "_given", set()), costs=False)
    loaded = c.load(args)
    try:
        config = PerplexityConfig(
            tokens=args.tokens, window=args.window, stride=args.stride or args.window // 2,
            corpus_path=args.corpus, corpus_source=args.corpus_source,
        )
        evaluator = PerplexityEvaluator(loaded, config, progress=not args.json)
    except (CorpusError, ValueError) as e:
        raise UsageError(str(e))
    partition = c.partition(evaluator.runtime, args.split, args.precision)
    link = c.make_link(args, loaded.view.vocab_size)
    result = evaluator.evaluate(partition, link)
    L = evaluator.runtime.num_layers
    # The clean reference: the same tokens and windows with nothing crossing a link (a lossless
    # link or the full-UE split is the reference itself).
    clean = result if link is None or list(partition.cuts) == [L] else evaluator.evaluate(L)
    d = result.to_dict()
    link_d = c.link_description(args)
    out = {"model": loaded.name, "num_layers": L, **link_d, **{k: v for k, v in d.items() if k not in ("ppl", "nll")},
           "ppl": c.finite(result.ppl), "nll": c.finite(result.nll), "ppl_finite": math.isfinite(result.ppl),
           "clean_ppl": c.finite(clean.ppl), "log_ppl_ratio": c.finite(math.log(result.ppl / clean.ppl))
           if math.isfinite(result.ppl) and clean.ppl > 0 else None,
           "seed": args.seed, "threads": c.torch_threads()}
    if args.json:
        print(json.dumps(out, allow_nan=False))
    else:
        ppl = f"{result.ppl:.4f}" if math.isfinite(result.ppl) else "not finite (the link destroyed the activations)"
        print(f"{loaded.name}, split {','.join(map(str, result.split))} of {L} layers "
              f"(weights {'/'.join(result.precision)}), {c.link_text(link_d)}: "
              f"perplexity {ppl} (clean {clean.ppl:.4f}) over {result.scored_tokens} scored of {result.tokens} "
              f"tokens (window {result.window}, stride {result.stride}) in {result.seconds:.2f} s, "
              f"{out['threads']} torch thread(s)")
    return 0
