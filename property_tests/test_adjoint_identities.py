"""Exact identities (no finite differences): conv2/xcorr2/rot180, and backward as the adjoint.

For a map that is linear in each argument, the backward pass is the adjoint of the forward
pass, so ``<forward(x, K), D> = <x, dx(D)> = <K, dK(D)>`` holds to rounding (~1e-12 relative).
This checks eq. (14) and the input delta of eq. (18) for every convention, stride, padding and
dilation without any step size; ``<down(A), D> = <A, up(D)>`` checks the up-sampling of
eq. (10)/(11) for every pooling kind and for sizes that do not divide by the block.
"""

from __future__ import annotations

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st

from checks.strategies import (
    ConvConfig,
    conv_configs,
    subsample_configs,
    tie_free_arrays,
    well_conditioned_arrays,
)
from cnn_ref import signal
from cnn_ref.functional.conv import conv2d_backward, conv2d_forward
from cnn_ref.functional.subsample import subsample_backward, subsample_forward

TOL = 1e-12


def _close(a: float, b: float, *scales: float) -> bool:
    scale = max(1.0, abs(a), abs(b), *scales)
    return abs(a - b) <= TOL * scale


@given(
    a=well_conditioned_arrays((5, 7)),
    k=well_conditioned_arrays((3, 2)),
    mode=st.sampled_from(["full", "same", "valid"]),
)
def test_xcorr2_is_conv2_with_rot180_kernel(a, k, mode):
    np.testing.assert_allclose(
        signal.xcorr2(a, k, mode), signal.conv2(a, signal.rot180(k), mode), rtol=TOL, atol=TOL
    )
    np.testing.assert_array_equal(signal.rot180(signal.rot180(k)), k)


@given(a=well_conditioned_arrays((4, 6)), k=well_conditioned_arrays((2, 3)))
def test_conv2_full_is_commutative_and_valid_is_a_window_of_full(a, k):
    full = signal.conv2(a, k, "full")
    np.testing.assert_allclose(full, signal.conv2(k, a, "full"), rtol=TOL, atol=TOL)
    np.testing.assert_allclose(signal.conv2(a, k, "valid"), full[1:-1, 2:-2], rtol=TOL, atol=TOL)


def _conv_kwargs(cfg: ConvConfig, convention: str) -> dict:
    return dict(
        stride=cfg.stride, padding=cfg.padding, dilation=cfg.dilation, convention=convention
    )


@given(
    cfg=conv_configs(max_stride=3, max_padding=2, max_dilation=2),
    convention=st.sampled_from(["conv", "xcorr"]),
    data=st.data(),
)
@example(  # stride 2 on sizes that do not divide: the last row/column is never read
    cfg=ConvConfig(1, 2, 3, 6, 7, 2, 3, (2, 2), (0, 1), (1, 1)),
    convention="conv",
    data=None,
).via("regression: trailing rows skipped by the stride")
def test_conv_backward_is_the_adjoint_of_forward_eq14_eq18(cfg, convention, data):
    seed = 0 if data is None else data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(cfg.x_shape)
    K = rng.standard_normal(cfg.K_shape)
    b = np.zeros(cfg.b_shape)
    kw = _conv_kwargs(cfg, convention)
    u = conv2d_forward(x, K, b, **kw)
    D = rng.standard_normal(u.shape)
    dx, dK, db = conv2d_backward(D, x, K, **kw)
    lhs = float(np.vdot(u, D))
    scale = float(np.abs(u).sum() * np.abs(D).max())
    assert _close(lhs, float(np.vdot(x, dx)), scale)
    assert _close(lhs, float(np.vdot(K, dK)), scale)
    np.testing.assert_allclose(db, D.sum(axis=(0, 2, 3)), rtol=TOL, atol=TOL)


