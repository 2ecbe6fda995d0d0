"""``python -m splitrl ...``: the same command line as the ``splitrl`` script."""
import sys

from splitrl.proc import WORKER_COMMANDS, exit_with_parent

# A worker spawned by a driver exits with it; watched before its command's heavy imports (torch, the model).
if any(tuple(sys.argv[1:1 + len(c)]) == c for c in WORKER_COMMANDS):
    exit_with_parent(what=f"splitrl {' '.join(sys.argv[1:3])}")

from splitrl.cli import main  # noqa: E402

sys.exit(main())
