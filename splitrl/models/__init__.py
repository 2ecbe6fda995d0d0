"""Model loading and the uniform decoder view the runtime cuts."""
from splitrl.models.loader import (
    DEFAULT_MODEL,
    NAMED_MODELS,
    TINY_MODELS,
    LoadedModel,
    ModelNotFoundError,
    load_model,
)
from splitrl.models.view import SUPPORTED_MODEL_TYPES, DecoderView, LayerCost, UnsupportedModelError

__all__ = [
    "DEFAULT_MODEL", "NAMED_MODELS", "TINY_MODELS", "LoadedModel", "ModelNotFoundError", "load_model",
    "SUPPORTED_MODEL_TYPES", "DecoderView", "LayerCost", "UnsupportedModelError",
]
