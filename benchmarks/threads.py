#!/usr/bin/env python
"""How many torch threads to use: splitrl's perplexity and decode speed at 1 vs N threads, here.

Interleaves the thread counts (1, 2, ... up to --max-threads), ``--repeats`` times each, on
SmolLM2-135M: (a) prefix-cached perplexity of ``--tokens`` WikiText-2 tokens at one split,
(b) 32 greedy decode steps at the middle split. Medians and spreads, the load average before and
after, and the command / git revision are written to ``benchmarks/results/threads.json``. Run it
under the bench lock (``flock /tmp/splitrl-bench.lock ...``): on a shared machine the answer
depends on what else runs, which is the point of recording the load.

    flock /tmp/splitrl-bench.lock .venv/bin/python benchmarks/threads.py
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from splitrl.provenance import run_record  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--max-threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--out", default=str(RESULTS / "threads.json"))
    args = ap.parse_args()
    from tqdm.auto import tqdm

    from splitrl.eval import PerplexityConfig, PerplexityEvaluator, corpus_tokens
    from splitrl.models import load_model
    from splitrl.runtime import SplitRuntime

    load_before = list(os.getloadavg())
    loaded = load_model(args.model)
    L = loaded.view.num_layers
    ev = PerplexityEvaluator(loaded, PerplexityConfig(tokens=args.tokens, window=256, stride=256), progress=False)
    rt = SplitRuntime(loaded)
    prompt = corpus_tokens(loaded.tokenizer, 2048)[:, 1000:1064]
    counts = list(range(1, max(1, args.max_threads) + 1))
    ppl_s: dict[int, list[float]] = {n: [] for n in counts}
    dec_s: dict[int, list[float]] = {n: [] for n in counts}
    ev.evaluate(L // 2)  # warm-up + prefix cache filled, so every timed call does the same work
    bar = tqdm(total=args.repeats * len(counts), desc="threads", unit="run")
    for _ in range(args.repeats):
        for n in counts:  # interleaved: a load spike hits every setting alike
            torch.set_num_threads(n)
            t0 = time.perf_counter()
            ev.evaluate(L // 2)
            ppl_s[n].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            rt.generate(prompt, L // 2, max_new_tokens=32)
            dec_s[n].append(time.perf_counter() - t0)
            bar.update(1)
    bar.close()

    def stats(xs: list[float]) -> dict:
        return {"median_s": statistics.median(xs), "min_s": min(xs), "max_s": max(xs), "samples": xs}

    result = {
        "definitions": {"ppl": f"prefix-cached perplexity of {args.tokens} tokens at split {L // 2} (seconds)",
                        "decode": f"64-token prompt + 32 greedy tokens at split {L // 2} (seconds)",
                        "ratio": "median time at N threads / median time at 1 thread (< 1: N threads faster)"},
        "ppl": {str(n): stats(v) for n, v in ppl_s.items()},
        "decode": {str(n): stats(v) for n, v in dec_s.items()},
        "ratio_vs_1_thread": {
            "ppl": {str(n): statistics.median(ppl_s[n]) / statistics.median(ppl_s[1]) for n in counts},
            "decode": {str(n): statistics.median(dec_s[n]) / statistics.median(dec_s[1]) for n in counts}},
        "setup": {"model": args.model, "repeats": args.repeats, "thread_counts": counts,
                  "torch": torch.__version__, "cpu_count": os.cpu_count(),
                  "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                  "loadavg_before": load_before, "loadavg_after": list(os.getloadavg()),
                  "date": datetime.now(timezone.utc).isoformat(timespec="seconds")},
    }
    result = {**run_record(threads=1), **result}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for what in ("ppl", "decode"):
        print(what + ": " + ", ".join(f"{n} thread(s) {statistics.median(v):.3f} s"
                                      for n, v in (ppl_s if what == "ppl" else dec_s).items()))
    print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}; wrote {out}")


if __name__ == "__main__":
    main()
