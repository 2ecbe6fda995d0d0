"""The ``splitrl`` command line: every subcommand of the project (``splitrl --help`` lists them).

Layout: `COMMANDS` maps each command to the module of this package that implements it and its
one-line help. A command module has ``add_arguments(parser)`` and ``run(args) -> int`` (``edge``
and ``ue`` share `splitrl.cli.deploy`: ``add_edge_arguments``/``run_edge`` and
``add_ue_arguments``/``run_ue``); `_common` holds the helpers several commands share. `main`
imports only the chosen command's module, and command modules import torch, transformers and the
model code inside ``run``, so ``splitrl --help``, ``splitrl CMD --help`` and argument errors stay
fast.

Bad arguments (a flag, a value out of range, an unknown model, a missing or unreadable file, an
option the chosen subcommand would ignore) exit with status 2 and ONE line on stderr naming the
field and what is allowed — never a traceback (`splitrl.errors.UsageError`). ``--help`` of every
subcommand shows the defaults. Outputs say what they measured: ``ppl`` and ``generate`` print (and
put in ``--json``) the model, split, link, SNR, tokens, thread count and the clean reference;
non-finite numbers are ``null`` in JSON with an explicit flag (JSON has no NaN).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Callable, Sequence

from splitrl.cli._common import set_threads
from splitrl.errors import UsageArgumentParser, UsageError

__all__ = ["COMMANDS", "Command", "build_parser", "command_module", "main"]


@dataclass(frozen=True)
class Command:
    """Where a subcommand lives: ``splitrl.cli.<module>``, functions ``add_<entry>arguments`` and
    ``run<_entry>`` (``entry`` empty: ``add_arguments`` / ``run``), and its one-line help."""

    module: str
    help: str
    entry: str = ""

    def functions(self) -> tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]:
        mod = command_module(self.module)
        add = f"add_{self.entry}_arguments" if self.entry else "add_arguments"
        run = f"run_{self.entry}" if self.entry else "run"
        return getattr(mod, add), getattr(mod, run)


COMMANDS: dict[str, Command] = {
    "generate": Command("generate", "generate text through a split model and print the request report"),
    "ppl": Command("ppl", "perplexity of a split model on WikiText-2"),
    "info": Command("info", "layers, sizes, per-layer FLOPs and bytes at each cut"),
    "profile": Command("profile", "time each layer on this machine, fit its FLOP/s and write a UE profile YAML"),
    "train": Command("train", "train (or resume, or roll out) a split-point agent: TensorBoard logs, evaluation, "
                              "checkpoints (the same as train.py)"),
    "control": Command("control", "serve requests with a trained controller choosing the split (JSONL + TensorBoard)"),
    "evaluate": Command("evaluate", "compare agents/baselines on held-out channel episodes: fraction of oracle, regret, "
                                    "evaluations, latency"),
    "surrogate-report": Command("surrogate_report", "fit quality surrogates on a sweep table (random vs active "
                                                    "acquisition) and report accuracy and speed"),
    "edge": Command("deploy", "the edge server: runs the edge's layers for UE sessions over gRPC (bearer token, "
                              "loopback by default)", entry="edge"),
    "ue": Command("deploy", "the UE side: generate through a split with the edge as a separate process", entry="ue"),
    "serve": Command("serve", "OpenAI-compatible HTTP endpoint with the controller choosing the split per request"),
    "tp": Command("tp", "tensor-parallel inference across N ranks (TPI-LLM): generate, ppl, worker, plan"),
    "aircomp-worker": Command("aircomp_worker", "one device of a multi-process AirComp all-reduce on synthetic partial "
                                                "sums (writes a JSON report on rank 0)"),
    "pipeline": Command("pipeline", "K-device pipeline (MDI-LLM ring): generate, join as a stage, or plan the cuts"),
    "privacy-probe": Command("privacy_probe", "how much of the prompt the activations at each split give away "
                                              "(inversion probes, held-out WikiText-2)"),
    "sweep-merge": Command("sweep_merge", "append a shard of the same sweep (run in another process) to a sweep table"),
    "sweep": Command("sweep", "perplexity over split points x channel levels x transports x seeds (resumable CSV)"),
    "plot": Command("plot", "a sweep table as perplexity-vs-SNR lines per split, latency/energy heatmaps, the "
                            "best-split map and a printed table"),
}


def command_module(module: str) -> ModuleType:
    """``splitrl.cli.<module>`` (imported on first use)."""
    return importlib.import_module(f"{__name__}.{module}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``splitrl`` parser with every subcommand's options, or (``only``) with the options of that
    one subcommand alone — the others are listed with their help but their modules are not imported."""
    parser = UsageArgumentParser(prog="splitrl", allow_abbrev=False,
                                 description="Split a transformer LM between a user device and edge servers over a "
                                             "wireless link, and decide the split online. Subcommands:")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help, allow_abbrev=False)
        if only is None or name == only:
            add, run = cmd.functions()
            add(p)
            p.set_defaults(func=run, _parser=p)
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


def _chosen(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names (the top level has no options besides --help), if any."""
    for tok in argv:
        if not tok.startswith("-"):
            return tok if tok in COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns the exit status (2 with one line on stderr for any bad input)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(only=_chosen(argv) or "")
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0), or a bad flag: one line already printed by UsageArgumentParser
        return int(e.code or 0)
    args._given = _given(args._parser, argv)
    try:
        set_threads(getattr(args, "threads", None))
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
