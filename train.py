#!/usr/bin/env python
"""Train split-point agents (issue 5): `python train.py --agent ... --env ...`.

The agents are not built yet; this entry point lists what exists and exits non-zero rather than
pretending to train.
"""
import sys

from splitrl.agents import __doc__ as agents_doc

if __name__ == "__main__":
    print("train.py: no trainable agents exist yet (they arrive with the agents issue). "
          f"Package: {agents_doc.strip()}", file=sys.stderr)
    sys.exit(2)
