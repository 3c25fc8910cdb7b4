"""Which elements are checked one by one, and how many random projections back them up.

``full`` checks every element of ``x`` and of every parameter. ``sampled`` checks a seeded
subset. ``projected`` compares ``k`` directional derivatives along Gaussian directions, with
``k`` chosen from a target miss probability. ``auto`` is ``full`` whenever the whole check fits
its budget; otherwise it spends half the budget on samples -- a tensor whose full check fits
its share is checked whole, the others are sampled -- and backs every sampled tensor with
projections.

Cost (:func:`tensor_cost`) is counted in elements pushed through forward, inputs and outputs,
plus a fixed :data:`CALL_OVERHEAD` per call: a function of shapes and of the grouping trials'
verdicts only, never of timings, so a plan (and every number of a check) is reproducible from
``seed``. Where a trial found groups of elements with disjoint footprints
(:func:`checks.engine.tensor_groups.trial_groups`), a group costs its code probes and stencil
once for all its members, and samples are drawn group by group, so that what is sampled is
evaluated as cheaply per element as a full check would be. A whole tensor whose groups share
maps of outputs to cells (:mod:`checks.engine.trials`) costs each group its stencil and a
share of its map's probe instead of its code probes; a sample of groups is costed without
(its groups seldom share a map enough to pay for it). The budget
(:func:`work_budget`) is :data:`FORWARD_MULTIPLE` forward passes on the caller's input, and
at least :data:`WORK_BUDGET`.

Notes
-----
A projection along ``v ~ N(0, I)`` misses a single wrong element ``i`` (error ``e``) only when
``|e v_i|`` falls below the projection's tolerance ``tau ~ res * sum_j |g_j v_j|`` with ``res``
the relative resolution of the method (``safety * eps`` for the complex step,
``safety * eps / h`` for real differences). With ``c = tau / |e|`` the miss probability of one
projection is ``P(|z| < c) <= sqrt(2/pi) c``, so ``k = ceil(log q / log p1)`` projections miss
with probability at most ``q``. The planner sizes ``c`` for an error of ``TARGET_REL_ERROR``
times the mean gradient element.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from checks.engine import finite_diff, grouping, trials

__all__ = [
    "CALL_BUDGET",
    "CALL_OVERHEAD",
    "COMPLEX_WORK",
    "COVERAGES",
    "FORWARD_MULTIPLE",
    "TARGET_MISS_PROBABILITY",
    "TARGET_REL_ERROR",
    "WORK_BUDGET",
    "CoveragePlan",
    "TensorCost",
    "n_projections",
    "plan_coverage",
    "tensor_cost",
    "work_budget",
]

COVERAGES = ("auto", "full", "sampled", "projected")
#: the least forward work (elements pushed through forward, inputs and outputs) ``auto``
#: spends before sampling
WORK_BUDGET = 2**25
#: ... and, for a larger layer, this many forward passes on the caller's input
FORWARD_MULTIPLE = 64
#: forward calls that ``auto`` spends before sampling (per-call overhead dominates small layers)
CALL_BUDGET = 6000
#: the fixed cost of a forward call, in elements pushed through forward (~30 us)
CALL_OVERHEAD = 1000.0
#: the work of a complex copy per element pushed through, in real ones: a complex multiply-add
#: is four real ones (cnn_ref convs measured 3.8-4.1x without an activation, 5.4-6.4x with
#: tanh; a tiny layer ~1.2x, its calls' fixed cost counted once)
COMPLEX_WORK = 4.0
TARGET_MISS_PROBABILITY = 1e-6
TARGET_REL_ERROR = 5e-3
_MAX_PROJECTIONS = 16
_MIN_PROJECTIONS = 2


@dataclass
class TensorCost:
    """What checking one tensor element by element would cost.

    Attributes
    ----------
    name : str
    shape : tuple of int
    group_axis : int or None
        When perturbations are packed along the batch axis, elements are checked in whole
        columns (one position in every sample); ``group_axis`` is that axis.
    work : float
        Forward work of full coverage (elements pushed through forward).
    calls : float
        Forward calls for full coverage.
    units : list of int arrays, optional
        Columns (positions within a sample when grouped along ``group_axis``, flat indices
        otherwise) that are evaluated together, a partition of them; ``None``: every column
        on its own, at ``work / n_columns`` each.
    unit_work, unit_calls : ndarray, optional
        The work and calls of each unit.
    """

    name: str
    shape: tuple[int, ...]
    group_axis: int | None
    work: float
    calls: float
    units: list[np.ndarray] | None = None
    unit_work: np.ndarray | None = None
    unit_calls: np.ndarray | None = None

    @property
    def n_columns(self) -> int:
        if self.group_axis is None:
            return math.prod(self.shape)
        return math.prod(self.shape) // max(1, self.shape[self.group_axis])


@dataclass
class CoveragePlan:
    """Per-tensor masks of elements checked one by one and numbers of projections."""

    coverage: str
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    projections: dict[str, int] = field(default_factory=dict)


def work_budget(forward_work: float) -> float:
    """``auto``'s work budget for a layer one forward pass of which costs ``forward_work``."""
    return max(float(WORK_BUDGET), FORWARD_MULTIPLE * float(forward_work))


