#!/usr/bin/env python
"""What running the UE and the edge as separate processes costs, and how fast a dead edge is noticed.

1. ``two_process_decode_ratio`` — decode tokens/s of SmolLM2-135M split at layer ``--split``: UE in
   this process, edge in a child process over gRPC on loopback (lossless link, no emulated air
   time), ÷ the same split run in one process. One thread per process, and one thread for the
   in-process baseline (split inference is sequential: one segment computes at a time). Runs are
   interleaved (in-process, two-process, ...), ``--rounds`` of each; medians and spread reported;
   every two-process run's tokens are checked equal to the in-process ones.
2. ``fallback_detect_s`` — median time from SIGKILL of the edge (sent from inside a request, after
   a few tokens) to the UE taking over locally; ``fallback_detect_stop_s`` likewise for SIGSTOP (a
   hung edge, noticed through keepalive / the step deadline). Each request must still finish with
   the in-process tokens. Uses the tiny LLaMA (detection is a transport property).
3. ``fuzz_cases`` / ``fuzz_crashes`` — the wire decoder on the seeded mutation corpus.

Reproduce:  flock /tmp/splitrl-bench.lock .venv/bin/python benchmarks/deploy_overhead.py
Writes benchmarks/results/deploy_overhead.json (with the command and git revision).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _edge(tmp: Path, model: str, name: str, layers: str = "0:"):
    from splitrl.proc import spawn_splitrl, wait_for_port_file

    port_file = tmp / f"{name}.port"
    child = spawn_splitrl(["edge", "--listen", "127.0.0.1:0", "--token-file", tmp / "token", "--port-file", port_file,
                           "--model", model, "--layers", layers], threads=1, log_path=tmp / f"{name}.log")
    return child, wait_for_port_file(port_file, child, timeout_s=300), (tmp / "token")


def _prompt(loaded, n: int) -> torch.Tensor:
    from splitrl.eval.corpus import corpus_tokens

    return corpus_tokens(loaded.tokenizer, n)[0][:n].view(1, -1)


def measure_overhead(args, tmp: Path) -> dict:
    from tqdm.auto import tqdm

    from splitrl.deploy.client import UEClient
    from splitrl.models import load_model
    from splitrl.runtime import SplitRuntime

    loaded = load_model(args.model)
    rt = SplitRuntime(loaded)
    child, port, token_file = _edge(tmp, args.model, "edge-bench", layers=f"{args.split}:")
    try:
        ue = UEClient(f"127.0.0.1:{port}", token_file.read_text().strip(), loaded)
        ids = _prompt(loaded, args.prompt_tokens)
        kw = dict(max_new_tokens=args.new_tokens, stop_at_eos=False)
        rt.generate(ids, args.split, **kw)  # warm-up, both paths
        ue.generate(ids, args.split, **kw)
        local, remote, ttft_local, ttft_remote = [], [], [], []
        identical = True
        for _ in tqdm(range(args.rounds), desc="interleaved rounds", unit="round"):
            a = rt.generate(ids, args.split, **kw)
            b = ue.generate(ids, args.split, **kw)
            identical &= a.token_ids == b.token_ids
            local.append(a.report.decode_tokens_per_s)
            remote.append(b.report.decode_tokens_per_s)
            ttft_local.append(a.report.prefill_seconds)
            ttft_remote.append(b.report.prefill_seconds)
        ue.close()
    finally:
        child.stop()
    ml, mr = statistics.median(local), statistics.median(remote)
    return {
        "two_process_decode_ratio": mr / ml,
        "in_process_decode_tok_s": {"median": ml, "min": min(local), "max": max(local), "runs": local},
        "two_process_decode_tok_s": {"median": mr, "min": min(remote), "max": max(remote), "runs": remote},
        "ttft_ratio": statistics.median(ttft_remote) / statistics.median(ttft_local),
        "two_process_tokens_identical": bool(identical),
        "split": args.split, "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
        "threads_per_process": 1,
    }


def measure_fallback(args, tmp: Path) -> dict:
    from tqdm.auto import tqdm

    from splitrl.deploy.client import UEClient
    from splitrl.models import load_model
    from splitrl.runtime import SplitRuntime

    loaded = load_model("llama-tiny")
    rt = SplitRuntime(loaded)
    ids = loaded.tokenizer("A dead edge must not lose the request", return_tensors="pt").input_ids
    want = rt.generate(ids, 2, max_new_tokens=24, stop_at_eos=False).token_ids
    out: dict[str, list[float]] = {"kill": [], "stop": []}
    exact = True
    for fault in ("kill", "stop"):
        for r in tqdm(range(args.fault_rounds), desc=f"fallback ({fault})", unit="run"):
            child, port, token_file = _edge(tmp, "llama-tiny", f"edge-{fault}-{r}")
            try:
                ue = UEClient(f"127.0.0.1:{port}", token_file.read_text().strip(), loaded)
                marks: dict[str, float] = {}
                orig = ue.runtime.generate

                def on_token(tok, n=[0]):
                    n[0] += 1
                    if n[0] == 4:
                        marks["fault"] = time.monotonic()
                        child.signal(signal.SIGKILL if fault == "kill" else signal.SIGSTOP)

                def generate(*a, **kw):
                    fb = kw.get("fallback")
                    if fb is not None:
                        def timed(k, fb=fb):
                            marks.setdefault("fallback", time.monotonic())
                            return fb(k)
                        kw["fallback"] = timed
                    return orig(*a, **kw)

                ue.runtime.generate = generate
                got = ue.generate(ids, 2, max_new_tokens=24, stop_at_eos=False, on_token=on_token)
                exact &= got.token_ids == want and got.report.fallback_segments == [1]
                out[fault].append(marks["fallback"] - marks["fault"])
                ue.close()
            finally:
                child.stop()
    return {
        "fallback_detect_s": statistics.median(out["kill"]),
        "fallback_detect_stop_s": statistics.median(out["stop"]),
        "fallback_detect_runs_s": out,
        "fallback_requests_exact": bool(exact),
    }


def main() -> None:
    from splitrl.deploy.fuzz import run_fuzz
    from splitrl.provenance import run_record

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--split", type=int, default=15)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--fault-rounds", type=int, default=5)
    ap.add_argument("--fuzz-cases", type=int, default=20_000)
    ap.add_argument("--out", default=str(RESULTS / "deploy_overhead.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    result = {"benchmark": "deploy_overhead", **run_record(threads=1)}
    with tempfile.TemporaryDirectory(prefix="splitrl-deploy-bench-") as d:
        tmp = Path(d)
        result.update(measure_overhead(args, tmp))
        result.update(measure_fallback(args, tmp))
    fz = run_fuzz(args.fuzz_cases, seed=0)
    result.update({"fuzz_cases": fz["cases"], "fuzz_crashes": fz["crashes"], "fuzz_rejected": fz["rejected"],
                   "fuzz_accepted": fz["accepted"]})
    result["targets"] = {"two_process_decode_ratio": ">= 0.90", "fallback_detect_s": "<= 2", "fuzz_crashes": "0"}
    result["loadavg_after"] = list(os.getloadavg())
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("two_process_decode_ratio", "fallback_detect_s", "fallback_detect_stop_s",
                                             "fuzz_cases", "fuzz_crashes", "two_process_tokens_identical")}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
