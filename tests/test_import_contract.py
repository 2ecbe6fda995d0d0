"""The import contract of the package: layers, no package cycles, no unexplained lazy imports.

Read from the source with `ast` (nothing is imported), so a violation is reported as the file,
line and rule it breaks. The layers, lowest first::

    base       errors, yamlio, resources, integrity, provenance, log, lock, stats, plotting, rollout ...
    runtime    quant, channel, link, models, runtime, cost, eval, dist, proc, deploy, tp, pipeline,
               aircomp, sweep, privacy (the processes and what they measure)
    decision   splitrl.decision (the split MDP's core), the quality surrogates (splitrl.surrogate)
    envs       splitrl.envs (envs/), splitrl.surrogate.env
    agents     splitrl.agents (agents/)
    training   splitrl.training, surrogate.report
    experiments  splitrl.experiments (the held-out comparison harnesses)
    app        splitrl.controller, splitrl.serve
    cli        splitrl.cli, splitrl.__main__, splitrl.demo

The root ``splitrl/__init__.py`` counts as an env module: importing the package registers the
Gymnasium environments.

A module may import its own layer or any lower one. Every import counts, module- and
function-level, and neither the graph of modules nor that of packages (``splitrl.<name>``) has a
cycle.
A project import inside a function needs a reason, written as a ``# lazy: <reason>`` comment on
the import or on the comment line(s) just above its block of imports (imports, blank lines and a
``try:`` between them and the comment are that block): an optional dependency, or
a light path (``--help``, a worker that must set its threads first) that must not import torch.
"""
from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Where each package's source lives (pyproject's package-dir): envs/ and agents/ sit at the top.
SOURCES = {"splitrl": ROOT / "splitrl", "splitrl.envs": ROOT / "envs", "splitrl.agents": ROOT / "agents"}

LAYERS = ["base", "runtime", "decision", "envs", "agents", "training", "experiments", "app", "cli"]
# Longest matching prefix wins; modules not listed are in "base".
LAYER_OF = {
    **{f"splitrl.{p}": "runtime" for p in (
        "quant", "channel", "link", "models", "runtime", "cost", "eval", "dist", "proc", "deploy", "tp",
        "pipeline", "aircomp", "sweep", "privacy", "network")},
    "splitrl.decision": "decision",
    "splitrl.surrogate": "decision",
    "splitrl.envs": "envs",
    "splitrl.surrogate.env": "envs",
    "splitrl.agents": "agents",
    "splitrl.training": "training",
    "splitrl.experiments": "experiments",
    "splitrl.surrogate.report": "training",
    "splitrl.controller": "app",
    "splitrl.serve": "app",
    "splitrl.cli": "cli",
    "splitrl.demo": "cli",  # `make demo`'s job: a command, printing with the CLI's helpers
    "splitrl.__main__": "cli",
}
LAZY = re.compile(r"#\s*lazy:\s*\S")
IMPORT_LINE = re.compile(r"\s*(from \S+ import|import \S)")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg, src in SOURCES.items():
        for path in sorted(src.rglob("*.py")):
            rel = path.relative_to(src).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([pkg, *parts])] = path
    return out


MODULES = _modules()


def layer_of(module: str) -> str:
    if module == "splitrl":  # the package's __init__ registers the Gymnasium envs on import
        return "envs"
    best = ""
    for prefix in LAYER_OF:
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    return LAYER_OF.get(best, "base")


def package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def _target(module: str, path: Path, node: ast.ImportFrom | ast.Import) -> list[str]:
    """Project modules ``node`` imports (``from pkg import submodule`` names the submodule)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            here = here[:len(here) - node.level + 1]
            base = ".".join(here + ([node.module] if node.module else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    out = []
    for name in names:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name:
            out.append(name)
    return out


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            ids.update(id(n) for b in node.body for n in ast.walk(b))
    return ids


def _lazy_ok(lines: list[str], node: ast.stmt) -> bool:
    if any(LAZY.search(lines[i]) for i in range(node.lineno - 1, node.end_lineno)):
        return True
    i = node.lineno - 2
    while i >= 0 and (IMPORT_LINE.match(lines[i]) or lines[i].strip() in ("", "try:")):  # its block of imports
        i -= 1
    while i >= 0 and lines[i].strip().startswith("#"):
        if LAZY.search(lines[i]):
            return True
        i -= 1
    return False


def _scan():
    """(edges: (importer, imported, where)), unexplained function-level imports."""
    edges, unexplained = [], []
    for module, path in MODULES.items():
        text = path.read_text()
        lines, tree = text.splitlines(), ast.parse(text)
        typing_only = _type_checking_nodes(tree)
        in_function = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                       for n in ast.walk(f) if n is not f}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in typing_only:
                continue
            targets = _target(module, path, node)
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            edges += [(module, t, where) for t in targets if t != module]
            if targets and id(node) in in_function and not _lazy_ok(lines, node):
                unexplained.append(f"{where}: {ast.unparse(node)}")
    return edges, unexplained


EDGES, UNEXPLAINED = _scan()


def test_the_scan_sees_the_whole_package():
    assert {"splitrl.decision.problem", "splitrl.envs.split_point", "splitrl.agents.baselines",
            "splitrl.training.trainer", "splitrl.cli.train"} <= set(MODULES)
    assert ("splitrl.envs.split_point", "splitrl.decision.problem") in {(a, b) for a, b, _ in EDGES}


def test_layers_only_import_downwards():
    rank = {name: i for i, name in enumerate(LAYERS)}
    bad = [f"{where}: {a} ({layer_of(a)}) imports {b} ({layer_of(b)})" for a, b, where in EDGES
           if rank[layer_of(a)] < rank[layer_of(b)]]
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_the_decision_core_imports_no_env_agent_training_or_controller():
    bad = [f"{where}: {b}" for a, b, where in EDGES if a.startswith("splitrl.decision")
           and layer_of(b) not in ("base", "runtime", "decision")]
    assert not bad


def test_no_package_cycles():
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b, _ in EDGES:
        if package_of(a) != package_of(b):
            graph[package_of(a)].add(package_of(b))
    cycles = _strongly_connected(graph)
    assert not cycles, f"package import cycles: {cycles}"


def test_no_module_cycles():
    """Not even through a function-level import: each module can be understood from below."""
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b, _ in EDGES:
        graph[a].add(b)
    assert not _strongly_connected(graph)


def test_function_level_project_imports_say_why():
    assert not UNEXPLAINED, ("project imports inside functions need a '# lazy: <reason>' comment "
                             "(or move them to the top of the module):\n" + "\n".join(UNEXPLAINED))


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm; the components with more than one node."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}}, []),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
])
def test_the_cycle_finder_finds_cycles(graph, expected):
    assert _strongly_connected(graph) == expected


def test_the_lazy_rule_reads_comments_on_the_line_or_above_the_block():
    src = ["def f():", "    # lazy: optional dependency", "    from splitrl.a import b", "    from splitrl.c import d",
           "def g():", "    from splitrl.a import b  # lazy: keeps --help light", "def h():", "    x = 1",
           "    from splitrl.a import b", "def k():", "    # lazy: optional dependency", "    import numpy",
           "", "    try:", "        from splitrl.e import f", "    except ImportError:", "        pass"]
    tree = ast.parse("\n".join(src))
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert [_lazy_ok(src, n) for n in sorted(imports, key=lambda n: n.lineno)] == [True, True, True, False, True]
