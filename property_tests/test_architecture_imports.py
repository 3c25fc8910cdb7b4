"""The import rule of docs/ARCHITECTURE.md, enforced on the source.

Layers of ``checks``, lowest first: the report, the engine, the front doors, the derivation
audit, and the command line on top. A module imports from its own layer or below, never
above; nothing in ``checks`` imports itself in a circle; ``cnn_ref`` never imports ``checks``;
only the audit imports ``cnn_ref``; only the pytest plugin imports pytest and only the
strategies import Hypothesis. Every import counts: at module level, inside functions, and
under ``if TYPE_CHECKING:`` (a type-only import is still a dependency a reader follows).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (prefix, layer); the longest matching prefix wins
LAYERS = (
    ("checks.report", 0),
    ("checks.engine", 1),
    ("checks.doors", 2),
    ("checks.audit", 3),
    ("checks.doors.cli", 4),  # the command line runs the audit's commands
)
# modules at the top of the package: the public names and the import paths users write
# (checks, checks.errors, checks.adapters, checks.strategies, python -m checks)
TOP = 5
ONLY_IN = {
    "pytest": {"checks.doors.pytest_plugin"},
    "hypothesis": {"checks.doors.strategies"},
    "cnn_ref": {"checks.audit"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(package: str) -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((ROOT / package).rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module ``name`` imports (resolved to the deepest known module for ``checks``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.add(sub if sub in known else base)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules("checks")
    known = set(mods)
    return {m: _imports(m, p, known) for m, p in mods.items()}


def _layer(module: str) -> int:
    best = (-1, TOP)
    for prefix, layer in LAYERS:
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best[0]:
            best = (len(prefix), layer)
    return best[1]


def _checks_targets(targets: set[str]) -> set[str]:
    return {t for t in targets if t == "checks" or t.startswith("checks.")}


def test_every_module_imports_only_its_own_layer_or_below() -> None:
    bad = [
        f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
        for m, targets in _graph().items()
        for t in sorted(_checks_targets(targets))
        if _layer(t) > _layer(m)
    ]
    assert not bad, "imports against the layering of docs/ARCHITECTURE.md:\n" + "\n".join(bad)


def test_there_is_no_import_cycle() -> None:
    graph = {m: _checks_targets(t) & set(_modules("checks")) for m, t in _graph().items()}
    # a package's __init__ imports its modules; a module that imports the package's name
    # (``from checks.report import X``) instead of the module defining X closes a circle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_third_party_test_tools_and_cnn_ref_only_where_allowed() -> None:
    bad = []
    for m, targets in _graph().items():
        for lib, allowed in ONLY_IN.items():
            if any(t == lib or t.startswith(lib + ".") for t in targets) and not any(
                m == a or m.startswith(a + ".") for a in allowed
            ):
                bad.append(f"{m} imports {lib}")
    assert not bad, "\n".join(bad)


def test_cnn_ref_never_imports_checks() -> None:
    mods = _modules("cnn_ref")
    bad = [
        f"{m} imports {t}"
        for m, p in mods.items()
        for t in _imports(m, p, set(mods))
        if t == "checks" or t.startswith("checks.")
    ]
    assert not bad, "\n".join(bad)


def test_the_rule_sees_what_it_judges() -> None:
    """The parser finds the imports it must judge (a rule that sees nothing passes anything)."""
    graph = _graph()
    assert "checks.report.data" in graph["checks.report.messages"]
    assert "checks.engine.grouping" in graph["checks.engine.evaluation"]
    assert "checks.report.errors" in graph["checks.engine.contract"]
    assert "pytest" in graph["checks.doors.pytest_plugin"]
    assert _layer("checks.doors.cli") == 4 and _layer("checks.doors.api") == 2
    assert _layer("checks") == TOP and _layer("checks.report") == 0
    # a planted upward import and a planted cycle are caught
    graph["checks.report.hints"].add("checks.engine.runner")
    assert any(_layer(t) > _layer("checks.report.hints") for t in graph["checks.report.hints"])
