"""What the devices send: per-token normalisation, real-to-complex packing, and the received estimate.

Normalisation (the choice, and how the scale travels). A tensor-parallel partial sum x_n [T, D]
has one row per token; SmolLM2 has outlier tokens whose hidden-state magnitude is ~2.4e4 times the
typical one, so one scale for the whole tensor would leave the ordinary tokens buried in noise.
Every token row therefore gets its own scale, and because over-the-air superposition only adds
the devices' signals correctly if they all use the SAME scale for a token, the scale is

    c_t = max_n rms(x_n[t, :])     (one fp32 per token),

agreed with a tiny digital all-reduce(MAX) of T fp32 values per device before the analog
transmission (4 T bytes per device on a robust control channel: exact, charged in the byte and
air-time accounting). Each device sends s_n[t] = x_n[t] / c_t, whose mean power per element is
<= 1, so the unit-power symbol model and the power limits of `design` hold. The receiver
multiplies its estimate of sum_n s_n[t] by c_t. Zero rows (c_t = 0) are sent as zeros and stay 0.

Packing. Two consecutive real elements form one complex symbol (a + j b) / sqrt(2) (E|s|^2 <= 1),
so a token costs ceil(D / 2) complex channel uses. The received error per complex use is
circularly-symmetric CN(0, MSE); after unpacking, every real element of the de-normalised sum has
error variance c_t^2 * MSE (the sqrt(2) and the real/imaginary split cancel exactly).
"""
from __future__ import annotations

import math

import torch

from splitrl.aircomp.design import Transceiver

__all__ = ["channel_uses", "pack_complex", "receive", "simulate_allreduce", "token_scales", "unpack_complex"]


def token_scales(x: torch.Tensor) -> torch.Tensor:
    """Per-token RMS over the last dim: x [..., D] -> [...] (the MAX over devices is taken by the caller)."""
    return x.float().pow(2).mean(dim=-1).sqrt()


def pack_complex(x: torch.Tensor) -> torch.Tensor:
    """Real x [..., D] -> complex [..., ceil(D/2)] = (x[2k] + j x[2k+1]) / sqrt(2) (zero-padded)."""
    d = x.shape[-1]
    if d % 2:
        x = torch.nn.functional.pad(x, (0, 1))
    pairs = x.reshape(*x.shape[:-1], -1, 2).to(torch.float32)
    return torch.view_as_complex(pairs.contiguous()) / math.sqrt(2.0)


def unpack_complex(z: torch.Tensor, d: int) -> torch.Tensor:
    """Inverse of `pack_complex`: complex [..., ceil(D/2)] -> real [..., D]."""
    real = torch.view_as_real(z * math.sqrt(2.0))
    return real.reshape(*z.shape[:-1], -1)[..., :d]


def channel_uses(shape: tuple[int, ...] | torch.Size) -> int:
    """Complex channel uses one device spends on a tensor of ``shape`` (rows x ceil(D/2))."""
    rows = int(math.prod(shape[:-1])) if len(shape) > 1 else 1
    return rows * math.ceil(int(shape[-1]) / 2)


def receive(
    superposed: torch.Tensor, scales: torch.Tensor, d: int, tx: Transceiver, generator: torch.Generator | None,
) -> torch.Tensor:
    """Aggregator side: superposition of the aligned symbols [..., U] (complex) -> de-normalised sum [..., D].

    Adds the post-combining noise m^H z / sqrt(eta) ~ CN(0, tx.mse) per complex use (the exact law
    of the combined receiver noise) unless the design is noiseless.
    """
    if tx.mse > 0.0:
        if not math.isfinite(tx.mse):
            raise RuntimeError("AirComp design has infinite MSE (a device with a zero channel)")
        std = math.sqrt(tx.mse / 2.0)
        noise = torch.randn(*superposed.shape, 2, generator=generator, dtype=torch.float32) * std
        superposed = superposed + torch.view_as_complex(noise)
    return unpack_complex(superposed, d) * scales.unsqueeze(-1)


def simulate_allreduce(
    partials: torch.Tensor, tx: Transceiver, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The whole AirComp all-reduce in one process: partials [N, ..., D] -> estimate of their sum [..., D].

    The same steps as `AirCompAllReduce` (normalise with the shared per-token scale, pack, apply
    each device's effective gain, superpose, receive); used for in-process emulation and tests.
    """
    if tx.mse == 0.0:
        return partials.sum(dim=0)
    d = partials.shape[-1]
    scales = token_scales(partials).amax(dim=0)                                   # [...]
    safe = torch.where(scales > 0, scales, torch.ones_like(scales))
    symbols = pack_complex(partials.float() / safe.unsqueeze(-1))                   # [N, ..., U]
    gains = torch.as_tensor(tx.gains, dtype=torch.complex64).reshape(-1, *([1] * (symbols.dim() - 1)))
    out = receive((symbols * gains).sum(dim=0), scales, d, tx, generator)
    return out.to(partials.dtype)
