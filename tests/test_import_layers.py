"""Import contract of the runtime-side packages (AST only, nothing is imported).

* The runtime-side packages (link, channel, models, runtime, quant, cost, eval, deploy, tp, pipeline,
  aircomp, dist) sit below `splitrl.decision` and the environments: no import of envs, agents,
  decision, training, controller, control, serve or cli from them, at module level or inside a function.
* In these packages, `envs/` and the top-level helper modules, a project import inside a function
  carries a ``# lazy: <reason>`` comment, on its line or on a comment line right above the block of
  imports it starts.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("splitrl", "agents", "envs")
RUNTIME = ("link", "channel", "models", "runtime", "quant", "cost", "eval", "deploy", "tp", "pipeline", "aircomp",
           "dist")
ABOVE = ("envs", "agents", "splitrl.envs", "splitrl.agents", "splitrl.decision", "splitrl.training",
         "splitrl.controller", "splitrl.control", "splitrl.serve", "splitrl.cli")
HELPERS = ("demo", "network", "proc", "yamlio", "stats", "rollout", "plotting", "log", "lock", "integrity",
           "resources", "provenance", "compat", "errors", "__init__", "__main__")


def _files(*parts: str) -> list[Path]:
    base = ROOT.joinpath(*parts)
    return sorted(base.rglob("*.py")) if base.is_dir() else ([base] if base.exists() else [])


RUNTIME_FILES = [p for pkg in RUNTIME for p in _files("splitrl", pkg)]
LAZY_FILES = ([p for p in RUNTIME_FILES if p.relative_to(ROOT).as_posix() != "splitrl/pipeline/simulator.py"]
              + _files("envs") + [p for h in HELPERS for p in _files("splitrl", f"{h}.py")])


def _targets(node: ast.Import | ast.ImportFrom, path: Path) -> list[str]:
    """Absolute module names ``node`` imports (relative imports resolved against ``path``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        pkg = list(path.relative_to(ROOT).with_suffix("").parts)[:-1]  # a module's package (__init__: itself)
        mod = ".".join(pkg[:len(pkg) - node.level + 1] + ([node.module] if node.module else []))
    else:
        mod = node.module or ""
    return [mod] + [f"{mod}.{a.name}" for a in node.names]  # `from splitrl import cli` imports splitrl.cli


def _in_function(tree: ast.AST) -> list[tuple[list[ast.stmt], ast.Import | ast.ImportFrom]]:
    """(sibling statements, import) for every import statement inside a function."""
    out = []
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                for field in ("body", "orelse", "finalbody", "handlers"):
                    stmts = getattr(node, field, None)
                    if isinstance(stmts, list):
                        out += [(stmts, s) for s in stmts if isinstance(s, (ast.Import, ast.ImportFrom))]
    return list({id(imp): (sib, imp) for sib, imp in out}.values())


def _project(name: str) -> bool:
    return name.split(".")[0] in PROJECT


def _marked_lazy(lines: list[str], siblings: list[ast.stmt], imp: ast.stmt) -> bool:
    if "# lazy:" in lines[imp.lineno - 1]:
        return True
    i = siblings.index(imp)
    first = imp
    while i > 0 and isinstance(siblings[i - 1], (ast.Import, ast.ImportFrom)) \
            and siblings[i - 1].end_lineno == first.lineno - 1:
        i -= 1
        first = siblings[i]
    above = lines[first.lineno - 2].strip() if first.lineno >= 2 else ""
    return above.startswith("#") and "# lazy:" in above and above.split("# lazy:", 1)[1].strip() != ""


def test_the_scope_is_found():
    assert len(RUNTIME_FILES) > 40 and len(LAZY_FILES) > 50


@pytest.mark.parametrize("path", RUNTIME_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_runtime_side_imports_nothing_above_it(path: Path):
    tree = ast.parse(path.read_text())
    bad = [f"line {n.lineno}: {t}" for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
           for t in _targets(n, path) if t in ABOVE or t.startswith(tuple(f"{a}." for a in ABOVE))]
    assert not bad, f"{path.relative_to(ROOT)} imports an upper layer: {bad}"


@pytest.mark.parametrize("path", LAZY_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_function_level_project_imports_say_why(path: Path):
    text = path.read_text()
    lines = text.splitlines()
    bad = [f"line {imp.lineno}: {lines[imp.lineno - 1].strip()}" for sib, imp in _in_function(ast.parse(text))
           if any(_project(t) for t in _targets(imp, path)) and not _marked_lazy(lines, sib, imp)]
    assert not bad, f"{path.relative_to(ROOT)}: function-level project imports without '# lazy: <reason>': {bad}"


def test_the_lazy_marker_rule():
    src = ("def f():\n    # lazy: optional dependency\n    import splitrl.a\n    from splitrl import b\n\n"
           "    from splitrl import c\n\n"
           "def g():\n    from splitrl import d  # lazy: light path\n    x = 1\n    # lazy: stale\n    y = 2\n"
           "    from splitrl import e\n")
    lines = src.splitlines()
    marked = {imp.lineno: _marked_lazy(lines, sib, imp) for sib, imp in _in_function(ast.parse(src))}
    assert marked == {3: True, 4: True, 6: False, 9: True, 13: False}