@given(
    cfg=conv_configs(max_stride=2, max_padding=2, max_dilation=2, max_elements=200),
    convention=st.sampled_from(["conv", "xcorr"]),
    data=st.data(),
)
def test_literal_and_fast_conv_agree(cfg, convention, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    x, K = rng.standard_normal(cfg.x_shape), rng.standard_normal(cfg.K_shape)
    b = rng.standard_normal(cfg.b_shape)
    kw = _conv_kwargs(cfg, convention)
    u_fast = conv2d_forward(x, K, b, impl="fast", **kw)
    np.testing.assert_allclose(conv2d_forward(x, K, b, impl="literal", **kw), u_fast, atol=1e-12)
    D = rng.standard_normal(u_fast.shape)
    for lit, fast in zip(
        conv2d_backward(D, x, K, impl="literal", **kw),
        conv2d_backward(D, x, K, impl="fast", **kw),
        strict=True,
    ):
        np.testing.assert_allclose(lit, fast, rtol=1e-12, atol=1e-12)


@given(
    shape=st.tuples(st.integers(1, 3), st.integers(2, 11), st.integers(2, 11)),
    n=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    kind=st.sampled_from(["sum", "mean", "max"]),
    data=st.data(),
)
@example(shape=(1, 5, 7), n=(2, 3), kind="mean", data=None).via("non-divisible, non-square block")
def test_up_is_the_adjoint_of_down_eq10(shape, n, kind, data):
    if data is None:
        a = np.random.default_rng(1).permutation(int(np.prod(shape))).reshape(shape) * 0.1
    else:
        a = data.draw(tie_free_arrays(shape), label="a")
    if shape[1] < n[0] or shape[2] < n[1]:
        n = (1, 1)
    d = np.random.default_rng(2).standard_normal(signal.down(a, n, kind).shape)
    lhs = float(np.vdot(signal.down(a, n, kind), d))
    rhs = float(np.vdot(a, signal.up(d, n, kind, shape=a.shape, a=a)))
    assert _close(lhs, rhs, float(np.abs(a).sum() * np.abs(d).max()))


@given(cfg=subsample_configs(overlapping=True), data=st.data())
def test_subsample_backward_is_the_adjoint_of_forward_eq10_eq20(cfg, data):
    # U = beta down(x) + b is linear in beta and positively homogeneous of degree 1 in x
    # (max too), so <U - b, D> = <beta, dbeta> = <x, dx> exactly.
    x = data.draw(tie_free_arrays(cfg.x_shape), label="x")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    beta = rng.uniform(0.5, 2.0, cfg.param_shape) * rng.choice([-1, 1], cfg.param_shape)
    b = rng.standard_normal(cfg.param_shape)
    kw = dict(size=cfg.size, stride=cfg.stride, kind=cfg.kind)
    u = subsample_forward(x, beta, b, **kw)
    D = rng.standard_normal(u.shape)
    dx, dbeta, db = subsample_backward(D, x, beta, **kw)
    lhs = float(np.vdot(u - b[:, None, None], D))
    scale = float(np.abs(u).sum() * np.abs(D).max())
    assert _close(lhs, float(np.vdot(beta, dbeta)), scale)
    assert _close(lhs, float(np.vdot(x, dx)), scale)
    np.testing.assert_allclose(db, D.sum(axis=(0, 2, 3)), rtol=TOL, atol=TOL)
    for lit, fast in zip(
        subsample_backward(D, x, beta, impl="literal", **kw), (dx, dbeta, db), strict=True
    ):
        np.testing.assert_allclose(lit, fast, rtol=1e-12, atol=1e-12)


def _reaches(strategy, condition) -> bool:
    from hypothesis import find, settings
    from hypothesis.errors import NoSuchExample

    try:
        find(strategy, condition, settings=settings(max_examples=2000, database=None))
    except NoSuchExample:
        return False
    return True


def _not_divisible(c: ConvConfig, axis: int) -> bool:
    size = (c.h, c.w)[axis] + 2 * c.padding[axis]
    span = c.dilation[axis] * ((c.kh, c.kw)[axis] - 1) + 1
    return c.stride[axis] > 1 and (size - span) % c.stride[axis] != 0


def test_strategies_reach_the_geometries_that_hide_bugs():
    # square maps, N_in == N_out, symmetric kernels and divisible sizes hide transposition,
    # channel-swap, rot180 and stride-border bugs; the drawn configurations must reach past them
    configs = conv_configs(max_stride=3, max_padding=2, max_dilation=2)
    assert _reaches(configs, lambda c: c.h != c.w and c.c_in != c.c_out and c.kh != c.kw)
    assert _reaches(configs, lambda c: _not_divisible(c, 0) and _not_divisible(c, 1))
    subs = subsample_configs()
    assert _reaches(subs, lambda c: c.h % c.size[0] != 0 and c.size[0] != c.size[1])
