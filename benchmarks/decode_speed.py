#!/usr/bin/env python
"""Decode speed of splitrl at each weight precision against plain transformers and llama.cpp.

One run, one machine, every engine on the same prompt — 128 WikiText-2 test tokens (token ids
1000..1127 of the raw test file, so no run meets EOS) — generating 64 greedy tokens (EOS does not
stop a run), at 1 and 2 threads:

1. splitrl ``SplitRuntime.generate`` in one process, split 15, at each precision of `PRECISIONS`
   (the same precision for both segments) and at each (UE, edge) pair of `TWO_PROCESS` whose
   precisions differ; eager (the default) and, for the low-bit ones in `COMPILED`, with
   ``--compile`` (``view.compile_decode``: decode steps as ``torch.compile`` graphs,
   `splitrl.quant.compiled`; keys ``splitrl-<p>-compiled-t<n>``; the one-off compilation happens in
   the engine's warm-up, whose wall time is reported as ``warmup_s``);
2. splitrl as two processes over the real gRPC deployment: the UE (``UEClient``, its model loaded at
   the UE's precision) in this process (1 thread), a ``splitrl edge --layers 15: --precision P``
   child (1 thread), for each (UE, edge) pair of
   `TWO_PROCESS`; compared with the in-process run of the same precisions at the same total
   threads (2) and at 1 thread; a low-bit UE also runs compiled (``-compiled``), compared with the
   compiled in-process run;
3. plain transformers fp32: ``AutoModelForCausalLM`` from the same cached model directory, a
   greedy loop with its ``DynamicCache`` (``logits_to_keep=1``, as ``generate`` does);
4. llama.cpp on the same GGUF file through ``llama_cpp.Llama(model_path=..., n_threads=t)``, run by
   `benchmarks/llama_cpp_decode.py` under ``--llama-python`` (llama-cpp-python lives in its own
   venv; the ``bench`` extra installs it into the project's instead). Where it cannot be imported
   the result says so instead of a number.

Decode tok/s = (new tokens - 1) / wall time after the first token; prefill = time to the first
token, reported separately. Repeats are interleaved: every repeat runs every engine once, the
engine order rotated by one each repeat, so drift and other load hit all alike. Reported: the
median, IQR and min/max over repeats of each engine, and the ratios the issue sets targets for,
each computed within a repeat (the runs of one repeat paired) and summarised the same way:

* ``int4_vs_llama_cpp`` (>= 0.8 at each thread count), ``int8_vs_fp32`` (>= 2.5),
  ``fp32_vs_transformers`` (>= 0.97), ``two_process_vs_in_process`` (>= 0.9), each for the eager
  runtime and, where it compiles, for the compiled one (``*_compiled*``).

Provenance (command, git revision, dirty flag, machine, load average) as every result file.

    flock /tmp/splitrl-bench.lock .venv/bin/python benchmarks/decode_speed.py \\
        --llama-python /path/to/venv-llama/bin/python --out benchmarks/results/decode_speed.json

``--quick`` is a smoke test (2 repeats, 16 new tokens); without ``--out`` the result goes to a new
run folder ``runs/decode_speed/<UTC time>/`` (ignored by git), never over the committed file.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
LLAMA_HELPER = Path(__file__).resolve().parent / "llama_cpp_decode.py"

from splitrl.quant.precision import PRECISIONS  # noqa: E402  (one constant: the engines follow it)
THREADS = (1, 2)
SPLIT = 15
PROMPT_TOKENS = 128
PROMPT_OFFSET = 1000  # a WikiText passage: the model keeps writing, no run stops early
NEW_TOKENS = 64
REPEATS = 5
TWO_PROCESS: tuple[tuple[str, str], ...] = (("int4", "fp32"), ("fp32", "fp32"))  # (UE, edge) precisions
COMPILED = ("bf16", "int8", "int4")  # precisions also run with --compile (fp32 keeps the Hugging Face layers)
TARGETS = {
    "int4_vs_llama_cpp": ">= 0.8 (the goal: 1.0), at each thread count",
    "int8_vs_fp32": ">= 2.5, at each thread count",
    "fp32_vs_transformers": ">= 0.97, at each thread count",
    "two_process_vs_in_process": ">= 0.9 (UE int4 / edge fp32 vs the same precisions in one process, "
                                 "same total threads)",
    "compiled": "the same targets for the --compile runtime: int4_compiled_vs_llama_cpp, int8_compiled_vs_fp32, "
                "two_process_compiled_vs_in_process_compiled",
}


# -- summaries ---------------------------------------------------------------------------------
def spread(values: list[float]) -> dict:
    """Median, IQR (inclusive quartiles), min/max and the values themselves."""
    v = [float(x) for x in values]
    if not v:
        return {"median": None, "iqr": None, "min": None, "max": None, "values": []}
    q = statistics.quantiles(v, n=4, method="inclusive") if len(v) > 1 else [v[0]] * 3
    return {"median": statistics.median(v), "iqr": [q[0], q[2]], "min": min(v), "max": max(v), "values": v}


def _label(p: str | tuple[str, str]) -> str:
    return p if isinstance(p, str) else "+".join(p)


# -- engines -----------------------------------------------------------------------------------
@dataclass
class Engine:
    """One thing to time: ``run(n)`` generates ``n`` greedy tokens from the prompt and returns a record."""

    key: str
    kind: str                  # splitrl | splitrl-two-process | transformers | llama.cpp
    threads: int               # threads of the process that computes (two-process: per process)
    precision: str | None
    run: Callable[[int], dict]
    info: dict = field(default_factory=dict)
    available: bool = True
    reason: str | None = None
    close: Callable[[], None] = lambda: None


def _record(token_ids: list[int], prefill_s: float, decode_s: float) -> dict:
    n = len(token_ids)
    return {"token_ids": [int(t) for t in token_ids], "new_tokens": n, "prefill_s": float(prefill_s),
            "decode_s": float(decode_s), "decode_tokens_per_s": (n - 1) / decode_s if decode_s > 0 and n > 1 else 0.0}


def _compiled_steps(view, compiled: bool, fn):
    """``fn()`` with ``view.compile_decode = compiled``; (its result, segment steps that ran compiled)."""
    before = view.compiled_decode.compiled_steps
    view.compile_decode = compiled
    try:
        return fn(), view.compiled_decode.compiled_steps - before
    finally:
        view.compile_decode = False


def splitrl_engine(rt, ids: torch.Tensor, threads: int, precision: str | tuple[str, str], split: int = SPLIT,
                   compiled: bool = False) -> Engine:
    """splitrl in this process, ``split``, one precision for every segment or one per segment."""
    key = f"splitrl-{_label(precision)}{'-compiled' if compiled else ''}-t{threads}"

    def run(n: int) -> dict:
        torch.set_num_threads(threads)
        r, steps = _compiled_steps(rt.view, compiled, lambda: rt.generate(
            ids, split, max_new_tokens=n, stop_at_eos=False, precision=precision))
        if compiled and not steps:
            raise RuntimeError(f"{key}: no decode step ran compiled ({rt.view.compiled_decode.failed})")
        return _record(r.token_ids, r.report.prefill_seconds, r.report.decode_seconds)

    return Engine(key, "splitrl", threads, _label(precision), run, info={"split": split, "compiled": compiled})


def transformers_engine(model, ids: torch.Tensor, threads: int) -> Engine:
    """Plain transformers: prefill, then one token at a time through the model's DynamicCache."""
    from transformers.cache_utils import DynamicCache

    def run(n: int) -> dict:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            cache = DynamicCache(config=model.config)
            t0 = time.perf_counter()
            out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
            nxt = out.logits[:, -1, :].argmax(-1, keepdim=True)
            toks = [int(nxt.item())]
            t_first = time.perf_counter()
            for _ in range(n - 1):
                out = model(input_ids=nxt, past_key_values=cache, use_cache=True, logits_to_keep=1)
                nxt = out.logits[:, -1, :].argmax(-1, keepdim=True)
                toks.append(int(nxt.item()))
            t_end = time.perf_counter()
        return _record(toks, t_first - t0, t_end - t_first)

    return Engine(f"transformers-fp32-t{threads}", "transformers", threads, "fp32", run,
                  info={"method": "AutoModelForCausalLM forward, greedy, DynamicCache, logits_to_keep=1"})


