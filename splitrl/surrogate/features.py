"""Features of one (transport, split, SNR) cell for the quality surrogate, and the cut statistics behind them.

A cell is ``(transport, split, snr_db)``. `FeatureSpec` turns cells into a float matrix whose
columns are (`FeatureSpec.feature_names`):

==========================  =============================================================
``split``                   the split point s (layers on the UE)
``snr_db``                  channel SNR, clipped to ``snr_range`` (the range seen in training)
``layers_remaining``        L - s (layers the corrupted activations still pass through)
``token_ids_cross``         1 when s = 0 (token ids cross, not hidden states), else 0
``transport=<name>``        one-hot of the link (the link fixes the codec)
``log10_channel_error``     digital links (``*-biterr``/``*-erasure``): log10 of the uncoded BER of
                            ``modulation`` over AWGN (`splitrl.channel.modulation.ber_awgn`, floored
                            at 1e-15); analog links: log10 of the noise-to-signal power ratio
                            (-SNR/10). Both are "error intensity per element".
``cut:<stat>``              clean-activation statistics at cut s (`cut_statistics`), if the spec has them
==========================  =============================================================

The cut statistics are computed once from the clean model (`cut_statistics`) and stored IN the
spec (plain lists, JSON), so a saved surrogate predicts without the model.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
from splitrl.errors import UsageError

__all__ = ["CUT_STAT_NAMES", "FeatureSpec", "as_cells", "cut_statistics", "is_digital"]

CUT_STAT_NAMES = (
    "log10_absmax", "log10_rms", "log10_crest", "token_crest", "log10_massive_ratio", "log10_token_rms_median",
)
_BER_FLOOR = 1e-15


def is_digital(transport: str) -> bool:
    """True for links that send bits (``<codec>-biterr`` / ``<codec>-erasure``)."""
    return transport.endswith("-biterr") or transport.endswith("-erasure")


def as_cells(cells: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(transport[str], split[int], snr_db[float])`` arrays from a DataFrame (columns ``transport``,
    ``split`` and ``snr_db`` or ``level``), a sequence of ``(transport, split, snr_db)`` tuples, or
    a tuple of three arrays."""
    try:
        import pandas as pd

        if isinstance(cells, pd.DataFrame):
            snr_col = "snr_db" if "snr_db" in cells else "level"
            return (cells["transport"].to_numpy(str), cells["split"].to_numpy(int), cells[snr_col].to_numpy(float))
    except ImportError:  # pragma: no cover
        pass
    if (isinstance(cells, tuple) and len(cells) == 3 and all(np.ndim(c) == 1 for c in cells)
            and all(isinstance(x, (str, np.str_)) for x in cells[0])):
        t, s, q = cells
        if not len(t) == len(s) == len(q):
            raise UsageError("cells given as (transports, splits, snrs) must have equal lengths")
        return np.asarray(t, str), np.asarray(s, int), np.asarray(q, float)
    rows = list(cells)
    if not rows:
        return np.array([], str), np.array([], int), np.array([], float)
    if any(len(r) != 3 for r in rows):
        raise UsageError("each cell must be (transport, split, snr_db)")
    t, s, q = zip(*rows)
    return np.asarray(t, str), np.asarray(s, int), np.asarray(q, float)


