"""Issue 12, point 1: when a random projection fails, the wrong unchecked elements are found by
adaptive group testing and reported as a full check would report them (worst index,
mismatched elements, hints), with how they were found."""

from __future__ import annotations

import numpy as np
import pytest

import cnn_ref
from checks import GradientMismatchError, check_layer
from property_tests.meta_tests._tiny_layers import Planted


class PlantedMany(Planted):
    """Scale several elements of one gradient by ``1 + rel``."""

    def __init__(self, inner, tensor, indices, rel):
        super().__init__(inner, tensor, indices[0], rel)
        self.indices = indices

    def backward(self, dy):
        dx = self.inner.backward(dy)
        g = dx if self.tensor == "x" else self.inner.grads[self.tensor]
        for idx in self.indices:
            g[idx] *= 1.0 + self.rel
        return dx


def _case(activation, tensor, seed, dtype=np.float64):
    layer = cnn_ref.Conv2D(6, 8, 3, convention="xcorr", activation=activation, seed=seed,
                           dtype=dtype)  # fmt: skip
    rng = np.random.default_rng(100 + seed)
    x = rng.standard_normal((4, 6, 12, 12)).astype(dtype)
    shape = x.shape if tensor == "x" else layer.params[tensor].shape
    idx = tuple(int(i) for i in rng.integers(0, shape))
    return layer, x, idx


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("tensor", ["x", "K"])
@pytest.mark.parametrize("seed", range(2))
def test_a_single_wrong_element_behind_a_failing_projection_is_located(activation, tensor, seed):
    """Before, the message said only that an unchecked element was wrong."""
    layer, x, idx = _case(activation, tensor, seed)
    with pytest.raises(GradientMismatchError) as ei:
        check_layer(Planted(layer, tensor, idx, 1e-3), x, coverage="projected")
    tr = ei.value.report.tensor(tensor)
    assert tr.located is not None and tr.located["mismatched"] == 1
    assert tr.worst_index == idx and tr.n_mismatched == 1 and tr.mismatch[idx]
    # the cost: a few directional tests per halving, not one per element
    assert tr.located["tests"] <= 4 * np.log2(tr.n_total)
    text = str(ei.value)
    assert "located by group testing" in text
    assert f"{tensor}[{', '.join(map(str, idx))}]" in text


def test_two_wrong_elements_are_both_located():
    layer, x, _ = _case("tanh", "x", 3)
    idxs = [(0, 1, 2, 3), (3, 5, 10, 11)]
    with pytest.raises(GradientMismatchError) as ei:
        check_layer(PlantedMany(layer, "x", idxs, 1e-2), x, coverage="projected")
    tr = ei.value.report.tensor("x")
    assert {tuple(int(i) for i in r) for r in np.argwhere(tr.mismatch)} == set(idxs)


def test_a_float32_relu_layer_is_located_whenever_a_projection_catches_it():
    """Differenced in float64 (precision="auto"), a 1 % error in one element of K: where a
    projection catches it, localization names it (the promoted tolerance's forward-resolution
    term keeps the projections from catching it in some seeds; see docs/limitations.md)."""
    caught = 0
    for seed in range(3):
        layer, x, idx = _case("relu", "K", seed, np.float32)
        try:
            check_layer(Planted(layer, "K", idx, 1e-2), x, coverage="projected")
        except GradientMismatchError as err:
            tk = err.report.tensor("K")
            assert tk.located is not None and tk.worst_index == idx
            caught += 1
    assert caught >= 1


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_a_correct_layer_runs_no_localization(activation):
    layer, x, _ = _case(activation, "x", 7)
    rep = check_layer(layer, x, coverage="projected")
    assert all(t.located is None for t in rep.tensors)
