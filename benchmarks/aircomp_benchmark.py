"""AirComp all-reduce benchmark -> benchmarks/results/aircomp.json (+ aircomp.png).

Measures, each against a baseline computed in the same run:
* ``mse_closed_form_max_rel_error``: Monte Carlo of the signal model (1e5 channel uses) against the
  closed forms (M = 1: sigma^2 / min_n P_n |h_n|^2; N = 1: sigma^2 / (P ||h||^2)) and against the
  SDR design's predicted MSE;
* MSE vs SNR per design (SDR, eig, MR, weakest-device MR, SDR lower bound) and vs N;
* ``allreduce_time_ratio_digital_over_aircomp`` vs N from the link model (`splitrl.aircomp.airtime`);
* ``assignment_gain_vs_equal_db``: the slow-timescale assignment (brute force, stochastic SCA, SAA)
  against equal and compute-proportional shares;
* SmolLM2-135M WikiText-2 perplexity (1,024 tokens, one 1,024-token window, as the committed
  single-cut sweep) vs SNR for AirComp tensor parallelism (N = 2, 3; M = 1, 4) emulated in process
  (`splitrl.aircomp.emulate`: the model's row-parallel layers compute N partials and the AirComp
  signal model sums them, 2 L = 60 times per forward), the digital star with int8 / fp16 bit
  errors on the same channel draws, and the committed single-cut analog sweep
  (benchmarks/results/sweep_smollm2.csv, noise entering ONCE per token at one cut).

Run: ``SPLITRL_WIKITEXT=... python benchmarks/aircomp_benchmark.py`` (``--quick`` for a smoke run).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from splitrl.aircomp.airtime import aircomp_seconds, digital_star_seconds, post_mrc_snr_db  # noqa: E402
from splitrl.aircomp.assign import assign, default_problem  # noqa: E402
from splitrl.aircomp.channel import AirCompChannel, AirCompChannelConfig  # noqa: E402
from splitrl.aircomp.design import design, monte_carlo_mse  # noqa: E402
from splitrl.plotting import pyplot, save_figure


def git_revision() -> tuple[str, bool]:
    rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip())
    return rev, dirty


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


# ---------------------------------------------------------------------------------------------
def closed_form_check(draws: int) -> dict:
    rows = []
    cases = [(2, 1, 10.0), (3, 1, 20.0), (5, 1, 0.0), (1, 2, 10.0), (1, 4, 0.0), (1, 8, 20.0)]
    for k, (n, m, snr) in enumerate(cases):
        ch = AirCompChannel(AirCompChannelConfig(devices=n, antennas=m, snr_db=snr, gain_db=0.0), seed=100 + k)
        h, p = ch.draw(), ch.config.power_limits()
        if m == 1:
            closed = 1.0 / float(np.min(p * np.abs(h[:, 0]) ** 2))
            tx = design(h, p, 1.0, "closed")
        else:
            closed = 1.0 / float(p[0] * np.sum(np.abs(h) ** 2))
            tx = design(h, p, 1.0, "sdr", rng=np.random.default_rng(k))
        mc = monte_carlo_mse(h, tx, 1.0, draws, np.random.default_rng(200 + k))
        rows.append({"devices": n, "antennas": m, "snr_db": snr, "closed_form": closed, "design_mse": tx.mse,
                     "monte_carlo": mc, "rel_error": abs(mc / closed - 1.0)})
    # The SDR design (N > 1, M > 1) against its own predicted MSE.
    for k, (n, m, snr) in enumerate([(3, 4, 10.0), (4, 2, 0.0)]):
        ch = AirCompChannel(AirCompChannelConfig(devices=n, antennas=m, snr_db=snr), seed=300 + k)
        h, p = ch.draw(), ch.config.power_limits()
        tx = design(h, p, 1.0, "sdr", rng=np.random.default_rng(k))
        mc = monte_carlo_mse(h, tx, 1.0, draws, np.random.default_rng(400 + k))
        rows.append({"devices": n, "antennas": m, "snr_db": snr, "closed_form": None, "design_mse": tx.mse,
                     "monte_carlo": mc, "rel_error": abs(mc / tx.mse - 1.0)})
    return {"draws": draws, "cases": rows, "max_rel_error": max(r["rel_error"] for r in rows)}


def mse_curves(samples: int, snrs: list[float]) -> dict:
    """Mean MSE in dB over channel draws per design, vs SNR (N = 3, M = 4) and vs N (M = 1, 4; 20 dB)."""
    methods = ["sdr", "eig", "mr", "weakest"]
    vs_snr = {m: [] for m in methods + ["sdr_bound"]}
    for snr in snrs:
        cfg = AirCompChannelConfig(devices=3, antennas=4, snr_db=snr, rx_correlation=0.3)
        hs = AirCompChannel(cfg, seed=7).sample(samples)
        p = cfg.power_limits()
        res = {m: [] for m in methods + ["sdr_bound"]}
        for i, h in enumerate(hs):
            for m in methods:
                tx = design(h, p, 1.0, m, rng=np.random.default_rng(i))
                res[m].append(10 * math.log10(tx.mse))
                if m == "sdr":
                    res["sdr_bound"].append(10 * math.log10(tx.lower_bound))
        for m in res:
            vs_snr[m].append(float(np.mean(res[m])))
    vs_n = {}
    for m_ant in (1, 4):
        curve = []
        for n in range(1, 9):
            cfg = AirCompChannelConfig(devices=n, antennas=m_ant, snr_db=20.0)
            hs = AirCompChannel(cfg, seed=8).sample(max(20, samples // 2))
            vals = [10 * math.log10(design(h, cfg.power_limits(), 1.0, "sdr", rng=np.random.default_rng(i)).mse)
                    for i, h in enumerate(hs)]
            curve.append(float(np.mean(vals)))
        vs_n[f"M={m_ant}"] = curve
    return {"setting": "N=3, M=4, rx_correlation 0.3, Rayleigh; mean of 10 log10 MSE over channel draws",
            "snr_db": snrs, "mean_mse_db_vs_snr": vs_snr, "devices": list(range(1, 9)),
            "mean_mse_db_vs_devices_sdr_20db": vs_n, "samples": samples}


def time_ratios(samples: int) -> dict:
    """Digital star / AirComp air time per all-reduce vs N (SmolLM2 hidden 576; decode = 1 token)."""
    hidden, bw, snr = 576, 1e6, 20.0
    out: dict = {"hidden": hidden, "bandwidth_hz": bw, "snr_db": snr, "antennas": 1, "samples": samples,
                 "devices": list(range(2, 9)), "variants": {}}
    variants = [(c, a, r) for c in ("fp16", "int8") for a in ("tdma", "fdma") for r in ("uncoded", "shannon")]
    for rows, label in ((1, "decode"), (1024, "prefill1024")):
        for codec, access, rate in variants:
            up, tot = [], []
            for n in out["devices"]:
                cfg = AirCompChannelConfig(devices=n, antennas=1, snr_db=snr)
                hs = AirCompChannel(cfg, seed=n).sample(samples)
                d_up, d_tot, a_up, a_tot = [], [], [], []
                for h in hs:
                    s = post_mrc_snr_db(h, cfg.power_limits())
                    dig = digital_star_seconds((rows, hidden), s, bw, codec=codec, access=access, rate=rate)
                    air = aircomp_seconds((rows, hidden), s, bw)
                    d_up.append(dig.uplink_s), d_tot.append(dig.total_s), a_up.append(air.uplink_s), a_tot.append(air.total_s)
                # Medians over channel draws: with Rayleigh fading the rate-adaptive (Shannon) times have a
                # heavy tail (deep fades), which makes the sample mean erratic.
                up.append(float(np.median(d_up) / np.median(a_up)))
                tot.append(float(np.median(d_tot) / np.median(a_tot)))
            out["variants"][f"{label}/{codec}/{access}/{rate}"] = {"uplink_ratio": up, "round_trip_ratio": tot}
    decode = {k: v for k, v in out["variants"].items() if k.startswith("decode/")}
    best = [min(v["uplink_ratio"][i] for v in decode.values()) for i in range(len(out["devices"]))]
    worst = [max(v["uplink_ratio"][i] for v in decode.values()) for i in range(len(out["devices"]))]
    out["headline"] = ("decode (one token), uplink air time, the MOST favourable digital variant per N "
                       "(int8 at Shannon capacity); the range over all variants is reported alongside")
    out["allreduce_time_ratio_digital_over_aircomp"] = dict(zip(map(str, out["devices"]), best))
    out["allreduce_time_ratio_range"] = {str(n): [b, w] for n, b, w in zip(out["devices"], best, worst)}
    return out


def assignment(quick: bool) -> dict:
    out = {}
    for m in (1, 4):
        prob = default_problem(antennas=m)
        ch = prob.sample_channels(2000 if m == 1 else (100 if quick else 300), seed=1)
        res = {}
        for method in ("equal", "proportional", "brute_force", "stochastic_sca") + (("saa_convex",) if m == 1 else ()):
            t0 = time.perf_counter()
            r = assign(prob, method, eval_channels=ch, seed=0, iterations=300 if m == 1 else 150, batch=16 if m == 1 else 8)
            res[method] = {**r.to_dict(), "seconds": time.perf_counter() - t0,
                           "energy_per_token_j": prob.energy_per_token_j(np.array(r.units)).tolist(),
                           "compute_latency_s": prob.compute_latency_s(np.array(r.units))}
        res["gain_vs_equal_db"] = res["equal"]["objective_db"] - res["stochastic_sca"]["objective_db"]
        res["gain_vs_proportional_db"] = res["proportional"]["objective_db"] - res["stochastic_sca"]["objective_db"]
        res["sca_minus_brute_force_db"] = res["stochastic_sca"]["objective_db"] - res["brute_force"]["objective_db"]
        out[f"M={m}"] = res
    return out


# ---------------------------------------------------------------------------------------------
def perplexity_sweep(snrs: list[float], seeds: int, tokens: int, rows_path: Path) -> dict:
    """The SmolLM2 sweep; every finished cell is appended to ``rows_path`` (JSONL) and reused on rerun."""
    from tqdm import tqdm

    from splitrl.aircomp.emulate import AirCompReducer, DigitalStarReducer, TPEmulation, exact_reducer
    from splitrl.eval.corpus import corpus_tokens
    from splitrl.eval.perplexity import reference_perplexity
    from splitrl.models import load_model

    lm = load_model("smollm2-135m")
    ids = corpus_tokens(lm.tokenizer, tokens)
    window = tokens
    L = lm.view.num_layers

    def ppl() -> float:
        with torch.no_grad():
            return reference_perplexity(lm.model, ids, window, window)

    done: dict[str, dict] = {}
    if rows_path.is_file():
        for line in rows_path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if r.get("tokens") == tokens:
                    done[r["key"]] = r
    jobs = [("clean", 0, 0, math.inf, 0)] + [("exact", n, 0, math.inf, 0) for n in (2, 3)]
    for snr in snrs:  # SNR-major so that an interrupted run still covers every scheme
        for n in (2, 3):
            for m in (1, 4):
                for s in range(seeds):
                    jobs.append(("aircomp", n, m, snr, s))
                for codec in ("int8", "fp16") if n == 3 else ():  # digital star: N = 3 (CPU budget)
                    jobs.append((f"digital-{codec}", n, m, snr, 0))
    rows = []
    for kind, n, m, snr, s in tqdm(jobs, desc="ppl sweep"):
        key = f"{kind}/N={n}/M={m}/snr={snr}/seed={s}"
        if key in done:
            rows.append(done[key])
            continue
        seed = 1000 * n + 100 * m + s
        t0 = time.perf_counter()
        row = {"key": key, "scheme": kind, "devices": n, "antennas": m, "snr_db": _finite(snr), "seed": seed,
               "tokens": tokens}
        if kind == "clean":
            val = ppl()
        elif kind == "exact":
            with TPEmulation(lm.model, [1.0] * n, exact_reducer):
                val = ppl()
        else:
            cfg = AirCompChannelConfig(devices=n, antennas=m, snr_db=snr)
            red = AirCompReducer(cfg, "sdr", seed=seed) if kind == "aircomp" else \
                DigitalStarReducer(cfg, kind.split("-")[1], "tdma", seed=seed)
            with TPEmulation(lm.model, [1.0] * n, red):
                val = ppl()
            if kind == "aircomp":
                row["median_design_mse_db"] = float(np.median(10 * np.log10(red.mses)))
            else:
                row["mean_ber"] = float(np.mean(red.bers))
        row["ppl"] = _finite(val)
        row["seconds"] = time.perf_counter() - t0
        with open(rows_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        rows.append(row)
    clean = next(r["ppl"] for r in rows if r["scheme"] == "clean")
    exact = {str(r["devices"]): r["ppl"] for r in rows if r["scheme"] == "exact"}
    rows = [r for r in rows if r["scheme"] not in ("clean", "exact")]
    # The committed single-cut analog sweep (noise enters once, at one cut).
    import csv

    single = {}
    with open(ROOT / "benchmarks/results/sweep_smollm2.csv") as f:
        for r in csv.DictReader(f):
            if r["transport"] == "awgn" and 0 < int(r["split"]) < L:
                single.setdefault(float(r["snr_db"]), []).append(float(r["ppl"]))
    single_cut = {str(k): {"median_ppl_over_splits": float(np.median(v)), "max_ppl": float(np.max(v))}
                  for k, v in sorted(single.items())}
    return {"model": "smollm2-135m", "tokens": tokens, "window": window, "layers": L,
            "noise_entries_per_forward": 2 * L, "clean_ppl": clean, "exact_tp_ppl": exact,
            "rows": rows, "single_cut_analog_sweep": single_cut,
            "note": "AirComp/digital: every one of the 2L all-reduces of the forward pass sees its own channel "
                    "block and noise; single-cut analog: the hidden state crosses one noisy link once."}


def agent_comparison(calibration: list[tuple[float, float]], train_steps: int, held_out: int) -> dict:
    """Model-based agent vs the optimiser's and equal assignment on held-out AirCompAssign-v0 episodes."""
    import gymnasium as gym

    import splitrl.envs  # noqa: F401
    from splitrl.agents.aircomp import EqualPolicy, ModelBasedAgent, OptimiserPolicy
    from splitrl.experiments.aircomp import evaluate_policy

    env = gym.make("splitrl/AirCompAssign-v0", calibration=calibration)
    t0 = time.perf_counter()
    agent = ModelBasedAgent(env, seed=0).learn(env, train_steps, seed=0)
    learn_s = time.perf_counter() - t0
    seeds = list(range(10_000, 10_000 + held_out))  # held out: training used seeds 0, 1, ...
    res = {"equal": evaluate_policy(env, EqualPolicy(env), seeds),
           "optimiser": evaluate_policy(env, OptimiserPolicy(env), seeds),
           "agent": evaluate_policy(env, agent, seeds)}
    eq, opt, ag = (res[k]["mean_return"] for k in ("equal", "optimiser", "agent"))
    res["agent_fraction_of_optimiser_gain_over_equal"] = (ag - eq) / (opt - eq) if opt != eq else None
    res["agent_return_over_optimiser_return"] = ag / opt if opt else None
    res.update({"train_steps": train_steps, "real_evaluations": agent.evaluations, "learn_seconds": learn_s,
                "held_out_episodes": held_out, "calibration_points": len(calibration),
                "quality_backend": "calibrated (this run's SmolLM2 AirComp rows)"})
    return res


