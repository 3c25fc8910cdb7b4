"""Issue 3, point 6: float32 layers. With ``precision="auto"`` the finite differences of a
float32 layer are computed in float64 when a probe shows its forward follows float64 copies
of every tensor; the analytic side keeps float32's tolerance. The probe must refuse layers
that would make float64 differences wrong (internal casts, cached parameters, dtype checks),
and those fall back to float32 differences (``precision="native"``, tested in
test_checker_float32.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import cnn_ref
from checks import GradientMismatchError, check_layer, check_vjp
from property_tests.meta_tests._tiny_layers import Planted, conv, typical_index


class _Dense32:
    """y = relu(x W^T), float32 parameters; ``variant`` plants a precision trap."""

    def __init__(self, variant: str, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.params = {"W": (rng.standard_normal((6, 8)) / 3).astype(np.float32)}
        self.grads: dict[str, np.ndarray] = {}
        self.variant = variant
        self._W = self.params["W"]  # the "cached" variant reads this, not params

    def _w(self) -> np.ndarray:
        return self._W if self.variant == "cached" else self.params["W"]

    def forward(self, x: np.ndarray) -> np.ndarray:
        if self.variant == "strict" and x.dtype != np.float32:
            raise TypeError(f"expected float32 input, got {x.dtype}")
        w = self._w()
        if self.variant == "downcast":  # computes in float32 whatever it is given
            x, w = x.astype(np.float32), w.astype(np.float32)
        self.x = x
        u = x @ w.T
        self.mask = u > 0
        y = u * self.mask
        if self.variant == "float32_out":
            y = y.astype(np.float32)
        elif self.variant == "downcast":
            y = y.astype(np.float64)  # float64 out, float32 inside
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        du = (dy * self.mask).astype(np.float32)
        self.grads["W"] = (du.T @ self.x.astype(np.float32)).astype(np.float32)
        return (du @ self._w().astype(np.float32)).astype(np.float32)


def _x(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((5, 8)).astype(np.float32)


def test_a_float32_layer_that_follows_float64_copies_is_differenced_in_float64():
    rep = check_layer(_Dense32("plain"), _x())
    assert rep.precision.startswith("float64")
    assert all(t.dtype == "float32" for t in rep.tensors)  # the caller's dtypes, not float64
    assert "numerical side evaluated in float64" in rep.tensors[0].tolerance_rule
    assert json.loads(rep.to_json())["precision"] == rep.precision


@pytest.mark.parametrize(
    ("variant", "why"),
    [
        ("strict", "forward failed on float64 copies"),
        ("float32_out", "returned float32"),
        ("cached", "did not follow a float64 W"),
        ("downcast", "computes part of x's effect in its own dtype"),
    ],
)
def test_the_probe_refuses_layers_that_float64_differences_would_misjudge(variant, why):
    layer = _Dense32(variant)
    rep = check_layer(layer, _x())  # a correct layer: passes in its own precision
    assert rep.precision.startswith("native float32") and why in rep.precision
    assert layer.params["W"].dtype == np.float32


def test_a_cached_parameter_would_be_a_false_alarm_if_promoted():
    """Why the probe perturbs each tensor: differencing float64 copies that forward never
    reads gives a zero gradient for W."""
    layer = _Dense32("cached")
    rep = check_layer(layer, _x(), precision="native")
    assert rep.ok and rep.tensor("W").numerical.any()


def test_the_layer_gets_its_own_arrays_back_after_a_promoted_check_also_when_it_fails():
    layer = conv(np.random.default_rng(2), 3, 4, 3, dtype=np.float32)
    before = dict(layer.params)
    x = np.random.default_rng(3).standard_normal((2, 3, 6, 6)).astype(np.float32)
    check_layer(layer, x)
    assert all(layer.params[k] is before[k] for k in before)
    bad = Planted(layer, "K", (0, 0, 1, 1), 0.05)
    with pytest.raises(GradientMismatchError) as ei:
        check_layer(bad, x)
    assert ei.value.report.precision.startswith("float64")
    assert all(layer.params[k] is before[k] and v.dtype == np.float32 for k, v in before.items())


@pytest.mark.parametrize("tensor", ["x", "K", "b"])
def test_a_one_percent_error_is_caught_under_promotion(tensor):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    dy = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    ref = conv(np.random.default_rng(2), 3, 4, 3, dtype=np.float32)
    dx = ref.forward(x) is not None and ref.backward(dy)
    idx = typical_index(dx if tensor == "x" else ref.grads[tensor], rng)
    layer = Planted(conv(np.random.default_rng(2), 3, 4, 3, dtype=np.float32), tensor, idx, 0.01)
    with pytest.raises(GradientMismatchError) as ei:
        check_layer(layer, x, dy=dy)
    assert ei.value.report.precision.startswith("float64")
    assert ei.value.report.tensor(tensor).mismatch[idx]


def test_a_large_float32_relu_conv_that_float32_differences_cannot_resolve():
    """x (8, 8, 32, 32), K (16, 8, 3, 3): a bias element moves 7200 ReLU outputs, so even the
    h/64 stencil of float32 differences holds a kink while the rounding is already ~1 % of
    the derivative. Natively, seeds 0, 3 and 6 of 0-9 failed (b[11] by 4 %, one projection
    each of x and K); differenced in float64 the step is 1e-3 of float32's."""
    rng = np.random.default_rng(0)
    layer = cnn_ref.Conv2D(8, 16, 3, activation="relu", seed=0, dtype=np.float32)
    x = rng.standard_normal((8, 8, 32, 32)).astype(np.float32)
    with pytest.raises(GradientMismatchError):
        check_layer(layer, x, seed=0, precision="native")
    rep = check_layer(layer, x, seed=0)
    assert rep.ok and rep.precision.startswith("float64")


