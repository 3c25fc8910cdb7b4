"""Issue 3, point 2: tolerances come from the estimated error of each numerical value, a table
keyed by dtype, never scaled by array size; explicit rtol/atol override."""

from __future__ import annotations

import numpy as np
import pytest

from checks import GradientMismatchError, check_layer
from checks.engine.tolerances import DTYPE_TABLE, rule_for
from property_tests.meta_tests._tiny_layers import Planted, ScaleReLU, conv, dense, typical_index


def _grads(layer, x, dy):
    dx = layer.forward(x) is not None and layer.backward(dy)
    return {"x": dx, **{k: v.copy() for k, v in layer.grads.items()}}


@pytest.mark.parametrize("tensor", ["x", "W", "b"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_float64_analytic_layer_one_element_off_by_1e6_relative_is_caught(tensor, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, 5))
    dy = rng.standard_normal((4, 4))
    g = _grads(dense(np.random.default_rng(seed)), x, dy)[tensor]
    idx = typical_index(g, rng)
    layer = Planted(dense(np.random.default_rng(seed)), tensor, idx, 1e-6)
    with pytest.raises(GradientMismatchError) as ei:
        check_layer(layer, x, dy=dy)
    tr = ei.value.report.tensor(tensor)
    assert tr.n_mismatched == 1 and tr.worst_index == idx


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kink_layer_one_element_off_by_1e4_is_caught(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((6, 5))
    dy = rng.standard_normal((6, 5))
    w = rng.standard_normal(5)
    g = _grads(ScaleReLU(w.copy()), x, dy)["x"]
    idx = typical_index(g, rng)
    with pytest.raises(GradientMismatchError) as ei:
        check_layer(Planted(ScaleReLU(w.copy()), "x", idx, 1e-4), x, dy=dy)
    assert ei.value.report.tensor("x").mismatch[idx]


def test_explicit_rtol_atol_override_the_estimate():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 5))
    layer = Planted(dense(np.random.default_rng(4)), "W", (0, 0), 1e-6)
    rep = check_layer(layer, x, rtol=1e-3, atol=1e-8)
    assert rep.ok
    assert all(t.tolerance_rule.startswith("explicit") for t in rep.tensors)
    assert rep.tensors[0].rtol == 1e-3 and rep.tensors[0].atol == 1e-8


def test_table_is_keyed_by_dtype_and_float32_is_looser():
    assert set(DTYPE_TABLE) >= {np.dtype(np.float64), np.dtype(np.float32)}
    assert rule_for(np.float32).eps > rule_for(np.float64).eps
    assert rule_for(np.float64, np.float32) is rule_for(np.float32)
    with pytest.raises(TypeError, match="complex"):
        rule_for(np.complex128)


def test_an_element_tolerance_does_not_grow_with_the_array():
    """tanh is elementwise: element 0's derivative and its tolerance do not depend on how many
    other elements there are."""
    from checks import check_vjp

    def vjp(dy, x):
        return (dy / np.cosh(x) ** 2,)

    tols = []
    for n in (8, 800):
        x = np.linspace(-1, 1, n)
        x[0] = 0.3
        dy = np.ones(n)
        dy[1:] = 0.5
        rep = check_vjp(np.tanh, vjp, x, dy=dy, coverage="full")
        tols.append(rep.tensors[0].tol[0])
    assert tols[0] == pytest.approx(tols[1], rel=1e-6)


def test_inputs_of_magnitude_1e3_pass():
    rng = np.random.default_rng(5)
    layer = conv(rng)
    layer.params["K"] *= 1e3
    check_layer(layer, 1e3 * rng.standard_normal((2, 2, 6, 6)))
