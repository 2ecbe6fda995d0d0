"""Typed, validated configuration dataclasses for agents (and the trainer).

A config class is a ``@dataclass`` whose fields are declared with `param`, which records the
field's documentation and its allowed range or values in the field metadata. `validate` (call it
from ``__post_init__``) checks every field against them, and `build` turns a plain mapping (a YAML
section, CLI overrides) into an instance, coercing strings such as ``"1e-4"`` to the field's type
and rejecting unknown names with the list of allowed ones. `describe` renders the fields for
``--help``-style listings; `documented` appends the same text to the class docstring, so every
field has its documentation in ``help(Config)``.

Why not pydantic (installed with FastAPI, and used for the HTTP request bodies in
`splitrl.serve.schema`): these configs arrive as YAML sections and ``key=value`` CLI overrides,
so coercion must read the command-line forms — ``"64,64"`` as a list, ``null``/``~`` as None,
``on``/``off`` as booleans, ``1_000`` as an int, and reject ``2.5`` for an int — which pydantic's
lax mode does not (it would need a validator per type, more code than `coerce`); and every
message must be one line naming the dotted field and its allowed range (``agent.lr must be in
(0, 1], got 2``), which `ConfigError` gives directly and a pydantic ``ValidationError`` would
have to be re-worded. The dataclasses stay plain, so `dataclasses.asdict` saves them with every run.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any

from splitrl.errors import UsageError
from splitrl.yamlio import short

__all__ = ["ConfigError", "param", "validate", "build", "describe", "documented", "coerce", "field_types"]


class ConfigError(UsageError):
    """A configuration value or name is not allowed; the message names the field and what is allowed.

    The project's one usage-error type (`splitrl.errors.UsageError`), specialised for config
    fields: CLIs print it as one line and exit 2. Values in messages are bounded (`short`)."""


def param(default: Any = dataclasses.MISSING, doc: str = "", *, low: float | None = None, high: float | None = None,
          low_open: bool = False, high_open: bool = False, choices: tuple | None = None,
          default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with documentation and an allowed range (``low``/``high``, open or closed)
    or a set of allowed ``choices``; `validate` enforces them (``None`` passes for optional fields)."""
    meta = {"doc": doc, "low": low, "high": high, "low_open": low_open, "high_open": high_open,
            "choices": tuple(choices) if choices is not None else None}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def allowed_text(f: dataclasses.Field) -> str:
    """The allowed range or values of a field, as a short text ("" when anything of its type goes)."""
    m = f.metadata
    if m.get("choices"):
        return "one of " + ", ".join(map(str, m["choices"]))
    low, high = m.get("low"), m.get("high")
    if low is None and high is None:
        return ""
    if low is not None and high is not None:
        return f"in {'(' if m['low_open'] else '['}{low:g}, {high:g}{')' if m['high_open'] else ']'}"
    if low is not None:
        return f"{'>' if m['low_open'] else '>='} {low:g}"
    return f"{'<' if m['high_open'] else '<='} {high:g}"


def _in_range(v: float, f: dataclasses.Field) -> bool:
    m = f.metadata
    if isinstance(v, float) and not math.isfinite(v):
        return False
    if m.get("low") is not None and (v <= m["low"] if m["low_open"] else v < m["low"]):
        return False
    if m.get("high") is not None and (v >= m["high"] if m["high_open"] else v > m["high"]):
        return False
    return True


def validate(cfg: Any) -> None:
    """Check every `param` field of ``cfg`` against its range/choices; raises `ConfigError`
    ``"<Class>.<field> must be <allowed>, got <value>"``."""
    name = type(cfg).__name__
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if v is None or "doc" not in f.metadata:
            continue
        allowed = allowed_text(f)
        if not allowed:
            continue
        values = v if isinstance(v, (list, tuple)) else [v]
        for x in values:
            if f.metadata.get("choices"):
                ok = x in f.metadata["choices"]
            else:
                ok = isinstance(x, (int, float)) and not isinstance(x, bool) and _in_range(x, f)
            if not ok:
                raise ConfigError(f"{name}.{f.name} must be {allowed}, got {short(v)}")


def field_types(cls: type) -> dict[str, Any]:
    """Resolved type hints of a dataclass's fields."""
    return typing.get_type_hints(cls)


