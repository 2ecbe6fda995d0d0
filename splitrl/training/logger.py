"""TensorBoard logging of a run (``runs/<run>/``), one SummaryWriter, namespaced tags.

Tags written by the trainer:

==============================  ===============================================================
``rollout/ep_reward``           return of each training episode (rewards floored at
                                ``train.reward_floor``), at the step the episode ended
``rollout/ep_len``              its length
``train/...``                   the agent's learning diagnostics (SB3: ``train/loss``,
                                ``train/value_loss``, ``train/entropy_loss``, ``train/learning_rate``...)
``rollout/ep_rew_mean``, ...    SB3's own rollout statistics; ``time/fps``
``eval/regret_vs_oracle``       mean over held-out seeds of (oracle return - agent return) per episode
``eval/return``, ``eval/oracle_return``, ``eval/regret_per_step``, ``eval/split_mean``
``cost/real_evaluations``       real evaluations (measured table cells) consumed by learning so far
``channel/snr_db``              SNR of the slot acted in (every ``train.log_every`` steps)
``split/chosen``                the split chosen (every ``train.log_every`` steps)
``split/histogram``             histogram of the splits chosen (every ``train.histogram_every`` steps)
``config`` (text)               the resolved YAML config; hyper-parameters in the HParams plugin
==============================  ===============================================================
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

__all__ = ["RunLogger", "flatten"]


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> {"a.b": value} with values TensorBoard's HParams accepts (bool/int/float/str)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (bool, int, float, str)):
            out[key] = v
        else:
            out[key] = str(v)
    return out


class RunLogger:
    """A SummaryWriter on ``log_dir``; ``purge_step`` (on resume) hides events of the interrupted
    session logged at or after it, so the resumed curves continue without duplicates."""

    def __init__(self, log_dir: str | Path, *, purge_step: int | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge_step, flush_secs=30)

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.writer.add_scalar(tag, float(value), int(step))

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, v in values.items():
            self.scalar(tag, v, step)

    def histogram(self, tag: str, values, step: int, *, lo: int, hi: int) -> None:
        """Histogram of integer ``values`` in [lo, hi], one bin per integer."""
        v = np.asarray(values, dtype=np.float64)
        if v.size:
            self.writer.add_histogram(tag, v, int(step), bins=np.arange(lo - 0.5, hi + 1.0, 1.0))

    def text(self, tag: str, text: str, step: int = 0) -> None:
        self.writer.add_text(tag, text, int(step))

    def hparams(self, hparam_dict: dict[str, Any], metric_tags: list[str]) -> None:
        """Hyper-parameters for the HParams plugin, in this run's own event file (not a sub-run)."""
        clean = {k: (v if not (isinstance(v, float) and not math.isfinite(v)) else str(v)) for k, v in hparam_dict.items()}
        exp, ssi, sei = hparams(clean, {t: 0.0 for t in metric_tags})
        fw = self.writer._get_file_writer()
        for s in (exp, ssi, sei):
            fw.add_summary(s)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
