"""Privacy per cut: how much of the prompt an eavesdropper (or a curious edge) recovers at each split.

Owns `PrivacyTable`, the loader of a measured privacy file (``benchmarks/results/privacy_*.json``,
written by the privacy-probe benchmark): for each cut ``s`` the top-1 token recovery of an
inversion probe trained on the activations that cross the link at ``s`` (held-out WikiText-2
text). The env charges ``w_privacy * recovery[s]`` and turns a privacy target (the largest
tolerated recovery) into the smallest split meeting it.

At ``s = L`` nothing crosses the link, so the recovery there is 0 whatever the file says about
the final hidden state. At ``s = 0`` the raw token ids cross: recovery 1 unless the file says otherwise.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from splitrl.errors import UsageError
from splitrl.resources import resource_path

__all__ = ["PrivacyTable", "DEFAULT_PRIVACY_FILE"]

DEFAULT_PRIVACY_FILE = resource_path("privacy_smollm2.json")


@dataclass(frozen=True)
class PrivacyTable:
    """Top-1 token recovery at every cut ``0..L`` (``recovery[L] == 0``: nothing crosses)."""

    model: str
    recovery: np.ndarray  # [L+1] in [0, 1]
    path: str = ""

    @property
    def num_layers(self) -> int:
        return len(self.recovery) - 1

    @classmethod
    def load(cls, path: str | Path, *, num_layers: int, model: str | None = None) -> "PrivacyTable":
        """Read a privacy file: JSON with ``model``, ``splits`` and ``top1_recovery`` (one per split)."""
        p = Path(path)
        if not p.is_file():
            raise UsageError(f"privacy_table: {p} not found (run the privacy probe benchmark, or set env.privacy_table=null)")
        try:
            data = json.loads(p.read_text())
            splits = [int(x) for x in data["splits"]]
            rec = [float(x) for x in data["top1_recovery"]]
            name = str(data["model"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UsageError(f"privacy_table: {p} is not a privacy file with 'model', 'splits' and "
                             f"'top1_recovery' ({type(e).__name__})") from None
        if model is not None and name != model:
            raise UsageError(f"privacy_table: {p} was measured on {name!r}, not {model!r}")
        if len(splits) != len(rec) or not all(0.0 <= r <= 1.0 for r in rec):
            raise UsageError(f"privacy_table: {p} needs one top1_recovery in [0, 1] per split")
        L = int(num_layers)
        out = np.full(L + 1, np.nan)
        for s, r in zip(splits, rec):
            if not 0 <= s <= L:
                raise UsageError(f"privacy_table: {p} has split {s} outside 0..{L} (another model?)")
            out[s] = r
        out[L] = 0.0  # nothing crosses the link when everything runs on the UE
        if np.isnan(out[0]):
            out[0] = 1.0  # raw token ids cross
        missing = np.flatnonzero(np.isnan(out))
        if len(missing):
            raise UsageError(f"privacy_table: {p} lacks splits {missing[:8].tolist()}")
        out.flags.writeable = False
        return cls(model=name, recovery=out, path=str(p))

    def min_split(self, target: float) -> int:
        """Smallest split ``s`` whose recovery, and every deeper cut's, is at most ``target``
        (monotone envelope: a privacy floor must stay met when the split moves deeper)."""
        t = float(target)
        if not 0.0 <= t <= 1.0:
            raise UsageError(f"privacy_target: a recovery in [0, 1], got {target!r}")
        ok = self.recovery <= t
        # The floor is the first s from which every deeper cut meets the target (s = L always does).
        bad = np.flatnonzero(~ok)
        return int(bad[-1] + 1) if len(bad) else 0
