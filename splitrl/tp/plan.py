"""The sharding plan: which attention heads and FFN columns each tensor-parallel rank owns.

Rules (Megatron-style column-then-row parallelism, TPI-LLM's device split):

* Attention is split by **KV-head group**: a rank owns some KV heads together with every query
  head that reads them, so no K/V has to be exchanged. With grouped-query attention
  (SmolLM2: 9 query / 3 KV heads) ``N = 2`` is necessarily uneven (2 groups + 1 group). When
  there are more ranks than KV heads (``N > n_kv``) the *query* heads are apportioned instead and
  each rank holds a copy of the KV heads its query heads need: those KV projections are
  **replicated** (counted as such by the parameter census).
* The FFN is split by **intermediate columns** (gate/up rows, down columns; GPT-2's ``c_fc``
  columns and ``c_proj`` rows).
* Shares follow the ``ratios`` (heterogeneous devices get proportional shares), apportioned by
  largest remainder with at least one unit per rank, contiguous and in rank order.
* Rank 0 is the **master**: it also holds the embeddings, the final norm and the LM head.

The plan is a pure function of the model's dimensions, the world size and the ratios, so every
rank (on any machine) derives the same plan from the same inputs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from splitrl.errors import UsageError

__all__ = ["ModelDims", "RankShard", "ShardPlan", "apportion", "parse_ratios"]


@dataclass(frozen=True)
class ModelDims:
    """The dimensions of a decoder that the plan needs (read from a Hugging Face config)."""

    family: str  # "llama" or "gpt2"
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int

    def __post_init__(self) -> None:
        if self.family not in ("llama", "gpt2"):
            raise UsageError(f"model family: {self.family!r} is not supported; allowed: llama, gpt2")
        if self.num_heads % self.num_kv_heads:
            raise UsageError(f"model: {self.num_heads} query heads are not a multiple of {self.num_kv_heads} KV heads")

    @classmethod
    def from_config(cls, config: Any) -> "ModelDims":
        mt = getattr(config, "model_type", "?")
        h = int(config.hidden_size)
        if mt == "gpt2":
            n = int(config.n_head)
            inner = getattr(config, "n_inner", None) or 4 * h
            return cls("gpt2", int(config.n_layer), h, n, n, h // n, int(inner))
        if mt in ("llama", "mistral", "qwen2"):
            n = int(config.num_attention_heads)
            kv = int(getattr(config, "num_key_value_heads", None) or n)
            hd = int(getattr(config, "head_dim", None) or h // n)
            return cls("llama", int(config.num_hidden_layers), h, n, kv, hd, int(config.intermediate_size))
        raise UsageError(f"model_type {mt!r} cannot be tensor-parallelised; supported: gpt2, llama, mistral, qwen2")

    @property
    def group_size(self) -> int:
        """Query heads per KV head."""
        return self.num_heads // self.num_kv_heads


def parse_ratios(text: str | Sequence[float] | None, world: int) -> tuple[float, ...]:
    """``"0.5,0.25,0.25"`` (or a sequence) -> normalised positive ratios, one per rank; None = equal."""
    if isinstance(world, bool) or not isinstance(world, int) or world < 1:
        raise UsageError(f"--shards must be an integer >= 1, got {world!r}")
    if text is None or (isinstance(text, str) and not text.strip()):
        return tuple(1.0 / world for _ in range(world))
    try:
        vals = [float(x) for x in (text.split(",") if isinstance(text, str) else text)]
    except (TypeError, ValueError):
        raise UsageError(f"--ratio must be comma-separated positive numbers (one per shard), got {text!r}") from None
    if len(vals) != world:
        raise UsageError(f"--ratio needs one value per shard ({world}), got {len(vals)}: {text!r}")
    if not all(math.isfinite(v) and v > 0 for v in vals):
        raise UsageError(f"--ratio values must be finite and > 0, got {text!r}")
    s = sum(vals)
    return tuple(v / s for v in vals)


def apportion(total: int, ratios: Sequence[float], *, minimum: int = 1, what: str = "units") -> tuple[int, ...]:
    """Split ``total`` integer units by ``ratios`` (largest remainder), each share >= ``minimum``."""
    n = len(ratios)
    if total < minimum * n:
        raise UsageError(f"--shards: {n} shards need at least {minimum * n} {what}, the model has {total}")
    free = total - minimum * n
    raw = [r * total - minimum for r in ratios]  # ideal extra units above the minimum
    raw = [max(0.0, x) for x in raw]
    scale = free / sum(raw) if sum(raw) > 0 else 0.0
    ideal = [x * scale for x in raw] if scale else [free / n] * n
    base = [int(math.floor(x)) for x in ideal]
    left = free - sum(base)
    # Largest remainder; ties go to the lower rank (deterministic).
    order = sorted(range(n), key=lambda i: (-(ideal[i] - base[i]), i))
    for i in order[:left]:
        base[i] += 1
    return tuple(b + minimum for b in base)


@dataclass(frozen=True)
class RankShard:
    """What one rank owns in every layer (the same in each layer).

    Attributes:
        rank: the rank.
        q_heads: the query heads (global indices, contiguous).
        kv_heads: the KV head behind each *local KV slot* (global indices); with replication a
            KV head may appear on several ranks.
        kv_groups: local query heads per local KV slot (``len(q_heads) / len(kv_heads)``).
        ffn: ``(start, stop)`` intermediate columns.
        is_master: holds embeddings, final norm and head.
    """

    rank: int
    q_heads: tuple[int, ...]
    kv_heads: tuple[int, ...]
    kv_groups: int
    ffn: tuple[int, int]
    is_master: bool

    @property
    def ffn_width(self) -> int:
        return self.ffn[1] - self.ffn[0]


@dataclass(frozen=True)
class ShardPlan:
    """A validated plan for ``world`` ranks (see the module docstring)."""

    dims: ModelDims
    ratios: tuple[float, ...]
    shards: tuple[RankShard, ...]

    @property
    def world(self) -> int:
        return len(self.shards)

    @property
    def replicates_kv(self) -> bool:
        return sum(len(s.kv_heads) for s in self.shards) > self.dims.num_kv_heads

    @classmethod
    def build(cls, dims: ModelDims, ratios: Sequence[float]) -> "ShardPlan":
        n = len(ratios)
        if n < 1:
            raise UsageError("--shards must be >= 1")
        ratios = parse_ratios(list(ratios), n)
        g = dims.group_size
        shards = []
        if n <= dims.num_kv_heads:
            # Whole KV groups: no replication.
            counts = apportion(dims.num_kv_heads, ratios, what="KV heads")
            kv_start = 0
            groups = []
            for c in counts:
                kv = tuple(range(kv_start, kv_start + c))
                groups.append((tuple(range(kv_start * g, (kv_start + c) * g)), kv, g))
                kv_start += c
        else:
            counts = apportion(dims.num_heads, ratios, what="attention heads")
            q_start = 0
            groups = []
            for c in counts:
                q = tuple(range(q_start, q_start + c))
                q_start += c
                needed = sorted({h // g for h in q})
                per_kv = [sum(1 for h in q if h // g == k) for k in needed]
                if len(set(per_kv)) == 1:
                    kv, local_g = tuple(needed), per_kv[0]
                else:  # uneven coverage: one KV slot per query head (replicated), group size 1
                    kv, local_g = tuple(h // g for h in q), 1
                groups.append((q, kv, local_g))
        widths = apportion(dims.intermediate_size, ratios, what="FFN columns")
        col = 0
        for r, ((q, kv, lg), w) in enumerate(zip(groups, widths)):
            shards.append(RankShard(r, q, kv, lg, (col, col + w), r == 0))
            col += w
        return cls(dims, tuple(ratios), tuple(shards))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (for reports and the shard manifest)."""
        return {
            "world": self.world,
            "ratios": list(self.ratios),
            "replicates_kv": self.replicates_kv,
            "shards": [
                {"rank": s.rank, "q_heads": list(s.q_heads), "kv_heads": list(s.kv_heads), "kv_groups": s.kv_groups,
                 "ffn": list(s.ffn), "is_master": s.is_master}
                for s in self.shards
            ],
        }
