"""Digital transport of encoded activations: codec -> binary channel -> receiver -> floats.

`CodecLink` is the pure codec effect (quantise/dequantise, error-free channel). `DigitalLink`
sends the codec's bytes through a binary channel whose parameters come from the slot's
`ChannelState`:

* ``mode="bit_errors"`` — a binary symmetric channel (uncoded transmission / residual errors
  after a weak code): every exposed bit flips independently with probability ``state.ber``.
  Implemented by drawing the NUMBER of flips ~ Binomial(n_bits, ber) and then that many
  distinct positions uniformly (exactly the i.i.d. Bernoulli law, O(#flips) instead of
  O(#bits)); for ber >= 1/64 a per-bit Bernoulli mask built 8 bit-planes at a time is cheaper.
* ``mode="block_erasure"`` — a packet/transport-block channel (strong code + CRC: a block
  arrives intact or is detected as lost): the exposed bytes are cut into ``block_bytes`` blocks,
  each lost independently with probability ``state.bler``. Lost blocks are zero-filled
  (``on_loss="zero"``) or retransmitted (``on_loss="retransmit"``) up to ``max_retries`` times,
  each retry again lost with probability ``bler``; blocks still lost after the last retry are
  zero-filled. Every retransmitted byte (and ``crc_bytes`` per block transmission) is counted.

What is exposed to the channel: the body, plus the metadata (per-token scales) unless
``protect_metadata=True``. The header (codec id + shape) is ALWAYS error-free: it is a few
control-plane bytes that a real system sends with a robust MCS, and without it nothing could be
decoded at all. Protected metadata is likewise modelled as error-free at its face byte count
(no extra coding overhead is charged).

Receiver policy (applies after decoding the corrupted bytes; counted in ``last_stats``):

1. Format constraints are enforced by the codec decoder: int codes outside the symmetric grid
   (-128 for int8, -8 for int4) map to the nearest valid code, and the sign bit of a scale is
   ignored (scales are >= 0 by construction).
2. Every non-finite decoded element (NaN, ±Inf — e.g. an fp32/fp16 exponent turned all-ones,
   or a corrupted scale) is replaced by 0 (``nonfinite_repaired``). NaN carries no magnitude,
   and 0 is the same value an erased block decodes to, so a receiver that detects garbage
   treats it as an erasure rather than inventing a saturated value.
3. Finite values are clamped to ±``clip`` when ``clip`` is set (e.g. a known activation bound of
   the model; ``clipped`` counts them), and always to the output dtype's finite range, so the
   final cast can never create Inf. Huge-but-finite values from exponent flips are NOT
   otherwise touched: that damage is the physical effect being studied.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from splitrl.link.base import ChannelLink, ReceiverPolicy, SeedLike
from splitrl.link.codec import Codec, get_codec
from splitrl.errors import UsageError

__all__ = [
    "CodecLink",
    "DigitalLink",
    "DigitalLinkConfig",
    "erase_blocks",
    "flip_bits",
]

DigitalMode = Literal["bit_errors", "block_erasure"]
OnLoss = Literal["zero", "retransmit"]

# Above this BER a dense per-bit mask is cheaper than sampling distinct positions (and numpy's
# sampling without replacement would fall back to a full permutation of all bit indices).
_SPARSE_MAX_BER = 1.0 / 64.0


def _check_prob(name: str, p: float | None, owner: str) -> float:
    if p is None:
        raise UsageError(
            f"{owner} needs ChannelState.{name} (a probability in [0, 1]) but it is None; the "
            f"channel emulator must fill it in before set_state"
        )
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise UsageError(f"ChannelState.{name} must be in [0, 1], got {p}")
    return p


def flip_bits(buf: np.ndarray, ber: float, rng: np.random.Generator) -> int:
    """Flip each bit of the uint8 array ``buf`` independently with probability ``ber``.

    In place; returns the number of flipped bits. Bit ``j`` of the stream is bit ``j % 8``
    (LSB = 0) of byte ``j // 8``.
    """
    if buf.dtype != np.uint8 or buf.ndim != 1:
        raise UsageError("flip_bits expects a 1-D uint8 array")
    if not 0.0 <= ber <= 1.0:
        raise UsageError(f"ber must be in [0, 1], got {ber}")
    n_bits = buf.size * 8
    if ber == 0.0 or n_bits == 0:
        return 0
    if ber < _SPARSE_MAX_BER:
        k = int(rng.binomial(n_bits, ber))
        if k == 0:
            return 0
        # Distinct positions: Binomial count + uniform k-subset is the i.i.d. Bernoulli law.
        pos = rng.choice(n_bits, size=k, replace=False, shuffle=False)
        mask = np.zeros_like(buf)
        # Positions are distinct, so OR-accumulating into a byte never cancels two flips.
        np.bitwise_or.at(mask, pos >> 3, (np.uint8(1) << (pos & 7).astype(np.uint8)))
        buf ^= mask
        return k
    mask = np.zeros_like(buf)
    for bit in range(8):
        mask |= (rng.random(buf.size) < ber).astype(np.uint8) << np.uint8(bit)
    buf ^= mask
    return int(np.bitwise_count(mask).sum()) if hasattr(np, "bitwise_count") else int(
        np.unpackbits(mask).sum()
    )


def erase_blocks(
    buf: np.ndarray,
    bler: float,
    rng: np.random.Generator,
    *,
    block_bytes: int,
    max_retries: int = 0,
) -> dict[str, int]:
    """Block-erasure channel on the uint8 array ``buf`` (in place).

    ``buf`` is cut into ceil(len / block_bytes) blocks (the last may be short). Each block is
    sent up to ``1 + max_retries`` times; every attempt is lost independently with probability
    ``bler``. Blocks lost on every attempt are zero-filled.

    Returns counts: ``blocks``, ``blocks_lost`` (after retries), ``first_try_lost``,
    ``retransmissions`` (extra block transmissions) and ``retransmitted_bytes``.
    """
    if not 0.0 <= bler <= 1.0:
        raise UsageError(f"bler must be in [0, 1], got {bler}")
    n = buf.size
    n_blocks = -(-n // block_bytes)
    stats = dict(blocks=n_blocks, blocks_lost=0, first_try_lost=0, retransmissions=0,
                 retransmitted_bytes=0)
    if n_blocks == 0:
        return stats
    sizes = np.full(n_blocks, block_bytes, dtype=np.int64)
    sizes[-1] = n - block_bytes * (n_blocks - 1)
    attempts = 1 + max_retries
    lost = rng.random((n_blocks, attempts)) < bler  # lost[b, a]: attempt a of block b lost
    residual = lost.all(axis=1)
    # Attempts used: up to and including the first success, or all of them.
    tries = np.where(residual, attempts, np.argmin(lost, axis=1) + 1)
    stats["blocks_lost"] = int(residual.sum())
    stats["first_try_lost"] = int(lost[:, 0].sum())
    stats["retransmissions"] = int((tries - 1).sum())
    stats["retransmitted_bytes"] = int(((tries - 1) * sizes).sum())
    if stats["blocks_lost"]:
        buf[np.repeat(residual, sizes)] = 0
    return stats


@dataclass(frozen=True)
class DigitalLinkConfig:
    """Parameters of `DigitalLink` (validated on construction).

    Attributes:
        mode: ``"bit_errors"`` (BSC with ``state.ber``) or ``"block_erasure"`` (``state.bler``).
        protect_metadata: when True, the per-token scales are error-free (only the body is
            exposed to the channel).
        block_bytes: block size for ``block_erasure``, >= 1 (default 1024).
        on_loss: ``"zero"`` (zero-fill lost blocks) or ``"retransmit"``.
        max_retries: retransmissions per block for ``on_loss="retransmit"``, in [0, 64].
        crc_bytes: per-block-transmission overhead (e.g. 3 for a CRC-24) counted in nbytes in
            ``block_erasure`` mode, in [0, 64]; default 0.
        clip: receiver amplitude limit (> 0) applied to decoded values, or None.
    """

    mode: DigitalMode = "bit_errors"
    protect_metadata: bool = False
    block_bytes: int = 1024
    on_loss: OnLoss = "zero"
    max_retries: int = 4
    crc_bytes: int = 0
    clip: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("bit_errors", "block_erasure"):
            raise UsageError(
                f"DigitalLinkConfig.mode must be 'bit_errors' or 'block_erasure', got {self.mode!r}"
            )
        if self.on_loss not in ("zero", "retransmit"):
            raise UsageError(
                f"DigitalLinkConfig.on_loss must be 'zero' or 'retransmit', got {self.on_loss!r}"
            )
        for name, lo, hi in (("block_bytes", 1, 2**31 - 1), ("max_retries", 0, 64),
                             ("crc_bytes", 0, 64)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
                raise UsageError(
                    f"DigitalLinkConfig.{name} must be an integer in [{lo}, {hi}], got {v!r}"
                )
        if not isinstance(self.protect_metadata, bool):
            raise UsageError(
                f"DigitalLinkConfig.protect_metadata must be a bool, got {self.protect_metadata!r}"
            )
        if self.clip is not None and not (float(self.clip) > 0 and np.isfinite(self.clip)):
            raise UsageError(
                f"DigitalLinkConfig.clip must be None or a finite value > 0, got {self.clip!r}"
            )


class CodecLink(ChannelLink):
    """Quantise/dequantise with an error-free channel: the pure codec effect.

    nbytes is the codec's exact frame size (header + metadata + body). ``last_stats`` holds
    ``saturated`` (elements clamped by a float codec's encoder).
    """

    def __init__(self, codec: str | Codec, *, seed: SeedLike = 0, vocab_size: int = 65536) -> None:
        self.codec = get_codec(codec)
        super().__init__(seed=seed, vocab_size=vocab_size)

    def _encode(self, hidden: torch.Tensor) -> tuple[bytes, int]:
        enc = self.codec.encode(hidden)
        self.last_stats = {"saturated": enc.saturated}
        data = enc.to_bytes()
        return data, len(data)

    def __repr__(self) -> str:
        return f"CodecLink({self.codec.name})"


class DigitalLink(ChannelLink):
    """Encoded activations over a bit-error or block-erasure channel (see module docstring).

    ``last_stats`` after each hidden-state transmit: ``mode``, ``saturated``, ``bits_exposed``,
    ``bits_flipped``, ``meta_bits_flipped`` (bit_errors), ``blocks``, ``blocks_lost``,
    ``first_try_lost``, ``retransmissions``, ``retransmitted_bytes`` (block_erasure),
    ``nonfinite_repaired``, ``clipped``.
    """

    def __init__(
        self,
        codec: str | Codec,
        mode: DigitalMode = "bit_errors",
        *,
        seed: SeedLike,
        protect_metadata: bool = False,
        block_bytes: int = 1024,
        on_loss: OnLoss = "zero",
        max_retries: int = 4,
        crc_bytes: int = 0,
        clip: float | None = None,
        vocab_size: int = 65536,
    ) -> None:
        self.codec = get_codec(codec)
        self.config = DigitalLinkConfig(
            mode=mode, protect_metadata=protect_metadata, block_bytes=block_bytes,
            on_loss=on_loss, max_retries=max_retries, crc_bytes=crc_bytes, clip=clip,
        )
        self.policy = ReceiverPolicy(repair_nonfinite=True, clip=None if clip is None else float(clip))
        super().__init__(seed=seed, vocab_size=vocab_size)

    def _encode(self, hidden: torch.Tensor) -> tuple[bytes, int]:
        cfg = self.config
        state = self._require_state()
        owner = f"DigitalLink(mode={cfg.mode!r})"
        if cfg.mode == "bit_errors":
            p = _check_prob("ber", state.ber, owner)
        else:
            p = _check_prob("bler", state.bler, owner)

        enc = self.codec.encode(hidden)
        meta = enc.meta.detach().cpu().numpy().copy()
        body = enc.body.detach().cpu().numpy().copy()
        exposed = body if cfg.protect_metadata else np.concatenate([meta, body])
        meta_exposed = 0 if cfg.protect_metadata else meta.size
        stats: dict[str, object] = {"mode": cfg.mode, "saturated": enc.saturated,
                                    "bits_exposed": exposed.size * 8}
        nbytes = enc.nbytes

        if cfg.mode == "bit_errors":
            orig_meta = exposed[:meta_exposed].copy()
            stats["bits_flipped"] = flip_bits(exposed, p, self._np_rng)
            stats["meta_bits_flipped"] = int(np.unpackbits(orig_meta ^ exposed[:meta_exposed]).sum())
        else:
            retries = cfg.max_retries if cfg.on_loss == "retransmit" else 0
            er = erase_blocks(exposed, p, self._np_rng, block_bytes=cfg.block_bytes,
                              max_retries=retries)
            stats.update(er)
            nbytes += er["retransmitted_bytes"] + cfg.crc_bytes * (er["blocks"] + er["retransmissions"])

        if not cfg.protect_metadata:
            meta, body = exposed[:meta_exposed], exposed[meta_exposed:]
        # The header is never exposed (control plane); what goes on the wire is the corrupted frame.
        data = enc.header + meta.tobytes() + body.tobytes()
        self.last_stats = stats
        return data, nbytes

    def __repr__(self) -> str:
        c = self.config
        return (f"DigitalLink({self.codec.name}, mode={c.mode!r}, "
                f"protect_metadata={c.protect_metadata}, seed={self.seed})")
