"""Eq. (18): the delta passed back through a convolution layer.

The derivation's (18) sums ``delta_i`` over j with ``K_ij`` and has no rot180; the derived form sums
over the next layer's maps i with ``K_ij`` (map j's kernel into map i), as a full convolution,
with rot180 of K for true convolution and without it for cross-correlation. cnn_ref's ``dx``
is compared with the derived form, with central differences, and with the derivation's text.
"""

from __future__ import annotations

import numpy as np
from hypothesis import assume, example, given
from hypothesis import strategies as st

from checks.audit.forms import eq18_input_delta
from checks.strategies import ConvConfig, conv_configs
from cnn_ref.functional.conv import conv2d_backward, conv2d_forward
from property_tests._fd import assert_vjp_close, numerical_vjp

conventions = st.sampled_from(["conv", "xcorr"])


@given(
    cfg=conv_configs(max_stride=3, max_padding=2, max_dilation=2),
    convention=conventions,
    seed=st.integers(0, 2**32 - 1),
)
@example(
    cfg=ConvConfig(1, 2, 3, 8, 7, 2, 3, (3, 2), (0, 2), (1, 1)), convention="xcorr", seed=3
).via("stride 3 on 8 rows: trailing rows get zero delta")
def test_input_delta_sums_next_maps_with_kji_full_conv_eq18(cfg, convention, seed):
    rng = np.random.default_rng(seed)
    x, K = rng.standard_normal(cfg.x_shape), rng.standard_normal(cfg.K_shape)
    dy = rng.standard_normal(cfg.out_shape)
    geo = (cfg.stride, cfg.padding, cfg.dilation)
    dx, _, _ = conv2d_backward(
        dy,
        x,
        K,
        stride=cfg.stride,
        padding=cfg.padding,
        dilation=cfg.dilation,
        convention=convention,
    )
    ones = np.ones(cfg.x_shape[1:])  # f' = 1: the layer's own dJ/dx
    derived = np.stack(
        [eq18_input_delta(dy[m], K, ones, convention, "corrected", *geo) for m in range(cfg.n)]
    )
    np.testing.assert_allclose(dx, derived, rtol=1e-10, atol=1e-10)


@given(cfg=conv_configs(max_stride=1, max_padding=0, max_dilation=1), seed=st.integers(0, 99))
def test_eq18_as_written_fails_with_several_maps_and_for_true_convolution(cfg, seed):
    rng = np.random.default_rng(seed)
    c = cfg.c_in
    K = rng.standard_normal((c, c, cfg.kh, cfg.kw))  # as written it needs N_l == N_l+1
    x = rng.standard_normal(cfg.x_shape)
    dy = rng.standard_normal((cfg.n, c, *cfg.out_shape[2:]))
    ones = np.ones(cfg.x_shape[1:])
    as_written = eq18_input_delta(dy[0], K, ones, "conv", "as-written")
    dx_xcorr = conv2d_backward(dy[:1], x[:1], K, convention="xcorr")[0][0]
    dx_conv = conv2d_backward(dy[:1], x[:1], K, convention="conv")[0][0]
    if c == 1:  # one map: only the rot180 matters, and the text is right for xcorr
        np.testing.assert_allclose(as_written, dx_xcorr, rtol=1e-10, atol=1e-10)
        assume(cfg.kh * cfg.kw > 1)
    assert not np.allclose(as_written, dx_conv, rtol=1e-6, atol=1e-9)


@given(
    cfg=conv_configs(max_batch=2, max_channels=3, max_side=7, max_elements=120),
    convention=conventions,
    seed=st.integers(0, 2**32 - 1),
)
def test_input_delta_matches_finite_differences_eq18(cfg, convention, seed):
    rng = np.random.default_rng(seed)
    x, K, b = (rng.standard_normal(s) for s in (cfg.x_shape, cfg.K_shape, cfg.b_shape))
    kw = dict(stride=cfg.stride, padding=cfg.padding, dilation=cfg.dilation, convention=convention)
    dy = rng.standard_normal(cfg.out_shape)
    dx, _, _ = conv2d_backward(dy, x, K, **kw)
    assert_vjp_close(dx, numerical_vjp(lambda: conv2d_forward(x, K, b, **kw), x, dy))
