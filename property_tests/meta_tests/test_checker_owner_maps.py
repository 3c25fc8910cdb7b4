"""Groups that read their sources off a shared map of outputs to cells
(:mod:`checks.engine.trials`) instead of measuring them with code probes of their own.

The maps are checked against layers whose footprints are known by construction (a row map,
a layer that mixes rows), the mapped evaluation against the measured one and against one
element at a time, and the fallback against a map that is wrong on purpose.
"""

from __future__ import annotations

import numpy as np
import pytest

from checks import GradientMismatchError, check_layer
from checks.engine import grouping, tensor_groups, tolerances, trials
from property_tests.meta_tests._tiny_layers import Planted, conv

RULE = tolerances.rule_for(np.float64)


def _run(f, t):
    """A :data:`checks.engine.grouping.RunFn` over ``f`` of a parameter ``t`` (``M = 1``)."""

    def run(specs, cplx, rows=slice(None)):
        y0 = f(t[0]).reshape(1, -1)
        ys = []
        for pos, vals in specs:
            tp = t[0].copy()
            tp[pos] = vals[0]
            ys.append(f(tp).reshape(1, -1))
        ys = np.stack(ys)
        return np.broadcast_to(y0, ys.shape), ys

    return run


def test_cell_owners_maps_every_output_to_the_row_that_moves_it():
    rng = np.random.default_rng(0)
    n0, k, r = 6, 4, 5
    a = rng.standard_normal((k, r))
    w = rng.standard_normal((1, n0 * k))

    def rows(wf):  # y[o] = w[o] @ a: output row o moves with row o of w only
        return np.tanh(wf.reshape(n0, k) @ a)

    owners = trials.cell_owners(_run(rows, w), w, np.arange(n0 * k) // k, RULE)
    assert owners is not None and owners.dtype == np.int8
    np.testing.assert_array_equal(owners.reshape(n0, r), np.repeat(np.arange(n0)[:, None], r, 1))


def test_cell_owners_refuses_rows_whose_footprints_overlap():
    rng = np.random.default_rng(1)
    n0, k, r = 6, 4, 5
    a, b = rng.standard_normal((k, r)), rng.standard_normal((k, r))
    w = rng.standard_normal((1, n0 * k))

    def mixed(wf):  # output row o moves with rows o and o + 1 of w
        m = wf.reshape(n0, k)
        return m @ a + np.roll(m, -1, axis=0) @ b

    assert trials.cell_owners(_run(mixed, w), w, np.arange(n0 * k) // k, RULE) is None


@pytest.fixture
def probes(monkeypatch):
    """The maps probed during a check, as (number of cells, samples) per probe."""
    seen = []
    real = trials.cell_owners

    def counting(run, t, cells, *args, **kw):
        seen.append((int(cells.max()) + 1, t.shape[0]))
        return real(run, t, cells, *args, **kw)

    monkeypatch.setattr(trials, "cell_owners", counting)
    return seen


@pytest.mark.parametrize("method", ["complex", "richardson"])
def test_mapped_groups_agree_with_measured_sources(method, probes, monkeypatch):
    """x (3 channels share each lattice offset's map) and K (8 output maps: its slices) read
    their sources off maps; the numbers are those of code probes and of one element at a time,
    with fewer forward calls than code probes take."""
    monkeypatch.setattr(grouping, "GROUP_OVERHEAD", 0.0)  # group even where it does not pay
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 9, 9))
    layer = conv(rng, 3, 8, 3)
    mapped = check_layer(layer, x, method=method, coverage="full")
    assert {s for _, s in probes} == {1, 2}  # K's slices (one sample), x's lattice (two)
    with monkeypatch.context() as m:
        m.setattr(trials, "pays", lambda *a: False)
        measured = check_layer(layer, x, method=method, coverage="full")
        m.setattr(tensor_groups, "_MIN_GROUPED", 10**9)
        single = check_layer(layer, x, method=method, coverage="full")
    assert mapped.n_evals < measured.n_evals
    for other in (measured, single):
        for tm, to in zip(mapped.tensors, other.tensors, strict=True):
            np.testing.assert_allclose(tm.numerical, to.numerical, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("tensor", "idx"), [("x", (1, 2, 4, 7)), ("K", (3, 1, 2, 0))])
def test_a_planted_error_is_located_through_a_map(tensor, idx, probes):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 10, 10))
    with pytest.raises(GradientMismatchError) as ei:
        check_layer(Planted(conv(np.random.default_rng(8), 3, 8, 3), tensor, idx, 1e-6), x,
                    coverage="full")  # fmt: skip
    assert probes
    tr = ei.value.report.tensor(tensor)
    assert tr.worst_index == idx and tr.n_mismatched == 1


