"""The layer classes: protocol, gradients of x and of every parameter, activations, bad input.

Gradients are checked against central differences (``_fd``, independent of ``checks``) and,
where it applies, against PyTorch autograd (skipped cleanly without torch).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from checks.strategies import (
    conv_configs,
    dense_configs,
    subsample_configs,
    tie_free_arrays,
    well_conditioned_arrays,
)
from cnn_ref import (
    Activation,
    AvgPool2D,
    Conv2D,
    Dense,
    Flatten,
    MaxPool2D,
    Subsample,
    activations,
)
from property_tests._fd import assert_vjp_close, numerical_vjp

SMOOTH = ("identity", "sigmoid", "tanh")


def assert_layer_gradients(layer, x: np.ndarray, seed: int = 0) -> None:
    """backward's dx and grads against central differences of <dy, forward(.)>."""
    x = x.copy()
    y = layer.forward(x)
    dy = np.random.default_rng(seed).normal(size=y.shape)
    dx = layer.backward(dy)
    assert dx.shape == x.shape
    assert set(layer.grads) == set(layer.params)
    grads = {k: v.copy() for k, v in layer.grads.items()}

    def f() -> np.ndarray:
        return layer.forward(x)

    assert_vjp_close(dx, numerical_vjp(f, x, dy))
    for name, theta in layer.params.items():
        assert grads[name].shape == theta.shape, name
        assert_vjp_close(grads[name], numerical_vjp(f, theta, dy))


# ---------------------------------------------------------------------------------------------
# gradients of every layer vs central differences
# ---------------------------------------------------------------------------------------------


@given(
    cfg=conv_configs(max_elements=150),
    convention=st.sampled_from(["conv", "xcorr"]),
    activation=st.sampled_from(SMOOTH),
    data=st.data(),
)
def test_conv2d_gradients_match_central_differences(cfg, convention, activation, data) -> None:
    layer = Conv2D(
        cfg.c_in,
        cfg.c_out,
        cfg.kernel_size,
        stride=cfg.stride,
        padding=cfg.padding,
        dilation=cfg.dilation,
        convention=convention,
        activation=activation,
        seed=data.draw(st.integers(0, 2**16), label="seed"),
    )
    assert_layer_gradients(layer, data.draw(well_conditioned_arrays(cfg.x_shape), label="x"))


@given(
    cfg=subsample_configs(max_elements=150, overlapping=True),
    activation=st.sampled_from(SMOOTH),
    data=st.data(),
)
def test_subsample_gradients_match_central_differences(cfg, activation, data) -> None:
    layer = Subsample(cfg.c, cfg.size, stride=cfg.stride, kind=cfg.kind, activation=activation)
    # beta != 1 and of both signs: a dropped or misplaced beta shows
    layer.params["beta"][...] = data.draw(
        well_conditioned_arrays(cfg.param_shape, low=0.3, high=2.5), label="beta"
    )
    arrays = tie_free_arrays if cfg.kind == "max" else well_conditioned_arrays
    assert_layer_gradients(layer, data.draw(arrays(cfg.x_shape), label="x"))


@pytest.mark.parametrize("pool", [MaxPool2D, AvgPool2D])
@given(cfg=subsample_configs(max_elements=150, kinds=("max",)), data=st.data())
def test_pool_gradients_match_central_differences(pool, cfg, data) -> None:
    stride = data.draw(st.none() | st.integers(1, 3), label="stride")
    layer = pool(cfg.size, stride)
    assert layer.params == {} and layer.grads == {}
    assert_layer_gradients(layer, data.draw(tie_free_arrays(cfg.x_shape), label="x"))


@given(cfg=dense_configs(), activation=st.sampled_from(SMOOTH), data=st.data())
def test_dense_gradients_match_central_differences(cfg, activation, data) -> None:
    layer = Dense(cfg.in_features, cfg.out_features, activation=activation, seed=1)
    assert_layer_gradients(layer, data.draw(well_conditioned_arrays(cfg.x_shape), label="x"))


