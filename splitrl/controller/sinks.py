"""Decision-log sinks: every served request's `DecisionRecord` as a JSONL line and TensorBoard scalars.

One session per output folder: `claim_session_dir` refuses a folder that already holds a
decision log (appending a second session to it would mix two runs' records and step counters).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterator

from splitrl.errors import UsageError
from splitrl.training.logger import RunLogger

__all__ = ["JsonlSink", "TensorBoardSink", "claim_session_dir", "iter_decisions", "DECISIONS_FILE"]

DECISIONS_FILE = "decisions.jsonl"

# Record key -> TensorBoard tag suffix, under the sink's namespace (channel figures under ``channel/``).
SCALARS = {
    "split": "split", "decision_us": "decision_us", "tokens_per_s": "tokens_per_s",
    "emulated_ttft_s": "emulated_ttft_s", "emulated_ue_energy_j_per_token": "emulated_ue_energy_j_per_token",
    "reward_table": "reward_table", "ppl_measured": "ppl", "fallback": "fallback",
}


def claim_session_dir(path: str | Path) -> Path:
    """Create ``path`` for a new session; a folder that already holds a decision log is refused."""
    p = Path(path)
    if (p / DECISIONS_FILE).exists():
        raise UsageError(f"--out: {p} already holds a session ({DECISIONS_FILE}); give a new folder")
    p.mkdir(parents=True, exist_ok=True)
    return p


class JsonlSink:
    """Appends one JSON object per record to ``path`` (flushed per record: a crash loses nothing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(record) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class TensorBoardSink:
    """Scalars of every record under ``<namespace>/...`` (the SNR under ``channel/snr_db``), step = request index."""

    def __init__(self, log_dir: str | Path, namespace: str, *, config: dict | None = None) -> None:
        self.namespace = namespace
        self.log = RunLogger(log_dir)  # the project's one TensorBoard writer (`splitrl.training.logger`)
        if config is not None:
            self.log.text(f"{namespace}/config", "```\n" + json.dumps(config, indent=2, default=str) + "\n```")

    def write(self, record: dict[str, Any]) -> None:
        step = int(record["request"])
        self.log.scalar("channel/snr_db", float(record["snr_db"]), step)
        for key, tag in SCALARS.items():
            v = record.get(key)
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                self.log.scalar(f"{self.namespace}/{tag}", float(v), step)

    def close(self) -> None:
        self.log.close()


def iter_decisions(path: str | Path) -> Iterator[dict]:
    """The records of a ``decisions.jsonl`` file, in order."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)