def test_check_vjp_promotes_float32_inputs_too():
    def f(a, b):
        return np.maximum(a * b, 0)

    def vjp(dy, a, b):
        m = (a * b > 0).astype(a.dtype)
        return (dy * m * b).astype(a.dtype), (dy * m * a).astype(b.dtype)

    rng = np.random.default_rng(4)
    a, b = (rng.standard_normal((3, 4)).astype(np.float32) for _ in range(2))
    rep = check_vjp(f, vjp, a, b)
    assert rep.precision.startswith("float64")
    assert [t.dtype for t in rep.tensors] == ["float32", "float32"]


def test_float64_layers_are_native_and_precision_is_validated():
    layer = conv(np.random.default_rng(0), 2, 2, 3)
    x = np.random.default_rng(1).standard_normal((1, 2, 5, 5))
    assert check_layer(layer, x).precision == "native float64"
    rep = check_layer(layer, x, precision="native")
    assert "precision='native'" in rep.reproduce
    with pytest.raises(ValueError, match="precision must be one of"):
        check_layer(layer, x, precision="float64")


class _PartialCast:
    """Correct: ``y = x W + float32(x)^2 b``; the squared term is computed in float32 whatever
    the input (a float32 scratch buffer). Promoted, its float32 steps looked like a 3-17 %
    error in dx at float64's step (found in review)."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.params = {
            "W": rng.standard_normal(6).astype(np.float32),
            "b": rng.standard_normal(6).astype(np.float32),
        }
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        sq = np.zeros(x.shape, np.float32)
        sq[:] = x.astype(np.float32) ** 2
        return x * self.params["W"] + sq * self.params["b"]

    def backward(self, dy: np.ndarray) -> np.ndarray:
        x, w, b = self.x, self.params["W"], self.params["b"]
        self.grads["W"] = (dy * x).sum(axis=0)
        self.grads["b"] = (dy * x.astype(np.float32) ** 2).sum(axis=0)
        return dy * w + dy * 2 * x.astype(np.float32) * b


@pytest.mark.parametrize("seed", range(4))
def test_a_layer_computing_part_of_its_output_in_float32_is_not_promoted(seed):
    x = np.random.default_rng(100 + seed).standard_normal((4, 6)).astype(np.float32)
    rep = check_layer(_PartialCast(seed), x, seed=seed)
    assert rep.precision.startswith("native float32") and "in its own dtype" in rep.precision


class _MaxNorm:
    """Forward rescales W in place when its norm exceeds 1 (a contract breach); W's norm is
    within float32 rounding below 1, so even float64-sized steps trigger it (promoted, the
    breach hit the float64 copies and went unseen until the copies were compared too)."""

    def __init__(self) -> None:
        w = np.random.default_rng(0).standard_normal((3, 4))
        w = (w / np.sqrt((w**2).sum())).astype(np.float32)
        while np.sqrt((w.astype(np.float64) ** 2).sum()) > 1.0:
            w = (w * np.float32(0.9999999)).astype(np.float32)
        self.params = {"W": w}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        w = self.params["W"]
        n = np.sqrt((w.astype(np.float64) ** 2).sum())
        if n > 1.0:
            w *= 1.0 / n
        self.x = x
        return x @ w.T

    def backward(self, dy: np.ndarray) -> np.ndarray:
        self.grads["W"] = dy.T @ self.x
        return dy @ self.params["W"]


@pytest.mark.parametrize("precision", ["auto", "native"])
def test_a_layer_mutating_its_float64_copies_breaks_the_contract(precision):
    from checks import LayerContractError

    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    with pytest.raises(LayerContractError, match="mutated W during the numerical"):
        check_layer(_MaxNorm(), x, precision=precision)


def test_a_refused_promotion_leaves_the_run_identical_to_native():
    """The probe draws from its own generator: same samples, directions and verdicts."""
    x = np.random.default_rng(2).standard_normal((4, 6)).astype(np.float32)
    auto = check_layer(_PartialCast(0), x, seed=3, coverage="sampled")
    native = check_layer(_PartialCast(0), x, seed=3, coverage="sampled", precision="native")
    for a, n in zip(auto.tensors, native.tensors, strict=True):
        np.testing.assert_array_equal(a.checked, n.checked)
        np.testing.assert_array_equal(a.numerical, n.numerical)


class _Sigmoid:
    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.s = 1.0 / (1.0 + np.exp(-x))
        return self.s

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy * self.s * (1 - self.s)


@pytest.mark.parametrize("method", ["auto", "richardson", "central"])
def test_a_float32_layer_saturated_at_every_element_passes_when_promoted(method):
    """float32's 1 - sigmoid(20) is exactly 0 where float64's derivative is ~2e-9: the
    promoted tolerance carries float32's resolution of the forward values backward reuses
    (a false alarm under auto before, found in review)."""
    x = (20 + np.random.default_rng(0).random((3, 4))).astype(np.float32)
    rep = check_layer(_Sigmoid(), x, method=method)
    assert rep.precision.startswith("float64")


def test_the_resolution_term_does_not_hide_a_one_percent_error_in_a_float32_sigmoid():
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    layer = Planted(_Sigmoid(), "x", (1, 2), 0.01)
    with pytest.raises(GradientMismatchError) as ei:
        check_layer(layer, x, method="richardson")
    assert ei.value.report.precision.startswith("float64")
    assert ei.value.report.tensor("x").mismatch[1, 2]


def test_messages_say_in_which_precision_the_differences_were_taken():
    x = _x()
    assert "finite differences in float64" in str(check_layer(_Dense32("plain"), x))
    assert "finite differences in native float32" in str(
        check_layer(_Dense32("plain"), x, precision="native")
    )
    with pytest.raises(GradientMismatchError, match="finite differences in float64"):
        check_layer(Planted(_Dense32("plain"), "W", (1, 2), 0.05), x)


class _Residual:
    """Correct: ``y = x + 0.1 tanh(x W / 100 + b)``, float32, inputs of size 1e3."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.params = {
            "W": rng.standard_normal((5, 5)).astype(np.float32),
            "b": rng.standard_normal(5).astype(np.float32),
        }
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        self.t = np.tanh(x @ self.params["W"] / np.float32(100) + self.params["b"])
        return x + np.float32(0.1) * self.t

    def backward(self, dy: np.ndarray) -> np.ndarray:
        g = np.float32(0.1) * dy * (1 - self.t * self.t)
        self.grads["W"] = self.x.T @ g / np.float32(100)
        self.grads["b"] = g.sum(axis=0)
        return dy + g @ self.params["W"].T / np.float32(100)


