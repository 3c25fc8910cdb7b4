"""The README's own-layer example runs and prints what the README shows."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from checks import GradientMismatchError

README = Path(__file__).resolve().parents[1] / "README.md"


def _block(kind: str, index: int) -> str:
    return re.findall(rf"```{kind}\n(.*?)```", README.read_text(), flags=re.DOTALL)[index]


def test_readme_own_layer_example_passes_and_prints_the_documented_report() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(_block("python", 0), str(README), "exec"), {"__name__": "readme"})
    printed = out.getvalue().splitlines()
    shown = _block("text", 0).splitlines()
    # everything but the elapsed time must match what the README shows
    strip_time = re.compile(r"[0-9.e-]+ s\)")
    assert [strip_time.sub("", line) for line in printed] == [
        strip_time.sub("", line) for line in shown
    ]


def test_readme_own_layer_example_catches_a_planted_bug() -> None:
    source = _block("python", 0).replace(
        "(dy * self.x).sum(axis=(0, 2, 3))", "(dy * self.x).mean(axis=(0, 2, 3))"
    )
    assert "mean(axis" in source
    with pytest.raises(GradientMismatchError, match=r"tensor w"):
        exec(compile(source, str(README), "exec"), {"__name__": "readme", "print": lambda *_: None})


def test_readme_pytest_example_runs_through_the_fixture() -> None:
    from checks.doors.pytest_plugin import GradChecker

    namespace: dict = {"__name__": "readme"}
    source = _block("python", 1)
    assert "def test_my_conv(gradcheck)" in source
    exec(compile(source, str(README), "exec"), namespace)
    namespace["test_my_conv"](GradChecker({}, "readme::test_my_conv"))