def tp_runtime_check(tokens: int, timeout_s: float) -> dict:
    """The real multi-process runtime: ``splitrl tp ppl`` with star vs aircomp (N = 3, M = 4, 20 dB)."""
    out: dict = {}
    for name, extra in (("star", []), ("aircomp_snr20_m4", ["--allreduce-arg", "snr_db=20", "--allreduce-arg", "antennas=4"]),
                        ("aircomp_snr_inf", ["--allreduce-arg", "snr_db=Infinity"])):
        kind = "star" if name == "star" else "aircomp"
        cmd = [sys.executable, "-m", "splitrl", "tp", "ppl", "--model", "smollm2-135m", "--shards", "3",
               "--tokens", str(tokens), "--ctx", str(tokens), "--allreduce", kind, *extra, "--json"]
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
            line = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
            rep = json.loads(line[-1]) if p.returncode == 0 and line else {"error": p.stderr[-500:]}
        except subprocess.TimeoutExpired:
            rep = {"error": f"timed out after {timeout_s} s"}
        rep["command"] = " ".join(["python"] + cmd[1:])
        rep["seconds"] = time.perf_counter() - t0
        out[name] = rep
    # The in-process emulation with the runtime's seed (AirCompAllReduce(seed=0) and AirCompReducer(seed=0)
    # spawn the same channel / design / noise streams and the runtime makes the same 60 calls in the same
    # order), so the two must agree up to fp32 summation order.
    from splitrl.aircomp.emulate import AirCompReducer, TPEmulation
    from splitrl.eval.corpus import corpus_tokens
    from splitrl.eval.perplexity import reference_perplexity
    from splitrl.models import load_model

    lm = load_model("smollm2-135m")
    ids = corpus_tokens(lm.tokenizer, tokens)
    red = AirCompReducer(AirCompChannelConfig(devices=3, antennas=4, snr_db=20.0), "sdr", seed=0)
    with torch.no_grad(), TPEmulation(lm.model, [1.0, 1.0, 1.0], red):
        emu = reference_perplexity(lm.model, ids, tokens, tokens)
    out["emulation_same_seed_snr20_m4"] = emu
    if "perplexity" in out["aircomp_snr20_m4"]:
        out["emulation_vs_runtime_rel_diff"] = abs(emu / out["aircomp_snr20_m4"]["perplexity"] - 1.0)
    return out


