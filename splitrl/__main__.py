"""``python -m splitrl ...``: the same command line as the ``splitrl`` script."""
import sys

from splitrl.cli import main

sys.exit(main())
