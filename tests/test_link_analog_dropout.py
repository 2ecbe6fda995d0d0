"""Analog AWGN link and element-dropout link tests."""
from __future__ import annotations

import math

import pytest
import torch

from splitrl.channel.state import ChannelState
from splitrl.link import AnalogLink, AnalogLinkConfig, DropoutLink, DropoutLinkConfig


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g)


# -- analog ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("snr_db", [-5.0, 10.0, 30.0])
def test_analog_snr_is_per_token(snr_db: float) -> None:
    H = 4096
    gains = torch.tensor([1e-2, 1.0, 10.0, 300.0, 24000.0])  # wildly different token powers
    x = _randn(1, 5, H) * gains[None, :, None]
    link = AnalogLink(seed=0)
    link.set_state(ChannelState(snr_db=snr_db))
    y = link.transmit(x)
    noise = y - x
    snr_meas = 10 * torch.log10(x.pow(2).mean(-1) / noise.pow(2).mean(-1))
    # Noise-power estimate from 4096 samples: ~2 % sd -> ~0.1 dB; every token sees snr_db.
    assert torch.all((snr_meas - snr_db).abs() < 0.5), snr_meas
    assert torch.all(noise.mean(-1).abs() < 5 * noise.std(-1) / math.sqrt(H))


def test_analog_zero_token_stays_zero_and_inf_snr_is_noiseless() -> None:
    x = _randn(2, 4, 32)
    x[1, 2] = 0.0
    link = AnalogLink(seed=0)
    link.set_state(ChannelState(snr_db=0.0))
    y = link.transmit(x)
    assert torch.equal(y[1, 2], torch.zeros(32)) and not torch.equal(y, x)
    link.set_state(ChannelState(snr_db=math.inf))
    assert torch.equal(link.transmit(x), x)
    link.set_state(ChannelState(snr_db=-math.inf))
    with pytest.raises(ValueError, match="snr_db"):
        link.transmit(x)


def test_analog_byte_accounting() -> None:
    x = _randn(2, 3, 8)  # N = 48, R = 6, header 16
    link = AnalogLink(seed=0)
    link.set_state(ChannelState(snr_db=10.0))
    link.transmit(x)
    assert link.transfers[-1].nbytes == 16 + 4 * 6 + 2 * 48  # side info + fp16-equivalent
    assert link.last_stats["channel_uses_real"] == 48 and link.last_stats["complex_symbols"] == 24
    assert AnalogLink(seed=0, bits_per_channel_use=4).nbytes((2, 3, 8)) == 16 + 24 + 24
    assert AnalogLink(seed=0, count_side_info=False).nbytes((2, 3, 7)) == 2 * 42
    assert AnalogLink(seed=0, bits_per_channel_use=3, count_side_info=False).nbytes((1, 1, 3)) == 2


def test_analog_keeps_low_precision_dtype() -> None:
    x = (_randn(1, 4, 64) * 6000).to(torch.float16)
    link = AnalogLink(seed=0)
    link.set_state(ChannelState(snr_db=-20.0))  # noise std ~10x the signal: would overflow fp16
    y = link.transmit(x)
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    assert y.float().abs().max() == 65504.0  # saturated, not Inf


def test_analog_needs_state_and_validates_config() -> None:
    with pytest.raises(ValueError, match="set_state"):
        AnalogLink(seed=0).transmit(_randn(1, 2, 4))
    with pytest.raises(ValueError, match="AnalogLinkConfig.bits_per_channel_use"):
        AnalogLinkConfig(bits_per_channel_use=0)


# -- dropout --------------------------------------------------------------------------------------
def test_dropout_fraction_and_kept_values() -> None:
    x = _randn(1, 100, 1000).abs() + 0.1  # no zeros
    link = DropoutLink(0.3, seed=0)
    y = link.transmit(x)
    dropped = y == 0
    frac = dropped.float().mean().item()
    assert abs(frac - 0.3) < 5 * math.sqrt(0.3 * 0.7 / x.numel())
    assert int(dropped.sum()) == link.last_stats["dropped"]
    assert torch.equal(y[~dropped], x[~dropped])  # no rescaling by default
    assert link.transfers[-1].nbytes == 4 * x.numel()


def test_dropout_rescale_and_extremes() -> None:
    x = _randn(1, 10, 100).abs() + 0.1
    y = DropoutLink(0.5, seed=0, rescale=True).transmit(x)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / 0.5)
    assert torch.equal(DropoutLink(0.0, seed=0).transmit(x), x)
    assert torch.equal(DropoutLink(1.0, seed=0).transmit(x), torch.zeros_like(x))


@pytest.mark.parametrize("kwargs", [{"p": 1.5}, {"p": -0.1}, {"p": 1.0, "rescale": True}])
def test_dropout_config_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="DropoutLinkConfig.p"):
        DropoutLinkConfig(**kwargs)
