"""PyTorch autograd as an independent oracle for the cross-correlation convention.

``torch.nn.functional.conv2d`` is what cnn_ref calls ``convention="xcorr"``; its autograd
gradients must equal cnn_ref's hand-derived backward, with stride, padding and dilation. Pooling
and dense layers likewise against ``avg_pool2d``, ``max_pool2d`` and ``linear``. Skipped cleanly
when torch is not installed.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from checks.strategies import conv_configs, dense_configs, subsample_configs, tie_free_arrays
from cnn_ref.functional.conv import conv2d_backward, conv2d_forward
from cnn_ref.functional.dense import dense_backward, dense_forward
from cnn_ref.functional.subsample import subsample_backward, subsample_forward

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch
F = torch.nn.functional
TOL = dict(rtol=1e-10, atol=1e-10)


def _t(a: np.ndarray):
    return torch.tensor(a, dtype=torch.float64, requires_grad=True)


@given(
    cfg=conv_configs(max_stride=3, max_padding=2, max_dilation=2), seed=st.integers(0, 2**32 - 1)
)
def test_xcorr_conv_matches_torch_conv2d_autograd(cfg, seed):
    rng = np.random.default_rng(seed)
    x, K, b = (rng.standard_normal(s) for s in (cfg.x_shape, cfg.K_shape, cfg.b_shape))
    kw = dict(stride=cfg.stride, padding=cfg.padding, dilation=cfg.dilation)
    u = conv2d_forward(x, K, b, convention="xcorr", **kw)
    tx, tK, tb = _t(x), _t(K), _t(b)
    tu = F.conv2d(tx, tK, tb, **kw)
    np.testing.assert_allclose(u, tu.detach().numpy(), **TOL)
    dy = rng.standard_normal(u.shape)
    tu.backward(torch.tensor(dy))
    for ours, theirs in zip(
        conv2d_backward(dy, x, K, convention="xcorr", **kw), (tx, tK, tb), strict=True
    ):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), **TOL)
    # the derivation's true convolution is torch's conv2d with the kernel rotated
    u_conv = conv2d_forward(x, K, b, convention="conv", **kw)
    flipped = F.conv2d(
        torch.tensor(x), torch.tensor(K[..., ::-1, ::-1].copy()), torch.tensor(b), **kw
    )
    np.testing.assert_allclose(u_conv, flipped.numpy(), **TOL)


@given(cfg=subsample_configs(overlapping=True, kinds=("mean", "max")), data=st.data())
def test_mean_and_max_subsampling_match_torch_pooling(cfg, data):
    x = data.draw(tie_free_arrays(cfg.x_shape), label="x")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    beta, b = rng.uniform(0.5, 2.0, cfg.c), rng.standard_normal(cfg.c)
    kw = dict(size=cfg.size, stride=cfg.stride, kind=cfg.kind)
    u = subsample_forward(x, beta, b, **kw)
    tx, tbeta, tb = _t(x), _t(beta), _t(b)
    pool = F.avg_pool2d if cfg.kind == "mean" else F.max_pool2d
    tu = tbeta[:, None, None] * pool(tx, cfg.size, cfg.stride) + tb[:, None, None]  # eq. (3)
    np.testing.assert_allclose(u, tu.detach().numpy(), **TOL)
    dy = rng.standard_normal(u.shape)
    tu.backward(torch.tensor(dy))
    for ours, theirs in zip(subsample_backward(dy, x, beta, **kw), (tx, tbeta, tb), strict=True):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), **TOL)


@given(cfg=dense_configs(), seed=st.integers(0, 2**32 - 1))
def test_dense_matches_torch_linear(cfg, seed):
    rng = np.random.default_rng(seed)
    x, W, b = (rng.standard_normal(s) for s in (cfg.x_shape, cfg.W_shape, cfg.b_shape))
    tx, tW, tb = _t(x), _t(W), _t(b)
    ty = F.linear(tx, tW, tb)
    np.testing.assert_allclose(dense_forward(x, W, b), ty.detach().numpy(), **TOL)
    dy = rng.standard_normal(cfg.out_shape)
    ty.backward(torch.tensor(dy))
    for ours, theirs in zip(dense_backward(dy, x, W), (tx, tW, tb), strict=True):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), **TOL)


@given(
    cfg=conv_configs(max_stride=2, max_padding=1, max_dilation=2), seed=st.integers(0, 2**32 - 1)
)
def test_derived_eq14_eq18_for_xcorr_match_torch_autograd(cfg, seed):
    # the derived forms themselves, not cnn_ref: for cross-correlation the kernel gradient is
    # conv2(A_j, rot180(delta_i), 'valid') (no outer rot180) and the input delta sums
    # conv2(delta_i, K_ij, 'full') over the next maps i (no rot180 of K)
    from checks.audit.forms import eq14_kernel_grad, eq18_input_delta

    rng = np.random.default_rng(seed)
    x, K = rng.standard_normal(cfg.x_shape), rng.standard_normal(cfg.K_shape)
    geo = (cfg.stride, cfg.padding, cfg.dilation)
    tx, tK = _t(x), _t(K)
    tu = F.conv2d(tx, tK, None, stride=cfg.stride, padding=cfg.padding, dilation=cfg.dilation)
    dy = rng.standard_normal(tuple(tu.shape))
    tu.backward(torch.tensor(dy))
    dK = sum(
        eq14_kernel_grad(x[m], dy[m], cfg.kernel_size, "xcorr", "corrected", *geo)
        for m in range(cfg.n)
    )
    np.testing.assert_allclose(dK, tK.grad.numpy(), **TOL)
    ones = np.ones(cfg.x_shape[1:])
    dx = np.stack(
        [eq18_input_delta(dy[m], K, ones, "xcorr", "corrected", *geo) for m in range(cfg.n)]
    )
    np.testing.assert_allclose(dx, tx.grad.numpy(), **TOL)
