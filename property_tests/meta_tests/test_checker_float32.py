"""Issue 3, point 6: float32 layers are perturbed and judged with float32 steps and
tolerances: a correct float32 conv passes, a 1 % error in one element is caught."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from checks import GradientMismatchError, check_layer
from property_tests.meta_tests._tiny_layers import Planted, conv, dense, typical_index


@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 3),
    hw=st.integers(3, 8),
    c_in=st.integers(1, 3),
    c_out=st.integers(1, 3),
)
def test_a_correct_float32_conv_passes(seed, n, hw, c_in, c_out):
    rng = np.random.default_rng(seed)
    layer = conv(rng, c_in, c_out, 3, dtype=np.float32)
    x = rng.standard_normal((n, c_in, hw, hw)).astype(np.float32)
    rep = check_layer(layer, x, seed=seed)
    assert all(t.dtype == "float32" for t in rep.tensors)


@pytest.mark.parametrize("tensor", ["x", "K", "b"])
@pytest.mark.parametrize("method", ["auto", "central", "richardson"])
def test_a_one_percent_error_in_one_float32_element_is_caught(tensor, method):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    dy = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    ref = conv(np.random.default_rng(2), 3, 4, 3, dtype=np.float32)
    dx = ref.forward(x) is not None and ref.backward(dy)
    g = dx if tensor == "x" else ref.grads[tensor]
    idx = typical_index(g, rng)
    layer = Planted(conv(np.random.default_rng(2), 3, 4, 3, dtype=np.float32), tensor, idx, 0.01)
    with pytest.raises(GradientMismatchError) as ei:
        check_layer(layer, x, dy=dy, method=method)
    assert ei.value.report.tensor(tensor).mismatch[idx]


def test_float32_smooth_layer_passes_with_every_method():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 5)).astype(np.float32)
    for method in ("auto", "central", "richardson", "complex"):
        check_layer(dense(np.random.default_rng(4), dtype=np.float32), x, method=method)
