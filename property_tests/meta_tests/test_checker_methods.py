"""Issue 3, point 1: central, Richardson and complex step; auto picks the complex step when a
probe shows the layer propagates complex numbers, and falls back silently when it does not."""

from __future__ import annotations

import numpy as np
import pytest

from checks import GradientMismatchError, check_layer, check_vjp
from checks.engine import finite_diff as fd
from property_tests.meta_tests._tiny_layers import Dense, Planted, conv, dense


def _phi_diffs(f, t, h, stencil):
    vals, taken = fd.perturbed_values(np.array([t]), np.array([h]), stencil)
    r = np.array([[f(v[0]) - f(t)] for v in vals])
    return r, taken


def test_richardson_is_more_accurate_than_central_and_its_estimate_bounds_the_error():
    f, df, t = np.exp, np.exp, 0.7
    h = 1e-2  # a large step so truncation dominates and the comparison is meaningful
    r, taken = _phi_diffs(f, t, h, fd.REAL_STENCIL)
    z = np.zeros((2, 1))
    cen = fd.combine_real(r, taken, z, z, method="central")
    ric = fd.combine_real(r, taken, z, z, method="richardson")
    err_c = abs(cen.value[0] - df(t))
    err_r = abs(ric.value[0] - df(t))
    assert err_r < err_c / 100
    # central reports |D(h) - D(2h)| = 3x its smooth truncation (a margin for kinks):
    assert err_c <= cen.error[0]  # the estimate bounds the error...
    assert err_c >= cen.error[0] / 6  # ...and is not vacuous
    assert err_r <= ric.error[0]


def test_complex_step_is_exact_to_rounding():
    t, h = 0.3, 1e-20
    v = np.sin(np.complex128(t + 1j * h)).imag / h
    res = fd.combine_complex(np.array([v * h]), np.array([abs(v) * h]), np.array([h]), 2.2e-16)
    assert abs(res.value[0] - np.cos(t)) <= 4e-16


def test_one_sided_slopes_see_both_sides_of_a_kink():
    r, taken = _phi_diffs(abs, 0.0, 1e-6, fd.REAL_STENCIL)
    z = np.zeros((2, 1))
    res = fd.combine_real(r, taken, z, z, method="central")
    assert res.left[0] == pytest.approx(-1.0)
    assert res.right[0] == pytest.approx(1.0)


def test_auto_uses_the_complex_step_on_an_analytic_layer():
    rng = np.random.default_rng(0)
    rep = check_layer(dense(rng), rng.standard_normal((3, 5)))
    assert rep.method == "complex"
    assert all(t.method == "complex" for t in rep.tensors)


@pytest.mark.parametrize("method", ["central", "richardson", "complex"])
def test_every_method_passes_a_correct_layer(method):
    rng = np.random.default_rng(1)
    rep = check_layer(conv(rng), rng.standard_normal((2, 2, 5, 6)), method=method)
    assert rep.ok
    assert rep.method == method


class _AbsLayer:
    """y = |x| * w: abs breaks complex propagation (returns the modulus)."""

    def __init__(self, w):
        self.params, self.grads = {"w": w}, {}

    def forward(self, x):
        self.x = x
        return np.abs(x) * self.params["w"]

    def backward(self, dy):
        self.grads["w"] = (dy * np.abs(self.x)).sum(axis=0)
        return dy * np.sign(self.x) * self.params["w"]


class _CastLayer(Dense):
    """Casts its input to float64 (a ComplexWarning under the complex step)."""

    def forward(self, x):
        return super().forward(np.asarray(x, dtype=np.float64))


class _RealOnly(Dense):
    """Refuses complex values in x or a parameter with a TypeError (a dtype guard)."""

    def forward(self, x):
        if any(np.iscomplexobj(a) for a in (x, *self.params.values())):
            raise TypeError("real inputs only")
        return super().forward(x)


