"""Which elements are checked one by one, and how many random projections back them up.

``full`` checks every element of ``x`` and of every parameter. ``sampled`` checks a seeded
subset. ``projected`` compares ``k`` directional derivatives along Gaussian directions, with
``k`` chosen from a target miss probability. ``auto`` is ``full`` whenever the whole check fits
the evaluation budget, otherwise a budget-sized sample plus projections.

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
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "CALL_BUDGET",
    "COVERAGES",
    "TARGET_MISS_PROBABILITY",
    "TARGET_REL_ERROR",
    "WORK_BUDGET",
    "CoveragePlan",
    "TensorCost",
    "n_projections",
    "plan_coverage",
]

COVERAGES = ("auto", "full", "sampled", "projected")
#: forward work (input elements pushed through forward) that ``auto`` spends before sampling
WORK_BUDGET = 2**25
#: forward calls that ``auto`` spends before sampling (per-call overhead dominates small layers)
CALL_BUDGET = 6000
TARGET_MISS_PROBABILITY = 1e-6
TARGET_REL_ERROR = 5e-3
_MAX_PROJECTIONS = 16
_MIN_PROJECTIONS = 2
_MIN_SAMPLE = 32


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
        Input elements pushed through forward for full coverage.
    calls : float
        Forward calls for full coverage.
    """

    name: str
    shape: tuple[int, ...]
    group_axis: int | None
    work: float
    calls: float


@dataclass
class CoveragePlan:
    """Per-tensor masks of elements checked one by one and numbers of projections."""

    coverage: str
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    projections: dict[str, int] = field(default_factory=dict)


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


def _mask(shape: tuple[int, ...], group_axis: int | None, frac: float, rng) -> np.ndarray:
    """A seeded mask with about ``frac`` of the elements (whole columns when grouped)."""
    if group_axis is None:
        cols_shape = shape
    else:
        cols_shape = shape[:group_axis] + shape[group_axis + 1 :]
    n_cols = math.prod(cols_shape)
    k = min(n_cols, max(min(n_cols, _MIN_SAMPLE), math.ceil(frac * n_cols)))
    flat = np.zeros(n_cols, dtype=bool)
    flat[rng.choice(n_cols, size=k, replace=False)] = True
    m = flat.reshape(cols_shape)
    if group_axis is not None:
        m = np.broadcast_to(np.expand_dims(m, group_axis), shape).copy()
    return m


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
        Budget of ``auto`` (and the size of an explicit ``sampled`` check).

    Raises
    ------
    ValueError
        On an unknown ``coverage``.
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
    # sampled (explicit, or auto over budget): spend half the budget on samples
    frac = 0.5 * min(
        work_budget / total_work if total_work else 1.0,
        call_budget / total_calls if total_calls else 1.0,
    )
    if coverage == "sampled":
        frac = min(frac, 0.25) if not fits else 0.25
    for c in costs:
        plan.masks[c.name] = _mask(c.shape, c.group_axis, min(frac, 1.0), rng)
        plan.projections[c.name] = (
            n_projections(math.prod(c.shape), resolution[c.name]) if coverage == "auto" else 0
        )
    plan.coverage = "sampled+projected" if coverage == "auto" else "sampled"
    return plan
