"""A pass means pass on the layers people actually write: layers that reuse their output
buffer, a parameter named ``x``, forgotten gradient resets, params that hold copies, max
pooling that routes dy to every tied maximum; and the caller's arrays are never touched."""

from __future__ import annotations

import numpy as np
import pytest

from checks import GradientMismatchError, LayerContractError, check_layer, check_vjp
from property_tests.meta_tests._tiny_layers import Dense, ReusedBuffer, ScaleReLU


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


class Accumulates(Dense):
    """Adds into its gradient arrays and never resets them (a forgotten zero_grad)."""

    def backward(self, dy):
        du = dy * self.s * (1.0 - self.s)
        for k, g in (("W", du.T @ self.x), ("b", du.sum(axis=0))):
            if k in self.grads:
                self.grads[k] += g
            else:
                self.grads[k] = g.copy()
        return du @ self.params["W"]


def test_gradients_accumulated_across_calls_are_a_contract_error():
    """One backward cannot tell ``+=`` from ``=``: the layer passed. A second forward and
    backward with the same dy must give the same gradients."""
    rng = np.random.default_rng(3)
    layer = Accumulates(rng.standard_normal((4, 5)), rng.standard_normal(4))
    with pytest.raises(LayerContractError, match=r"gradient of W .*median ratio 2\b.*\+=") as ei:
        check_layer(layer, rng.standard_normal((3, 5)))
    assert "backward is not repeatable" in str(ei.value)


class ReadsACopy(Dense):
    """``params`` holds the arrays it was given; forward reads copies made at construction."""

    def __init__(self, W, b):
        super().__init__(W, b)
        self.W, self.b = W.copy(), b.copy()

    def forward(self, x):
        self.x = x
        self.s = 1.0 / (1.0 + np.exp(-(x @ self.W.T + self.b)))
        return self.s


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_params_that_forward_does_not_read_are_named(dtype):
    """The numerical gradient is exactly 0 while the analytic one is not: a bare mismatch
    before; now a contract error that says what happened."""
    rng = np.random.default_rng(4)
    layer = ReadsACopy(
        rng.standard_normal((4, 5)).astype(dtype), rng.standard_normal(4).astype(dtype)
    )
    with pytest.raises(LayerContractError, match=r"forward does not read params\['W'\]"):
        check_layer(layer, rng.standard_normal((3, 5)).astype(dtype))


class MaxPool2Routing:
    """2x2 max pooling, NCHW, with the gradient sent to the block's maxima by ``routing``:
    ``"first"`` (the first maximum, a valid subgradient), ``"split"`` (dy / k to each of k
    tied maxima, valid) or ``"all"`` (dy to every tied maximum: the textbook bug,
    ``mask = window == window.max(); dx = mask * dy``)."""

    def __init__(self, routing):
        self.params, self.grads, self.routing = {}, {}, routing

    def _blocks(self, x):
        n, c, h, w = x.shape
        return (
            x.reshape(n, c, h // 2, 2, w // 2, 2)
            .transpose(0, 1, 2, 4, 3, 5)
            .reshape(n, c, h // 2, w // 2, 4)
        )

    def forward(self, x):
        self.x = x
        return self._blocks(x).max(axis=-1)

    def backward(self, dy):
        flat = self._blocks(self.x)
        mask = (flat == flat.max(axis=-1, keepdims=True)).astype(float)
        if self.routing == "first":
            mask = np.zeros_like(mask)
            np.put_along_axis(mask, flat.argmax(axis=-1)[..., None], 1.0, axis=-1)
        elif self.routing == "split":
            mask /= mask.sum(axis=-1, keepdims=True)
        g = mask * dy[..., None]
        n, c, h, w = self.x.shape
        return g.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h, w)


def _after_relu(seed, dtype=np.float64):
    """A ReLU's output: about one 2x2 block in 16 is all zeros (four tied maxima)."""
    x = np.random.default_rng(seed).standard_normal((2, 3, 8, 8))
    return np.maximum(x, 0.0).astype(dtype)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_sending_dy_to_every_tied_maximum_fails(seed, dtype):
    """Each tied element alone: its analytic value dy lies between its one-sided slopes
    (0 and dy), so the bug passed by default. Moved together, the tied set changes the
    output at the rate of one element."""
    x = _after_relu(seed, dtype)
    for routing in ("first", "split"):
        check_layer(MaxPool2Routing(routing), x)
    with pytest.raises(GradientMismatchError, match="Tied kinks judged together failed") as ei:
        check_layer(MaxPool2Routing("all"), x)
    tied = ei.value.report.tensor("x").tied
    assert any(not d["ok"] and d["value"] == 0.0 and len(d["elements"]) >= 8 for d in tied)


def test_independent_kinks_of_equal_value_are_not_judged_together():
    """``relu(x w)`` at ``x = 0`` with weights of both signs: along ones on the zeros the
    output is smooth or kinked depending on dy, and no fixed ``relu'(0)`` matches it; the
    members add up (they do not compete), so they are judged one by one only."""
    x = np.array([[0.0, 0.0, 0.0, 1.0], [0.0, -0.5, 0.0, 0.0]])
    w = np.array([1.5, -0.7, 0.9, -1.2])
    for seed in range(5):
        rep = check_layer(ScaleReLU(w.copy()), x, seed=seed)
        assert rep.tensor("x").tied == []


@pytest.mark.parametrize("when", ["forward", "backward"])
def test_a_raise_on_the_second_pass_carries_a_report(when):
    """The determinism forward and the repeated backward raised without a report."""

    calls = {"forward": 0, "backward": 0}

    class SecondCallRaises(Dense):
        def forward(self, x):
            calls["forward"] += 1
            if when == "forward" and calls["forward"] == 2:
                raise RuntimeError("second forward")
            return super().forward(x)

        def backward(self, dy):
            calls["backward"] += 1
            if when == "backward" and calls["backward"] == 2:
                raise RuntimeError("second backward")
            return super().backward(dy)

    rng = np.random.default_rng(5)
    layer = SecondCallRaises(rng.standard_normal((4, 5)), rng.standard_normal(4))
    with pytest.raises(LayerContractError, match=f"second {when}") as ei:
        check_layer(layer, rng.standard_normal((3, 5)))
    assert ei.value.report is not None and not ei.value.report.ok
