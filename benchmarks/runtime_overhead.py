#!/usr/bin/env python
"""Runtime overhead of splitrl vs plain transformers, on SmolLM2-135M, same process, same threads.

Measures, repeating and interleaving baseline and splitrl runs (A, B, A, B, ...; the order flips
every repeat) so drift and other people's load hit both alike:
1. greedy generation: plain ``model.generate`` vs ``SplitRuntime.generate`` at splits 0, L/2, L —
   prefill time (time to the first token) and decode tokens/s; one ratio splitrl / baseline per
   repeat (the runs of the same repeat paired), reported as median, IQR and min/max over repeats.
2. perplexity at 8 split points: splitrl's evaluator with the prefix cache (one full pass per
   window, then only layers [s, L) + the head on scored positions; cache fill included: a new
   evaluator per repeat) vs naive re-runs (plain transformers perplexity, the whole model per
   split) — total wall time, splitrl / naive, one ratio per repeat (``--sweep-repeats``), median + spread.

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


def spread(values: list[float]) -> dict:
    """The repeats' values with their interquartile range and min/max."""
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return {"values": values, "iqr": [q[0], q[2]], "min": min(values), "max": max(values)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5, help="generation repeats (>= 5 for a spread worth reading)")
    ap.add_argument("--sweep-repeats", type=int, default=5, help="repeats of the naive/cached perplexity pair")
    ap.add_argument("--ppl-tokens", type=int, default=1024)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--stride", type=int, default=256)
    ap.add_argument("--out", default=None,
                    help="result JSON (default: a new benchmarks/results/runtime_overhead-<UTC time>.json)")
    ap.add_argument("--overwrite", action="store_true",
                    help="write the committed benchmarks/results/runtime_overhead.json (or replace an existing --out)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    if args.repeats < 1 or args.sweep_repeats < 1:
        raise SystemExit("runtime_overhead.py: error: --repeats and --sweep-repeats must be >= 1 (>= 5 for a spread)")
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
    bar = tqdm(total=args.repeats * (1 + len(splits)) + 2 * args.sweep_repeats, desc="bench", unit="run",
               disable=args.no_progress)
    runs = [("hf", hf)] + [(f"s{s}", (lambda n, s=s: ours(s, n))) for s in splits]
    for r in range(args.repeats):
        # A, B, A, B ... with the order reversed every other repeat: neither side always runs first
        for key, run in (runs if r % 2 == 0 else runs[::-1]):
            bar.set_postfix(run=key, refresh=False)
            bar.update(1)
            t1, _ = _timed(lambda: run(1))
            tn, generated = _timed(lambda: run(args.new_tokens))
            if len(generated) != args.new_tokens:
                raise RuntimeError(f"{key} stopped after {len(generated)} tokens; pick another prompt")
            samples[key]["prefill"].append(t1)
            samples[key]["full"].append(tn)

    def tps(key) -> list[float]:  # decode tokens/s per repeat
        return [(args.new_tokens - 1) / (f - p) for p, f in zip(samples[key]["prefill"], samples[key]["full"])]

    base_prefill = statistics.median(samples["hf"]["prefill"])
    base_tps = statistics.median(tps("hf"))
    per_split = {}
    for s in splits:
        k = f"s{s}"
        decode_ratios = [a / b for a, b in zip(tps(k), tps("hf"))]
        prefill_ratios = [a / b for a, b in zip(samples[k]["prefill"], samples["hf"]["prefill"])]
        per_split[s] = {
            "prefill_s": statistics.median(samples[k]["prefill"]),
            "decode_tokens_per_s": statistics.median(tps(k)),
            "prefill_time_ratio": statistics.median(prefill_ratios),
            "decode_tokens_per_s_ratio": statistics.median(decode_ratios),
            "prefill_time_ratio_spread": spread(prefill_ratios),
            "decode_tokens_per_s_ratio_spread": spread(decode_ratios),
        }
    identical = all(ours(s, args.new_tokens) == hf(args.new_tokens) for s in splits)

    # --- perplexity at 8 split points: prefix cache vs naive whole-model re-runs ---
    ppl_splits = sorted({round(i * L / 7) for i in range(8)})
    cfg = PerplexityConfig(tokens=args.ppl_tokens, window=args.window, stride=args.stride)
    text_ids = corpus_tokens(tok, args.ppl_tokens)
    reference_perplexity(model, text_ids[:, :64], 64, 64)  # warm-up
    naive_times, cached_times = [], []
    for r in range(args.sweep_repeats):
        order = ["naive", "cached"] if r % 2 == 0 else ["cached", "naive"]
        for which in order:
            bar.set_postfix(run=f"perplexity, {which}", refresh=True)
            if which == "naive":
                t, naive_ppl = _timed(lambda: [reference_perplexity(model, text_ids, args.window, args.stride)
                                               for _ in ppl_splits])
                naive_times.append(t)
            else:
                t, cached = _timed(lambda: (lambda ev: [ev.evaluate(s).ppl for s in ppl_splits])(PerplexityEvaluator(loaded, cfg)))
                cached_times.append(t)
            bar.update(1)
    bar.close()
    sweep_ratios = [c / n for c, n in zip(cached_times, naive_times)]
    naive_s, cached_s = statistics.median(naive_times), statistics.median(cached_times)
    max_rel = max(abs(a - b) / b for a, b in zip(cached, naive_ppl))

    worst_decode = min(splits, key=lambda s: per_split[s]["decode_tokens_per_s_ratio"])
    worst_prefill = max(splits, key=lambda s: per_split[s]["prefill_time_ratio"])
    result = {
        "decode_tokens_per_s_ratio": per_split[worst_decode]["decode_tokens_per_s_ratio"],
        "prefill_time_ratio": per_split[worst_prefill]["prefill_time_ratio"],
        "cached_sweep_cost_ratio": statistics.median(sweep_ratios),
        "spread": {
            "decode_tokens_per_s_ratio": {"split": worst_decode, **per_split[worst_decode]["decode_tokens_per_s_ratio_spread"]},
            "prefill_time_ratio": {"split": worst_prefill, **per_split[worst_prefill]["prefill_time_ratio_spread"]},
            "cached_sweep_cost_ratio": spread(sweep_ratios),
        },
        "definitions": {
            "decode_tokens_per_s_ratio": "min over splits of the median over repeats of splitrl decode tok/s / transformers generate decode tok/s in the same repeat (>=0.97 target)",
            "prefill_time_ratio": "max over splits of the median over repeats of splitrl time-to-first-token / transformers generate (1 token) in the same repeat",
            "cached_sweep_cost_ratio": "median over repeats of splitrl prefix-cached perplexity at 8 splits (cache fill included) / 8 plain transformers perplexity runs in the same repeat (<=0.6 target)",
            "spread": "per ratio: the repeats' values, their interquartile range [q25, q75] and min/max; runs alternate A,B,A,B with the order reversed every other repeat",
        },
        "baseline": {"prefill_s": base_prefill, "decode_tokens_per_s": base_tps},
        "per_split": {str(k): v for k, v in per_split.items()},
        "greedy_tokens_identical_to_transformers": identical,
        "perplexity": {
            "splits": ppl_splits, "naive_seconds": naive_s, "cached_seconds": cached_s,
            "naive_seconds_per_repeat": naive_times, "cached_seconds_per_repeat": cached_times,
            "ppl": cached[0], "max_rel_diff_vs_transformers": max_rel,
            "tokens": args.ppl_tokens, "window": args.window, "stride": args.stride,
        },
        "setup": {
            "model": args.model, "threads": args.threads, "prompt_tokens": args.prompt_tokens,
            "new_tokens": args.new_tokens, "repeats": args.repeats, "sweep_repeats": args.sweep_repeats,
            "statistic": "median over interleaved repeats (spread: IQR and min/max)",
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
    def iqr(sp):
        return f"[{sp['iqr'][0]:.3f}, {sp['iqr'][1]:.3f}]"

    rows = [f"| measure | splitrl / baseline, median of {args.repeats} interleaved repeats | IQR | min-max |", "|---|---|---|---|"]
    for s in splits:
        v = per_split[s]
        d, p = v["decode_tokens_per_s_ratio_spread"], v["prefill_time_ratio_spread"]
        rows.append(f"| split {s}: decode tok/s | {v['decode_tokens_per_s_ratio']:.3f} ({v['decode_tokens_per_s']:.1f} vs "
                    f"{base_tps:.1f}) | {iqr(d)} | {d['min']:.3f}-{d['max']:.3f} |")
        rows.append(f"| split {s}: time to first token | {v['prefill_time_ratio']:.3f} ({v['prefill_s'] * 1e3:.0f} vs "
                    f"{base_prefill * 1e3:.0f} ms) | {iqr(p)} | {p['min']:.3f}-{p['max']:.3f} |")
    sw = result["spread"]["cached_sweep_cost_ratio"]
    rows.append(f"| perplexity at 8 splits, prefix cache vs naive ({args.sweep_repeats} repeats) | "
                f"{result['cached_sweep_cost_ratio']:.3f} ({cached_s:.1f} vs {naive_s:.1f} s) | {iqr(sw)} | "
                f"{sw['min']:.3f}-{sw['max']:.3f} |")
    md = "\n".join(rows)
    out.with_suffix(".md").write_text(md + "\n")
    print(md)
    print(f"greedy tokens identical: {identical}; ppl max rel diff {max_rel:.2e}; {torch.get_num_threads()} torch "
          f"threads, load average {os.getloadavg()[0]:.2f}; wrote {out}")


if __name__ == "__main__":
    main()
