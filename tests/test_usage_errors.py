"""Usage faults raise `UsageError` everywhere: no bare ``raise ValueError`` in library code.

`splitrl.errors.UsageError` is a ``ValueError``, so callers that catch ``ValueError`` keep working;
what this test holds is that every fault a user can cause (a config field, a flag, a file, a peer)
has the one type that `splitrl.cli.main` prints once, as one line, with exit status 2. Numba kernels
are exempt: compiled code raises built-in exception classes only.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("splitrl", "agents", "envs")


def _compiled_ranges(tree: ast.AST) -> list[tuple[int, int]]:
    out = []
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if any("jit" in ast.unparse(d) or "vectorize" in ast.unparse(d) for d in n.decorator_list):
                out.append((n.lineno, n.end_lineno))
    return out


def _bare_value_errors(path: Path) -> list[int]:
    """Lines raising (or building, in an error factory) a bare ``ValueError`` outside compiled
    kernels, and lines raising a `UsageError` with no message (the CLI prints the message as the whole error line)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    compiled = _compiled_ranges(tree)
    lines = []
    for n in ast.walk(tree):
        if any(a <= getattr(n, "lineno", 0) <= b for a, b in compiled):
            continue
        if isinstance(n, ast.Raise) and n.exc is not None:
            exc = n.exc.func if isinstance(n.exc, ast.Call) else n.exc
            no_message = not isinstance(n.exc, ast.Call) or not (n.exc.args or n.exc.keywords)
            if isinstance(exc, ast.Name) and (exc.id == "ValueError" or (exc.id == "UsageError" and no_message)):
                lines.append(n.lineno)
        # an error factory (``return ValueError(...)``, raised by its caller) counts the same
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "ValueError":
            lines.append(n.lineno)
    return lines


@pytest.mark.timeout(60)
def test_library_code_raises_usage_error_not_bare_value_error():
    found = []
    for part in LIBRARY:
        for path in sorted((ROOT / part).rglob("*.py")):
            found += [f"{path.relative_to(ROOT)}:{ln}" for ln in _bare_value_errors(path)]
    assert not found, ("raise splitrl.errors.UsageError (a ValueError) for usage faults, not a bare ValueError: "
                       + ", ".join(found))


def test_the_check_sees_a_bare_value_error_and_a_silent_usage_error_and_exempts_a_numba_kernel(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import numba\n\ndef f(x):\n    if x < 0:\n        raise ValueError('x')\n\n"
                   "@numba.njit(cache=True)\ndef g(x):\n    if x < 0:\n        raise ValueError('x')\n    return x\n\n"
                   "def h(x):\n    raise UsageError\n\n"
                   "def fail(name):\n    return ValueError(name)\n")
    assert sorted(set(_bare_value_errors(src))) == [5, 14, 17]


def test_usage_error_is_still_a_value_error():
    from splitrl.errors import UsageError

    assert issubclass(UsageError, ValueError)