def summarise_ppl(sweep: dict) -> dict:
    out: dict = {}
    for r in sweep["rows"]:
        key = f"{r['scheme']}/N={r['devices']}/M={r['antennas']}"
        out.setdefault(key, {}).setdefault(str(r["snr_db"]), []).append(r["ppl"])
    table = {}
    for key, by_snr in out.items():
        table[key] = {s: (float(np.median([v if v is not None else math.inf for v in vals]))
                          if any(v is not None for v in vals) else None) for s, vals in by_snr.items()}
        table[key] = {s: _finite(v) if v is not None else None for s, v in table[key].items()}
    return table


def plot(result: dict, path: Path) -> None:
    plt = pyplot()

    n_panels = 3 if "perplexity" in result else 2
    fig, axes = plt.subplots(1, n_panels, figsize=(5.2 * n_panels, 4.2))
    c = result["mse_curves"]
    ax = axes[0]
    for m, vals in c["mean_mse_db_vs_snr"].items():
        ax.plot(c["snr_db"], vals, marker="o", ls="--" if m == "sdr_bound" else "-", label=m)
    ax.set_xlabel("transmit SNR (dB)"), ax.set_ylabel("mean MSE (dB)"), ax.set_title("AirComp MSE, N=3, M=4")
    ax.legend(), ax.grid(alpha=0.3)
    ax = axes[1]
    t = result["time_model"]
    for name in ("decode/fp16/tdma/uncoded", "decode/int8/tdma/uncoded", "decode/fp16/fdma/shannon",
                 "decode/int8/tdma/shannon"):
        ax.plot(t["devices"], t["variants"][name]["uplink_ratio"], marker="o", label=name.replace("decode/", ""))
    ax.axhline(5, color="gray", ls=":", label="paper: up to 5x")
    ax.set_xlabel("devices N"), ax.set_ylabel("digital / AirComp uplink air time"), ax.set_yscale("log")
    ax.set_title(f"all-reduce air time ratio ({t['snr_db']:.0f} dB)"), ax.legend(fontsize=7), ax.grid(alpha=0.3)
    if n_panels == 3:
        ax = axes[2]
        tab = result["perplexity"]["median_ppl"]
        for key, by_snr in sorted(tab.items()):
            xs = sorted(float(s) for s in by_snr)
            ys = [by_snr[str(x)] if by_snr[str(x)] is not None else np.nan for x in xs]
            ax.plot(xs, ys, marker="o", ls="-" if key.startswith("aircomp") else "--", label=key, lw=1.2)
        sc = result["perplexity"]["single_cut_analog_sweep"]
        ax.plot([float(s) for s in sc], [v["median_ppl_over_splits"] for v in sc.values()], "k:", marker="s",
                label="single-cut analog (median over splits)")
        ax.axhline(result["perplexity"]["clean_ppl"], color="gray", lw=0.8)
        ax.set_yscale("log"), ax.set_ylim(10, 1e4)
        ax.set_xlabel("transmit SNR (dB)"), ax.set_ylabel("perplexity"), ax.set_title("SmolLM2 WikiText-2 (1,024 tok)")
        ax.legend(fontsize=6), ax.grid(alpha=0.3)
    save_figure(fig, path, dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/aircomp.json"))
    ap.add_argument("--quick", action="store_true", help="small sample sizes (smoke run)")
    ap.add_argument("--skip-ppl", action="store_true", help="skip the SmolLM2 perplexity sweep")
    ap.add_argument("--seeds", type=int, default=1, help="AirComp channel/noise seeds per perplexity cell")
    ap.add_argument("--snrs", default="5,10,15,20,25,30", help="SNR grid (dB) of the perplexity sweep")
    ap.add_argument("--rows", default=str(Path.home() / ".cache/splitrl/aircomp_ppl_rows.jsonl"),
                    help="JSONL of finished perplexity cells (resumable)")
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--tp-check", action="store_true", help="also run `splitrl tp ppl` (3 real ranks) star vs aircomp")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rev, dirty = git_revision()
    t0 = time.perf_counter()
    result: dict = {
        "command": " ".join([sys.executable.split("/")[-1]] + sys.argv),
        "git_revision": rev, "dirty": dirty, "loadavg": list(os.getloadavg()), "torch_threads": torch.get_num_threads(),
    }
    cf = closed_form_check(20_000 if args.quick else 100_000)
    result["mse_closed_form"] = cf
    result["mse_closed_form_max_rel_error"] = cf["max_rel_error"]
    snrs = [0.0, 10.0, 20.0] if args.quick else [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0]
    result["mse_curves"] = mse_curves(20 if args.quick else 100, snrs)
    tm = time_ratios(50 if args.quick else 300)
    result["time_model"] = tm
    result["allreduce_time_ratio_digital_over_aircomp"] = tm["allreduce_time_ratio_digital_over_aircomp"]
    asg = assignment(args.quick)
    result["assignment"] = asg
    result["assignment_gain_vs_equal_db"] = {k: v["gain_vs_equal_db"] for k, v in asg.items()}
    if not args.skip_ppl:
        ppl_snrs = [float(x) for x in args.snrs.split(",")]
        sweep = perplexity_sweep(ppl_snrs, args.seeds, args.tokens, Path(args.rows))
        sweep["median_ppl"] = summarise_ppl(sweep)
        result["perplexity"] = sweep
        clean = sweep["clean_ppl"]
        cal = sorted((r["median_design_mse_db"], math.log(r["ppl"] / clean) if r["ppl"] else math.log(1e6 / clean))
                     for r in sweep["rows"] if r["scheme"] == "aircomp")
        agent = agent_comparison(cal, 120 if args.quick else 400, 5 if args.quick else 20)
        result["agent"] = agent
        result["agent_fraction_of_optimiser"] = agent["agent_fraction_of_optimiser_gain_over_equal"]
    if args.tp_check:
        result["tp_runtime"] = tp_runtime_check(args.tokens, 600.0)
    result["seconds"] = time.perf_counter() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1, allow_nan=False))
    os.replace(tmp, out)
    plot(result, out.with_suffix(".png"))
    keys = ("mse_closed_form_max_rel_error", "allreduce_time_ratio_digital_over_aircomp", "assignment_gain_vs_equal_db",
            "agent_fraction_of_optimiser")
    print(json.dumps({k: result.get(k) for k in keys}, indent=1))
    print(f"wrote {out} and {out.with_suffix('.png')} in {result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
