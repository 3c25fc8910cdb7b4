"""checks.adapters: cs231n function pairs and foreign class layers (numpy-ml-style NHWC with
lazy parameters and ``+=`` gradients, global-RNG dropout, ML-From-Scratch-style layers that
update their weights inside backward) go through check_layer; a float32 layer behind the
adapter is differenced in float64 when its parameters can be replaced (``set_params``); bugs
planted in them are still caught, and misuse of the adapters is reported clearly."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from checks import check_layer
from checks.adapters import LayerAdapter, from_functions
from checks.report.errors import GradientMismatchError, LayerContractError
from property_tests._foreign_layers import (
    Dense,
    Dropout,
    NHWCConv2D,
    StochasticGradientDescent,
    affine_backward,
    affine_backward_mean_bias,
    affine_forward,
    conv_backward_naive,
    conv_forward_naive,
    relu_backward,
    relu_forward,
)

RNG = np.random.default_rng(1234)


def _x(shape: tuple[int, ...]) -> np.ndarray:
    return RNG.standard_normal(shape)


# --- from_functions ------------------------------------------------------------------------
def test_cs231n_conv_pair_with_conf_passes_and_maps_grads_to_names() -> None:
    w, b = _x((3, 2, 3, 3)), _x((3,))
    layer = from_functions(
        conv_forward_naive, conv_backward_naive, {"w": w, "b": b}, conf={"stride": 2, "pad": 1}
    )
    report = check_layer(layer, _x((2, 2, 5, 6)), coverage="full")
    assert report.ok
    assert [t.name for t in report.tensors] == ["x", "w", "b"]
    assert set(layer.grads) == {"w", "b"}
    assert layer.grads["w"].shape == w.shape


def test_cs231n_affine_pair_without_conf_passes() -> None:
    layer = from_functions(affine_forward, affine_backward, {"w": _x((12, 4)), "b": _x((4,))})
    assert check_layer(layer, _x((3, 3, 2, 2))).ok


def test_cs231n_pair_without_params_returns_bare_dx() -> None:
    layer = from_functions(relu_forward, relu_backward, {})
    x = _x((4, 5)) + np.sign(_x((4, 5))) * 0.1  # keep away from the kink
    assert check_layer(layer, x).ok


def test_planted_batch_mean_bias_bug_is_caught_with_its_factor() -> None:
    layer = from_functions(
        affine_forward, affine_backward_mean_bias, {"w": _x((6, 3)), "b": _x((3,))}
    )
    with pytest.raises(GradientMismatchError) as info:
        check_layer(layer, _x((5, 6)))
    failing = [t.name for t in info.value.report.tensors if not t.ok]
    assert failing == ["b"]
    assert "1/5" in str(info.value)
    # the failure names the wrapped forward function, not the adapter class
    assert str(info.value).startswith("Gradient check failed: affine_forward, tensor b")
    assert info.value.report.reproduce.startswith("check_layer(affine_forward, ")


def test_backward_returning_the_wrong_number_of_arrays_is_named() -> None:
    layer = from_functions(
        affine_forward,
        lambda dout, cache: affine_backward(dout, cache)[:2],
        {"w": _x((6, 3)), "b": _x((3,))},
    )
    layer.forward(_x((2, 6)))
    with pytest.raises(ValueError, match=r"\(dx, dw, db\).*got 2"):
        layer.backward(_x((2, 3)))


def test_forward_not_returning_out_and_cache_is_named() -> None:
    layer = from_functions(lambda x, w: x @ w, affine_backward, {"w": _x((3, 2))})
    with pytest.raises(TypeError, match=r"must return \(out, cache\)"):
        layer.forward(_x((2, 3)))


def test_params_must_be_arrays() -> None:
    with pytest.raises(TypeError, match=r"params\['w'\] must be a numpy array, got list"):
        from_functions(affine_forward, affine_backward, {"w": [[1.0]]})


# --- LayerAdapter on a numpy-ml-style NHWC layer --------------------------------------------
def _nhwc_adapter(layer: NHWCConv2D, x: np.ndarray, **kwargs: Any) -> LayerAdapter:
    # the whole adapter: six keywords (this is the example in docs/front_door.md)
    return LayerAdapter(
        layer,
        layout="NHWC",
        example_input=x,  # NCHW; builds W and b, which the layer creates on its first forward
        params=lambda l: {
            "K": l.parameters["W"].transpose(3, 2, 0, 1),  # (kh, kw, in, out) -> (out, in, kh, kw)
            "b": l.parameters["b"].reshape(-1),
        },
        grads=lambda l: {
            "K": l.gradients["W"].transpose(3, 2, 0, 1),
            "b": l.gradients["b"].reshape(-1),
        },
        reset=lambda l: l.X.clear(),  # the layer appends every input to l.X
        accumulates=True,  # ... and adds into l.gradients with +=
        **kwargs,
    )


def test_nhwc_lazy_accumulating_layer_passes_through_the_adapter() -> None:
    x = _x((2, 3, 6, 7))  # NCHW on the checker's side
    layer = _nhwc_adapter(NHWCConv2D(out_ch=4, kernel_shape=(3, 2), stride=2, pad=1), x)
    report = check_layer(layer, x, coverage="full")
    assert report.ok
    assert {t.name: t.shape for t in report.tensors} == {
        "x": (2, 3, 6, 7),
        "K": (4, 3, 3, 2),
        "b": (4,),
    }


def test_planted_flipped_kernel_gradient_in_an_nhwc_layer_gets_the_rot180_hint() -> None:
    x = _x((2, 2, 5, 5))
    layer = _nhwc_adapter(NHWCConv2D(out_ch=3, kernel_shape=(3, 3), flip_dW=True), x)
    with pytest.raises(GradientMismatchError, match=r"rot180") as info:
        check_layer(layer, x)
    assert [t.name for t in info.value.report.tensors if not t.ok] == ["K"]
    assert info.value.report.layer_name == "NHWCConv2D"  # what LayerAdapter wraps


def test_accumulates_zeroes_the_gradients_before_each_backward() -> None:
    x = _x((1, 2, 4, 4))
    adapter = _nhwc_adapter(NHWCConv2D(out_ch=2, kernel_shape=(2, 2)), x)
    dy = _x(adapter.forward(x).shape)
    adapter.backward(dy)
    first = adapter.grads["K"].copy()
    adapter.forward(x)
    adapter.backward(dy)
    np.testing.assert_array_equal(adapter.grads["K"], first)

    raw = LayerAdapter(  # the same layer without accumulates: the trap it avoids
        NHWCConv2D(out_ch=2, kernel_shape=(2, 2)),
        layout="NHWC",
        example_input=x,
        params=lambda l: {"W": l.parameters["W"], "b": l.parameters["b"]},
        grads=lambda l: {"W": l.gradients["W"], "b": l.gradients["b"]},
        reset=lambda l: l.X.clear(),
    )
    raw.forward(x)
    raw.backward(dy)
    once = raw.grads["W"].copy()
    raw.forward(x)
    raw.backward(dy)
    np.testing.assert_allclose(raw.grads["W"], 2 * once)


def test_params_views_write_through_to_the_layer() -> None:
    x = _x((1, 2, 4, 4))
    inner = NHWCConv2D(out_ch=3, kernel_shape=(2, 2))
    adapter = _nhwc_adapter(inner, x)
    adapter.params["K"][2, 1, 0, 1] += 1.0
    assert inner.parameters["W"][0, 1, 1, 2] == adapter.params["K"][2, 1, 0, 1]


def test_a_params_hook_that_copies_is_rejected() -> None:
    x = _x((1, 2, 4, 4))
    with pytest.raises(ValueError, match=r"params hook returned a copy for 'K'"):
        LayerAdapter(
            NHWCConv2D(out_ch=2, kernel_shape=(2, 2)),
            layout="NHWC",
            example_input=x,
            params=lambda l: {"K": np.ascontiguousarray(l.parameters["W"].transpose(3, 2, 0, 1))},
        )


def test_lazy_parameters_without_example_input_are_reported() -> None:
    with pytest.raises(TypeError, match=r"params\(layer\)\['W'\] must be a numpy array"):
        LayerAdapter(
            NHWCConv2D(out_ch=2, kernel_shape=(2, 2)),
            layout="NHWC",
            params=lambda l: l.parameters,
        )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"layout": "CHWN"}, ValueError, "layout must be one of"),
        ({"forward": "fprop"}, TypeError, "has no method 'fprop'"),
        ({"seed": 1.5}, TypeError, "seed must be an int"),
    ],
)
def test_adapter_options_are_validated(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        LayerAdapter(Dropout(), **kwargs)


# --- LayerAdapter on a global-RNG dropout layer ---------------------------------------------
def test_dropout_without_a_seed_breaks_the_determinism_contract() -> None:
    with pytest.raises(LayerContractError, match=r"determin"):
        check_layer(Dropout(0.3), _x((3, 8)))


def test_dropout_with_a_fixed_seed_passes_and_leaves_the_global_rng_alone() -> None:
    np.random.seed(99)  # noqa: NPY002 -- checking that the adapter restores this state
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    report = check_layer(LayerAdapter(Dropout(0.3), seed=0), _x((3, 8)))
    assert report.ok
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # noqa: NPY002


def test_dropout_that_forgets_the_inverted_scale_is_caught_with_the_factor() -> None:
    layer = LayerAdapter(Dropout(0.5, forget_scale=True), seed=0)
    with pytest.raises(GradientMismatchError, match=r"0\.5 \(= 1/2\)"):
        check_layer(layer, _x((4, 6)))


# --- LayerAdapter: a float32 layer differenced in float64 (set_params) ----------------------
def _set_nhwc(layer: NHWCConv2D, name: str, a: np.ndarray) -> None:
    # a has the params view's shape: undo the hook's transpose / reshape (views of a)
    if name == "K":
        layer.parameters["W"] = a.transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)
    else:
        layer.parameters["b"] = a.reshape(1, 1, 1, -1)


def _nhwc32(x: np.ndarray, **kwargs: Any) -> tuple[NHWCConv2D, LayerAdapter]:
    inner = NHWCConv2D(out_ch=4, kernel_shape=(3, 2), pad=1, dtype=np.float32)
    return inner, _nhwc_adapter(inner, x, **kwargs)


def test_a_float32_nhwc_layer_with_set_params_is_differenced_in_float64() -> None:
    x = _x((2, 3, 5, 6)).astype(np.float32)
    inner, layer = _nhwc32(x, set_params=_set_nhwc)
    W, b = inner.parameters["W"], inner.parameters["b"]
    before = W.copy()
    report = check_layer(layer, x, coverage="full")
    assert report.ok
    assert report.precision.startswith("float64"), report.precision
    # the layer is back on its own float32 memory, with its own values
    for now, orig in ((inner.parameters["W"], W), (inner.parameters["b"], b)):
        assert now.dtype == np.float32 and now.shape == orig.shape
        assert np.shares_memory(now, orig)
    np.testing.assert_array_equal(inner.parameters["W"], before)
    assert layer.params["K"].dtype == np.float32


def test_a_float32_nhwc_layer_without_set_params_stays_native_and_says_why() -> None:
    x = _x((2, 3, 5, 6)).astype(np.float32)
    _, layer = _nhwc32(x)
    report = check_layer(layer, x)
    assert report.ok
    assert report.precision.startswith("native float32"), report.precision
    assert "did not follow a float64 K" in report.precision
    assert "its own attribute" in report.precision and "set_params=" in report.precision
    assert "cached copy?" not in report.precision


def test_a_planted_bug_in_a_promoted_float32_layer_is_still_caught() -> None:
    x = _x((2, 2, 5, 5)).astype(np.float32)
    inner = NHWCConv2D(out_ch=3, kernel_shape=(3, 3), flip_dW=True, dtype=np.float32)
    layer = _nhwc_adapter(inner, x, set_params=_set_nhwc)
    with pytest.raises(GradientMismatchError, match=r"rot180") as info:
        check_layer(layer, x)
    assert info.value.report.precision.startswith("float64")
    assert [t.name for t in info.value.report.tensors if not t.ok] == ["K"]


class _AttrDense32:
    """float32, weights in attributes, read by forward (not through self.params)."""

    def __init__(self) -> None:
        rng = np.random.default_rng(3)
        self.W = rng.standard_normal((5, 3)).astype(np.float32)
        self.b = rng.standard_normal(3).astype(np.float32)
        self.dW = np.zeros_like(self.W)
        self.db = np.zeros_like(self.b)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        return x @ self.W + self.b

    def backward(self, dy: np.ndarray) -> np.ndarray:
        self.dW = self.x.T @ dy
        self.db = dy.sum(axis=0)
        return dy @ self.W.T


def test_attribute_parameters_with_a_setattr_setter_are_promoted() -> None:
    x = _x((4, 5)).astype(np.float32)
    inner = _AttrDense32()
    W = inner.W

    def make(**kw: Any) -> LayerAdapter:
        return LayerAdapter(
            inner,
            params=lambda l: {"W": l.W, "b": l.b},
            grads=lambda l: {"W": l.dW, "b": l.db},
            **kw,
        )

    assert check_layer(make(), x).precision.startswith("native float32")
    report = check_layer(make(set_params=lambda l, n, a: setattr(l, n, a)), x)
    assert report.ok and report.precision.startswith("float64"), report.precision
    assert inner.W is W  # the identity hook: the layer's own array object is put back


class _ParamsDict32:
    """float32, forward reads its own ``self.params`` dict."""

    def __init__(self) -> None:
        rng = np.random.default_rng(4)
        self.params = {"W": rng.standard_normal((5, 3)).astype(np.float32)}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        return np.tanh(x @ self.params["W"])

    def backward(self, dy: np.ndarray) -> np.ndarray:
        y = np.tanh(self.x @ self.params["W"])
        du = dy * (1 - y**2)
        self.grads = {"W": self.x.T @ du}
        return du @ self.params["W"].T


def test_without_a_params_hook_the_layers_own_dict_is_promoted() -> None:
    inner = _ParamsDict32()
    layer = LayerAdapter(inner)
    assert layer.params is inner.params  # a rebinding the layer sees
    report = check_layer(layer, _x((4, 5)).astype(np.float32))
    assert report.ok and report.precision.startswith("float64"), report.precision
    assert inner.params["W"].dtype == np.float32


def test_a_setter_that_does_not_reach_the_hook_is_reported() -> None:
    x = _x((1, 2, 4, 4)).astype(np.float32)
    _, layer = _nhwc32(x, set_params=lambda l, n, a: None)
    with pytest.raises(ValueError, match=r"set_params\(layer, 'K', array\) did not make"):
        layer.params["K"] = layer.params["K"].astype(np.float64)
    with pytest.raises(ValueError, match=r"did not make the layer read the array"):
        check_layer(layer, x)  # when the precision probe promotes
    assert layer.params["K"].dtype == np.float32


def test_set_params_must_be_callable() -> None:
    with pytest.raises(TypeError, match=r"set_params must be callable"):
        LayerAdapter(Dropout(), set_params="W")  # type: ignore[arg-type]


# --- LayerAdapter: ML-From-Scratch-style layers that update their weights in backward -------
def _mlfs_dense(**kwargs: Any) -> Dense:
    layer = Dense(n_units=3, input_shape=(5,), **kwargs)
    layer.initialize(StochasticGradientDescent(learning_rate=0.1, momentum=0.9))
    return layer


def _mlfs_adapter(layer: Dense) -> LayerAdapter:
    return LayerAdapter(
        layer,
        forward="forward_pass",
        backward="backward_pass",
        params=lambda l: {"W": l.W, "w0": l.w0},
        optimizers={"W": "W_opt", "w0": "w0_opt"},
    )


def test_a_layer_updating_its_weights_in_backward_passes_and_keeps_them() -> None:
    inner = _mlfs_dense()
    W, w0, opt = inner.W, inner.w0.copy(), inner.W_opt
    before = W.copy()
    report = check_layer(_mlfs_adapter(inner), _x((4, 5)), coverage="full")
    assert report.ok
    assert [t.name for t in report.tensors] == ["x", "W", "w0"]
    assert inner.W is W  # never rebound to an updated copy
    np.testing.assert_array_equal(inner.W, before)
    np.testing.assert_array_equal(inner.w0, w0)
    assert inner.W_opt is opt and opt.w_updt is None  # the optimizer put back, untouched


def test_captured_gradients_are_those_of_one_backward() -> None:
    inner = _mlfs_dense()
    adapter = _mlfs_adapter(inner)
    x, dy = _x((4, 5)), _x((4, 3))
    adapter.forward(x)
    dx = adapter.backward(dy)
    np.testing.assert_allclose(adapter.grads["W"], x.T @ dy)
    np.testing.assert_allclose(adapter.grads["w0"], dy.sum(axis=0, keepdims=True))
    np.testing.assert_allclose(dx, dy @ inner.W.T)
    adapter.forward(x)
    adapter.backward(dy)  # not added to the last one
    np.testing.assert_allclose(adapter.grads["W"], x.T @ dy)


def test_a_planted_grad_w_bug_behind_an_optimizer_is_caught_and_named() -> None:
    layer = _mlfs_adapter(_mlfs_dense(mean_grad_w=True))
    with pytest.raises(GradientMismatchError) as info:
        check_layer(layer, _x((4, 5)))
    assert [t.name for t in info.value.report.tensors if not t.ok] == ["W"]
    assert str(info.value).startswith("Gradient check failed: Dense, tensor W")


def test_an_optimizer_not_called_leaves_its_gradient_missing() -> None:
    inner = _mlfs_dense()
    inner.trainable = False
    with pytest.raises(LayerContractError, match=r"did not fill grads\['W'\]"):
        check_layer(_mlfs_adapter(inner), _x((4, 5)))


def test_the_optimizers_are_put_back_when_backward_raises() -> None:
    inner = _mlfs_dense()
    opt = inner.W_opt
    adapter = _mlfs_adapter(inner)
    adapter.forward(_x((4, 5)))
    with pytest.raises(ValueError):
        adapter.backward(_x((4, 2)))  # the wrong width: the layer's dot raises
    assert inner.W_opt is opt


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"optimizers": {"W": "W_opt"}}, ValueError, r"optimizers names \['W'\] differ"),
        ({"optimizers": {"W": "W_opt", "w0": "nope"}}, ValueError, r"Dense.nope has no update"),
        ({"optimizers": {"W": 1, "w0": "w0_opt"}}, TypeError, r"must map parameter names"),
        (
            {"optimizers": {"W": "W_opt", "w0": "w0_opt"}, "accumulates": True},
            TypeError,
            r"without grads= or accumulates=",
        ),
    ],
)
def test_optimizers_are_validated(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        LayerAdapter(
            _mlfs_dense(),
            forward="forward_pass",
            backward="backward_pass",
            params=lambda l: {"W": l.W, "w0": l.w0},
            **kwargs,
        )
