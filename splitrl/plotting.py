"""The one plot-and-save helper: every figure of the project (the CLI's plots and the benchmark
figures) is drawn on `pyplot()` and written by `save_figure`.

Figures here are files, never windows: `pyplot()` selects matplotlib's Agg backend before pyplot
is imported (servers and CI have no display, and a GUI backend picked from the environment would
fail or block there). `save_figure` lays the figure out, creates the folder, writes it and closes
it — an unclosed figure stays in pyplot's registry and leaks memory across a long run of plots.
matplotlib is imported inside `pyplot()` so that importing a module that can plot does not
import matplotlib (≈0.3 s) for the many commands that never draw.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["pyplot", "save_figure"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg (file-only) backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, *, dpi: int = 110, tight: bool = True) -> Path:
    """Lay out (``tight``), write ``fig`` to ``path`` (folders created) at ``dpi`` and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    if tight:
        fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