class _AttributeLayer(Dense):
    """Reads W from an attribute bound at construction, not from params at every call."""

    def __init__(self, W, b):
        super().__init__(W, b)
        self.W = W

    def forward(self, x):
        self.x = x
        u = x @ self.W.T + self.params["b"]
        self.s = 1.0 / (1.0 + np.exp(-u))
        return self.s


@pytest.mark.parametrize(
    "make",
    [
        lambda r: _AbsLayer(r.standard_normal(4)),
        lambda r: _CastLayer(r.standard_normal((3, 4)), r.standard_normal(3)),
        lambda r: _AttributeLayer(r.standard_normal((3, 4)), r.standard_normal(3)),
        lambda r: _RealOnly(r.standard_normal((3, 4)), r.standard_normal(3)),
    ],
    ids=["abs", "cast-to-real", "params-from-attribute", "refuses-complex"],
)
def test_auto_falls_back_silently_when_complex_numbers_do_not_propagate(make):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4))
    x[np.abs(x) < 0.1] = 0.5  # keep abs away from its kink: this test is about the method
    rep = check_layer(make(rng), x)
    assert rep.ok
    assert any(t.method == "richardson" for t in rep.tensors)
    if isinstance(make(rng), _RealOnly):  # the refusal is the layer's answer to complex input
        assert all("complex step unusable (TypeError)" in t.tolerance_rule for t in rep.tensors)


def test_fallback_still_catches_a_planted_error():
    rng = np.random.default_rng(3)
    inner = _AttributeLayer(rng.standard_normal((3, 4)), rng.standard_normal(3))
    with pytest.raises(GradientMismatchError) as ei:
        check_layer(Planted(inner, "W", (1, 2), 1e-5), rng.standard_normal((3, 4)))
    assert ei.value.report.tensor("W").mismatch[1, 2]


def test_check_vjp_on_plain_functions():
    x = np.linspace(-1, 2, 7)
    y = np.linspace(0.5, 1.5, 7)
    rep = check_vjp(
        lambda a, b: np.sin(a) * b, lambda dy, a, b: (dy * np.cos(a) * b, dy * np.sin(a)), x, y
    )
    assert [t.name for t in rep.tensors] == ["inputs[0]", "inputs[1]"]
    with pytest.raises(GradientMismatchError):
        check_vjp(lambda a: a**3, lambda dy, a: (dy * 3 * a**2 * (1 + 1e-6),), x)


def test_check_vjp_scalar_output_and_integer_inputs():
    x = np.linspace(-1, 1, 6).reshape(2, 3)
    rep = check_vjp(lambda a: np.sum(a**2), lambda dy, a: (2 * dy * a,), x)
    assert rep.ok
    idx = np.array([0, 2, 2, 4])
    rep = check_vjp(
        lambda a, i: a[i] * 2.0,
        lambda dy, a, i: (np.bincount(i, weights=2 * dy, minlength=a.size), None),
        np.linspace(0, 1, 5),
        idx,
    )
    assert [t.name for t in rep.tensors] == ["inputs[0]"]  # the integer index is not checked


@pytest.mark.parametrize("method", ["auto", "central", "richardson", "complex"])
def test_a_0d_input_is_checked_and_a_wrong_gradient_for_it_caught(method):
    """check_vjp on a scalar input crashed while storing its one element (found in review)."""

    def f(a, b):
        return np.maximum(a * b, 0)

    def vjp(dy, a, b, scale=1.0):
        m = a * b > 0
        return np.asarray(scale * np.sum(dy * b * m)), dy * a * m

    a, b = np.array(1.5), np.array([1.0, -2.0, 3.0])
    rep = check_vjp(f, vjp, a, b, method=method)
    assert rep.tensor("inputs[0]").n_checked == 1
    with pytest.raises(GradientMismatchError):
        check_vjp(f, lambda dy, a, b: vjp(dy, a, b, 1.01), a, b, method=method)
