"""checks.adapters: cs231n function pairs and foreign class layers (numpy-ml-style NHWC with
lazy parameters and ``+=`` gradients, global-RNG dropout) go through check_layer; bugs planted
in them are still caught, and misuse of the adapters is reported clearly."""

from __future__ import annotations

import numpy as np
import pytest

from checks import check_layer
from checks.adapters import LayerAdapter, from_functions
from checks.report.errors import GradientMismatchError, LayerContractError
from property_tests._foreign_layers import (
    Dropout,
    NHWCConv2D,
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
def _nhwc_adapter(layer: NHWCConv2D, x: np.ndarray) -> LayerAdapter:
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
