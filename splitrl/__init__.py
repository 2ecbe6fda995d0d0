"""splitrl: decide online where to split a transformer LM between a user device and an edge server.

Importing the package registers the Gymnasium environments (``splitrl/SplitPoint-v0``, ...) —
without importing Gymnasium itself: when Gymnasium is already imported they are registered now,
otherwise right after its first import (a one-shot import hook), so ``import splitrl`` (and with it
``splitrl --help``) stays light while ``import splitrl; gymnasium.make("splitrl/...")`` works.
"""
__version__ = "0.1.0"

import importlib.abc as _abc
import importlib.util as _util
import sys as _sys


class _RegisterEnvsAfterGymnasium(_abc.MetaPathFinder):
    """Finds nothing itself: on the first ``import gymnasium`` it wraps Gymnasium's loader so that
    `splitrl.envs` (the registrations) is imported right after Gymnasium's own module runs."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "gymnasium":
            return None
        if self in _sys.meta_path:
            _sys.meta_path.remove(self)  # one shot; and find_spec below must not come back here
        spec = _util.find_spec("gymnasium")
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            # lazy: light path: runs only after the first `import gymnasium`, so `import splitrl` (and `splitrl --help`) stays free of gymnasium, numpy and torch
            import splitrl.envs  # noqa: F401  (registers the Gymnasium environments)

        loader.exec_module = exec_then_register
        return spec


if "gymnasium" in _sys.modules:
    from splitrl import envs as _envs  # noqa: E402,F401  (registers the Gymnasium environments)
elif not any(isinstance(f, _RegisterEnvsAfterGymnasium) for f in _sys.meta_path):
    _sys.meta_path.insert(0, _RegisterEnvsAfterGymnasium())
