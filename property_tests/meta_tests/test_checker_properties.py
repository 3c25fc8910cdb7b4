"""Zero false alarms across Hypothesis-drawn shapes and seeds, and planted errors always
caught. Under the ``ci``/``thorough`` profiles this reaches a few hundred examples per test."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from checks import GradientMismatchError, check_layer
from property_tests.meta_tests._tiny_layers import (
    MaxPool2,
    Planted,
    ReLU,
    ScaleReLU,
    conv,
    dense,
    typical_index,
)

seeds = st.integers(0, 2**32 - 1)


@given(
    seed=seeds,
    n=st.integers(1, 3),
    c_in=st.integers(1, 3),
    c_out=st.integers(1, 3),
    h=st.integers(3, 7),
    w=st.integers(3, 7),
    k=st.integers(1, 3),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
)
def test_a_correct_conv_never_fails(seed, n, c_in, c_out, h, w, k, scale):
    rng = np.random.default_rng(seed)
    layer = conv(rng, c_in, c_out, k)
    check_layer(layer, scale * rng.standard_normal((n, c_in, h, w)), seed=seed)


@given(
    seed=seeds,
    n=st.integers(1, 4),
    f_in=st.integers(1, 6),
    f_out=st.integers(1, 6),
    method=st.sampled_from(["auto", "central", "richardson", "complex"]),
)
def test_a_correct_smooth_dense_layer_never_fails(seed, n, f_in, f_out, method):
    rng = np.random.default_rng(seed)
    check_layer(dense(rng, f_in, f_out), rng.standard_normal((n, f_in)), seed=seed, method=method)


@given(seed=seeds, n=st.integers(1, 3), f=st.integers(1, 6), zeros=st.booleans())
def test_correct_kink_layers_never_fail(seed, n, f, zeros):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, f))
    if zeros:
        x[rng.random(x.shape) < 0.3] = 0.0  # exact kinks
    check_layer(ReLU(), x, seed=seed)
    check_layer(ScaleReLU(rng.standard_normal(f)), x, seed=seed)
    xp = np.round(rng.standard_normal((n, 2, 4, 4)), 0 if zeros else 6)  # ties when rounded
    check_layer(MaxPool2(), xp, seed=seed)


@example(seed=238651764, n=1, f_in=6, f_out=2, tensor="x")  # saturated sigmoid (regression)
@given(
    seed=seeds,
    n=st.integers(1, 3),
    f_in=st.integers(2, 6),
    f_out=st.integers(2, 6),
    tensor=st.sampled_from(["x", "W", "b"]),
)
def test_a_1e6_error_in_one_element_is_always_caught(seed, n, f_in, f_out, tensor):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, f_in))
    dy = rng.standard_normal((n, f_out))
    ref = dense(np.random.default_rng(seed), f_in, f_out)
    dx = ref.forward(x) is not None and ref.backward(dy)
    idx = typical_index(dx if tensor == "x" else ref.grads[tensor], rng)
    layer = Planted(dense(np.random.default_rng(seed), f_in, f_out), tensor, idx, 1e-6)
    with pytest.raises(GradientMismatchError) as ei:
        check_layer(layer, x, dy=dy, seed=seed)
    assert ei.value.report.tensor(tensor).mismatch[idx]


@given(
    seed=seeds,
    n=st.integers(1, 3),
    c_in=st.integers(1, 3),
    c_out=st.integers(2, 8),
    hw=st.integers(4, 9),
    tensor=st.sampled_from(["x", "K", "b"]),
)
def test_a_1e6_error_in_one_conv_element_is_always_caught(seed, n, c_in, c_out, hw, tensor):
    """Exercises the grouped (disjoint-footprint) evaluation: the planted element shares its
    forward calls with many others."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c_in, hw, hw))
    dy = rng.standard_normal((n, c_out, hw - 2, hw - 2))
    ref = conv(np.random.default_rng(seed), c_in, c_out, 3)
    dx = ref.forward(x) is not None and ref.backward(dy)
    idx = typical_index(dx if tensor == "x" else ref.grads[tensor], rng)
    layer = Planted(conv(np.random.default_rng(seed), c_in, c_out, 3), tensor, idx, 1e-6)
    with pytest.raises(GradientMismatchError) as ei:
        check_layer(layer, x, dy=dy, seed=seed)
    assert ei.value.report.tensor(tensor).mismatch[idx]
