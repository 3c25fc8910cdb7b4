"""cnn_ref.functional.conv: eq. (1), (12), (13)/(14), (18), literal vs fast, against oracles.

Oracles: the literal path (the derivation's equations per channel pair, built on cnn_ref.signal,
itself checked against scipy), central finite differences (property_tests/_fd.py, shares
nothing with the checker), and PyTorch's conv2d + autograd for the cross-correlation
convention (and, through a flipped kernel, for true convolution).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from checks.strategies import ConvConfig, conv_configs
from cnn_ref.functional.conv import conv2d_backward, conv2d_forward
from property_tests._fd import assert_vjp_close, numerical_vjp


def _kw(g: ConvConfig) -> dict:
    return {"stride": g.stride, "padding": g.padding, "dilation": g.dilation}


def _arrays(g: ConvConfig, seed: int, dtype: type = np.float64):
    """``x, K, b, dy`` of geometry ``g`` drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(g.x_shape).astype(dtype)
    K = rng.standard_normal(g.K_shape).astype(dtype)
    b = rng.standard_normal(g.b_shape).astype(dtype)
    dy = rng.standard_normal(g.out_shape).astype(dtype)
    return x, K, b, dy


def geometries(max_side: int = 8) -> st.SearchStrategy[ConvConfig]:
    return conv_configs(
        max_batch=2, max_channels=3, max_side=max_side, max_kernel=4, max_stride=3,
        max_padding=2, max_dilation=2,
    )  # fmt: skip


seeds = st.integers(0, 2**32 - 1)
G_STRIDED = ConvConfig(2, 3, 2, 7, 6, 3, 2, (2, 3), (1, 0), (1, 2))  # sizes not divisible
G_PLAIN = ConvConfig(1, 2, 3, 5, 6, 3, 2, (1, 1), (0, 0), (1, 1))  # non-square, C_in != C_out
G_PAD_DIL = ConvConfig(2, 1, 2, 4, 5, 2, 3, (1, 1), (2, 1), (2, 1))
G_1x1 = ConvConfig(1, 2, 2, 3, 3, 3, 3, (1, 1), (0, 0), (1, 1))  # 'valid' output is 1x1


def _close(a: np.ndarray, b: np.ndarray, tol: float = 1e-12) -> None:
    scale = max(1.0, float(np.max(np.abs(b), initial=0.0)))
    np.testing.assert_allclose(a, b, rtol=0, atol=tol * scale)


# ------------------------------------------------------------------------------ literal == fast


@given(g=geometries(), convention=st.sampled_from(["conv", "xcorr"]), seed=seeds)
@example(g=G_STRIDED, convention="conv", seed=0)
@example(g=G_PAD_DIL, convention="xcorr", seed=2)
@example(g=G_1x1, convention="conv", seed=3)
def test_literal_and_fast_paths_agree_forward_and_backward(
    g: ConvConfig, convention: str, seed: int
) -> None:
    x, K, b, dy = _arrays(g, seed)
    kw = {**_kw(g), "convention": convention}
    u_lit = conv2d_forward(x, K, b, impl="literal", **kw)
    u_fast = conv2d_forward(x, K, b, impl="fast", **kw)
    assert u_fast.shape == g.out_shape
    _close(u_fast, u_lit)
    for fast, lit in zip(
        conv2d_backward(dy, x, K, impl="fast", **kw),
        conv2d_backward(dy, x, K, impl="literal", **kw),
        strict=True,
    ):
        assert fast.shape == lit.shape
        _close(fast, lit)


@given(g=geometries(max_side=6), convention=st.sampled_from(["conv", "xcorr"]), seed=seeds)
@example(g=G_STRIDED, convention="xcorr", seed=0)
def test_complex_inputs_agree_and_forward_is_complex_linear(
    g: ConvConfig, convention: str, seed: int
) -> None:
    x, K, b, dy = _arrays(g, seed)
    v = np.random.default_rng(seed + 1).standard_normal(x.shape)
    kw = {**_kw(g), "convention": convention}
    zero = np.zeros_like(b)
    # complex step: Im f(x + i h v) / h is the directional derivative, exactly for a linear map
    h = 1e-20
    step = conv2d_forward(x + 1j * h * v, K, b, **kw).imag / h
    _close(step, conv2d_forward(v, K, zero, **kw))
    xc = x + 1j * v
    _close(conv2d_forward(xc, K, b, **kw), conv2d_forward(xc, K, b, impl="literal", **kw))
    dyc = dy - 0.5j * dy[..., ::-1]
    for fast, lit in zip(
        conv2d_backward(dyc, xc, K, **kw),
        conv2d_backward(dyc, xc, K, impl="literal", **kw),
        strict=True,
    ):
        assert np.iscomplexobj(fast)
        _close(fast, lit)