@pytest.mark.parametrize("method", ["complex", "richardson"])
def test_a_map_that_owns_nothing_sends_every_group_one_by_one(method, probes, monkeypatch):
    """Each mapped group is verified at its stencil points (and the complex step's imaginary
    parts): outputs that move without an owner among its members send it to one element at a
    time, with the same numbers."""
    monkeypatch.setattr(grouping, "GROUP_OVERHEAD", 0.0)  # x grouped for the complex step too
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 3, 9, 9))
    layer = conv(rng, 3, 8, 3)
    with monkeypatch.context() as m:
        m.setattr(tensor_groups, "_MIN_GROUPED", 10**9)
        single = check_layer(layer, x, method=method, coverage="full")
    counting = trials.cell_owners  # the fixture's
    monkeypatch.setattr(
        trials, "cell_owners", lambda *a, **k: np.full_like(counting(*a, **k), -1)
    )  # fmt: skip
    wrong = check_layer(layer, x, method=method, coverage="full")
    assert {s for _, s in probes} == {1, 2}  # K's and x's maps were probed (and are wrong)
    for tw, ts in zip(wrong.tensors, single.tensors, strict=True):
        np.testing.assert_allclose(tw.numerical, ts.numerical, rtol=1e-9, atol=1e-12)
    with pytest.raises(GradientMismatchError) as ei:
        check_layer(Planted(layer, "K", (5, 2, 0, 1), 1e-6), x, method=method, coverage="full")
    assert ei.value.report.tensor("K").worst_index == (5, 2, 0, 1)


def test_maps_are_probed_only_where_enough_groups_share_them():
    """A map's probe costs more than the code probes of one group: a single group (or a
    complex-step pair of groups) measures its own sources."""
    for kind in ("complex", "central"):
        assert not trials.pays(1, 16, 16, kind)
        assert trials.pays(2, 16, 16, kind)


class _KinkBehindAMap:
    """``y = relu(W) * x``, plus ``k relu(W[1, 0] - c)`` added to ``y[:, 0, 0]``, with
    ``W[0, 0] = 0`` at its kink and ``c`` such that ``W[1, 0]`` alone crosses its kink at
    ``+2h`` but its whole slice, moved by at most ``2h`` (times a factor in ``[1/2, 1]``),
    does not: the map credits ``y[:, 0, 0]``'s change at ``+2h`` to ``W[0, 0]``, whose
    one-sided slopes then look like a wider kink's. By construction ``W[0, 0]``'s
    subgradients are ``[0, 1] * sum(dy[:, 0, 0] x[:, 0, 0])``; backward reports ``scale``
    times that sum."""

    def __init__(self, scale: float, k: float = 20.0) -> None:
        rng = np.random.default_rng(3)
        w = rng.uniform(0.2, 1.0, (8, 8)) * rng.choice([-1, 1], (8, 8))
        w[0, 0] = 0.0
        h = RULE.h_central * max(abs(w[1, 0]), 1.0)
        self.c, self.k, self.scale = w[1, 0] + 1.9 * h, k, scale
        self.params, self.grads = {"W": w}, {}

    def forward(self, x):
        self.x = x
        w = self.params["W"]
        y = np.maximum(w, 0)[None] * x
        y[:, 0, 0] += self.k * np.maximum(w[1, 0] - self.c, 0)
        return y

    def backward(self, dy):
        w, x = self.params["W"], self.x
        g = (dy * x * (w > 0)[None]).sum(0)
        g[0, 0] = self.scale * (dy[:, 0, 0] * x[:, 0, 0]).sum()
        self.grads["W"] = g
        return dy * np.maximum(w, 0)[None]


@pytest.mark.parametrize("method", ["richardson", "complex"])
def test_a_step_that_crosses_a_kink_its_cell_does_not_cannot_pass_a_wrong_kink(method, probes):
    """Found in review: the contaminated slopes widened the kink test's subgradient hull and a
    value 2.5x the largest subgradient passed. Suspects of a tensor that read maps are now
    measured again without them."""
    x = np.random.default_rng(1).uniform(0.5, 1.5, (64, 8, 8))
    check_layer(_KinkBehindAMap(1.0), x, method=method, coverage="full")  # a subgradient
    assert probes  # W's groups read a map
    with pytest.raises(GradientMismatchError) as ei:
        check_layer(_KinkBehindAMap(2.5), x, method=method, coverage="full")
    assert ei.value.report.tensor("W").worst_index == (0, 0)
