"""Issue 3, point 7: contract and safety checks, each a LayerContractError saying what
happened; inputs and parameters restored also when the layer raises; no global RNG; fully
reproducible from the seed."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest

from checks import (
    GradcheckError,
    GradientMismatchError,
    LayerContractError,
    check_layer,
    check_vjp,
)
from property_tests.meta_tests._tiny_layers import Dense, ReLU, dense


def _x():
    return np.random.default_rng(0).standard_normal((3, 5))


class MutatesX(Dense):
    def forward(self, x):
        out = super().forward(x)
        x *= 1.0  # harmless value-wise...
        x[0, 0] += 1.0  # ...but this is not
        return out


class MutatesParam(Dense):
    def backward(self, dy):
        dx = super().backward(dy)
        self.params["W"] -= 0.1 * self.grads["W"]  # an optimiser step inside backward
        return dx


class MutatesDy(Dense):
    def backward(self, dy):
        dy *= 2.0
        return super().backward(dy / 2.0)


class Noisy(Dense):
    def __init__(self, *a):
        super().__init__(*a)
        self.rng = np.random.default_rng(0)

    def forward(self, x):
        return super().forward(x) + 1e-3 * self.rng.standard_normal((x.shape[0], 4))


class WrongShape(Dense):
    def backward(self, dy):
        dx = super().backward(dy)
        self.grads["b"] = self.grads["b"][None]  # (1, 4) instead of (4,)
        return dx


class IntGrad(Dense):
    def backward(self, dy):
        return super().backward(dy).astype(np.int64)


class NanForward(ReLU):
    def forward(self, x):
        y = super().forward(x)
        y[0, 0] = np.nan
        return y


class NanAnalytic(ReLU):
    def backward(self, dy):
        dx = super().backward(dy)
        dx[1, 2] = np.inf
        return dx


class SqrtAtZero:
    """sqrt(x): the numerical derivative at x = 0 needs sqrt of a negative number."""

    def __init__(self):
        self.params, self.grads = {}, {}

    def forward(self, x):
        self.x = x
        with np.errstate(invalid="ignore"):
            return np.sqrt(x)

    def backward(self, dy):
        return dy * 0.5 / np.sqrt(np.where(self.x == 0, 1.0, self.x))


class ShapeShifter(ReLU):
    def forward(self, x):
        y = super().forward(x)
        return y if x[0, 0] <= 0.5 else y[:, :-1]


class RaisesOnPerturbation(Dense):
    def forward(self, x):
        if self.params["W"][0, 0] != self.w00:
            raise RuntimeError("W changed")
        return super().forward(x)


@pytest.mark.parametrize(
    "cls, words",
    [
        (MutatesX, "mutated x"),
        (MutatesParam, "mutated W"),
        (MutatesDy, "mutated dy"),
        (Noisy, "not deterministic"),
        (WrongShape, r"shape \(1, 4\)"),
        (IntGrad, "dtype int64"),
    ],
)
def test_contract_breakers_are_named(cls, words):
    rng = np.random.default_rng(1)
    layer = cls(rng.standard_normal((4, 5)), rng.standard_normal(4))
    with pytest.raises(LayerContractError, match=words) as ei:
        check_layer(layer, _x())
    assert ei.value.report is not None and not ei.value.report.ok


def test_nan_in_forward_output_is_reported_with_where():
    with pytest.raises(LayerContractError, match=r"forward output has NaN/Inf at y\[0, 0\]"):
        check_layer(NanForward(), _x())


def test_nan_in_analytic_gradient_is_its_own_case():
    with pytest.raises(
        LayerContractError, match=r"analytic gradient has NaN/Inf at x\[1, 2\]"
    ) as ei:
        check_layer(NanAnalytic(), _x())
    assert ei.value.report.tensor("x").nonfinite["analytic"] == [(1, 2)]


def test_nan_in_numerical_gradient_is_its_own_case():
    x = np.array([[0.0, 1.0, 4.0]])
    with pytest.raises(
        LayerContractError, match=r"numerical gradient is NaN/Inf at x\[0, 0\]"
    ) as ei:
        check_layer(SqrtAtZero(), x, dy=np.ones((1, 3)))
    assert ei.value.report.tensor("x").nonfinite["numerical"] == [(0, 0)]
    assert "NaN/Inf in the numerical gradient" in str(ei.value)


def test_output_shape_change_under_perturbation():
    x = np.full((2, 3), 0.5)
    with pytest.raises(LayerContractError, match="output shape changed under perturbation"):
        check_layer(ShapeShifter(), x)


def test_a_raising_layer_is_wrapped_with_context_and_params_are_restored():
    rng = np.random.default_rng(2)
    W = rng.standard_normal((4, 5))
    layer = RaisesOnPerturbation(W, rng.standard_normal(4))
    layer.w00 = W[0, 0]
    W_before = W.copy()
    with pytest.raises(LayerContractError, match=r"RaisesOnPerturbation.forward .*W") as ei:
        check_layer(layer, _x(), method="central")
    assert isinstance(ei.value.__cause__, RuntimeError)
    assert layer.params["W"] is W and np.array_equal(W, W_before)
    assert isinstance(ei.value, AssertionError) and isinstance(ei.value, GradcheckError)


def test_x_is_never_modified_and_global_rng_is_untouched():
    x = _x()
    x_before = x.copy()
    np.random.seed(123)  # noqa: NPY002 -- the legacy global state is what must stay untouched
    state = np.random.get_state()[1].copy()  # noqa: NPY002
    check_layer(dense(np.random.default_rng(3)), x)
    assert np.array_equal(x, x_before)
    assert np.array_equal(np.random.get_state()[1], state)  # noqa: NPY002


def test_fully_reproducible_from_seed():
    def run(seed):
        d = json.loads(check_layer(dense(np.random.default_rng(4)), _x(), seed=seed).to_json())
        d.pop("elapsed")
        return d

    assert run(7) == run(7)


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        ({"method": "forward"}, ValueError, "method must be one of"),
        ({"seed": 1.5}, TypeError, "seed must be an int"),
        ({"rtol": -1.0}, ValueError, "rtol must be finite and >= 0"),
        ({"dy": np.ones((2, 2))}, ValueError, r"dy has shape \(2, 2\)"),
    ],
)
def test_bad_arguments_name_the_argument_and_value(kwargs, exc, words):
    with pytest.raises(exc, match=words):
        check_layer(dense(np.random.default_rng(5)), _x(), **kwargs)


def test_integer_x_is_rejected_not_cast():
    with pytest.raises(TypeError, match="x must have a real floating dtype, got int64"):
        check_layer(ReLU(), np.arange(6).reshape(2, 3))


# --- bad input that used to reach internal errors ---------------------------------------------


def test_a_read_only_parameter_is_named_before_anything_runs():
    layer = dense(np.random.default_rng(5))
    layer.params["W"].flags.writeable = False
    with pytest.raises(ValueError, match=r"layer.params\['W'\] is read-only \(flags.writeable"):
        check_layer(layer, _x())


def test_read_only_inputs_work_since_the_checker_perturbs_copies():
    x = _x()
    x.flags.writeable = False
    assert check_layer(dense(np.random.default_rng(5)), x).ok
    assert check_vjp(
        lambda a, b: np.sin(a) * b, lambda dy, a, b: (dy * np.cos(a) * b, dy * np.sin(a)), x, x
    ).ok
    assert not x.flags.writeable


def _sin_vjp(dy, *args):
    return tuple(dy * np.cos(a) for a in args)


@pytest.mark.parametrize("shape", [(0, 5), (3, 0), (0,)])
def test_a_zero_size_input_is_named_with_its_shape(shape):
    empty = np.zeros(shape)
    with pytest.raises(ValueError, match=rf"x has zero size \(shape {re.escape(str(shape))}\)"):
        check_layer(ReLU(), empty)
    with pytest.raises(
        ValueError, match=rf"inputs\[0\] has zero size \(shape {re.escape(str(shape))}"
    ):
        check_vjp(np.sin, _sin_vjp, empty)
    with pytest.raises(ValueError, match=r"inputs\[1\] has zero size"):
        check_vjp(lambda a, b: np.sin(a) + b.sum(), _sin_vjp, np.ones(3), empty)


class _EmptyParam(Dense):
    """A Dense with an extra zero-size parameter (a configuration with nothing in it)."""

    def __init__(self, W, b):
        super().__init__(W, b)
        self.params["e"] = np.zeros((0, 3))

    def backward(self, dy):
        dx = super().backward(dy)
        self.grads["e"] = np.zeros((0, 3))
        return dx


def test_a_zero_size_parameter_is_skipped_and_said_so():
    """It has no element to check; the rest of the layer still is (its gradient's shape is
    still checked), quietly: no RuntimeWarning, no 'complex step unusable' for it."""
    rng = np.random.default_rng(6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rep = check_layer(_EmptyParam(rng.standard_normal((4, 5)), rng.standard_normal(4)), _x())
    e = rep.tensor("e")
    assert rep.ok and e.n_total == 0 and e.n_checked == 0
    assert "zero-size" in e.tolerance_rule and "unusable" not in e.tolerance_rule
    assert rep.method == "complex"  # the empty tensor does not make the run 'mixed'
    with warnings.catch_warnings():  # an empty output: phi = 0, so dx must be 0, quietly
        warnings.simplefilter("error")
        assert check_layer(dense(rng, n_out=0), _x()).ok


def test_a_negative_seed_is_named():
    with pytest.raises(ValueError, match="seed must be >= 0, got -1"):
        check_layer(dense(np.random.default_rng(5)), _x(), seed=-1)


@pytest.mark.parametrize("tol", [np.float32(1e-3), np.float64(1e-3), np.int64(1), 1])
def test_numpy_scalar_tolerances_are_accepted_as_floats(tol):
    rep = check_layer(dense(np.random.default_rng(5)), _x(), rtol=tol, atol=tol)
    assert all(type(t.rtol) is float and type(t.atol) is float for t in rep.tensors)
    rep = check_vjp(np.sin, _sin_vjp, _x(), rtol=tol)
    assert type(rep.tensors[0].rtol) is float


@pytest.mark.parametrize(
    "tol, exc, words",
    [
        (True, TypeError, "rtol must be a float or None, got True"),
        (np.True_, TypeError, "rtol must be a float or None, got np.True_"),
        ("1e-3", TypeError, "rtol must be a float or None, got '1e-3'"),
        (float("nan"), ValueError, "rtol must be finite and >= 0, got nan"),
        (np.float32("nan"), ValueError, "rtol must be finite and >= 0, got np.float32(nan)"),
        (-1e-3, ValueError, "rtol must be finite and >= 0, got -0.001"),
        (np.float32(-1), ValueError, r"rtol must be finite and >= 0, got np.float32(-1.0)"),
    ],
)
def test_bad_tolerances_are_still_rejected(tol, exc, words):
    with pytest.raises(exc, match=re.escape(words)):
        check_layer(dense(np.random.default_rng(5)), _x(), rtol=tol)


class _Square:
    """y = w x^2 summed to a scalar, on a 0-d x; backward returns numpy/Python scalars."""

    def __init__(self, kind):
        self.params, self.grads, self.kind = {"w": np.array(1.5)}, {}, kind

    def forward(self, x):
        self.x = x
        return float(self.params["w"] * x**2)  # a scalar output: accepted as a 0-d array

    def backward(self, dy):
        w, x = self.params["w"], self.x
        dx, dw = 2.0 * w * x * dy, x**2 * dy
        if self.kind == "numpy scalar":
            dx, dw = np.float64(dx), np.float64(dw)
        elif self.kind == "python float":
            dx, dw = float(dx), float(dw)
        else:  # arithmetic on 0-d arrays gives numpy scalars: make them 0-d arrays again
            dx, dw = np.asarray(dx), np.asarray(dw)
        self.grads["w"] = dw
        return dx


@pytest.mark.parametrize("kind", ["numpy scalar", "python float", "0-d array"])
def test_scalar_gradients_of_0d_tensors_are_accepted_as_forward_outputs_are(kind):
    rep = check_layer(_Square(kind), np.array(0.7))
    assert rep.ok and rep.tensor("x").n_checked == 1 and rep.tensor("w").n_checked == 1
    rep = check_vjp(lambda a: a**3, lambda dy, a: (float(3 * a**2 * dy),), np.array(0.7))
    assert rep.ok


def test_scalar_gradients_are_still_judged_and_never_broadcast():
    with pytest.raises(GradientMismatchError):
        check_vjp(lambda a: a**3, lambda dy, a: (np.float64(3.01 * a**2 * dy),), np.array(0.7))
    with pytest.raises(LayerContractError, match="returned a float64 for the gradient of inputs"):
        check_vjp(lambda a: a**3, lambda dy, a: (np.float64(3 * a[0] ** 2 * dy[0]),), np.ones(1))
    with pytest.raises(LayerContractError, match=r"gradient of inputs\[0\] has dtype bool"):
        check_vjp(lambda a: a**3, lambda dy, a: (np.True_,), np.array(0.7))


# --- a layer that raises anywhere is a contract error -----------------------------------------


class _RaisesOnCall(Dense):
    """Correct, but forward raises on exactly its ``k``-th call (backward: on its first)."""

    def __init__(self, W, b, k, in_backward=False):
        super().__init__(W, b)
        self.k, self.calls, self.in_backward = k, 0, in_backward

    def forward(self, x):
        self.calls += 1
        if self.calls == self.k and not self.in_backward:
            raise RuntimeError(f"call {self.k}")
        return super().forward(x)

    def backward(self, dy):
        if self.in_backward:
            raise RuntimeError("in backward")
        return super().backward(dy)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("k", range(3, 21))
def test_a_forward_that_raises_on_any_one_call_is_a_contract_error(k, dtype):
    """Calls 3-20 hold the probes: sample independence (x', the doubled batch, x with one
    sample swapped), the complex step (complex x and complex parameters), the float64
    precision probe (float32), and the first numerical evaluations. A probe must not take a
    RuntimeError for 'this probe does not apply' and carry on without it."""
    rng = np.random.default_rng(7)
    W, b = (rng.standard_normal(s).astype(dtype) for s in ((4, 5), (4,)))
    layer = _RaisesOnCall(W, b, k)
    with pytest.raises(
        LayerContractError, match=rf"_RaisesOnCall.forward .*raised RuntimeError: call {k}"
    ) as ei:
        check_layer(layer, _x().astype(dtype))
    assert layer.calls >= k and ei.value.report is not None
    assert any(f"call {k}" in p for p in ei.value.report.problems)
    assert isinstance(ei.value.__cause__, RuntimeError)


class _RefusesPerturbedX(Dense):
    """Raises ValueError on any real x of x's shape other than the one it was built for."""

    def __init__(self, W, b, x0):
        super().__init__(W, b)
        self.x0 = x0

    def forward(self, x):
        if np.isrealobj(x) and x.shape == self.x0.shape and not np.array_equal(x, self.x0):
            raise ValueError("only x0")
        return super().forward(x)


