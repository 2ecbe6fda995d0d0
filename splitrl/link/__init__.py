"""What the wireless link does to activations crossing a cut.

* `codec` — fp32/fp16/bf16 and per-token int8/int4 codecs with exact on-air byte counts.
* `digital` — `CodecLink` (codec only) and `DigitalLink` (codec bytes through a bit-error or
  block-erasure channel, with a documented receiver policy).
* `analog` — `AnalogLink`: per-token AWGN at the slot's SNR.
* `dropout` — `DropoutLink`: element dropout (Chen et al. reference model).
* `factory` — `make_link(name, **kwargs)`.

* `base` — the `Link` contract: a sender half (`Link.send`: effects applied, `Frame` of wire bytes)
  and a receiver half (`Link.receive` under a `ReceiverPolicy`), ``transmit = receive ∘ send``;
  `LosslessLink`, the one lossless link.

Links take the slot's `ChannelState` via ``set_state`` and draw randomness only from their own
seeded generators (``seed=`` at construction, ``reseed``). This package imports nothing from
`splitrl.models` or `splitrl.runtime` (they build on it).
"""
from splitrl.link.analog import AnalogLink, AnalogLinkConfig
from splitrl.link.base import (
    ChannelLink, Frame, Link, LosslessLink, Phase, ReceiverPolicy, Transfer, clamp_to_dtype, decode_tokens,
    encode_tokens, receive_hidden, resolve_seed,
)
from splitrl.link.codec import (
    CODEC_NAMES,
    BF16Codec,
    Codec,
    EncodedPayload,
    FP16Codec,
    FP32Codec,
    Int4Codec,
    Int8Codec,
    check_finite,
    codec_for_id,
    get_codec,
    header_nbytes,
    native_codec,
    token_id_bytes,
)
from splitrl.link.digital import CodecLink, DigitalLink, DigitalLinkConfig, erase_blocks, flip_bits
from splitrl.link.dropout import DropoutLink, DropoutLinkConfig
from splitrl.link.factory import LINK_NAMES, codec_for, link_at, make_link, state_for

__all__ = [
    "CODEC_NAMES",
    "LINK_NAMES",
    "AnalogLink",
    "AnalogLinkConfig",
    "BF16Codec",
    "ChannelLink",
    "Codec",
    "CodecLink",
    "DigitalLink",
    "DigitalLinkConfig",
    "DropoutLink",
    "DropoutLinkConfig",
    "EncodedPayload",
    "FP16Codec",
    "FP32Codec",
    "Int4Codec",
    "Int8Codec",
    "LosslessLink",
    "check_finite",
    "erase_blocks",
    "flip_bits",
    "get_codec",
    "header_nbytes",
    "make_link", "link_at", "state_for", "codec_for",
    "resolve_seed",
    "Frame", "Link", "Phase", "ReceiverPolicy", "Transfer", "clamp_to_dtype", "decode_tokens", "encode_tokens",
    "receive_hidden", "codec_for_id", "native_codec", "token_id_bytes",
]
