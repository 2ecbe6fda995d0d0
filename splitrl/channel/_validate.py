"""Shared argument checks for the channel package: config validation and generator typing.

Every config in `splitrl.channel` validates in ``__post_init__`` through these helpers so that the
error text has one shape: ``"<Config>.<field> = <value>: must be <allowed range>"``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from splitrl.errors import UsageError


def fail(owner: str, field: str, value: Any, allowed: str) -> UsageError:
    """Build the `UsageError` every config raises: names the field, the value and what is allowed."""
    return UsageError(f"{owner}.{field} = {value!r}: must be {allowed}")


def finite(owner: str, field: str, value: Any) -> float:
    """Coerce to float and reject NaN/inf (a NaN would silently poison every downstream SNR)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise fail(owner, field, value, "a finite real number") from None
    if not math.isfinite(x):
        raise fail(owner, field, value, "a finite real number")
    return x


def positive(owner: str, field: str, value: Any) -> float:
    x = finite(owner, field, value)
    if x <= 0.0:
        raise fail(owner, field, value, "> 0")
    return x


def non_negative(owner: str, field: str, value: Any) -> float:
    x = finite(owner, field, value)
    if x < 0.0:
        raise fail(owner, field, value, ">= 0")
    return x


def in_range(
    owner: str, field: str, value: Any, lo: float, hi: float, *, lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    x = finite(owner, field, value)
    ok_lo = x > lo if lo_open else x >= lo
    ok_hi = x < hi if hi_open else x <= hi
    if not (ok_lo and ok_hi):
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        raise fail(owner, field, value, f"in {lb}{lo}, {hi}{rb}")
    return x


def non_negative_int(owner: str, field: str, value: Any) -> int:
    # bool is an int subclass; accepting True as "1 retransmission" would hide a config typo.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise fail(owner, field, value, "an integer >= 0")
    return int(value)


def positive_int(owner: str, field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise fail(owner, field, value, "an integer >= 1")
    return int(value)


def one_of(owner: str, field: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise fail(owner, field, value, "one of " + ", ".join(repr(a) for a in allowed))
    return str(value)


def check_rng(rng: Any, where: str) -> np.random.Generator:
    """Reject anything but a `numpy.random.Generator`.

    Accepting a seed or the legacy ``RandomState`` here would let two components silently share
    (or not share) a stream; forcing callers to pass a Generator keeps ownership explicit.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"{where}: rng must be a numpy.random.Generator (e.g. np.random.default_rng(seed)), "
            f"got {type(rng).__name__}"
        )
    return rng
