#!/usr/bin/env python
"""Runtime overhead of splitrl vs plain transformers, on SmolLM2-135M, same process, same threads.

Measures, interleaving baseline and splitrl runs so drift hits both alike:
1. greedy generation: plain ``model.generate`` vs ``SplitRuntime.generate`` at splits 0, L/2, L —
   prefill time (time to the first token) and decode tokens/s; reported as splitrl / baseline.
2. perplexity at 8 split points: splitrl's evaluator with the prefix cache (one full pass per
   window, then only layers [s, L) + the head on scored positions) vs naive re-runs (plain
   transformers perplexity, the whole model per split) — total wall time, splitrl / naive.

Reproduce:  make bench   (or: .venv/bin/python benchmarks/runtime_overhead.py --threads 2)
Writes a NEW result file (runtime_overhead-<UTC time>.json/.md) unless ``--overwrite`` (``make bench
OVERWRITE=1``) asks to replace the committed ``runtime_overhead.json``; an existing ``--out`` is never
replaced silently. Progress is shown; the thread count, load average, command and git revision are
recorded in the result.
Writes benchmarks/results/runtime_overhead.json and .md.
"""
from __future__ import annotations

import argparse
import sys
import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ppl-tokens", type=int, default=1024)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--stride", type=int, default=256)
    ap.add_argument("--out", default=None,
                    help="result JSON (default: a new benchmarks/results/runtime_overhead-<UTC time>.json)")
    ap.add_argument("--overwrite", action="store_true",
                    help="write the committed benchmarks/results/runtime_overhead.json (or replace an existing --out)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else RESULTS / ("runtime_overhead.json" if args.overwrite else f"runtime_overhead-{stamp}.json")
    if out.exists() and not args.overwrite:
        raise SystemExit(f"runtime_overhead.py: error: {out} exists; pass --overwrite (make bench OVERWRITE=1) to replace it")
    from tqdm.auto import tqdm
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import transformers

    from splitrl.eval import PerplexityConfig, PerplexityEvaluator, corpus_tokens, reference_perplexity
    from splitrl.models import load_model
    from splitrl.runtime import SplitRuntime

    loaded = load_model(args.model)
    model, tok = loaded.model, loaded.tokenizer
    rt = SplitRuntime(loaded)
    L = rt.num_layers
    # A WikiText passage as the prompt: the model keeps writing, so no run stops early at EOS.
    ids = corpus_tokens(tok, 4096)[:, 1000 : 1000 + args.prompt_tokens]
    splits = [0, L // 2, L]
    pad = tok.eos_token_id

    def hf(n):
        with torch.inference_mode():
            return model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=pad)[0, ids.shape[1]:].tolist()

    def ours(s, n):
        return rt.generate(ids, s, max_new_tokens=n).token_ids

    hf(4), ours(L // 2, 4)  # warm-up: thread pools, allocator
    samples: dict[str, dict[str, list[float]]] = {k: {"prefill": [], "full": []} for k in ["hf"] + [f"s{s}" for s in splits]}
    bar = tqdm(total=args.repeats * (1 + len(splits)) + 2, desc="bench", unit="run", disable=args.no_progress)
    for _ in range(args.repeats):
        for key, run in [("hf", hf)] + [(f"s{s}", (lambda n, s=s: ours(s, n))) for s in splits]:
            bar.set_postfix(run=key, refresh=False)
            bar.update(1)
            t1, _ = _timed(lambda: run(1))
            tn, generated = _timed(lambda: run(args.new_tokens))
            if len(generated) != args.new_tokens:
                raise RuntimeError(f"{key} stopped after {len(generated)} tokens; pick another prompt")
            samples[key]["prefill"].append(t1)
            samples[key]["full"].append(tn)

    def decode_tps(key):
        pre = statistics.median(samples[key]["prefill"])
        full = statistics.median(samples[key]["full"])
        return (args.new_tokens - 1) / (full - pre)

    base_prefill = statistics.median(samples["hf"]["prefill"])
    base_tps = decode_tps("hf")
    per_split = {
        s: {
            "prefill_s": statistics.median(samples[f"s{s}"]["prefill"]),
            "decode_tokens_per_s": decode_tps(f"s{s}"),
        }
        for s in splits
    }
    for s in splits:
        per_split[s]["prefill_time_ratio"] = per_split[s]["prefill_s"] / base_prefill
        per_split[s]["decode_tokens_per_s_ratio"] = per_split[s]["decode_tokens_per_s"] / base_tps
    identical = all(ours(s, args.new_tokens) == hf(args.new_tokens) for s in splits)

    # --- perplexity at 8 split points: prefix cache vs naive whole-model re-runs ---
    ppl_splits = sorted({round(i * L / 7) for i in range(8)})
    cfg = PerplexityConfig(tokens=args.ppl_tokens, window=args.window, stride=args.stride)
    text_ids = corpus_tokens(tok, args.ppl_tokens)
    reference_perplexity(model, text_ids[:, :64], 64, 64)  # warm-up
    bar.set_postfix(run="perplexity, naive", refresh=True)
    naive_s, naive_ppl = _timed(lambda: [reference_perplexity(model, text_ids, args.window, args.stride) for _ in ppl_splits])
    bar.update(1)
    bar.set_postfix(run="perplexity, prefix cache", refresh=True)
    cached_s, cached = _timed(lambda: (lambda ev: [ev.evaluate(s).ppl for s in ppl_splits])(PerplexityEvaluator(loaded, cfg)))
    bar.update(1)
    bar.close()
    max_rel = max(abs(a - b) / b for a, b in zip(cached, naive_ppl))

    result = {
        "decode_tokens_per_s_ratio": min(v["decode_tokens_per_s_ratio"] for v in per_split.values()),
        "prefill_time_ratio": max(v["prefill_time_ratio"] for v in per_split.values()),
        "cached_sweep_cost_ratio": cached_s / naive_s,
        "definitions": {
            "decode_tokens_per_s_ratio": "min over splits of splitrl decode tok/s / transformers generate decode tok/s (>=0.97 target)",
            "prefill_time_ratio": "max over splits of splitrl time-to-first-token / transformers generate (1 token)",
            "cached_sweep_cost_ratio": "splitrl prefix-cached perplexity at 8 splits (cache fill included) / 8 plain transformers perplexity runs (<=0.6 target)",
        },
        "baseline": {"prefill_s": base_prefill, "decode_tokens_per_s": base_tps},
        "per_split": {str(k): v for k, v in per_split.items()},
        "greedy_tokens_identical_to_transformers": identical,
        "perplexity": {
            "splits": ppl_splits, "naive_seconds": naive_s, "cached_seconds": cached_s,
            "ppl": cached[0], "max_rel_diff_vs_transformers": max_rel,
            "tokens": args.ppl_tokens, "window": args.window, "stride": args.stride,
        },
        "setup": {
            "model": args.model, "threads": args.threads, "prompt_tokens": args.prompt_tokens,
            "new_tokens": args.new_tokens, "repeats": args.repeats, "statistic": "median",
            "torch": torch.__version__, "transformers": transformers.__version__,
            "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus".strip(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "loadavg": list(os.getloadavg()), "torch_threads": torch.get_num_threads(),
        },
    }
    from splitrl.provenance import run_record

    result = {**run_record(), **result}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    rows = ["| measure | splitrl / baseline |", "|---|---|"]
    for s in splits:
        v = per_split[s]
        rows.append(f"| split {s}: decode tok/s | {v['decode_tokens_per_s_ratio']:.3f} ({v['decode_tokens_per_s']:.1f} vs {base_tps:.1f}) |")
        rows.append(f"| split {s}: time to first token | {v['prefill_time_ratio']:.3f} ({v['prefill_s'] * 1e3:.0f} vs {base_prefill * 1e3:.0f} ms) |")
    rows.append(f"| perplexity at 8 splits, prefix cache vs naive | {result['cached_sweep_cost_ratio']:.3f} ({cached_s:.1f} vs {naive_s:.1f} s) |")
    md = "\n".join(rows)
    out.with_suffix(".md").write_text(md + "\n")
    print(md)
    print(f"greedy tokens identical: {identical}; ppl max rel diff {max_rel:.2e}; {torch.get_num_threads()} torch "
          f"threads, load average {os.getloadavg()[0]:.2f}; wrote {out}")


if __name__ == "__main__":
    main()
