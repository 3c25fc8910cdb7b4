"""docs/jax.md: every python block runs, in order in one namespace, and prints the text block
shown under it (times aside; numbers to 6 significant digits, as another JAX release may
round the last digit of a derivative differently)."""

from __future__ import annotations

import contextlib
import io
import math
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.jax
pytest.importorskip("jax")

DOC = Path(__file__).resolve().parents[1] / "docs" / "jax.md"
_ELAPSED = re.compile(r"[0-9.e-]+ s\)")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?")


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def _same(printed: str, shown: str) -> bool:
    a, b = _ELAPSED.sub("", printed), _ELAPSED.sub("", shown)
    if _NUMBER.sub("#", a) != _NUMBER.sub("#", b):
        return False
    return all(
        math.isclose(float(x), float(y), rel_tol=1e-6, abs_tol=0.0)
        for x, y in zip(_NUMBER.findall(a), _NUMBER.findall(b), strict=True)
    )


def test_every_example_prints_what_the_page_shows() -> None:
    code, shown = _blocks("python"), _blocks("text")
    assert len(code) == len(shown) == 3
    namespace: dict = {"__name__": "jax_doc"}
    for source, text in zip(code, shown, strict=True):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(source, str(DOC), "exec"), namespace)
        printed = out.getvalue().rstrip("\n").splitlines()
        expected = text.rstrip("\n").splitlines()
        assert len(printed) == len(expected), (printed, expected)
        for p, e in zip(printed, expected, strict=True):
            assert _same(p, e), (p, e)


def test_the_comparison_can_fail() -> None:
    line = "  x[1, 2]       0.252091075       1.05190897       0.8      0.76   1.1e-07"
    assert _same(line, line)
    assert not _same(line, line.replace("0.252091075", "0.252095075"))
    assert not _same(line, line.replace("x[1, 2]", "x[1, 3]"))
