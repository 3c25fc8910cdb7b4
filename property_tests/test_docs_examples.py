"""The README's examples run and print (or raise) what the README shows."""

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


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


@pytest.mark.torch
def test_readme_torch_example_raises_the_documented_message() -> None:
    """The PyTorch example fails with the message the README shows: every word and index as
    shown, every number to 6 significant digits (its last digits are rounding)."""
    pytest.importorskip("torch")
    namespace: dict = {"__name__": "readme"}
    with pytest.raises(GradientMismatchError) as ei:
        exec(compile(_block("python", 2), str(README), "exec"), namespace)
    fresh, shown = str(ei.value).strip(), _block("text", 1).strip()
    assert _NUMBER.split(fresh) == _NUMBER.split(shown)
    for a, b in zip(_NUMBER.findall(fresh), _NUMBER.findall(shown), strict=True):
        assert float(a) == pytest.approx(float(b), rel=1e-6), (a, b)


@pytest.mark.torch
def test_readme_torch_example_is_passed_by_gradcheck_and_caught_without_its_bug() -> None:
    """What the README says around it: gradcheck passes the buggy Function in both modes, and
    the same Function without the planted line passes our check."""
    torch = pytest.importorskip("torch")
    source = _block("python", 2)
    namespace: dict = {"__name__": "readme"}
    exec(compile(source.replace("checks.torch.check_function(conv, x, w)", ""), "readme", "exec"),
         namespace)  # fmt: skip
    conv, x, w = namespace["conv"], namespace["x"], namespace["w"]
    assert torch.autograd.gradcheck(conv, (x, w), raise_exception=False)
    assert torch.autograd.gradcheck(conv, (x, w), fast_mode=True, raise_exception=False)
    fixed = source.replace("gx[0, 1, 2, 3] *= 1.001", "pass")
    assert fixed != source
    exec(compile(fixed, "readme", "exec"), {"__name__": "readme"})  # no error