def llama_cpp_probe(python: str | None) -> dict:
    """Whether ``python`` can import llama_cpp (and its version), without loading a model."""
    if not python:
        return {"available": False, "reason": "no --llama-python given and llama_cpp is not importable here"}
    if not Path(python).exists():
        return {"available": False, "reason": f"--llama-python {python} does not exist"}
    code = "import json, llama_cpp; print(json.dumps({'version': getattr(llama_cpp, '__version__', 'unknown')}))"
    try:
        p = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as e:
        return {"available": False, "reason": f"{python}: {e}"}
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or ["?"])[-1]
        return {"available": False, "reason": f"llama_cpp is not importable in {python}: {tail}"}
    return {"available": True, "llama_cpp_python": json.loads(p.stdout.strip().splitlines()[-1])["version"],
            "python": python}


def llama_cpp_engine(python: str | None, gguf: Path | None, ids: torch.Tensor, threads: int,
                     probe: dict | None = None, timeout_s: float = 600.0) -> Engine:
    """llama.cpp on the GGUF file, one helper process per run (it loads, warms up, times one run)."""
    key = f"llama.cpp-t{threads}"
    probe = probe if probe is not None else llama_cpp_probe(python)
    if gguf is None:
        probe = {"available": False, "reason": "this model has no GGUF file for llama.cpp"}
    if not probe["available"]:
        return Engine(key, "llama.cpp", threads, "gguf", lambda n: {}, available=False, reason=probe["reason"])
    prompt = json.dumps([int(t) for t in ids[0].tolist()])

    def run(n: int) -> dict:
        p = subprocess.run([python, str(LLAMA_HELPER), "--model", str(gguf), "--threads", str(threads),
                            "--new-tokens", str(n)], input=prompt, capture_output=True, text=True,
                           timeout=timeout_s, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            raise RuntimeError(f"{LLAMA_HELPER.name} printed no JSON (status {p.returncode}): {p.stderr[-2000:]}")
        rec = json.loads(lines[-1])
        if not rec.get("available"):
            raise RuntimeError(f"{LLAMA_HELPER.name}: {rec.get('reason')}")
        out = _record(rec["token_ids"], rec["prefill_s"], rec["decode_s"])
        out["load_s"] = rec["load_s"]
        out["_helper"] = {k: rec[k] for k in ("llama_cpp_python", "system_info", "n_ctx") if k in rec}
        return out

    return Engine(key, "llama.cpp", threads, "gguf", run,
                  info={"llama_cpp_python": probe.get("llama_cpp_python"), "python": python, "gguf": str(gguf),
                        "helper": str(LLAMA_HELPER.relative_to(ROOT))})


def two_process_engine(loaded, ids: torch.Tensor, ue_precision: str, edge_precision: str, tmp: Path,
                       split: int = SPLIT, compiled: bool = False, ue_loaded=None) -> Engine:
    """The real deployment: a ``splitrl edge --layers s: --precision P`` child (1 thread) and the UE
    (`splitrl.deploy.client.UEClient`, what ``splitrl ue --precision`` runs) in this process (1 thread),
    its model loaded at the UE's precision; gRPC on loopback, lossless link, no emulated air time.
    ``compiled``: the UE (and a low-bit edge, with ``--compile``) run their decode steps compiled."""
    from splitrl.proc import spawn_splitrl, wait_for_port_file

    key = f"two-process-{ue_precision}+{edge_precision}{'-compiled' if compiled else ''}"
    from splitrl.deploy.client import UEClient
    from splitrl.models import load_model

    if ue_loaded is None:
        ue_loaded = loaded if ue_precision == "fp32" else load_model(loaded.name, precision=ue_precision)
    name = f"edge-{ue_precision}-{edge_precision}{'-compiled' if compiled else ''}"
    port_file = tmp / f"{name}.port"
    argv = ["edge", "--listen", "127.0.0.1:0", "--token-file", tmp / "token", "--port-file", port_file,
            "--model", loaded.name, "--layers", f"{split}:", "--threads", "1", "--precision", edge_precision]
    if compiled and edge_precision != "fp32":
        argv.append("--compile")
    child = spawn_splitrl(argv, threads=1, log_path=tmp / f"{name}.log")
    try:
        port = wait_for_port_file(port_file, child, timeout_s=600)
        # the handshake checks the model and that the edge holds [split, L) + head (and tells its precision)
        ue = UEClient(f"127.0.0.1:{port}", (tmp / "token").read_text().strip(), ue_loaded)
        got = getattr(ue.edge_info, "precision", "fp32")
        if got != edge_precision:
            raise RuntimeError(f"{key}: the edge runs {got}, asked for {edge_precision}")
    except BaseException:
        child.stop()
        raise

    def run(n: int) -> dict:
        torch.set_num_threads(1)
        r, steps = _compiled_steps(ue_loaded.view, compiled, lambda: ue.generate(
            ids, split, max_new_tokens=n, stop_at_eos=False))
        if compiled and ue_precision != "fp32" and not steps:
            raise RuntimeError(f"{key}: no UE decode step ran compiled ({ue_loaded.view.compiled_decode.failed})")
        if r.report.fallback_segments:
            raise RuntimeError(f"{key}: the request fell back to the UE (edge log: {child.log_path})")
        return _record(r.token_ids, r.report.prefill_seconds, r.report.decode_seconds)

    def close() -> None:
        try:
            ue.close()
        finally:
            child.stop()

    return Engine(key, "splitrl-two-process", 1, f"{ue_precision}+{edge_precision}", run, close=close,
                  info={"split": split, "ue_precision": ue_precision, "edge_precision": edge_precision,
                        "threads_per_process": 1, "compiled": compiled, "ue": "UEClient in the benchmark process, model loaded at "
                        "the UE's precision", "edge": "splitrl edge child",
                        "transport": "gRPC on loopback, lossless link, no air time", "_ue_loaded": ue_loaded})


# -- the run -----------------------------------------------------------------------------------
def prompt_ids(tokenizer, n: int = PROMPT_TOKENS, offset: int = PROMPT_OFFSET) -> torch.Tensor:
    """``[1, n]`` token ids of WikiText-2 raw test, tokens ``offset .. offset + n - 1``."""
    from splitrl.eval.corpus import corpus_tokens

    return corpus_tokens(tokenizer, offset + n)[:, offset:offset + n].contiguous()


def transformers_model(loaded):
    """A separate plain ``AutoModelForCausalLM`` of the same weights (the cached HF directory when there is one)."""
    import copy

    from transformers import AutoModelForCausalLM

    folder = None
    if "(cached at " in loaded.source:
        folder = Path(loaded.source.split("(cached at ", 1)[1].rstrip(")"))
    elif Path(loaded.source).is_dir():
        folder = Path(loaded.source)
    if folder is not None and folder.is_dir():
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa")
        return model.eval(), str(folder)
    return copy.deepcopy(loaded.model).eval(), loaded.source


def build_engines(loaded, ids: torch.Tensor, *, precisions=PRECISIONS, threads=THREADS, two_process=TWO_PROCESS,
                  llama_python: str | None = None, gguf: Path | None = None, tmp: Path | None = None,
                  split: int = SPLIT, include_two_process: bool = True, compiled=COMPILED) -> list[Engine]:
    """Every engine of the run, in their first-repeat order."""
    from splitrl.runtime import SplitRuntime

    rt = SplitRuntime(loaded)
    hf, hf_source = transformers_model(loaded)
    probe = llama_cpp_probe(llama_python)
    mixed = [p for p in two_process if p[0] != p[1]]
    engines: list[Engine] = []
    for t in threads:
        engines += [splitrl_engine(rt, ids, t, p, split) for p in precisions]
        engines += [splitrl_engine(rt, ids, t, tuple(p), split) for p in mixed]
        engines += [splitrl_engine(rt, ids, t, p, split, compiled=True) for p in precisions if p in compiled]
        engines += [splitrl_engine(rt, ids, t, tuple(p), split, compiled=True) for p in mixed if p[0] in compiled]
        engines.append(transformers_engine(hf, ids, t))
        engines[-1].info["model_source"] = hf_source
        engines.append(llama_cpp_engine(llama_python, gguf, ids, t, probe))
    if include_two_process:
        if tmp is None:
            raise ValueError("two-process engines need a tmp folder")
        ue_models: dict[str, object] = {}
        for ue_p, edge_p in two_process:
            for comp in (False, True) if ue_p in compiled else (False,):
                e = two_process_engine(loaded, ids, ue_p, edge_p, tmp, split, compiled=comp,
                                       ue_loaded=ue_models.get(ue_p))
                ue_models[ue_p] = e.info["_ue_loaded"]
                engines.append(e)
    return engines


def measure(engines: list[Engine], repeats: int, new_tokens: int, *, warmup_tokens: int = 4,
            progress: bool = True) -> dict[str, list[dict]]:
    """Every available engine once per repeat, the order rotated by one each repeat (after one warm-up each)."""
    from tqdm.auto import tqdm

    live = [e for e in engines if e.available]
    for e in live:
        t0 = time.perf_counter()
        e.run(warmup_tokens)
        e.info["warmup_s"] = time.perf_counter() - t0   # compiled engines: includes the one-off compilation
    runs: dict[str, list[dict]] = {e.key: [] for e in live}
    bar = tqdm(total=repeats * len(live), desc="decode_speed", unit="run", disable=not progress)
    for r in range(repeats):
        k = r % len(live) if live else 0
        for e in live[k:] + live[:k]:
            bar.set_postfix(repeat=r, engine=e.key, refresh=False)
            rec = e.run(new_tokens)
            if rec["new_tokens"] != new_tokens:
                raise RuntimeError(f"{e.key} generated {rec['new_tokens']} tokens, asked for {new_tokens}")
            rec["repeat"] = r
            runs[e.key].append(rec)
            bar.update(1)
    bar.close()
    return runs


def _paired(runs: dict[str, list[dict]], a: str, b: str) -> dict | None:
    """a / b decode tok/s, one ratio per repeat, summarised; None when either is missing."""
    if a not in runs or b not in runs or not runs[a] or not runs[b]:
        return None
    ra = {x["repeat"]: x["decode_tokens_per_s"] for x in runs[a]}
    rb = {x["repeat"]: x["decode_tokens_per_s"] for x in runs[b]}
    per = [ra[r] / rb[r] for r in sorted(ra) if r in rb and rb[r] > 0]
    ma = statistics.median(ra.values())
    mb = statistics.median(rb.values())
    return {"engines": [a, b], **spread(per), "ratio_of_medians": ma / mb if mb > 0 else None}


def summarise(engines: list[Engine], runs: dict[str, list[dict]], *, threads=THREADS,
              two_process=TWO_PROCESS) -> dict:
    """The result's ``engines``, ``ratios`` and token agreement sections from the measured runs."""
    out_engines: dict[str, dict] = {}
    for e in engines:
        d = {"kind": e.kind, "threads": e.threads, "precision": e.precision, "available": e.available,
             **{k: v for k, v in e.info.items() if not k.startswith("_")}}
        if not e.available:
            d["reason"] = e.reason
            d["decode_tokens_per_s"] = None
        else:
            rs = runs.get(e.key, [])
            d["decode_tokens_per_s"] = spread([x["decode_tokens_per_s"] for x in rs])
            d["prefill_s"] = spread([x["prefill_s"] for x in rs])
            d["repeat_order"] = [x["repeat"] for x in rs]
            if rs:
                d["token_ids"] = rs[0]["token_ids"]
                d["tokens_same_every_repeat"] = all(x["token_ids"] == rs[0]["token_ids"] for x in rs)
                if "load_s" in rs[0]:
                    d["load_s"] = spread([x["load_s"] for x in rs])
                if "_helper" in rs[0]:
                    d.update(rs[0]["_helper"])
        out_engines[e.key] = d

    ratios: dict[str, dict] = {"int4_vs_llama_cpp": {}, "int8_vs_fp32": {}, "fp32_vs_transformers": {},
                               "two_process_vs_in_process": {}, "int4_compiled_vs_llama_cpp": {},
                               "int8_compiled_vs_fp32": {}, "two_process_compiled_vs_in_process_compiled": {}}
    for t in threads:
        ratios["int4_vs_llama_cpp"][f"t{t}"] = _paired(runs, f"splitrl-int4-t{t}", f"llama.cpp-t{t}")
        ratios["int8_vs_fp32"][f"t{t}"] = _paired(runs, f"splitrl-int8-t{t}", f"splitrl-fp32-t{t}")
        ratios["fp32_vs_transformers"][f"t{t}"] = _paired(runs, f"splitrl-fp32-t{t}", f"transformers-fp32-t{t}")
        ratios["int4_compiled_vs_llama_cpp"][f"t{t}"] = _paired(runs, f"splitrl-int4-compiled-t{t}", f"llama.cpp-t{t}")
        ratios["int8_compiled_vs_fp32"][f"t{t}"] = _paired(runs, f"splitrl-int8-compiled-t{t}", f"splitrl-fp32-t{t}")
    for ue_p, edge_p in two_process:
        lab = _label((ue_p, edge_p)) if ue_p != edge_p else ue_p
        for t in threads:
            ratios["two_process_vs_in_process"][f"{ue_p}+{edge_p}_vs_in_process_t{t}"] = _paired(
                runs, f"two-process-{ue_p}+{edge_p}", f"splitrl-{lab}-t{t}")
            ratios["two_process_compiled_vs_in_process_compiled"][f"{ue_p}+{edge_p}_vs_in_process_t{t}"] = _paired(
                runs, f"two-process-{ue_p}+{edge_p}-compiled", f"splitrl-{lab}-compiled-t{t}")
    ratios = {name: r for name, r in ratios.items() if any(v is not None for v in r.values()) or "compiled" not in name}

    # greedy token agreement at the same threads: with transformers fp32 (exact for splitrl fp32 and any
    # fp32/fp32 split; informative for the low-bit ones) and with llama.cpp (informative: other kernels)
    def agreement(ref_key: str, skip_kind: str) -> dict:
        out = {}
        for key, d in out_engines.items():
            ids = d.get("token_ids")
            ref = out_engines.get(f"{ref_key}-t{d['threads']}", {}).get("token_ids")
            if ids is None or ref is None or d["kind"] == skip_kind:
                continue
            same = next((i for i, (x, y) in enumerate(zip(ids, ref)) if x != y), min(len(ids), len(ref)))
            out[key] = {"identical": ids == ref, "common_prefix_tokens": same}
        return out

    return {"engines": out_engines, "ratios": ratios,
            "greedy_tokens_vs_transformers_fp32": agreement("transformers-fp32", "transformers"),
            "greedy_tokens_vs_llama_cpp": agreement("llama.cpp", "llama.cpp")}


def run_benchmark(model: str = "smollm2-135m", *, repeats: int = REPEATS, new_tokens: int = NEW_TOKENS,
                  prompt_tokens: int = PROMPT_TOKENS, prompt_offset: int = PROMPT_OFFSET, precisions=PRECISIONS,
                  threads=THREADS, two_process=TWO_PROCESS, llama_python: str | None = None,
                  include_two_process: bool = True, progress: bool = True, ids: torch.Tensor | None = None,
                  split: int = SPLIT) -> dict:
    """The whole measurement; returns the result dict (without provenance)."""
    from splitrl.models import load_model
    from splitrl.models.loader import smollm2_gguf_path

    t0 = time.perf_counter()
    loaded = load_model(model)
    if not 0 < split < loaded.view.num_layers:
        raise ValueError(f"split {split}: must be 1..{loaded.view.num_layers - 1} for {model} (both segments non-empty)")
    gguf = None
    if model == "smollm2-135m":
        gguf = smollm2_gguf_path()
    elif Path(model).suffix == ".gguf":
        gguf = Path(model)
    if ids is None:
        ids = prompt_ids(loaded.tokenizer, prompt_tokens, prompt_offset)
    with tempfile.TemporaryDirectory(prefix="splitrl-decode-speed-") as d:
        # a fresh inductor cache (the edge children inherit it): a compiled engine's warmup_s is a cold compile
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(d) / "inductor")
        engines = build_engines(loaded, ids, precisions=precisions, threads=threads, two_process=two_process,
                                llama_python=llama_python, gguf=gguf, tmp=Path(d), split=split,
                                include_two_process=include_two_process)
        try:
            load_s = time.perf_counter() - t0
            runs = measure(engines, repeats, new_tokens, progress=progress)
        finally:
            for e in engines:
                e.close()
    res = summarise(engines, runs, threads=threads, two_process=two_process)
    lc = next((e.info for e in engines if e.kind == "llama.cpp" and e.available), None)
    unavailable = {e.key: e.reason for e in engines if not e.available}
    return {
        "config": {
            "model": model, "gguf": str(gguf) if gguf else None, "split": split,
            "prompt": f"WikiText-2 raw test, tokens {prompt_offset}..{prompt_offset + ids.shape[1] - 1}",
            "prompt_tokens": int(ids.shape[1]), "new_tokens": new_tokens, "sampling": "greedy, EOS does not stop",
            "repeats": repeats, "threads": list(threads), "precisions": list(precisions), "compiled": list(COMPILED),
            "two_process": [list(p) for p in two_process],
            "order": "every engine once per repeat after one warm-up each; the order rotated by one each repeat",
            "decode_tokens_per_s": "(new tokens - 1) / wall time after the first token",
            "prefill_s": "wall time to the first generated token",
            "compile_cache": "a fresh TORCHINDUCTOR_CACHE_DIR per run, so a compiled engine's warmup_s includes a "
                             "cold compile (graphs are compiled once per process and thread count)",
        },
        "llama_cpp_python": lc["llama_cpp_python"] if lc else None,
        "llama_cpp_available": lc is not None,
        "unavailable": unavailable,
        "setup_s": load_s,
        "wall_s": time.perf_counter() - t0,
        **res,
        "targets": TARGETS,
    }


