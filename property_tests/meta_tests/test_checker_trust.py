"""A pass means pass on the layers people actually write: layers that reuse their output
buffer, a parameter named ``x``, forgotten gradient resets, params that hold copies, max
pooling that routes dy to every tied maximum; and the caller's arrays are never touched."""

from __future__ import annotations

import numpy as np
import pytest

from checks import GradientMismatchError, LayerContractError, check_layer, check_vjp
from property_tests.meta_tests._tiny_layers import Dense, ReusedBuffer


def _reused(dtype, bug):
    rng = np.random.default_rng(0)
    W = rng.standard_normal((4, 5)).astype(dtype)
    layer = ReusedBuffer(W, rng.standard_normal(4).astype(dtype), bug)
    return layer, rng.standard_normal((3, 5)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("coverage", ["auto", "projected"])
def test_a_layer_returning_one_buffer_from_every_call_is_judged_right(dtype, coverage):
    """The checker kept the returned array as its baseline (and views of it per stencil
    point): every later call overwrote them, so a float32 layer with dW sign-flipped, zeroed
    or x 1.5 passed by default, and in float64 ``coverage="projected"`` passed them too."""
    layer, x = _reused(dtype, None)
    check_layer(layer, x, coverage=coverage)
    for bug in ("flip", "zero", "scale"):
        layer, x = _reused(dtype, bug)
        with pytest.raises(GradientMismatchError) as ei:
            check_layer(layer, x, coverage=coverage)
        assert [t.name for t in ei.value.report.tensors if not t.ok] == ["W"]


class ScaleByX:
    """``y = in * params["x"]``: a parameter that happens to be called ``x``."""

    def __init__(self, w, bug=False):
        self.params = {"x": w}
        self.grads = {}
        self.bug = bug

    def forward(self, inp):
        self.inp = inp
        return inp * self.params["x"]

    def backward(self, dy):
        self.grads["x"] = (dy * self.inp).sum(axis=0) * (2.0 if self.bug else 1.0)
        return dy * self.params["x"]


def test_a_parameter_named_x_is_not_confused_with_the_input():
    """Input and parameter were both reported as "x": the parameter's gradient replaced dx,
    so a correct layer failed and a broken one could pass."""
    rng = np.random.default_rng(1)
    w, inp = rng.standard_normal(3) + 2.0, rng.standard_normal((4, 3))
    rep = check_layer(ScaleByX(w), inp)
    assert [t.name for t in rep.tensors] == ["x", "params['x']"]
    assert rep.tensor("params['x']").n_checked == 3
    with pytest.raises(GradientMismatchError) as ei:
        check_layer(ScaleByX(w, bug=True), inp)
    assert [t.name for t in ei.value.report.tensors if not t.ok] == ["params['x']"]
    assert "params['x']" in str(ei.value)


class MutatesXEachCall(Dense):
    def forward(self, x):
        out = super().forward(x)
        x[0, 0] += 1.0
        return out


class MutatesDy(Dense):
    def backward(self, dy):
        dx = super().backward(dy)
        dy[...] = 0.0
        return dx


def test_the_callers_x_and_dy_are_never_touched():
    """The contract error was raised, but the caller's x or dy stayed modified."""
    rng = np.random.default_rng(2)
    W, b = rng.standard_normal((4, 5)), rng.standard_normal(4)
    x = rng.standard_normal((3, 5))
    dy = rng.standard_normal((3, 4))
    x0, dy0 = x.copy(), dy.copy()
    with pytest.raises(LayerContractError, match="mutated x"):
        check_layer(MutatesXEachCall(W.copy(), b.copy()), x)
    with pytest.raises(LayerContractError, match="mutated dy"):
        check_layer(MutatesDy(W.copy(), b.copy()), x, dy=dy)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(dy, dy0)

    def f(a, w):
        out = np.tanh(a @ w)
        a[0, 0] = 7.0  # mutates its input
        return out

    def vjp(g, a, w):
        u = 1.0 - np.tanh(a @ w) ** 2
        g *= 2.0  # and its cotangent
        return (g * u / 2.0) @ w.T, a.T @ (g * u / 2.0)

    a, w = rng.standard_normal((3, 5)), rng.standard_normal((5, 2))
    a0, w0 = a.copy(), w.copy()
    dy2 = rng.standard_normal((3, 2))
    dy20 = dy2.copy()
    with pytest.raises(LayerContractError, match="mutated"):
        check_vjp(f, vjp, a, w, dy=dy2)
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(w, w0)
    np.testing.assert_array_equal(dy2, dy20)
