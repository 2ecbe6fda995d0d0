"""Analog (uncoded, AirComp-style) transport of activations: y = x + n.

Model. The transmitter normalises every token row to a fixed transmit power and sends the
normalised elements directly as channel amplitudes; the per-token gains travel on a digital,
error-free side channel so the receiver can undo the normalisation. Seen after
de-normalisation, the noise on token ``t`` is white Gaussian with variance

    sigma_t^2 = P_t / SNR_lin,   P_t = mean_h x[t, h]^2,   SNR_lin = 10^(snr_db / 10),

i.e. every token arrives at the same per-token SNR (``state.snr_db``) regardless of its
magnitude — outlier tokens get proportionally larger noise, small tokens proportionally smaller.
All-zero tokens stay exactly zero. ``snr_db = +inf`` means noiseless; ``-inf``/NaN is rejected.

Byte accounting. Analog symbols are not bytes; what they cost is CHANNEL USES. Each element is
one real channel use (a complex symbol carries two, so ceil(N/2) complex symbols). To put analog
on the same axis as digital links, a real channel use is charged ``bits_per_channel_use`` bits
(default 16: the analog payload occupies as many channel uses as an fp16 payload's worth of
bytes at 16 bits per real use), plus the digital side information — the 4 + 4*ndim byte header
and one fp32 gain per token — when ``count_side_info=True`` (default)::

    nbytes = [4 + 4 d + 4 R] + ceil(N * bits_per_channel_use / 8)

with N elements, R token rows, d dims. ``last_stats`` reports the raw ``channel_uses_real`` and
``complex_symbols`` so analyses can use their own conversion.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from splitrl.link.base import ChannelLink, SeedLike, clamp_to_dtype
from splitrl.link.codec import check_finite, header_nbytes, native_codec
from splitrl.errors import UsageError

__all__ = ["AnalogLink", "AnalogLinkConfig"]


@dataclass(frozen=True)
class AnalogLinkConfig:
    """Parameters of `AnalogLink`.

    Attributes:
        bits_per_channel_use: bits charged per real channel use, integer in [1, 64] (default 16).
        count_side_info: charge the header and the per-token fp32 gains (default True).
    """

    bits_per_channel_use: int = 16
    count_side_info: bool = True

    def __post_init__(self) -> None:
        v = self.bits_per_channel_use
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= v <= 64:
            raise UsageError(
                f"AnalogLinkConfig.bits_per_channel_use must be an integer in [1, 64], got {v!r}"
            )
        if not isinstance(self.count_side_info, bool):
            raise UsageError(
                f"AnalogLinkConfig.count_side_info must be a bool, got {self.count_side_info!r}"
            )


class AnalogLink(ChannelLink):
    """Hidden states plus per-token AWGN at ``state.snr_db`` (see module docstring).

    ``last_stats``: ``snr_db``, ``channel_uses_real``, ``complex_symbols``, ``noise_power``
    (mean noise variance over elements).
    """

    def __init__(
        self,
        *,
        seed: SeedLike,
        bits_per_channel_use: int = 16,
        count_side_info: bool = True,
        vocab_size: int = 65536,
    ) -> None:
        self.config = AnalogLinkConfig(bits_per_channel_use, count_side_info)
        super().__init__(seed=seed, vocab_size=vocab_size)

    def nbytes(self, shape: tuple[int, ...]) -> int:
        """Equivalent bytes for a payload of ``shape`` (formula in the module docstring)."""
        n = math.prod(shape)
        air = -(-n * self.config.bits_per_channel_use // 8)
        if not self.config.count_side_info:
            return air
        rows = math.prod(shape[:-1])
        return header_nbytes(len(shape)) + 4 * rows + air

    def _encode(self, hidden: torch.Tensor) -> tuple[bytes, int]:
        y, nbytes = self._channel(hidden)
        # The wire carries the received samples losslessly; the air is charged in channel uses.
        return native_codec(hidden.dtype).encode(y).to_bytes(), nbytes

    def _channel(self, hidden: torch.Tensor) -> tuple[torch.Tensor, int]:
        snr_db = float(self._require_state().snr_db)
        if math.isnan(snr_db) or snr_db == -math.inf:
            raise UsageError(f"AnalogLink needs ChannelState.snr_db finite or +inf, got {snr_db}")
        check_finite(hidden)
        n = hidden.numel()
        stats: dict[str, object] = {
            "snr_db": snr_db, "channel_uses_real": n, "complex_symbols": -(-n // 2),
        }
        nbytes = self.nbytes(tuple(hidden.shape))
        if snr_db == math.inf or n == 0:
            stats["noise_power"] = 0.0
            self.last_stats = stats
            return hidden, nbytes
        x = hidden.to(torch.float32)
        power = x.pow(2).mean(dim=-1, keepdim=True)  # per-token signal power P_t
        noise_var = power / (10.0 ** (snr_db / 10.0))
        noise = torch.randn(
            x.shape, generator=self._torch_gen(x.device), device=x.device, dtype=torch.float32
        )
        y = x + noise * noise_var.sqrt()
        stats["noise_power"] = float(noise_var.mean())
        self.last_stats = stats
        # Very low SNR on outlier tokens can exceed fp16's range: saturate rather than emit Inf.
        return clamp_to_dtype(y, hidden.dtype).to(hidden.dtype), nbytes

    def __repr__(self) -> str:
        return f"AnalogLink(bits_per_channel_use={self.config.bits_per_channel_use}, seed={self.seed})"
