"""Where a decode step's time goes, per weight precision, eager and compiled: a torch.profiler breakdown.

SmolLM2-135M loaded at each precision (one load per precision), a 128-token prompt prefilled
*outside* the profile, then decode steps through all 30 layers and the head, 1 thread. For each
(precision, eager | compiled) it reports
- the median step time (unprofiled steps),
- the *kernel floor*: the same step's linear layers (every projection of every layer and the head,
  with their own weights) called back to back in a tight loop, so ``step - floor`` is what the rest
  of the step costs (attention, norms, rotary, casts, cache, Python dispatch),
- each operator's share of the profiled CPU time of decode steps only (the matmul kernels, then
  the rest).
Compiled rows run ``view.compile_decode`` (`splitrl.quant.compiled`); their graphs are compiled
before anything is timed. Inside a compiled graph the C++ wrapper calls the packed kernels
directly, so the profiler books them under the graph's ``Call CompiledFxGraph`` entries, not under
the kernel's name: a compiled row's ``matmul_share`` counts only the head's kernel (eager); its
``kernel_floor_ms`` is the measure to read. Read against ``decode_speed.json``: the gap to llama.cpp is in
``step - floor`` when the floor is small, in the kernel when it is not.

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

KERNELS = ("_weight_int4pack_mm", "_weight_int8pack_mm", "int4mm_packed_weight_cpu", "aten::mm", "aten::addmm",
           "aten::linear", "aten::bmm")


def _linears(model):
    from splitrl.quant.linear import BF16Linear, Int4Linear, Int8Linear
    import torch

    kinds = (Int4Linear, Int8Linear, BF16Linear, torch.nn.Linear)
    return [m for name, m in model.named_modules() if isinstance(m, kinds) and "embed" not in name]


def kernel_floor_ms(model, reps: int = 15) -> tuple[float, int]:
    """Median time of one pass over every linear of a decode step (batch 1, one token), and their count."""
    import torch

    mods = _linears(model)
    xs = [torch.randn(1, 1, m.in_features) for m in mods]
    with torch.inference_mode():
        for m, x in zip(mods, xs):
            m(x)
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            for m, x in zip(mods, xs):
                m(x)
            ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3, len(mods)


def profile_precision(precision: str, compiled: bool, steps: int = 16, top: int = 10) -> dict:
    import torch
    from torch.profiler import profile
    from transformers.cache_utils import DynamicCache

    from splitrl.models import load_model

    lm = load_model("smollm2-135m", precision=precision, compile_decode=compiled)
    view = lm.view
    L = view.num_layers
    ids = torch.randint(100, 10_000, (1, 128), generator=torch.Generator().manual_seed(0))
    pos = torch.arange(128).unsqueeze(0)

    @torch.inference_mode()
    def prefill():
        cache = DynamicCache(config=view.config)
        view.run_layers(view.embed(ids, pos), 0, L, pos, cache)
        return cache

    @torch.inference_mode()
    def decode(cache, n: int) -> list[float]:
        times = []
        for i in range(n):
            p = torch.tensor([[128 + i]])
            t0 = time.perf_counter()
            view.head(view.run_layers(view.embed(ids[:, :1], p), 0, L, p, cache))
            times.append(time.perf_counter() - t0)
        return times

    t0 = time.perf_counter()
    decode(prefill(), 4)                       # warm-up (compiled: the graphs compile here)
    warmup_s = time.perf_counter() - t0
    step_s = statistics.median(decode(prefill(), steps))
    cache = prefill()
    with profile() as prof:
        decode(cache, steps)
    ops = prof.key_averages()
    total = sum(k.self_cpu_time_total for k in ops)
    ranked = sorted(ops, key=lambda k: -k.self_cpu_time_total)
    matmul = sum(k.self_cpu_time_total for k in ops if any(s in k.key for s in KERNELS))
    floor_ms, n_linears = kernel_floor_ms(lm.model)
    if compiled and view.compiled_decode.compiled_steps == 0:
        raise RuntimeError(f"{precision}: no step ran compiled ({view.compiled_decode.failed})")
    return {
        "precision": precision, "compiled": compiled, "median_step_ms": step_s * 1e3, "steps": steps,
        "warmup_s": warmup_s, "kernel_floor_ms": floor_ms, "linears_per_step": n_linears,
        "rest_of_step_ms": step_s * 1e3 - floor_ms, "matmul_share": matmul / total,
        "top_ops": [{"op": k.key, "share": k.self_cpu_time_total / total, "calls_per_step": k.count / steps}
                    for k in ranked[:top]],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precisions", default="fp32,int8,int4")
    ap.add_argument("--compiled", default="int8,int4", help="precisions also profiled with --compile")
    ap.add_argument("--out", default=None, help="result JSON (default: runs/decode_profile.json)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from splitrl.provenance import run_record

    names = [p.strip() for p in args.precisions.split(",") if p.strip()]
    comp = {p.strip() for p in args.compiled.split(",") if p.strip()}
    rows = []
    for p in names:
        rows.append(profile_precision(p, False))
        if p in comp:
            rows.append(profile_precision(p, True))
    result = {**run_record(threads=1), "model": "smollm2-135m", "prompt_tokens": 128,
              "profiled": "decode steps only (the prefill runs before the profiler starts)",
              "compiled_rows": "kernels inside a compiled graph are booked under its 'Call CompiledFxGraph' entries, "
                               "so matmul_share counts only the eager head there; read kernel_floor_ms",
              "profiles": rows}
    out = Path(args.out) if args.out else ROOT / "runs" / "decode_profile.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    for r in rows:
        print(f"{r['precision']:>5}{' compiled' if r['compiled'] else ' eager   '}: {r['median_step_ms']:.2f} ms/step, "
              f"kernel floor {r['kernel_floor_ms']:.2f} ms, rest {r['rest_of_step_ms']:.2f} ms; matmul kernels "
              f"{r['matmul_share']:.0%}; " + ", ".join(f"{o['op']} {o['share']:.0%}" for o in r["top_ops"][:4]))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