@pytest.mark.parametrize("name", ["identity", "sigmoid", "tanh", "relu"])
@given(shape=st.sampled_from([(3,), (2, 5), (2, 3, 4, 1)]), data=st.data())
def test_activation_gradients_match_central_differences(name, shape, data) -> None:
    # well_conditioned_arrays keeps |x| >= 0.1, away from relu's kink at 0
    assert_layer_gradients(Activation(name), data.draw(well_conditioned_arrays(shape), label="x"))


def test_flatten_gradient_is_the_inverse_reshape() -> None:
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5))
    assert_layer_gradients(Flatten(), x)
    layer = Flatten()
    y = layer.forward(x)
    np.testing.assert_array_equal(layer.backward(y), x)


# ---------------------------------------------------------------------------------------------
# the protocol
# ---------------------------------------------------------------------------------------------


def _layers():
    return [
        (Conv2D(2, 3, (2, 3), padding=1, activation="tanh", seed=0), (2, 2, 5, 6)),
        (Conv2D(2, 3, 3, convention="xcorr", stride=2, seed=0), (2, 2, 7, 6)),
        (Subsample(2, 2, kind="mean", activation="sigmoid", seed=0), (2, 2, 5, 6)),
        (Subsample(2, (2, 3), stride=1, kind="max", seed=0), (2, 2, 5, 6)),
        (MaxPool2D(2), (2, 2, 5, 6)),
        (AvgPool2D(3, 2), (2, 2, 5, 6)),
        (Dense(4, 3, activation="tanh", seed=0), (2, 4)),
        (Flatten(), (2, 2, 3)),
        (Activation("sigmoid"), (2, 3, 4)),
    ]


@pytest.mark.parametrize(("layer", "shape"), _layers(), ids=lambda v: repr(v)[:40])
def test_any_batch_size_on_every_call(layer, shape) -> None:
    rng = np.random.default_rng(0)
    for n in (shape[0], 5, 1):
        x = rng.permutation(np.prod((n, *shape[1:]))).reshape(n, *shape[1:]) * 0.01
        y = layer.forward(x)
        assert y.shape[0] == n
        assert layer.backward(np.ones_like(y)).shape == x.shape
    assert_layer_gradients(layer, rng.permutation(np.prod(shape)).reshape(shape) * 0.01)


@pytest.mark.parametrize(("layer", "shape"), _layers(), ids=lambda v: repr(v)[:40])
def test_neither_x_nor_dy_is_mutated_nor_aliased(layer, shape) -> None:
    rng = np.random.default_rng(1)
    x = rng.permutation(np.prod(shape)).reshape(shape) * 0.01
    x0 = x.copy()
    y = layer.forward(x)
    dy = rng.normal(size=y.shape)
    dy0 = dy.copy()
    dx = layer.backward(dy)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(dy, dy0)
    assert not np.shares_memory(y, x) and not np.shares_memory(dx, dy)


@pytest.mark.parametrize(("layer", "shape"), _layers()[:4] + _layers()[6:7])
def test_params_are_the_arrays_forward_reads(layer, shape) -> None:
    x = np.random.default_rng(2).permutation(np.prod(shape)).reshape(shape) * 0.01
    for name, theta in layer.params.items():
        y0 = layer.forward(x)
        old = theta.reshape(-1)[0]
        theta.reshape(-1)[0] = old + 0.5  # in place, as a checker does
        assert not np.allclose(layer.forward(x), y0), name
        theta.reshape(-1)[0] = old
        np.testing.assert_array_equal(layer.forward(x), y0)


@pytest.mark.parametrize(("layer", "shape"), [_layers()[i] for i in (0, 1, 2, 3, 6)])
def test_a_complex_copy_swapped_into_params_gives_the_complex_step(layer, shape) -> None:
    # what a complex-step checker does: params[name] = theta + i h e_k; Im(<dy, y>) / h
    rng = np.random.default_rng(3)
    x = rng.permutation(np.prod(shape)).reshape(shape) * 0.01
    dy = rng.normal(size=layer.forward(x).shape)
    layer.backward(dy)
    h = 1e-30
    for name in list(layer.params):
        theta = layer.params[name]
        analytic = layer.grads[name].reshape(-1)
        for k in range(min(theta.size, 4)):
            e = np.zeros(theta.size)
            e[k] = h
            layer.params[name] = theta + 1j * e.reshape(theta.shape)
            step = np.vdot(dy, layer.forward(x)).imag / h
            assert step == pytest.approx(analytic[k], rel=1e-12, abs=1e-14), (name, k)
        layer.params[name] = theta


