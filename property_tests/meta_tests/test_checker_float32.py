"""Issue 3, point 6: float32 layers are perturbed and judged with float32 steps and
tolerances: a correct float32 conv passes, a 1 % error in one element is caught.

These tests pin ``precision="native"`` (differences in float32) where they are about float32
steps; ``precision="auto"`` (the default) differences a layer that allows it in float64 and
is tested in test_checker_precision.py and by the parametrised tests here."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import cnn_ref
from checks import GradientMismatchError, check_layer
from property_tests.meta_tests._tiny_layers import Planted, conv, dense, typical_index


@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 3),
    hw=st.integers(3, 8),
    c_in=st.integers(1, 3),
    c_out=st.integers(1, 3),
    precision=st.sampled_from(["auto", "native"]),
)
def test_a_correct_float32_conv_passes(seed, n, hw, c_in, c_out, precision):
    rng = np.random.default_rng(seed)
    layer = conv(rng, c_in, c_out, 3, dtype=np.float32)
    x = rng.standard_normal((n, c_in, hw, hw)).astype(np.float32)
    rep = check_layer(layer, x, seed=seed, precision=precision)
    assert all(t.dtype == "float32" for t in rep.tensors)


@pytest.mark.parametrize("tensor", ["x", "K", "b"])
@pytest.mark.parametrize("method", ["auto", "central", "richardson"])
@pytest.mark.parametrize("precision", ["auto", "native"])
def test_a_one_percent_error_in_one_float32_element_is_caught(tensor, method, precision):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    dy = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    ref = conv(np.random.default_rng(2), 3, 4, 3, dtype=np.float32)
    dx = ref.forward(x) is not None and ref.backward(dy)
    g = dx if tensor == "x" else ref.grads[tensor]
    idx = typical_index(g, rng)
    layer = Planted(conv(np.random.default_rng(2), 3, 4, 3, dtype=np.float32), tensor, idx, 0.01)
    with pytest.raises(GradientMismatchError) as ei:
        check_layer(layer, x, dy=dy, method=method, precision=precision)
    assert ei.value.report.tensor(tensor).mismatch[idx]


def test_float32_smooth_layer_passes_with_every_method():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 5)).astype(np.float32)
    for method in ("auto", "central", "richardson", "complex"):
        for precision in ("auto", "native"):
            layer = dense(np.random.default_rng(4), dtype=np.float32)
            check_layer(layer, x, method=method, precision=precision)


# A float32 ReLU conv where one kernel element moves ~70 pre-activations: with h ~ 5e-3 a ReLU
# kink often lies within the stencil but not at t (seeds 1, 5, 7, 8, 18 were false alarms of
# Richardson contaminated by such a kink; 38 of seeds 0-199 failed before the fix).
def _relu_conv32(seed: int, pool: bool = False):
    rng = np.random.default_rng(seed)
    layer = cnn_ref.Conv2D(3, 4, 3, activation="relu", seed=seed, dtype=np.float32)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    if pool:
        return cnn_ref.Sequential([layer, cnn_ref.MaxPool2D(2)]), x
    return layer, x


@example(seed=1)
@example(seed=4)
@example(seed=5)
@example(seed=7)
@example(seed=8)
@example(seed=18)
@settings(max_examples=10)  # ~0.15 s each; the pinned seeds above always run
@given(seed=st.integers(0, 2**31 - 1))
def test_a_correct_float32_relu_conv_has_no_false_alarm_near_kinks(seed):
    layer, x = _relu_conv32(seed)
    rep = check_layer(layer, x, seed=seed, precision="native")
    assert rep.ok


# max pooling after it adds near-ties (14 of seeds 0-199 failed before the fix); seed 0 also
# lost 0.9 % of a small dx element to the grouped evaluation's unattributed outputs (now
# charged to the error estimate)
@example(seed=0)
@example(seed=14)
@example(seed=15)
@example(seed=16)
@example(seed=45)
@example(seed=82)
@settings(max_examples=10)  # ~0.15 s each; the pinned seeds above always run
@given(seed=st.integers(0, 2**31 - 1))
def test_a_correct_float32_relu_conv_then_max_pool_has_no_false_alarm(seed):
    layer, x = _relu_conv32(seed, pool=True)
    rep = check_layer(layer, x, seed=seed, precision="native")
    assert rep.ok


@pytest.mark.parametrize("seed", [0, 23, 24, 25])  # ~1 s each
def test_the_larger_float32_relu_conv_has_no_false_alarm(seed):
    """x (4, 4, 16, 16), K (8, 4, 3, 3): one kernel element moves ~780 pre-activations, so
    kinks lie within even h/64 of t. All of seeds 0-9 failed before the step refinement.
    Seeds 23-25 failed after it: 3-5 kinks inside the h/4 stencil mimicked a smooth curvature
    under a rounding estimate ~30x too large (test_checker_noise.py); the root-sum-square
    estimate and the curvature check against the next coarser step fixed them."""
    rng = np.random.default_rng(seed)
    layer = cnn_ref.Conv2D(4, 8, 3, activation="relu", seed=seed, dtype=np.float32)
    x = rng.standard_normal((4, 4, 16, 16)).astype(np.float32)
    assert check_layer(layer, x, seed=seed, precision="native").ok


@pytest.mark.parametrize("seed", range(10))
def test_a_one_percent_error_near_relu_kinks_is_caught_at_its_element(seed):
    """Re-evaluating suspect elements with smaller steps also tightens their tolerance, so a
    1 % error in a random kernel element is caught where the kinks had inflated it. Before
    the fix 4 of these 10 seeds were missed at the planted element (2 altogether); of seeds
    0-39, 34 were caught with it, 39 since the root-sum-square rounding estimate (seed 14
    has a kink 5e-5 from t, inside every stencil down to h/64)."""
    rng = np.random.default_rng(1000 + seed)
    inner, _ = _relu_conv32(seed)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    idx = tuple(int(i) for i in rng.integers(0, inner.params["K"].shape))
    with pytest.raises(GradientMismatchError) as ei:
        check_layer(Planted(inner, "K", idx, 0.01), x, seed=seed, precision="native")
    assert ei.value.report.tensor("K").mismatch[idx]
