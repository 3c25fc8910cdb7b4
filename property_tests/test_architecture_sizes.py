"""Size limits: no function in checks/ or cnn_ref/ over 100 lines of code, no module over 800 lines.

A function's size counts the lines that hold code: docstrings, comments and blank lines aside,
nested functions included (they are part of the body a reader has to hold). A module's size is
its physical line count (``wc -l``).

The limits are fixed; what is over them today is listed in :data:`KNOWN_FUNCTIONS` and
:data:`KNOWN_MODULES`, each with its size when it was listed. An entry that no longer exceeds
its limit (or no longer exists) fails the test too, so the list only shrinks: remove the entry
when you split the function or module.
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("checks", "cnn_ref")
MAX_FUNCTION_LINES = 100
MAX_MODULE_LINES = 800

# Known exceptions (none today); do not add to these lists: split the function or module.
KNOWN_FUNCTIONS: dict[str, int] = {}
KNOWN_MODULES: dict[str, int] = {}

_NOT_CODE = {
    tokenize.COMMENT,
    tokenize.NL,
    tokenize.NEWLINE,
    tokenize.INDENT,
    tokenize.DEDENT,
    tokenize.ENDMARKER,
    tokenize.ENCODING,
}
_SCOPES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _code_lines(source: str, tree: ast.Module) -> set[int]:
    """The line numbers that hold code, docstrings excluded."""
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, _SCOPES) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                docstrings.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in _NOT_CODE:
            lines.update(n for n in range(tok.start[0], tok.end[0] + 1) if n not in docstrings)
    return lines


def _function_sizes(source: str, rel: str) -> dict[str, int]:
    """``"rel::qualname" -> lines of code`` for every function and method of a module."""
    tree = ast.parse(source)
    code = _code_lines(source, tree)
    sizes: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                end = child.end_lineno or child.lineno
                sizes[f"{rel}::{name}"] = sum(1 for n in code if child.lineno <= n <= end)
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return sizes


def _all_function_sizes() -> dict[str, int]:
    sizes: dict[str, int] = {}
    for path in _modules():
        rel = path.relative_to(ROOT).as_posix()
        sizes.update(_function_sizes(path.read_text(encoding="utf-8"), rel))
    return sizes


def _module_sizes() -> dict[str, int]:
    return {
        p.relative_to(ROOT).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
        for p in _modules()
    }


def test_no_function_is_over_the_limit() -> None:
    over = {
        name: n
        for name, n in _all_function_sizes().items()
        if n > MAX_FUNCTION_LINES and name not in KNOWN_FUNCTIONS
    }
    assert not over, (
        f"functions over {MAX_FUNCTION_LINES} lines of code (split them): "
        + ", ".join(f"{name} ({n})" for name, n in sorted(over.items()))
    )


def test_no_module_is_over_the_limit() -> None:
    over = {
        name: n
        for name, n in _module_sizes().items()
        if n > MAX_MODULE_LINES and name not in KNOWN_MODULES
    }
    assert not over, f"modules over {MAX_MODULE_LINES} lines (split them): " + ", ".join(
        f"{name} ({n})" for name, n in sorted(over.items())
    )


def test_every_known_exception_is_still_over_the_limit() -> None:
    functions, modules = _all_function_sizes(), _module_sizes()
    stale = [name for name in KNOWN_FUNCTIONS if functions.get(name, 0) <= MAX_FUNCTION_LINES] + [
        name for name in KNOWN_MODULES if modules.get(name, 0) <= MAX_MODULE_LINES
    ]
    assert not stale, f"no longer over the limit (or gone): remove from the known list: {stale}"


def test_the_counter_ignores_docstrings_comments_and_blank_lines() -> None:
    source = (
        "def f(x):\n"
        '    """A docstring\n\n    over three lines."""\n'
        "    # a comment\n"
        "\n"
        "    def g():\n"
        "        return (1,\n"
        "                2)\n"
        "    return g  # trailing comment\n"
        "class C:\n"
        "    def m(self):\n"
        "        pass\n"
    )
    assert _function_sizes(source, "m.py") == {"m.py::f": 5, "m.py::f.g": 3, "m.py::C.m": 2}