@pytest.mark.parametrize("coverage", ["full", "projected"])
def test_promoted_projections_carry_the_forward_resolution_too(coverage):
    """Real-step projections of a promoted run lacked the forward-resolution term: this
    correct layer failed a projection (3.27e-5 against 3.33e-5, tolerance 5.4e-7; second
    review)."""
    rng = np.random.default_rng(105)
    layer = _Residual(rng)
    x = (rng.standard_normal((6, 5)) * 1000).astype(np.float32)
    rep = check_layer(layer, x, seed=5, coverage=coverage, method="richardson")
    assert rep.precision.startswith("float64")


class _Recast:
    """Correct, but forward rebinds ``params["W"]`` to a copy of itself; the checker restored
    the values of the array it had perturbed, not the binding, so the perturbed copy stayed
    (under auto: a false alarm on x in 10/10 seeds; second review)."""

    def __init__(self, w: np.ndarray) -> None:
        self.params = {"W": w}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.params["W"] = self.params["W"].astype(np.float32)
        self.x = x
        return np.tanh(x @ self.params["W"])

    def backward(self, dy: np.ndarray) -> np.ndarray:
        t = np.tanh(self.x @ self.params["W"])
        g = dy * (1 - t * t)
        self.grads["W"] = self.x.T @ g
        return g @ self.params["W"].T


@pytest.mark.parametrize("precision", ["auto", "native"])
@pytest.mark.parametrize("seed", range(3))
def test_a_forward_that_rebinds_a_parameter_entry_is_checked_at_the_right_values(precision, seed):
    w = np.random.default_rng(seed).standard_normal((4, 3)).astype(np.float32)
    x = np.random.default_rng(50 + seed).standard_normal((5, 4)).astype(np.float32)
    check_layer(_Recast(w), x, precision=precision, seed=seed)