def _copies(g: int, kind: str, shared: int = 0) -> tuple[float, int]:
    """(real, complex) copies that evaluating ``g`` elements as one group takes (one by one
    for ``g == 1``); ``shared``: the group reads its sources off a map that many groups share
    (:mod:`checks.engine.trials`), and takes its share of the map's probe."""
    if g == 1:
        return (0, 1) if kind == "complex" else (len(finite_diff.REAL_STENCIL), 0)
    n = grouping.copies(g, kind, mapped=shared > 0)
    probe = trials.probe_copies(g, kind) / shared if shared > 0 else 0.0
    return (n - 1 + probe, 1) if kind == "complex" else (n + probe, 0)


def tensor_cost(
    name: str,
    shape: tuple[int, ...],
    kind: str,
    group_axis: int | None,
    copy_elements: float,
    copy_calls: float,
    call_work: float,
    groups: Sequence[np.ndarray] | None = None,
    whole_grouped: bool = True,
    shared: int = 0,
) -> TensorCost:
    """The cost of checking every element of a tensor, unit by unit.

    Parameters
    ----------
    name, shape : the tensor
    kind : {"complex", "central", "richardson"}
        Its method: one complex copy per element, or four real ones (the stencil).
    group_axis : int or None
        The batch axis when the tensor is packed (a copy perturbs one position of every
        sample), else ``None`` (a copy is one forward on the whole input).
    copy_elements, copy_calls : float
        Elements one copy pushes through forward (a complex copy's count
        :data:`COMPLEX_WORK` times) and the forward calls it takes (fractional where many
        copies share a packed call).
    call_work : float
        The fixed work of a call: :data:`CALL_OVERHEAD` and the inputs read once per call.
    groups : sequence of int arrays, optional
        The groups of disjoint footprints a trial found (columns): each costs its code
        probes and stencil once (:func:`checks.engine.grouping.copies`), or its members one
        by one where that is cheaper (:func:`checks.engine.grouping.worth_grouping`, as the
        evaluation decides).
    whole_grouped : bool
        Whether a check of every element evaluates the groups as groups (their copies fit
        its scratch); if not, its cost is that of one by one, and only samples are grouped.
    shared : int
        In a check of every element, the groups read their sources off maps each of which
        this many groups share (:mod:`checks.engine.trials`: no code probes, a share of the
        map's probe); 0: none.
    """
    real_copy = copy_elements + copy_calls * call_work
    cplx_copy = COMPLEX_WORK * copy_elements + copy_calls * call_work

    def cost(g: int, share: int = 0) -> tuple[float, float]:
        r, c = _copies(g, kind, share if g > 1 else 0)
        return r * real_copy + c * cplx_copy, (r + c) * copy_calls

    single, single_calls = cost(1)
    n_cols = math.prod(shape) // (1 if group_axis is None else max(1, shape[group_axis]))
    if not groups:
        return TensorCost(name, tuple(shape), group_axis, n_cols * single, n_cols * single_calls)
    # a sample of groups is costed as groups on their own (a map pays only when several
    # groups read it: :func:`checks.engine.trials.pays`), the whole tensor with shared maps
    work, calls = np.empty(len(groups)), np.empty(len(groups))
    whole = np.zeros(2)
    for i, g in enumerate(groups):
        if grouping.worth_grouping(g.size, kind, real_copy):
            work[i], calls[i] = cost(g.size)
            work[i] += grouping.GROUP_OVERHEAD
        else:
            work[i], calls[i] = g.size * single, g.size * single_calls
        if shared and grouping.worth_grouping(g.size, kind, real_copy, mapped=True):
            whole += (cost(g.size, shared)[0] + grouping.GROUP_OVERHEAD, cost(g.size, shared)[1])
        else:
            whole += (work[i], calls[i])
    full = (float(whole[0]), float(whole[1]))
    if not whole_grouped:
        full = (n_cols * single, n_cols * single_calls)
    return TensorCost(name, tuple(shape), group_axis, *full, list(groups), work, calls)


def n_projections(n: int, resolution: float, q: float = TARGET_MISS_PROBABILITY) -> int:
    """Projections needed so a single-element error of ``TARGET_REL_ERROR`` is missed w.p. <= q.

    Parameters
    ----------
    n : int
        Elements in the tensor (``sum_j |g_j v_j| ~ 0.8 n mean|g|``).
    resolution : float
        Relative resolution of one directional derivative.
    q : float
        Target miss probability.
    """
    c = resolution * 0.8 * max(n, 1) / TARGET_REL_ERROR
    p1 = min(math.sqrt(2 / math.pi) * c, 0.5)
    if p1 <= 0:
        return _MIN_PROJECTIONS
    k = math.ceil(math.log(q) / math.log(p1))
    return int(min(max(k, _MIN_PROJECTIONS), _MAX_PROJECTIONS))


