"""Directional derivatives along a whole direction ``v`` of one tensor: random projections of
the unchecked elements, tied sets of kinks, and the probe that decides whether the complex
step may be used (:func:`complex_ok`).
"""

from __future__ import annotations

import math
import warnings
from contextlib import nullcontext
from typing import Any

import numpy as np

from checks.engine import (
    contract,
    finite_diff,
    tolerances,
)
from checks.engine.elements import row_slices, sample_slices
from checks.engine.evaluation import (
    FD_FIELDS,
    JUDGE_ARRAYS,
    Chunks,
    Ctx,
    check_out_shape,
    scratch_bytes,
)
from checks.engine.streaming import Sums, complex_sums
from checks.engine.targets import ComplexCallError, Target, borrowing
from checks.report.errors import LayerContractError


def directional(
    ctx: Ctx, name: str, g: np.ndarray, v: np.ndarray, kind: str
) -> tuple[float, float, float, float]:
    """Directional derivative along ``v``: ``(analytic <g, v>, numerical, error, magnitude)``.

    For real methods the analytic prediction ``<g, step>`` of each stencil point is subtracted
    before the differences are combined, so the steps' rounding to the tensor's dtype does not
    enter the comparison.
    """
    if kind != "complex":
        fd = directional_real(ctx, name, g, v, 1.0)
        return float(np.vdot(g, v)), float(fd["value"]), float(fd["error"]), float(fd["magnitude"])
    return _directional_complex(ctx, name, g, v)


def _directional_complex(
    ctx: Ctx, name: str, g: np.ndarray, v: np.ndarray
) -> tuple[float, float, float, float]:
    """The complex step along ``v``; when the whole batch in complex numbers would not fit
    the scratch, a slice of the samples per call (the samples are independent: the sums over
    the slices are the sums over the batch): of a packed tensor, or of the input beside a
    parameter stepped whole (:func:`~checks.engine.elements.sample_slices`)."""
    tgt, t, vmax, scale, what = _direction_setup(ctx, name, v)
    av = float(np.vdot(g, v))
    tau = ctx.rule.h_complex * scale / vmax
    ba = ctx.batch_axis
    cplx = np.dtype(ctx.rule.complex_dtype)
    held = 8 * (1 + JUDGE_ARRAYS) * t.size  # v and the judgement's arrays
    scratch = scratch_bytes(ctx, name, held)
    packed = name in ctx.packed and t.shape[ba] > 1
    if packed:
        n = t.shape[ba]
        chunks = Chunks(scratch, t.size // n, math.prod(ctx.y_shape) // n, cplx.itemsize,
                        "complex")  # fmt: skip
        slices = row_slices(ctx, min(n, chunks.copies_per_call()))
    else:
        slices = sample_slices(ctx, name, scratch)
    whole = None  # a parameter's complex step, made once for every slice of the samples
    num = mag = out = 0.0
    for rows, y_shape, dy in slices:
        with borrowing(tgt):  # reduced before the next call
            if packed and rows is not None:
                at = (slice(None),) * ba + (rows,)
                arr = np.empty(t[at].shape, dtype=cplx)
                arr.real = t[at]
                np.multiply(v[at], tau, out=arr.imag, casting="same_kind")
                y = tgt.eval_packed(name, arr, 1, what, rows)
                del arr
            else:
                if whole is None:
                    whole = np.empty(t.shape, dtype=cplx)
                    whole.real = t
                    np.multiply(v, tau, out=whole.imag, casting="same_kind")
                with tgt.samples(rows, ba) if rows is not None else nullcontext():
                    y = tgt.eval_replace(name, whole, what)
        check_out_shape(ctx, y, y_shape, what)
        if not np.iscomplexobj(y):
            raise TypeError("forward dropped the imaginary part")
        sums = complex_sums(y, dy)
        num, mag, out = num + sums[0], mag + sums[1], out + sums[2]
        del y
    num, mag = num / tau, mag / tau
    f_eps = ctx.rule.eps if ctx.rule.analytic_eps is None else ctx.rule.analytic_eps
    return av, num, ctx.rule.eps * mag + f_eps * out * vmax / scale, mag


def _noise(ctx: Ctx) -> dict[str, Any]:
    """:class:`~checks.engine.streaming.Sums`' rounding parameters from the run."""
    return {"ybar": ctx.ybar, "eps": ctx.rule.eps, "dy_random": ctx.dy_random}


def _direction_setup(
    ctx: Ctx, name: str, v: np.ndarray
) -> tuple[Target, np.ndarray, float, float, str]:
    """``(target, tensor, max |v|, max(|t|, 1), label)`` for a step along ``v``."""
    t = ctx.target.value(name)
    vmax = float(np.max(np.abs(v))) or 1.0
    scale = max(1.0, float(np.max(np.abs(t))) if t.size else 1.0)
    return ctx.target, t, vmax, scale, f"along a random direction in {name}"


