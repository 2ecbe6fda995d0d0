"""Sharding plan rules and the parameter census (in-process, no ranks started)."""
import pytest
import torch

from splitrl.errors import UsageError
from splitrl.tp.census import census
from splitrl.tp.plan import ModelDims, ShardPlan, apportion, parse_ratios

SMOLLM2 = ModelDims("llama", 30, 576, 9, 3, 64, 1536)


def test_apportion_sums_follows_ratios_and_keeps_minimum():
    assert apportion(3, [0.5, 0.5]) == (2, 1)
    assert apportion(10, [0.5, 0.25, 0.25]) == (5, 3, 2) or apportion(10, [0.5, 0.25, 0.25]) == (5, 2, 3)
    assert apportion(4, [0.97, 0.01, 0.01, 0.01]) == (1, 1, 1, 1)
    assert sum(apportion(1536, [0.4, 0.3, 0.2, 0.1])) == 1536
    with pytest.raises(UsageError, match="at least 5"):
        apportion(4, [0.2] * 5, what="heads")


def test_parse_ratios_validates():
    assert parse_ratios(None, 3) == pytest.approx((1 / 3,) * 3)
    assert parse_ratios(".5,.25,.25", 3) == pytest.approx((0.5, 0.25, 0.25))
    assert parse_ratios("2,1,1", 3) == pytest.approx((0.5, 0.25, 0.25))
    for bad in ("1,1", "1,-1,1", "a,b,c", "1,nan,1"):
        with pytest.raises(UsageError, match="--ratio"):
            parse_ratios(bad, 3)


def test_smollm2_gqa_plan_kv_groups_uneven_and_replicated():
    two = ShardPlan.build(SMOLLM2, [0.5, 0.5])  # 3 KV groups over 2 ranks: necessarily uneven
    assert [s.kv_heads for s in two.shards] == [(0, 1), (2,)]
    assert [s.q_heads for s in two.shards] == [tuple(range(6)), (6, 7, 8)]
    assert not two.replicates_kv
    three = ShardPlan.build(SMOLLM2, [1, 1, 1])
    assert [len(s.q_heads) for s in three.shards] == [3, 3, 3] and not three.replicates_kv
    four = ShardPlan.build(SMOLLM2, [1, 1, 1, 1])  # N > n_kv: query heads apportioned, KV replicated
    assert four.replicates_kv
    assert sorted(h for s in four.shards for h in s.q_heads) == list(range(9))
    for s in four.shards:  # every query head finds its own KV head locally
        for j, q in enumerate(s.q_heads):
            assert s.kv_heads[j // s.kv_groups] == q // 3
    assert sum(s.ffn_width for s in four.shards) == 1536
    assert [s.is_master for s in four.shards] == [True, False, False, False]


def test_plan_respects_uneven_ratios_and_covers_everything():
    plan = ShardPlan.build(SMOLLM2, [0.5, 0.25, 0.25])
    assert [s.ffn_width for s in plan.shards] == [768, 384, 384]
    cols = [c for s in plan.shards for c in range(*s.ffn)]
    assert cols == list(range(1536))


@pytest.mark.parametrize("model", ["gpt2-tiny", "llama-tiny"])
@pytest.mark.parametrize("ratios", [[1], [1, 1], [0.5, 0.25, 0.25], [1, 1, 1, 1], [0.7, 0.1, 0.1, 0.1]])
def test_parameter_census_is_exact(tiny_models, model, ratios):
    loaded = tiny_models[model]
    plan = ShardPlan.build(ModelDims.from_config(loaded.view.config), ratios)
    c = census(loaded.view, plan)
    assert c["exact"], c
    assert c["full_elements"] == sum(p.numel() for p in loaded.model.parameters())
    if len(ratios) == 1:
        assert c["replicated_elements"] == 0 and c["rank_elements"] == [c["full_elements"]]


def test_gpt2_fused_c_attn_split_keeps_q_k_v_of_the_same_heads(gpt2_tiny):
    from splitrl.tp.shard import rank_block_state

    view = gpt2_tiny.view
    plan = ShardPlan.build(ModelDims.from_config(view.config), [0.5, 0.5])
    H, hd = view.hidden_size, plan.dims.head_dim
    W = view.layers[0].attn.c_attn.weight  # [H, 3H] = [q | k | v]
    st = rank_block_state(view.layers[0], plan.dims, plan.shards[1], "attn")
    w = st["attn.c_attn.weight"]  # [H, 3 * 2 * hd]
    heads = plan.shards[1].q_heads
    lo, hi = heads[0] * hd, (heads[-1] + 1) * hd
    torch.testing.assert_close(w[:, : hi - lo], W[:, lo:hi], rtol=0, atol=0)
    torch.testing.assert_close(w[:, hi - lo: 2 * (hi - lo)], W[:, H + lo: H + hi], rtol=0, atol=0)
    torch.testing.assert_close(w[:, 2 * (hi - lo):], W[:, 2 * H + lo: 2 * H + hi], rtol=0, atol=0)
    # The row-parallel output bias is kept whole on every rank (added once, after the reduce).
    torch.testing.assert_close(st["attn.c_proj.bias"], view.layers[0].attn.c_proj.bias, rtol=0, atol=0)


def test_unsupported_and_too_many_shards():
    with pytest.raises(UsageError, match="at least"):
        ShardPlan.build(ModelDims("gpt2", 2, 64, 4, 4, 16, 256), [1] * 5)
    with pytest.raises(UsageError, match="family"):
        ModelDims("bert", 2, 64, 4, 4, 16, 256)
