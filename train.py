#!/usr/bin/env python
"""Train split-point agents: ``python train.py --agent KIND --env ID --config FILE.yaml --seed N``.

The same as ``splitrl train ...``: see `splitrl.cli.train` for the options (``--help``),
``configs/`` for the defaults and `splitrl.agents.registry` for the agent kinds.
"""
import sys

from splitrl.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
