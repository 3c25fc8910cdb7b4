"""Sequential, the losses and lenet5: end-to-end back-propagation as the derivation chains it.

Oracles: central differences (``_fd``), the derivation's equations re-typed with ``cnn_ref.signal``
primitives and ``np.kron`` (eq. 1, 3, 11, 12, 14, 16, 18, 19, 20), and an equivalent PyTorch
network (xcorr convention) for the full LeNet gradient.
"""

from __future__ import annotations

import numpy as np
import pytest

from cnn_ref import (
    Activation,
    Conv2D,
    Dense,
    Flatten,
    MaxPool2D,
    Sequential,
    Subsample,
    activations,
    lenet5,
)
from cnn_ref.network import mse, softmax_cross_entropy
from cnn_ref.signal import conv2, down, rot180
from property_tests._fd import assert_vjp_close, numerical_vjp
from property_tests.test_layers import assert_layer_gradients


def small_net(convention: str, kind: str, loss: str | None) -> Sequential:
    return Sequential(
        [
            Conv2D(2, 3, (3, 2), convention=convention, activation="sigmoid", seed=1),
            Subsample(3, 2, kind=kind, activation="tanh", seed=2),
            Flatten(),
            Dense(3 * 3 * 3, 4, seed=3),
        ],
        loss=loss,
    )


def _x(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    # distinct values (no max-pool ties), magnitudes where sigmoid/tanh are not flat
    rng = np.random.default_rng(seed)
    return (rng.permutation(int(np.prod(shape))).reshape(shape) / np.prod(shape) - 0.5) * 4


_TARGETS = {
    "mse": lambda rng: rng.normal(size=(2, 4)),
    "softmax_cross_entropy": lambda rng: np.array([3, 0]),
}


# ---------------------------------------------------------------------------------------------
# end-to-end gradients
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["mse", "softmax_cross_entropy"])
@pytest.mark.parametrize("kind", ["sum", "mean", "max"])
@pytest.mark.parametrize("convention", ["conv", "xcorr"])
def test_loss_gradients_match_central_differences(convention, kind, loss) -> None:
    net = small_net(convention, kind, loss)
    x = _x((2, 2, 8, 7))
    target = _TARGETS[loss](np.random.default_rng(1))
    net.loss(x, target)
    dx = net.loss_backward()
    grads = {k: v.copy() for k, v in net.grads.items()}

    def J() -> np.ndarray:
        return np.array(net.loss(x, target))

    one = np.array(1.0)
    assert_vjp_close(dx, numerical_vjp(J, x, one))
    for name, theta in net.params.items():
        assert_vjp_close(grads[name], numerical_vjp(J, theta, one))


def test_sequential_follows_the_layer_protocol() -> None:
    net = small_net("conv", "max", loss=None)
    assert_layer_gradients(net, _x((3, 2, 8, 7)))
    assert_layer_gradients(net, _x((1, 2, 8, 7)))  # another batch size on the next call


