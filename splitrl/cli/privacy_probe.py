"""``splitrl privacy-probe``: token recovery per split, written as JSON (with provenance) and a PNG.

`add_arguments` and `run_probe` are also used by ``benchmarks/privacy_probe.py`` (its own default
``--out`` and recorded command); the probe itself is `splitrl.privacy.probe`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

from splitrl.errors import UsageError

__all__ = ["PROBE_DEFAULTS", "add_arguments", "canonical_argv", "run", "run_probe"]

# `splitrl.privacy.probe.ProbeConfig`'s defaults (importing it imports torch); tests/test_cli_package.py checks them.
PROBE_DEFAULTS = dict(train_tokens=16384, heldout_tokens=4096, window=128, heldout_fraction=0.3, classes=4096,
                      bootstrap=2000, seed=0)


def add_arguments(p: argparse.ArgumentParser, *, default_out: str = "privacy.json",
                  default_model: str = "smollm2-135m") -> None:
    d = SimpleNamespace(**PROBE_DEFAULTS)
    p.add_argument("--model", default=default_model, help="model name or path (splitrl.models.load_model)")
    p.add_argument("--train-tokens", type=int, default=d.train_tokens, help="probe-train tokens the attacker learns from")
    p.add_argument("--heldout-tokens", type=int, default=d.heldout_tokens, help="held-out tokens scored")
    p.add_argument("--window", type=int, default=d.window, help="tokens per request window")
    p.add_argument("--heldout-fraction", type=float, default=d.heldout_fraction, help="share of articles held out")
    p.add_argument("--classes", type=int, default=d.classes, help="K most frequent tokens of the least-squares classifier")
    p.add_argument("--bootstrap", type=int, default=d.bootstrap, help="block-bootstrap resamples for the 95%% interval")
    p.add_argument("--seed", type=int, default=d.seed, help="article split, window choice and bootstrap")
    p.add_argument("--corpus", default=None, help="WikiText-2 raw test file (default: $SPLITRL_WIKITEXT or ../shared/data)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", default=default_out, help="result JSON (the plot goes next to it as .png)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--replot", action="store_true", help="only redraw the PNG from the existing --out JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_probe(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    """Run (or with ``--replot`` redraw) the probe; ``argv`` is the command recorded in the JSON."""
    # lazy: --help and argument errors must not import torch
    from splitrl.eval import CorpusError
    from splitrl.privacy.probe import ProbeConfig, plot_privacy, run_privacy_probe
    from splitrl.provenance import run_record

    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f"--out: {out} is a folder; give a .json file path")
    if getattr(args, "replot", False):
        if not out.is_file():
            raise UsageError(f"--replot: no result at {out}; run without --replot first")
        plot_privacy(json.loads(out.read_text()), out.with_suffix(".png"))
        print(f"privacy probe: redrew {out.with_suffix('.png')} from {out}")
        return 0
    cfg = ProbeConfig(model=args.model, train_tokens=args.train_tokens, heldout_tokens=args.heldout_tokens,
                      window=args.window, heldout_fraction=args.heldout_fraction, classes=args.classes,
                      bootstrap=args.bootstrap, seed=args.seed, corpus_path=args.corpus)
    record = run_record(argv, threads=args.threads)
    try:
        result = run_privacy_probe(cfg, progress=not args.no_progress)
    except CorpusError as e:
        raise UsageError(f"--corpus: {e}") from None
    result = {**record, **result}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    if not args.no_plot:
        plot_privacy(result, out.with_suffix(".png"))
    print(f"privacy probe: {out}" + ("" if args.no_plot else f" and {out.with_suffix('.png')}"))
    print(f"{'split':>5} {'top1':>7} {'95% CI':>17} {'top5':>7}  probe")
    for s, t1, ci, t5, p in zip(result["splits"], result["top1_recovery"], result["top1_ci95"],
                                result["top5_recovery"], result["chosen_probe"]):
        print(f"{s:>5} {t1:>7.3f} [{ci[0]:.3f}, {ci[1]:.3f}] {t5:>7.3f}  {p}")
    print(f"most frequent token baseline: {result['frequent_token_baseline']:.3f} "
          f"({result['train_tokens']} probe-train / {result['heldout_tokens']} held-out tokens, {result['seconds']:.0f} s)")
    return 0


_OPTIONS = ("model", "train_tokens", "heldout_tokens", "window", "heldout_fraction", "classes", "bootstrap", "seed",
            "corpus", "threads", "out")


def canonical_argv(args: argparse.Namespace) -> list[str]:
    """The ``python -m splitrl privacy-probe ...`` command that reproduces ``args`` (every option spelled
    out, so the recorded command holds even when it was called in-process with other ``sys.argv``)."""
    argv = ["-m", "splitrl", "privacy-probe"]
    for name in _OPTIONS:
        v = getattr(args, name, None)
        if v is not None:
            argv += [f"--{name.replace('_', '-')}", str(v)]
    return argv + (["--no-plot"] if args.no_plot else [])


def run(args: argparse.Namespace) -> int:
    return run_probe(args, canonical_argv(args))
