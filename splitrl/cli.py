"""The ``splitrl`` command line: generate, ppl, info.

Bad arguments (split out of range, unknown model, missing corpus) exit with status 2 and one
line on stderr saying what is allowed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Sequence

import torch

from splitrl.models.loader import DEFAULT_MODEL, NAMED_MODELS


# One usage-error type for every subcommand (it lives in its own module so that running this
# file as ``python -m splitrl.cli`` does not create a second, unrelated class).
from splitrl.errors import UsageError as CLIError  # noqa: E402


def _threads(n: int | None) -> None:
    if n:
        torch.set_num_threads(n)


def _parse_cuts(text: str, num_layers: int) -> list[int]:
    try:
        cuts = [int(x) for x in str(text).split(",") if x.strip() != ""]
    except ValueError:
        raise CLIError(f"--split must be an integer 0..{num_layers} or comma-separated cut points, got {text!r}")
    if not cuts:
        raise CLIError(f"--split must be an integer 0..{num_layers}")
    return cuts


def _load(args):
    from splitrl.models import ModelNotFoundError, UnsupportedModelError, load_model

    try:
        return load_model(args.model, cache_dir=args.cache_dir)
    except (ModelNotFoundError, UnsupportedModelError) as e:
        raise CLIError(str(e))


def _partition(runtime, text: str | None):
    from splitrl.runtime import InvalidPartitionError

    L = runtime.num_layers
    cuts = _parse_cuts(text if text is not None else str(L // 2), L)
    try:
        return runtime.partition(cuts)
    except InvalidPartitionError as e:
        raise CLIError(f"--split: {e}")


def cmd_generate(args) -> int:
    from splitrl.runtime import SamplingConfig, SplitRuntime

    loaded = _load(args)
    runtime = SplitRuntime(loaded)
    partition = _partition(runtime, args.split)
    try:
        sampling = SamplingConfig(
            do_sample=args.sample, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed
        )
    except ValueError as e:
        raise CLIError(str(e))
    if args.max_new_tokens < 1:
        raise CLIError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    tok = loaded.tokenizer
    printed: list[int] = []
    shown = [""]

    def stream(token_id: int) -> None:
        printed.append(token_id)
        text = tok.decode(printed, skip_special_tokens=True)
        sys.stdout.write(text[len(shown[0]):])
        sys.stdout.flush()
        shown[0] = text

    link = _make_link(args, loaded.view.vocab_size)
    if not args.json:
        sys.stdout.write(args.prompt)
    try:
        result = runtime.generate(
            args.prompt, partition, max_new_tokens=args.max_new_tokens, sampling=sampling,
            links=link,
            on_token=None if args.json else stream,
        )
    except ValueError as e:
        raise CLIError(str(e))
    if len(partition.cuts) == 1:
        from splitrl.cost import CostModel, emulate_report

        try:
            from splitrl.link import codec_for

            codec = codec_for(args.link)
            emulate_report(result.report, CostModel(loaded.view, args.ue, args.edge, args.link_profile, codec=codec), args.snr)
        except ValueError as e:
            raise CLIError(str(e))
    if args.json:
        print(json.dumps({"text": result.text, "token_ids": result.token_ids, "report": result.report.to_dict()}))
    else:
        print("\n")
        print(result.report.format())
    return 0


def cmd_ppl(args) -> int:
    from splitrl.eval import CorpusError, PerplexityConfig, PerplexityEvaluator

    loaded = _load(args)
    try:
        config = PerplexityConfig(
            tokens=args.tokens, window=args.window, stride=args.stride or args.window // 2,
            corpus_path=args.corpus, corpus_source=args.corpus_source,
        )
        evaluator = PerplexityEvaluator(loaded, config, progress=not args.json)
    except (CorpusError, ValueError) as e:
        raise CLIError(str(e))
    partition = _partition(evaluator.runtime, args.split)
    result = evaluator.evaluate(partition, _make_link(args, loaded.view.vocab_size))
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(f"split {result.split}: perplexity {result.ppl:.4f} over {result.scored_tokens} scored tokens "
              f"(window {result.window}, stride {result.stride}) in {result.seconds:.2f} s")
    return 0


def cmd_info(args) -> int:
    loaded = _load(args)
    summary = loaded.view.summary(context_length=args.context)
    summary["source"] = loaded.source
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{loaded.name}  ({summary['model_type']}, {summary['family']} family)  from {loaded.source}")
    print(f"layers {summary['num_layers']}  hidden {summary['hidden_size']}  vocab {summary['vocab_size']}  "
          f"params {summary['params_total']:,d}  head {summary['head_flops_per_token'] / 1e6:.1f} MFLOP/token")
    print(f"{'layer':>5} {'params':>12} {f'MFLOP/tok@{args.context}':>16} {'bytes/tok at cut after':>24}")
    for row in summary["layers"]:
        print(f"{row['index']:>5} {row['params']:>12,d} {row['flops_per_token'] / 1e6:>16.2f} {row['bytes_per_token_at_cut_after']:>24,d}")
    print(f"cut 0 sends token ids ({summary['bytes_per_token_at_cut'][0]} B/token); cut {summary['num_layers']} sends nothing")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"model name ({', '.join(NAMED_MODELS)}), local HF directory, .gguf file, or hub id")
    p.add_argument("--cache-dir", default=None, help="cache for dequantised GGUF models (default $SPLITRL_CACHE or ~/.cache/splitrl)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", action="store_true", help="machine-readable output")


COMMANDS: dict[str, tuple[Callable, Callable[[argparse.ArgumentParser], None], str]] = {}


def register(name: str, help_text: str):
    """Decorator-style registry so other modules can add subcommands (sweep, plot, ...)."""

    def wrap(builder):
        def deco(fn):
            COMMANDS[name] = (fn, builder, help_text)
            return fn

        return deco

    return wrap


def _build_generate(p):
    _common(p)
    p.add_argument("--split", default=None, help="split point s in 0..L, or comma-separated cut points (default L/2)")
    p.add_argument("--prompt", default="The history of wireless communication", help="prompt text")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0, help="seed for sampling and for link noise")
    _link_args(p)


def _link_args(p):
    p.add_argument("--link", default="identity",
                   help="what crosses the cut: identity, fp16, int8, int4, awgn, int8-biterr, int8-erasure, dropout, ...")
    p.add_argument("--snr", type=float, default=20.0, help="channel SNR in dB (sets BER/BLER for digital links)")
    p.add_argument("--modulation", default="qpsk", help="modulation mapping SNR to BER for digital links")
    p.add_argument("--dropout", type=float, default=0.0, help="element dropout probability for --link dropout")
    p.add_argument("--ue", default="phone-midrange", help="UE profile for the emulated latency/energy (name or YAML)")
    p.add_argument("--edge", default="edge-a100", help="edge profile (name or YAML)")
    p.add_argument("--link-profile", default="nr-sub6-20mhz", help="radio link profile (name or YAML)")


def _make_link(args, vocab_size: int):
    """The link named by --link at the channel state given by --snr (None for a lossless link)."""
    from splitrl.link import link_at

    if args.link == "identity":
        return None
    try:
        return link_at(args.link, seed=args.seed, snr_db=args.snr, dropout_p=args.dropout,
                       modulation=args.modulation, vocab_size=vocab_size)
    except ValueError as e:
        raise CLIError(f"--link: {e}")


def _build_ppl(p):
    _common(p)
    p.add_argument("--split", default=None, help="split point s in 0..L, or comma-separated cut points (default L/2)")
    p.add_argument("--tokens", type=int, default=1024, help="corpus tokens to score")
    p.add_argument("--window", type=int, default=512, help="context window per forward pass")
    p.add_argument("--stride", type=int, default=None, help="tokens between windows (default window/2)")
    p.add_argument("--corpus", default=None, help="path of WikiText-2 wiki.test.raw (default ../shared/data/...)")
    p.add_argument("--corpus-source", default="file", choices=["file", "datasets"])
    p.add_argument("--seed", type=int, default=0, help="seed for link noise")
    _link_args(p)


def _build_info(p):
    _common(p)
    p.add_argument("--context", type=int, default=128, help="context length for per-token FLOPs")


register("generate", "generate text through a split model and print the request report")(_build_generate)(cmd_generate)
register("ppl", "perplexity of a split model on WikiText-2")(_build_ppl)(cmd_ppl)
register("info", "layers, sizes, per-layer FLOPs and bytes at each cut")(_build_info)(cmd_info)


def _build_sweep(p):
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--splits", default="all", help="'all', a range 'a-b', or a list 'a,b,c'")
    p.add_argument("--levels", default="0:30:5", help="channel levels: 'start:stop:step' or 'a,b,c'")
    p.add_argument("--level-kind", default="snr", choices=["snr", "ber", "dropout"])
    p.add_argument("--transports", default="awgn,int8-biterr", help="comma-separated link names")
    p.add_argument("--seeds", type=int, default=3, help="repeat draws per cell")
    p.add_argument("--base-seed", type=int, default=0)
    p.add_argument("--modulation", default="qpsk")
    p.add_argument("--tokens", type=int, default=1024)
    p.add_argument("--window", type=int, default=1024)
    p.add_argument("--stride", type=int, default=None, help="default: window")
    p.add_argument("--corpus", default=None)
    p.add_argument("--out", default="sweep.csv", help="CSV table, appended cell by cell (resumes if present)")
    p.add_argument("--no-progress", action="store_true")


def cmd_sweep(args) -> int:
    from splitrl.eval import CorpusError
    from splitrl.sweep import SweepConfig, parse_levels, parse_range, run_sweep

    loaded = _load(args)
    try:
        config = SweepConfig(
            model=args.model, splits=parse_range(args.splits, loaded.view.num_layers), levels=parse_levels(args.levels),
            level_kind=args.level_kind, transports=[t for t in args.transports.split(",") if t], seeds=args.seeds,
            base_seed=args.base_seed, modulation=args.modulation, tokens=args.tokens, window=args.window,
            stride=args.stride or args.window, corpus_path=args.corpus,
        )
        path = run_sweep(config, args.out, progress=not args.no_progress, loaded=loaded)
    except (ValueError, CorpusError) as e:
        raise CLIError(str(e))
    print(f"sweep table: {path}")
    return 0


def _build_plot(p):
    p.add_argument("table", help="sweep CSV written by `splitrl sweep`")
    p.add_argument("--out", default=None, help="PNG path (default: next to the table)")


def cmd_plot(args) -> int:
    from splitrl.sweep import plot_sweep

    if not os.path.isfile(args.table):
        raise CLIError(f"no sweep table at {args.table}")
    try:
        print(f"heatmap: {plot_sweep(args.table, args.out)}")
    except (ValueError, KeyError) as e:
        raise CLIError(f"{args.table}: {e}")
    return 0


from splitrl.cost.cli import register_cli as _register_profile  # noqa: E402

_register_profile(register)
from splitrl.control import register_cli as _register_control  # noqa: E402

_register_control(register)
from splitrl.evaluate import register_cli as _register_evaluate  # noqa: E402

_register_evaluate(register)
from splitrl.surrogate.report import register_cli as _register_surrogate_report  # noqa: E402

_register_surrogate_report(register)
from splitrl.pipeline.cli import register_cli as _register_pipeline  # noqa: E402

_register_pipeline(register)
register("sweep", "perplexity over split points x channel levels x transports x seeds (resumable CSV)")(_build_sweep)(cmd_sweep)
register("plot", "heatmap PNG of a sweep table")(_build_plot)(cmd_plot)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="splitrl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (fn, builder, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        builder(p)
        p.set_defaults(func=fn)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    _threads(getattr(args, "threads", None))
    try:
        return int(args.func(args) or 0)
    except CLIError as e:
        print(f"splitrl {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # `python -m splitrl.cli` runs this file as __main__: delegate to the imported module so the
    # subcommands registered by other modules (and their error type) are the same objects.
    from splitrl.cli import main as _main

    sys.exit(_main())