# ------------------------------------------------------------------------------ finite differences


@given(
    g=geometries(max_side=6),
    convention=st.sampled_from(["conv", "xcorr"]),
    impl=st.sampled_from(["fast", "literal"]),
    seed=seeds,
)
@example(g=G_STRIDED, convention="conv", impl="fast", seed=0)
@example(g=G_PLAIN, convention="conv", impl="literal", seed=1)
def test_gradients_match_central_differences_eq12_eq14_eq18(
    g: ConvConfig, convention: str, impl: str, seed: int
) -> None:
    assume(g.n * g.c_in * g.h * g.w <= 80)  # keep the finite-difference loops cheap
    x, K, b, dy = _arrays(g, seed)
    kw = {**_kw(g), "convention": convention, "impl": impl}
    dx, dK, db = conv2d_backward(dy, x, K, **kw)

    def f() -> np.ndarray:
        return conv2d_forward(x, K, b, **kw)

    assert_vjp_close(dx, numerical_vjp(f, x, dy))  # eq. (18)
    assert_vjp_close(dK, numerical_vjp(f, K, dy))  # eq. (13)/(14)
    assert_vjp_close(db, numerical_vjp(f, b, dy))  # eq. (12)


def test_kernel_gradient_is_rot180_of_valid_conv_eq14_only_for_true_convolution() -> None:
    # eq. (14) taken as written: rot180(conv2(A_j, rot180(delta_i), 'valid'))
    from cnn_ref.signal import conv2, rot180

    x, K, _b, dy = _arrays(G_PLAIN, 1)
    eq14 = np.stack(
        [
            np.stack([rot180(conv2(x[0, j], rot180(dy[0, i]), "valid")) for j in range(2)])
            for i in range(3)
        ]
    )
    _close(conv2d_backward(dy, x, K, convention="conv")[1], eq14)
    assert not np.allclose(conv2d_backward(dy, x, K, convention="xcorr")[1], eq14)


# ------------------------------------------------------------------------------ PyTorch oracle


