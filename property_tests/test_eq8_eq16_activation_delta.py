"""Eq. (8)/(16): delta = dJ/dA (x) f'(U), element-wise, for every activation.

Checked against central differences away from ReLU's kink, and at the kink (U = 0) the
analytic value must lie between the one-sided derivatives (a subgradient).
"""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from checks.strategies import well_conditioned_arrays
from cnn_ref import Activation
from property_tests._fd import assert_vjp_close, numerical_vjp

NAMES = ["identity", "sigmoid", "tanh", "relu"]


@given(
    name=st.sampled_from(NAMES),
    u=well_conditioned_arrays((2, 3, 4), low=0.05, high=3.0),  # |U| >= 0.05: off the kink
    seed=st.integers(0, 2**32 - 1),
)
def test_delta_is_upstream_gradient_times_f_prime_eq8_eq16(name, u, seed):
    layer = Activation(name)
    g = np.random.default_rng(seed).standard_normal(u.shape)  # dJ/dA
    layer.forward(u)
    delta = layer.backward(g)
    assert_vjp_close(delta, numerical_vjp(lambda: layer.forward(u), u, g))


def test_relu_delta_at_zero_is_a_subgradient():
    layer = Activation("relu")
    u = np.array([[-1.0, 0.0, 2.0]])
    layer.forward(u)
    delta = layer.backward(np.ones_like(u))
    left, right = 0.0, 1.0  # one-sided derivatives of max(u, 0) at 0
    assert left <= delta[0, 1] <= right
    np.testing.assert_array_equal(delta[0, [0, 2]], [0.0, 1.0])
