"""In-process emulation of tensor parallelism with a lossy all-reduce (AirComp or a digital star).

Tensor parallelism (Megatron / TPI-LLM) ends every attention block and every MLP in a row-parallel
linear layer — ``o_proj`` over the attention heads, ``down_proj`` over the intermediate columns —
whose input columns are split across the N devices; each device computes a partial product and an
all-reduce sums them. That sum is the only place where the wireless channel enters, 2 L times
per forward pass. `TPEmulation` reproduces exactly that arithmetic in one process: it replaces the
``forward`` of those layers by "split the input columns by the plan, compute the N partial
products [N, ..., D], reduce them with ``reducer``"; every other op is the unmodified model. It is
what the benchmark sweeps (SNR x N x M on SmolLM2 in minutes on two cores); the multi-process
runtime (``splitrl tp ppl --allreduce aircomp``) runs the same all-reduce on real ranks.

Reducers: `AirCompReducer` (the signal model of `signal.simulate_allreduce`, a new channel block
and transceiver design per all-reduce, seeded), `DigitalStarReducer` (each device's partial
through a `splitrl.link.DigitalLink` with bit errors at its post-MRC SNR on the same channel
draws, TDMA or FDMA; the aggregator's sum broadcast back error-free), and `exact_reducer`.
Supports Llama-family models (``self_attn.o_proj``, ``mlp.down_proj``).
"""
from __future__ import annotations

import math
import types
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from splitrl.aircomp.airtime import post_mrc_snr_db
from splitrl.aircomp.channel import AirCompChannel, AirCompChannelConfig
from splitrl.aircomp.design import Transceiver, design
from splitrl.aircomp.signal import simulate_allreduce
from splitrl.errors import UsageError
from splitrl.link import make_link, state_for

__all__ = ["AirCompReducer", "DigitalStarReducer", "TPEmulation", "apportion", "exact_reducer"]

Reducer = Callable[[torch.Tensor], torch.Tensor]


def apportion(total: int, ratios: Sequence[float]) -> list[int]:
    """Split ``total`` units by ``ratios`` (largest remainder, at least one each)."""
    r = np.asarray(ratios, dtype=float)
    if len(r) > total or np.any(r <= 0):
        raise UsageError(f"ratios: {len(r)} positive shares for {total} units required, got {list(ratios)}")
    rest = total - len(r)
    share = r / r.sum() * rest
    k = np.floor(share).astype(int)
    k[np.argsort(-(share - k))[: rest - int(k.sum())]] += 1
    return [int(x) + 1 for x in k]


def exact_reducer(parts: torch.Tensor) -> torch.Tensor:
    """Lossless digital all-reduce: parts [N, ..., D] -> sum [..., D]."""
    return parts.sum(dim=0)


class AirCompReducer:
    """A new channel block + design per call, then the AirComp signal model (seeded)."""

    def __init__(self, config: AirCompChannelConfig, method: str = "sdr", seed: int = 0) -> None:
        ss = np.random.SeedSequence(seed)
        a, b, c = ss.spawn(3)
        self.config = config
        self.channel = AirCompChannel(config, np.random.default_rng(a))
        self.design_rng = np.random.default_rng(b)
        self.noise = torch.Generator().manual_seed(int(c.generate_state(1, np.uint64)[0] % (2**63)))
        self.method = method
        self.mses: list[float] = []

    def __call__(self, parts: torch.Tensor) -> torch.Tensor:
        if parts.shape[0] != self.config.devices:
            raise UsageError(f"AirComp reducer built for {self.config.devices} devices got {parts.shape[0]} partials")
        h = self.channel.draw()
        tx: Transceiver = design(h, self.config.power_limits(), self.config.noise_var, self.method, rng=self.design_rng)
        self.mses.append(tx.mse)
        return simulate_allreduce(parts, tx, self.noise)


