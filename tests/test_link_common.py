"""Properties every link shares: seeding, token ids, NaN rejection, shapes, factory."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from splitrl.channel.state import ChannelState
from splitrl.link import CODEC_NAMES, LINK_NAMES, ChannelLink, make_link
from splitrl.link.base import Link

STATE = ChannelState(snr_db=10.0, ber=2e-3, bler=0.2)
STOCHASTIC = ["fp32-biterr", "int8-biterr", "int4-biterr", "fp16-erasure", "int8-erasure",
              "awgn", "dropout"]


def _build(name: str, seed: int | np.random.Generator = 0) -> ChannelLink:
    kwargs: dict = {"seed": seed}
    if name == "dropout":
        kwargs["p"] = 0.2
    if name.endswith("-erasure"):
        kwargs["block_bytes"] = 64
    link = make_link(name, **kwargs)
    link.set_state(STATE)
    return link


def _payloads() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2, 16, 64, generator=g) for _ in range(3)]


@pytest.mark.parametrize("name", STOCHASTIC)
def test_same_seed_bit_identical_different_seed_differs(name: str) -> None:
    xs = _payloads()
    a, b, c = _build(name, 7), _build(name, 7), _build(name, 8)
    ya = [a.transmit(x) for x in xs]
    yb = [b.transmit(x) for x in xs]
    yc = [c.transmit(x) for x in xs]
    assert all(torch.equal(p, q) for p, q in zip(ya, yb))
    assert [t.nbytes for t in a.transfers] == [t.nbytes for t in b.transfers]
    assert any(not torch.equal(p, q) for p, q in zip(ya, yc))
    assert any(not torch.equal(p, x) for p, x in zip(ya, xs))  # the channel did something
    a.reseed(7)
    assert torch.equal(a.transmit(xs[0]), ya[0])  # reseed replays the stream


@pytest.mark.parametrize("name", ["int8-biterr", "awgn", "dropout"])
def test_numpy_generator_seed_and_global_rng_untouched(name: str) -> None:
    xs = _payloads()
    torch_state, np_state = torch.random.get_rng_state(), np.random.get_state()
    a = _build(name, np.random.default_rng(3))
    b = _build(name, np.random.default_rng(3))
    assert a.seed == b.seed
    assert all(torch.equal(a.transmit(x), b.transmit(x)) for x in xs)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state[1])


def test_seed_validation() -> None:
    with pytest.raises(ValueError, match="seed"):
        _build("awgn", -1)
    with pytest.raises(TypeError, match="seed"):
        _build("awgn", 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        make_link("dropout", p=0.1)  # stochastic links require an explicit seed


@pytest.mark.parametrize("name", LINK_NAMES)
def test_token_ids_pass_unchanged_at_two_bytes(name: str) -> None:
    link = _build(name)
    ids = torch.randint(0, 49152, (2, 5), generator=torch.Generator().manual_seed(0))
    out = link.transmit(ids, boundary=0, phase="prefill")
    assert torch.equal(out, ids) and out.dtype == torch.int64
    t = link.transfers[-1]
    assert (t.kind, t.nbytes, t.shape) == ("tokens", 20, (2, 5))


@pytest.mark.parametrize("name", LINK_NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_shape_dtype_preserved_and_transfer_recorded(name: str, dtype: torch.dtype) -> None:
    link = _build(name)
    assert isinstance(link, Link)
    x = _payloads()[0].to(dtype)
    y = link.transmit(x, boundary=2, phase="decode", step=3)
    assert y.shape == x.shape and y.dtype == dtype and torch.isfinite(y).all()
    t = link.transfers[-1]
    assert (t.boundary, t.phase, t.step, t.kind, t.shape) == (2, "decode", 3, "hidden", (2, 16, 64))
    assert t.nbytes > 0 and link.bytes_total == t.nbytes


@pytest.mark.parametrize("name", LINK_NAMES)
def test_nan_input_rejected(name: str) -> None:
    x = _payloads()[0]
    x[1, 3, 7] = float("nan")
    with pytest.raises(ValueError, match="1 NaN"):
        _build(name).transmit(x)


def test_factory_byte_counts_are_consistent() -> None:
    x = _payloads()[0]  # N = 2048, R = 32
    expected = {"identity": 16 + 4 * 2048, "fp32": 16 + 4 * 2048, "fp16": 16 + 2 * 2048,
                "bf16": 16 + 2 * 2048, "int8": 16 + 4 * 32 + 2048, "int4": 16 + 4 * 32 + 1024,
                "dropout": 4 * 2048, "awgn": 16 + 4 * 32 + 2 * 2048}
    for name, nb in expected.items():
        link = _build(name)
        link.transmit(x)
        assert link.transfers[-1].nbytes == nb, name
    assert set(CODEC_NAMES) < set(LINK_NAMES)


def test_unknown_name_lists_allowed() -> None:
    with pytest.raises(ValueError, match="allowed: .*int8-biterr.*awgn"):
        make_link("int8-fading")
