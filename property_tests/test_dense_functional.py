"""Fully-connected layer, functional core: eq. (5), (6), summed over a batch.

Oracles: central differences (``_fd``), the per-sample form of eq. (5)/(6) written as a loop,
and PyTorch autograd (``linear``) when torch is installed.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from checks.strategies import dense_configs, well_conditioned_arrays
from cnn_ref.functional.dense import dense_backward, dense_forward
from property_tests._fd import assert_vjp_close, numerical_vjp


@st.composite
def cases(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    cfg = draw(dense_configs(), label="geometry")
    x = draw(well_conditioned_arrays(cfg.x_shape), label="x")
    W = draw(well_conditioned_arrays(cfg.W_shape), label="W")
    b = draw(well_conditioned_arrays(cfg.b_shape), label="b")
    dy = draw(well_conditioned_arrays(cfg.out_shape), label="delta")
    return x, W, b, dy


@given(case=cases())
def test_gradients_match_central_differences_eq5_eq6(case) -> None:
    x, W, b, dy = (a.copy() for a in case)
    dx, dW, db = dense_backward(dy, x, W)

    def f() -> np.ndarray:
        return dense_forward(x, W, b)

    assert_vjp_close(dx, numerical_vjp(f, x, dy))
    assert_vjp_close(dW, numerical_vjp(f, W, dy))  # eq. (5)
    assert_vjp_close(db, numerical_vjp(f, b, dy))  # eq. (6)


@given(case=cases())
def test_batch_gradient_is_the_sum_of_per_sample_eq5_eq6(case) -> None:
    # eq. (5)/(6) per sample: dW = delta x^T, db = delta; a batch sums them
    x, W, _, dy = case
    _, dW, db = dense_backward(dy, x, W)
    dW_n = sum(np.outer(dy[n], x[n]) for n in range(len(x)))
    db_n = sum(dy[n] for n in range(len(x)))
    np.testing.assert_allclose(dW, dW_n, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(db, db_n, rtol=1e-13, atol=1e-13)


def test_forward_is_W_x_plus_b_per_sample() -> None:
    x = np.array([[1.0, 2.0], [0.0, -1.0]])
    W = np.array([[1.0, 0.0], [2.0, 3.0], [0.5, -0.5]])
    b = np.array([0.1, 0.2, 0.3])
    np.testing.assert_allclose(
        dense_forward(x, W, b), [[1.1, 8.2, -0.2], [0.1, -2.8, 0.8]], rtol=1e-15
    )


def test_complex_and_float32_follow_promotion() -> None:
    x, W, b = np.ones((2, 3), np.float32), np.ones((4, 3), np.float32), np.ones(4, np.float32)
    assert dense_forward(x, W, b).dtype == np.float32
    assert all(g.dtype == np.float32 for g in dense_backward(np.ones((2, 4), np.float32), x, W))
    assert dense_forward(x + 1e-20j, W, b).dtype == np.complex64  # float32 + complex


@pytest.mark.torch
@given(case=cases())
def test_matches_torch_linear_autograd(case) -> None:
    torch = pytest.importorskip("torch")
    x, W, b, dy = case
    xt, Wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, W, b))
    yt = torch.nn.functional.linear(xt, Wt, bt)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(dense_forward(x, W, b), yt.detach().numpy(), rtol=1e-13, atol=1e-13)
    for name, ours, theirs in zip(
        ("dx", "dW", "db"), dense_backward(dy, x, W), (xt, Wt, bt), strict=True
    ):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), rtol=1e-13, atol=1e-13, err_msg=name)


_x, _W, _b = np.ones((2, 3)), np.ones((4, 3)), np.ones(4)


@pytest.mark.parametrize(
    ("args", "exc", "words"),
    [
        ((np.ones(3), _W, _b), ValueError, ["x", "2 dimensions", "(3,)"]),
        ((np.ones((2, 5)), _W, _b), ValueError, ["x", "5 features", "W expects 3", "(4, 3)"]),
        ((_x, np.ones((4, 3, 1)), _b), ValueError, ["W", "2 dimensions", "(4, 3, 1)"]),
        ((_x, _W, np.ones(3)), ValueError, ["b", "(3,)", "(4,)"]),
        ((_x.astype(int), _W, _b), TypeError, ["x", "int64"]),
        ((_x, _W, np.array([1.0, np.nan, 0, 0])), ValueError, ["b", "non-finite", "(1,)"]),
    ],
)
def test_forward_rejects_bad_input_naming_it(args: tuple, exc: type, words: list[str]) -> None:
    with pytest.raises(exc) as info:
        dense_forward(*args)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


@pytest.mark.parametrize(
    ("dy", "words"),
    [
        (np.ones((2, 3)), ["dy", "(2, 3)", "(2, 4)"]),
        (np.ones((3, 4)), ["dy", "(3, 4)", "(2, 4)"]),
        (np.ones(4), ["dy", "2 dimensions"]),
    ],
)
def test_backward_rejects_bad_dy_naming_it(dy: np.ndarray, words: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        dense_backward(dy, _x, _W)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
