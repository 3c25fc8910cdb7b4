"""Judgement of one tensor: every checked element against its own tolerance, suspects
re-evaluated at smaller steps (:func:`refine`, :func:`choose_step`), kinks accepted where the
analytic value is a subgradient, tied kinks judged together, random projections of the rest,
and the :class:`~checks.report.TensorReport` that says what was found.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from checks.engine import (
    kinks,
    tolerances,
)
from checks.engine.directions import (
    Directional,
    complex_refused,
    directional,
    directional_real,
)
from checks.engine.elements import finite_differences
from checks.engine.evaluation import Ctx
from checks.engine.finite_diff import FDResult
from checks.report import TensorReport, order_with_ties
from checks.report.errors import GradcheckError

# real-method elements re-evaluated with steps h / s (see refine), and at most this many
_REFINE_SCALES = (4.0, 16.0, 64.0)

_REFINE_MAX = 512

# tied sets of kinked elements judged together along their common direction (_tied_sets)
_TIED_MAX = 3
# localization of a failing projection (_locate): sets this small are evaluated one by one;
# a failing set whose halves both pass is kept when this small; at most this many tests
_LOCATE_LEAF = 8
_LOCATE_SPREAD = 64
_LOCATE_MAX_TESTS = 256
_LOCATE_TRIES = 4

# refine's smoothness tests allow this many typical roundings (finite_diff.numerator_noise:
# ~2.7 standard deviations each); too few marks smooth stencils as kinked, too many lets
# several kinks pass for a curvature
_SMOOTH_SAFETY = 3.0


def _judge(
    ctx: Ctx, name: str, a: np.ndarray, fd: dict[str, np.ndarray], mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, str]:
    tol, text = tolerances.tolerance(
        fd["value"], fd["error"], fd["magnitude"], ctx.rule, rtol=ctx.rtol, atol=ctx.atol
    )
    with np.errstate(invalid="ignore"):
        ok = np.abs(a - fd["value"]) <= tol
    return tol, mask & ~ok & np.isfinite(fd["value"]) & np.isfinite(a), text


def _truncation_dominated(fd: dict[str, np.ndarray]) -> np.ndarray:
    """``|D(h) - D(2h)|`` well above the rounding of a one-sided slope: a curvature or a kink
    inside the stencil, worth a smaller step (the error estimate's other parts, such as a
    promoted run's forward resolution, do not shrink with the step)."""
    with np.errstate(invalid="ignore"):
        return np.abs(fd["central"] - fd["central2"]) > 3.5 * fd["onesided_noise"]


def refine(
    ctx: Ctx,
    name: str,
    a: np.ndarray,
    fd: dict[str, np.ndarray],
    sel: np.ndarray,
    bad: np.ndarray,
    real: str,
    positions: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Re-evaluate suspect elements with smaller steps; keep the coarsest value whose stencil
    is smooth and that agrees with the finer smooth ones.

    With ``positions`` (flat indices into the tensor, ascending), ``a``, ``fd``, ``sel`` and
    ``bad`` are 1-D over those positions (the judgement's compact form) instead of
    full-shape.

    Parameters
    ----------
    ctx, name : the run and the tensor.
    a : ndarray
        Analytic gradient of the tensor.
    fd : dict
        Real-method results at the table's step ``h`` (full-shape arrays).
    sel : ndarray of bool
        Elements judged with ``fd``.
    bad : ndarray of bool
        Those of them that failed at ``h``.
    real : {"central", "richardson"}

    Returns
    -------
    chosen : dict
        ``fd``'s arrays with the refined elements replaced by the step chosen for each (in
        place: holding a second set of full-shape fields cost ten times the tensor).
    kink_ok : ndarray of bool
        Refined elements that the kink test marks at some step and whose analytic value lies
        between that step's one-sided slopes (within its tolerance).
    refined : ndarray of bool

    Notes
    -----
    A kink at a distance ``0 < delta < 2h`` from ``t`` contaminates the one-sided slopes and
    Richardson's extrapolation, and ``|D(h) - D(2h)|`` need not show it (several kinks can
    move both alike); in float32, where ``h ~ eps^(1/3) ~ 5e-3`` and one kernel element moves
    ~70 ReLU pre-activations, that happens at a quarter of the elements. Suspects are the
    elements that failed and those whose error estimate is dominated by truncation
    (``error > 4 x`` the rounding of a one-sided slope). They are evaluated again at
    ``h / 4``, ``h / 16`` and ``h / 64``; a piecewise-smooth ``phi`` is smooth on a stencil
    unless a kink sits within it.

    A step's stencil counts as smooth when (i) the kink test
    (:func:`checks.engine.kinks.judge_kinks`, at or near ``t``) is silent on it and on every
    finer stencil (a kink inside a finer stencil is inside this one), (ii) ``|D(h) - D(2h)|`` is
    within ``safety`` roundings of a one-sided slope, and (iii) ``right - left`` is 4x the next
    finer step's, as ``h phi''`` is, and a quarter of the next coarser step's unless the slopes
    agree to rounding (several kinks can mimic a curvature on one stencil, not on three; a flat
    stencil shows no kink, whatever the coarser one holds outside it). For these tests the
    rounding of a one-sided slope is its typical size (the root-sum-square of
    :func:`checks.engine.finite_diff.numerator_noise`, also for a caller's ``dy``), allowed
    ``_SMOOTH_SAFETY`` times. A smaller noise marks more stencils non-smooth, which is the safe
    direction: the value then comes from a finer step with its own (larger) error estimate. (An
    earlier version used the worst-case sum, ~30x too large at ~800 outputs, with ad-hoc caps;
    3-5 kinks in the h/4 stencil then passed for a curvature: seeds 23-25 in
    test_checker_float32.py.)

    From the smallest step up, a smooth step is used when it agrees with the finer smooth
    ones (within both tolerances); the coarsest such step wins (least rounding). Where no
    step is smooth the smallest step's value stands, and the element is accepted as a kink
    when some step's kink test marked it and the analytic value lies within the hull of the
    mean slopes of ``phi`` over sub-intervals of ``[t - 2h, t + 2h]`` (one-sided slopes and
    outer rings, of every step) widened by the tolerance: each is a mean of ``phi'`` there,
    so the hull lies in the Clarke subdifferential of the neighbourhood.
    """
    with np.errstate(invalid="ignore"):
        cand = sel & np.isfinite(fd["value"]) & (bad | _truncation_dominated(fd))
    if cand.sum() > _REFINE_MAX:
        with np.errstate(invalid="ignore", divide="ignore"):
            score = np.where(bad, np.inf, fd["error"] / np.abs(fd["value"]))
        score = np.where(cand, np.nan_to_num(score, nan=0.0, posinf=np.inf), -1.0)
        keep = np.argsort(-score, axis=None, kind="stable")[:_REFINE_MAX]
        cand = np.zeros_like(cand)
        cand.flat[keep] = True
    if not cand.any():
        return dict(fd), np.zeros(cand.shape, dtype=bool), cand
    mags = fd["magnitude"][sel & np.isfinite(fd["magnitude"])]
    floor = float(mags.max()) if mags.size else 0.0
    # every level holds the candidates only (1-D, in C order): _choose_step is elementwise
    levels = [{f: v[cand] for f, v in fd.items()}]
    for s in _REFINE_SCALES:
        # the same run with a smaller step, in the groups found at the table's step
        sub = replace(ctx, rule=replace(ctx.rule, h_central=ctx.rule.h_central / s))
        levels.append(finite_differences(sub, name, _full_mask(ctx, name, cand, positions),
                                         real, compact=True, refining=True))  # fmt: skip
    every = np.ones(int(cand.sum()), dtype=bool)
    chosen_c, kink_c, _, _ = _choose_step(ctx, a[cand], levels, every, floor)
    chosen = dict(fd)  # the arrays of fd, the candidates overwritten
    for f, v in chosen_c.items():
        chosen[f][cand] = v
    kink_ok = np.zeros(cand.shape, dtype=bool)
    kink_ok[cand] = kink_c
    return chosen, kink_ok, cand


def _full_mask(ctx: Ctx, name: str, sel: np.ndarray, positions: np.ndarray | None) -> np.ndarray:
    """``sel`` as a mask of the whole tensor (it is one already without ``positions``)."""
    if positions is None:
        return sel
    t = ctx.target.value(name)
    full = np.zeros(t.size, dtype=bool)
    full[positions[sel]] = True
    return full.reshape(t.shape)


def _choose_step(
    ctx: Ctx, a: np.ndarray, levels: list[dict[str, np.ndarray]], cand: np.ndarray, floor: float
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """The core of :func:`refine`: pick each candidate's step from ``levels`` (results at
    h, h/4, h/16, h/64). Returns ``(chosen, kink_ok, lo, hi)``; ``[lo, hi]`` is the hull of
    the mean slopes over the neighbourhood (the subgradients accepted at a kink)."""

    def tols(d: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(default-rule tolerance, the run's tolerance: explicit rtol/atol when given)."""
        v, e, m = d["value"], d["error"], d["magnitude"]
        dflt, _ = tolerances.tolerance(v, e, m, ctx.rule, floor=floor)
        run, _ = tolerances.tolerance(v, e, m, ctx.rule, rtol=ctx.rtol, atol=ctx.atol, floor=floor)
        return dflt, run

    chosen = {f: v.copy() for f, v in levels[0].items()}
    best = np.full(cand.shape, len(levels) - 1)
    ref_v, ref_t = levels[-1]["value"].copy(), np.full(cand.shape, np.inf)
    any_clean = np.zeros(cand.shape, dtype=bool)
    kink_seen = np.zeros(cand.shape, dtype=bool)
    lo = np.full(cand.shape, np.inf)
    hi = np.full(cand.shape, -np.inf)
    noise = [fm["onesided_noise"] for fm in levels]
    d1s = [fm["right"] - fm["left"] for fm in levels]

    def curvature_ok(fine: int) -> np.ndarray:
        """smooth phi: right - left = h phi'' + O(h^3) is 4x the next (h/4) step's; several
        kinks inside one stencil can mimic a curvature on it, not on two"""
        with np.errstate(invalid="ignore"):
            curv = np.abs(d1s[fine - 1] - 4.0 * d1s[fine])
            return curv <= _SMOOTH_SAFETY * 2.0 * (noise[fine - 1] + 4.0 * noise[fine])

    for m in range(len(levels) - 1, -1, -1):
        fm = dict(levels[m])
        tm, _ = tols(fm)
        osn = noise[m]
        kink_m, _ = kinks.judge_kinks(_as_fd(fm), a, tm, _SMOOTH_SAFETY)
        # a kink within a finer stencil lies within this one too: it cannot be smooth
        kink_finer = kink_seen.copy()
        kink_seen |= kink_m
        # slopes of phi over sub-intervals of [t - 2h, t + 2h]: the one-sided ones and the
        # outer rings' ((t + h, t + 2h): 2 right2 - right), each a mean of phi' there
        for v in (fm["left"], fm["right"], fm["left2"], fm["right2"],
                  2.0 * fm["right2"] - fm["right"], 2.0 * fm["left2"] - fm["left"]):  # fmt: skip
            lo = np.fmin(lo, v)
            hi = np.fmax(hi, v)
        with np.errstate(invalid="ignore"):
            trunc = np.abs(fm["central"] - fm["central2"])
            clean = ~kink_m & ~kink_finer & (trunc <= _SMOOTH_SAFETY * osn)
            # curvature consistent with the next finer step and, except on the finest
            # (whose value stands when nothing is smooth), with the next coarser one
            if m < len(levels) - 1:
                clean &= curvature_ok(m + 1)
                if m > 0:
                    # a stencil whose slopes agree to rounding shows neither curvature nor
                    # kink; a coarser one may well hold a kink outside it
                    flat = np.abs(d1s[m]) <= _SMOOTH_SAFETY * 2.0 * osn
                    clean &= flat | curvature_ok(m)
            ok = cand & clean & (np.abs(fm["value"] - ref_v) <= tm + ref_t)
        any_clean |= ok
        best = np.where(ok, m, best)
        ref_v = np.where(ok, fm["value"], ref_v)
        ref_t = np.where(ok, tm, ref_t)
    for m, fm in enumerate(levels):
        use = cand & (best == m)
        for f in chosen:
            chosen[f] = np.where(use, fm[f], chosen[f])
    # a step on which phi is smooth means no kink at t: the element is judged by value only;
    # otherwise any mean slope over the neighbourhood is a Clarke subgradient of it
    _, tol_run = tols(chosen)
    with np.errstate(invalid="ignore"):
        in_hull = (a >= lo - tol_run) & (a <= hi + tol_run)
    kink_ok = cand & kink_seen & ~any_clean & in_hull
    return chosen, kink_ok, lo - tol_run, hi + tol_run


def check_tensor(
    ctx: Ctx,
    name: str,
    a: np.ndarray,
    mask: np.ndarray,
    n_proj: int,
    kind: str,
    method_note: str,
    given: Sequence[Directional] = (),
) -> TensorReport:
    """Judge the masked elements of ``name`` one by one and the rest by ``n_proj`` random
    projections (the first of them the directional derivatives ``given``, already evaluated
    along random directions of the whole tensor by ``kind``'s method: the complex-step
    probe's); locate the wrong elements when a projection fails."""
    t = ctx.target.value(name)
    if t.size == 0:
        # a zero-size parameter (a layer configured with nothing in it): no element to
        # perturb, nothing to judge; its gradient's shape was checked with the others
        return TensorReport(
            name=name, shape=tuple(t.shape), dtype=ctx.dtypes.get(name, str(t.dtype)),
            atol=ctx.atol, rtol=ctx.rtol, tolerance_rule="zero-size tensor: nothing to check",
            analytic=a, numerical=a.copy(), error_estimate=a.copy(), tol=a.copy(),
            mismatch=np.zeros(t.shape, dtype=bool), checked=np.zeros(t.shape, dtype=bool),
            method=kind,
        )  # fmt: skip
    el = _judge_elements(ctx, name, a, mask, kind)
    real = el.real
    shape = tuple(t.shape)
    num = el.full(el.fd["value"], shape, np.nan)
    err_est = el.full(el.fd["error"], shape, np.nan)
    tol = el.full(el.tol, shape, np.nan)
    kink_mask = el.full(el.kink, shape, False)
    nonfin_num = mask & ~np.isfinite(num)
    tr = TensorReport(
        name=name, shape=tuple(t.shape), dtype=ctx.dtypes.get(name, str(t.dtype)),
        n_total=int(t.size),
        n_checked=int(mask.sum()), atol=ctx.atol, rtol=ctx.rtol,
        tolerance_rule=el.text, analytic=a, numerical=num, error_estimate=err_est, tol=tol,
        checked=mask.copy(), method=el.method,
    )  # fmt: skip
    tr.kinks = [tuple(int(i) for i in row) for row in np.argwhere(kink_mask)]
    tr.nonfinite["numerical"] = [tuple(int(i) for i in r) for r in np.argwhere(nonfin_num)]
    tr.mismatch = el.full(el.bad, shape, False) | nonfin_num
    tr.tied = _tied_sets(ctx, name, a, el, kink_mask, real)
    del el  # memory: the projections do not need the fields (ten arrays the tensor's size)
    proj_bad = _project_rest(ctx, name, a, tr, n_proj, kind, given)
    if proj_bad and not tr.checked.all():
        _locate(ctx, name, a, tr, kind)
    _summarise(tr)
    tr.ok = (
        tr.n_mismatched == 0
        and proj_bad == 0
        and not tr.nonfinite["numerical"]
        and all(d["ok"] for d in tr.tied)
    )
    if method_note and method_note not in tr.tolerance_rule:
        tr.tolerance_rule += f"; {method_note}"
    return tr


@dataclass
class _Elements:
    """The element-by-element judgement of a tensor's masked elements, compact: every array
    is 1-D over ``positions`` (the masked elements' flat indices, ascending), so a sampled
    check holds its fields for the sampled elements only."""

    positions: np.ndarray
    fd: dict[str, np.ndarray]  # the fields of each element's chosen step
    tol: np.ndarray
    bad: np.ndarray  # mismatched, kinks accepted as subgradients excluded
    kink: np.ndarray
    real: str  # the real method used where the complex step is not
    method: str
    text: str  # how the tolerance was derived, and what was re-evaluated

    def full(self, values: np.ndarray, shape: tuple[int, ...], fill: Any) -> np.ndarray:
        """``values`` (1-D over ``positions``) in the tensor's shape, ``fill`` elsewhere."""
        out = np.full(math.prod(shape), fill, dtype=np.asarray(values).dtype)
        out[self.positions] = values
        return out.reshape(shape)


def _remeasure_suspects(
    ctx: Ctx,
    name: str,
    ac: np.ndarray,
    fd: dict[str, np.ndarray],
    bad: np.ndarray,
    kind: str,
    positions: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Where ``name``'s groups read their sources off owner maps
    (:mod:`checks.engine.trials`), evaluate its suspect elements again measuring them (``fd``
    updated in place) and judge them anew; return ``(tol, bad)``.

    A map was probed with whole cells; an element whose own step crosses a kink its cell's
    does not reach moves an output that another member owns, and that member is credited with
    the change. Its slopes then look like a kink's, and a kink's subgradient test over them
    could accept a wrong value. Such an element fails or has a truncation-dominated error
    estimate (its one-sided slopes disagree): those, the suspects, are measured again before
    anything is accepted as a kink or refined.
    """
    with np.errstate(invalid="ignore"):
        sus = np.isfinite(fd["value"]) & bad
        if kind != "complex":
            sus |= np.isfinite(fd["value"]) & _truncation_dominated(fd)
    if sus.any():
        again = finite_differences(ctx, name, _full_mask(ctx, name, sus, positions), kind,
                                   compact=True, refining=True)  # fmt: skip
        for f, v in again.items():
            fd[f][sus] = v
    tol, bad, _ = _judge(ctx, name, ac, fd, np.ones(ac.size, dtype=bool))
    return tol, bad


def _judge_elements(ctx: Ctx, name: str, a: np.ndarray, mask: np.ndarray, kind: str) -> _Elements:
    """Evaluate and judge the masked elements one by one: the method's values, complex-step
    mismatches re-examined with real differences, suspects refined at smaller steps, kinks
    accepted where the analytic value is a subgradient."""
    positions = np.flatnonzero(mask.reshape(-1))
    n = positions.size
    ac = a.reshape(-1)[positions]
    every = np.ones(n, dtype=bool)
    real = "richardson" if kind in ("complex", "richardson") else "central"
    fallback_note = ""
    fd = None
    if kind == "complex":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", np.exceptions.ComplexWarning)
                fd = finite_differences(ctx, name, mask, "complex", compact=True)
        except (GradcheckError, np.exceptions.ComplexWarning, TypeError, ValueError) as exc:
            if not complex_refused(exc):
                raise
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            fallback_note = f"; complex step failed mid-check ({type(cause).__name__}), {real} used"
            kind = real
    if fd is None:
        fd = finite_differences(ctx, name, mask, kind, compact=True)
    tol, bad, text = _judge(ctx, name, ac, fd, every)
    if name in ctx.mapped:
        tol, bad = _remeasure_suspects(ctx, name, ac, fd, bad, kind, positions)
    kink = np.zeros(n, dtype=bool)
    refined = np.zeros(n, dtype=bool)
    reexam = 0
    if kind == "complex" and bad.any():
        # a complex-step mismatch is re-examined with real differences and the kink test.
        # Where Richardson agrees with the complex value (within Richardson's own error), the
        # complex step is trusted and its sharper verdict stands; where they disagree, the
        # complex step is not valid at that element (a kink: ReLU at 0, max ties; a
        # comparison) and the real verdict, with the subgradient test, decides.
        sel = bad.copy()
        fr_sel = finite_differences(ctx, name, _full_mask(ctx, name, sel, positions), real,
                                    compact=True, refining=name in ctx.mapped)  # fmt: skip
        fr = {f: np.full(n, np.nan) for f in fr_sel}
        for f, v in fr_sel.items():
            fr[f][sel] = v
        del fr_sel
        sel = sel & np.isfinite(fr["value"])
        reexam = int(sel.sum())
        tol2, bad2, _ = _judge(ctx, name, ac, fr, sel)
        with np.errstate(invalid="ignore"):
            agree = sel & (np.abs(fd["value"] - fr["value"]) <= tol2)
        use_real = sel & ~agree
        acc = _kink_accepted(fr, ac, tol2, ctx.rule.safety, use_real)
        fr, kink_ok, refined = refine(ctx, name, ac, fr, use_real, bad2, real, positions)
        for f in fd:
            fd[f] = np.where(use_real, fr[f], fd[f])
        tol2, bad2, _ = _judge(ctx, name, ac, fr, use_real)
        tol = np.where(use_real, tol2, tol)
        kink = use_real & np.where(refined, kink_ok, acc)
        bad = np.where(use_real, bad2 & ~kink, bad)
    elif kind != "complex":
        # needed where an element stays bad without refinement: bad now
        acc = _kink_accepted(fd, ac, tol, ctx.rule.safety, bad)
        fd, kink_ok, refined = refine(ctx, name, ac, fd, every, bad, kind, positions)
        tol, bad, _ = _judge(ctx, name, ac, fd, every)
        kink = bad & np.where(refined, kink_ok, acc)
        bad = bad & ~kink
    text += (f"; {reexam} complex-step mismatches re-examined with {real}"
             if reexam else "") + fallback_note  # fmt: skip
    if refined.any():
        steps = ", ".join(f"h/{s:g}" for s in _REFINE_SCALES)
        text += f"; {int(refined.sum())} suspect elements re-evaluated at {steps}"
    method = kind if not reexam else f"{kind}+{real}"
    return _Elements(positions, fd, tol, bad, kink, real, method, text)


def _locate(ctx: Ctx, name: str, a: np.ndarray, tr: TensorReport, kind: str) -> None:
    """A random projection failed: find the wrong unchecked elements by adaptive group
    testing and judge them one by one, as a full check would have.

    First a random direction ``v`` over the unchecked elements that fails (up to
    ``_LOCATE_TRIES`` draws). Then its support is halved, each half tested along ``v``
    restricted to it (``<analytic, v>`` keeps the wrong element's share ``v_e delta`` while
    the noise shrinks with the set), and halves that fail are halved again, down to
    ``_LOCATE_LEAF`` elements: about ``2 k log2(n / leaf)`` tests for ``k`` wrong elements
    among ``n``. A set that fails while neither half does (an error spread thin over many
    elements) is kept whole when small. The suspects are then evaluated element by element
    (:func:`_judge_elements`) and merged into ``tr``; the tolerance rule says how many tests
    it took.
    """
    cand = np.flatnonzero(~tr.checked.reshape(-1))
    n_unchecked = int(cand.size)
    tests = 0

    def fails(support: np.ndarray, w: np.ndarray) -> bool:
        nonlocal tests
        v = np.zeros(a.size)
        v[support] = w
        av, nv, ptol, _ = _projection(ctx, name, a, v.reshape(a.shape), kind)
        tests += 1
        return not abs(av - nv) <= ptol

    v0 = np.zeros(a.size)
    for _ in range(_LOCATE_TRIES):
        v0[cand] = ctx.rng.standard_normal(cand.size)
        if fails(cand, v0[cand]):
            break
    else:
        tr.tolerance_rule += (
            f"; a failing projection was not reproduced over the unchecked elements "
            f"({tests} directional tests): not located"
        )
        return
    queue = [cand]
    suspects: list[np.ndarray] = []
    while queue and tests < _LOCATE_MAX_TESTS:
        s = queue.pop(0)
        if s.size <= _LOCATE_LEAF:
            suspects.append(s)
            continue
        failing = [half for half in np.array_split(s, 2) if fails(half, v0[half])]
        queue.extend(failing)
        if not failing and s.size <= _LOCATE_SPREAD:
            suspects.append(s)
    flat = np.zeros(a.size, dtype=bool)
    for s in suspects:
        flat[s] = True
    found = flat.reshape(a.shape)
    if not found.any():
        tr.tolerance_rule += f"; a failing projection was not located ({tests} directional tests)"
        return
    el = _judge_elements(ctx, name, a, found, kind)
    tr.numerical.reshape(-1)[el.positions] = el.fd["value"]
    tr.error_estimate.reshape(-1)[el.positions] = el.fd["error"]
    tr.tol.reshape(-1)[el.positions] = el.tol
    tr.checked |= found
    tr.n_checked = int(tr.checked.sum())
    nonfinite = found & ~np.isfinite(tr.numerical)
    tr.mismatch |= el.full(el.bad, a.shape, False) | nonfinite
    kinked = el.full(el.kink, a.shape, False)
    tr.kinks += [tuple(int(i) for i in row) for row in np.argwhere(kinked)]
    tr.nonfinite["numerical"] += [tuple(int(i) for i in r) for r in np.argwhere(nonfinite)]
    tr.located = {
        "tests": tests,
        "unchecked": n_unchecked,
        "suspects": int(found.sum()),
        "mismatched": int(el.bad.sum()),
    }
    tr.tolerance_rule += (
        f"; a failing projection located by group testing: {tests} directional tests over "
        f"the {n_unchecked} unchecked elements, {int(found.sum())} suspects evaluated one by one"
    )


def _project_rest(
    ctx: Ctx,
    name: str,
    a: np.ndarray,
    tr: TensorReport,
    n_proj: int,
    kind: str,
    given: Sequence[Directional] = (),
) -> int:
    """Random projections of the tensor (its unchecked rest) into ``tr.projections``, the
    complex-step directional derivatives ``given`` first; the number that failed."""
    proj_kinks = 0
    for i in range(n_proj):
        if i < len(given) and kind == "complex":
            tr.projections.append(_judged(ctx, given[i]))
            continue
        v = ctx.rng.standard_normal(a.shape)
        av, nv, ptol, at_kink = _projection(ctx, name, a, v, kind)
        tr.projections.append((av, nv, ptol))
        proj_kinks += at_kink
    if proj_kinks:
        tr.tolerance_rule += (
            f"; {proj_kinks} projection(s) crossed kinks at every step: tolerance spans the "
            "slopes on either side"
        )
    return sum(1 for av, nv, pt in tr.projections if not abs(av - nv) <= pt)


def _tied_sets(
    ctx: Ctx,
    name: str,
    a: np.ndarray,
    el: _Elements,
    kink_mask: np.ndarray,
    real: str,
) -> list[dict[str, Any]]:
    """Kinked elements of equal value that compete, judged together (at most ``_TIED_MAX``
    sets, largest first).

    Each member of a tied maximum is a kink whose one-sided slopes bracket any share of dy
    from 0 to all of it, so a max-pool that sends dy to *every* tied element passes element
    by element. Moving the whole tied set together keeps it tied: ``phi`` changes at the
    rate of one element, and a valid subgradient (first-max routing, an even split) sums to
    that over the set. So ``<analytic, v>`` for ``v`` = ones on the set must lie among the
    one-sided slopes along ``v``, judged as a projection (:func:`_projection`, refined at
    h/4 .. h/64).

    Only sets whose members *compete* are judged: the one-sided slopes along ``v`` differ
    from the sums of the members' own (raising all tied maxima raises the max once, not
    ``k`` times). Elements at independent kinks add up, and there autodiff's fixed choice of
    ``relu'(0)`` is no subgradient of the sum: ``relu(p) - relu(-q)`` at 0 is ``s`` along
    ``(1, 1)``, and both ``relu'(0) = 0`` and ``= 1`` miss its slope 1 (a correct
    ``relu(x w)`` with weights of both signs failed this way). Mixed-sign directions are
    never used, for the same reason.
    """
    if kink_mask.sum() < 2:
        return []
    idx = np.argwhere(kink_mask)
    t = ctx.target.value(name)
    vals = t[kink_mask]
    uniq, inverse, counts = np.unique(vals, return_inverse=True, return_counts=True)
    order = [int(u) for u in np.argsort(-counts, kind="stable") if counts[u] >= 2][:_TIED_MAX]
    out = []
    for u in order:
        members = idx[inverse.reshape(-1) == u]
        v = np.zeros(t.shape)
        v[tuple(members.T)] = 1.0
        # the members' own fields, in the judgement's compact form
        sel = np.searchsorted(el.positions, np.ravel_multi_index(tuple(members.T), t.shape))
        fd = el.fd
        joint = directional_real(ctx, name, a, v, 1.0)
        noise = float(joint["onesided_noise"]) + float(np.sum(fd["onesided_noise"][sel]))
        apart = [
            abs(float(joint[side]) - float(np.sum(fd[side][sel]))) for side in ("right", "left")
        ]
        scale = float(np.sum(np.abs(fd["right"][sel]) + np.abs(fd["left"][sel])))
        if not max(apart) > _SMOOTH_SAFETY * 2.0 * noise + 1e-3 * scale:
            continue  # the members add up: independent kinks
        av, nv, ptol, _ = _projection(ctx, name, a, v, real)
        out.append(
            {
                "elements": [tuple(int(i) for i in row) for row in members],
                "value": float(uniq[u]),
                "analytic": av,
                "numerical": nv,
                "tol": ptol,
                "ok": bool(abs(av - nv) <= ptol),
            }
        )
    return out


def _judged(ctx: Ctx, d: Directional) -> tuple[float, float, float]:
    """``(analytic, numerical, tolerance)`` of a complex-step directional derivative ``d``."""
    av, nv, ev, mv = d
    ptol, _ = tolerances.tolerance(
        np.array(nv), np.array(ev), np.array(mv), ctx.rule, rtol=ctx.rtol, atol=ctx.atol
    )
    return av, nv, float(ptol)


def _projection(
    ctx: Ctx, name: str, a: np.ndarray, v: np.ndarray, kind: str
) -> tuple[float, float, float, bool]:
    """One random projection: ``(analytic, numerical, tolerance, crossed a kink)``.

    A direction moves every element, so in a ReLU or max-pool layer a kink often lies within
    the stencil (a float64 ReLU conv with 65536 inputs crossed ~1 per stencil and failed). A
    real-method projection that fails or whose error is mostly truncation is evaluated again
    at h/4, h/16, h/64 and its step chosen as for elements (:func:`_choose_step`); when every
    stencil holds a kink, the value disagrees and the analytic value lies among the slopes,
    the tolerance reported is the distance from the value to the far end of that hull.
    """
    if kind == "complex":
        return (*_judged(ctx, directional(ctx, name, a, v, "complex")), False)
    av = float(np.vdot(a, v))
    fd = directional_real(ctx, name, a, v, 1.0)
    floor = float(fd["magnitude"])
    ptol, _ = tolerances.tolerance(
        fd["value"], fd["error"], fd["magnitude"], ctx.rule, rtol=ctx.rtol, atol=ctx.atol
    )
    with np.errstate(invalid="ignore"):
        suspect = not abs(av - float(fd["value"])) <= float(ptol) or bool(_truncation_dominated(fd))
    if not suspect:
        return av, float(fd["value"]), float(ptol), False
    levels = [fd] + [directional_real(ctx, name, a, v, s) for s in _REFINE_SCALES]
    cand = np.array(True)
    chosen, kink_ok, lo, hi = _choose_step(ctx, np.array(av), levels, cand, floor)
    nv = float(chosen["value"])
    ptol, _ = tolerances.tolerance(
        chosen["value"], chosen["error"], chosen["magnitude"], ctx.rule,
        rtol=ctx.rtol, atol=ctx.atol, floor=floor,
    )  # fmt: skip
    if bool(kink_ok) and not abs(av - nv) <= float(ptol):
        return av, nv, max(nv - float(lo), float(hi) - nv), True
    return av, nv, float(ptol), False


def reads_nothing(tr: TensorReport) -> bool:
    """No output moved for any checked element or projection (every numerical value exactly
    0) while the analytic gradient is not 0 there: forward does not read this tensor."""
    num = tr.numerical[tr.checked]
    proj = [nv for _, nv, _ in tr.projections]
    if num.size == 0 and not proj:
        return False
    moved = bool(np.any(num != 0)) or any(nv != 0 for nv in proj)
    said = bool(np.any(tr.analytic[tr.checked] != 0)) or any(av != 0 for av, _, _ in tr.projections)
    return not moved and said


def _kink_accepted(
    fd: dict[str, np.ndarray], a: np.ndarray, tol: np.ndarray, safety: float, where: np.ndarray
) -> np.ndarray:
    """:func:`checks.engine.kinks.judge_kinks`'s acceptance, evaluated at ``where`` only (the
    few elements it can decide; its temporaries are the size of what it is given)."""
    out = np.zeros(a.shape, dtype=bool)
    if where.any():
        sub = FDResult(**{f: v[where] for f, v in fd.items()})
        out[where] = kinks.judge_kinks(sub, a[where], tol[where], safety)[1]
    return out


def _as_fd(d: dict[str, np.ndarray]) -> FDResult:
    return FDResult(**d)


def _summarise(tr: TensorReport) -> None:
    """The report's largest errors and its worst element, from the checked elements that are
    finite and not kinks (in compact form: temporaries the size of those, not the tensor's)."""
    ok = tr.checked & np.isfinite(tr.numerical) & np.isfinite(tr.analytic)
    for idx in tr.kinks:
        ok[idx] = False
    tr.n_mismatched = int(tr.mismatch.sum())
    pos = np.flatnonzero(ok)
    del ok
    if pos.size == 0:
        return
    a, n = tr.analytic.reshape(-1)[pos], tr.numerical.reshape(-1)[pos]
    tol = tr.tol.reshape(-1)[pos]
    err = np.abs(a - n)
    denom = np.maximum(np.abs(a), np.abs(n))
    del a, n
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(denom > 0, err / denom, 0.0)
        ratio = err / tol
    del denom
    ratio[np.isnan(ratio)] = np.inf
    tr.max_abs_err = float(err.max())
    tr.max_rel_err = float(rel.max())
    del rel
    est = np.nan_to_num(np.abs(tr.error_estimate.reshape(-1)[pos]), nan=0.0, posinf=0.0)
    bad = np.flatnonzero(tr.mismatch.reshape(-1)[pos])
    if bad.size:
        first = pos[order_with_ties(err, est, bad)[0]]
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            est /= tol
        est = np.nan_to_num(est, nan=0.0, posinf=0.0, copy=False)
        first = pos[order_with_ties(ratio, est, np.arange(pos.size))[0]]
    tr.worst_index = tuple(int(i) for i in np.unravel_index(int(first), tr.analytic.shape))