def _fmt_spread(s: dict | None, scale: float = 1.0, digits: int = 1) -> str:
    if not s or s.get("median") is None:
        return "—"
    lo, hi = s["iqr"]
    return f"{s['median'] * scale:.{digits}f} [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"


def report_markdown(result: dict) -> str:
    """The result as two Markdown tables (engines, target ratios), headed by its command and revision."""
    lines = [f"`{result.get('command', '?')}` at `{str(result.get('git_revision', '?'))[:7]}`"
             f"{' (dirty tree)' if result.get('git_dirty') else ''}, {result.get('date_utc', '?')}, "
             f"load average {float(result.get('loadavg_1_5_15', [float('nan')])[0]):.2f}; medians [IQR] of "
             f"{result['config']['repeats']} interleaved repeats, {result['config']['new_tokens']} greedy tokens "
             f"after a {result['config']['prompt_tokens']}-token prompt, split {result['config']['split']}.", "",
             "| engine | threads | decode tok/s | time to first token, ms | warm-up s |", "|---|---|---|---|---|"]
    for key, d in result["engines"].items():
        if not d["available"]:
            lines.append(f"| {key} | {d['threads']} | not run: {d['reason']} | — | — |")
            continue
        lines.append(f"| {key} | {d['threads']} | {_fmt_spread(d['decode_tokens_per_s'])} | "
                     f"{_fmt_spread(d.get('prefill_s'), 1e3, 0)} | {d.get('warmup_s', float('nan')):.1f} |")
    lines += ["", "| ratio (paired per repeat) | setting | median [IQR] | target |", "|---|---|---|---|"]
    for name, per in result["ratios"].items():
        target = result["targets"].get(name.replace("_compiled", "").replace("_in_process_compiled", "_in_process"), "")
        for setting, r in per.items():
            if r is not None:
                lines.append(f"| {name} | {setting} | {_fmt_spread(r, digits=3)} | {target} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--repeats", type=int, default=None, help=f"interleaved repeats (default {REPEATS}; --quick: 2)")
    ap.add_argument("--new-tokens", type=int, default=None, help=f"tokens per run (default {NEW_TOKENS}; --quick: 16)")
    ap.add_argument("--prompt-tokens", type=int, default=PROMPT_TOKENS)
    ap.add_argument("--split", type=int, default=SPLIT, help="UE layers [0, s), edge the rest (default: %(default)s)")
    ap.add_argument("--llama-python", default=os.environ.get("SPLITRL_LLAMA_PYTHON"),
                    help="a Python with llama-cpp-python (default: $SPLITRL_LLAMA_PYTHON, else this one)")
    ap.add_argument("--no-two-process", action="store_true", help="skip the UE/edge gRPC runs")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 repeats of 16 tokens (numbers are noise)")
    ap.add_argument("--out", default=None,
                    help="result JSON (default: runs/decode_speed/<UTC time>/decode_speed.json; the committed "
                         "file is benchmarks/results/decode_speed.json)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else REPEATS)
    new_tokens = args.new_tokens if args.new_tokens is not None else (16 if args.quick else NEW_TOKENS)
    if repeats < 1 or new_tokens < 2:
        ap.error("--repeats must be >= 1 and --new-tokens >= 2")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else ROOT / "runs" / "decode_speed" / stamp / "decode_speed.json"
    llama_python = args.llama_python or sys.executable

    from splitrl.provenance import run_record

    result = {"benchmark": "decode_speed", **run_record(argv and [sys.argv[0], *argv]), "threads": list(THREADS),
              "quick": bool(args.quick)}
    result.update(run_benchmark(args.model, repeats=repeats, new_tokens=new_tokens, prompt_tokens=args.prompt_tokens,
                                llama_python=llama_python, include_two_process=not args.no_two_process,
                                progress=not args.no_progress, split=args.split))
    result["loadavg_after"] = list(os.getloadavg())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(report_markdown(result))
    table = {k: (v["decode_tokens_per_s"] or {}).get("median") if v["available"] else v["reason"]
             for k, v in result["engines"].items()}
    print(json.dumps({"decode_tokens_per_s_median": table,
                      "ratios_median": {name: {k: (v or {}).get("median") for k, v in r.items()}
                                        for name, r in result["ratios"].items()}}, indent=1))
    print(f"wrote {out} and {out.with_suffix('.md').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
