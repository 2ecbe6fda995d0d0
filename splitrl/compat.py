"""The dependency versions splitrl is tested against, checked once at import of the runtime.

transformers 5.x changed the decoder-layer call (layers return a tensor and take
``position_embeddings``) and masks (``create_causal_mask(..., layer_idx=)``); the runtime calls
layers directly, so a version outside the tested range fails loudly instead of silently
computing something else.
"""
from __future__ import annotations

import re

SUPPORTED_TRANSFORMERS = ((5, 0), (5, 24))  # [min, max) as (major, minor)


def _major_minor(version: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", version)
    if not m:
        raise RuntimeError(f"cannot parse transformers version {version!r}")
    return int(m.group(1)), int(m.group(2))


def check_transformers_version(version: str | None = None) -> str:
    """Raise RuntimeError unless ``version`` (default: installed) is in the tested range."""
    if version is None:
        import transformers

        version = transformers.__version__
    lo, hi = SUPPORTED_TRANSFORMERS
    if not (lo <= _major_minor(version) < hi):
        raise RuntimeError(
            f"splitrl is tested with transformers >={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]}; "
            f"found {version}. Install a supported version: pip install 'transformers>={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]}'"
        )
    return version
