"""Digital transport tests: bit-flip statistics, erasures, metadata protection, receiver policy."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from splitrl.channel.state import ChannelState
from splitrl.link import (
    CodecLink,
    DigitalLink,
    DigitalLinkConfig,
    Int8Codec,
    erase_blocks,
    flip_bits,
    get_codec,
)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g)


# -- flip_bits -----------------------------------------------------------------------------------
@pytest.mark.parametrize("ber,n_bytes", [(1e-3, 1_000_000), (0.1, 200_000)])  # sparse / dense
def test_flip_bits_measured_rate_matches_ber(ber: float, n_bytes: int) -> None:
    buf = np.zeros(n_bytes, dtype=np.uint8)
    k = flip_bits(buf, ber, np.random.default_rng(0))
    bits = np.unpackbits(buf, bitorder="little").reshape(-1, 8)
    assert int(bits.sum()) == k  # returned count == bits actually flipped
    n_bits = n_bytes * 8
    sd = np.sqrt(n_bits * ber * (1 - ber))
    assert abs(k - n_bits * ber) < 5 * sd
    # Every bit position inside the byte is hit at the same rate (no shift/endianness bias).
    per_plane = bits.sum(axis=0)
    sd_plane = np.sqrt(n_bytes * ber * (1 - ber))
    assert np.all(np.abs(per_plane - n_bytes * ber) < 5 * sd_plane)


def test_flip_bits_extremes() -> None:
    rng = np.random.default_rng(0)
    buf = np.arange(256, dtype=np.uint8)
    assert flip_bits(buf, 0.0, rng) == 0 and np.array_equal(buf, np.arange(256))
    assert flip_bits(buf, 1.0, rng) == 256 * 8
    assert np.array_equal(buf, 255 - np.arange(256))
    with pytest.raises(ValueError, match="ber"):
        flip_bits(buf, 1.5, rng)


def test_bit_errors_through_link() -> None:
    x = _randn(1, 256, 256) + 3.0  # no zeros, so every flip changes an element
    link = DigitalLink("fp32", "bit_errors", seed=0)
    link.set_state(ChannelState(snr_db=5.0, ber=1e-3))
    y = link.transmit(x)
    s = link.last_stats
    assert s["bits_exposed"] == x.numel() * 32
    k = s["bits_flipped"]
    assert abs(k / s["bits_exposed"] - 1e-3) < 0.1e-3
    n_changed = int((y != x).sum())
    assert 0.9 * k <= n_changed <= k  # a few elements take two flips
    assert link.transfers[-1].nbytes == 16 + 4 * x.numel()  # bit errors cost no extra bytes


def test_million_element_payload_flips_the_expected_number_of_bits() -> None:
    # Speed lives in benchmarks/; here: a 1M-element payload is handled and the flip count is binomial.
    x = _randn(1, 1024, 1024)
    link = DigitalLink("fp32", "bit_errors", seed=0)
    link.set_state(ChannelState(snr_db=5.0, ber=1e-3))
    link.transmit(x)
    n = link.last_stats["bits_exposed"]
    k = link.last_stats["bits_flipped"]
    assert abs(k - 1e-3 * n) < 5 * (1e-3 * n) ** 0.5


# -- receiver policy ------------------------------------------------------------------------------
def test_exponent_flips_give_nonfinite_which_receiver_zeroes() -> None:
    # fp32 1.0 = 0x3F800000: flipping exponent bit 30 alone gives +Inf, with mantissa flips NaN.
    x = torch.ones(2, 64, 64)
    link = DigitalLink("fp32", "bit_errors", seed=1)
    link.set_state(ChannelState(snr_db=0.0, ber=0.01))
    y = link.transmit(x)
    n_rep = link.last_stats["nonfinite_repaired"]
    assert n_rep > 0
    assert torch.isfinite(y).all()
    # A 1.0 cannot become exactly 0.0 by a few flips, so the zeros are exactly the repairs.
    assert int((y == 0).sum()) == n_rep


def test_huge_finite_values_clamped_to_output_dtype() -> None:
    # fp32 on the air, fp16 model: an exponent flip can give ~1e38, which must not become Inf.
    x = torch.ones(1, 64, 64, dtype=torch.float16)
    link = DigitalLink("fp32", "bit_errors", seed=2)
    link.set_state(ChannelState(snr_db=0.0, ber=0.01))
    y = link.transmit(x)
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    assert y.float().abs().max() == 65504.0  # some value saturated at the fp16 limit


def test_clip_limits_received_amplitude() -> None:
    x = torch.ones(1, 64, 64)
    link = DigitalLink("fp32", "bit_errors", seed=1, clip=10.0)
    link.set_state(ChannelState(snr_db=0.0, ber=0.01))
    y = link.transmit(x)
    assert y.abs().max() <= 10.0
    assert link.last_stats["clipped"] > 0


def test_missing_ber_or_state_is_a_clear_error() -> None:
    x = _randn(1, 4, 8)
    link = DigitalLink("int8", "bit_errors", seed=0)
    with pytest.raises(ValueError, match="set_state"):
        link.transmit(x)
    link.set_state(ChannelState(snr_db=10.0))
    with pytest.raises(ValueError, match="ChannelState.ber"):
        link.transmit(x)
    er = DigitalLink("int8", "block_erasure", seed=0)
    er.set_state(ChannelState(snr_db=10.0, ber=1e-3))
    with pytest.raises(ValueError, match="ChannelState.bler"):
        er.transmit(x)
    er.set_state(ChannelState(snr_db=10.0, bler=1.2))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        er.transmit(x)


# -- block erasure --------------------------------------------------------------------------------
def _erasure_setup() -> tuple[torch.Tensor, int]:
    x = _randn(1, 64, 64).abs() + 0.1  # no zeros: a zero in the output means "lost"
    return x, get_codec("fp32").nbytes(x.shape)


def test_erasure_zero_fill() -> None:
    x, base = _erasure_setup()
    link = DigitalLink("fp32", "block_erasure", seed=0, block_bytes=64, on_loss="zero")
    link.set_state(ChannelState(snr_db=0.0, bler=0.3))
    y = link.transmit(x)
    s = link.last_stats
    assert s["blocks"] == x.numel() * 4 // 64 == 256
    blocks_y, blocks_x = y.reshape(-1, 16), x.reshape(-1, 16)  # 64 B = 16 fp32 per block
    lost = (blocks_y == 0).all(dim=1)
    intact = (blocks_y == blocks_x).all(dim=1)
    assert torch.all(lost ^ intact)  # every block is either fully lost or bit-exact
    assert int(lost.sum()) == s["blocks_lost"] == s["first_try_lost"]
    assert abs(s["blocks_lost"] / 256 - 0.3) < 0.1
    assert s["retransmissions"] == 0 and link.transfers[-1].nbytes == base


def test_erasure_retransmit_recovers_and_pays() -> None:
    x, base = _erasure_setup()
    link = DigitalLink("fp32", "block_erasure", seed=0, block_bytes=64, on_loss="retransmit",
                       max_retries=30)
    link.set_state(ChannelState(snr_db=0.0, bler=0.3))
    y = link.transmit(x)
    s = link.last_stats
    assert torch.equal(y, x)
    assert s["blocks_lost"] == 0 and s["first_try_lost"] > 0
    assert s["retransmitted_bytes"] == 64 * s["retransmissions"]
    assert link.transfers[-1].nbytes == base + s["retransmitted_bytes"]
    # E[retransmissions per block] = bler / (1 - bler) = 0.43
    assert abs(s["retransmissions"] / 256 - 0.3 / 0.7) < 0.15


def test_erasure_retransmit_exhausted_short_last_block_and_crc() -> None:
    # int8, (1, 3, 5): 12 scale bytes + 15 body bytes = 27 exposed bytes -> blocks 10, 10, 7.
    x = _randn(1, 3, 5)
    link = DigitalLink("int8", "block_erasure", seed=0, block_bytes=10, on_loss="retransmit",
                       max_retries=2, crc_bytes=3)
    link.set_state(ChannelState(snr_db=0.0, bler=1.0))
    y = link.transmit(x)
    s = link.last_stats
    assert s["blocks"] == 3 and s["blocks_lost"] == 3 and s["retransmissions"] == 6
    assert s["retransmitted_bytes"] == 2 * 27
    assert link.transfers[-1].nbytes == (16 + 12 + 15) + 54 + 3 * (3 + 6)
    assert torch.equal(y, torch.zeros_like(x))  # zero bytes decode to zeros


def test_erase_blocks_function_counts() -> None:
    buf = np.full(1000, 7, dtype=np.uint8)
    st = erase_blocks(buf, 0.0, np.random.default_rng(0), block_bytes=64)
    assert st["blocks"] == 16 and st["blocks_lost"] == 0 and np.all(buf == 7)
    st = erase_blocks(buf, 1.0, np.random.default_rng(0), block_bytes=64)
    assert st["blocks_lost"] == 16 and np.all(buf == 0)


# -- metadata protection --------------------------------------------------------------------------
def test_protect_metadata_switch() -> None:
    x = _randn(1, 64, 64)
    absmax = x.abs().amax(-1)
    outs = {}
    for protect in (True, False):
        link = DigitalLink("int8", "bit_errors", seed=5, protect_metadata=protect)
        link.set_state(ChannelState(snr_db=0.0, ber=0.01))
        outs[protect] = (link.transmit(x), dict(link.last_stats))
    (y_p, s_p), (y_u, s_u) = outs[True], outs[False]
    assert s_p["bits_exposed"] == 8 * 64 * 64
    assert s_u["bits_exposed"] == 8 * (64 * 64 + 4 * 64)
    assert s_p["meta_bits_flipped"] == 0 and s_u["meta_bits_flipped"] > 0
    # Protected scales + clamped codes: a row's amplitude stays at its true absmax (a few codes
    # may flip, but not all of them and never beyond the grid).
    ratio_p = y_p.abs().amax(-1) / absmax
    assert torch.all((ratio_p <= 1 + 1e-6) & (ratio_p > 0.5))
    # Unprotected: an exponent flip in a scale rescales a whole token by orders of magnitude.
    ratio_u = y_u.abs().amax(-1) / absmax
    assert bool(((ratio_u > 1 + 1e-6) | (ratio_u < 1e-3)).any())


def test_protect_metadata_under_erasure_keeps_scales() -> None:
    x = _randn(1, 32, 64)
    link = DigitalLink("int8", "block_erasure", seed=0, block_bytes=64, protect_metadata=True)
    link.set_state(ChannelState(snr_db=0.0, bler=0.5))
    y = link.transmit(x)
    assert link.last_stats["bits_exposed"] == 8 * 32 * 64
    rows_lost = (y == 0).all(-1)  # 64-byte blocks = whole int8 rows
    assert int(rows_lost.sum()) == link.last_stats["blocks_lost"] > 0
    clean = CodecLink("int8").transmit(x)
    assert torch.equal(y[~rows_lost], clean[~rows_lost])


# -- CodecLink & config ----------------------------------------------------------------------------
def test_codec_link_is_pure_codec_effect() -> None:
    x = _randn(2, 8, 32)
    link = CodecLink("int8")
    y = link.transmit(x, boundary=1, phase="prefill")
    c = Int8Codec()
    assert torch.equal(y, c.decode(c.encode(x)))
    t = link.transfers[-1]
    assert (t.boundary, t.phase, t.kind, t.nbytes) == (1, "prefill", "hidden", c.nbytes(x.shape))


def test_digital_link_with_zero_error_equals_codec_link() -> None:
    x = _randn(2, 8, 32)
    for mode in ("bit_errors", "block_erasure"):
        link = DigitalLink("int4", mode, seed=0)
        link.set_state(ChannelState(snr_db=30.0, ber=0.0, bler=0.0))
        assert torch.equal(link.transmit(x), CodecLink("int4").transmit(x))


@pytest.mark.parametrize(
    "kwargs,field",
    [({"mode": "awgn"}, "mode"), ({"on_loss": "drop"}, "on_loss"), ({"block_bytes": 0}, "block_bytes"),
     ({"max_retries": -1}, "max_retries"), ({"crc_bytes": 100}, "crc_bytes"), ({"clip": -1.0}, "clip"),
     ({"protect_metadata": 1}, "protect_metadata")],
)
def test_config_validation_names_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"DigitalLinkConfig.{field}"):
        DigitalLinkConfig(**kwargs)