def test_backward_chains_deltas_exactly_as_the_derivation_eq1_3_11_12_14_16_19_20() -> None:
    # conv (sigmoid) -> sum-subsample (tanh), true convolution, 9x8 maps (one row cropped)
    conv = Conv2D(2, 3, 3, activation="sigmoid", seed=4)
    sub = Subsample(3, 2, kind="sum", activation="tanh", seed=5)
    sub.params["beta"][...] = [0.7, -1.6, 2.2]
    net = Sequential([conv, sub])
    x = _x((2, 2, 9, 8))
    dy = np.random.default_rng(6).normal(size=(2, 3, 3, 3))
    y = net.forward(x)
    dx = net.backward(dy)

    K, b1 = conv.params["K"], conv.params["b"]
    beta, b2 = sub.params["beta"], sub.params["b"]
    sig, tanh = activations.sigmoid, activations.tanh
    N, C_in, C_out = 2, 2, 3
    U1 = np.array(
        [
            [
                sum(conv2(x[n, j], K[i, j], "valid") for j in range(C_in)) + b1[i]
                for i in range(C_out)
            ]
            for n in range(N)
        ]
    )  # eq. (1)
    A1 = sig.f(U1)  # eq. (2)
    d = down(A1, 2, "sum")
    U2 = beta[:, None, None] * d + b2[:, None, None]  # eq. (3)
    np.testing.assert_allclose(y, tanh.f(U2), rtol=1e-13)  # eq. (4)

    delta2 = dy * tanh.df(U2)  # eq. (16)
    np.testing.assert_allclose(sub.grads["b"], delta2.sum(axis=(0, 2, 3)), rtol=1e-12)  # (19)
    np.testing.assert_allclose(
        sub.grads["beta"], (delta2 * d).sum(axis=(0, 2, 3)), rtol=1e-12
    )  # eq. (20), d = down(A)
    up = np.zeros_like(A1)
    up[:, :, :6, :6] = np.kron(delta2, np.ones((2, 2)))  # row 7, column 7 were cropped: zero
    delta1 = beta[:, None, None] * up * sig.df(U1)  # eq. (11)
    np.testing.assert_allclose(conv.grads["b"], delta1.sum(axis=(0, 2, 3)), rtol=1e-12)  # (12)
    dK = np.array(
        [
            [
                sum(rot180(conv2(x[n, j], rot180(delta1[n, i]), "valid")) for n in range(N))
                for j in range(C_in)
            ]
            for i in range(C_out)
        ]
    )  # eq. (14), summed over the batch
    np.testing.assert_allclose(conv.grads["K"], dK, rtol=1e-12, atol=1e-14)
    # eq. (18), corrected: sum over the maps i fed by j, with K_ij rotated (the derivation's text
    # sums delta_i with K_ij unrotated, which is the xcorr-convention form with swapped indices)
    dA0 = np.array(
        [
            [
                sum(conv2(delta1[n, i], rot180(K[i, j]), "full") for i in range(C_out))
                for j in range(C_in)
            ]
            for n in range(N)
        ]
    )
    np.testing.assert_allclose(dx, dA0, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# PyTorch: an equivalent LeNet, end to end
# ---------------------------------------------------------------------------------------------


@pytest.mark.torch
@pytest.mark.parametrize(
    ("kind", "activation", "loss"),
    [
        ("mean", "sigmoid", "softmax_cross_entropy"),
        ("sum", "tanh", "mse"),
        ("max", "sigmoid", "mse"),
        ("max", "tanh", "softmax_cross_entropy"),
    ],
)
def test_lenet5_gradient_matches_torch_autograd_xcorr(kind, activation, loss) -> None:
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    net = lenet5(
        in_channels=2,
        image_size=(16, 20),
        n_classes=5,
        activation=activation,
        convention="xcorr",
        kind=kind,
        seed=7,
        loss=loss,
    )
    rng = np.random.default_rng(8)
    x = rng.normal(size=(3, 2, 16, 20))
    target = rng.normal(size=(3, 5)) if loss == "mse" else np.array([4, 0, 2])
    J = net.loss(x, target)
    dx = net.loss_backward()

    T = {k: torch.tensor(v, requires_grad=True) for k, v in net.params.items()}
    xt = torch.tensor(x, requires_grad=True)
    f = torch.sigmoid if activation == "sigmoid" else torch.tanh

    def pool(a):
        if kind == "max":
            return F.max_pool2d(a, 2)
        return F.avg_pool2d(a, 2) * (4 if kind == "sum" else 1)

    def subsample(a, i):
        return f(T[f"{i}.beta"][:, None, None] * pool(a) + T[f"{i}.b"][:, None, None])

    a = subsample(f(F.conv2d(xt, T["0.K"], T["0.b"])), 1)
    a = subsample(f(F.conv2d(a, T["2.K"], T["2.b"])), 3)
    z = F.linear(a.flatten(1), T["5.W"], T["5.b"])
    if loss == "mse":
        Jt = 0.5 * ((z - torch.tensor(target)) ** 2).sum() / 3  # documented: batch mean
    else:
        Jt = F.cross_entropy(z, torch.tensor(target))
    Jt.backward()
    assert J == pytest.approx(Jt.item(), rel=1e-13)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-15)
    for name, grad in net.grads.items():
        np.testing.assert_allclose(grad, T[name].grad.numpy(), rtol=1e-10, atol=1e-15, err_msg=name)


# ---------------------------------------------------------------------------------------------
# params / grads of a network: flat dicts of the very arrays
# ---------------------------------------------------------------------------------------------


