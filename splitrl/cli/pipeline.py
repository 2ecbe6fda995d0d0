"""``splitrl pipeline``: run one model across K stage processes in a ring, or plan where to cut it.

* ``pipeline generate`` — start K stages (this machine by default), generate for S prompts with
  every stage busy on a different sample, print the texts and a per-stage timing report.
* ``pipeline stage`` — one stage, joining a driver's store from another machine.
* ``pipeline plan`` — the DP cut vector for a device set and link, against the equal split and
  MDI-LLM's table, with the predicted throughput of each.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from splitrl.cli._common import DEFAULT_MODEL
from splitrl.errors import UsageError

__all__ = ["DEFAULT_PROMPTS", "add_arguments", "run"]


def _int_list(text: str, field: str) -> list[int]:
    try:
        out = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"{field}: comma-separated integers, got {text!r}") from None
    if not out:
        raise UsageError(f"{field}: at least one integer")
    return out


def _str_list(text: str | None) -> list[str]:
    return [x.strip() for x in str(text).split(",") if x.strip()] if text else []


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="pipeline_command", required=True)

    g = sub.add_parser("generate", help="run the ring on this machine (or with remote stages) and generate",
                       description="run the ring on this machine (or with remote stages) and generate")
    g.add_argument("--model", default=DEFAULT_MODEL, help="model name or path (splitrl.models.load_model)")
    g.add_argument("--cuts", required=True, help="K-1 cut points, e.g. 10,20 for three stages")
    g.add_argument("--precision", default=None,
                   help="weight precision of every stage (fp32, bf16, int8, int4) or one per stage, comma-separated "
                        "(default: fp32)")
    g.add_argument("--samples", type=int, default=None, help="number of samples in flight (prompts are cycled; default: one per prompt)")
    g.add_argument("--prompts", default=None, help="file with one prompt per line (default: built-in prompts)")
    g.add_argument("--prompt", action="append", default=None, help="a prompt (repeatable; default: --prompts, else the built-in prompts)")
    g.add_argument("--max-new-tokens", type=int, default=32, help="tokens to generate per sample")
    g.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    g.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (with --sample)")
    g.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens, 0 = all (with --sample)")
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (with --sample)")
    g.add_argument("--seed", type=int, default=0, help="seed for sampling and for link noise")
    g.add_argument("--devices", default=None,
                   help="device profile per stage, comma-separated (for the predicted timing and memory next to the measured "
                        "ones; default: no prediction)")
    g.add_argument("--link", default="identity", help="link per hop (one name, or one per hop, comma-separated)")
    g.add_argument("--link-profile", default=None, help="emulate every hop's air time with this link profile (default: no air time)")
    g.add_argument("--snr-db", default=None, help="fixed SNR per hop (comma-separated); default: the fading process")
    g.add_argument("--listen", default="127.0.0.1:0", help="where to host the rendezvous store")
    g.add_argument("--trusted-network", action="store_true",
                   help="allow a non-loopback --listen (gloo has no authentication: trusted networks only)")
    g.add_argument("--spawn", default=None, help="stage ids to start here (default: all); others join remotely")
    g.add_argument("--stage-threads", type=int, default=1, help="CPU threads per stage process")
    g.add_argument("--timeout", type=float, default=60.0, help="seconds before a silent peer is an error")
    g.add_argument("--no-reform", action="store_true", help="fail instead of re-forming the ring after a death")
    g.add_argument("--json", default=None, help="write the full result (texts, reports, failures) here as JSON")
    g.add_argument("--schedule-plot", default=None, help="write a picture of the pipeline schedule (PNG)")
    g.add_argument("--log-dir", default=None, help="folder for the stage processes' logs (default: a temp dir)")
    g.set_defaults(pipeline_func=_cmd_generate)

    s = sub.add_parser("stage", help="run one stage and join the driver at --master",
                       description="run one stage and join the driver at --master")
    s.add_argument("--rank", type=int, required=True, help="this stage's id (0 = starter)")
    s.add_argument("--world", type=int, required=True, help="number of stages")
    s.add_argument("--master", required=True, help="HOST:PORT of the driver's store")
    s.add_argument("--trusted-network", action="store_true",
                   help="allow a non-loopback --master (gloo has no authentication: trusted networks only)")
    s.add_argument("--device", default="cpu", help="torch device of this stage")
    s.set_defaults(pipeline_func=_cmd_stage)

    pl = sub.add_parser("plan", help="DP cuts vs equal split vs MDI-LLM's table for a device set",
                        description="DP cuts vs equal split vs MDI-LLM's table for a device set")
    pl.add_argument("--model", default=DEFAULT_MODEL, help="model name or path (splitrl.models.load_model)")
    pl.add_argument("--devices", required=True, help="device profile per stage, comma-separated")
    pl.add_argument("--link-profile", default="wifi6-20mhz", help="radio link profile of every hop (name or YAML)")
    pl.add_argument("--snr-db", type=float, default=None, help="fixed SNR of every hop in dB (default: each link's mean SNR from its link budget)")
    pl.add_argument("--codec", default="fp32", help="what crosses each cut (fp32, fp16, int8, ...)")
    pl.add_argument("--context", type=int, default=128, help="context length for the per-token costs")
    pl.add_argument("--samples", type=int, default=4, help="samples in flight")
    pl.set_defaults(pipeline_func=_cmd_plan)


DEFAULT_PROMPTS = [
    "The history of the city begins",
    "In mathematics, a prime number is",
    "The river flows through",
    "Scientists have discovered that",
    "The album was released in",
    "During the second world war",
    "The film received mixed reviews",
    "A transformer model is",
]


def _cmd_generate(args: argparse.Namespace) -> int:
    # lazy: --help and argument errors must not import torch
    from splitrl.pipeline.driver import PipelineConfig, PipelineRun

    prompts = list(args.prompt or [])
    if args.prompts:
        path = Path(args.prompts)
        if not path.is_file():
            raise UsageError(f"--prompts: no such file {path}")
        prompts += [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    if not prompts:
        prompts = list(DEFAULT_PROMPTS)
    n = args.samples if args.samples is not None else len(prompts)
    if n < 1:
        raise UsageError(f"--samples must be >= 1, got {n}")
    prompts = [prompts[i % len(prompts)] for i in range(n)]
    cuts = _int_list(args.cuts, "--cuts")
    links = _str_list(args.link) or ["identity"]
    snr = [float(x) for x in _str_list(args.snr_db)] if args.snr_db else None
    spawn = _int_list(args.spawn, "--spawn") if args.spawn else None
    cfg = PipelineConfig(
        model=args.model, cuts=cuts, prompts=prompts, max_new_tokens=args.max_new_tokens, do_sample=args.sample,
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed, hop_links=links,
        link_profile=args.link_profile, snr_db=snr, listen=args.listen, trusted_network=args.trusted_network,
        spawn=spawn, threads=args.stage_threads, timeout_s=args.timeout, reform=not args.no_reform,
        log_dir=args.log_dir, precisions=_str_list(args.precision) or None,
    )
    devices = _str_list(args.devices)
    if devices and len(devices) != cfg.stages:
        raise UsageError(f"--devices: one profile per stage ({cfg.stages}), got {len(devices)}")
    run = PipelineRun(cfg)
    with run:
        if spawn is not None and len(spawn) < cfg.stages:
            others = sorted(set(range(cfg.stages)) - set(spawn))
            print(f"waiting for stages {others}: run `splitrl pipeline stage --rank R --world {cfg.stages} "
                  f"--master {run.master}{' --trusted-network' if args.trusted_network else ''}` on their machines",
                  file=sys.stderr)
        result = run.wait(progress=sys.stderr.isatty() or bool(os.environ.get("SPLITRL_PROGRESS")))
    for i, s in enumerate(result.samples):
        print(f"[{i}] ({s.finish_reason}, {len(s.token_ids)} tok) {prompts[i]!r} -> {s.text!r}")
    print(result.format())
    if devices:
        # lazy: --help and argument errors must not import torch
        from splitrl.cost.pipeline import PipelineCostModel

        pcm = PipelineCostModel(run.loaded.view, devices, args.link_profile or "wifi6-20mhz", codec="fp32")
        est = pcm.estimate(list(result.plans[-1]["cuts"]), context=64, samples=n)
        print(est.format())
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_dict(), indent=1))
    if args.schedule_plot:
        # lazy: --help and argument errors must not import torch
        from splitrl.pipeline.plot import plot_schedule

        plot_schedule(result.reports, args.schedule_plot)
        print(f"wrote {args.schedule_plot}")
    return 0


def _cmd_stage(args: argparse.Namespace) -> int:
    # lazy: --help and argument errors must not import torch
    from splitrl.dist import Endpoint, check_trusted
    from splitrl.pipeline.stage import run_stage

    ep = Endpoint.parse(args.master)
    check_trusted(ep, args.trusted_network)
    if not 0 <= args.rank < args.world:
        raise UsageError(f"--rank must be in 0..{args.world - 1}, got {args.rank}")
    # lazy: --help and argument errors must not import torch
    import torch

    torch.set_num_threads(int(os.environ.get("SPLITRL_THREADS", "1")))
    return run_stage(ep, args.rank, world=args.world, device=args.device)


def _cmd_plan(args: argparse.Namespace) -> int:
    # lazy: --help and argument errors must not import torch
    from splitrl.cost.pipeline import PipelineCostModel
    from splitrl.models import load_model
    from splitrl.pipeline.partition import compare_partitions

    devices = _str_list(args.devices)
    view = load_model(args.model).view
    pcm = PipelineCostModel(view, devices, args.link_profile, codec=args.codec, snr_db=args.snr_db)
    print(json.dumps(compare_partitions(pcm, context=args.context, samples=args.samples), indent=1))
    return 0


def run(args: argparse.Namespace) -> int:
    return int(args.pipeline_func(args) or 0)
