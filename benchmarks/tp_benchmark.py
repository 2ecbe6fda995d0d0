"""Tensor-parallel benchmark (TPI-LLM): exactness, sliding-window memory/latency, all-reduce kinds, TP vs one process.

Reproduce (~10-15 min on 2 shared CPU cores; timing sections want the bench lock)::

    flock /tmp/splitrl-bench.lock .venv/bin/python benchmarks/tp_benchmark.py
    .venv/bin/python benchmarks/tp_benchmark.py --quick --out /tmp/tp.json   # smoke run

Writes ``benchmarks/results/tensor_parallel.json`` and ``tensor_parallel.png``. Sections (SmolLM2-135M,
float32, greedy, real worker processes on loopback gloo, 1 thread per rank unless stated):

* exactness: N = 2 logits vs the unsplit model (max abs diff); greedy 32 tokens for N = 2, 3.
* window: for W in {all, 2, 4, 8} a *fresh* 2-rank group each (so no allocator state carries
  over); worker rank 1's anonymous resident memory (``RssAnon``) is sampled every 2 ms during
  set-up and generation; peak and steady state above its baseline (after imports, before any
  weight). Per-token latency ratio W = 4 vs all resident from one group, interleaved, repeated.
* all-reduce: star / ring / engine for N = 2..4, interleaved and repeated (twice); all-reduce seconds
  per generated token on the master, measured on loopback; then modelled for link latencies
  0.1-10 ms (``splitrl.cost.tensor_parallel``: loopback compute kept, loopback all-reduce time
  replaced by the modelled one) against one device, with the crossover latency.
* N = 2 tensor-parallel (1 thread per rank) vs one process with 2 threads (N = 1), interleaved.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics as st
import subprocess
import sys
import time
from pathlib import Path

from splitrl.plotting import pyplot, save_figure

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _git() -> dict:
    def run(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {"git_revision": run("rev-parse", "HEAD"), "dirty": bool(run("status", "--porcelain"))}


def _med(xs: list[float]) -> dict:
    return {"median": st.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tensor_parallel.json"))
    ap.add_argument("--work-dir", default="/tmp/splitrl-tp-bench")
    ap.add_argument("--quick", action="store_true", help="fewer tokens/repeats (smoke run)")
    ap.add_argument("--link-rate", type=float, default=100e6, help="link rate (bit/s) for the modelled curves")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import torch
    from tqdm import tqdm

    from splitrl.cost.tensor_parallel import allreduce_time_s
    from splitrl.models import load_model
    from splitrl.runtime import SplitRuntime
    from splitrl.tp.driver import TPCluster, prepare_shards
    from splitrl.tp.worker import TPRunConfig

    torch.set_num_threads(1)
    work = Path(args.work_dir)
    (work / "shards").mkdir(parents=True, exist_ok=True)
    reps = 1 if args.quick else 3
    ar_reps = 1 if args.quick else 2  # the all-reduce grid is 9 groups per repeat: ~3 min each on 2 cores
    new_tokens = 8 if args.quick else 24
    loaded = load_model(args.model)
    view = loaded.view
    L, H = view.num_layers, view.hidden_size
    prompt = loaded.tokenizer("The capital of France is", return_tensors="pt").input_ids[0].tolist()
    out: dict = {
        "command": " ".join([sys.executable, *sys.argv]), **_git(), "model": args.model, "dtype": "float32",
        "threads_per_rank": 1, "cpu_count": os.cpu_count(), "loadavg_start": list(os.getloadavg()),
        "prompt_tokens": len(prompt), "new_tokens": new_tokens, "repeats": reps, "allreduce_repeats": ar_reps,
    }

    def shards(ratios: list[float]) -> str:
        return str(prepare_shards(loaded, ratios, work / "shards"))

    def cfg(ratios: list[float], **kw) -> TPRunConfig:
        kw.setdefault("timeout_s", 60.0)
        return TPRunConfig(shard_dir=shards(ratios), **kw)

    # ---- exactness --------------------------------------------------------------------------
    _log("exactness")
    with torch.inference_mode():
        ref_logits = loaded.model(torch.tensor([prompt])).logits
    ref_tokens = SplitRuntime(loaded).generate(torch.tensor([prompt]), L, max_new_tokens=32, stop_at_eos=False).token_ids
    exact: dict = {}
    with TPCluster(3, work_dir=work / "exact") as cl:
        cl.setup(cfg([0.5, 0.5]))
        lg = cl.logits(prompt)
        out["tp2_logit_max_abs_diff"] = float((lg - ref_logits).abs().max())
        out["tp2_logit_max_abs_ref"] = float(ref_logits.abs().max())
        for n in (2, 3):
            cl.setup(cfg([1.0] * n))
            toks = cl.generate(prompt, 32, stop_at_eos=False).token_ids
            exact[f"n{n}"] = {"identical": toks == ref_tokens, "tokens": toks}
    out["tp_greedy_identical"] = all(v["identical"] for v in exact.values())
    out["greedy"] = {"reference_tokens": ref_tokens, **exact}
    _log(f"  max abs diff {out['tp2_logit_max_abs_diff']:.3g}, greedy identical {out['tp_greedy_identical']}")

    # ---- sliding window: memory (fresh group per window) --------------------------------------
    windows = [0, 2, 4, 8]
    mem: dict = {}
    for w in tqdm(windows, desc="window memory"):
        with TPCluster(2, work_dir=work / f"mem-w{w}") as cl:
            s = cl.setup(cfg([0.5, 0.5], window=w))
            g = cl.generate(prompt, new_tokens, stop_at_eos=False, sample_memory=True)
        m_setup, m_gen = s[1]["memory"], g.ranks[1]["memory"]
        base = m_gen["baseline_mb"]
        mem[str(w or "all")] = {
            "baseline_mb": base, "peak_mb": max(m_setup["peak_mb"], m_gen["peak_mb"]),
            "steady_mb": m_gen["steady_mb"],
            "peak_above_baseline_mb": max(m_setup["peak_mb"], m_gen["peak_mb"]) - base,
            "steady_above_baseline_mb": m_gen["steady_mb"] - base, "samples": m_setup["samples"] + m_gen["samples"],
            "decode_s_per_token": g.decode_seconds_per_token, "scheduler": g.ranks[1].get("scheduler"),
        }
    out["window_memory_rank1"] = mem
    out["window4_peak_weight_memory_ratio"] = mem["4"]["peak_above_baseline_mb"] / mem["all"]["peak_above_baseline_mb"]
    out["window4_peak_mb"] = {"w4": mem["4"]["peak_mb"], "all_resident": mem["all"]["peak_mb"],
                              "baseline_w4": mem["4"]["baseline_mb"], "baseline_all": mem["all"]["baseline_mb"]}
    _log(f"  W=4 peak ratio {out['window4_peak_weight_memory_ratio']:.3f}")

    # ---- sliding window: latency (one group, interleaved) -------------------------------------
    lat: dict[str, list[float]] = {"all": [], "4": []}
    with TPCluster(2, work_dir=work / "lat") as cl:
        for _ in tqdm(range(reps), desc="window latency"):
            for w in (0, 4):
                cl.setup(cfg([0.5, 0.5], window=w))
                cl.generate(prompt, 2, stop_at_eos=False)  # warm-up (page cache, allocator)
                lat[str(w or "all")].append(cl.generate(prompt, new_tokens, stop_at_eos=False).decode_seconds_per_token)
    out["window_latency_s_per_token"] = {k: _med(v) for k, v in lat.items()}
    out["window4_latency_ratio"] = st.median(lat["4"]) / st.median(lat["all"])
    _log(f"  W=4 latency ratio {out['window4_latency_ratio']:.2f}")

    # ---- all-reduce kinds vs N, and TP vs one process -----------------------------------------
    ar: dict = {}
    one: dict[str, list[float]] = {"n1_threads1": [], "n1_threads2": [], "n2_threads1": []}
    with TPCluster(4, work_dir=work / "ar") as cl:
        for _ in tqdm(range(ar_reps), desc="all-reduce"):
            for n in (2, 3, 4):
                for kind in ("star", "ring", "engine"):
                    cl.setup(cfg([1.0] * n, allreduce=kind))
                    cl.generate(prompt, 2, stop_at_eos=False)
                    g = cl.generate(prompt, new_tokens, stop_at_eos=False)
                    a = g.ranks[0]["allreduce"]
                    rec = ar.setdefault(f"n{n}", {}).setdefault(kind, {"allreduce_s_per_token": [], "s_per_token": [],
                                                                       "bytes_sent_per_token_master": []})
                    rec["allreduce_s_per_token"].append(a["seconds"] / len(g.token_ids))
                    rec["s_per_token"].append(sum(g.step_seconds) / len(g.token_ids))
                    rec["bytes_sent_per_token_master"].append(a["bytes_sent"] / len(g.token_ids))
            for key, n, threads in (("n1_threads1", 1, 1), ("n1_threads2", 1, 2), ("n2_threads1", 2, 1)):
                cl.setup(cfg([1.0] * n, threads=threads))
                cl.generate(prompt, 2, stop_at_eos=False)
                one[key].append(cl.generate(prompt, new_tokens, stop_at_eos=False).decode_seconds_per_token)
    for n, kinds in ar.items():
        for kind, rec in kinds.items():
            for k in list(rec):
                rec[k] = _med(rec[k])
    out["allreduce_loopback"] = ar
    out["one_process"] = {k: _med(v) for k, v in one.items()}
    out["tp2_vs_one_process_same_threads"] = {
        "tp2_1thread_each_s_per_token": st.median(one["n2_threads1"]),
        "one_process_2threads_s_per_token": st.median(one["n1_threads2"]),
        "ratio": st.median(one["n2_threads1"]) / st.median(one["n1_threads2"]),
    }

    # ---- modelled latency sweep and crossover -------------------------------------------------
    one_dev = st.median(one["n1_threads1"])
    lat_grid = [1e-4 * (10 ** (k / 8)) for k in range(17)]  # 0.1 .. 10 ms
    row = H * 4
    model: dict = {"link_rate_bps": args.link_rate, "latency_s": lat_grid, "one_device_s_per_token": one_dev, "curves": {}}
    for n in (2, 3, 4):
        for kind in ("star", "ring", "engine"):
            rec = ar[f"n{n}"][kind]
            compute = rec["s_per_token"]["median"] - rec["allreduce_s_per_token"]["median"]
            curve = [compute + 2 * L * allreduce_time_s(kind, n, row, a, args.link_rate) + a + 8 * row / args.link_rate
                     for a in lat_grid]
            # crossover: latency where the curve meets one device (linear in a)
            slope = (curve[-1] - curve[0]) / (lat_grid[-1] - lat_grid[0])
            at0 = curve[0] - slope * lat_grid[0]
            cross = (one_dev - at0) / slope if slope > 0 else None
            model["curves"][f"n{n}_{kind}"] = {"s_per_token": curve, "loopback_compute_s_per_token": compute,
                                                "crossover_latency_s": cross if cross is None or cross > 0 else 0.0}
    out["modelled"] = model
    out["loadavg_end"] = list(os.getloadavg())

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    _plot(out, Path(args.out).with_suffix(".png"))
    _log(f"wrote {args.out}")
    return 0


def _plot(out: dict, path: Path) -> None:
    plt = pyplot()

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    ns = [2, 3, 4]
    for kind, mk in (("star", "o"), ("ring", "s"), ("engine", "^")):
        ys = [out["allreduce_loopback"][f"n{n}"][kind]["allreduce_s_per_token"]["median"] * 1e3 for n in ns]
        a1.plot(ns, ys, marker=mk, label=kind)
    a1.set_xlabel("ranks N")
    a1.set_ylabel("all-reduce time per token (ms, master)")
    a1.set_title("measured on loopback (2 shared cores)")
    a1.set_xticks(ns)
    a1.legend()
    m = out["modelled"]
    xs = [a * 1e3 for a in m["latency_s"]]
    for key, c in m["curves"].items():
        if key.endswith("engine"):
            continue
        ls = "-" if key.endswith("star") else "--"
        a2.plot(xs, [y * 1e3 for y in c["s_per_token"]], ls, label=key.replace("_", " "))
        if c["crossover_latency_s"]:
            a2.axvline(c["crossover_latency_s"] * 1e3, color="grey", lw=0.5, ls=":")
    a2.axhline(m["one_device_s_per_token"] * 1e3, color="k", lw=1.5, label="one device")
    a2.set_xscale("log")
    a2.set_yscale("log")
    a2.set_xlabel("per-message link latency (ms)")
    a2.set_ylabel("time per token (ms)")
    a2.set_title(f"modelled at {m['link_rate_bps'] / 1e6:.0f} Mb/s (dotted: crossovers)")
    a2.legend(fontsize=7)
    save_figure(fig, path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
