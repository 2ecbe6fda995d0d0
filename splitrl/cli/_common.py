"""Helpers shared by the ``splitrl`` subcommands: thread count, model/link/precision options,
partition parsing, the model loader wrapper and the streaming token printer.

Nothing here imports torch, transformers or the model code at module level: the option builders
run for ``--help`` and argument errors, which must stay fast. The project constants the builders
show (`DEFAULT_MODEL`, `NAMED_MODELS`) are copies of `splitrl.models.loader`'s, kept equal by
``tests/test_cli_package.py``.
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import Callable

from splitrl.errors import UsageError

# Copies of splitrl.models.loader's (importing it imports torch); tests/test_cli_package.py checks them.
DEFAULT_MODEL = "smollm2-135m"
NAMED_MODELS = (DEFAULT_MODEL, "gpt2-tiny", "llama-tiny")


def set_threads(n: int | None) -> None:
    """``torch.set_num_threads(n)`` (nothing for None; a UsageError below 1)."""
    if n is not None:
        if n < 1:
            raise UsageError(f"--threads must be >= 1, got {n}")
        # lazy: --help and argument errors must not import torch
        import torch

        torch.set_num_threads(n)


def torch_threads() -> int:
    # lazy: --help and argument errors must not import torch
    import torch

    return torch.get_num_threads()


def finite(x: float) -> float | None:
    """``x``, or None when it is NaN/inf (JSON has no NaN; the caller adds an explicit flag)."""
    return float(x) if x is not None and math.isfinite(float(x)) else None


def json_default(o):
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


# Links that do not depend on the channel: identity and the plain (lossless-transport) codecs.
def uses_channel(link: str) -> str:
    """'snr' (SNR-driven link), 'dropout', or '' (the channel does not matter)."""
    # lazy: --help and argument errors must not import torch
    from splitrl.link.factory import CODEC_NAMES

    if link == "dropout":
        return "dropout"
    if link == "identity" or link in CODEC_NAMES:
        return ""
    return "snr"


def check_link_options(args, given: set[str], *, costs: bool) -> None:
    """Reject options the chosen link (or subcommand) would silently ignore, and a non-finite SNR."""
    # lazy: --help and argument errors must not import torch
    from splitrl.link import LINK_NAMES

    if args.link not in LINK_NAMES:
        raise UsageError(f"--link must be one of {', '.join(LINK_NAMES)}, got {args.link!r}")
    if not math.isfinite(args.snr):
        raise UsageError(f"--snr must be a finite number of dB, got {args.snr}")
    kind = uses_channel(args.link)
    if kind != "snr":
        bad = [f for f in ("modulation",) + (() if costs else ("snr",)) if f in given]
        if bad:
            raise UsageError(f"--{bad[0]} has no effect with --link {args.link} (it applies to awgn and *-biterr/*-erasure links)")
    if kind == "snr" and args.link in ("awgn", "analog") and "modulation" in given:
        raise UsageError(f"--modulation has no effect with --link {args.link} (an analog link sees the SNR directly)")
    if kind != "dropout" and "dropout" in given:
        raise UsageError("--dropout applies only to --link dropout")
    if kind == "dropout" and not 0 <= args.dropout < 1:
        raise UsageError(f"--dropout must be a probability in [0, 1), got {args.dropout}")
    if not costs:
        bad = [f for f in ("ue", "edge", "link_profile") if f in given]
        if bad:
            raise UsageError(f"--{bad[0].replace('_', '-')} has no effect here: this subcommand emulates no latency/energy")


def link_description(args) -> dict:
    """What crossed the cut, as printed and put in --json."""
    kind = uses_channel(args.link)
    d = {"link": args.link, "snr_db": None, "modulation": None, "dropout": None}
    if kind == "snr":
        d["snr_db"] = float(args.snr)
        d["modulation"] = None if args.link in ("awgn", "analog") else args.modulation
    elif kind == "dropout":
        d["dropout"] = float(args.dropout)
    return d


def link_text(d: dict) -> str:
    text = f"link {d['link']}"
    if d["snr_db"] is not None:
        text += f" at SNR {d['snr_db']:g} dB" + (f" ({d['modulation']})" if d["modulation"] else "")
    if d["dropout"] is not None:
        text += f" with dropout p={d['dropout']:g}"
    return text


def make_link(args, vocab_size: int):
    """The link named by --link at the channel state given by --snr (None for a lossless link)."""
    if args.link == "identity":
        return None
    # lazy: --help and argument errors must not import torch
    from splitrl.link import link_at

    try:
        return link_at(args.link, seed=args.seed, snr_db=args.snr, dropout_p=args.dropout,
                       modulation=args.modulation, vocab_size=vocab_size)
    except ValueError as e:
        raise UsageError(f"--link: {e}")


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


def parse_cuts(text: str, num_layers: int) -> list[int]:
    try:
        cuts = [int(x) for x in str(text).split(",") if x.strip() != ""]
    except ValueError:
        raise UsageError(f"--split must be an integer 0..{num_layers} or comma-separated cut points, got {text!r}")
    if not cuts:
        raise UsageError(f"--split must be an integer 0..{num_layers}")
    return cuts


def load(args):
    """``load_model(args.model, cache_dir=args.cache_dir)``; an unknown or unsupported model is a UsageError."""
    # lazy: --help and argument errors must not import torch
    from splitrl.models import ModelNotFoundError, UnsupportedModelError, load_model

    try:
        return load_model(args.model, cache_dir=args.cache_dir, compile_decode=getattr(args, "compile", False))
    except (ModelNotFoundError, UnsupportedModelError) as e:
        raise UsageError(str(e))


def partition(runtime, text: str | None, precision: str | None = None):
    """The runtime's partition for ``--split`` (default L/2) and ``--precision``."""
    # lazy: --help and argument errors must not import torch
    from splitrl.runtime import InvalidPartitionError

    L = runtime.num_layers
    cuts = parse_cuts(text if text is not None else str(L // 2), L)
    names = None
    if precision is not None:
        names = [p.strip() for p in precision.split(",")]
        if len(names) not in (1, len(cuts) + 1):
            raise UsageError(f"--precision must be one name or one per segment ({len(cuts) + 1}), got {precision!r}")
        names = names[0] if len(names) == 1 else names
    try:
        return runtime.partition(cuts, names)
    except InvalidPartitionError as e:
        raise UsageError(f"--split/--precision: {e}")


# --- option builders -----------------------------------------------------------------------------
THREADS_HELP = ("torch CPU threads (1 by default: on a busy 2-core machine 2 threads were 5-12x slower; on an idle one "
                "2 threads are ~1.6x faster, benchmarks/results/threads.json)")


def model_args(p: argparse.ArgumentParser) -> None:
    """--model, --cache-dir, --threads, --json (generate, ppl, info)."""
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"model name ({', '.join(NAMED_MODELS)}), local HF directory, .gguf file, or hub id")
    p.add_argument("--cache-dir", default=None, help="cache for dequantised GGUF models (default $SPLITRL_CACHE or ~/.cache/splitrl)")
    p.add_argument("--threads", type=int, default=1, help=THREADS_HELP)
    p.add_argument("--json", action="store_true", help="machine-readable output (non-finite numbers are null + a flag)")


def precision_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", default=None,
                   help="weight precision: one of fp32, bf16, int8, int4 for every segment, or one per segment "
                        "(e.g. int4,fp32 = UE int4, edge fp32); int4 runs a GGUF's own Q4_1 codes (default: fp32)")


