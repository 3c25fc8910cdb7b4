"""Issue 12, item 2: a cost-aware ``coverage="auto"``.

The plan costs a check by a function of shapes and of the grouping trials' verdicts (never of
timings): a tensor that grouping makes cheap is checked whole, a sample is drawn in whole
groups, a cheap tensor beside an expensive one is checked whole while the other is sampled,
and all of it is reproducible from ``seed``. Ground truth for the detections below is a bug
planted by construction (one gradient element scaled by ``1 + rel``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import cnn_ref
from checks import GradientMismatchError, check_layer
from checks.engine import coverage as cov
from checks.engine import grouping
from property_tests.meta_tests._tiny_layers import Planted


def _conv(shape: tuple[int, ...], c_out: int = 4) -> tuple[cnn_ref.Conv2D, np.ndarray]:
    layer = cnn_ref.Conv2D(shape[1], c_out, 3, convention="xcorr", activation="tanh", seed=0)
    return layer, np.random.default_rng(0).standard_normal(shape)


def test_auto_checks_every_element_where_grouping_makes_that_cheap():
    """Before, ``auto`` costed x one position at a time (4096 positions x 8192 inputs, over
    its budget) and sampled half of x and of K; grouped, the whole check fits the budget."""
    layer, x = _conv((2, 4, 32, 32))
    rep = check_layer(layer, x)
    assert rep.ok and rep.coverage == "full"
    assert all(t.n_checked == t.n_total for t in rep.tensors)
    assert "lattice period" in rep.batching  # x was evaluated in groups
    idx = (1, 2, 17, 30)
    with pytest.raises(GradientMismatchError) as ei:
        check_layer(Planted(layer, "x", idx, 1e-3), x)
    tx = ei.value.report.tensor("x")
    # found by the element-by-element check itself, not by a projection's group testing
    assert tx.located is None and tx.n_mismatched == 1 and tx.worst_index == idx


def _lattice_cost(kind: str) -> tuple[cov.TensorCost, list[np.ndarray]]:
    shape = (3, 2, 12, 12)  # packed along axis 0: columns are the positions of a sample
    groups = grouping.lattice_groups(shape[1:], 3)
    c = cov.tensor_cost("x", shape, kind, 0, float(np.prod(shape)) + 500, 0.01, 1000.0, groups)
    return c, groups


@pytest.mark.parametrize("kind", ["complex", "richardson"])
def test_a_sample_over_budget_is_whole_groups_and_reproducible(kind):
    c, groups = _lattice_cost(kind)
    budget = 0.3 * c.work  # half of it is spent on samples: about 15 % of x
    plans = [
        cov.plan_coverage("auto", [c], {"x": 1e-12}, np.random.default_rng(s), work_budget=budget)
        for s in (0, 0, 1)
    ]
    masks = [p.masks["x"] for p in plans]
    assert plans[0].coverage == "sampled+projected" and plans[0].projections["x"] >= 2
    cols = masks[0].all(axis=0).reshape(-1)
    assert (masks[0].all(axis=0) == masks[0].any(axis=0)).all()  # whole columns
    chosen = [g for g in groups if cols[g].any()]
    assert chosen and all(cols[g].all() for g in chosen)  # whole groups
    assert sum(cols[g].all() for g in groups) < len(groups)
    # what it costs: within the half of the budget it may spend
    assert sum(c.unit_work[i] for i, g in enumerate(groups) if cols[g].all()) <= 0.5 * budget
    assert np.array_equal(masks[0], masks[1])  # reproducible from seed
    assert not np.array_equal(masks[0], masks[2])


def test_a_cheap_tensor_beside_an_expensive_one_is_checked_whole():
    """A bias of 16 elements costs 16 forward calls; the kernel beside it 4096: over budget,
    the bias still fits its share and is checked whole (no projections), the kernel is sampled
    and backed by projections."""
    per_call = 5000.0
    b = cov.tensor_cost("b", (16,), "complex", None, per_call, 1.0, 1000.0)
    K = cov.tensor_cost("K", (16, 16, 4, 4), "complex", None, per_call, 1.0, 1000.0)
    budget = 4 * (b.work + 0.02 * K.work)
    plan = cov.plan_coverage(
        "auto", [K, b], {"b": 1e-12, "K": 1e-12}, np.random.default_rng(0), work_budget=budget
    )
    assert plan.coverage == "sampled+projected"
    assert plan.masks["b"].all() and plan.projections["b"] == 0
    n_k = int(plan.masks["K"].sum())
    assert 0 < n_k < plan.masks["K"].size and plan.projections["K"] >= 2
    # the kernel's sample spends what the bias left of the half budget, and no more
    assert (n_k * K.work / K.shape[0] / math.prod(K.shape[1:])) <= 0.5 * budget - b.work


def test_complex_copies_cost_more_than_real_ones_and_groups_less_than_their_members():
    real = cov.tensor_cost("x", (64,), "central", None, 1e4, 1.0, 1000.0)
    cplx = cov.tensor_cost("x", (64,), "complex", None, 1e4, 1.0, 1000.0)
    # one complex copy (four real multiply-adds per complex one) against four real copies
    assert cplx.work == pytest.approx(64 * (cov.COMPLEX_WORK * 1e4 + 1000.0))
    assert real.work == pytest.approx(64 * 4 * (1e4 + 1000.0))
    grouped = cov.tensor_cost("x", (64,), "complex", None, 1e4, 1.0, 1000.0, [np.arange(64)])
    assert grouped.calls == grouping.copies(64, "complex") < cplx.calls
    assert grouped.work < cplx.work
    # a check of every element that cannot decode the groups is costed one by one
    apart = cov.tensor_cost("x", (64,), "complex", None, 1e4, 1.0, 1000.0, [np.arange(64)], False)
    assert apart.work == cplx.work and apart.unit_work is not None


def test_auto_over_budget_is_reproducible_from_seed():
    layer, x = _conv((4, 8, 32, 32), c_out=8)  # over budget (with maps, 24 x 24 fits)
    a = check_layer(layer, x, seed=5)
    b = check_layer(layer, x, seed=5)
    c = check_layer(layer, x, seed=6)
    assert a.coverage == "sampled+projected"
    assert a.n_evals == b.n_evals
    for ta, tb in zip(a.tensors, b.tensors, strict=True):
        assert np.array_equal(ta.checked, tb.checked)
        assert ta.projections == tb.projections
    assert any(
        not np.array_equal(ta.checked, tc.checked)
        for ta, tc in zip(a.tensors, c.tensors, strict=True)
    )
