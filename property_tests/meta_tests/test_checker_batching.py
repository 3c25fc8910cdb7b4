"""Issue 3, point 4: perturbations packed along batch_axis when a probe shows the samples are
independent; one call per probe otherwise (a batch-norm-like layer)."""

from __future__ import annotations

import numpy as np
import pytest

from checks import GradientMismatchError, check_layer
from property_tests.meta_tests._tiny_layers import BatchNormLike, Planted, conv


def test_an_independent_layer_is_packed_and_needs_few_calls():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 6, 6))
    rep = check_layer(conv(rng), x, coverage="full")
    assert rep.batching.startswith("x: packed")
    # one call per element would be >= x.size calls for x alone
    assert rep.n_evals < x.size


def test_batch_norm_like_layer_falls_back_and_is_still_checked():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3))
    rep = check_layer(BatchNormLike(rng.standard_normal(3)), x)
    assert "one call per probe" in rep.batching
    assert rep.tensor("x").n_checked == x.size
    with pytest.raises(GradientMismatchError):
        check_layer(Planted(BatchNormLike(rng.standard_normal(3)), "x", (2, 1), 1e-5), x)


class _Wrong(BatchNormLike):
    """Batch-dependent forward with a backward that treats samples as independent: the
    packed evaluation would agree with it, so it is caught only if the probe falls back."""

    def backward(self, dy):
        self.grads["g"] = (dy * self.xc).sum(axis=0)
        return dy * self.params["g"]


def test_the_probe_protects_against_batch_dependence():
    rng = np.random.default_rng(2)
    with pytest.raises(GradientMismatchError):
        check_layer(_Wrong(rng.standard_normal(3)), rng.standard_normal((4, 3)))


class _BatchLast:
    """Batch on axis 1: y[f, n] = tanh(W @ x)[f, n]."""

    def __init__(self, W):
        self.params, self.grads = {"W": W}, {}

    def forward(self, x):
        self.x = x
        self.y = np.tanh(self.params["W"] @ x)
        return self.y

    def backward(self, dy):
        du = dy * (1 - self.y**2)
        self.grads["W"] = du @ self.x.T
        return self.params["W"].T @ du


def test_batch_axis_other_than_zero():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 5))
    rep = check_layer(_BatchLast(rng.standard_normal((3, 4))), x, batch_axis=1)
    assert rep.batching.startswith("x: packed along batch_axis=1")
    with pytest.raises(ValueError, match="batch_axis=2"):
        check_layer(_BatchLast(rng.standard_normal((3, 4))), x, batch_axis=2)


class _FixedBatch:
    """Elementwise and independent, but refuses any batch size but 4 (so it is not packed)."""

    def __init__(self):
        self.params, self.grads = {}, {}

    def forward(self, x):
        if x.shape[0] != 4:
            raise ValueError(f"batch size must be 4, got {x.shape[0]}")
        self.x = x
        return np.sin(x) * 2.0

    def backward(self, dy):
        return 2.0 * dy * np.cos(self.x)


@pytest.mark.parametrize("method", ["richardson", "complex"])
def test_packed_and_unpacked_evaluations_agree(method):
    x = np.random.default_rng(4).standard_normal((4, 3))
    from checks import check_vjp

    packed = check_vjp(
        lambda a: np.sin(a) * 2.0, lambda dy, a: (2.0 * dy * np.cos(a),), x, method=method
    )
    single = check_layer(_FixedBatch(), x, method=method)
    assert "packed" in packed.batching and "one call per probe" in single.batching
    np.testing.assert_allclose(packed.tensors[0].numerical, single.tensors[0].numerical, rtol=1e-9)