def _optional_inner(tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        return optional, (args[0] if len(args) == 1 else tp)
    return False, tp


_NULLS = ("null", "none", "~", "")
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` converted to type ``tp`` (int, float, bool, str, Optional, list[...], dict, a dataclass);
    strings from YAML/CLI are parsed (``"1e-4"`` -> 1e-4, ``"64,64"`` -> [64, 64]). Raises `ConfigError`."""
    optional, inner = _optional_inner(tp)
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in _NULLS):
        if optional or inner is Any:
            return None
        raise ConfigError(f"{where} must not be null (type {getattr(inner, '__name__', inner)})")
    if inner is Any:
        return value
    if dataclasses.is_dataclass(inner):
        if isinstance(value, inner):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping of {inner.__name__} fields, got {short(value)}")
        return build(inner, value, where=where + ".")
    origin = typing.get_origin(inner)
    if inner is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{where} must be true or false, got {short(value)}")
    if inner is int:
        if isinstance(value, (bool, dict, list, tuple, set)):
            raise ConfigError(f"{where} must be an integer, got {short(value)}")
        if isinstance(value, int):
            return value
        try:
            x = float(value) if not isinstance(value, str) else float(value.strip().replace("_", ""))
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be an integer, got {short(value)}") from None
        if not (math.isfinite(x) and x.is_integer()):
            raise ConfigError(f"{where} must be an integer, got {short(value)}")
        return int(x)
    if inner is float:
        if isinstance(value, (bool, dict, list, tuple, set)):
            raise ConfigError(f"{where} must be a number, got {short(value)}")
        try:
            return float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a number, got {short(value)}") from None
    if inner is str:
        if isinstance(value, (dict, list, tuple, set)):
            raise ConfigError(f"{where} must be a string, got {short(value)}")
        return str(value)
    if origin in (list, tuple) or inner in (list, tuple):
        args = typing.get_args(inner)
        item_tp = args[0] if args else Any
        if isinstance(value, str):
            text = value.strip().strip("[]")
            value = [x.strip() for x in text.split(",") if x.strip()] if text else []
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [coerce(x, item_tp, f"{where}[{i}]") for i, x in enumerate(value)]
    if origin is dict or inner is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {short(value)}")
        return dict(value)
    return value


def build(cls: type, mapping: dict[str, Any] | None, *, where: str = "") -> Any:
    """An instance of dataclass ``cls`` from ``mapping`` (missing fields take their defaults).

    Unknown names raise `ConfigError` listing the allowed ones (and the closest match); values are
    coerced to the field types, then the class validates itself. ``where`` prefixes messages
    (e.g. ``"agent."``)."""
    mapping = dict(mapping or {})
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = [k for k in mapping if k not in names]
    if unknown:
        k = unknown[0]
        close = difflib.get_close_matches(str(k), names, n=1)
        hint = f" (did you mean {where}{close[0]}?)" if close else ""
        raise ConfigError(f"unknown field {where}{k if isinstance(k, str) and len(k) < 60 else short(k)} for {cls.__name__}{hint}; allowed: {', '.join(sorted(names))}")
    hints = field_types(cls)
    kwargs = {k: coerce(v, hints[k], f"{where}{k}") for k, v in mapping.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where.rstrip('.') or cls.__name__}: {str(e)[:300]}") from None


def _type_name(tp: Any) -> str:
    optional, inner = _optional_inner(tp)
    origin = typing.get_origin(inner)
    if origin in (list, tuple):
        args = typing.get_args(inner)
        s = f"list[{_type_name(args[0]) if args else 'any'}]"
    elif dataclasses.is_dataclass(inner):
        s = inner.__name__
    else:
        s = getattr(inner, "__name__", str(inner))
    return s + (" | None" if optional else "")


def describe(cls: type, *, prefix: str = "") -> list[str]:
    """One line per field: ``name (type, default D; allowed) — doc``."""
    hints = field_types(cls)
    lines = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = "required"
        allowed = allowed_text(f)
        extra = f"; {allowed}" if allowed else ""
        doc = f.metadata.get("doc", "")
        lines.append(f"{prefix}{f.name} ({_type_name(hints[f.name])}, default {default!r}{extra})" + (f" — {doc}" if doc else ""))
    return lines


def documented(cls: type) -> type:
    """Class decorator (apply after ``@dataclass``): append an ``Attributes:`` section built from the
    fields' `param` docs and ranges to the class docstring."""
    lines = ["", "Attributes:"]
    for line in describe(cls):
        lines.append("    " + line)
    cls.__doc__ = (cls.__doc__ or cls.__name__).rstrip() + "\n" + "\n".join(lines) + "\n"
    return cls
