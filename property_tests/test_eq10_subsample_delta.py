"""Eq. (10)/(11): the delta of the layer before a subsampling layer, beta * up(delta).

up() must be the adjoint of down(): the ones-Kronecker up of the derivation's sources is right for
sum pooling, off by exactly n^2 for mean pooling, and must route to the arg-max for max pooling.
"""

from __future__ import annotations

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st

from checks.audit.forms import eq10_conv_delta
from checks.strategies import SubsampleConfig, subsample_configs, tie_free_arrays
from cnn_ref.functional.subsample import subsample_backward, subsample_forward
from property_tests._fd import assert_vjp_close, numerical_vjp


def _params(cfg: SubsampleConfig, seed: int):
    rng = np.random.default_rng(seed)
    beta = rng.uniform(0.5, 2.0, cfg.param_shape) * rng.choice([-1.0, 1.0], cfg.param_shape)
    return rng, beta, rng.standard_normal(cfg.param_shape)  # beta != 1 on purpose


@given(cfg=subsample_configs(), data=st.data())
@example(cfg=SubsampleConfig(2, 3, 7, 8, (2, 3), (2, 3), "mean"), data=None).via(
    "non-square block, sizes not divisible by it"
)
def test_subsample_delta_is_beta_times_upsampled_delta_eq10(cfg, data):
    if data is None:
        x = np.random.default_rng(0).permutation(int(np.prod(cfg.x_shape))).reshape(cfg.x_shape)
        x = x * 0.05
        seed = 0
    else:
        x = data.draw(tie_free_arrays(cfg.x_shape), label="x")
        seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng, beta, _ = _params(cfg, seed)
    dy = rng.standard_normal(cfg.out_shape)
    dx, _, _ = subsample_backward(dy, x, beta, size=cfg.size, kind=cfg.kind)
    n = cfg.size
    if n[0] == n[1]:  # the derived form in the derivation's scalar-n vocabulary
        ones = np.ones(cfg.x_shape[1:])
        derived = np.stack(
            [
                eq10_conv_delta(dy[m], beta, n[0], cfg.kind, x[m], ones, "corrected")
                for m in range(cfg.n)
            ]
        )
        np.testing.assert_allclose(dx, derived, rtol=1e-12, atol=1e-12)
    # the derivation's ones-Kronecker up-sampling, zero on the cropped border
    kron = np.zeros_like(x)
    ho, wo = cfg.out_shape[2:]
    kron[..., : ho * n[0], : wo * n[1]] = np.kron(dy, np.ones(n)) * beta[:, None, None]
    if cfg.kind == "sum":
        np.testing.assert_allclose(dx, kron, rtol=1e-12, atol=1e-12)
    elif cfg.kind == "mean":  # exactly a factor n^2 too large without the 1/n^2
        np.testing.assert_allclose(kron, dx * (n[0] * n[1]), rtol=1e-12, atol=1e-12)
    else:  # max: one element per block receives the whole delta, the others nothing
        blocks = dx[..., : ho * n[0], : wo * n[1]].reshape(cfg.n, cfg.c, ho, n[0], wo, n[1])
        assert np.all(np.count_nonzero(blocks, axis=(3, 5)) <= 1)
        np.testing.assert_allclose(blocks.sum(axis=(3, 5)), dy * beta[:, None, None])


@given(cfg=subsample_configs(overlapping=True, max_side=8, max_channels=3), data=st.data())
def test_subsample_gradients_match_finite_differences_eq10_eq19_eq20(cfg, data):
    x = data.draw(tie_free_arrays(cfg.x_shape), label="x")  # steps never cross a max tie
    rng, beta, b = _params(cfg, data.draw(st.integers(0, 2**32 - 1), label="seed"))
    kw = dict(size=cfg.size, stride=cfg.stride, kind=cfg.kind)
    dy = rng.standard_normal(cfg.out_shape)
    dx, dbeta, db = subsample_backward(dy, x, beta, **kw)

    def f():
        return subsample_forward(x, beta, b, **kw)

    assert_vjp_close(dx, numerical_vjp(f, x, dy))
    assert_vjp_close(dbeta, numerical_vjp(f, beta, dy))
    assert_vjp_close(db, numerical_vjp(f, b, dy))