def directional_real(
    ctx: Ctx, name: str, g: np.ndarray, v: np.ndarray, step_div: float
) -> dict[str, np.ndarray]:
    """Richardson along ``v`` with the table's step divided by ``step_div``: every field of
    :class:`FDResult` (0-d), slopes of ``phi`` itself (the analytic prediction added back).

    Memory: the stencil's outputs are reduced as they arrive, a pair of points at a time and
    in slices of the outputs (:class:`~checks.engine.streaming.Sums`); what is held at once
    is one call's outputs in the layer's dtype, the step in float64 and slices.

    Its calls run in this process also when the check has an executor: each input is a
    whole perturbed tensor, which would travel (and be held here while in flight) where a
    packed call sends positions and values, and the few calls of a direction gain little
    from spreading."""
    tgt, t, vmax, scale, what = _direction_setup(ctx, name, v)
    av = float(np.vdot(g, v))
    tau = ctx.rule.h_central * scale / vmax / step_div
    stencil = finite_diff.REAL_STENCIL
    rs = []

    def point(s: float) -> np.ndarray:
        arr = np.multiply(v, s * tau, dtype=np.float64)
        arr += t
        if arr.dtype != t.dtype:
            arr = arr.astype(t.dtype)
        step = np.subtract(arr, t, dtype=np.float64)
        rs.append(float(np.vdot(g, step)))
        return arr

    # the forward resolution of a promoted run, per unit of the tensor's scale (as the
    # complex path's f_eps * out * vmax / scale): the width here is 2 s tau = 2 s h scale / vmax
    res = finite_diff.forward_resolution(ctx.rule.h_central / step_div, ctx.rule.analytic_eps)
    if name in ctx.packed:  # stacked batches of stencil points: as few calls as fit
        ba = ctx.batch_axis
        sums = Sums(np.moveaxis(ctx.y0, ba, 0), np.moveaxis(ctx.dy64, ba, 0), res, **_noise(ctx))
        n = max(1, t.shape[ba])
        held = 8 * (2 + JUDGE_ARRAYS) * t.size  # v, a step in float64, the judgement's arrays
        chunks = Chunks(scratch_bytes(ctx, name, held), t.size // n,
                        math.prod(ctx.y_shape) // n, t.dtype.itemsize, "real")  # fmt: skip
        per_call = next(k for k in (4, 2, 1) if k == 1 or chunks.copies_per_call() >= k * n)
        yb_shape = list(ctx.y_shape)
        for k0 in range(0, len(stencil), per_call):
            pts = stencil[k0 : k0 + per_call]
            if len(pts) == 1:
                big = point(pts[0])
            else:  # filled point by point (no list of points beside their concatenation)
                shape = list(t.shape)
                shape[ba] *= len(pts)
                big = np.empty(shape, dtype=t.dtype)
                for i, s in enumerate(pts):
                    big[(slice(None),) * ba + (slice(i * t.shape[ba], (i + 1) * t.shape[ba]),)] = (
                        point(s)
                    )
            ybig = tgt.eval_packed(name, big, len(pts), what)
            del big
            yb_shape[ba] = len(pts) * ctx.y_shape[ba]
            check_out_shape(ctx, ybig, tuple(yb_shape), what)
            for part in np.split(ybig, len(pts), ba):
                sums.add(np.moveaxis(part, ba, 0))
            del ybig, part
    else:
        sums = Sums(ctx.y0, ctx.dy64, res, **_noise(ctx))
        for s in stencil:
            y = tgt.eval_replace(name, point(s), what)
            check_out_shape(ctx, y, ctx.y_shape, what)
            sums.add(y)
            del y
    # the analytic prediction of each point is subtracted, so the steps' rounding to the
    # tensor's dtype does not enter the comparison
    resid = np.array(sums.r) - np.array(rs)
    taken = np.array(finite_diff.REAL_STENCIL) * tau
    fd = finite_diff.combine_real(
        resid, taken, np.array(sums.mags), np.array(sums.noise),
        method="richardson", typical_num=np.array(sums.typical),
    )  # fmt: skip
    out = {f: np.asarray(getattr(fd, f), dtype=np.float64) for f in FD_FIELDS}
    for f in ("value", "left", "right", "left2", "right2", "central", "central2"):
        out[f] = out[f] + av
    return out


Directional = tuple[float, float, float, float]


def complex_ok(ctx: Ctx, name: str, g: np.ndarray) -> tuple[bool, str, Directional | None]:
    """Probe: does the complex step agree with real differences along a random direction?

    Returns ``(ok, why, probe)``; where the complex step is used, ``probe`` is its
    directional derivative along that direction, ``(analytic, numerical, error, magnitude)``
    as :func:`directional` returns it: a random projection of the whole tensor already paid
    for, which the judgement takes as its first (``check_tensor``'s ``given``).
    """
    if g.size == 0:  # nothing to probe, nothing to fall back from (see check_tensor)
        return True, "", None
    v = ctx.rng.standard_normal(g.shape)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", np.exceptions.ComplexWarning)
            ac, nc, ec, mc = directional(ctx, name, g, v, "complex")
    except Exception as exc:
        if not complex_refused(exc):
            raise  # the layer failed, not on account of the complex values
        # the name only: a local holding the cause would keep its traceback's frames (and
        # their complex copies of the tensors) alive in a reference cycle until gc runs
        why = type(exc.__cause__ if exc.__cause__ is not None else exc).__name__
        return False, f"complex step unusable ({why})", None
    if not math.isfinite(nc):
        return False, "complex step unusable (non-finite)", None
    _, nr, er, mr = directional(ctx, name, g, v, "real")
    tol, _ = tolerances.tolerance(np.array(nr), np.array(er + ec), np.array(max(mr, mc)), ctx.rule)
    if abs(nc - nr) <= float(tol):
        return True, "complex step (probe agreed with Richardson)", (ac, nc, ec, mc)
    return False, "complex step disagreed with real differences on a probe", None


def complex_refused(exc: BaseException) -> bool:
    """Whether a failure on the complex-step path is the complex values' doing, so that real
    differences may take over: the layer refusing a complex-valued call
    (:data:`checks.engine.contract.REFUSALS`), or the checker finding the outputs of one unusable
    (shape, dropped imaginary part). Anything else the layer raises -- and whatever it raises
    on a real-valued call, such as the grouping trials' -- is a contract error, as anywhere."""
    if isinstance(exc, LayerContractError) and exc.__cause__ is not None:  # the layer raised
        return isinstance(exc, ComplexCallError) and contract.refused(exc)
    return True
