"""Eq. (5)/(6): fully-connected gradients dJ/dW = delta x^T and dJ/db = delta, per batch."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from checks.strategies import dense_configs
from cnn_ref.functional.dense import dense_backward, dense_forward
from property_tests._fd import assert_vjp_close, numerical_vjp


@given(cfg=dense_configs(), seed=st.integers(0, 2**32 - 1))
def test_dense_gradients_are_outer_products_summed_over_the_batch_eq5_eq6(cfg, seed):
    rng = np.random.default_rng(seed)
    x, W, b = (rng.standard_normal(s) for s in (cfg.x_shape, cfg.W_shape, cfg.b_shape))
    delta = rng.standard_normal(cfg.out_shape)
    dx, dW, db = dense_backward(delta, x, W)
    outer = sum(np.outer(delta[m], x[m]) for m in range(cfg.n))  # (5), one sample at a time
    np.testing.assert_allclose(dW, outer, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(db, delta.sum(axis=0), rtol=1e-12, atol=1e-12)  # (6)
    np.testing.assert_allclose(dx, delta @ W, rtol=1e-12, atol=1e-12)

    def f():
        return dense_forward(x, W, b)

    assert_vjp_close(dW, numerical_vjp(f, W, delta))
    assert_vjp_close(db, numerical_vjp(f, b, delta))
    assert_vjp_close(dx, numerical_vjp(f, x, delta))
