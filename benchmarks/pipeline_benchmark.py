"""Benchmark of the K-device ring (MDI-LLM recurrent pipeline parallelism) -> benchmarks/results/pipeline.json.

What it measures (one run, one machine, everything compared within the run):

1. Decode time per layer, embedding and head of the model on this machine (1 thread).
2. Real runs: one process with 1 thread generating the prompts one after the other (baseline)
   against real K-process rings (1 thread each) with S samples in flight, K = 2, 3 and S = 1..4,
   cuts from the DP on the measured layer times. K = 2, S = 2 and the baseline are repeated and
   interleaved; medians are reported with their spread.
3. The discrete-event simulator predicting each real run, from (a) the stage compute times the
   run itself measured and (b) the offline per-layer times; both with 2 cores shared and one
   per-hop overhead calibrated on the K = 2, S = 1 run. Relative errors are reported.
4. Simulated throughput vs K = 1..4 and S = 1..8 on phone -> Jetson rings over Wi-Fi 6 and NR
   sub-6, from the measured layer times scaled to each profile's FLOP/s; per-device memory vs K;
   DP cuts vs the equal split and MDI-LLM's table on a heterogeneous device set.

Timing runs take ``flock /tmp/splitrl-bench.lock`` (other engineers share the 2 cores); the load
average is recorded before and after.

    flock /tmp/splitrl-bench.lock .venv/bin/python benchmarks/pipeline_benchmark.py

Its defaults are the reported configuration: 96 new tokens per sample (long enough that the
pipeline's fill and drain weigh little), 3 interleaved repeats of baseline vs K = 2, S = 2, real
K = 2, 3 x S = 1..4; a few minutes on 2 quiet cores. Every stage process loads only its own layers
(`splitrl.models.load_model(layers=...)`); the parameter bytes each stage holds are measured for
K = 1..4 and reported with each real run's per-stage peak RSS.

``--reuse-timing FILE`` recomputes only the simulated sections (4) from an earlier result's
measured times, keeping its timing sections and recording where they came from.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from splitrl.cost.pipeline import DeviceTimes, PipelineCostModel, measure_decode_times, ring_throughput  # noqa: E402
from splitrl.models import load_model  # noqa: E402
from splitrl.pipeline import PipelineConfig, run_pipeline  # noqa: E402
from splitrl.pipeline.partition import cost_fn, dp_cuts, equal_cuts, mdi_llm_cuts  # noqa: E402
from splitrl.pipeline.simulator import simulate_ring  # noqa: E402
from splitrl.pipeline.stage import param_bytes  # noqa: E402
from splitrl.plotting import pyplot, save_figure
from splitrl.provenance import run_record  # noqa: E402

# Keys of sections 1-3 (timing); --reuse-timing copies them from an earlier result.
TIMING_KEYS = (
    "measured_decode_ms", "real_cuts", "real_runs_exact", "baseline_tokens_per_s", "k2_s2_tokens_per_s",
    "real_k2_s2_throughput_ratio", "real_k2_s2_throughput_ratio_per_repeat", "real_k2_s2_target",
    "sim_hop_overhead_ms_calibrated_on_k2_s1", "sim_vs_real", "sim_vs_real_rel_error", "sim_vs_real_rel_error_max",
    "sim_vs_real_rel_error_offline_times", "sim_vs_real_target", "real_runs", "loadavg_start",
    "tokens_per_sample", "repeats",
)

PROMPTS = [
    "The history of the city begins",
    "In mathematics, a prime number is",
    "The river flows through the valley and",
    "Scientists have discovered that",
]


def baseline_run(lm, prompts: list[str], new_tokens: int) -> dict:
    """One process, 1 thread, the whole model, the prompts one after the other (greedy, KV cache)."""
    from transformers.cache_utils import DynamicCache

    view, tok = lm.view, lm.tokenizer
    L = view.num_layers
    n = 0
    t0 = time.perf_counter()
    with torch.inference_mode():
        for p in prompts:
            ids = torch.tensor([tok(p)["input_ids"]])
            cache = DynamicCache(config=view.config)
            pos = torch.arange(ids.shape[1]).unsqueeze(0)
            h = view.run_layers(view.embed(ids, pos), 0, L, pos, cache=cache)
            nxt = view.head(h[:, -1, :]).argmax(-1, keepdim=True)
            n += 1
            for step in range(new_tokens - 1):
                p_ = torch.tensor([[ids.shape[1] + step]])
                h = view.run_layers(view.embed(nxt, p_), 0, L, p_, cache=cache)
                nxt = view.head(h[:, -1, :]).argmax(-1, keepdim=True)
                n += 1
    wall = time.perf_counter() - t0
    return {"tokens": n, "wall_s": wall, "tokens_per_s": n / wall}


def real_run(model: str, cuts: list[int], prompts: list[str], new_tokens: int, log_dir: Path) -> dict:
    res = run_pipeline(PipelineConfig(model=model, cuts=cuts, prompts=prompts, max_new_tokens=new_tokens,
                                      stop_at_eos=False, threads=1, log_dir=str(log_dir)))
    reports = sorted(res.reports, key=lambda r: r["rank"])
    return {
        "K": len(cuts) + 1, "S": len(prompts), "cuts": cuts, "tokens": res.tokens, "wall_s": res.wall_s,
        "tokens_per_s": res.tokens_per_s, "startup_s": res.startup_s,
        "stage_compute_s": [r["compute_s"] for r in reports], "stage_messages": [r["messages"] for r in reports],
        "stage_recv_wait_s": [r["recv_wait_s"] for r in reports],
        "stage_param_MiB": [r["param_bytes"] / 2**20 for r in reports],
        "stage_peak_rss_MiB": [r["peak_rss_bytes"] / 2**20 for r in reports],
        "stage_rss_at_end_MiB": [r["rss_bytes"] / 2**20 for r in reports],
        "token_ids": [s.token_ids for s in res.samples], "_reports": res.reports,
    }


def stage_times(times: DeviceTimes, cuts: list[int], L: int) -> list[float]:
    b = [0, *cuts, L]
    out = [float(sum(times.layer_s[b[k]:b[k + 1]])) for k in range(len(b) - 1)]
    out[0] += times.embed_s + times.head_s
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=96, help="new tokens per sample in the real runs")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats of baseline vs K=2,S=2")
    ap.add_argument("--max-k", type=int, default=3, help="largest K of the real runs")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/pipeline.json"))
    ap.add_argument("--reuse-timing", default=None,
                    help="take sections 1-3 (measured times, real runs, simulator vs real) from this earlier result "
                         "of this script and recompute only the simulated sections (no timing, no lock needed)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out: dict = {**run_record(threads=1), "model": args.model, "threads_per_process": 1, "cpu_count": os.cpu_count(),
                 "loadavg_start": list(os.getloadavg())}
    lm = load_model(args.model)
    view = lm.view
    L = view.num_layers
    log_dir = Path("/tmp") / f"splitrl-pipeline-bench-{os.getpid()}"
    log_dir.mkdir(exist_ok=True)

    if args.reuse_timing:
        prev = json.loads(Path(args.reuse_timing).read_text())
        timing_keys = [k for k in prev if k in TIMING_KEYS]
        out.update({k: prev[k] for k in timing_keys})
        out["timing_sections_from"] = {"git_revision": prev["git_revision"],
                                       "dirty": prev.get("git_dirty", prev.get("dirty")),
                                       "command": prev["command"], "loadavg_start": prev["loadavg_start"],
                                       "loadavg_end": prev.get("loadavg_end")}
        m = prev["measured_decode_ms"]
        here = DeviceTimes("this-machine", tuple(t / 1e3 for t in m["per_layer"]), m["embed"] / 1e3, m["head"] / 1e3)
        sims, runs = prev["sim_vs_real"], None
        b = prev["baseline_tokens_per_s"]
    else:
        out["tokens_per_sample"], out["repeats"] = args.tokens, args.repeats
        # 1. measured decode times on this machine
        here = measure_decode_times(lm, context=16, steps=12)
        out["measured_decode_ms"] = {"layers_total": 1e3 * sum(here.layer_s), "per_layer": [1e3 * t for t in here.layer_s],
                                     "embed": 1e3 * here.embed_s, "head": 1e3 * here.head_s}
        # DP cuts on the measured times (every stage on this machine's speed; the starter also runs the head)
        same = PipelineCostModel(view, ["jetson-orin"] * 4, "wifi6-20mhz", times=[here] * 4)
        stage_fn, _ = cost_fn(same, context=32, samples=1)
        cuts_for = {K: dp_cuts(L, K, stage_fn, [0.0] * K)[0] for K in range(1, 5)}
        out["real_cuts"] = {str(K): c for K, c in cuts_for.items()}

        # 2. real runs, interleaved
        from tqdm import tqdm

        runs: list[dict] = []
        base: list[dict] = []
        plan = []
        for r in range(args.repeats):
            plan += [("base", None, None), ("ring", 2, 2)]
        for K in range(2, args.max_k + 1):
            for S in range(1, 5):
                if not (K == 2 and S == 2):
                    plan.append(("ring", K, S))
        for kind, K, S in tqdm(plan, desc="real runs"):
            if kind == "base":
                base.append(baseline_run(lm, PROMPTS[:2], args.tokens))
            else:
                runs.append(real_run(args.model, cuts_for[K], PROMPTS[:S], args.tokens, log_dir))
        # exactness on the side: every ring run's greedy ids equal the single-process ones
        ref = {}
        for p in PROMPTS:
            ids = torch.tensor([lm.tokenizer(p)["input_ids"]])
            with torch.no_grad():
                g = lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.tokens, do_sample=False,
                                      eos_token_id=None, pad_token_id=lm.tokenizer.eos_token_id)
            ref[p] = g[0, ids.shape[1]:].tolist()
        out["real_runs_exact"] = all(r["token_ids"][i] == ref[PROMPTS[i]] for r in runs for i in range(r["S"]))

        k2s2 = [r["tokens_per_s"] for r in runs if r["K"] == 2 and r["S"] == 2]
        b = [x["tokens_per_s"] for x in base]
        ratios = [x / y for x, y in zip(k2s2, b)]
        out["baseline_tokens_per_s"] = b
        out["k2_s2_tokens_per_s"] = k2s2
        out["real_k2_s2_throughput_ratio"] = float(np.median(k2s2) / np.median(b))
        out["real_k2_s2_throughput_ratio_per_repeat"] = ratios
        out["real_k2_s2_target"] = 1.6

        # 3. simulator vs real
        cal = next(r for r in runs if r["K"] == 2 and r["S"] == 1)
        per_tok_cal = [c / m for c, m in zip(cal["stage_compute_s"], cal["stage_messages"])]
        round_real = cal["wall_s"] / cal["tokens"]
        hop_overhead = max(0.0, (round_real - sum(per_tok_cal)) / 2)
        out["sim_hop_overhead_ms_calibrated_on_k2_s1"] = 1e3 * hop_overhead
        sims = []
        for r in runs:
            K, S = r["K"], r["S"]
            in_run = [c / m for c, m in zip(r["stage_compute_s"], r["stage_messages"])]
            offline = stage_times(here, r["cuts"], L)
            row = {"K": K, "S": S, "cuts": r["cuts"], "real_tokens_per_s": r["tokens_per_s"]}
            for name, st in (("in_run_times", in_run), ("offline_times", offline)):
                sim = simulate_ring(st, [hop_overhead] * K, S, args.tokens, cores=2)
                row[f"sim_{name}_tokens_per_s"] = sim.throughput_tok_s
                row[f"rel_error_{name}"] = abs(sim.throughput_tok_s - r["tokens_per_s"]) / r["tokens_per_s"]
            sims.append(row)
        out["sim_vs_real"] = sims
        errs = [s["rel_error_in_run_times"] for s in sims if not (s["K"] == 2 and s["S"] == 1)]
        out["sim_vs_real_rel_error"] = float(np.median(errs))
        out["sim_vs_real_rel_error_max"] = float(np.max(errs))
        out["sim_vs_real_rel_error_offline_times"] = float(np.median(
            [s["rel_error_offline_times"] for s in sims if not (s["K"] == 2 and s["S"] == 1)]))
        out["sim_vs_real_target"] = 0.15
        out["real_runs"] = [{k: v for k, v in r.items() if not k.startswith("_") and k != "token_ids"} for r in runs]

    # 4. profiles: the measured per-layer shape of this machine, scaled so that the layers (and the
    # head) take what the profile's roofline says on that device (decode is bandwidth- and
    # dispatch-bound, so a plain FLOP/s ratio would make a Jetson ~1000x faster than it is).
    def times_for(name: str) -> DeviceTimes:
        roof = PipelineCostModel(view, [name], "wifi6-20mhz")
        layers = roof.stage_time(0, 0, L, 128, starter=False)
        head = roof.stage_time(0, 0, 0, 128, starter=True)
        f = sum(here.layer_s) / layers
        return DeviceTimes(name, tuple(t / f for t in here.layer_s), head * here.embed_s / (here.embed_s + here.head_s),
                           head * here.head_s / (here.embed_s + here.head_s))

    sweep: dict = {}
    for dev in ("jetson-orin", "phone-midrange"):
        for link in ("wifi6-20mhz", "nr-sub6-20mhz"):
            ring_devices = [dev] * 4
            pcm = PipelineCostModel(view, ring_devices, link, codec="fp16", times=[times_for(d) for d in ring_devices])
            rows = {}
            for K in range(1, 5):
                stage_fn, hops = cost_fn(pcm, context=128, samples=8)
                cuts, _ = dp_cuts(L, K, stage_fn, hops)
                est = pcm.estimate(cuts, context=128, samples=1)
                hop = est.hop_s if K > 1 else [0.0]
                thr = [simulate_ring(est.stage_s, hop, S, 64, record=True).steady_throughput() for S in range(1, 9)]
                rows[str(K)] = {"cuts": cuts, "stage_ms": [1e3 * t for t in est.stage_s],
                                "hop_ms": [1e3 * t for t in hop], "throughput_tok_s_vs_S": thr,
                                "closed_form_tok_s_vs_S": [ring_throughput(S, est.stage_s, hop) for S in range(1, 9)]}
            sweep[f"{dev}+{link}"] = {"devices": ring_devices, "link": link, "codec": "fp16", "by_K": rows}
    out["throughput_vs_K_S"] = sweep
    out["throughput_vs_K_S_note"] = ("simulated; per-layer times measured here, scaled per device to its roofline "
                                     "decode time at context 128; DP cuts; fp16 activations on every hop")

    # per-stage parameter memory vs K, measured: what each stage's partial load materialises
    cuts_k = out.get("real_cuts") or {str(K): equal_cuts(L, K) for K in range(1, 5)}
    mem = {}
    for K in range(1, 5):
        cuts = cuts_k.get(str(K), equal_cuts(L, K))
        b_ = [0, *cuts, L]
        mem[str(K)] = {"cuts": cuts, "param_MiB": [
            param_bytes(load_model(args.model, layers=(b_[k], b_[k + 1]), embed=k == 0, head=k == 0).model) / 2**20
            for k in range(K)]}
    out["param_MiB_per_stage_vs_K_measured"] = mem
    out["param_memory_note"] = ("bytes of the parameters each stage process materialises with its partial load "
                                "(fp32; the starter holds the tied embedding/head); real runs also report each "
                                "stage's peak RSS (Python + torch + weights + KV)")
    ring_devices = ["phone-midrange", "jetson-orin", "jetson-orin", "jetson-orin"]
    pcm = PipelineCostModel(view, ring_devices, "wifi6-20mhz", codec="fp16")
    out["memory_MiB_per_device_vs_K"] = {
        str(K): [m / 2**20 for m in pcm.estimate(equal_cuts(L, K), context=256, samples=4).memory_bytes]
        for K in range(1, 5)
    }
    out["memory_note"] = "weights at each profile's dtype + KV of 4 samples x 256 positions; equal split"

    hetero = ["phone-midrange", "jetson-orin", "phone-flagship"]
    pcm = PipelineCostModel(view, hetero, "wifi6-20mhz", codec="fp16", times=[times_for(d) for d in hetero])
    stage_fn, hops = cost_fn(pcm, context=128, samples=4)
    dp, _ = dp_cuts(L, 3, stage_fn, hops)
    res = {}
    for name, cuts in (("dp", dp), ("equal", equal_cuts(L, 3)), ("mdi_llm", mdi_llm_cuts(L, 3))):
        est = pcm.estimate(cuts, context=128, samples=4)
        res[name] = {"cuts": cuts, "stage_ms": [1e3 * t for t in est.stage_s],
                     "throughput_tok_s": simulate_ring(est.stage_s, est.hop_s, 4, 64, record=True).steady_throughput()}
    out["hetero_devices"] = hetero
    out["hetero_partitions"] = res
    out["dp_vs_equal_throughput"] = res["dp"]["throughput_tok_s"] / res["equal"]["throughput_tok_s"]
    out["dp_vs_mdi_llm_throughput"] = res["dp"]["throughput_tok_s"] / res["mdi_llm"]["throughput_tok_s"]
    out["loadavg_end"] = out["timing_sections_from"]["loadavg_end"] if args.reuse_timing else list(os.getloadavg())

    # plots
    plt = pyplot()

    fig, axes = plt.subplots(1, 5, figsize=(24, 4))
    for ax, key in zip(axes[:4], sweep):
        for K, row in sweep[key]["by_K"].items():
            ax.plot(range(1, 9), row["throughput_tok_s_vs_S"], marker="o", label=f"K={K} cuts {row['cuts']}")
        ax.set_title(f"simulated: {key}", fontsize=9)
        ax.set_xlabel("samples in flight S")
        ax.set_ylabel("tokens/s")
        ax.legend(fontsize=7)
    ax = axes[4]
    for K in sorted({s["K"] for s in sims}):
        xs = [s["S"] for s in sims if s["K"] == K]
        ax.plot(xs, [s["real_tokens_per_s"] for s in sims if s["K"] == K], "o-", label=f"real K={K}")
        ax.plot(xs, [s["sim_in_run_times_tokens_per_s"] for s in sims if s["K"] == K], "x--", label=f"sim K={K}")
    ax.axhline(float(np.median(b)), color="gray", ls=":", label="1 process, 1 thread")
    ax.set_title(f"real vs simulated on this machine ({args.model})")
    ax.set_xlabel("samples in flight S")
    ax.set_ylabel("tokens/s")
    ax.legend(fontsize=7)
    png = Path(args.out).with_suffix(".png")
    save_figure(fig, png, dpi=110)
    if runs is not None:  # the schedule of a real run (kept from the timing run when reusing it)
        from splitrl.pipeline.plot import plot_schedule

        sched = next((r for r in runs if r["K"] == args.max_k and r["S"] == 3), runs[-1])
        plot_schedule(sched["_reports"], Path(args.out).with_name("pipeline_schedule.png"),
                      title=f"real ring K={sched['K']} S={sched['S']} cuts {sched['cuts']} ({args.model})")
        out["produced_files"] = ["pipeline_schedule.png"]
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps({k: out[k] for k in ("real_k2_s2_throughput_ratio", "sim_vs_real_rel_error",
                                          "dp_vs_equal_throughput", "real_runs_exact", "loadavg_start")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
