#!/usr/bin/env python
"""One llama.cpp greedy generation, timed; prints one JSON line (the helper of ``decode_speed.py``).

Runs under whichever Python has ``llama-cpp-python`` (the optional ``bench`` extra, or a separate
venv: building it from source takes ~10 min on 2 cores, so it is kept out of the project's .venv).
Needs only the standard library and ``llama_cpp``: it never imports torch or splitrl.

    /path/to/venv/bin/python benchmarks/llama_cpp_decode.py --model FILE.gguf --threads 1 \
        --new-tokens 64 < prompt_ids.json        # a JSON list of token ids on stdin

Loads the GGUF (``llama_cpp.Llama(model_path=..., n_threads=t, n_threads_batch=t)``), runs one
short warm-up generation, then one timed generation of exactly ``--new-tokens`` greedy tokens
(temperature 0, no repeat penalty, EOS does not stop it) from the given prompt ids, with the KV
cache cleared first so the prompt is evaluated in full. Timing matches
``splitrl.runtime.RequestReport``: ``prefill_s`` is the wall time to the first generated token,
``decode_tokens_per_s`` = (new tokens - 1) / (wall time of the remaining tokens).

The JSON line always has ``available``; when ``llama_cpp`` cannot be imported it is false with the
``reason`` and the exit status is 0 (the caller records that instead of a number); any other
failure prints ``available: false`` with the error and exits 1.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time


def generate(llm, prompt: list[int], n: int) -> tuple[list[int], float, float]:
    """(token ids, prefill seconds, decode seconds) of ``n`` greedy tokens after ``prompt``."""
    llm.reset()  # n_tokens = 0: generate() then evaluates the whole prompt (no prefix reuse)
    out: list[int] = []
    t0 = time.perf_counter()
    t_first = t0
    gen = llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True)
    try:
        for tok in gen:
            out.append(int(tok))
            if len(out) == 1:
                t_first = time.perf_counter()
            if len(out) >= n:
                break
    finally:
        gen.close()
    t_end = time.perf_counter()
    return out, t_first - t0, t_end - t_first


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="the GGUF file")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--warmup-tokens", type=int, default=4)
    ap.add_argument("--n-ctx", type=int, default=0, help="context size (default: prompt + new tokens, rounded up)")
    args = ap.parse_args()
    record: dict = {"engine": "llama.cpp", "threads": args.threads, "python": platform.python_version(),
                    "executable": sys.executable}
    try:
        import llama_cpp
    except ImportError as e:
        record.update(available=False, reason=f"llama_cpp not importable in {sys.executable}: {e}")
        print(json.dumps(record), flush=True)
        return 0
    try:
        prompt = [int(t) for t in json.loads(sys.stdin.read())]
        if not prompt or args.new_tokens < 2:
            raise ValueError("need a non-empty prompt and --new-tokens >= 2")
        n_ctx = args.n_ctx or 64 * (-(-(len(prompt) + args.new_tokens + args.warmup_tokens) // 64))
        t0 = time.perf_counter()
        llm = llama_cpp.Llama(model_path=args.model, n_threads=args.threads, n_threads_batch=args.threads,
                              n_ctx=n_ctx, n_batch=max(512, len(prompt)), verbose=False)
        load_s = time.perf_counter() - t0
        generate(llm, prompt, max(2, args.warmup_tokens))  # warm-up: thread pool, page cache, allocator
        ids, prefill_s, decode_s = generate(llm, prompt, args.new_tokens)
        info = llama_cpp.llama_print_system_info()
        record.update(
            available=True, llama_cpp_python=getattr(llama_cpp, "__version__", "unknown"),
            system_info=info.decode() if isinstance(info, bytes) else str(info), model=args.model,
            n_ctx=n_ctx, load_s=load_s, prompt_tokens=len(prompt), new_tokens=len(ids), token_ids=ids,
            prefill_s=prefill_s, decode_s=decode_s,
            decode_tokens_per_s=(len(ids) - 1) / decode_s if decode_s > 0 and len(ids) > 1 else 0.0,
        )
    except Exception as e:  # noqa: BLE001 - reported to the caller as one JSON line
        record.update(available=False, reason=f"{type(e).__name__}: {e}")
        print(json.dumps(record), flush=True)
        return 1
    print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
