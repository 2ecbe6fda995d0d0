"""Tensor-parallel inference across devices (TPI-LLM): every layer split by heads and FFN columns.

* `plan` — the sharding plan (KV-head groups with their query heads, FFN columns, uneven ratios).
* `shard` — slicing the model into per-rank block files; the rank's row-parallel model.
* `allreduce` — ``engine`` / ``star`` / ``ring`` all-reduces (registered with `splitrl.dist`) and
  the master's broadcast, over emulated links.
* `scheduler` — the sliding-window weight scheduler (W resident blocks, background prefetch).
* `worker` — a rank's command loop (``splitrl tp worker``); `driver` — `TPCluster`, the Python API.
* ``splitrl tp generate|ppl|worker|plan`` is `splitrl.cli.tp`.

Importing the package starts nothing.
"""
from splitrl.tp.plan import ModelDims, RankShard, ShardPlan, apportion, parse_ratios

__all__ = ["ModelDims", "RankShard", "ShardPlan", "apportion", "parse_ratios"]