class DigitalStarReducer:
    """Every device uploads its partial through a bit-error link at its own post-MRC SNR; exact sum + broadcast."""

    def __init__(self, config: AirCompChannelConfig, codec: str = "int8", access: str = "tdma",
                 modulation: str = "qpsk", seed: int = 0) -> None:
        if access not in ("tdma", "fdma"):
            raise UsageError(f"access: tdma or fdma, got {access!r}")
        ss = np.random.SeedSequence(seed)
        a, *links = ss.spawn(1 + config.devices)
        self.config = config
        self.channel = AirCompChannel(config, np.random.default_rng(a))
        self.name = f"{codec}-biterr"
        self.links = [make_link(self.name, seed=int(s.generate_state(1)[0])) for s in links]
        self.access = access
        self.modulation = modulation
        self.bers: list[float] = []

    def __call__(self, parts: torch.Tensor) -> torch.Tensor:
        h = self.channel.draw()
        p = self.config.power_limits()
        if not np.all(np.isfinite(p)):
            return parts.sum(dim=0)
        snr = post_mrc_snr_db(h, p, self.config.noise_var)
        if self.access == "fdma":  # same power on 1/N of the band: N times the SNR
            snr = snr + 10.0 * math.log10(self.config.devices)
        # A partial that already went non-finite (corruption upstream blew a layer up) is sent as
        # zeros: the codecs refuse NaN, and a receiver treats garbage as an erasure (DigitalLink's policy).
        parts = torch.nan_to_num(parts, nan=0.0, posinf=0.0, neginf=0.0)
        out = torch.zeros_like(parts[0])
        for n, link in enumerate(self.links):
            state = state_for(self.name, snr_db=float(snr[n]), modulation=self.modulation)
            self.bers.append(float(state.ber))
            link.set_state(state)
            out = out + link.transmit(parts[n])
        return out


class TPEmulation:
    """Context manager: the model's row-parallel layers compute N partials and reduce them with ``reducer``.

    Args:
        model: a Hugging Face Llama-family causal LM.
        ratios: per-device shares (heads and MLP columns apportioned by largest remainder, contiguous).
        reducer: parts [N, ..., D] -> estimated sum [..., D].
    """

    def __init__(self, model: torch.nn.Module, ratios: Sequence[float], reducer: Reducer) -> None:
        base = getattr(model, "model", None)
        layers = getattr(base, "layers", None)
        if layers is None or not hasattr(layers[0], "self_attn") or not hasattr(layers[0].self_attn, "o_proj"):
            raise UsageError("model: the TP emulation supports Llama-family models (self_attn.o_proj, mlp.down_proj)")
        cfg = model.config
        heads = int(cfg.num_attention_heads)
        head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
        self.head_split = apportion(heads, ratios)
        self.col_split = apportion(int(cfg.intermediate_size), ratios)
        self.reducer = reducer
        self.calls = 0
        self._targets = []
        for layer in layers:
            self._targets.append((layer.self_attn.o_proj, [h * head_dim for h in self.head_split]))
            self._targets.append((layer.mlp.down_proj, self.col_split))
        self._saved: list[tuple[torch.nn.Module, object]] = []

    def _forward_for(self, module: torch.nn.Linear, widths: list[int]):
        bounds = np.cumsum([0] + widths)
        emu = self

        def forward(self_mod, x: torch.Tensor) -> torch.Tensor:  # x [B, T, in]
            w = self_mod.weight                                                   # [out, in]
            parts = torch.stack([F.linear(x[..., a:b], w[:, a:b]) for a, b in zip(bounds[:-1], bounds[1:])])
            emu.calls += 1
            y = emu.reducer(parts)                                                # [B, T, out]
            return y if self_mod.bias is None else y + self_mod.bias

        return types.MethodType(forward, module)

    def __enter__(self) -> "TPEmulation":
        for module, widths in self._targets:
            self._saved.append((module, module.__dict__.get("forward")))
            module.forward = self._forward_for(module, widths)
        return self

    def __exit__(self, *exc) -> None:
        for module, saved in self._saved:
            if saved is None:
                del module.forward
            else:
                module.forward = saved
        self._saved.clear()