@pytest.mark.torch
@given(g=geometries(), convention=st.sampled_from(["conv", "xcorr"]), seed=seeds)
@example(g=G_STRIDED, convention="xcorr", seed=0)
@example(g=G_PAD_DIL, convention="conv", seed=2)
def test_matches_torch_conv2d_and_autograd(g: ConvConfig, convention: str, seed: int) -> None:
    torch = pytest.importorskip("torch")
    x, K, b, dy = _arrays(g, seed)
    xt = torch.tensor(x, requires_grad=True)
    Kt = torch.tensor(K, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    # torch correlates; true convolution is correlation with the flipped kernel
    Kused = Kt if convention == "xcorr" else torch.flip(Kt, dims=(2, 3))
    ut = torch.nn.functional.conv2d(
        xt, Kused, bt, stride=g.stride, padding=g.padding, dilation=g.dilation
    )
    ut.backward(torch.tensor(dy))
    kw = {**_kw(g), "convention": convention}
    _close(conv2d_forward(x, K, b, **kw), ut.detach().numpy())
    dx, dK, db = conv2d_backward(dy, x, K, **kw)
    _close(dx, xt.grad.numpy())
    _close(dK, Kt.grad.numpy())
    _close(db, bt.grad.numpy())


# ------------------------------------------------------------------------------ dtypes


@pytest.mark.parametrize(
    ("dx_", "dk_", "want"),
    [
        (np.float32, np.float32, np.float32),
        (np.float32, np.float64, np.float64),
        (np.float64, np.complex64, np.complex128),
        (np.complex64, np.float32, np.complex64),
    ],
)
@pytest.mark.parametrize("impl", ["fast", "literal"])
def test_results_follow_numpy_promotion(dx_: type, dk_: type, want: type, impl: str) -> None:
    x, K, b, dy = _arrays(G_STRIDED, 0)
    x, K, b, dy = x.astype(dx_), K.astype(dk_), b.astype(dk_), dy.astype(dx_)
    u = conv2d_forward(x, K, b, impl=impl, **_kw(G_STRIDED))
    assert u.dtype == want
    for grad in conv2d_backward(dy, x, K, impl=impl, **_kw(G_STRIDED)):
        assert grad.dtype == want
    u64 = conv2d_forward(
        x.astype(np.complex128),
        K.astype(np.complex128),
        b.astype(np.complex128),
        **_kw(G_STRIDED),
    )
    _close(u, u64, tol=1e-5)


def test_float32_fast_path_is_accurate_to_float32_rounding() -> None:
    x, K, b, _dy = _arrays(ConvConfig(2, 16, 8, 12, 10, 3, 3, (1, 1), (1, 1), (1, 1)), 5)
    u32 = conv2d_forward(x.astype(np.float32), K.astype(np.float32), b.astype(np.float32))
    _close(u32, conv2d_forward(x, K, b), tol=1e-5)


def test_inputs_are_not_modified_and_noncontiguous_inputs_work() -> None:
    x, K, b, dy = _arrays(G_STRIDED, 0)
    xs = np.asfortranarray(x)
    Ks = K[:, :, ::-1, :][:, :, ::-1, :]  # a view with negative strides, same values
    copies = [a.copy() for a in (x, K, b, dy)]
    _close(conv2d_forward(xs, Ks, b, **_kw(G_STRIDED)), conv2d_forward(x, K, b, **_kw(G_STRIDED)))
    conv2d_backward(dy, xs, Ks, **_kw(G_STRIDED))
    for before, after in zip(copies, (x, K, b, dy), strict=True):
        np.testing.assert_array_equal(before, after)


# ------------------------------------------------------------------------------ bad input

_X = np.ones((2, 3, 5, 5))
_K = np.ones((4, 3, 3, 3))
_B = np.ones(4)
_DY = np.ones((2, 4, 3, 3))


def _nan(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flat[1] = np.nan
    return a


@pytest.mark.parametrize("impl", ["fast", "literal"])
@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"x": _X.tolist()}, TypeError, "x must be a numpy.ndarray, got list"),
        ({"x": _X.astype(int)}, TypeError, "x must have a floating or complex dtype, got int"),
        ({"x": _X[0]}, ValueError, r"x must have 4 dimensions, got shape \(3, 5, 5\)"),
        ({"x": _nan(_X)}, ValueError, r"x contains 1 non-finite value.*\(0, 0, 0, 1\)"),
        ({"K": _K[:, :2]}, ValueError, r"x has 3 channels .* K of shape \(4, 2, 3, 3\)"),
        ({"K": _nan(_K)}, ValueError, "K contains 1 non-finite"),
        ({"K": np.ones((4, 3, 6, 3))}, ValueError, r"kernel of size \(6, 3\).*\(5, 5\)"),
        ({"dilation": 3}, ValueError, r"dilated: \(7, 7\)"),
        ({"b": np.ones(3)}, ValueError, r"b must have shape \(4,\).*got \(3,\)"),
        ({"b": np.ones((4, 1))}, ValueError, r"b must have 1 dimensions, got shape \(4, 1\)"),
        ({"b": _nan(_B)}, ValueError, "b contains 1 non-finite"),
        ({"stride": 0}, ValueError, "stride must be >= 1, got 0"),
        ({"stride": (1, -2)}, ValueError, r"stride must be >= 1, got \(1, -2\)"),
        ({"stride": 1.5}, TypeError, "stride must be an int or a pair of ints.*1.5"),
        ({"stride": (1, 2, 3)}, TypeError, r"stride must be .*\(1, 2, 3\)"),
        ({"stride": True}, TypeError, "stride must be an int .*True"),
        ({"padding": -1}, ValueError, "padding must be >= 0, got -1"),
        ({"dilation": 0}, ValueError, "dilation must be >= 1, got 0"),
        ({"convention": "correlate"}, ValueError, "convention must be one of 'conv', 'xcorr'"),
        ({"impl": "gpu"}, ValueError, "impl must be one of 'fast', 'literal', got 'gpu'"),
    ],
)
def test_bad_input_raises_naming_argument_and_value(kwargs, exc, match, impl) -> None:
    args = {"x": _X, "K": _K, "b": _B, "impl": impl, **kwargs}
    fwd = dict(args)
    with pytest.raises(exc, match=match):
        conv2d_forward(fwd.pop("x"), fwd.pop("K"), fwd.pop("b"), **fwd)
    if "b" in kwargs:
        return  # the bias does not enter the backward pass
    bwd = dict(args)
    bwd.pop("b")
    with pytest.raises(exc, match=match):
        conv2d_backward(_DY, bwd.pop("x"), bwd.pop("K"), **bwd)