@dataclass
class FeatureSpec:
    """How cells become features; serialises to JSON (`to_dict` / `from_dict`).

    Attributes:
        num_layers: L of the model (splits are 0..L).
        transports: link names, in one-hot order.
        modulation: maps SNR to BER for digital links.
        snr_range: SNR (dB) clip range, normally the measured range of the training data.
        cut_stats: statistic name -> one value per cut 0..L (see `cut_statistics`); empty: none.
        cut_stats_source: provenance of ``cut_stats`` (model, tokens, ...), informational.
        ppl_clean: transport -> clean perplexity of the table the surrogate was fitted on
            (lets `SurrogateEnv` report ppl without the model); informational for equality.
        version: format version.
    """

    num_layers: int
    transports: list[str]
    modulation: str = "qpsk"
    snr_range: tuple[float, float] = (0.0, 30.0)
    cut_stats: dict[str, list[float]] = field(default_factory=dict)
    cut_stats_source: dict[str, Any] = field(default_factory=dict)
    ppl_clean: dict[str, float] = field(default_factory=dict)
    version: int = 1

    def __post_init__(self) -> None:
        self.num_layers = int(self.num_layers)
        if self.num_layers < 1:
            raise UsageError(f"num_layers must be >= 1, got {self.num_layers}")
        self.transports = [str(t) for t in self.transports]
        if not self.transports or len(set(self.transports)) != len(self.transports):
            raise UsageError(f"transports must be a non-empty list of distinct names, got {self.transports}")
        lo, hi = (float(x) for x in self.snr_range)
        if not lo <= hi:
            raise UsageError(f"snr_range must be (low, high) with low <= high, got {self.snr_range}")
        self.snr_range = (lo, hi)
        self.cut_stats = {str(k): [float(x) for x in v] for k, v in self.cut_stats.items()}
        for k, v in self.cut_stats.items():
            if len(v) != self.num_layers + 1:
                raise UsageError(f"cut_stats[{k!r}] has {len(v)} values, expected one per cut 0..{self.num_layers}")
            if not all(math.isfinite(x) for x in v):
                raise UsageError(f"cut_stats[{k!r}] has non-finite values")
        self.ppl_clean = {str(k): float(v) for k, v in self.ppl_clean.items()}
        # lazy: `splitrl surrogate-report --help` reads this package; channel and eval import torch
        from splitrl.channel.modulation import bits_per_symbol

        bits_per_symbol(self.modulation)  # validates

    # --- identity -----------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["snr_range"] = list(self.snr_range)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSpec":
        known = {f for f in cls.__dataclass_fields__}
        extra = set(d) - known
        if extra:
            raise UsageError(f"unknown FeatureSpec fields {sorted(extra)}")
        return cls(**{**d, "snr_range": tuple(d.get("snr_range", (0.0, 30.0)))})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def identity(self) -> dict:
        """The fields that define the feature mapping (provenance and ppl_clean excluded)."""
        d = self.to_dict()
        d.pop("cut_stats_source")
        d.pop("ppl_clean")
        return d

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON of `identity` (equal mapping <=> equal fingerprint)."""
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()

    def differences(self, other: "FeatureSpec") -> list[str]:
        """Names of the identity fields in which ``other`` differs."""
        a, b = self.identity(), other.identity()
        return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))

    # --- mapping ------------------------------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        return (["split", "snr_db", "layers_remaining", "token_ids_cross"]
                + [f"transport={t}" for t in self.transports]
                + ["log10_channel_error"]
                + [f"cut:{k}" for k in self.cut_stats])

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def encode(self, cells: Any) -> np.ndarray:
        """Feature matrix ``[n, n_features]`` (float64) of cells (see `as_cells`)."""
        # lazy: `splitrl surrogate-report --help` reads this package; channel and eval import torch
        from splitrl.channel.modulation import ber_awgn

        transport, split, snr = as_cells(cells)
        n = len(split)
        unknown = sorted(set(transport.tolist()) - set(self.transports))
        if unknown:
            raise UsageError(f"transports {unknown} unknown to this surrogate (it knows {self.transports})")
        if n and (split.min() < 0 or split.max() > self.num_layers):
            raise UsageError(f"splits must be in 0..{self.num_layers}, got {split.min()}..{split.max()}")
        if n and not np.isfinite(snr).all():
            raise UsageError("snr_db must be finite")
        snr_c = np.clip(snr, *self.snr_range)
        cols: list[np.ndarray] = [split.astype(float), snr_c, (self.num_layers - split).astype(float),
                                  (split == 0).astype(float)]
        cols += [(transport == t).astype(float) for t in self.transports]
        digital = np.array([is_digital(t) for t in transport], dtype=bool) if n else np.zeros(0, bool)
        err = -snr_c / 10.0
        if digital.any():
            ber = np.asarray(ber_awgn(snr_c[digital], self.modulation), dtype=float).reshape(-1)
            err = err.copy()
            err[digital] = np.log10(np.maximum(ber, _BER_FLOOR))
        cols.append(err)
        for v in self.cut_stats.values():
            cols.append(np.asarray(v, dtype=float)[split])
        return np.stack(cols, axis=1) if n else np.zeros((0, self.n_features))

    def grid(self, transport: str, snr_db: float, splits: Iterable[int] | None = None) -> list[tuple]:
        """Cells of every split (default 0..L) at one transport and SNR."""
        splits = range(self.num_layers + 1) if splits is None else splits
        return [(transport, int(s), float(snr_db)) for s in splits]


def _token_stats(h: np.ndarray) -> dict[str, float]:
    """Statistics of a ``[T, H]`` activation matrix (float64)."""
    a = np.abs(h)
    rms = float(np.sqrt(np.mean(h * h)))
    absmax = float(a.max())
    tok_rms = np.sqrt(np.mean(h * h, axis=1))
    tok_max = a.max(axis=1)
    ok = tok_rms > 0
    med = float(np.median(tok_rms[ok])) if ok.any() else 0.0
    tiny = 1e-30
    return {
        "log10_absmax": math.log10(absmax + tiny),
        "log10_rms": math.log10(rms + tiny),
        "log10_crest": math.log10((absmax + tiny) / (rms + tiny)),
        "token_crest": float(np.mean(np.log10(tok_max[ok] / tok_rms[ok]))) if ok.any() else 0.0,
        "log10_massive_ratio": math.log10((float(tok_rms.max()) + tiny) / (med + tiny)),
        "log10_token_rms_median": math.log10(med + tiny),
    }


def cut_statistics(loaded, tokens: int = 256, *, window: int | None = None, corpus_path: str | None = None,
                   input_ids=None) -> dict[str, Any]:
    """Clean-activation statistics at every cut 0..L from ``tokens`` WikiText-2 tokens.

    Cut ``s >= 1`` uses the hidden states entering layer ``s`` (from the evaluator's prefix
    cache, `PerplexityEvaluator.prefix.hidden(window, s)`); cut 0 uses the token embeddings
    (flagged by the ``token_ids_cross`` feature, since ids, not activations, cross there).

    Statistics (`CUT_STAT_NAMES`): log10 max|h|, log10 RMS, log10 (max|h| / RMS) (crest factor),
    mean over tokens of log10 of the per-token crest factor (what per-token int8 absmax scaling
    sees), log10 of the largest per-token RMS over the median one ("massive" attention-sink
    tokens, which per-token noise scaling hits hardest), and log10 of the median per-token RMS. Costs one clean forward pass over ``tokens`` tokens.

    Returns ``{"stats": {name: [value per cut 0..L]}, "source": {...}}`` for `FeatureSpec`.
    """
    import torch

    # lazy: `splitrl surrogate-report --help` reads this package; channel and eval import torch
    from splitrl.eval import PerplexityConfig, PerplexityEvaluator

    window = int(window or min(tokens, 1024))
    ev = PerplexityEvaluator(loaded, PerplexityConfig(tokens=tokens, window=window, stride=window,
                                                      corpus_path=corpus_path), input_ids=input_ids)
    L = ev.view.num_layers
    per_cut: list[dict[str, float]] = []
    with torch.inference_mode():
        for cut in range(L + 1):
            parts = []
            for wi, w in enumerate(ev.windows):
                if cut == 0:
                    pos = torch.arange(0, w.end - w.begin).unsqueeze(0)
                    h = ev.view.embed(ev.input_ids[:, w.begin:w.end], pos)
                else:
                    h = ev.prefix.hidden(wi, cut)
                parts.append(h.reshape(-1, h.shape[-1]).double().cpu().numpy())
            per_cut.append(_token_stats(np.concatenate(parts, axis=0)))
    stats = {k: [round(d[k], 9) for d in per_cut] for k in CUT_STAT_NAMES}
    source = {"model": getattr(loaded, "name", "?"), "tokens": int(ev.input_ids.shape[1]), "window": window,
              "corpus": "wikitext-2 test" if input_ids is None else "given input_ids"}
    return {"stats": stats, "source": source}


def spec_for(num_layers: int, transports: Sequence[str], *, stats: dict | None = None, **kw: Any) -> FeatureSpec:
    """A `FeatureSpec`, optionally with the output of `cut_statistics`."""
    if stats is not None:
        kw.setdefault("cut_stats", stats["stats"])
        kw.setdefault("cut_stats_source", stats.get("source", {}))
    return FeatureSpec(num_layers=num_layers, transports=list(transports), **kw)
