"""splitrl: decide online where to split a transformer LM between a user device and an edge server.

Importing the package registers the Gymnasium environments (``splitrl/SplitPoint-v0``, ...).
"""
__version__ = "0.1.0"

from splitrl import envs as _envs  # noqa: E402,F401  (registers the Gymnasium environments)
