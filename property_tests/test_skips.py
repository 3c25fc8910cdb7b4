"""Tests that need PyTorch skip cleanly without it: no "Failing explicit example" with whole
arrays in the output (a Hypothesis test that skips from inside prints every explicit example
first)."""

from __future__ import annotations

from pathlib import Path

CONFTEST = (Path(__file__).resolve().parent / "conftest.py").read_text()


def test_torch_marked_hypothesis_tests_skip_quietly_without_torch(pytester) -> None:
    fake = pytester.mkdir("hidden")
    (fake / "torch").mkdir()
    (fake / "torch" / "__init__.py").write_text(
        'raise ModuleNotFoundError("No module named torch", name="torch")\n'
    )
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        test_oracle="""
import numpy as np
import pytest
from hypothesis import example, given, strategies as st

@pytest.mark.torch
@given(n=st.integers(1, 3))
@example(n=2)
def test_needs_torch(n):
    torch = pytest.importorskip("torch")
    assert torch.ones(n).sum() == n
"""
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-rs", "-p", "no:randomly",
        "--rootdir", str(pytester.path), f"--override-ini=pythonpath={fake}",
    )  # fmt: skip
    result.assert_outcomes(skipped=1)
    out = result.stdout.str()
    assert "Failing explicit example" not in out
    assert "needs PyTorch" in out
