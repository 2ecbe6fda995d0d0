"""SmolLM2-135M (GQA: 9 query / 3 KV heads) tensor-parallel exactness with real processes (slow)."""
import pytest
import torch

from splitrl.tp.driver import TPCluster, prepare_shards
from splitrl.tp.worker import TPRunConfig

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_smollm2_float64_logits_and_float32_greedy(tmp_path):
    from splitrl.models import load_model
    from splitrl.runtime import SplitRuntime

    f64 = load_model("smollm2-135m", dtype=torch.float64)
    ids = f64.tokenizer("The capital of France is", return_tensors="pt").input_ids[0].tolist()
    with torch.inference_mode():
        ref = f64.model(torch.tensor([ids])).logits
    with TPCluster(4, work_dir=tmp_path) as cl:
        # N = 2 is uneven (2 + 1 KV groups); N = 4 replicates KV heads.
        for ratios in ([1], [1, 1], [0.5, 0.25, 0.25], [1, 1, 1, 1]):
            cl.setup(TPRunConfig(shard_dir=str(prepare_shards(f64, ratios, tmp_path, dtype="float64")), timeout_s=60))
            lg = cl.logits(ids)
            if len(ratios) == 1:
                assert torch.equal(lg, ref)
            assert ((lg - ref).abs().max() / ref.abs().max()).item() < 1e-9, ratios
        del f64
        f32 = load_model("smollm2-135m")
        want = SplitRuntime(f32).generate(torch.tensor([ids]), f32.view.num_layers, max_new_tokens=32,
                                          stop_at_eos=False).token_ids
        for ratios in ([1, 1], [1, 1, 1]):
            cl.setup(TPRunConfig(shard_dir=str(prepare_shards(f32, ratios, tmp_path)), timeout_s=60))
            assert cl.generate(ids, 32, stop_at_eos=False).token_ids == want, ratios
