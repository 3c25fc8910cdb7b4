"""Issue 3, point 2: the rounding part of the error estimate is realistic, not a worst case.

The estimate of the rounding in ``<dy, y(t+h) - y(t-h)>`` is checked against the real error,
measured by evaluating the same float32-rounded stencil points in float64 (a twin of the
layer with the same parameters). The worst-case bound ``eps sum_j |dy_j| G_j`` is ~30x the
real error for a conv kernel element that moves ~800 outputs; that slack hid ReLU kinks inside
the stencil and made a correct float32 conv fail (seeds 23-25 of the larger conv below).
"""

from __future__ import annotations

import numpy as np
import pytest

import cnn_ref
from checks import check_layer
from checks.engine import finite_diff
from checks.engine.tolerances import DTYPE_TABLE
from property_tests.meta_tests._tiny_layers import Conv

EPS32 = float(np.finfo(np.float32).eps)
SAFETY = DTYPE_TABLE[np.dtype(np.float32)].safety


def _sum_last(w: np.ndarray) -> np.ndarray:
    return w.sum(axis=-1)


def _twins(kind: str, seed: int):
    rng = np.random.default_rng(seed)
    if kind == "cnn_ref":  # im2col + float32 GEMM, then a ReLU
        l32 = cnn_ref.Conv2D(4, 8, 3, activation="relu", seed=seed, dtype=np.float32)
        l64 = cnn_ref.Conv2D(4, 8, 3, activation="relu", seed=seed, dtype=np.float64)
        for k in l32.params:
            l64.params[k][...] = l32.params[k]
    else:  # einsum over sliding windows, no activation
        K = rng.standard_normal((8, 4, 3, 3)).astype(np.float32) / 6
        b = rng.standard_normal(8).astype(np.float32)
        l32, l64 = Conv(K, b), Conv(K.astype(np.float64), b.astype(np.float64))
    x = rng.standard_normal((4, 4, 16, 16)).astype(np.float32)
    return l32, l64, x


@pytest.mark.parametrize("kind", ["cnn_ref", "einsum"])
def test_the_rounding_estimate_tracks_the_real_rounding_of_a_float32_conv(kind):
    l32, l64, x = _twins(kind, seed=3)
    x64 = x.astype(np.float64)
    y0 = l32.forward(x).astype(np.float64)
    dy = np.random.default_rng(4).standard_normal(y0.shape)
    ybar = float(np.mean(np.abs(y0)))
    K32, K64 = l32.params["K"], l64.params["K"]
    real, est, bound = [], [], []
    for i in range(0, K32.size, 3):  # 96 of the 288 elements
        idx = np.unravel_index(i, K32.shape)
        t = float(K32[idx])
        h = DTYPE_TABLE[np.dtype(np.float32)].h_central * max(abs(t), 1.0)
        ys32, ys64 = [], []
        for v in (np.float32(t + h), np.float32(t - h)):
            K32[idx], K64[idx] = v, float(v)
            ys32.append(l32.forward(x).astype(np.float64).reshape(-1))
            ys64.append(l64.forward(x64).reshape(-1))
        K32[idx], K64[idx] = t, t
        d = dy.reshape(-1)
        real.append(abs(d @ (ys32[0] - ys32[1]) - d @ (ys64[0] - ys64[1])))
        args = (ys32[0], ys32[1], d, ybar, EPS32, _sum_last)
        est.append(float(finite_diff.numerator_noise(*args, dy_random=True)[0]))
        bound.append(float(finite_diff.numerator_noise(*args, dy_random=False)[0]))
    real, est, bound = map(np.array, (real, est, bound))
    ratio = real / est
    # the tolerance (safety x estimate) covers every real rounding with room to spare ...
    assert ratio.max() < SAFETY / 2, ratio.max()
    # ... and the estimate is of the real size, not a worst case
    assert np.median(ratio) > 0.1, np.median(ratio)
    assert np.median(bound / est) > 10, np.median(bound / est)


def test_numerator_noise_is_the_root_sum_square_for_a_random_dy_and_the_bound_otherwise():
    rng = np.random.default_rng(0)
    ya = rng.standard_normal((3, 500))
    yb = ya.copy()
    yb[:, :400] += 1e-3  # 400 of the 500 outputs move
    dy = rng.standard_normal(500)
    g = np.maximum(np.abs(ya), np.abs(yb))[:, :400]
    g = np.maximum(g, 0.5)
    adg = np.abs(dy[:400]) * g
    rand, typical = finite_diff.numerator_noise(ya, yb, dy, 0.5, EPS32, _sum_last, dy_random=True)
    given, typical2 = finite_diff.numerator_noise(
        ya, yb, dy, 0.5, EPS32, _sum_last, dy_random=False
    )
    np.testing.assert_allclose(given, EPS32 * adg.sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(
        rand, finite_diff.RSS_FACTOR * EPS32 * np.sqrt((adg**2).sum(axis=1)), rtol=1e-12
    )
    # the kink tests get the typical size either way (smaller only marks more kinks)
    np.testing.assert_array_equal(typical, rand)
    np.testing.assert_array_equal(typical2, rand)
    # one moving output: both are the same single term
    one = np.zeros((1, 500))
    one_b = one.copy()
    one_b[0, 7] = 2.0
    a, _ = finite_diff.numerator_noise(one, one_b, dy, 0.0, EPS32, _sum_last, dy_random=True)
    b, _ = finite_diff.numerator_noise(one, one_b, dy, 0.0, EPS32, _sum_last, dy_random=False)
    assert a == pytest.approx(min(1.0, finite_diff.RSS_FACTOR) * b)


def test_a_caller_supplied_dy_is_judged_with_the_worst_case_bound():
    """An all-ones dy adds correlated roundings (a shared normaliser) coherently, so the
    root-sum-square argument, which needs dy independent of the layer, does not apply."""
    rng = np.random.default_rng(5)
    # linear in K: no truncation, so the estimates differ by their rounding part alone
    layer = cnn_ref.Conv2D(4, 8, 3, activation="identity", seed=5, dtype=np.float32)
    x = rng.standard_normal((2, 4, 10, 10)).astype(np.float32)
    own = check_layer(layer, x, seed=5, method="central", precision="native").tensor("K")
    dy = np.random.default_rng(5).standard_normal((2, 8, 8, 8)).astype(np.float32)
    given = check_layer(layer, x, dy=dy, seed=5, method="central", precision="native")
    given = given.tensor("K")
    # the same dy either way (the checker draws it from the seed first): only the model differs
    np.testing.assert_allclose(own.numerical, given.numerical)
    assert np.median(given.error_estimate / own.error_estimate) > 3
