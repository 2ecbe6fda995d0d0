"""Privacy per cut for SmolLM2-135M: top-1/top-5 prompt-token recovery of inversion probes at every split.

Reproduce (~5-10 min on 2 shared CPU cores; writes benchmarks/results/privacy_smollm2.{json,png})::

    SPLITRL_WIKITEXT=/path/to/wiki.test.raw nice -n 5 .venv/bin/python benchmarks/privacy_probe.py

It is `splitrl privacy-probe` with the committed result's path as the default ``--out``; every flag
of that command is accepted (see ``--help``). Protocol: `splitrl.privacy.probe` (WikiText-2 test
articles split 70/30 into probe-train and held-out parts by a seeded permutation; 16384 probe-train
and 4096 held-out tokens in 128-token windows; ridge-to-embedding + cosine nearest neighbour over
the whole vocabulary, and a least-squares classifier over the 4096 most frequent probe-train tokens).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    import torch

    from splitrl.errors import UsageError
    from splitrl.cli.privacy_probe import add_arguments, run_probe

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p, default_out=str(ROOT / "benchmarks" / "results" / "privacy_smollm2.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        return run_probe(args, [str(Path(__file__).relative_to(ROOT)) if Path(__file__).is_relative_to(ROOT)
                                        else __file__, *(sys.argv[1:] if argv is None else argv)])
    except UsageError as e:
        print(f"privacy_probe: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
