"""A seeded fuzz corpus for the wire decoder: valid frames of every type, then mutated ones.

Used by the tests and by ``benchmarks/deploy_overhead.py`` (which reports ``fuzz_cases`` and
``fuzz_crashes``). Mutations: random byte flips, bit flips, truncation, extension, a forged header
length, shuffled header bytes, and random bytes — the ways a frame is damaged on a network or
built by a hostile peer.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from splitrl.deploy import wire
from splitrl.link import make_link

__all__ = ["fuzz_frames", "seed_frames", "run_fuzz"]


def seed_frames() -> list[wire.Message]:
    """One valid message of every type (a step with a real int8 activation frame)."""
    x = torch.randn(1, 3, 16, generator=torch.Generator().manual_seed(0))
    frame = make_link("int8").send(x)
    ids = torch.tensor([[1, 2, 3]])
    tok = make_link("int8").send(ids)
    return [
        wire.Message("open", "req-1", 0, {"L": 30, "cuts": [15], "seg": 1, "fp": "ab" * 32,
                                          "sampling": {"do_sample": True, "temperature": 0.8, "top_k": 5, "top_p": 0.9,
                                                       "seed": 3},
                                          "policy": {"repair_nonfinite": True, "clip": None}}),
        wire.Message("step", "req-1", 1, {"ph": "prefill", "b": 0, "k": "hidden", "codec": "int8", "dt": "float32",
                                          "shape": [1, 3, 16], "q": 12}, frame.data),
        wire.Message("step", "req-1", 2, {"ph": "decode", "b": 0, "k": "tokens", "codec": "u16", "dt": "float32",
                                          "shape": [1, 3], "q": 0}, tok.data),
        wire.Message("token", "req-1", 0, {"tok": 42, "sec": 0.01}),
        wire.Message("ok", "req-1", 1),
        wire.Message("error", "req-1", 2, {"msg": "something was wrong"}),
        wire.Message("close", "req-1", 3),
    ]


def fuzz_frames(n: int, seed: int = 0) -> Iterator[bytes]:
    """``n`` damaged frames derived from `seed_frames` (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    valid = [wire.encode(m) for m in seed_frames()]
    for i in range(n):
        raw = bytearray(valid[i % len(valid)])
        op = i % 8
        if op == 0:  # byte flips
            for p in rng.integers(0, len(raw), size=int(rng.integers(1, 6))):
                raw[p] = int(rng.integers(0, 256))
        elif op == 1:  # single bit flip
            p = int(rng.integers(0, len(raw) * 8))
            raw[p // 8] ^= 1 << (p % 8)
        elif op == 2:  # truncation
            raw = raw[: int(rng.integers(0, len(raw)))]
        elif op == 3:  # extension with junk
            raw += rng.integers(0, 256, size=int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
        elif op == 4:  # forged header length
            raw[:4] = int(rng.integers(0, 2**32)).to_bytes(4, "little")
        elif op == 5:  # shuffled header bytes
            hlen = min(int.from_bytes(raw[:4], "little"), len(raw) - 4)
            body = bytearray(raw[4:4 + hlen])
            rng.shuffle(body)
            raw[4:4 + hlen] = body
        elif op == 6:  # random bytes
            raw = bytearray(rng.integers(0, 256, size=int(rng.integers(0, 300)), dtype=np.uint8).tobytes())
        else:  # header/payload boundary moved
            delta = int(rng.integers(-8, 9))
            hlen = max(0, int.from_bytes(raw[:4], "little") + delta)
            raw[:4] = (hlen % 2**32).to_bytes(4, "little")
        yield bytes(raw)


def run_fuzz(n: int, seed: int = 0) -> dict[str, int]:
    """Decode ``n`` fuzzed frames; counts of cases, clean rejections, accepted frames and crashes."""
    out = {"cases": 0, "rejected": 0, "accepted": 0, "crashes": 0}
    for raw in fuzz_frames(n, seed):
        out["cases"] += 1
        try:
            wire.decode(raw)
            out["accepted"] += 1
        except wire.WireError:
            out["rejected"] += 1
        except Exception:
            out["crashes"] += 1
    return out
