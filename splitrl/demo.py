"""`make demo`: SmolLM2-135M split between a UE and an edge server, on this CPU.

Generates text through the default split (UE runs embeddings + layers [0, 15), edge the rest),
prints the request report, then the WikiText-2 perplexity at a few split points — identical at
every split with a lossless link, which is the runtime's exactness guarantee.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

from splitrl.cli._common import token_printer
from splitrl.deploy.client import UEClient
from splitrl.eval import CorpusError, PerplexityConfig, PerplexityEvaluator
from splitrl.models import load_model
from splitrl.proc import spawn_splitrl, wait_for_port_file
from splitrl.runtime import SplitRuntime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m splitrl.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--split", type=int, default=None, help="split point (default L/2)")
    parser.add_argument("--tokens", type=int, default=512, help="WikiText-2 tokens for the perplexity part")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    print(f"loading {args.model} ...", flush=True)
    loaded = load_model(args.model)
    runtime = SplitRuntime(loaded)
    L = runtime.num_layers
    split = L // 2 if args.split is None else args.split
    prompt = "Edge computing lets a phone offload part of a neural network because"
    print(f"\n== generate: UE runs embeddings + layers [0, {split}), edge runs [{split}, {L}) + head ==\n")
    sys.stdout.write(prompt)
    result = runtime.generate(prompt, split, max_new_tokens=40, on_token=token_printer(loaded.tokenizer))
    print("\n")
    print(result.report.format())

    two_process_demo(args, loaded, prompt, split, result.token_ids)

    print(f"\n== WikiText-2 perplexity ({args.tokens} tokens, window 256, stride 128), lossless link ==")
    try:
        evaluator = PerplexityEvaluator(loaded, PerplexityConfig(tokens=args.tokens, window=256, stride=128), progress=True)
    except CorpusError as e:
        print(f"skipped: {e}")
        return 0
    for s in sorted({0, 1, L // 4, split, 3 * L // 4, L}):
        r = evaluator.evaluate(s)
        print(f"  split {s:>2}: ppl {r.ppl:8.4f}   ({r.seconds:.2f} s, layers [{s}, {L}) re-run on the edge side)")
    return 0


def two_process_demo(args, loaded, prompt: str, split: int, want: list[int]) -> None:
    """The same request with the edge as a separate process on loopback, stopped by its pid at the end."""
    import tempfile
    from pathlib import Path

    L = loaded.view.num_layers
    print(f"\n== two processes: `splitrl edge` (layers [{split}, {L}) + head) on 127.0.0.1, this process is the UE ==")
    with tempfile.TemporaryDirectory(prefix="splitrl-demo-") as d:
        tmp = Path(d)
        edge = spawn_splitrl(["edge", "--listen", "127.0.0.1:0", "--port-file", tmp / "port", "--token-file",
                              tmp / "token", "--model", args.model, "--layers", f"{split}:"],
                             threads=1, log_path=tmp / "edge.log")
        with edge:
            port = wait_for_port_file(tmp / "port", edge, timeout_s=300)
            print(f"edge pid {edge.pid} listening on 127.0.0.1:{port} (bearer token in a 0600 file)")
            ue = UEClient(f"127.0.0.1:{port}", (tmp / "token").read_text().strip(), loaded)
            ids = loaded.tokenizer(prompt, return_tensors="pt").input_ids
            sys.stdout.write(prompt)
            r = ue.generate(ids, split, max_new_tokens=len(want), on_token=token_printer(loaded.tokenizer))
            ue.close()
            print("\n")
            print(r.report.format())
            same = "identical to" if r.token_ids == want else "DIFFERENT from"
            print(f"tokens over gRPC are {same} the in-process run; stopping the edge (pid {edge.pid})")


if __name__ == "__main__":
    sys.exit(main())
