"""Model loading by name/path and the uniform decoder view's analytic costs."""
import json

import pytest
import torch

from splitrl.models import ModelNotFoundError, UnsupportedModelError, load_model
from splitrl.models.loader import smollm2_gguf_path
from splitrl.models.view import DecoderView


def test_tiny_models_are_seeded():
    a, b, c = load_model("llama-tiny", seed=1), load_model("llama-tiny", seed=1), load_model("llama-tiny", seed=2)
    wa, wb, wc = (m.model.model.layers[0].mlp.up_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wc)


def test_global_rng_is_untouched_by_tiny_init():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_model("gpt2-tiny", seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_unknown_model_names_the_choices():
    with pytest.raises(ModelNotFoundError, match="smollm2-135m, gpt2-tiny, llama-tiny"):
        load_model("not-a-model")


def test_unsupported_architecture_names_the_supported_ones():
    from transformers import OPTConfig, OPTForCausalLM

    model = OPTForCausalLM(OPTConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, ffn_dim=32,
                                     num_attention_heads=2, word_embed_proj_dim=16))
    with pytest.raises(UnsupportedModelError, match="llama, mistral, qwen2, gpt2"):
        DecoderView(model)


def test_local_hf_directory_loads(tmp_path, llama_tiny):
    llama_tiny.model.save_pretrained(tmp_path)
    llama_tiny.tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path))
    ids = torch.tensor([[5, 6, 7]])
    assert torch.equal(loaded.model(ids).logits, llama_tiny.model(ids).logits)


def test_smollm2_is_found_in_the_installed_package(smollm2):
    assert smollm2_gguf_path().suffix == ".gguf"
    v = smollm2.view
    assert (v.num_layers, v.hidden_size, v.family) == (30, 576, "llama")


def test_gguf_cache_is_reused_and_keyed_by_checksum(smollm2, tmp_path):
    from splitrl.models.loader import default_cache_dir

    entries = list((default_cache_dir() / "gguf").glob("*/splitrl_source.json"))
    assert entries, "loading smollm2-135m must leave a cached HF directory"
    marker = json.loads(entries[0].read_text())
    assert len(marker["sha256"]) == 64
    again = load_model("smollm2-135m")
    assert "cached at" in again.source
    assert torch.equal(again.model.lm_head.weight, smollm2.model.lm_head.weight)


@pytest.mark.parametrize("name", ["gpt2-tiny", "llama-tiny"])
def test_layer_costs_add_up(name, tiny_models):
    loaded = tiny_models[name]
    v = loaded.view
    per_layer = sum(v.layer_cost(i).params for i in range(v.num_layers))
    norms = sum(p.numel() for p in v.final_norm.parameters())
    extra = v.position_embed.weight.numel() if v.position_embed is not None else 0
    assert per_layer + v.embed_tokens.weight.numel() + norms + extra == sum(p.numel() for p in loaded.model.parameters())
    c = v.layer_cost(0)
    assert c.flops_per_token(100) - c.flops_per_token(0) == 100 * c.flops_per_token_per_ctx > 0
    # Projections + MLP are matmuls: 2 FLOPs per weight (biases and norms aside).
    matmul_weights = sum(p.numel() for n, p in v.layers[0].named_parameters() if p.dim() == 2)
    assert c.flops_per_token_base == 2 * matmul_weights


def test_cut_bytes(smollm2):
    v = smollm2.view
    assert v.cut_bytes_per_token(0) == 2  # token ids: vocab 49152 fits uint16
    assert v.cut_bytes_per_token(15) == 576 * 4
    assert v.cut_bytes_per_token(30) == 0
    with pytest.raises(ValueError, match=r"0, 30"):
        v.cut_bytes_per_token(31)
    assert smollm2.view.summary()["num_layers"] == 30


@pytest.mark.slow
def test_gguf_cache_is_rebuilt_when_its_checksum_does_not_match(tmp_path):
    first = load_model("smollm2-135m", cache_dir=tmp_path)  # dequantises (~15 s) and caches
    (marker,) = list((tmp_path / "gguf").glob("*/splitrl_source.json"))
    data = json.loads(marker.read_text())
    marker.write_text(json.dumps({**data, "sha256": "0" * 64}))  # a cache entry from another GGUF
    again = load_model("smollm2-135m", cache_dir=tmp_path)
    assert "cached at" not in again.source  # not trusted: dequantised again
    assert json.loads(marker.read_text())["sha256"] == data["sha256"]  # and the entry rebuilt
    assert "cached at" in load_model("smollm2-135m", cache_dir=tmp_path).source
    assert torch.equal(first.model.lm_head.weight, again.model.lm_head.weight)
