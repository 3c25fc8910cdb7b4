"""cnn_ref.signal: conv2/xcorr2 against scipy and MATLAB's documented behaviour; down/up adjoint.

Oracles:
- ``scipy.signal.convolve2d`` / ``correlate2d`` for 'full' everywhere, 'valid' where the kernel
  fits, and 'same' for odd kernels -- the cases where scipy and MATLAB agree;
- MATLAB's documentation where they differ: 'same' is "the central part of the convolution,
  the same size as A" starting at row ``floor(mk/2)`` (0-based) of 'full' (so
  ``conv2([1 2 3], [1 1], 'same') == [3 5 3]``), and 'valid' is the part of 'full' "computed
  without the zero-padded edges", of size ``max(ma - max(0, mk - 1), 0)``, hence empty when the
  kernel is larger. These are cropped here from scipy's 'full', not from cnn_ref's.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from cnn_ref.signal import conv2, down, rot180, up, xcorr2

scipy_signal = pytest.importorskip("scipy.signal")


class Pair(NamedTuple):
    a: np.ndarray
    k: np.ndarray


@st.composite
def pairs(draw: st.DrawFn, max_side: int = 7) -> Pair:
    ma = draw(st.integers(1, max_side), label="ma")
    na = draw(st.integers(1, max_side), label="na")
    mk = draw(st.integers(1, max_side), label="mk")
    nk = draw(st.integers(1, max_side), label="nk")
    seed = draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    return Pair(rng.standard_normal((ma, na)), rng.standard_normal((mk, nk)))


def _pair(ma: int, na: int, mk: int, nk: int, seed: int = 0) -> Pair:
    rng = np.random.default_rng(seed)
    return Pair(rng.standard_normal((ma, na)), rng.standard_normal((mk, nk)))


def _matlab_valid(full: np.ndarray, a_shape: tuple[int, ...], k_shape: tuple[int, ...]):
    """MATLAB 'valid': rows mk-1 .. ma-1 of 'full' (0-based), empty if the kernel is larger."""
    (ma, na), (mk, nk) = a_shape, k_shape
    return full[mk - 1 : ma, nk - 1 : na]


def _matlab_same(full: np.ndarray, a_shape: tuple[int, ...], k_shape: tuple[int, ...]):
    (ma, na), (mk, nk) = a_shape, k_shape
    return full[mk // 2 : mk // 2 + ma, nk // 2 : nk // 2 + na]


# ------------------------------------------------------------------------------ conv2


@given(p=pairs())
@example(p=_pair(5, 7, 3, 2))
def test_conv2_full_matches_scipy_convolve2d(p: Pair) -> None:
    np.testing.assert_allclose(
        conv2(p.a, p.k, "full"), scipy_signal.convolve2d(p.a, p.k, "full"), rtol=1e-12, atol=1e-12
    )


@given(p=pairs())
@example(p=_pair(5, 7, 3, 2))
@example(p=_pair(2, 2, 3, 3))  # kernel larger in both axes: scipy swaps, MATLAB is empty
@example(p=_pair(3, 6, 4, 2))  # larger in one axis only: scipy raises, MATLAB is (0, 5)
def test_conv2_valid_is_matlab_valid(p: Pair) -> None:
    (ma, na), (mk, nk) = p.a.shape, p.k.shape
    got = conv2(p.a, p.k, "valid")
    assert got.shape == (max(ma - mk + 1, 0), max(na - nk + 1, 0))
    full = scipy_signal.convolve2d(p.a, p.k, "full")
    np.testing.assert_allclose(got, _matlab_valid(full, p.a.shape, p.k.shape), atol=1e-12)
    if mk <= ma and nk <= na:  # the case where scipy agrees with MATLAB
        np.testing.assert_allclose(got, scipy_signal.convolve2d(p.a, p.k, "valid"), atol=1e-12)


@given(p=pairs())
@example(p=_pair(4, 6, 2, 4))  # even kernel: MATLAB's offset differs from scipy's
@example(p=_pair(2, 3, 5, 6))  # kernel larger than a
def test_conv2_same_is_matlab_same(p: Pair) -> None:
    got = conv2(p.a, p.k, "same")
    assert got.shape == p.a.shape
    full = scipy_signal.convolve2d(p.a, p.k, "full")
    np.testing.assert_allclose(got, _matlab_same(full, p.a.shape, p.k.shape), atol=1e-12)
    if p.k.shape[0] % 2 == 1 and p.k.shape[1] % 2 == 1:  # odd kernels: scipy agrees
        np.testing.assert_allclose(got, scipy_signal.convolve2d(p.a, p.k, "same"), atol=1e-12)


def test_conv2_same_even_kernel_matches_matlab_documented_example() -> None:
    # MATLAB: conv2([1 2 3], [1 1], 'same') returns [3 5 3]; full is [1 3 5 3] (by hand).
    a, k = np.array([[1.0, 2.0, 3.0]]), np.array([[1.0, 1.0]])
    np.testing.assert_array_equal(conv2(a, k, "full"), [[1.0, 3.0, 5.0, 3.0]])
    np.testing.assert_array_equal(conv2(a, k, "same"), [[3.0, 5.0, 3.0]])
    assert not np.array_equal(scipy_signal.convolve2d(a, k, "same"), [[3.0, 5.0, 3.0]])


def test_conv2_flips_the_kernel() -> None:
    # a single 1 at the origin reproduces the kernel unflipped in 'full' (definition of conv)
    a = np.zeros((3, 3))
    a[0, 0] = 1.0
    k = np.arange(4.0).reshape(2, 2)
    np.testing.assert_array_equal(conv2(a, k, "full")[:2, :2], k)
    np.testing.assert_array_equal(xcorr2(a, k, "full")[:2, :2], rot180(k))


# ------------------------------------------------------------------------------ xcorr2, rot180


@given(p=pairs())
def test_xcorr2_full_and_valid_match_scipy_correlate2d(p: Pair) -> None:
    np.testing.assert_allclose(
        xcorr2(p.a, p.k, "full"), scipy_signal.correlate2d(p.a, p.k, "full"), atol=1e-12
    )
    if p.k.shape[0] <= p.a.shape[0] and p.k.shape[1] <= p.a.shape[1]:
        np.testing.assert_allclose(
            xcorr2(p.a, p.k, "valid"), scipy_signal.correlate2d(p.a, p.k, "valid"), atol=1e-12
        )


@given(p=pairs(), mode=st.sampled_from(["full", "same", "valid"]))
def test_xcorr2_is_conv2_with_rot180_kernel(p: Pair, mode: str) -> None:
    k = p.k + 1j * p.k[::-1]  # complex kernels: xcorr2 does not conjugate (unlike scipy)
    np.testing.assert_allclose(xcorr2(p.a, k, mode), conv2(p.a, rot180(k), mode), atol=1e-12)


@given(p=pairs())
def test_rot180_is_rot90_twice_and_an_involution(p: Pair) -> None:
    np.testing.assert_array_equal(rot180(p.k), np.rot90(p.k, 2))
    np.testing.assert_array_equal(rot180(rot180(p.k)), p.k)


def test_conv2_leading_axes_broadcast_slice_by_slice() -> None:
    rng = np.random.default_rng(3)
    a = rng.standard_normal((2, 1, 5, 6))
    k = rng.standard_normal((3, 2, 3))
    for mode in ("full", "same", "valid"):
        got = conv2(a, k, mode)
        assert got.shape[:2] == (2, 3)
        for n in range(2):
            for c in range(3):
                np.testing.assert_allclose(
                    got[n, c],
                    scipy_signal.convolve2d(a[n, 0], k[c], "full")
                    if mode == "full"
                    else conv2(a[n, 0], k[c], mode),
                    atol=1e-12,
                )


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
def test_conv2_dtype_follows_numpy_promotion(dtype: type) -> None:
    a = np.ones((3, 3), dtype=dtype)
    assert conv2(a, np.ones((2, 2), dtype=np.float32)).dtype == np.result_type(dtype, np.float32)
    assert conv2(a, np.ones((2, 2))).dtype == np.result_type(dtype, np.float64)


# ------------------------------------------------------------------------------ down / up


class Pooled(NamedTuple):
    a: np.ndarray
    d: np.ndarray
    n: tuple[int, int]


@st.composite
def pooled(draw: st.DrawFn, ties: bool = False) -> Pooled:
    nh = draw(st.integers(1, 3), label="nh")
    nw = draw(st.integers(1, 3), label="nw")
    h = draw(st.integers(nh, 3 * nh + 2), label="H")  # often not divisible by nh
    w = draw(st.integers(nw, 3 * nw + 2), label="W")
    lead = draw(st.sampled_from([(), (2,), (2, 3)]), label="leading axes")
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="seed"))
    a = rng.standard_normal((*lead, h, w))
    if ties:
        a = np.round(a)  # many equal values inside a block
    d = rng.standard_normal((*lead, h // nh, w // nw))
    return Pooled(a, d, (nh, nw))


@given(p=pooled(), kind=st.sampled_from(["sum", "mean", "max"]))
@example(p=Pooled(np.arange(35.0).reshape(5, 7), np.ones((2, 3)), (2, 2)), kind="max")
def test_up_is_the_exact_adjoint_of_down(p: Pooled, kind: str) -> None:
    lhs = np.vdot(down(p.a, p.n, kind), p.d)
    rhs = np.vdot(p.a, up(p.d, p.n, kind, shape=p.a.shape, a=p.a if kind == "max" else None))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12, atol=1e-12)


@given(p=pooled(ties=True), kind=st.sampled_from(["sum", "mean", "max"]))
def test_down_and_up_match_a_block_loop(p: Pooled, kind: str) -> None:
    nh, nw = p.n
    a2 = p.a.reshape(-1, *p.a.shape[-2:])
    d2 = p.d.reshape(-1, *p.d.shape[-2:])
    want_down = np.zeros(d2.shape)
    want_up = np.zeros(a2.shape)
    for s in range(a2.shape[0]):
        for i in range(d2.shape[1]):
            for j in range(d2.shape[2]):
                block = a2[s, i * nh : (i + 1) * nh, j * nw : (j + 1) * nw]
                target = want_up[s, i * nh : (i + 1) * nh, j * nw : (j + 1) * nw]
                if kind == "max":
                    want_down[s, i, j] = block.max()
                    r, c = divmod(int(np.argmax(block)), nw)  # first maximum, row-major
                    target[r, c] = d2[s, i, j]
                else:
                    scale = 1.0 / (nh * nw) if kind == "mean" else 1.0
                    want_down[s, i, j] = block.sum() * scale
                    target[...] = d2[s, i, j] * scale
    np.testing.assert_allclose(down(p.a, p.n, kind), want_down.reshape(p.d.shape), atol=1e-12)
    got_up = up(p.d, p.n, kind, a=p.a) if kind == "max" else up(p.d, p.n, kind, shape=p.a.shape)
    np.testing.assert_allclose(got_up, want_up.reshape(p.a.shape), atol=1e-12)


def test_up_zero_fills_cropped_border_and_default_shape() -> None:
    d = np.array([[1.0, 2.0]])
    got = up(d, (2, 2), "sum", shape=(3, 5))
    np.testing.assert_array_equal(got, [[1, 1, 2, 2, 0], [1, 1, 2, 2, 0], [0, 0, 0, 0, 0]])
    assert up(d, 2).shape == (2, 4)


def test_up_max_routes_complex_steps_by_real_part() -> None:
    a = np.array([[1.0 + 5j, 2.0 + 0j], [0.0, 0.0]])
    assert down(a, 2, "max")[0, 0] == 2.0 + 0j
    np.testing.assert_array_equal(up(np.array([[1.0]]), 2, "max", a=a), [[0, 1], [0, 0]])


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (
            lambda: conv2(np.ones((3, 3)), np.ones((2, 2)), "circular"),
            ValueError,
            "mode.*'circular'",
        ),
        (lambda: conv2([[1.0]], np.ones((1, 1))), TypeError, "a must be a numpy.ndarray, got list"),
        (lambda: conv2(np.ones((3, 3), int), np.ones((2, 2))), TypeError, "a must have a floating"),
        (lambda: conv2(np.ones(3), np.ones((2, 2))), ValueError, r"a must have non-empty.*\(3,\)"),
        (lambda: conv2(np.ones((3, 0)), np.ones((2, 2))), ValueError, r"a .*\(3, 0\)"),
        (lambda: conv2(np.ones((3, 3)), np.full((2, 2), np.nan)), ValueError, "k contains 4 non"),
        (lambda: conv2(np.ones((2, 3, 3)), np.ones((4, 2, 2))), ValueError, "do not broadcast"),
        (lambda: xcorr2(np.ones((3, 3)), np.ones((2, 2), int)), TypeError, "k must have"),
        (lambda: rot180(np.ones(3)), ValueError, "at least 2 dimensions"),
        (lambda: down(np.ones((4, 4)), 2, "median"), ValueError, "kind.*'median'"),
        (lambda: down(np.ones((4, 4)), 0), ValueError, "n must be >= 1, got 0"),
        (lambda: down(np.ones((4, 4)), 2.5), TypeError, "n must be an int"),
        (lambda: down(np.ones((1, 4)), 2), ValueError, r"\(1, 4\) is smaller than one 2x2"),
        (lambda: up(np.ones((2, 2)), 2, "max"), ValueError, "needs a="),
        (lambda: up(np.ones((2, 2)), 2, shape=(3, 3)), ValueError, r"d has shape \(2, 2\)"),
        (lambda: up(np.ones((2, 2)), 2, shape=(4, 4), a=np.ones((5, 5))), ValueError, "disagrees"),
        (lambda: up(np.full((1, 1), np.inf), 2), ValueError, "d contains 1 non-finite"),
    ],
)
def test_bad_input_raises_naming_argument_and_value(call, exc, match) -> None:
    with pytest.raises(exc, match=match):
        call()
