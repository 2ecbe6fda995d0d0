"""`AirCompAllReduce`: the over-the-air all-reduce on torch.distributed, registered as ``"aircomp"``.

What one ``reduce(x)`` does (every rank is one device n of N = world size; rank 0 also plays the
aggregator's receiver — an access point co-located with device 0, whose own partial is still
sent over the air like everyone else's):

1. Channel block. Every ``coherence_calls`` calls the aggregator draws the next channel H [N, M]
   (`AirCompChannel`, seeded) and designs the transceiver (`design`); it broadcasts the effective
   normalised gains g_n = m^H h_n b_n / sqrt(eta) (N complex numbers, a control-plane downlink; all
   exactly 1 for the ZF precoders every design here uses).
2. Scale. The per-token RMS of x is all-reduced with MAX: c_t (T fp32 per rank, digital).
3. Superposition. Each rank packs s_n = x_n / c_t into complex symbols, multiplies by g_n, and a
   ``dist.reduce(SUM)`` to rank 0 adds them: the result is sum_n g_n s_n.
4. Receiver. Rank 0 adds CN(0, MSE) per complex use, unpacks and multiplies by c_t; the estimate is
   broadcast back (the common downlink), so every rank holds the same tensor — which tensor
   parallelism needs to stay consistent across shards.

Why this equals the signal model. The aggregator computes f_hat = m^H y / sqrt(eta) with
y = sum_n h_n b_n s_n + z, i.e. f_hat = sum_n (m^H h_n b_n / sqrt(eta)) s_n + m^H z / sqrt(eta)
= sum_n g_n s_n + e. Step 3 computes the first term exactly (in fp32), and e is circularly-
symmetric Gaussian with variance sigma^2 ||m||^2 / eta = MSE for z ~ CN(0, sigma^2 I) — the
distribution step 4 draws from. Emulating the superposition with a digital reduce is therefore
exact in law; what it does not model (and the paper does not either) is synchronisation error,
carrier-frequency offset and imperfect CSI.

With ``snr_db = inf`` there is no noise and the normalisation is mathematically the identity, so
the plain partials are reduced and broadcast: the exact digital sum (bitwise equal to any other
reduce + broadcast of the same tensors; for N >= 3 a star that adds in rank order may differ in
the last fp32 bit, since gloo's reduce may add in another order).
Stats: ``bytes_sent`` counts the scale all-reduce (4 T) and, as analog channel uses charged like
`splitrl.link.AnalogLink` (16 bits per real use, i.e. 4 bytes per complex use), the uplink;
``air_seconds`` is the `airtime.aircomp_seconds` uplink + downlink at ``bandwidth_hz``.
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from splitrl.aircomp.airtime import aircomp_seconds, post_mrc_snr_db
from splitrl.aircomp.channel import AirCompChannel, AirCompChannelConfig
from splitrl.aircomp.design import DESIGNS, Transceiver, design
from splitrl.aircomp.signal import channel_uses, pack_complex, receive, token_scales
from splitrl.dist.collective import AllReduce, register_allreduce
from splitrl.errors import UsageError

__all__ = ["AirCompAllReduce"]


@register_allreduce("aircomp")
class AirCompAllReduce(AllReduce):
    """Over-the-air all-reduce (see the module docstring).

    Args:
        snr_db: transmit SNR P/sigma^2 of a 0 dB device (float or ``inf``).
        antennas: receive antennas M at the aggregator.
        design: transceiver design (``closed``, ``mr``, ``eig``, ``weakest``, ``sdr``); M = 1 is always the
            optimal closed form.
        seed: seeds the channel draws, the SDR randomisation and the receiver noise.
        coherence_calls: all-reduce calls per channel block (1 = a new channel every call).
        bandwidth_hz: band for the air-time accounting.
        channel: extra `AirCompChannelConfig` fields (gain_db, power, rician_k, rx_correlation, time_correlation).
    """

    name = "aircomp"

    def __init__(
        self, *, snr_db: float = 20.0, antennas: int = 1, design: str = "sdr", seed: int = 0,
        coherence_calls: int = 1, bandwidth_hz: float = 20e6, randomizations: int = 64,
        channel: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if design not in DESIGNS:
            raise UsageError(f"design: one of {', '.join(DESIGNS)}, got {design!r}")
        if isinstance(coherence_calls, bool) or int(coherence_calls) < 1:
            raise UsageError(f"coherence_calls: an integer >= 1, got {coherence_calls!r}")
        if not float(bandwidth_hz) > 0:
            raise UsageError(f"bandwidth_hz: > 0, got {bandwidth_hz!r}")
        self.snr_db = float(snr_db)
        self.antennas = int(antennas)
        self.design_name = design
        self.seed = int(seed)
        self.coherence_calls = int(coherence_calls)
        self.bandwidth_hz = float(bandwidth_hz)
        self.randomizations = int(randomizations)
        self.channel_kwargs = dict(channel or {})
        # Validate now (with a placeholder N) so a bad flag fails before any collective.
        AirCompChannelConfig(devices=1, antennas=self.antennas, snr_db=self.snr_db,
                             **{k: v for k, v in self.channel_kwargs.items() if k not in ("gain_db", "power")})
        self._world: int | None = None
        self._channel: AirCompChannel | None = None
        self._design_rng: np.random.Generator | None = None
        self._noise: torch.Generator | None = None
        self._gains = torch.ones(0, dtype=torch.complex64)
        self._block_calls = 0
        self.last_design: Transceiver | None = None
        self.designs: list[Transceiver] = []  # rank 0: every block's design (tests, benchmarks)
        self._snr_per_device = np.zeros(0)

    # -- setup ---------------------------------------------------------------------------------
    def _setup(self, world: int) -> None:
        cfg = AirCompChannelConfig(devices=world, antennas=self.antennas, snr_db=self.snr_db, **self.channel_kwargs)
        ss = np.random.SeedSequence(self.seed)
        ch_seed, design_seed, noise_seed = ss.spawn(3)
        self._channel = AirCompChannel(cfg, np.random.default_rng(ch_seed))
        self._design_rng = np.random.default_rng(design_seed)
        self._noise = torch.Generator().manual_seed(int(noise_seed.generate_state(1, np.uint64)[0] % (2**63)))
        self._world = world
        self._block_calls = 0

    def _next_block(self, rank: int) -> None:
        """Rank 0 draws and designs; everyone receives the effective gains (N complex as [N, 2] fp64)."""
        assert self._channel is not None and self._world is not None
        buf = torch.zeros(self._world, 2, dtype=torch.float64)
        if rank == 0:
            cfg = self._channel.config
            h = self._channel.draw()
            p = cfg.power_limits()
            tx = design(h, p, cfg.noise_var if math.isfinite(self.snr_db) else 0.0, self.design_name,
                        rng=self._design_rng, randomizations=self.randomizations)
            self.last_design = tx
            self.designs.append(tx)
            finite_p = p if math.isfinite(self.snr_db) else np.full(self._world, 1e8)
            self._snr_per_device = post_mrc_snr_db(h, finite_p)
            buf = torch.view_as_real(torch.as_tensor(tx.gains, dtype=torch.complex128)).clone()
        dist.broadcast(buf, src=0)
        self._gains = torch.view_as_complex(buf.contiguous()).to(torch.complex64)

    # -- the collective ------------------------------------------------------------------------
    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        world, rank = dist.get_world_size(), dist.get_rank()
        if self._world != world:
            self._setup(world)
        if self._block_calls % self.coherence_calls == 0:
            self._next_block(rank)
        self._block_calls += 1
        shape = tuple(x.shape)
        d = shape[-1]
        if not math.isfinite(self.snr_db):
            out = x.detach().clone()
            dist.reduce(out, dst=0, op=dist.ReduceOp.SUM)
            dist.broadcast(out, src=0)
            wire = out.numel() * out.element_size()
            self._account(shape, 0, wire, t0)
            return out
        scales = token_scales(x.detach()).contiguous()                             # [...]
        dist.all_reduce(scales, op=dist.ReduceOp.MAX)
        safe = torch.where(scales > 0, scales, torch.ones_like(scales))
        symbols = pack_complex(x.detach().float() / safe.unsqueeze(-1)) * self._gains[rank]  # [..., U]
        payload = torch.view_as_real(symbols).contiguous()                         # [..., U, 2] fp32
        dist.reduce(payload, dst=0, op=dist.ReduceOp.SUM)
        if rank == 0:
            assert self.last_design is not None
            out = receive(torch.view_as_complex(payload), scales, d, self.last_design, self._noise).to(x.dtype)
        else:
            out = torch.empty(shape, dtype=x.dtype)
        dist.broadcast(out, src=0)
        self._account(shape, 4 * scales.numel(), 4 * channel_uses(shape), t0)
        return out

    def _account(self, shape: tuple[int, ...], scale_bytes: int, uplink_bytes: int, t0: float) -> None:
        s = self.stats
        s.calls += 1
        s.elements += int(math.prod(shape))
        s.bytes_sent += scale_bytes + uplink_bytes
        s.bytes_received += scale_bytes + int(math.prod(shape)) * 2  # scales back + fp16 downlink
        if len(self._snr_per_device):
            s.air_seconds += aircomp_seconds(shape, self._snr_per_device, self.bandwidth_hz).total_s
        s.seconds += time.perf_counter() - t0
