"""Eq. (1) and (3), the forward passes, against independent oracles.

(1) U_i = sum_j conv2(A_j, K_ij, 'valid') + b_i, with scipy's ``convolve2d`` as conv2 (true
convolution) and ``correlate2d`` for the cross-correlation convention; (3) U_i = beta_i
down(A_i) + b_i with down written as an explicit loop over blocks.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from checks.strategies import conv_configs, subsample_configs, tie_free_arrays
from cnn_ref.functional.conv import conv2d_forward
from cnn_ref.functional.subsample import subsample_forward

scipy_signal = pytest.importorskip("scipy.signal")


@given(
    cfg=conv_configs(max_stride=1, max_padding=0, max_dilation=1),
    convention=st.sampled_from(["conv", "xcorr"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_conv_forward_is_the_sum_over_input_maps_of_valid_conv2_eq1(cfg, convention, seed):
    rng = np.random.default_rng(seed)
    x, K, b = (rng.standard_normal(s) for s in (cfg.x_shape, cfg.K_shape, cfg.b_shape))
    op = scipy_signal.convolve2d if convention == "conv" else scipy_signal.correlate2d
    expected = np.array(
        [
            [
                sum(op(x[m, j], K[i, j], mode="valid") for j in range(cfg.c_in)) + b[i]
                for i in range(cfg.c_out)
            ]
            for m in range(cfg.n)
        ]
    )
    np.testing.assert_allclose(
        conv2d_forward(x, K, b, convention=convention), expected, rtol=1e-12, atol=1e-12
    )


@given(cfg=subsample_configs(overlapping=True), data=st.data())
def test_subsample_forward_is_beta_down_plus_b_eq3(cfg, data):
    x = data.draw(tie_free_arrays(cfg.x_shape), label="x")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    beta, b = rng.uniform(-2, 2, cfg.c), rng.standard_normal(cfg.c)
    reduce = {"sum": np.sum, "mean": np.mean, "max": np.max}[cfg.kind]
    _, _, ho, wo = cfg.out_shape
    (sh, sw), (th, tw) = cfg.size, cfg.stride
    down = np.empty(cfg.out_shape)
    for s in range(ho):
        for t in range(wo):
            down[:, :, s, t] = reduce(
                x[:, :, s * th : s * th + sh, t * tw : t * tw + sw], axis=(2, 3)
            )
    expected = beta[:, None, None] * down + b[:, None, None]
    u = subsample_forward(x, beta, b, size=cfg.size, stride=cfg.stride, kind=cfg.kind)
    np.testing.assert_allclose(u, expected, rtol=1e-12, atol=1e-12)