def test_params_is_a_flat_dict_of_the_layers_very_arrays() -> None:
    net = small_net("conv", "mean", "mse")
    expected = ["0.K", "0.b", "1.beta", "1.b", "3.W", "3.b"]
    assert list(net.params) == expected
    assert isinstance(net.params, dict)
    assert net.params["0.K"] is net.layers[0].params["K"]
    assert net.params["1.beta"] is net.layers[1].params["beta"]
    x = _x((2, 2, 8, 7))
    y0 = net.forward(x)
    net.params["1.beta"][0] += 1.0  # in place
    assert not np.allclose(net.forward(x), y0)
    # assigning a key assigns the layer's entry (a complex copy, as the complex step does)
    h = 1e-30
    K = net.params["0.K"]
    net.params["0.K"] = K + 1j * h * np.eye(1, K.size, 5).reshape(K.shape)
    assert net.layers[0].params["K"].dtype == np.complex128
    dy = np.random.default_rng(0).normal(size=y0.shape)
    step = np.vdot(dy, net.forward(x)).imag / h
    net.params["0.K"] = K
    assert net.layers[0].params["K"] is K
    net.forward(x)
    net.backward(dy)
    assert step == pytest.approx(net.grads["0.K"].reshape(-1)[5], rel=1e-12)
    assert list(net.grads) == expected
    assert all(net.grads[k].shape == net.params[k].shape for k in expected)
    net.params.update({"3.b": np.zeros(4)})
    assert np.all(net.layers[3].params["b"] == 0)
    with pytest.raises(KeyError, match=r"'2\.W'"):
        net.params["2.W"] = np.zeros(3)


# ---------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------


def test_mse_is_half_the_batch_mean_of_squared_errors() -> None:
    y = np.array([[1.0, 2.0], [0.0, -1.0], [3.0, 3.0]])
    t = np.array([[0.0, 2.0], [1.0, 1.0], [3.0, 1.0]])
    J, g = mse(y, t)
    assert J == pytest.approx(0.5 * (1 + 0 + 1 + 4 + 0 + 4) / 3, rel=1e-15)
    np.testing.assert_allclose(g, (y - t) / 3, rtol=1e-15)


def test_softmax_cross_entropy_labels_equal_one_hot_and_match_fd() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4, 3))
    labels = np.array([2, 0, 1, 2])
    J, g = softmax_cross_entropy(z, labels)
    J1, g1 = softmax_cross_entropy(z, np.eye(3)[labels])
    assert J == pytest.approx(J1, rel=1e-15)
    np.testing.assert_allclose(g, g1, rtol=1e-15)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    assert J == pytest.approx(-np.mean(np.log(p[np.arange(4), labels])), rel=1e-13)
    zz = z.copy()
    numeric = numerical_vjp(
        lambda: np.array(softmax_cross_entropy(zz, labels)[0]), zz, np.array(1.0)
    )
    assert_vjp_close(g, numeric)
    soft = rng.dirichlet(np.ones(3), size=4) * 2  # rows summing to 2: the general gradient
    zz = z.copy()
    numeric = numerical_vjp(lambda: np.array(softmax_cross_entropy(zz, soft)[0]), zz, np.array(1.0))
    assert_vjp_close(softmax_cross_entropy(z, soft)[1], numeric)


