"""Codec tests: round-trip error bounds, exact byte counts, outliers, int4 packing, edge cases."""
from __future__ import annotations

import struct

import pytest
import torch

from splitrl.link import (
    CODEC_NAMES,
    EncodedPayload,
    FP16Codec,
    Int4Codec,
    Int8Codec,
    get_codec,
    header_nbytes,
)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g)


# -- round-trip error bounds ------------------------------------------------------------------
def test_fp32_is_lossless_and_does_not_alias_input() -> None:
    x = _randn(2, 5, 33)
    c = get_codec("fp32")
    enc = c.encode(x)
    assert torch.equal(c.decode(enc), x)
    enc.body.zero_()  # corrupting the payload in place must not touch the sender's tensor
    assert torch.equal(x, _randn(2, 5, 33))


@pytest.mark.parametrize("name,rel", [("fp16", 2.0**-11), ("bf16", 2.0**-8)])
def test_float_codec_relative_error_bound(name: str, rel: float) -> None:
    # Magnitudes 1e-2..1e4 keep fp16 in its normal range, where round-to-nearest gives
    # |err| <= 2^-(mantissa bits + 1) * |x|.
    x = _randn(3, 7, 64) * torch.logspace(-2, 4, 64)
    c = get_codec(name)
    y = c.decode(c.encode(x))
    assert y.dtype == x.dtype and y.shape == x.shape
    assert torch.all((y - x).abs() <= rel * x.abs() * (1 + 1e-6))
    assert not torch.equal(y, x)  # the codec really is lossy at this precision


@pytest.mark.parametrize("name,qmax", [("int8", 127), ("int4", 7)])
def test_int_codec_error_at_most_half_a_step(name: str, qmax: int) -> None:
    x = _randn(4, 9, 48) * torch.linspace(0.1, 30, 9)[None, :, None]
    c = get_codec(name)
    y = c.decode(c.encode(x))
    step = x.abs().amax(dim=-1, keepdim=True) / qmax
    err = (y - x).abs()
    assert torch.all(err <= step / 2 * (1 + 1e-5) + 1e-7)
    # ...and the bound is nearly attained (a codec that did nothing would fail the first check,
    # one that rounds too coarsely the second).
    assert err.max() > 0.3 * (step / 2).min()


def test_int_codecs_keep_row_absmax_exact() -> None:
    x = _randn(2, 6, 40)
    for name in ("int8", "int4"):
        c = get_codec(name)
        y = c.decode(c.encode(x))
        torch.testing.assert_close(y.abs().amax(-1), x.abs().amax(-1), rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("name", CODEC_NAMES)
def test_decode_restores_dtype_and_shape(name: str, dtype: torch.dtype) -> None:
    x = _randn(2, 3, 10).to(dtype)
    c = get_codec(name)
    y = c.decode(c.encode(x))
    assert y.dtype == dtype and y.shape == x.shape


# -- exact byte counts ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,expected",
    # shape (2, 3, 8): N = 48, R = 6, header = 4 + 4*3 = 16
    [("fp32", 16 + 4 * 48), ("fp16", 16 + 2 * 48), ("bf16", 16 + 2 * 48),
     ("int8", 16 + 4 * 6 + 48), ("int4", 16 + 4 * 6 + 24)],
)
def test_exact_byte_count(name: str, expected: int) -> None:
    assert expected == {"fp32": 208, "fp16": 112, "bf16": 112, "int8": 88, "int4": 64}[name]
    x = _randn(2, 3, 8)
    c = get_codec(name)
    enc = c.encode(x)
    assert enc.nbytes == expected
    assert c.nbytes((2, 3, 8)) == expected
    assert len(enc.to_bytes()) == expected


def test_byte_count_odd_int4_and_2d_shape() -> None:
    # (1, 1, 5): header 16, one fp32 scale, ceil(5/2) = 3 body bytes.
    assert Int4Codec().encode(_randn(1, 1, 5)).nbytes == 16 + 4 + 3
    # 2-D (3, 4): header 4 + 8 = 12, 3 scales, 12 int8 codes.
    assert Int8Codec().encode(_randn(3, 4)).nbytes == 12 + 12 + 12
    assert header_nbytes(3) == 16


def test_header_layout() -> None:
    enc = Int8Codec().encode(_randn(2, 3, 8))
    assert enc.header == bytes([3, 3, 0, 0]) + struct.pack("<3I", 2, 3, 8)
    frame = enc.to_bytes()
    assert frame[:16] == enc.header
    assert frame[16:40] == enc.meta.numpy().tobytes()  # fp32 scales follow the header
    assert frame[40:] == enc.body.numpy().tobytes()


@pytest.mark.parametrize("name", CODEC_NAMES)
def test_frame_serialisation_round_trip(name: str) -> None:
    x = _randn(2, 3, 7)
    c = get_codec(name)
    enc = c.encode(x)
    back = EncodedPayload.from_bytes(enc.to_bytes())
    assert back.codec_id == c.codec_id and back.shape == (2, 3, 7)
    assert torch.equal(c.decode(back), c.decode(enc))


