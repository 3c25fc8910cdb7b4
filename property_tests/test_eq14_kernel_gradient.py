"""Eq. (12)-(14): the kernel and bias gradients of a convolution layer.

cnn_ref's ``dK`` is compared with (a) the derived form written in the derivation's vocabulary
(``checks.audit.forms.eq14_kernel_grad``), (b) independent central differences
(``property_tests._fd``), and the as-written (14) is shown to be the kernel gradient of
true convolution only.
"""

from __future__ import annotations

import numpy as np
from hypothesis import assume, example, given
from hypothesis import strategies as st

from checks.audit.forms import eq13_kernel_grad, eq14_kernel_grad
from checks.strategies import ConvConfig, conv_configs
from cnn_ref.functional.conv import conv2d_backward, conv2d_forward
from property_tests._fd import assert_vjp_close, numerical_vjp

conventions = st.sampled_from(["conv", "xcorr"])


def _draw(cfg: ConvConfig, seed: int):
    rng = np.random.default_rng(seed)
    x, K, b = (rng.standard_normal(s) for s in (cfg.x_shape, cfg.K_shape, cfg.b_shape))
    return rng, x, K, b


def _kw(cfg: ConvConfig, convention: str) -> dict:
    return dict(
        stride=cfg.stride, padding=cfg.padding, dilation=cfg.dilation, convention=convention
    )


@given(
    cfg=conv_configs(max_stride=3, max_padding=2, max_dilation=2),
    convention=conventions,
    seed=st.integers(0, 2**32 - 1),
)
@example(
    cfg=ConvConfig(2, 2, 3, 7, 8, 3, 2, (2, 3), (1, 0), (1, 1)), convention="conv", seed=0
).via("stride not dividing the padded size, non-square kernel, N_in != N_out")
def test_kernel_gradient_is_rot180_of_valid_conv_eq14(cfg, convention, seed):
    _, x, K, _ = _draw(cfg, seed)
    kw = _kw(cfg, convention)
    geo = (cfg.stride, cfg.padding, cfg.dilation)
    dy = np.random.default_rng(seed + 1).standard_normal(cfg.out_shape)
    _, dK, db = conv2d_backward(dy, x, K, **kw)
    derived = sum(
        eq14_kernel_grad(x[m], dy[m], cfg.kernel_size, convention, "corrected", *geo)
        for m in range(cfg.n)
    )  # summed over the batch
    np.testing.assert_allclose(dK, derived, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(db, dy.sum(axis=(0, 2, 3)), rtol=1e-12, atol=1e-12)  # eq. (12)


@given(cfg=conv_configs(max_stride=1, max_padding=0, max_dilation=1), seed=st.integers(0, 99))
def test_eq14_as_written_is_the_true_convolution_gradient_only(cfg, seed):
    _, x, K, _ = _draw(cfg, seed)
    dy = np.random.default_rng(seed + 1).standard_normal(cfg.out_shape)
    as_written = sum(
        eq14_kernel_grad(x[m], dy[m], cfg.kernel_size, "conv", "as-written") for m in range(cfg.n)
    )
    _, dK_conv, _ = conv2d_backward(dy, x, K, convention="conv")
    _, dK_xcorr, _ = conv2d_backward(dy, x, K, convention="xcorr")
    np.testing.assert_allclose(as_written, dK_conv, rtol=1e-10, atol=1e-10)
    # the two conventions' kernel gradients are each other's rot180
    np.testing.assert_allclose(dK_xcorr, dK_conv[..., ::-1, ::-1], rtol=1e-10, atol=1e-10)
    assume(cfg.kh * cfg.kw > 1)  # a 1x1 kernel is its own rot180
    assert not np.allclose(as_written, dK_xcorr, rtol=1e-6, atol=1e-9)


@given(cfg=conv_configs(max_stride=1, max_padding=0, max_dilation=1), seed=st.integers(0, 99))
def test_patch_sum_eq13_needs_the_flipped_window_for_true_convolution(cfg, seed):
    _, x, K, _ = _draw(cfg, seed)
    dy = np.random.default_rng(seed).standard_normal(cfg.out_shape)
    for convention in ("conv", "xcorr"):
        _, dK, _ = conv2d_backward(dy[:1], x[:1], K, convention=convention)
        corrected = eq13_kernel_grad(x[0], dy[0], cfg.kernel_size, convention, "corrected")
        np.testing.assert_allclose(dK, corrected, rtol=1e-10, atol=1e-10)
    plain = eq13_kernel_grad(x[0], dy[0], cfg.kernel_size, "xcorr", "as-written")
    _, dK_xcorr, _ = conv2d_backward(dy[:1], x[:1], K, convention="xcorr")
    np.testing.assert_allclose(plain, dK_xcorr, rtol=1e-10, atol=1e-10)


@given(
    cfg=conv_configs(max_batch=2, max_channels=3, max_side=7, max_elements=120),
    convention=conventions,
    seed=st.integers(0, 2**32 - 1),
)
def test_kernel_and_bias_gradients_match_finite_differences_eq12_eq14(cfg, convention, seed):
    rng, x, K, b = _draw(cfg, seed)
    kw = _kw(cfg, convention)
    dy = rng.standard_normal(cfg.out_shape)
    _, dK, db = conv2d_backward(dy, x, K, **kw)
    assert_vjp_close(dK, numerical_vjp(lambda: conv2d_forward(x, K, b, **kw), K, dy))
    assert_vjp_close(db, numerical_vjp(lambda: conv2d_forward(x, K, b, **kw), b, dy))