def test_a_refusal_on_an_ordinary_input_is_still_a_contract_error():
    """TypeError, ValueError ... make the checker fall back only on its own unusual inputs
    (complex values, float64 copies, a doubled batch); the independence probe's x' is an
    ordinary input of x's shape and dtype."""
    rng = np.random.default_rng(7)
    layer = _RefusesPerturbedX(rng.standard_normal((4, 5)), rng.standard_normal(4), _x())
    with pytest.raises(
        LayerContractError, match=r"forward in the independence probe raised ValueError: only x0"
    ):
        check_layer(layer, _x())


def test_a_backward_that_raises_is_a_contract_error():
    rng = np.random.default_rng(7)
    layer = _RaisesOnCall(rng.standard_normal((4, 5)), rng.standard_normal(4), 0, True)
    with pytest.raises(LayerContractError, match=r"_RaisesOnCall\.backward raised RuntimeError"):
        check_layer(layer, _x())


@pytest.mark.parametrize("packed", [True, False])
def test_a_function_that_raises_on_any_one_call_is_a_contract_error(packed):
    """As above for check_vjp: inputs sharing the batch size are packed (the independence
    probe, packed complex copies); a broadcast second input (another size along the batch
    axis) is perturbed one at a time while x alone is packed."""
    x = _x()
    b = x + 1.0 if packed else x[0] + 1.0
    calls = []

    def f(a, b, k=0):
        calls.append(1)
        if len(calls) == k:
            raise RuntimeError(f"call {k}")
        return np.sin(a) * b

    def vjp(dy, a, b):
        db = dy * np.sin(a)
        return dy * np.cos(a) * b, db if packed else db.sum(axis=0)

    check_vjp(f, vjp, x, b)
    n_calls = len(calls)
    assert n_calls >= (14 if packed else 18)
    for k in range(3, min(n_calls, 20) + 1):
        calls.clear()
        with pytest.raises(LayerContractError, match=rf"raised RuntimeError: call {k}"):
            check_vjp(lambda a, b, k=k: f(a, b, k), vjp, x, b)
