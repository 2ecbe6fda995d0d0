"""``python -m splitrl.cli ...``: the same as ``splitrl ...`` / ``python -m splitrl ...``."""
import sys

from splitrl.cli import main

sys.exit(main())
