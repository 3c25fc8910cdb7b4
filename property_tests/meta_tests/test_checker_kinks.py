"""Issue 3, point 5: kinks. ReLU at exactly 0 and tied maxima pass and are recorded in
report.kinks; a value outside the one-sided interval is still a mismatch."""

from __future__ import annotations

import numpy as np
import pytest

from checks import GradientMismatchError, check_layer
from checks.engine import finite_diff as fd
from checks.engine.kinks import judge_kinks
from property_tests.meta_tests._tiny_layers import MaxPool2, Planted, ReLU


@pytest.mark.parametrize("method", ["auto", "central", "richardson"])
def test_relu_at_exactly_zero_passes_and_is_recorded(method):
    x = np.array([[-1.0, 0.0, 2.0], [0.0, 0.5, -0.3]])
    rep = check_layer(ReLU(), x, method=method)
    assert sorted(rep.kinks) == [("x", (0, 1)), ("x", (1, 0))]
    assert "kinks" in str(rep)


def test_max_pool_ties_pass():
    x = np.zeros((1, 2, 4, 4))
    x[0, 0, :2, :2] = 1.0  # a block of four tied maxima
    x[0, 1] = np.arange(16.0).reshape(4, 4)
    x[0, 1, 2, 2] = x[0, 1, 3, 3]  # a tie of two
    rep = check_layer(MaxPool2(), x)
    assert ("x", (0, 0, 0, 0)) in rep.kinks and ("x", (0, 1, 2, 2)) in rep.kinks


def test_a_value_outside_the_one_sided_interval_is_a_mismatch():
    class TwiceAtZero(ReLU):
        def backward(self, dy):
            return dy * np.where(self.x == 0, 2.0, self.x > 0)

    x = np.array([[-1.0, 0.0, 2.0]])
    with pytest.raises(GradientMismatchError) as ei:
        check_layer(TwiceAtZero(), x, dy=np.ones((1, 3)))
    assert ei.value.report.tensor("x").mismatch[0, 1]


def test_relu_with_one_element_off_by_1e4_is_caught():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 6)) + 0.1
    i = tuple(int(v) for v in np.argwhere(x > 0.5)[0])
    with pytest.raises(GradientMismatchError) as ei:
        check_layer(Planted(ReLU(), "x", i, 1e-4), x)
    assert ei.value.report.tensor("x").worst_index == i


def test_smooth_points_are_not_kinks():
    t = np.array([0.3, 1.0, -2.0])
    h = fd.step_sizes(t, 6e-6)
    vals, taken = fd.perturbed_values(t, h, fd.REAL_STENCIL)
    r = np.exp(vals) - np.exp(t)
    z = np.full((2, 3), 1e-30)
    res = fd.combine_real(r, taken, z, z, method="central")
    kink, _ = judge_kinks(res, np.exp(t), np.full(3, 1e-9), 8.0)
    assert not kink.any()


@pytest.mark.parametrize("where", [0.3, 0.9, 1.5, -1.5])
def test_a_kink_near_t_is_recognised_and_only_a_slope_around_it_accepted(where):
    """phi(t + u) = s u + J max(u - delta, 0) with the kink at delta = where * h (a ReLU
    pre-activation that crosses 0 inside the stencil but not at t). The derivative at t is s
    (s + J when the kink is left of t); a value beyond every one-sided slope is not accepted."""
    t = np.array([0.7])
    h = fd.step_sizes(t, 6e-6)
    _, taken = fd.perturbed_values(t, h, fd.REAL_STENCIL)
    s, jump, delta = 2.0, 3.0, where * h
    u = taken
    r = s * u + jump * (np.maximum(u - delta, 0.0) - max(-delta, 0.0))
    noise = np.full((2, 1), 1e-16)
    res = fd.combine_real(r, taken, np.full((2, 1), 1.0), noise, method="richardson")
    slope_at_t = s + (jump if delta[0] < 0 else 0.0)
    kink, acc = judge_kinks(res, np.array([slope_at_t]), np.full(1, 1e-9), 8.0)
    assert kink.all() and acc.all()
    _, acc_far = judge_kinks(res, np.array([s - jump]), np.full(1, 1e-9), 8.0)
    assert not acc_far.any()
