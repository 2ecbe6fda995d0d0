"""Pictures of a pipeline run: the per-stage schedule (which sample each stage computes, when)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from splitrl.plotting import pyplot, save_figure
from splitrl.errors import UsageError

__all__ = ["plot_schedule"]


def plot_schedule(reports: Sequence[dict], path: str | Path, *, max_seconds: float | None = None,
                  title: str | None = None) -> Path:
    """Gantt chart of the stages' compute intervals (colour = sample) from the stage reports' traces."""
    plt = pyplot()

    rows = sorted(reports, key=lambda r: (r["generation"], r["rank"]))
    if not rows:
        raise UsageError("no stage reports to plot")
    t0 = min(ev[2] for r in rows for ev in r["trace"]) if any(r["trace"] for r in rows) else 0.0
    fig, ax = plt.subplots(figsize=(10, 0.6 * len(rows) + 1.5))
    cmap = plt.get_cmap("tab10")
    labels = []
    for y, r in enumerate(rows):
        labels.append(f"g{r['generation']} stage {r['stage']} [{r['layers'][0]},{r['layers'][1]})")
        for sample, kind, a, b in r["trace"]:
            if max_seconds is not None and a - t0 > max_seconds:
                continue
            ax.barh(y, b - a, left=a - t0, color=cmap(int(sample) % 10), edgecolor="black" if kind == "prefill" else None,
                    linewidth=0.4, height=0.7)
    ax.set_yticks(range(len(rows)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the first compute")
    ax.set_title(title or "pipeline schedule (colour = sample; outlined = prefill)")
    path = Path(path)
    save_figure(fig, path, dpi=120)
    return path
