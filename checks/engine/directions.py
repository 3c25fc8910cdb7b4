"""Directional derivatives along a whole direction ``v`` of one tensor: random projections of
the unchecked elements, tied sets of kinks, and the probe that decides whether the complex
step may be used (:func:`complex_ok`).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from checks.engine import (
    contract,
    finite_diff,
    tolerances,
)
from checks.engine.evaluation import (
    FD_FIELDS,
    JUDGE_ARRAYS,
    Chunks,
    Ctx,
    check_out_shape,
    reduce_outputs,
    scratch_bytes,
)
from checks.engine.targets import ComplexCallError, Target
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
    tgt, t, vmax, scale, what = _direction_setup(ctx, name, v)
    av = float(np.vdot(g, v))
    tau = ctx.rule.h_complex * scale / vmax
    arr = t.astype(ctx.rule.complex_dtype) + 1j * (tau * v).astype(ctx.rule.complex_dtype)
    y = tgt.eval_replace(name, arr, what)
    check_out_shape(ctx, y, ctx.y_shape, what)
    if not np.iscomplexobj(y):
        raise TypeError("forward dropped the imaginary part")
    im = y.imag.astype(np.float64)
    num = float(np.vdot(ctx.dy64, im)) / tau
    mag = float(np.vdot(np.abs(ctx.dy64), np.abs(im))) / tau
    out = float(np.vdot(np.abs(ctx.dy64), np.where(im != 0, np.abs(y.real), 0.0)))
    f_eps = ctx.rule.eps if ctx.rule.analytic_eps is None else ctx.rule.analytic_eps
    return av, num, ctx.rule.eps * mag + f_eps * out * vmax / scale, mag


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
    :class:`FDResult` (0-d), slopes of ``phi`` itself (the analytic prediction added back)."""
    tgt, t, vmax, scale, what = _direction_setup(ctx, name, v)
    t64 = t.astype(np.float64, copy=False)
    av = float(np.vdot(g, v))
    tau = ctx.rule.h_central * scale / vmax / step_div
    stencil = finite_diff.REAL_STENCIL
    rs = []

    def point(s: float) -> np.ndarray:
        arr = (t64 + s * tau * v).astype(t.dtype)
        rs.append(float(np.vdot(g, arr.astype(np.float64) - t64)))
        return arr

    yst = np.empty((1, len(stencil), 1, math.prod(ctx.y_shape)))  # (1, 4, 1, R)
    if name in ctx.packed:  # the four points as four stacked batches: one call, if it fits
        ba = ctx.batch_axis
        n = max(1, t.shape[ba])
        held = 8 * (10 * yst.shape[-1] + JUDGE_ARRAYS * t.size)
        chunks = Chunks(scratch_bytes(ctx, name, held), t.size // n, yst.shape[-1] // n,
                         t.dtype.itemsize, "real")  # fmt: skip
        per_call = len(stencil) if chunks.copies_per_call() >= len(stencil) * n else 1
        for k0 in range(0, len(stencil), per_call):
            pts = stencil[k0 : k0 + per_call]
            big = point(pts[0]) if len(pts) == 1 else np.concatenate([point(s) for s in pts], ba)
            ybig = tgt.eval_packed(name, big, len(pts), what)
            del big
            yb_shape = list(ctx.y_shape)
            yb_shape[ba] *= len(pts)
            check_out_shape(ctx, ybig, tuple(yb_shape), what)
            for i, part in enumerate(np.split(ybig, len(pts), ba)):
                yst[0, k0 + i, 0] = np.moveaxis(part, ba, 0).reshape(-1)
            del ybig
        y0 = np.moveaxis(ctx.y0, ba, 0).reshape(1, -1)
        dy0 = np.moveaxis(ctx.dy64, ba, 0).reshape(1, -1)
    else:
        for k, s in enumerate(stencil):
            y = tgt.eval_replace(name, point(s), what)
            check_out_shape(ctx, y, ctx.y_shape, what)
            yst[0, k, 0] = y.reshape(-1)
            del y
        y0 = ctx.y0.reshape(1, -1)
        dy0 = ctx.dy64.reshape(1, -1)
    # the forward resolution of a promoted run, per unit of the tensor's scale (as the
    # complex path's f_eps * out * vmax / scale): the width here is 2 s tau = 2 s h scale / vmax
    res = finite_diff.forward_resolution(ctx.rule.h_central / step_div, ctx.rule.analytic_eps)
    r, mags, noise, typ = reduce_outputs(
        yst, y0, dy0, ctx.ybar, ctx.rule.eps, "real", ctx.dy_random, res
    )
    # the analytic prediction of each point is subtracted, so the steps' rounding to the
    # tensor's dtype does not enter the comparison
    resid = r[:, 0, 0] - np.array(rs)
    taken = np.array(finite_diff.REAL_STENCIL) * tau
    fd = finite_diff.combine_real(resid, taken, mags[:, 0, 0], noise[:, 0, 0],
                                  method="richardson", typical_num=typ[:, 0, 0])  # fmt: skip
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