def test_from_bytes_rejects_truncated_or_unknown() -> None:
    frame = Int8Codec().encode(_randn(2, 3, 8)).to_bytes()
    with pytest.raises(ValueError, match="needs"):
        EncodedPayload.from_bytes(frame[:-1])
    with pytest.raises(ValueError, match="unknown codec id"):
        EncodedPayload.from_bytes(bytes([99]) + frame[1:])


# -- outliers (SmolLM2-style massive activations) --------------------------------------------
def test_per_token_int8_survives_massive_activation_outliers() -> None:
    H, T = 256, 64
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, T, H, generator=g) * torch.linspace(1, 10, T)[None, :, None]
    x[0, 0, 17] = 24000.0  # attention-sink token with a massive activation
    x[0, 0, 99] = -18000.0
    x[0, 31, 5] = 23500.0
    outlier_rows = {0, 31}
    normal = [t for t in range(T) if t not in outlier_rows]

    c = Int8Codec()
    y = c.decode(c.encode(x))
    rel = (y - x)[0].norm(dim=-1) / x[0].norm(dim=-1)
    assert rel[normal].max() < 0.01
    assert rel[sorted(outlier_rows)].max() < 0.01  # outlier rows are dominated by the outlier

    # Contrast: one per-tensor scale wipes out the ordinary tokens (this is what the per-token
    # design is protecting against; it also shows the data above really is outlier-heavy).
    s = x.abs().max() / 127
    y_tensor = torch.round(x / s).clamp(-127, 127) * s
    rel_tensor = (y_tensor - x)[0].norm(dim=-1) / x[0].norm(dim=-1)
    assert rel_tensor[normal].min() > 0.5


def test_fp16_keeps_outliers() -> None:
    x = torch.tensor([[[24000.0, -24000.0, 1.0, 0.001]]])
    y = FP16Codec().decode(FP16Codec().encode(x))
    torch.testing.assert_close(y, x, rtol=2.0**-11, atol=0)


def test_fp16_saturates_instead_of_overflowing() -> None:
    x = torch.tensor([[[1e5, -7e4, 3.0, 65504.0]]])
    enc = FP16Codec().encode(x)
    assert enc.saturated == 2
    y = FP16Codec().decode(enc)
    assert torch.isfinite(y).all()
    assert y.tolist() == [[[65504.0, -65504.0, 3.0, 65504.0]]]


# -- int4 packing ---------------------------------------------------------------------------------
def test_int4_packing_layout_and_round_trip() -> None:
    # absmax 7 -> scale 1, so the codes are the values themselves.
    x = torch.tensor([[[1.0, -1.0, 7.0, -7.0, 0.0]]])
    c = Int4Codec()
    enc = c.encode(x)
    # nibbles 0x1, 0xF, 0x7, 0x9, 0x0 (+ pad 0): low nibble first.
    assert enc.body.tolist() == [0xF1, 0x97, 0x00]
    assert torch.equal(c.decode(enc), x)


def test_int4_exact_on_grid_values_odd_count() -> None:
    g = torch.Generator().manual_seed(3)
    codes = torch.randint(-7, 8, (3, 5, 7), generator=g).float()
    codes[..., 0] = 7.0  # fix every row's absmax to 7 so the grid is the integers
    scale = torch.rand(3, 5, 1, generator=g) + 0.5
    x = codes * scale  # row absmax 7*scale -> quantiser step = scale, codes recovered exactly
    c = Int4Codec()
    y = c.decode(c.encode(x))
    torch.testing.assert_close(y, x, rtol=1e-6, atol=1e-6)
    assert c.encode(x).body.numel() == (3 * 5 * 7 + 1) // 2


# -- edge cases -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CODEC_NAMES)
def test_all_zero_rows_decode_to_zero(name: str) -> None:
    x = _randn(2, 4, 16)
    x[0, 1] = 0.0
    x[1, 3] = 0.0
    c = get_codec(name)
    y = c.decode(c.encode(x))
    assert torch.isfinite(y).all()
    assert torch.equal(y[0, 1], torch.zeros(16)) and torch.equal(y[1, 3], torch.zeros(16))


@pytest.mark.parametrize("name", CODEC_NAMES)
@pytest.mark.parametrize("bad,word", [(float("nan"), "NaN"), (float("inf"), "Inf")])
def test_non_finite_input_rejected(name: str, bad: float, word: str) -> None:
    x = _randn(1, 3, 8)
    x[0, 1, 2] = bad
    with pytest.raises(ValueError, match=word):
        get_codec(name).encode(x)


def test_int_decoder_maps_unused_codes_and_ignores_scale_sign() -> None:
    c = Int8Codec()
    x = torch.tensor([[[2.0, -1.0, 0.5]]])
    enc = c.encode(x)  # scale = 2/127
    body = enc.body.clone()
    body[1] = 0x80  # code -128, unused by the symmetric grid
    meta = enc.meta.clone()
    meta[3] |= 0x80  # set the sign bit of the fp32 scale (little-endian: byte 3)
    y = c.decode(enc.with_bytes(meta, body))
    torch.testing.assert_close(y, torch.tensor([[[2.0, -2.0, 0.5]]]), rtol=0, atol=2 / 127 / 2)


def test_unknown_codec_name_lists_allowed() -> None:
    with pytest.raises(ValueError, match="int8"):
        get_codec("int3")
