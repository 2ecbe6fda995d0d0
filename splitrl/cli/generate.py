"""``splitrl generate``: generate text through a split model and print the request report."""
from __future__ import annotations

import argparse
import json
import sys

from splitrl.cli import _common as c
from splitrl.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    c.model_args(p)
    p.add_argument("--split", default=None, help="split point s in 0..L, or comma-separated cut points (default L/2)")
    p.add_argument("--prompt", default="The history of wireless communication", help="prompt text")
    p.add_argument("--max-new-tokens", type=int, default=48, help="tokens to generate")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (with --sample)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens, 0 = all (with --sample)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (with --sample)")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling and for link noise")
    c.precision_arg(p)
    c.compile_arg(p)
    c.link_args(p)


def run(args: argparse.Namespace) -> int:
    # lazy: --help and argument errors must not import torch
    from splitrl.runtime import SamplingConfig, SplitRuntime

    given = getattr(args, "_given", set())
    if not args.sample:
        bad = [f for f in ("temperature", "top_k", "top_p") if f in given]
        if bad:
            raise UsageError(f"--{bad[0].replace('_', '-')} applies only with --sample (greedy decoding ignores it)")
    c.check_link_options(args, given, costs=True)
    loaded = c.load(args)
    runtime = SplitRuntime(loaded)
    partition = c.partition(runtime, args.split, args.precision)
    try:
        sampling = SamplingConfig(
            do_sample=args.sample, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed
        )
    except ValueError as e:
        raise UsageError(str(e))
    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    stream = c.token_printer(loaded.tokenizer)
    link = c.make_link(args, loaded.view.vocab_size)
    if not args.json:
        sys.stdout.write(args.prompt)
    try:
        result = runtime.generate(
            args.prompt, partition, max_new_tokens=args.max_new_tokens, sampling=sampling,
            links=link,
            on_token=None if args.json else stream,
        )
    except ValueError as e:
        raise UsageError(str(e))
    if len(partition.cuts) != 1:
        bad = [f for f in ("ue", "edge", "link_profile") if f in given]
        if bad:
            raise UsageError(f"--{bad[0].replace('_', '-')} has no effect with several cut points (latency/energy are emulated for one cut)")
    if len(partition.cuts) == 1:
        # lazy: --help and argument errors must not import torch
        from splitrl.cost import CostModel, emulate_report
        from splitrl.link import codec_for

        try:
            codec = codec_for(args.link)
            emulate_report(result.report, CostModel(loaded.view, args.ue, args.edge, args.link_profile, codec=codec), args.snr)
        except ValueError as e:
            raise UsageError(str(e))
    link_d = c.link_description(args)
    # The clean reference: the same prompt, decoding and seed with nothing corrupting the cut.
    clean_ids = result.token_ids
    if link is not None:
        clean_ids = runtime.generate(args.prompt, partition, max_new_tokens=args.max_new_tokens, sampling=sampling,
                                     links=None).token_ids
    same = next((i for i, (a, b) in enumerate(zip(result.token_ids, clean_ids)) if a != b),
                min(len(result.token_ids), len(clean_ids)))
    what = {"model": loaded.name, "split": list(partition.cuts), "num_layers": runtime.num_layers, **link_d,
            "precision": [s.precision for s in partition.segments()],
            "clean_text": loaded.tokenizer.decode(clean_ids, skip_special_tokens=True), "tokens_matching_clean": same,
            "decoding": "sampled" if args.sample else "greedy", "seed": args.seed, "threads": c.torch_threads(),
            "new_tokens": len(result.token_ids), "emulation_snr_db": float(args.snr) if len(partition.cuts) == 1 else None,
            "compile": bool(args.compile), "compiled_segment_steps": loaded.view.compiled_decode.compiled_steps,
            "compile_failed": loaded.view.compiled_decode.failed}
    if args.json:
        print(json.dumps({**what, "text": result.text, "token_ids": result.token_ids, "report": result.report.to_dict()},
                         allow_nan=False, default=c.json_default))
    else:
        print("\n")
        print(f"{loaded.name}, split {','.join(map(str, partition.cuts))} of {runtime.num_layers} layers "
              f"(weights {'/'.join(what['precision'])}), {c.link_text(link_d)}, {what['decoding']} decoding, {what['new_tokens']} new tokens, "
              f"{what['threads']} torch thread(s)" + (f", {what['compiled_segment_steps']} compiled segment steps"
                                                      if args.compile else ""))
        if what["compile_failed"]:
            print(f"--compile: compilation failed, ran eager: {what['compile_failed']}")
        if link is not None:
            print(f"clean reference (no link): {what['clean_text']!r}; the first {same} of {len(clean_ids)} tokens match it")
        print(result.report.format())
    return 0
