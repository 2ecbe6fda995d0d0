"""``splitrl tp generate|ppl|worker|plan``: tensor-parallel inference from the command line.

``generate`` and ``ppl`` host
the store, start the local ranks, write the shard files and run the request; ``worker`` joins a
driver's store from any machine; ``plan`` prints the sharding plan. Bad input raises `UsageError`
(one line, exit 2).

All-reduce options reach the all-reduce's constructor untouched: ``--allreduce NAME`` picks any
registered kind and each ``--allreduce-arg KEY=VALUE`` (VALUE parsed as JSON when it parses) adds
a keyword argument, so new kinds (e.g. AirComp) need no change here.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from splitrl.errors import UsageError

from splitrl.cli._common import DEFAULT_MODEL

__all__ = ["add_arguments", "allreduce_kwargs_from_args", "run", "run_config_from_args"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help="model name or path (splitrl.models.load_model)")
    p.add_argument("--cache-dir", default=None, help="cache for dequantised GGUF models (default $SPLITRL_CACHE or ~/.cache/splitrl)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="dtype of the shards and the compute")
    p.add_argument("--shards", type=int, default=2, help="number of ranks N")
    p.add_argument("--ratio", default=None, help="per-rank shares, e.g. .5,.25,.25 (default: equal)")
    p.add_argument("--allreduce", default="star", help="star | ring | engine | any registered kind")
    p.add_argument("--allreduce-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword argument for the all-reduce's constructor (repeatable; VALUE as JSON if it parses)")
    p.add_argument("--snr", type=float, default=None,
                   help="receive SNR (dB) of an over-the-air all-reduce (--allreduce aircomp; = --allreduce-arg snr_db=...)")
    p.add_argument("--antennas", type=int, default=None,
                   help="aggregator antennas M of --allreduce aircomp (= --allreduce-arg antennas=...)")
    p.add_argument("--link", default="identity", help="emulated link for collective traffic (splitrl.link name)")
    p.add_argument("--link-snr", type=float, default=None, help="SNR (dB) of a stochastic link")
    p.add_argument("--link-ber", type=float, default=None, help="bit error rate of a -biterr link")
    p.add_argument("--link-rate", type=float, default=None, help="link rate in bit/s (for air time)")
    p.add_argument("--link-latency", type=float, default=0.0, help="per-message link latency in seconds")
    p.add_argument("--emulate-delay", action="store_true", help="sleep the air time of every message")
    p.add_argument("--window", type=int, default=0, help="resident weight blocks per rank (0 = all resident)")
    p.add_argument("--load-delay", type=float, default=0.0, help="injected seconds per block load")
    p.add_argument("--timeout", type=float, default=30.0, help="collective timeout in seconds")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per rank")
    p.add_argument("--master", default="127.0.0.1:0", help="HOST:PORT of the store this driver hosts")
    p.add_argument("--local-slots", default=None, help="ranks started here, e.g. 0,1 (default: all)")
    p.add_argument("--trusted-network", action="store_true", help="allow a non-loopback --master (gloo has no auth)")
    p.add_argument("--work-dir", default=None, help="shards and logs (default: a temp dir)")
    p.add_argument("--retries", type=int, default=0, help="re-form the group without a failed rank and retry")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="tp_command", required=True)
    g = sub.add_parser("generate", help="generate text with N tensor-parallel ranks",
                       description="generate text with N tensor-parallel ranks")
    _common(g)
    g.add_argument("--prompt", default="The capital of France is", help="prompt text")
    g.add_argument("--max-new-tokens", type=int, default=32, help="tokens to generate")
    g.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    g.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (with --sample)")
    g.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens, 0 = all (with --sample)")
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (with --sample)")
    g.add_argument("--seed", type=int, default=0, help="sampling seed")
    q = sub.add_parser("ppl", help="perplexity on WikiText-2 with N tensor-parallel ranks",
                       description="perplexity on WikiText-2 with N tensor-parallel ranks")
    _common(q)
    q.add_argument("--tokens", type=int, default=1024, help="corpus tokens to score")
    q.add_argument("--ctx", type=int, default=256, help="window length")
    q.add_argument("--stride", type=int, default=None, help="tokens between windows (default: --ctx)")
    q.add_argument("--corpus", default=None, help="path of WikiText-2 wiki.test.raw (default ../shared/data/...)")
    w = sub.add_parser("worker", help="join a driver's store as one rank slot",
                       description="join a driver's store as one rank slot")
    w.add_argument("--rank", type=int, required=True, help="this process's slot (0 = master)")
    w.add_argument("--world", type=int, required=True, help="number of slots")
    w.add_argument("--master", required=True, help="HOST:PORT of the driver's store")
    w.add_argument("--trusted-network", action="store_true", help="allow a non-loopback --master (gloo has no auth)")
    w.add_argument("--timeout", type=float, default=30.0, help="collective timeout in seconds")
    w.add_argument("--idle-timeout", type=float, default=3600.0, help="exit after this many seconds without a request")
    pl = sub.add_parser("plan", help="print the sharding plan and parameter census",
                        description="print the sharding plan and parameter census")
    pl.add_argument("--model", default="smollm2-135m", help="model name or path (splitrl.models.load_model)")
    pl.add_argument("--cache-dir", default=None, help="cache for dequantised GGUF models (default $SPLITRL_CACHE or ~/.cache/splitrl)")
    pl.add_argument("--shards", type=int, default=2, help="number of ranks N")
    pl.add_argument("--ratio", default=None, help="per-rank shares, e.g. .5,.25,.25 (default: equal)")


def allreduce_kwargs_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """``--allreduce-arg KEY=VALUE`` pairs as constructor kwargs (JSON values when they parse)."""
    out: dict[str, Any] = {}
    for item in args.allreduce_arg or []:
        key, sep, val = str(item).partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"--allreduce-arg must be KEY=VALUE with KEY a Python identifier, got {item!r}")
        try:
            out[key] = json.loads(val)
        except ValueError:
            out[key] = val
    for flag, key in (("snr", "snr_db"), ("antennas", "antennas")):
        value = getattr(args, flag, None)
        if value is None:
            continue
        if args.allreduce != "aircomp":
            raise UsageError(f"--{flag} applies to --allreduce aircomp (over-the-air); for a digital link use --link-snr")
        if key in out and out[key] != value:
            raise UsageError(f"--{flag} {value} contradicts --allreduce-arg {key}={out[key]}")
        out[key] = value
    return out


def run_config_from_args(args: argparse.Namespace, shard_dir: str | Path) -> Any:
    # lazy: --help and argument errors must not import torch
    from splitrl.tp.allreduce import LinkSpec
    from splitrl.tp.worker import TPRunConfig

    link = LinkSpec(name=args.link, snr_db=args.link_snr, ber=args.link_ber, rate_bps=args.link_rate,
                    latency_s=args.link_latency, emulate_delay=args.emulate_delay)
    return TPRunConfig(shard_dir=str(shard_dir), allreduce=args.allreduce, allreduce_kwargs=allreduce_kwargs_from_args(args),
                       link=link.to_dict(), window=args.window, load_delay_s=args.load_delay, timeout_s=args.timeout,
                       threads=args.threads)


def _load(args: argparse.Namespace, dtype: str = "float32") -> Any:
    # lazy: --help and argument errors must not import torch
    import torch

    from splitrl.models import ModelNotFoundError, UnsupportedModelError, load_model

    try:
        return load_model(args.model, cache_dir=args.cache_dir, dtype=getattr(torch, dtype))
    except (ModelNotFoundError, UnsupportedModelError) as e:
        raise UsageError(f"--model: {e}") from None


def _cluster(args: argparse.Namespace, loaded: Any) -> tuple[Any, Any, Any]:
    # lazy: --help and argument errors must not import torch
    from splitrl.tp.driver import TPCluster, prepare_shards
    from splitrl.tp.plan import parse_ratios

    ratios = parse_ratios(args.ratio, args.shards)
    local = None
    if args.local_slots:
        try:
            local = [int(x) for x in args.local_slots.split(",") if x.strip()]
        except ValueError:
            raise UsageError(f"--local-slots must be comma-separated ranks, got {args.local_slots!r}") from None
        if any(not 0 <= s < args.shards for s in local):
            raise UsageError(f"--local-slots must be in 0..{args.shards - 1}, got {args.local_slots!r}")
    if args.retries < 0:
        raise UsageError(f"--retries must be >= 0, got {args.retries}")
    cluster = TPCluster(args.shards, master=args.master, local=local, trusted_network=args.trusted_network,
                        work_dir=args.work_dir, threads=args.threads)
    shard_root = cluster.work_dir / "shards"
    shard_root.mkdir(exist_ok=True)
    shard_dir = prepare_shards(loaded, ratios, shard_root, dtype=args.dtype)
    config = run_config_from_args(args, shard_dir)

    def reshard(n: int) -> Path:
        return prepare_shards(loaded, [ratios[s] for s in cluster.alive][:n], shard_root, dtype=args.dtype)

    return cluster, config, reshard


def _validate(args: argparse.Namespace) -> None:
    """Every flag checked before a model is loaded or a process started (fast exit 2)."""
    # lazy: --help and argument errors must not import torch
    from splitrl.dist import Endpoint, check_trusted
    from splitrl.tp.plan import parse_ratios

    parse_ratios(args.ratio, args.shards)
    run_config_from_args(args, "")
    check_trusted(Endpoint.parse(args.master), args.trusted_network)


def _tp_generate(args: argparse.Namespace) -> int:
    # lazy: --help and argument errors must not import torch
    from splitrl.tp.driver import RankFailure

    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    _validate(args)
    loaded = _load(args, args.dtype)
    ids = loaded.tokenizer(args.prompt, return_tensors="pt").input_ids[0].tolist()
    if not ids:
        raise UsageError("--prompt encodes to zero tokens")
    cluster, config, reshard = _cluster(args, loaded)
    try:
        with cluster:
            setup = cluster.setup(config)
            res = cluster.generate(ids, args.max_new_tokens, retries=args.retries, reshard=reshard,
                                   sampling={"do_sample": args.sample, "temperature": args.temperature,
                                             "top_k": args.top_k, "top_p": args.top_p, "seed": args.seed})
    except RankFailure as e:
        print(f"splitrl tp generate: rank failure: {e}", file=sys.stderr)
        return 1
    text = loaded.tokenizer.decode(res.token_ids, skip_special_tokens=True)
    report = {
        "text": text, "tokens": res.token_ids, "world": res.world, "retried": res.retried,
        "prefill_s": res.prefill_seconds, "decode_s_per_token": res.decode_seconds_per_token,
        "allreduce": args.allreduce, "ranks": res.ranks, "setup": {str(k): v for k, v in setup.items()},
    }
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(args.prompt + text)
        print(f"--- {res.world} ranks, all-reduce {args.allreduce}, link {args.link}"
              + (f", window {args.window}" if args.window else "") + (f", retried {res.retried}x" if res.retried else ""))
        print(f"time to first token {res.prefill_seconds * 1e3:.1f} ms, decode {res.decode_seconds_per_token * 1e3:.1f} ms/token")
        for r in res.ranks:
            a, b = r["allreduce"], r["broadcast"]
            line = (f"  rank {r['rank']}: {a['calls']} all-reduces, {a['bytes_sent']:,} B sent, "
                    f"{a['seconds'] * 1e3:.1f} ms in all-reduce, air {a['air_seconds'] * 1e3:.2f} ms; "
                    f"broadcast {b['calls']}x")
            if "scheduler" in r:
                line += f"; stalls {r['scheduler']['stall_seconds'] * 1e3:.1f} ms"
            print(line)
    return 0


def _tp_ppl(args: argparse.Namespace) -> int:
    # lazy: --help and argument errors must not import torch
    import math

    from splitrl.eval import CorpusError
    from splitrl.eval.corpus import corpus_tokens
    from splitrl.eval.perplexity import sliding_windows
    from splitrl.tp.driver import RankFailure

    _validate(args)
    loaded = _load(args, args.dtype)
    stride = args.stride or args.ctx
    if args.tokens < 2 or args.ctx < 2 or stride < 1 or stride > args.ctx:
        raise UsageError("--tokens and --ctx must be >= 2 and 1 <= --stride <= --ctx")
    try:
        ids = corpus_tokens(loaded.tokenizer, args.tokens, path=args.corpus)
    except CorpusError as e:
        raise UsageError(f"--corpus: {e}") from None
    ids = ids.reshape(-1)[: args.tokens].tolist()
    wins = []
    for w in sliding_windows(len(ids), args.ctx, stride):
        wins.append([w.begin, w.end, w.score_from])
    cluster, config, _ = _cluster(args, loaded)
    try:
        with cluster:
            cluster.setup(config)
            r = cluster.nll(ids, wins)
    except RankFailure as e:
        print(f"splitrl tp ppl: rank failure: {e}", file=sys.stderr)
        return 1
    ppl = math.exp(r["nll_sum"] / max(1, r["tokens"]))
    out = {"perplexity": ppl, "tokens": r["tokens"], "world": args.shards, "allreduce": args.allreduce, "link": args.link}
    print(json.dumps(out) if args.json else f"perplexity {ppl:.4f} over {r['tokens']} tokens ({args.shards} ranks)")
    return 0


def _tp_worker(args: argparse.Namespace) -> int:
    # lazy: --help and argument errors must not import torch
    from splitrl.tp.worker import serve

    if not 0 <= args.rank < args.world:
        raise UsageError(f"--rank must be in 0..{args.world - 1}, got {args.rank}")
    return serve(args.rank, args.master, trusted_network=args.trusted_network, timeout_s=args.timeout,
                 idle_timeout_s=args.idle_timeout)


def _tp_plan(args: argparse.Namespace) -> int:
    # lazy: --help and argument errors must not import torch
    from splitrl.tp.census import census
    from splitrl.tp.plan import ModelDims, ShardPlan, parse_ratios

    loaded = _load(args)
    plan = ShardPlan.build(ModelDims.from_config(loaded.view.config), parse_ratios(args.ratio, args.shards))
    print(json.dumps({"plan": plan.to_dict(), "census": census(loaded.view, plan)}, indent=1))
    return 0


def run(args: argparse.Namespace) -> int:
    # lazy: --help and argument errors must not import torch
    import splitrl.aircomp.allreduce  # noqa: F401  (registers the "aircomp" all-reduce in this process)

    return {"generate": _tp_generate, "ppl": _tp_ppl, "worker": _tp_worker, "plan": _tp_plan}[args.tp_command](args)
