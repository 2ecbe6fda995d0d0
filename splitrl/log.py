"""The project's logging: one logger namespace (``splitrl.<part>``) and one line format.

Servers (edge, serve) and workers (tp workers, pipeline stages, child processes) report what
happens to them through `logging`, never ``print``: a line names its time, level and part
(``12:03:04 WARNING splitrl.edge: refused a call from ...``), so interleaved logs of several
processes on one terminal can be told apart. ``print`` is kept for a command's own output (its
result, its report), which scripts parse.
"""
from __future__ import annotations

import logging
import sys

__all__ = ["get_logger", "configure_logging", "FORMAT"]

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATEFMT = "%H:%M:%S"


def get_logger(part: str) -> logging.Logger:
    """The logger of one part of the project, ``splitrl.<part>`` (e.g. ``edge``, ``tp.worker``)."""
    return logging.getLogger(part if part.startswith("splitrl") else f"splitrl.{part}")


def configure_logging(level: int = logging.INFO) -> None:
    """Send ``splitrl.*`` records to stderr in `FORMAT` (idempotent; other libraries' loggers and
    the root logger are left as the application set them)."""
    root = logging.getLogger("splitrl")
    root.setLevel(level)
    if not any(getattr(h, "_splitrl", False) for h in root.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter(FORMAT, DATEFMT))
        h._splitrl = True  # type: ignore[attr-defined]  (marks our handler: configure twice, log once)
        root.addHandler(h)
        root.propagate = False