@pytest.mark.parametrize("impl", ["fast", "literal"])
@pytest.mark.parametrize(
    ("dy", "exc", "match"),
    [
        (np.ones((2, 4, 3, 4)), ValueError, r"dy has shape \(2, 4, 3, 4\).*\(2, 4, 3, 3\)"),
        (np.ones((1, 4, 3, 3)), ValueError, r"dy has shape \(1, 4, 3, 3\)"),
        (_DY[0], ValueError, "dy must have 4 dimensions"),
        (_nan(_DY), ValueError, "dy contains 1 non-finite"),
        (_DY.astype(np.int64), TypeError, "dy must have a floating or complex dtype"),
    ],
)
def test_bad_delta_raises(dy, exc, match, impl) -> None:
    with pytest.raises(exc, match=match):
        conv2d_backward(dy, _X, _K, impl=impl)


def test_non_finite_check_is_exact_on_large_arrays() -> None:
    # large arrays are screened by their sum; an overflowing sum of finite values must pass
    from cnn_ref._validate import check_array

    big = np.full(70000, 1e308)
    assert check_array(big, "x") is big
    big[12345] = np.inf
    with pytest.raises(ValueError, match=r"x contains 1 non-finite value.*\(12345,\)"):
        check_array(big, "x")


@pytest.mark.parametrize("samples_per_chunk", [1, 2])
@pytest.mark.parametrize(
    "case",
    [
        (G_STRIDED._replace(n=3), 0),
        (G_PAD_DIL._replace(n=3), 2),
        (ConvConfig(3, 2, 4, 32, 30, 2, 3, (1, 1), (0, 1), (1, 1)), 4),  # col2im at stride 1
    ],
)
def test_fast_path_is_exact_across_batch_chunks(monkeypatch, samples_per_chunk, case) -> None:
    # the fast path packs samples side by side in chunks; small tests fit in one chunk, so
    # force several chunks with a ragged last one (3 samples, chunks of 1 or 2)
    from cnn_ref.functional import _conv_fast

    g, seed = case
    x, K, b, dy = _arrays(g, seed)
    monkeypatch.setattr(_conv_fast, "_chunk", lambda n, nbytes: min(n, samples_per_chunk))
    for convention in ("conv", "xcorr"):
        kw = {**_kw(g), "convention": convention}
        _close(conv2d_forward(x, K, b, **kw), conv2d_forward(x, K, b, impl="literal", **kw))
        for fast, lit in zip(
            conv2d_backward(dy, x, K, **kw),
            conv2d_backward(dy, x, K, impl="literal", **kw),
            strict=True,
        ):
            _close(fast, lit)


@pytest.mark.parametrize(
    ("case", "uses_col2im"),
    [
        ((ConvConfig(2, 2, 4, 32, 31, 3, 3, (1, 1), (1, 1), (1, 2)), 7), True),  # C_in <= C_out / 2
        (
            (ConvConfig(2, 4, 2, 32, 31, 3, 3, (1, 1), (1, 1), (1, 2)), 8),
            False,
        ),  # 'full' corr. of dy
        ((G_STRIDED, 0), True),
    ],
)
def test_both_input_gradient_algorithms_agree_with_literal(monkeypatch, case, uses_col2im) -> None:
    # the fast dx picks col2im or a 'full' correlation of dy by shape; check each branch is hit
    from cnn_ref.functional import _conv_fast

    calls = []
    real = _conv_fast._col2im
    monkeypatch.setattr(_conv_fast, "_col2im", lambda *a: calls.append(1) or real(*a))
    g, seed = case
    x, K, _b, dy = _arrays(g, seed)
    for convention in ("conv", "xcorr"):
        kw = {**_kw(g), "convention": convention}
        dx = conv2d_backward(dy, x, K, **kw)[0]
        _close(dx, conv2d_backward(dy, x, K, impl="literal", **kw)[0])
    assert bool(calls) == uses_col2im
