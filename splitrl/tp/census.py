"""Parameter census of a sharding plan: the shards sum exactly to the full model plus what is replicated.

Replicated by design: every rank's copy of the layer norms and of the row-parallel biases (added
once after the reduce, on every rank, because every rank needs the full hidden state), and — when
there are more ranks than KV heads — the KV-projection rows of KV heads shared by several ranks.
The master alone holds embeddings, final norm and head.
"""
from __future__ import annotations

from typing import Any

from splitrl.tp.plan import ShardPlan
from splitrl.tp.shard import BLOCK_KINDS, master_state, rank_block_state

__all__ = ["census", "expected_replicated"]


def expected_replicated(view: Any, plan: ShardPlan) -> int:
    """Elements stored more than once, derived from the plan (not from the slices)."""
    d = plan.dims
    n = plan.world
    per_layer = 0
    layer = view.layers[0]
    if d.family == "llama":
        per_layer += layer.input_layernorm.weight.numel() + layer.post_attention_layernorm.weight.numel()
        if layer.self_attn.o_proj.bias is not None:
            per_layer += layer.self_attn.o_proj.bias.numel()
        if layer.mlp.down_proj.bias is not None:
            per_layer += layer.mlp.down_proj.bias.numel()
        kv_per_head = 2 * d.head_dim * d.hidden_size  # k and v rows of one head
        if layer.self_attn.k_proj.bias is not None:
            kv_per_head += 2 * d.head_dim
    else:
        per_layer += sum(p.numel() for p in (layer.ln_1.weight, layer.ln_1.bias, layer.ln_2.weight, layer.ln_2.bias))
        per_layer += layer.attn.c_proj.bias.numel() + layer.mlp.c_proj.bias.numel()
        kv_per_head = 2 * (d.head_dim * d.hidden_size + d.head_dim)
    extra_kv_heads = sum(len(s.kv_heads) for s in plan.shards) - d.num_kv_heads
    return d.num_layers * ((n - 1) * per_layer + extra_kv_heads * kv_per_head)


def census(view: Any, plan: ShardPlan) -> dict[str, Any]:
    """Element counts: full model, each rank's shard (from the real slices), replicated, and whether they add up."""
    full = sum(p.numel() for p in view.model.parameters())  # tied weights counted once
    per_rank = []
    for s in plan.shards:
        n = sum(t.numel() for layer in view.layers for k in BLOCK_KINDS
                for t in rank_block_state(layer, plan.dims, s, k).values())
        if s.is_master:
            n += sum(t.numel() for t in master_state(view).values())
        per_rank.append(int(n))
    rep = expected_replicated(view, plan)
    return {"full_elements": int(full), "rank_elements": per_rank, "replicated_elements": int(rep),
            "exact": sum(per_rank) == full + rep}
