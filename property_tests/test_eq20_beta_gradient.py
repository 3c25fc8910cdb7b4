"""Eq. (19)/(20): the bias and scale gradients of a subsampling layer.

dJ/dbeta_i = sum_st (delta_i (x) d_i)_st with d_i = down(A_i) computed by the layer's own
pooling kind, summed over the batch; dJ/db_i = sum_st (delta_i)_st.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from checks.audit.forms import eq20_beta_grad
from checks.strategies import subsample_configs, tie_free_arrays
from cnn_ref import signal
from cnn_ref.functional.subsample import subsample_backward


@given(cfg=subsample_configs(max_batch=3), data=st.data())
def test_beta_gradient_is_delta_times_down_of_input_eq20(cfg, data):
    x = data.draw(tie_free_arrays(cfg.x_shape), label="x")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    beta = rng.uniform(0.5, 2.0, cfg.param_shape)
    dy = rng.standard_normal(cfg.out_shape)
    _, dbeta, db = subsample_backward(dy, x, beta, size=cfg.size, kind=cfg.kind)
    expected = np.sum(dy * signal.down(x, cfg.size, cfg.kind), axis=(0, 2, 3))
    np.testing.assert_allclose(dbeta, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(db, dy.sum(axis=(0, 2, 3)), rtol=1e-12, atol=1e-12)  # (19)
    if cfg.size[0] == cfg.size[1]:
        per_sample = sum(eq20_beta_grad(dy[m], x[m], cfg.size[0], cfg.kind) for m in range(cfg.n))
        np.testing.assert_allclose(dbeta, per_sample, rtol=1e-12, atol=1e-12)
    # the mistake "beta gradient without down(A)" gives a different answer
    assert not np.allclose(dbeta, np.sum(dy, axis=(0, 2, 3)), rtol=1e-6, atol=1e-9)
