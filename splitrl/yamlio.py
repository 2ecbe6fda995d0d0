"""Reading YAML a user gave us (configs, profiles, channel specs), safely and with bounded messages.

* Only ``yaml.safe_load`` (no Python objects).
* Files are checked before parsing: a folder, a binary file (NUL bytes, not UTF-8) or one over
  `MAX_FILE_BYTES` is refused in one line.
* A small file can use anchors/aliases to describe a huge value ("billion laughs"): PyYAML shares
  the aliased nodes, so parsing is cheap, but anything that walks or prints the value would expand
  it. `check_size` counts the expanded size in time proportional to the distinct nodes and refuses
  more than `MAX_NODES` values.
* `short` renders any value for an error message in at most ~80 characters (never the whole value).
"""
from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any

import yaml

from splitrl.errors import UsageError

__all__ = ["MAX_FILE_BYTES", "MAX_NODES", "check_size", "load_yaml_file", "load_yaml_text", "short"]

MAX_FILE_BYTES = 4 << 20
MAX_NODES = 100_000

_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxtuple = 60, 60, 6, 6
_REPR.maxdict, _REPR.maxset, _REPR.maxlevel, _REPR.maxlong = 6, 6, 3, 40


def short(value: Any) -> str:
    """A repr of ``value`` bounded to about 80 characters (nested and long values elided with ``...``)."""
    text = _REPR.repr(value)
    return text if len(text) <= 90 else text[:87] + "..."


def check_size(value: Any, where: str, limit: int = MAX_NODES) -> None:
    """Refuse a value (as parsed from YAML/JSON) that expands to more than ``limit`` scalars and
    containers. Shared sub-values (YAML aliases) are counted once per use, computed once each."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(v: Any) -> int:
        if not isinstance(v, (list, tuple, dict)):
            return 1
        key = id(v)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise UsageError(f"{where}: a value contains itself (recursive YAML alias)")
        active.add(key)
        total = 1
        for x in (v.items() if isinstance(v, dict) else v):
            total += size(x[0]) + size(x[1]) if isinstance(v, dict) else size(x)
            if total > limit:
                raise UsageError(f"{where}: the value expands to more than {limit} entries (YAML anchors/aliases?); "
                                 "refusing it")
        active.discard(key)
        sizes[key] = total
        return total

    try:
        size(value)
    except RecursionError:
        raise UsageError(f"{where}: the value is nested too deeply") from None


def load_yaml_text(text: str, where: str) -> Any:
    """``yaml.safe_load(text)`` with one-line errors naming ``where``, bounded by `check_size`."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = str(getattr(e, "problem", None) or type(e).__name__)[:120]
        raise UsageError(f"{where}: not valid YAML{at}: {problem}") from None
    except RecursionError:
        raise UsageError(f"{where}: the YAML is nested too deeply") from None
    check_size(data, where)
    return data


def load_yaml_file(path: str | Path, *, what: str = "YAML file") -> Any:
    """Read and parse a YAML file the user named; every problem is one `UsageError` line."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{what} {p} is a folder, not a file")
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise UsageError(f"{what} {p} not found") from None
    except OSError as e:
        raise UsageError(f"{what} {p}: cannot read it ({e.strerror})") from None
    if size > MAX_FILE_BYTES:
        raise UsageError(f"{what} {p} is {size} bytes; YAML inputs are at most {MAX_FILE_BYTES} bytes")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise UsageError(f"{what} {p}: cannot read it ({e.strerror})") from None
    if b"\0" in raw:
        raise UsageError(f"{what} {p} is a binary file, not YAML text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{what} {p} is not UTF-8 text") from None
    return load_yaml_text(text, f"{what} {p}")
