"""The ``splitrl`` command line: every subcommand of the project (``splitrl --help`` lists them).

Bad arguments (a flag, a value out of range, an unknown model, a missing or unreadable file, an
option the chosen subcommand would ignore) exit with status 2 and ONE line on stderr naming the
field and what is allowed — never a traceback. ``--help`` of every subcommand shows the defaults.
Outputs say what they measured: ``ppl`` and ``generate`` print (and put in ``--json``) the model,
split, link, SNR, tokens, thread count and the clean reference; non-finite numbers are ``null``
in JSON with an explicit flag (JSON has no NaN).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Callable, Sequence

import numpy as np
import torch

from splitrl.models.loader import DEFAULT_MODEL, NAMED_MODELS


# One usage-error type for every subcommand (it lives in its own module so that running this
# file as ``python -m splitrl.cli`` does not create a second, unrelated class).
from splitrl.errors import UsageArgumentParser, UsageError  # noqa: E402
from splitrl.errors import UsageError as CLIError  # noqa: E402


def _threads(n: int | None) -> None:
    if n is not None:
        if n < 1:
            raise CLIError(f"--threads must be >= 1, got {n}")
        torch.set_num_threads(n)


def _finite(x: float) -> float | None:
    """``x``, or None when it is NaN/inf (JSON has no NaN; the caller adds an explicit flag)."""
    return float(x) if x is not None and math.isfinite(float(x)) else None


# Links that do not depend on the channel: identity and the plain (lossless-transport) codecs.
def _uses_channel(link: str) -> str:
    """'snr' (SNR-driven link), 'dropout', or '' (the channel does not matter)."""
    from splitrl.link.factory import CODEC_NAMES

    if link == "dropout":
        return "dropout"
    if link == "identity" or link in CODEC_NAMES:
        return ""
    return "snr"


def _check_link_options(args, given: set[str], *, costs: bool) -> None:
    """Reject options the chosen link (or subcommand) would silently ignore, and a non-finite SNR."""
    from splitrl.link import LINK_NAMES

    if args.link not in LINK_NAMES:
        raise CLIError(f"--link must be one of {', '.join(LINK_NAMES)}, got {args.link!r}")
    if not math.isfinite(args.snr):
        raise CLIError(f"--snr must be a finite number of dB, got {args.snr}")
    kind = _uses_channel(args.link)
    if kind != "snr":
        bad = [f for f in ("modulation",) + (() if costs else ("snr",)) if f in given]
        if bad:
            raise CLIError(f"--{bad[0]} has no effect with --link {args.link} (it applies to awgn and *-biterr/*-erasure links)")
    if kind == "snr" and args.link in ("awgn", "analog") and "modulation" in given:
        raise CLIError(f"--modulation has no effect with --link {args.link} (an analog link sees the SNR directly)")
    if kind != "dropout" and "dropout" in given:
        raise CLIError("--dropout applies only to --link dropout")
    if kind == "dropout" and not 0 <= args.dropout < 1:
        raise CLIError(f"--dropout must be a probability in [0, 1), got {args.dropout}")
    if not costs:
        bad = [f for f in ("ue", "edge", "link_profile") if f in given]
        if bad:
            raise CLIError(f"--{bad[0].replace('_', '-')} has no effect here: this subcommand emulates no latency/energy")


def _link_description(args) -> dict:
    """What crossed the cut, as printed and put in --json."""
    kind = _uses_channel(args.link)
    d = {"link": args.link, "snr_db": None, "modulation": None, "dropout": None}
    if kind == "snr":
        d["snr_db"] = float(args.snr)
        d["modulation"] = None if args.link in ("awgn", "analog") else args.modulation
    elif kind == "dropout":
        d["dropout"] = float(args.dropout)
    return d


def _link_text(d: dict) -> str:
    text = f"link {d['link']}"
    if d["snr_db"] is not None:
        text += f" at SNR {d['snr_db']:g} dB" + (f" ({d['modulation']})" if d["modulation"] else "")
    if d["dropout"] is not None:
        text += f" with dropout p={d['dropout']:g}"
    return text


def token_printer(tokenizer) -> Callable[[int], None]:
    """An ``on_token`` callback that streams the decoded text to stdout as tokens arrive."""
    shown, tokens = [""], []

    def stream(tok: int) -> None:
        tokens.append(tok)
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        sys.stdout.write(text[len(shown[0]):])
        sys.stdout.flush()
        shown[0] = text

    return stream


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


def _partition(runtime, text: str | None, precision: str | None = None):
    from splitrl.runtime import InvalidPartitionError

    L = runtime.num_layers
    cuts = _parse_cuts(text if text is not None else str(L // 2), L)
    names = None
    if precision is not None:
        names = [p.strip() for p in precision.split(",")]
        if len(names) not in (1, len(cuts) + 1):
            raise CLIError(f"--precision must be one name or one per segment ({len(cuts) + 1}), got {precision!r}")
        names = names[0] if len(names) == 1 else names
    try:
        return runtime.partition(cuts, names)
    except InvalidPartitionError as e:
        raise CLIError(f"--split/--precision: {e}")


def cmd_generate(args) -> int:
    from splitrl.runtime import SamplingConfig, SplitRuntime

    given = getattr(args, "_given", set())
    if not args.sample:
        bad = [f for f in ("temperature", "top_k", "top_p") if f in given]
        if bad:
            raise CLIError(f"--{bad[0].replace('_', '-')} applies only with --sample (greedy decoding ignores it)")
    _check_link_options(args, given, costs=True)
    loaded = _load(args)
    runtime = SplitRuntime(loaded)
    partition = _partition(runtime, args.split, args.precision)
    try:
        sampling = SamplingConfig(
            do_sample=args.sample, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed
        )
    except ValueError as e:
        raise CLIError(str(e))
    if args.max_new_tokens < 1:
        raise CLIError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    stream = token_printer(loaded.tokenizer)
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
    if len(partition.cuts) != 1:
        bad = [f for f in ("ue", "edge", "link_profile") if f in given]
        if bad:
            raise CLIError(f"--{bad[0].replace('_', '-')} has no effect with several cut points (latency/energy are emulated for one cut)")
    if len(partition.cuts) == 1:
        from splitrl.cost import CostModel, emulate_report

        try:
            from splitrl.link import codec_for

            codec = codec_for(args.link)
            emulate_report(result.report, CostModel(loaded.view, args.ue, args.edge, args.link_profile, codec=codec), args.snr)
        except ValueError as e:
            raise CLIError(str(e))
    link_d = _link_description(args)
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
            "decoding": "sampled" if args.sample else "greedy", "seed": args.seed, "threads": torch.get_num_threads(),
            "new_tokens": len(result.token_ids), "emulation_snr_db": float(args.snr) if len(partition.cuts) == 1 else None}
    if args.json:
        print(json.dumps({**what, "text": result.text, "token_ids": result.token_ids, "report": result.report.to_dict()},
                         allow_nan=False, default=_json_default))
    else:
        print("\n")
        print(f"{loaded.name}, split {','.join(map(str, partition.cuts))} of {runtime.num_layers} layers "
              f"(weights {'/'.join(what['precision'])}), {_link_text(link_d)}, {what['decoding']} decoding, {what['new_tokens']} new tokens, "
              f"{what['threads']} torch thread(s)")
        if link is not None:
            print(f"clean reference (no link): {what['clean_text']!r}; the first {same} of {len(clean_ids)} tokens match it")
        print(result.report.format())
    return 0


def _json_default(o):
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def cmd_ppl(args) -> int:
    from splitrl.eval import CorpusError, PerplexityConfig, PerplexityEvaluator

    _check_link_options(args, getattr(args, "_given", set()), costs=False)
    loaded = _load(args)
    try:
        config = PerplexityConfig(
            tokens=args.tokens, window=args.window, stride=args.stride or args.window // 2,
            corpus_path=args.corpus, corpus_source=args.corpus_source,
        )
        evaluator = PerplexityEvaluator(loaded, config, progress=not args.json)
    except (CorpusError, ValueError) as e:
        raise CLIError(str(e))
    partition = _partition(evaluator.runtime, args.split, args.precision)
    link = _make_link(args, loaded.view.vocab_size)
    result = evaluator.evaluate(partition, link)
    L = evaluator.runtime.num_layers
    # The clean reference: the same tokens and windows with nothing crossing a link (a lossless
    # link or the full-UE split is the reference itself).
    clean = result if link is None or list(partition.cuts) == [L] else evaluator.evaluate(L)
    d = result.to_dict()
    link_d = _link_description(args)
    out = {"model": loaded.name, "num_layers": L, **link_d, **{k: v for k, v in d.items() if k not in ("ppl", "nll")},
           "ppl": _finite(result.ppl), "nll": _finite(result.nll), "ppl_finite": math.isfinite(result.ppl),
           "clean_ppl": _finite(clean.ppl), "log_ppl_ratio": _finite(math.log(result.ppl / clean.ppl))
           if math.isfinite(result.ppl) and clean.ppl > 0 else None,
           "seed": args.seed, "threads": torch.get_num_threads()}
    if args.json:
        print(json.dumps(out, allow_nan=False))
    else:
        ppl = f"{result.ppl:.4f}" if math.isfinite(result.ppl) else "not finite (the link destroyed the activations)"
        print(f"{loaded.name}, split {','.join(map(str, result.split))} of {L} layers "
              f"(weights {'/'.join(result.precision)}), {_link_text(link_d)}: "
              f"perplexity {ppl} (clean {clean.ppl:.4f}) over {result.scored_tokens} scored of {result.tokens} "
              f"tokens (window {result.window}, stride {result.stride}) in {result.seconds:.2f} s, "
              f"{out['threads']} torch thread(s)")
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
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 by default: on a busy 2-core machine 2 threads were 5-12x slower; on an idle one "
                        "2 threads are ~1.6x faster, benchmarks/results/threads.json)")
    p.add_argument("--json", action="store_true", help="machine-readable output (non-finite numbers are null + a flag)")


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
    p.add_argument("--max-new-tokens", type=int, default=48, help="tokens to generate")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (with --sample)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens, 0 = all (with --sample)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (with --sample)")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling and for link noise")
    _precision_arg(p)
    _link_args(p)


def _precision_arg(p) -> None:
    p.add_argument("--precision", default=None,
                   help="weight precision: one of fp32, bf16, int8, int4 for every segment, or one per segment "
                        "(e.g. int4,fp32 = UE int4, edge fp32); int4 runs a GGUF's own Q4_1 codes (default: fp32)")


def _link_args(p, costs: bool = True):
    p.add_argument("--link", default="identity",
                   help="what crosses the cut: identity, fp16, int8, int4, awgn, int8-biterr, int8-erasure, dropout, ...")
    p.add_argument("--snr", type=float, default=20.0, help="channel SNR in dB (sets BER/BLER for digital links)")
    p.add_argument("--modulation", default="qpsk", help="modulation mapping SNR to BER for digital links")
    p.add_argument("--dropout", type=float, default=0.0, help="element dropout probability for --link dropout")
    if costs:  # only subcommands that emulate latency/energy take the device and radio profiles
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
    p.add_argument("--corpus-source", default="file", choices=["file", "datasets"], help="where the corpus comes from")
    p.add_argument("--seed", type=int, default=0, help="seed for link noise")
    _precision_arg(p)
    _link_args(p, costs=False)


def _build_info(p):
    _common(p)
    p.add_argument("--context", type=int, default=128, help="context length for per-token FLOPs")


register("generate", "generate text through a split model and print the request report")(_build_generate)(cmd_generate)
register("ppl", "perplexity of a split model on WikiText-2")(_build_ppl)(cmd_ppl)
register("info", "layers, sizes, per-layer FLOPs and bytes at each cut")(_build_info)(cmd_info)


def _build_sweep(p):
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (see `splitrl ppl --help`)")
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
    p.add_argument("--ue-precisions", default="fp32",
                   help="comma-separated weight precisions of the UE's layers (the edge runs fp32), e.g. fp32,int8,int4")
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
            ue_precisions=[p.strip() for p in args.ue_precisions.split(",") if p.strip()],
        )
        path = run_sweep(config, args.out, progress=not args.no_progress, loaded=loaded)
    except (ValueError, CorpusError) as e:
        raise CLIError(str(e))
    import pandas as pd

    df = pd.read_csv(path)
    bad = int((~np.isfinite(df["ppl"].to_numpy(float))).sum())
    print(f"sweep table: {path} ({len(df)} cells" + (f"; {bad} with a non-finite perplexity, ppl_finite=False" if bad else "")
          + f"; its 'seconds' column was timed with {torch.get_num_threads()} torch thread(s))")
    return 0


def _build_plot(p):
    p.add_argument("table", help="sweep CSV written by `splitrl sweep`")
    p.add_argument("--out", default=None, help="PNG path (default: next to the table, .png)")
    p.add_argument("--tolerance", type=float, default=0.05,
                   help="best split = lowest emulated latency among splits within this fraction of clean perplexity")


def cmd_plot(args) -> int:
    from splitrl.sweep import best_splits, plot_sweep, read_sweep_table, table_text

    if not (math.isfinite(args.tolerance) and args.tolerance >= 0):
        raise CLIError(f"--tolerance must be a finite fraction >= 0, got {args.tolerance}")
    if args.out is not None and os.path.isdir(args.out):
        raise CLIError(f"--out {args.out} is a folder; give a .png path")
    df = read_sweep_table(args.table)
    try:
        png = plot_sweep(args.table, args.out, tolerance=args.tolerance)
    except (ValueError, KeyError) as e:
        raise CLIError(f"{args.table}: {' '.join(str(e).split())[:300]}")
    from splitrl.sweep import record_plot

    record_plot(args.table, png)  # the sidecar names the command that drew the committed PNG
    print(table_text(df))
    if str(df["level_kind"].iloc[0]) == "snr" and "emulated_e2e_latency_s" in df:
        best = best_splits(df, args.tolerance)
        print(f"\nbest split per SNR (lowest emulated latency within {args.tolerance:.0%} of clean perplexity):")
        for t, b in best.groupby("transport"):
            print(f"  {t}: " + ", ".join(f"{lv:g} dB -> {'none' if sp is None or sp != sp else int(sp)}"
                                         for lv, sp in zip(b.level, b.split)))
    print(f"\nplot: {png}")
    return 0


from splitrl.cost.cli import register_cli as _register_profile  # noqa: E402

_register_profile(register)
from splitrl.control import register_cli as _register_control  # noqa: E402

_register_control(register)
from splitrl.evaluate import register_cli as _register_evaluate  # noqa: E402

_register_evaluate(register)
from splitrl.surrogate.report import register_cli as _register_surrogate_report  # noqa: E402

_register_surrogate_report(register)
from splitrl.deploy.cli import register_cli as _register_deploy  # noqa: E402

_register_deploy(register)
from splitrl.serve.cli import register_cli as _register_serve  # noqa: E402

_register_serve(register)
from splitrl.tp.cli import register_cli as _register_tp  # noqa: E402

_register_tp(register)
from splitrl.aircomp.cli import register_cli as _register_aircomp  # noqa: E402

_register_aircomp(register)
from splitrl.pipeline.cli import register_cli as _register_pipeline  # noqa: E402

_register_pipeline(register)
from splitrl.privacy.cli import register_cli as _register_privacy  # noqa: E402

_register_privacy(register)
from splitrl.sweep import register_cli as _register_sweep_merge  # noqa: E402

_register_sweep_merge(register)
register("sweep", "perplexity over split points x channel levels x transports x seeds (resumable CSV)")(_build_sweep)(cmd_sweep)
register("plot", "a sweep table as perplexity-vs-SNR lines per split, latency/energy heatmaps, the best-split map and a printed table")(_build_plot)(cmd_plot)


def build_parser() -> argparse.ArgumentParser:
    parser = UsageArgumentParser(prog="splitrl", allow_abbrev=False,
                                 description="Split a transformer LM between a user device and edge servers over a "
                                             "wireless link, and decide the split online. Subcommands:")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (fn, builder, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        builder(p)
        p.set_defaults(func=fn, _parser=p)
    return parser


def _given(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """Destinations of the options spelled out in ``argv`` (abbreviations are disabled, so a
    token names an option exactly): lets a subcommand reject options it would ignore."""
    out = set()
    for action in parser._actions:
        for opt in action.option_strings:
            if any(tok == opt or tok.startswith(opt + "=") for tok in argv):
                out.add(action.dest)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns the exit status (2 with one line on stderr for any bad input)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0), or a bad flag: one line already printed by UsageArgumentParser
        return int(e.code or 0)
    args._given = _given(args._parser, argv)
    try:
        _threads(getattr(args, "threads", None))
        return int(args.func(args) or 0)
    except UsageError as e:
        print(f"splitrl {args.command}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except OSError as e:  # an input or output path the user named cannot be used
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"splitrl {args.command}: error: {where}{e.strerror or type(e).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"splitrl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # `python -m splitrl.cli` runs this file as __main__: delegate to the imported module so the
    # subcommands registered by other modules (and their error type) are the same objects.
    from splitrl.cli import main as _main

    sys.exit(_main())
