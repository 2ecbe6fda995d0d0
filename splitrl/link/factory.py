"""`make_link`: build a link from a short name (for configs, CLIs and sweeps).

Names:

* ``identity`` — `LosslessLink` (the fp32 codec frame: 16-byte header + 4 bytes/element).
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

from splitrl.channel.modulation import ber_awgn
from splitrl.channel.state import ChannelState
from splitrl.link.analog import AnalogLink
from splitrl.link.base import ChannelLink, LosslessLink
from splitrl.link.codec import CODEC_NAMES
from splitrl.link.digital import CodecLink, DigitalLink
from splitrl.link.dropout import DropoutLink
from splitrl.errors import UsageError

__all__ = ["LINK_NAMES", "codec_for", "link_at", "make_link", "state_for"]

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
    raise UsageError(f"unknown link name {name!r}; allowed: {', '.join(LINK_NAMES)}")


def state_for(
    name: str,
    *,
    snr_db: float | None = None,
    ber: float | None = None,
    modulation: str = "qpsk",
    erasure_block_bytes: int = 128,
):
    """The `ChannelState` a link named ``name`` sees at ``snr_db`` (or at a raw ``ber``).

    Digital links get the uncoded bit error rate of ``modulation`` over AWGN at the slot's SNR
    (or ``ber`` directly); erasure links a block error rate ``1 - (1 - ber)^(8 * block bytes)``.
    """
    if ber is None:
        if snr_db is None:
            raise UsageError(f"link {name!r} needs snr_db or ber")
        ber = float(ber_awgn(float(snr_db), modulation))
    if not 0.0 <= ber <= 0.5:
        raise UsageError(f"ber must be in [0, 0.5], got {ber}")
    bler = 1.0 - (1.0 - ber) ** (8 * int(erasure_block_bytes))
    return ChannelState(snr_db=float("nan") if snr_db is None else float(snr_db), ber=float(ber), bler=float(bler))


def link_at(
    name: str,
    *,
    seed: int,
    snr_db: float | None = None,
    ber: float | None = None,
    dropout_p: float = 0.0,
    modulation: str = "qpsk",
    erasure_block_bytes: int = 128,
    vocab_size: int = 65536,
) -> ChannelLink:
    """Build link ``name`` already set to its channel state — what sweeps, envs and the CLI use.

    Deterministic links (``identity`` and plain codecs) ignore ``seed``; ``dropout`` uses ``dropout_p``.
    """
    if name not in LINK_NAMES:
        raise UsageError(f"unknown link name {name!r}; allowed: {', '.join(LINK_NAMES)}")
    if name == "identity" or name in CODEC_NAMES:
        return make_link(name, vocab_size=vocab_size)
    if name == "dropout":
        return make_link("dropout", p=float(dropout_p), seed=seed, vocab_size=vocab_size)
    link = make_link(name, seed=seed, vocab_size=vocab_size)
    link.set_state(state_for(name, snr_db=snr_db, ber=ber, modulation=modulation, erasure_block_bytes=erasure_block_bytes))
    return link


def codec_for(name: str) -> str:
    """The codec whose byte count a cost model charges for link ``name``.

    Analog (``awgn``) is charged as fp16 (one 16-bit real channel use per element, as `AnalogLink`
    counts it); ``<codec>-biterr``/``-erasure`` and plain codecs use their codec; ``identity`` and
    ``dropout`` send fp32.
    """
    if name in ("awgn", "analog"):
        return "fp16"
    head = name.split("-")[0]
    return head if head in CODEC_NAMES else "fp32"
