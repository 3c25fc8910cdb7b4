"""One integration check on the reference layers (issue 3's own target, on cnn_ref.Conv2D):
defaults catch a 0.5 % error in one element of dx at x (4, 4, 16, 16), K (8, 4, 3, 3), and the
correct reference layers pass, kinks included. The rest of the meta-tests use tiny layers."""

from __future__ import annotations

import numpy as np
import pytest

from checks import GradientMismatchError, check_layer
from property_tests.meta_tests._tiny_layers import Planted

cnn_ref = pytest.importorskip("cnn_ref")


def test_defaults_catch_half_a_percent_in_dx_of_the_reference_conv():
    from cnn_ref.conv import Conv2D

    x = np.random.default_rng(0).standard_normal((4, 4, 16, 16))
    check_layer(Conv2D(4, 8, 3, seed=1), x)
    with pytest.raises(GradientMismatchError) as ei:
        check_layer(Planted(Conv2D(4, 8, 3, seed=1), "x", (3, 2, 0, 15), 5e-3), x)
    tx = ei.value.report.tensor("x")
    assert ei.value.report.coverage == "full"
    assert tx.n_mismatched == 1 and tx.worst_index == (3, 2, 0, 15)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_reference_conv_with_activations_passes(activation):
    from cnn_ref.conv import Conv2D

    x = np.random.default_rng(1).standard_normal((2, 3, 7, 7))
    x[0, 0, :3, :3] = 0.0  # flat patches: relu pre-activations exactly at the bias
    check_layer(Conv2D(3, 4, 3, activation=activation, seed=2), x)


def test_reference_max_pool_with_ties_passes():
    from cnn_ref.subsample import MaxPool2D

    x = np.round(np.random.default_rng(3).standard_normal((2, 3, 6, 6)), 0)  # many ties
    rep = check_layer(MaxPool2D(2), x)
    assert rep.kinks
