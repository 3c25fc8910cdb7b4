"""The gradcheck fixture with torch targets, run through pytester: an nn.Module goes through
checks.torch.check_module, gradcheck.function(fn, *tensors) through check_function, and
order=2 (a marker default too) checks the double backward; a numpy layer refuses order=2."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.torch
pytest.importorskip("torch")

TARGETS = """
import numpy as np
import pytest
import torch
import cnn_ref
from checks.audit.torch_functions import SmallCNN, SoftplusFn


def x():
    return torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))


def softplus(x):
    return SoftplusFn.apply(x)


def softplus_detached(x):
    return SoftplusFn.apply(x, "sigmoid_detached")


def t():
    return torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
"""


def test_fixture_checks_modules_and_functions_of_tensors(pytester) -> None:
    pytester.makepyfile(
        TARGETS
        + """

def test_module(gradcheck):
    report = gradcheck(SmallCNN(), x())
    assert [t.name for t in report.tensors][:2] == ["x", "conv.weight"]


def test_buggy_module(gradcheck):
    gradcheck(SmallCNN("dw_one_element").double(), x().double())


def test_assert_fails_on_a_module(gradcheck):
    gradcheck.assert_fails(SmallCNN("dw_one_element").double(), x().double(),
                           tensor="conv.weight", hint="a single element")


def test_function(gradcheck):
    assert [t.name for t in gradcheck.function(softplus, t()).tensors] == ["x"]


@pytest.mark.gradcheck(order=2)
def test_function_order_2(gradcheck):
    assert [t.name for t in gradcheck.function(softplus, t()).tensors] == ["x", "dy"]


@pytest.mark.gradcheck(order=2)
def test_detached_backward_order_2(gradcheck):
    gradcheck.function(softplus_detached, t())


@pytest.mark.gradcheck(order=2)
def test_numpy_layer_refuses_order_2(gradcheck):
    gradcheck(cnn_ref.Flatten(), np.ones((2, 3)))
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, failed=3)
    out = result.stdout.str()
    assert "conv.weight[2, 1, 0, 2]" in out
    assert "no autograd path back to it" in out
    assert "order=2 checks a double backward: torch and JAX targets only" in out
    # the failure points at the test's line, not at the plugin
    assert 'gradcheck(SmallCNN("dw_one_element").double(), x().double())' in out
    assert "pytest_plugin.py" not in out
