"""Where a decode step's time goes, per weight precision: a torch.profiler breakdown by operator.

SmolLM2-135M loaded at each precision (one process per precision would change nothing here: the
profile is of one decode step, not of memory), 128-token prompt, then decode steps through all 30
layers and the head, 1 thread. Reports the median step time and each operator's share of the
profiled CPU time, so `decode_speed.json`'s gaps can be read against what dominates: the packed
low-bit matmul kernel itself, or the Python-side operators around it.

    .venv/bin/python benchmarks/decode_profile.py --out benchmarks/results/decode_profile.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def profile_precision(precision: str, steps: int = 16, top: int = 10) -> dict:
    import torch
    from torch.profiler import profile
    from transformers.cache_utils import DynamicCache

    from splitrl.models import load_model

    lm = load_model("smollm2-135m", precision=precision)
    view = lm.view
    L = view.num_layers
    ids = torch.randint(100, 10_000, (1, 128), generator=torch.Generator().manual_seed(0))
    pos = torch.arange(128).unsqueeze(0)

    @torch.inference_mode()
    def decode(n: int) -> list[float]:
        cache = DynamicCache(config=view.config)
        view.run_layers(view.embed(ids, pos), 0, L, pos, cache)
        times = []
        for i in range(n):
            p = torch.tensor([[128 + i]])
            t0 = time.perf_counter()
            view.head(view.run_layers(view.embed(ids[:, :1], p), 0, L, p, cache))
            times.append(time.perf_counter() - t0)
        return times

    decode(4)
    step_s = statistics.median(decode(steps))
    with profile() as prof:
        decode(steps)
    ops = prof.key_averages()
    total = sum(k.self_cpu_time_total for k in ops)
    ranked = sorted(ops, key=lambda k: -k.self_cpu_time_total)
    kernels = ("_weight_int4pack_mm", "_weight_int8pack_mm", "aten::mm", "aten::addmm", "aten::linear", "aten::bmm")
    matmul = sum(k.self_cpu_time_total for k in ops if any(s in k.key for s in kernels))
    return {
        "precision": precision, "median_step_ms": step_s * 1e3, "steps": steps,
        "matmul_share": matmul / total,
        "top_ops": [{"op": k.key, "share": k.self_cpu_time_total / total, "calls_per_step": k.count / steps}
                    for k in ranked[:top]],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precisions", default="fp32,int8,int4")
    ap.add_argument("--out", default=None, help="result JSON (default: runs/decode_profile.json)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from splitrl.provenance import run_record

    rows = [profile_precision(p.strip()) for p in args.precisions.split(",") if p.strip()]
    result = {**run_record(threads=1), "model": "smollm2-135m", "prompt_tokens": 128, "profiles": rows}
    out = Path(args.out) if args.out else ROOT / "runs" / "decode_profile.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    for r in rows:
        print(f"{r['precision']:>5}: {r['median_step_ms']:.2f} ms/step, matmul kernels {r['matmul_share']:.0%}; "
              + ", ".join(f"{o['op']} {o['share']:.0%}" for o in r["top_ops"][:4]))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