@pytest.mark.parametrize(("layer", "shape"), _layers(), ids=lambda v: repr(v)[:40])
def test_grads_have_the_keys_shapes_and_dtypes_of_params(layer, shape) -> None:
    assert set(layer.grads) == set(layer.params)
    for k in layer.params:
        assert layer.grads[k].shape == layer.params[k].shape
    x = np.ones(shape)
    layer.backward(np.ones_like(layer.forward(x)))
    for k in layer.params:
        assert layer.grads[k].shape == layer.params[k].shape
        assert layer.grads[k].dtype == layer.params[k].dtype


@pytest.mark.parametrize(
    "make",
    [
        lambda: Conv2D(2, 3, 3, seed=0, dtype=np.float32),
        lambda: Subsample(2, 2, seed=0, dtype=np.float32, activation="tanh"),
        lambda: Dense(18, 3, seed=0, dtype=np.float32, activation="sigmoid"),
    ],
)
def test_float32_layers_compute_in_float32(make) -> None:
    layer = make()
    x = np.ones((2, 2, 3, 3) if not isinstance(layer, Dense) else (2, 18), np.float32)
    y = layer.forward(x)
    assert y.dtype == np.float32
    assert layer.backward(np.ones_like(y)).dtype == np.float32
    assert all(g.dtype == np.float32 for g in layer.grads.values())


def test_initialisation_is_seeded_and_scaled() -> None:
    a, b, c = Conv2D(4, 8, 3, seed=5), Conv2D(4, 8, 3, seed=5), Conv2D(4, 8, 3, seed=6)
    np.testing.assert_array_equal(a.params["K"], b.params["K"])
    assert not np.array_equal(a.params["K"], c.params["K"])
    assert np.abs(a.params["K"]).max() <= 1 / np.sqrt(4 * 3 * 3)
    d = Dense(100, 5, seed=0)
    assert np.abs(d.params["W"]).max() <= 0.1 and d.params["W"].std() > 0.03
    s = Subsample(50, 2, seed=0)
    assert np.all((s.params["beta"] >= 0.5) & (s.params["beta"] <= 1.5))
    assert not np.allclose(s.params["beta"], 1)
    state = np.random.get_state()  # noqa: NPY002 - checking the legacy global RNG is untouched
    Conv2D(1, 1, 1, seed=None)
    assert np.random.get_state()[1].tolist() == state[1].tolist()  # noqa: NPY002


@pytest.mark.parametrize(
    ("layer", "words"),
    [
        (
            Conv2D(3, 6, (5, 3), stride=2, padding=(1, 0), convention="xcorr", activation="tanh"),
            ["Conv2D(3, 6", "(5, 3)", "stride=(2, 2)", "padding=(1, 0)", "'xcorr'", "'tanh'"],
        ),
        (
            Subsample(4, 2, kind="max", stride=1),
            ["Subsample(4", "(2, 2)", "stride=(1, 1)", "'max'"],
        ),
        (Dense(7, 2, activation="relu", dtype=np.float32), ["Dense(7, 2", "'relu'", "float32"]),
        (MaxPool2D(3, 2), ["MaxPool2D", "(3, 3)", "(2, 2)"]),
        (AvgPool2D((2, 3)), ["AvgPool2D", "(2, 3)"]),
        (Activation("tanh"), ["Activation('tanh')"]),
    ],
)
def test_repr_shows_the_configuration(layer, words) -> None:
    for word in words:
        assert word in repr(layer), (word, repr(layer))


# ---------------------------------------------------------------------------------------------
# activations (eq. 2, 4, 8, 16)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["identity", "sigmoid", "tanh"])
def test_smooth_activations_propagate_complex_steps(name) -> None:
    act = activations.get(name)
    u = np.linspace(-30, 30, 61)
    h = 1e-30
    np.testing.assert_allclose(act.f(u + 1j * h).imag / h, act.df(u), rtol=1e-13, atol=1e-300)
    np.testing.assert_allclose(act.f(u + 1j * h).real, act.f(u), rtol=1e-15)