def test_softmax_cross_entropy_is_stable_for_huge_logits() -> None:
    z = np.array([[1e4, 0.0, -1e4], [-5e3, 5e3, 5e3]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # exp may underflow to 0
        J, g = softmax_cross_entropy(z, np.array([0, 1]))
    assert J == pytest.approx(np.log(2) / 2, rel=1e-14)
    np.testing.assert_allclose(g, [[0, 0, 0], [0, -0.25, 0.25]], atol=1e-15)


@pytest.mark.torch
def test_losses_match_torch() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    z, labels = rng.normal(size=(5, 4)) * 3, np.array([0, 3, 1, 1, 2])
    zt = torch.tensor(z, requires_grad=True)
    Jt = torch.nn.functional.cross_entropy(zt, torch.tensor(labels))
    Jt.backward()
    J, g = softmax_cross_entropy(z, labels)
    assert J == pytest.approx(Jt.item(), rel=1e-14)
    np.testing.assert_allclose(g, zt.grad.numpy(), rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize(
    ("fn", "y", "t", "exc", "words"),
    [
        (mse, np.ones((2, 3)), np.ones((3, 2)), ValueError, ["target", "(3, 2)", "(2, 3)"]),
        (mse, np.ones((2, 3)), np.ones((2, 3), int), TypeError, ["target", "int64"]),
        (softmax_cross_entropy, np.ones((2, 3)), np.array([0, 3]), ValueError, ["[0, 3)", "3"]),
        (softmax_cross_entropy, np.ones((2, 3)), np.array([-1, 0]), ValueError, ["[-1, 0]"]),
        (softmax_cross_entropy, np.ones((2, 3)), np.array([0, 1, 2]), ValueError, ["(3,)", "(2,)"]),
        (softmax_cross_entropy, np.ones((2, 3)), np.ones((2, 4)), ValueError, ["(2, 4)", "(2, 3)"]),
        (softmax_cross_entropy, np.ones(3), np.array([0]), ValueError, ["z", "2 dimensions"]),
    ],
)
def test_losses_reject_bad_targets_naming_them(fn, y, t, exc, words) -> None:
    with pytest.raises(exc) as info:
        fn(y, t)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


# ---------------------------------------------------------------------------------------------
# lenet5 and Sequential configuration
# ---------------------------------------------------------------------------------------------


def test_lenet5_builds_the_seeds_network() -> None:
    net = lenet5(seed=0)
    kinds = [type(layer) for layer in net.layers]
    assert kinds == [Conv2D, Subsample, Conv2D, Subsample, Flatten, Dense]
    assert net.params["0.K"].shape == (6, 1, 5, 5)
    assert net.params["2.K"].shape == (16, 6, 5, 5)
    assert net.params["5.W"].shape == (10, 16 * 4 * 4)
    assert net.forward(np.zeros((3, 1, 28, 28))).shape == (3, 10)
    assert net.layers[0].convention == "conv" and net.layers[1].kind == "mean"
    assert net.layers[0].activation.name == "sigmoid"
    assert net.loss_name == "softmax_cross_entropy"
    other = lenet5(in_channels=3, image_size=(16, 21), n_classes=4, kind="max", convention="xcorr")
    assert other.forward(np.zeros((1, 3, 16, 21))).shape == (1, 4)
    np.testing.assert_array_equal(lenet5(seed=3).params["2.K"], lenet5(seed=3).params["2.K"])
    assert not np.array_equal(lenet5(seed=3).params["2.K"], lenet5(seed=4).params["2.K"])
    f32 = lenet5(seed=0, dtype=np.float32, image_size=16)
    assert f32.forward(np.zeros((1, 1, 16, 16), np.float32)).dtype == np.float32
    assert "Subsample(6" in repr(net) and "Dense(256, 10" in repr(net)


@pytest.mark.parametrize(
    ("make", "exc", "words"),
    [
        (lambda: lenet5(image_size=15), ValueError, ["image_size", "16", "15"]),
        (lambda: lenet5(image_size=(28, 12)), ValueError, ["image_size", "(28, 12)"]),
        (lambda: lenet5(n_classes=0), ValueError, ["out_features", "0"]),
        (lambda: lenet5(kind="median"), ValueError, ["kind", "'median'"]),
        (lambda: lenet5(convention="full"), ValueError, ["convention", "'full'"]),
        (lambda: lenet5(activation="gelu"), ValueError, ["activation", "'gelu'"]),
        (lambda: Sequential([]), ValueError, ["layers", "empty"]),
        (lambda: Sequential(Flatten()), TypeError, ["layers must be a list", "got Flatten"]),
        (lambda: Sequential([Flatten(), object()]), TypeError, ["layers[1]", "object"]),
        (lambda: Sequential([Flatten()], loss="hinge"), ValueError, ["loss", "'hinge'", "'mse'"]),
    ],
)
def test_bad_configuration_is_rejected_naming_it(make, exc, words) -> None:
    with pytest.raises(exc) as info:
        make()
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_loss_api_misuse_is_rejected() -> None:
    with pytest.raises(ValueError, match="no loss"):
        Sequential([Activation("tanh")]).loss(np.ones((2, 3)), np.ones((2, 3)))
    net = Sequential([MaxPool2D(2), Flatten()], loss="mse")
    with pytest.raises(ValueError, match="loss_backward called before loss"):
        net.loss_backward()
    with pytest.raises(ValueError, match="backward called before forward"):
        net.backward(np.ones((1, 4)))
    with pytest.raises(ValueError, match=r"target has shape \(1, 3\), expected \(1, 4\)"):
        net.loss(np.ones((1, 1, 4, 4)), np.ones((1, 3)))