COMPILE_HELP = ("torch.compile the decode step of low-bit (bf16/int8/int4) LLaMA-family segments: faster decode "
                "after a one-off compile per chunk length (seconds each; needs a C++ compiler; "
                "benchmarks/results/decode_speed.json)")


def compile_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--compile", action="store_true", help=COMPILE_HELP)


def warm_up_compiled(loaded, start: int, stop: int) -> None:
    """With ``--compile``: compile the decode graphs of layers ``[start, stop)`` now, before serving."""
    import logging
    import time

    if not loaded.view.compile_decode:
        return
    log = logging.getLogger("splitrl.cli")
    t0 = time.perf_counter()
    chunks = loaded.view.warm_up_compiled_decode(start, stop)
    failed = loaded.view.compiled_decode.failed
    if failed:
        log.warning("--compile: compilation failed, decoding eager: %s", failed)
    elif not chunks:
        log.warning("--compile: nothing to compile (only low-bit LLaMA-family layers compile; these are %s)",
                    loaded.view.base_precision)
    else:
        log.info("--compile: decode graphs for chunks of %s layers ready in %.1f s", chunks, time.perf_counter() - t0)


def link_args(p: argparse.ArgumentParser, costs: bool = True) -> None:
    p.add_argument("--link", default="identity",
                   help="what crosses the cut: identity, fp16, int8, int4, awgn, int8-biterr, int8-erasure, dropout, ...")
    p.add_argument("--snr", type=float, default=20.0, help="channel SNR in dB (sets BER/BLER for digital links)")
    p.add_argument("--modulation", default="qpsk", help="modulation mapping SNR to BER for digital links")
    p.add_argument("--dropout", type=float, default=0.0, help="element dropout probability for --link dropout")
    if costs:  # only subcommands that emulate latency/energy take the device and radio profiles
        p.add_argument("--ue", default="phone-midrange", help="UE profile for the emulated latency/energy (name or YAML)")
        p.add_argument("--edge", default="edge-a100", help="edge profile (name or YAML)")
        p.add_argument("--link-profile", default="nr-sub6-20mhz", help="radio link profile (name or YAML)")