def test_sigmoid_is_stable_and_exact_at_large_arguments() -> None:
    s = activations.sigmoid
    u = np.array([-1e4, -800.0, -40.0, 0.0, 40.0, 800.0, 1e4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, dy = s.f(u), s.df(u)
        yc = s.f(u + 1e-20j)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dy)) and np.all(np.isfinite(yc))
    np.testing.assert_allclose(y, 1 / (1 + np.exp(-np.clip(u, -700, 700))), rtol=1e-15, atol=1e-300)
    assert y[3] == 0.5 and y[-1] == 1.0 and y[0] == 0.0
    assert s.f(np.array([-40.0]))[0] > 0  # no underflow to 0 where the value is representable


def test_relu_derivative_and_complex_input() -> None:
    r = activations.relu
    np.testing.assert_array_equal(r.f(np.array([-1.0, 0.0, 2.0])), [0.0, 0.0, 2.0])
    np.testing.assert_array_equal(r.df(np.array([-1.0, 0.0, 2.0])), [0.0, 0.0, 1.0])
    with pytest.raises(TypeError, match=r"relu.*complex128"):
        r.f(np.array([1.0 + 1e-20j]))


def test_activation_registry() -> None:
    assert set(activations.ACTIVATIONS) == {"identity", "sigmoid", "tanh", "relu"}
    with pytest.raises(ValueError) as info:
        activations.get("softmax")
    for word in ("'softmax'", "'identity'", "'sigmoid'", "'tanh'", "'relu'"):
        assert word in str(info.value)


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_layer_delta_is_dA_times_f_prime_of_U_eq8_eq16(name) -> None:
    # eq. (8)/(16): delta = dJ/dA * f'(U); db of a 1x1 identity kernel conv is sum(delta)
    layer = Conv2D(1, 1, 1, activation=name, seed=0)
    layer.params["K"][...] = 1.0
    layer.params["b"][...] = 0.3
    x = np.random.default_rng(0).normal(size=(2, 1, 3, 4))
    dA = np.random.default_rng(1).normal(size=(2, 1, 3, 4))
    layer.forward(x)
    dx = layer.backward(dA)
    f_prime = activations.get(name).df(x + 0.3)
    np.testing.assert_allclose(dx, dA * f_prime, rtol=1e-14)
    np.testing.assert_allclose(layer.grads["b"], [np.sum(dA * f_prime)], rtol=1e-13)


# ---------------------------------------------------------------------------------------------
# PyTorch autograd
# ---------------------------------------------------------------------------------------------