def _expand_columns(c: TensorCost, cols: np.ndarray) -> np.ndarray:
    """The mask of a tensor from a boolean mask of its columns (whole columns when grouped)."""
    if c.group_axis is None:
        return cols.reshape(c.shape)
    cols_shape = c.shape[: c.group_axis] + c.shape[c.group_axis + 1 :]
    m = np.expand_dims(cols.reshape(cols_shape), c.group_axis)
    return np.broadcast_to(m, c.shape).copy()


def _sample(
    c: TensorCost, work: float, calls: float, rng: np.random.Generator
) -> tuple[np.ndarray, float, float]:
    """A seeded mask of ``c``'s elements whose check costs at most ``work`` and ``calls``
    (but at least one unit): whole units, drawn in a random order; and what it costs."""
    n_cols = c.n_columns
    flat = np.zeros(n_cols, dtype=bool)
    if c.units is None or c.unit_work is None or c.unit_calls is None:
        per_w = c.work / max(1, n_cols)
        per_c = c.calls / max(1, n_cols)
        k = min(work / per_w if per_w else n_cols, calls / per_c if per_c else n_cols)
        k = min(n_cols, max(1, math.floor(k)))
        flat[rng.choice(n_cols, size=k, replace=False)] = True
        return _expand_columns(c, flat), k * per_w, k * per_c
    order = rng.permutation(len(c.units))
    cum_w, cum_c = np.cumsum(c.unit_work[order]), np.cumsum(c.unit_calls[order])
    fits = (cum_w <= work) & (cum_c <= calls)
    k = max(1, len(order) if fits.all() else int(np.argmin(fits)))  # a prefix of the order
    for u in order[:k]:
        flat[c.units[u]] = True
    return _expand_columns(c, flat), float(cum_w[k - 1]), float(cum_c[k - 1])


def plan_coverage(
    coverage: str,
    costs: list[TensorCost],
    resolution: dict[str, float],
    rng: np.random.Generator,
    *,
    work_budget: float = WORK_BUDGET,
    call_budget: float = CALL_BUDGET,
) -> CoveragePlan:
    """Choose the elements to check and the number of projections for every tensor.

    Parameters
    ----------
    coverage : {"auto", "full", "sampled", "projected"}
    costs : list of TensorCost
    resolution : dict
        Relative resolution of a directional derivative, per tensor name.
    rng : numpy Generator
        Seeded; the only source of randomness.
    work_budget, call_budget : float
        Budget of ``auto`` (and the most an explicit ``sampled`` check spends).

    Raises
    ------
    ValueError
        On an unknown ``coverage``.

    Notes
    -----
    Over budget, ``auto`` shares half the budget out cheapest tensor first: each tensor gets
    what is left divided by the tensors left, is checked whole when its full check fits
    that (a bias, a small kernel), else sampled to it, and what it does not use goes to the
    next. ``sampled`` takes a quarter of each tensor's work, within the same shares.
    """
    if coverage not in COVERAGES:
        raise ValueError(f"coverage must be one of {COVERAGES}, got {coverage!r}")
    total_work = sum(c.work for c in costs)
    total_calls = sum(c.calls for c in costs)
    fits = total_work <= work_budget and total_calls <= call_budget
    plan = CoveragePlan(coverage=coverage)
    if coverage == "full" or (coverage == "auto" and fits):
        plan.coverage = "full"
        for c in costs:
            plan.masks[c.name] = np.ones(c.shape, dtype=bool)
            plan.projections[c.name] = 0
        return plan
    if coverage == "projected":
        for c in costs:
            plan.masks[c.name] = np.zeros(c.shape, dtype=bool)
            plan.projections[c.name] = n_projections(math.prod(c.shape), resolution[c.name])
        return plan
    left_w, left_c = 0.5 * work_budget, 0.5 * call_budget
    order = sorted(range(len(costs)), key=lambda i: (costs[i].work, i))
    for rank, i in enumerate(order):
        c = costs[i]
        share_w, share_c = left_w / (len(order) - rank), left_c / (len(order) - rank)
        if coverage == "sampled":
            share_w, share_c = min(share_w, 0.25 * c.work), min(share_c, 0.25 * c.calls)
        if coverage == "auto" and c.work <= share_w and c.calls <= share_c:
            m, used_w, used_c = np.ones(c.shape, dtype=bool), c.work, c.calls
        else:
            m, used_w, used_c = _sample(c, share_w, share_c, rng)
        plan.masks[c.name] = m
        left_w -= used_w
        left_c -= used_c
        plan.projections[c.name] = (
            n_projections(math.prod(c.shape), resolution[c.name])
            if coverage == "auto" and not m.all()
            else 0
        )
    plan.coverage = "sampled+projected" if coverage == "auto" else "sampled"
    return plan
