"""In-process TP emulation: exact reducer = the model, AirComp noise enters, seeded, digital star."""
from __future__ import annotations

import math

import pytest
import torch

from splitrl.aircomp.channel import AirCompChannelConfig
from splitrl.aircomp.emulate import AirCompReducer, DigitalStarReducer, TPEmulation, apportion, exact_reducer
from splitrl.errors import UsageError
from splitrl.models import load_model


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    lm = load_model("llama-tiny")
    ids = torch.randint(0, 1000, (1, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = lm.model(ids).logits
    return lm.model, ids, ref


def _logits(model, ids, reducer, ratios=(1.0, 1.0, 1.0)):
    with torch.no_grad(), TPEmulation(model, ratios, reducer) as emu:
        out = model(ids).logits
    return out, emu.calls


def test_exact_reducer_reproduces_the_model_and_restores_it(tiny):
    model, ids, ref = tiny
    out, calls = _logits(model, ids, exact_reducer, (0.5, 0.3, 0.2))
    assert calls == 2 * model.config.num_hidden_layers            # noise would enter 2 L times
    assert torch.allclose(out, ref, atol=1e-4)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ref)                # forwards restored on exit


def test_aircomp_noiseless_is_exact_and_noise_is_seeded(tiny):
    model, ids, ref = tiny
    clean, _ = _logits(model, ids, AirCompReducer(AirCompChannelConfig(devices=3, antennas=2, snr_db=math.inf)))
    assert torch.allclose(clean, ref, atol=1e-4)
    cfg = AirCompChannelConfig(devices=3, antennas=2, snr_db=10.0)
    a, _ = _logits(model, ids, AirCompReducer(cfg, "eig", seed=4))
    b, _ = _logits(model, ids, AirCompReducer(cfg, "eig", seed=4))
    c, _ = _logits(model, ids, AirCompReducer(cfg, "eig", seed=5))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.allclose(a, ref, atol=1e-3)
    # More SNR, less damage (same seed, same channel draws).
    hi, _ = _logits(model, ids, AirCompReducer(AirCompChannelConfig(devices=3, antennas=2, snr_db=40.0), "eig", seed=4))
    assert (hi - ref).pow(2).mean() < (a - ref).pow(2).mean()


def test_digital_star_reducer_is_seeded_and_exact_without_errors(tiny):
    model, ids, ref = tiny
    cfg = AirCompChannelConfig(devices=2, antennas=1, snr_db=12.0)
    red = DigitalStarReducer(cfg, "int8", "tdma", seed=1)
    a, _ = _logits(model, ids, red, (1.0, 1.0))
    b, _ = _logits(model, ids, DigitalStarReducer(cfg, "int8", "tdma", seed=1), (1.0, 1.0))
    assert torch.equal(a, b) if torch.isfinite(a).all() else torch.equal(a.nan_to_num(), b.nan_to_num())
    assert max(red.bers) > 0
    fp32, _ = _logits(model, ids, DigitalStarReducer(AirCompChannelConfig(devices=2, snr_db=math.inf), "fp32"), (1.0, 1.0))
    assert torch.allclose(fp32, ref, atol=1e-4)


def test_apportion_and_bad_model():
    assert apportion(9, [1, 1, 1]) == [3, 3, 3] and sum(apportion(1536, [0.5, 0.3, 0.2])) == 1536
    with pytest.raises(UsageError):
        apportion(2, [1, 1, 1])
    with pytest.raises(UsageError):
        TPEmulation(torch.nn.Linear(2, 2), [1, 1], exact_reducer)
