"""`make_link`: build a link from a short name (for configs, CLIs and sweeps).

Names:

* ``identity`` — `LosslessLink` (fp32, 4 bytes/element, no header; same as the runtime's
  `IdentityLink` but with ``set_state``/``reseed``).
* ``fp32``, ``fp16``, ``bf16``, ``int8``, ``int4`` — `CodecLink` (codec only, no channel errors).
* ``<codec>-biterr`` — `DigitalLink(codec, "bit_errors")`, BER from ``state.ber``.
* ``<codec>-erasure`` — `DigitalLink(codec, "block_erasure")`, BLER from ``state.bler``.
* ``awgn`` (alias ``analog``) — `AnalogLink`, SNR from ``state.snr_db``.
* ``dropout`` — `DropoutLink` (pass ``p=``).

``**kwargs`` go to the link's constructor; stochastic links (digital, analog, dropout) require
``seed=`` so that no two links silently share a noise stream.
"""
from __future__ import annotations

from typing import Any

from splitrl.link.analog import AnalogLink
from splitrl.link.base import ChannelLink, LosslessLink
from splitrl.link.codec import CODEC_NAMES
from splitrl.link.digital import CodecLink, DigitalLink
from splitrl.link.dropout import DropoutLink

__all__ = ["LINK_NAMES", "make_link"]

LINK_NAMES: tuple[str, ...] = (
    ("identity",)
    + CODEC_NAMES
    + tuple(f"{c}-biterr" for c in CODEC_NAMES)
    + tuple(f"{c}-erasure" for c in CODEC_NAMES)
    + ("awgn", "analog", "dropout")
)


def make_link(name: str, **kwargs: Any) -> ChannelLink:
    """Build the link called ``name`` (see the module docstring); kwargs go to its constructor."""
    if name == "identity":
        return LosslessLink(**kwargs)
    if name in CODEC_NAMES:
        return CodecLink(name, **kwargs)
    if isinstance(name, str) and "-" in name:
        codec, _, kind = name.partition("-")
        if codec in CODEC_NAMES and kind == "biterr":
            return DigitalLink(codec, "bit_errors", **kwargs)
        if codec in CODEC_NAMES and kind == "erasure":
            return DigitalLink(codec, "block_erasure", **kwargs)
    if name in ("awgn", "analog"):
        return AnalogLink(**kwargs)
    if name == "dropout":
        return DropoutLink(**kwargs)
    raise ValueError(f"unknown link name {name!r}; allowed: {', '.join(LINK_NAMES)}")