@pytest.mark.torch
@given(cfg=conv_configs(max_elements=200), activation=st.sampled_from(SMOOTH), data=st.data())
def test_conv2d_xcorr_layer_matches_torch(cfg, activation, data) -> None:
    torch = pytest.importorskip("torch")
    act = {"identity": lambda t: t, "sigmoid": torch.sigmoid, "tanh": torch.tanh}[activation]
    layer = Conv2D(
        cfg.c_in,
        cfg.c_out,
        cfg.kernel_size,
        stride=cfg.stride,
        padding=cfg.padding,
        dilation=cfg.dilation,
        convention="xcorr",
        activation=activation,
        seed=0,
    )
    x = data.draw(well_conditioned_arrays(cfg.x_shape), label="x")
    xt = torch.tensor(x, requires_grad=True)
    Kt = torch.tensor(layer.params["K"], requires_grad=True)
    bt = torch.tensor(layer.params["b"], requires_grad=True)
    yt = act(
        torch.nn.functional.conv2d(
            xt, Kt, bt, stride=cfg.stride, padding=cfg.padding, dilation=cfg.dilation
        )
    )
    y = layer.forward(x)
    dy = np.random.default_rng(0).normal(size=y.shape)
    yt.backward(torch.tensor(dy))
    dx = layer.backward(dy)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(layer.grads["K"], Kt.grad.numpy(), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(layer.grads["b"], bt.grad.numpy(), rtol=1e-11, atol=1e-12)


@pytest.mark.torch
@pytest.mark.parametrize(("pool", "fn"), [(MaxPool2D, "max_pool2d"), (AvgPool2D, "avg_pool2d")])
@given(cfg=subsample_configs(max_elements=200, overlapping=True), data=st.data())
def test_pool_layers_match_torch(pool, fn, cfg, data) -> None:
    torch = pytest.importorskip("torch")
    layer = pool(cfg.size, cfg.stride)
    x = data.draw(tie_free_arrays(cfg.x_shape), label="x")
    xt = torch.tensor(x, requires_grad=True)
    yt = getattr(torch.nn.functional, fn)(xt, cfg.size, cfg.stride)
    y = layer.forward(x)
    dy = np.random.default_rng(0).normal(size=y.shape)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(layer.backward(dy), xt.grad.numpy(), rtol=1e-13, atol=1e-13)


@pytest.mark.torch
@given(cfg=dense_configs(), activation=st.sampled_from(SMOOTH), data=st.data())
def test_dense_layer_matches_torch_linear(cfg, activation, data) -> None:
    torch = pytest.importorskip("torch")
    act = {"identity": lambda t: t, "sigmoid": torch.sigmoid, "tanh": torch.tanh}[activation]
    layer = Dense(cfg.in_features, cfg.out_features, activation=activation, seed=2)
    x = data.draw(well_conditioned_arrays(cfg.x_shape), label="x")
    xt, Wt, bt = (
        torch.tensor(a, requires_grad=True) for a in (x, layer.params["W"], layer.params["b"])
    )
    yt = act(torch.nn.functional.linear(xt, Wt, bt))
    y = layer.forward(x)
    dy = np.random.default_rng(0).normal(size=y.shape)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(layer.backward(dy), xt.grad.numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(layer.grads["W"], Wt.grad.numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(layer.grads["b"], bt.grad.numpy(), rtol=1e-12, atol=1e-13)


# ---------------------------------------------------------------------------------------------
# bad input: the error names the argument and the value
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "exc", "words"),
    [
        (lambda: Conv2D(0, 3, 3), ValueError, ["in_channels", "0"]),
        (lambda: Conv2D(2, -1, 3), ValueError, ["out_channels", "-1"]),
        (lambda: Conv2D(2.0, 3, 3), TypeError, ["in_channels", "2.0"]),
        (lambda: Conv2D(2, 3, 0), ValueError, ["kernel_size", "0"]),
        (lambda: Conv2D(2, 3, (3, 0)), ValueError, ["kernel_size", "(3, 0)"]),
        (lambda: Conv2D(2, 3, 3, stride=0), ValueError, ["stride", "0"]),
        (lambda: Conv2D(2, 3, 3, padding=-1), ValueError, ["padding", "-1"]),
        (lambda: Conv2D(2, 3, 3, dilation=(1, 0)), ValueError, ["dilation", "(1, 0)"]),
        (lambda: Conv2D(2, 3, 3, convention="corr"), ValueError, ["convention", "'corr'"]),
        (lambda: Conv2D(2, 3, 3, activation="elu"), ValueError, ["activation", "'elu'"]),
        (lambda: Conv2D(2, 3, 3, dtype=np.int32), TypeError, ["dtype", "int32"]),
        (lambda: Conv2D(2, 3, 3, dtype="banana"), TypeError, ["dtype", "'banana'"]),
        (lambda: Subsample(0, 2), ValueError, ["channels", "0"]),
        (lambda: Subsample(2, 0), ValueError, ["size", "0"]),
        (lambda: Subsample(2, 2, stride=0), ValueError, ["stride", "0"]),
        (lambda: Subsample(2, 2, kind="median"), ValueError, ["kind", "'median'", "'mean'"]),
        (lambda: Subsample(2, 2, activation="soft"), ValueError, ["activation", "'soft'"]),
        (lambda: Subsample(2, 2, dtype=np.complex128), TypeError, ["dtype", "complex128"]),
        (lambda: MaxPool2D(0), ValueError, ["size", "0"]),
        (lambda: AvgPool2D(2, (1, -2)), ValueError, ["stride", "(1, -2)"]),
        (lambda: Dense(0, 3), ValueError, ["in_features", "0"]),
        (lambda: Dense(3, True), TypeError, ["out_features", "True"]),
        (lambda: Dense(3, 2, activation=None), ValueError, ["activation", "None"]),
        (lambda: Activation("swish"), ValueError, ["name", "'swish'", "'relu'"]),
    ],
)
def test_constructors_reject_bad_arguments_naming_them(make, exc, words) -> None:
    with pytest.raises(exc) as info:
        make()
    for word in words:
        assert word in str(info.value), (word, str(info.value))


@pytest.mark.parametrize(
    ("layer", "x", "exc", "words"),
    [
        (Conv2D(2, 3, 3), np.ones((2, 5, 5)), ValueError, ["x", "4 dimensions", "(2, 5, 5)"]),
        (Conv2D(2, 3, 3), np.ones((1, 3, 5, 5)), ValueError, ["x", "3 channels", "in_channels=2"]),
        (
            Conv2D(2, 3, (3, 4), padding=1, dilation=2),
            np.ones((1, 2, 3, 3)),
            ValueError,
            ["kernel_size (3, 4)", "dilation (2, 2)", "(5, 7)", "(5, 5)", "(1, 2, 3, 3)"],
        ),
        (Conv2D(1, 1, 6), np.ones((1, 1, 5, 9)), ValueError, ["kernel_size (6, 6)", "(5, 9)"]),
        (Conv2D(1, 1, 2), np.ones((1, 1, 5, 5), int), TypeError, ["x", "int64"]),
        (Conv2D(1, 1, 2), np.full((1, 1, 3, 3), np.inf), ValueError, ["x", "non-finite"]),
        (Subsample(3, 2), np.ones((1, 2, 4, 4)), ValueError, ["x", "2 channels", "channels=3"]),
        (Subsample(2, 3), np.ones((1, 2, 4, 2)), ValueError, ["size", "(3, 3)", "(4, 2)"]),
        (Subsample(2, 2), np.ones((2, 4, 4)), ValueError, ["x", "4 dimensions"]),
        (MaxPool2D(2), np.ones((4, 4)), ValueError, ["x", "4 dimensions", "(4, 4)"]),
        (AvgPool2D(5), np.ones((1, 1, 4, 6)), ValueError, ["size", "(5, 5)", "(4, 6)"]),
        (Dense(3, 2), np.ones((4, 2)), ValueError, ["x", "2 features", "in_features=3"]),
        (Dense(3, 2), np.ones((4, 3, 1)), ValueError, ["x", "2 dimensions", "(4, 3, 1)"]),
        (Dense(3, 2), [[1.0, 2.0, 3.0]], TypeError, ["x", "list"]),
        (Flatten(), np.ones(3), ValueError, ["x", "at least 2", "(3,)"]),
        (Activation("tanh"), np.array([np.nan]), ValueError, ["x", "non-finite"]),
    ],
)
def test_forward_rejects_bad_input_naming_it(layer, x, exc, words) -> None:
    with pytest.raises(exc) as info:
        layer.forward(x)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


@pytest.mark.parametrize(("layer", "shape"), _layers(), ids=lambda v: repr(v)[:40])
def test_backward_before_forward_and_wrong_dy_are_rejected(layer, shape) -> None:
    # _layers() builds new layers for each test: this one has not seen a forward yet
    with pytest.raises(ValueError, match=f"{type(layer).__name__}.backward called before forward"):
        layer.backward(np.ones(3))
    y = layer.forward(np.ones(shape))
    bad = np.ones((y.shape[0] + 1, *y.shape[1:]))
    with pytest.raises(ValueError) as info:
        layer.backward(bad)
    for word in ("dy", str(bad.shape), str(y.shape)):
        assert word in str(info.value), (word, str(info.value))
    with pytest.raises(ValueError, match="dy contains 1 non-finite"):
        layer.backward(np.where(np.arange(y.size).reshape(y.shape) == 0, np.nan, 1.0))
