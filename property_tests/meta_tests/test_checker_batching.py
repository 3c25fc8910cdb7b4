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


def test_grouped_perturbations_agree_with_one_by_one(monkeypatch):
    """Elements with disjoint output footprints are perturbed together (checks.grouping);
    the numbers must be those of perturbing them one at a time."""
    import checks._runner as runner
    from checks import grouping

    monkeypatch.setattr(grouping, "GROUP_OVERHEAD", 0.0)  # group even where it does not pay
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 2, 9, 9))
    layer = conv(rng, 2, 8, 3)  # 8 output maps: K's elements group along axis 0
    for method in ("complex", "richardson"):
        grouped = check_layer(layer, x, method=method, coverage="full")
        assert "x: lattice period 3" in grouped.batching
        assert "K: grouped along axis 0" in grouped.batching
        with monkeypatch.context() as m:
            m.setattr(runner, "_MIN_GROUPED", 10**9)
            single = check_layer(layer, x, method=method, coverage="full")
        assert "disjoint-footprint" not in single.batching
        for tg, ts in zip(grouped.tensors, single.tensors, strict=True):
            np.testing.assert_allclose(tg.numerical, ts.numerical, rtol=1e-9, atol=1e-12)


class _Coupled:
    """y = x * sum(x) over each sample: every element moves every output (no disjoint
    groups exist), so grouping must detect the overlap and fall back."""

    def __init__(self):
        self.params, self.grads = {}, {}

    def forward(self, x):
        self.x = x
        self.s = x.sum(axis=(1, 2, 3), keepdims=True)
        return x * self.s

    def backward(self, dy):
        return dy * self.s + (dy * self.x).sum(axis=(1, 2, 3), keepdims=True)


def test_overlapping_footprints_fall_back_and_still_catch_errors():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 2, 6, 6))
    rep = check_layer(_Coupled(), x)
    assert "disjoint-footprint" not in rep.batching
    with pytest.raises(GradientMismatchError) as ei:
        check_layer(Planted(_Coupled(), "x", (1, 0, 3, 2), 1e-6), x)
    assert ei.value.report.tensor("x").worst_index == (1, 0, 3, 2)


def test_a_planted_error_is_caught_inside_a_group():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 10, 10))
    for tensor, idx in (("x", (1, 2, 4, 7)), ("K", (3, 1, 2, 0))):
        with pytest.raises(GradientMismatchError) as ei:
            check_layer(Planted(conv(np.random.default_rng(8), 3, 8, 3), tensor, idx, 1e-6), x)
        rep = ei.value.report
        assert "disjoint-footprint" in rep.batching
        assert rep.tensor(tensor).worst_index == idx and rep.tensor(tensor).n_mismatched == 1
