"""Known-derivation-mistake catalogue: turn a gradient mismatch into a guess at the bug.

:func:`diagnose` looks at one tensor's analytic and numerical gradients (only at the elements
that were checked) and returns one sentence per recognised pattern. ``checks.report.messages``
prints each as a ``Hint:`` line. Every detector is a pure function on arrays; none of them
knows the layer.
Equation numbers such as eq. (14) are those of docs/derivation.md.

The catalogue, in the order the hints are printed:

========================  ============================================================
pattern                   usual cause
========================  ============================================================
all-zero analytic         backward never fills the gradient (or fills a copy)
analytic = -numerical     a sign flipped
analytic = c * numerical  a constant factor: 1/n^2 -> mean-pool up-sampling without its
                          factor (eq. (10)/(11)); 1/N -> batch mean vs sum
analytic = rot180(num.)   kernel gradient not flipped (eq. (14)), or the layer mixes
                          convolution and cross-correlation
analytic = num. with the  K_ij vs K_ji (eq. (18)), or a spatially transposed kernel
first two / last two
axes swapped
errors only at the        padding handled wrong (cropped, offset, or not zeroed)
border of the last two
axes
analytic = numerical      padding cropped at the wrong offset ([0:H] for [p:p+H])
shifted by (dr, dc)
analytic = c_k * num.,    a per-channel scalar (beta, eq. (10)/(11)) dropped or doubled
one factor per channel
errors only off (or on)   a stride: positions skipped by the stride get (or miss) a
a stride grid             gradient
errors on one index of    one sample / one channel / one output map treated differently
axis 0 or axis 1 only     (e.g. a loop that stops early, an off-by-one); an axis whose
                          meaning the report cannot know is called by its number
analytic = c * numerical  a factor on one region only: a leaky-ReLU/ELU slope wrong on
at the mismatches only,   the negative side (the report cannot see x, so the hint asks
= numerical elsewhere     rather than says "where x < 0")
analytic of rank 1, the   a matrix gradient from one sample of the batch (x[0], x[-1], a
numerical of rank >= 2    loop that overwrites), or the batch summed before the product
numerical exactly 0 at    the output does not depend on them: a missing mask or routing
every mismatch            (ReLU, clip, max-pool arg-max), or forward does not read them
                          (a slice or copy of a parameter, a detached branch)
errors only where one     a missing mask or routing (ReLU, max-pool arg-max), or part of
side is (near) zero       the gradient never written
one element wrong         a special case at that index
========================  ============================================================

Notes
-----
For a transform ``T`` (negation, scaling, rot180, axis swap) the hypothesis "analytic =
T(numerical)" is accepted when it holds, within the per-element tolerance ``tol`` of the
report, at every element where both sides are known, and at least one of those elements is a
mismatch (so the hypothesis explains the failure rather than a coincidence). With sampled
coverage the comparison runs over the elements whose transformed partner was checked too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from checks.report.data import TensorReport

__all__ = ["diagnose"]

# below this many comparable elements a pattern is not evidence
_MIN_ELEMENTS = 2
_MAX_BORDER = 3
_MAX_STRIDE = 4
_MAX_SHIFT = 2


def diagnose(tensor: TensorReport) -> list[str]:
    """Return the hints that explain ``tensor``'s mismatch, most specific first.

    Parameters
    ----------
    tensor : TensorReport
        Only ``name``, ``shape``, ``analytic``, ``numerical``, ``checked``, ``mismatch`` and
        ``tol`` are used. ``numerical`` and ``tol`` are NaN where not checked.

    Returns
    -------
    list of str
        One sentence per recognised pattern, without the ``Hint:`` prefix; empty when the
        mismatch matches nothing in the catalogue (or there is no mismatch).

    Examples
    --------
    >>> import numpy as np
    >>> from types import SimpleNamespace
    >>> num = np.arange(9.0).reshape(1, 1, 3, 3)
    >>> t = SimpleNamespace(name="K", shape=num.shape, analytic=num[..., ::-1, ::-1].copy(),
    ...                     numerical=num, checked=np.ones(num.shape, bool),
    ...                     mismatch=num != num[..., ::-1, ::-1], tol=np.full(num.shape, 1e-8))
    >>> diagnose(t)[0][:60]
    'K: analytic = rot180(numerical) over the last two axes -- th'
    """
    a = np.asarray(tensor.analytic)
    n = np.asarray(tensor.numerical)
    checked = np.asarray(tensor.checked, dtype=bool)
    mismatch = np.asarray(tensor.mismatch, dtype=bool)
    if a.shape != n.shape or a.shape != checked.shape or not mismatch.any():
        return []
    if np.iscomplexobj(a) or np.iscomplexobj(n):
        return []
    tol = np.asarray(tensor.tol, dtype=float)
    if tol.shape != a.shape:
        tol = np.broadcast_to(tol, a.shape)
    ctx = _Context(str(tensor.name), a.astype(float), n.astype(float), checked, mismatch, tol)

    hints: list[str] = []
    for detector in _VALUE_DETECTORS:
        hint = detector(ctx)
        if hint:
            hints.append(hint)
            # a value relation explains every element; structural hints would only repeat it
            return hints
    for detector in _STRUCTURE_DETECTORS:
        hint = detector(ctx)
        if hint:
            hints.append(hint)
    return hints


class _Context:
    """The arrays of one tensor, with the masks every detector needs."""

    def __init__(
        self,
        name: str,
        a: np.ndarray,
        n: np.ndarray,
        checked: np.ndarray,
        mismatch: np.ndarray,
        tol: np.ndarray,
    ) -> None:
        self.name = name
        self.a = a
        self.n = n
        # an element is usable when it was checked and both sides are finite
        self.known = checked & np.isfinite(n) & np.isfinite(a)
        self.mismatch = mismatch & checked
        # where the report has no per-element tolerance, fall back to a relative 1e-6
        fallback = 1e-6 * np.maximum(np.abs(n), np.abs(a)) + 1e-12
        self.tol = np.where(np.isfinite(tol), tol, fallback)
        self.scale = float(np.max(np.abs(n[self.known]), initial=0.0))

    @property
    def is_x(self) -> bool:
        # check_vjp names its inputs inputs[0], inputs[1], ...; the first is usually x
        return self.name in ("x", "inputs[0]")


# ---------------------------------------------------------------------------------------
# value relations: analytic = T(numerical)
# ---------------------------------------------------------------------------------------
def _fits(
    ctx: _Context, transform: Callable[[np.ndarray], np.ndarray], factor: float = 1.0
) -> bool:
    """True when analytic = factor * transform(numerical) wherever both sides are known."""
    n_t = transform(ctx.n)
    known_t = transform(ctx.known)
    tol_t = transform(ctx.tol)
    use = ctx.known & known_t
    if use.sum() < _MIN_ELEMENTS or not (ctx.mismatch & use).any():
        return False
    # the transform must change something, or it explains nothing
    if np.all(np.abs(n_t[use] - ctx.n[use]) <= ctx.tol[use]) and factor == 1.0:
        return False
    err = np.abs(ctx.a[use] - factor * n_t[use])
    allowed = np.maximum(ctx.tol[use], abs(factor) * tol_t[use])
    return bool(np.all(err <= allowed))


def _all_zero(ctx: _Context) -> str | None:
    if np.any(ctx.a != 0) or ctx.scale == 0.0:
        return None
    return (
        f"{ctx.name}: the analytic gradient is exactly zero everywhere while the numerical one "
        f"is not -- backward never writes this gradient (or writes into a copy of "
        f"grads[{ctx.name!r}] instead of the array the checker reads)."
    )


def _sign_flip(ctx: _Context) -> str | None:
    if not _fits(ctx, _identity, factor=-1.0):
        return None
    return (
        f"{ctx.name}: analytic = -numerical -- a sign is flipped (e.g. a subtraction "
        f"reversed, or a descent step folded into the gradient)."
    )


def _scale(ctx: _Context) -> str | None:
    use = ctx.known
    n, a = ctx.n[use], ctx.a[use]
    nn = float(n @ n)
    if use.sum() < _MIN_ELEMENTS or nn == 0.0:
        return None
    c = float(a @ n) / nn
    if not np.isfinite(c) or c == 0.0 or abs(c - 1.0) < 1e-6 or abs(c + 1.0) < 1e-6:
        return None
    if not _fits(ctx, _identity, factor=c):
        return None
    return f"{ctx.name}: analytic = {_factor_text(c)} x numerical -- {_factor_reason(c)}"


def _factor_text(c: float) -> str:
    k = _near_integer(1.0 / c)
    if k is not None and abs(k) > 1:
        return f"{c:.6g} (= 1/{k})"
    return f"{c:.6g}"


def _near_integer(v: float) -> int | None:
    r = round(v)
    if r != 0 and abs(v - r) <= 1e-6 * max(1.0, abs(v)):
        return int(r)
    return None


def _factor_reason(c: float) -> str:
    small = _near_integer(1.0 / c)  # analytic = numerical / k: an extra factor 1/k
    big = _near_integer(c)  # analytic = k * numerical: a factor 1/k missing
    reasons = []
    if small is not None and abs(small) >= 2:
        k, extra = abs(small), True
    elif big is not None and abs(big) >= 2:
        k, extra = abs(big), False
    else:
        return (
            "a constant factor; look for a scalar (beta, a step size, a normalisation) "
            "applied twice or forgotten."
        )
    root = round(k**0.5)
    if root > 1 and root * root == k:
        if extra:
            reasons.append(
                f"1/{k} = 1/{root}^2: the mean-pool factor 1/n^2 (n = {root}) applied once "
                f"too often (eq. (10)/(11) with mean pooling divides up(delta) by n^2 once)"
            )
        else:
            reasons.append(
                f"{k} = {root}^2: a mean-pool up-sampling without its 1/n^2 factor (n = "
                f"{root}; eq. (10)/(11) with mean pooling needs up(delta) / n^2)"
            )
    if extra:
        reasons.append(
            f"if {k} is the batch size N: the gradient averages over the batch (1/N) where "
            f"the loss sums"
        )
    else:
        reasons.append(
            f"if {k} is the batch size N: the gradient sums over the batch where the loss "
            f"averages (a 1/N missing)"
        )
    if c < 0:
        reasons.append("and the sign is flipped")
    return "; or ".join(reasons) + "."


def _single_hint(ctx: _Context) -> str | None:
    where = np.argwhere(ctx.mismatch)
    if len(where) != 1 or ctx.known.sum() < _MIN_ELEMENTS:
        return None
    index = ", ".join(str(int(i)) for i in where[0])
    return (
        f"{ctx.name}: a single element, {ctx.name}[{index}], is wrong and every other checked "
        f"element is right -- a special case at that position (an edge index off by one, a "
        f"hard-coded position, a tie or kink handled differently)."
    )


def _identity(v: np.ndarray) -> np.ndarray:
    return v


def _rot180(v: np.ndarray) -> np.ndarray:
    return v[..., ::-1, ::-1]


def _swap01(v: np.ndarray) -> np.ndarray:
    return np.swapaxes(v, 0, 1)


def _swap_last(v: np.ndarray) -> np.ndarray:
    return np.swapaxes(v, -1, -2)


def _rot180_swap01(v: np.ndarray) -> np.ndarray:
    return np.swapaxes(v, 0, 1)[..., ::-1, ::-1]


def _rot180_hint(ctx: _Context) -> str | None:
    if ctx.a.ndim < 2 or max(ctx.a.shape[-2:]) < 2 or not _fits(ctx, _rot180):
        return None
    if ctx.is_x:
        return (
            f"{ctx.name}: analytic = rot180(numerical) over the last two axes -- the input "
            f"gradient comes out flipped: the 'full' convolution of delta uses K where it "
            f"needs rot180(K) or the other way round (eq. (18) / conv vs xcorr)."
        )
    return (
        f"{ctx.name}: analytic = rot180(numerical) over the last two axes -- the kernel "
        f"gradient is not flipped: eq. (14) is rot180(conv2(A_j, rot180(delta_i), "
        f"'valid')), or the forward pass and the gradient use different conventions "
        f"(convolution vs cross-correlation)."
    )


def _transpose_hint(ctx: _Context) -> str | None:
    a = ctx.a
    if a.ndim >= 2 and a.shape[0] == a.shape[1] and a.shape[0] > 1:
        if _fits(ctx, _swap01):
            if a.ndim == 2:
                return (
                    f"{ctx.name}: analytic = numerical transposed -- the gradient is built "
                    f"as dW^T (e.g. x^T @ delta where delta^T @ x is needed, eq. (5)/(6): "
                    f"W is (out, in))."
                )
            return (
                f"{ctx.name}: analytic[i, j] = numerical[j, i] -- the channel indices are "
                f"swapped: K_ij connects input map j to output map i, so dK[i, j] pairs "
                f"delta_i with A_j (eq. (14); eq. (18) sums over the next layer's maps i with "
                f"K_ij)."
            )
        if a.ndim >= 4 and max(a.shape[-2:]) > 1 and _fits(ctx, _rot180_swap01):
            return (
                f"{ctx.name}: analytic[i, j] = rot180(numerical[j, i]) -- the channel indices "
                f"are swapped AND the kernel gradient is not flipped (eq. (14) and (18))."
            )
    if a.ndim >= 3 and a.shape[-1] == a.shape[-2] and a.shape[-1] > 1 and _fits(ctx, _swap_last):
        return (
            f"{ctx.name}: analytic = numerical with the last two axes swapped -- rows and "
            f"columns are exchanged (a transposed kernel or map, e.g. an (h, w) vs (w, h) "
            f"reshape or a .T on a 2-D slice)."
        )
    return None


def _shift_hint(ctx: _Context) -> str | None:
    """analytic[..., r, c] = numerical[..., r - dr, c - dc] where both exist."""
    if ctx.a.ndim < 2:
        return None
    h, w = ctx.a.shape[-2:]
    for dr, dc in sorted(
        (
            (dr, dc)
            for dr in range(-_MAX_SHIFT, _MAX_SHIFT + 1)
            for dc in range(-_MAX_SHIFT, _MAX_SHIFT + 1)
        ),
        key=lambda d: (abs(d[0]) + abs(d[1]), d),
    ):
        if (dr, dc) == (0, 0) or abs(dr) >= h or abs(dc) >= w:
            continue
        # an overlap of less than half the map is no evidence
        if (h - abs(dr)) * (w - abs(dc)) * 2 < h * w:
            continue
        a_win = (..., slice(max(dr, 0), h + min(dr, 0)), slice(max(dc, 0), w + min(dc, 0)))
        n_win = (..., slice(max(-dr, 0), h + min(-dr, 0)), slice(max(-dc, 0), w + min(-dc, 0)))
        a, n = ctx.a[a_win], ctx.n[n_win]
        use = ctx.known[a_win] & ctx.known[n_win]
        if use.sum() < _MIN_ELEMENTS or not (ctx.mismatch[a_win] & use).any():
            continue
        tol = np.maximum(ctx.tol[a_win], ctx.tol[n_win])[use]
        if np.all(np.abs(n[use] - ctx.n[a_win][use]) <= tol):
            continue  # the shift changes nothing there
        if np.all(np.abs(a[use] - n[use]) <= tol):
            return (
                f"{ctx.name}: analytic[..., r, c] = numerical[..., r - {dr}, c - {dc}] -- the "
                f"gradient is shifted by ({dr}, {dc}) over the last two axes: the padded "
                f"gradient cropped at [0:H] instead of [p:p+H] (p = {dr}, {dc}), or a window "
                f"index off by that much."
            )
    return None


def _per_slice_scale_hint(ctx: _Context) -> str | None:
    """analytic = c_k * numerical with one factor per index k of a channel axis."""
    a = ctx.a
    axes = [1] if ctx.is_x else [0, 1]
    for axis in axes:
        if a.ndim < 3 or a.shape[axis] < 2:
            continue
        factors = []
        fits = True
        for k in range(a.shape[axis]):
            sl = (slice(None),) * axis + (k,)
            use = ctx.known[sl]
            n, av = ctx.n[sl][use], a[sl][use]
            nn = float(n @ n)
            if nn == 0.0:
                if np.any(np.abs(av) > ctx.tol[sl][use]):
                    fits = False
                    break
                continue
            c = float(av @ n) / nn
            if not np.all(np.abs(av - c * n) <= np.maximum(1.0, abs(c)) * ctx.tol[sl][use]):
                fits = False
                break
            factors.append(c)
        if not fits or len(factors) < 2:
            continue
        spread = max(factors) - min(factors)
        if spread <= 1e-6 * max(abs(f) for f in factors):
            continue  # one common factor: the global scale hint's case
        if sum(abs(f - 1.0) > 1e-6 for f in factors) <= 1:
            continue  # a single odd slice: the one-slice hint says it better
        shown = ", ".join(f"{f:.4g}" for f in factors[:6]) + (", ..." if len(factors) > 6 else "")
        what = _axis_word(ctx, axis)
        per = f"{what} k (axis {axis})" if what else f"index k of axis {axis}"
        scalar = f"per-{what} scalar" if what else f"scalar per index of axis {axis}"
        return (
            f"{ctx.name}: analytic = c_k x numerical with one factor per {per}: c = [{shown}] "
            f"-- a {scalar} dropped or applied twice, e.g. "
            f"beta in eq. (10)/(11) (delta = beta * up(delta_next)) or a per-map "
            f"normalisation."
        )
    return None


_VALUE_DETECTORS: tuple[Callable[[_Context], str | None], ...] = (
    _all_zero,
    _sign_flip,
    _rot180_hint,
    _transpose_hint,
    _scale,
    _shift_hint,
    _per_slice_scale_hint,
)


# ---------------------------------------------------------------------------------------
# where the errors are: border, stride pattern, one sample / channel
# ---------------------------------------------------------------------------------------
def _border_hint(ctx: _Context) -> str | None:
    if ctx.a.ndim < 2:
        return None
    h, w = ctx.a.shape[-2:]
    if min(h, w) < 3:
        return None
    rows = np.arange(h)[:, None]
    cols = np.arange(w)[None, :]
    dist = np.minimum(np.minimum(rows, h - 1 - rows), np.minimum(cols, w - 1 - cols))
    dist = np.broadcast_to(dist, ctx.a.shape)
    bad = ctx.mismatch
    if bad.sum() < _MIN_ELEMENTS:
        return None
    width = int(dist[bad].max()) + 1
    if width > _MAX_BORDER or 2 * width >= min(h, w):
        return None
    interior_checked = ctx.known & (dist >= width)
    if not interior_checked.any():
        return None
    # padding is on both sides: errors at one edge only (a last column, a last time step)
    # are an off-by-one, not padding
    # (corners excluded: a wrong last column touches the first and last row only there)
    inner_r = np.broadcast_to((rows >= width) & (rows < h - width), ctx.a.shape)
    inner_c = np.broadcast_to((cols >= width) & (cols < w - width), ctx.a.shape)
    r = np.broadcast_to(rows, ctx.a.shape)
    c = np.broadcast_to(cols, ctx.a.shape)
    both_rows = (bad & inner_c & (r < width)).any() and (bad & inner_c & (r >= h - width)).any()
    both_cols = (bad & inner_r & (c < width)).any() and (bad & inner_r & (c >= w - width)).any()
    if not (both_rows or both_cols):
        return None
    return (
        f"{ctx.name}: every mismatch lies within {width} element(s) of the border of the last "
        f"two axes and the interior is right -- the padding is handled wrong (gradient of "
        f"padded positions not cropped, offset by the padding, or a 'valid'/'full' border "
        f"mixed up)."
    )


def _stride_hint(ctx: _Context) -> str | None:
    if ctx.a.ndim < 2:
        return None
    bad = ctx.mismatch
    if bad.sum() < _MIN_ELEMENTS:
        return None
    h, w = ctx.a.shape[-2:]
    rows = np.arange(h)[:, None]
    cols = np.arange(w)[None, :]
    # smallest strides first: the simplest grid that separates right from wrong
    steps = sorted(
        ((sh, sw) for sh in range(1, _MAX_STRIDE + 1) for sw in range(1, _MAX_STRIDE + 1)),
        key=lambda st: (st[0] * st[1], st),
    )
    for sh, sw in steps:
        # a stride shows as a grid only where the map holds two periods of it
        if (sh, sw) == (1, 1) or (sh > 1 and h < 2 * sh) or (sw > 1 and w < 2 * sw):
            continue
        for r0 in range(sh):
            for c0 in range(sw):
                grid = np.broadcast_to((rows % sh == r0) & (cols % sw == c0), ctx.a.shape)
                for on_grid_bad in (False, True):
                    wrong = grid if on_grid_bad else ~grid
                    if (bad & ~wrong).any() or not (ctx.known & ~wrong).any():
                        continue
                    n_bad = int((bad & wrong).sum())
                    # a stride pattern is systematic: most of the suspect positions are wrong
                    if n_bad < _MIN_ELEMENTS or n_bad < 0.75 * int((ctx.known & wrong).sum()):
                        continue
                    where = _grid_text(sh, sw, r0, c0)
                    if on_grid_bad:
                        return (
                            f"{ctx.name}: mismatches only at the strided positions ({where}); "
                            f"the positions between them are right -- a stride of "
                            f"({sh}, {sw}): the gradient reaching the strided positions is "
                            f"wrong (check how delta is dilated by the stride)."
                        )
                    return (
                        f"{ctx.name}: mismatches only at positions a stride of ({sh}, {sw}) "
                        f"skips (everything except {where}); the strided positions are right "
                        f"-- skipped positions get a gradient they should not (up-sampling "
                        f"delta by repetition instead of inserting zeros, or the wrong "
                        f"offset)."
                    )
    return None


def _grid_text(sh: int, sw: int, r0: int, c0: int) -> str:
    parts = []
    if sh > 1:
        parts.append(f"row % {sh} == {r0}")
    if sw > 1:
        parts.append(f"column % {sw} == {c0}")
    return " and ".join(parts)


def _one_slice_hint(ctx: _Context) -> str | None:
    a = ctx.a
    bad = ctx.mismatch
    if bad.sum() < _MIN_ELEMENTS:
        return None
    for axis in (0, 1):
        if a.ndim < axis + 2 or a.shape[axis] < 2:
            continue
        idx = np.indices(a.shape)[axis]
        bad_vals = np.unique(idx[bad])
        what = _axis_word(ctx, axis)
        every = what or f"index of axis {axis}"
        that = what or "index"
        if len(bad_vals) == 1:
            i = int(bad_vals[0])
            others_ok = ctx.known & (idx != i)
            if others_ok.any() and not (bad & (idx != i)).any():
                return (
                    f"{ctx.name}: mismatches only in {_slice_text(what, i, axis)}; every other "
                    f"{every} is right -- that {that} is treated differently (an off-by-one "
                    f"loop bound, an index hard-coded, a slice that stops early)."
                )
        missing = sorted(set(range(a.shape[axis])) - set(bad_vals.tolist()))
        if len(missing) == 1 and len(bad_vals) >= 2:
            i = missing[0]
            if (ctx.known & (idx == i)).any():
                return (
                    f"{ctx.name}: only {_slice_text(what, i, axis)} is right, every other "
                    f"{every} has mismatches -- backward handles only that {that} (e.g. x[0] "
                    f"where x[n] is meant, or a loop that overwrites instead of accumulating)."
                )
    return None


def _slice_text(what: str | None, i: int, axis: int) -> str:
    """``channel 2 (axis 1)`` where the axis has a name, ``index 2 of axis 1`` where not."""
    return f"{what} {i} (axis {axis})" if what else f"index {i} of axis {axis}"


def _axis_word(ctx: _Context, axis: int) -> str | None:
    """A name for ``axis`` only where the layout is known (x's batch axis, NCHW channels, a
    conv kernel's maps, a matrix's rows and columns); None for any other axis (it may be time,
    features, anything), which the hints then call by its number."""
    if ctx.is_x:
        if axis == 0:
            return "sample"
        return "channel" if ctx.a.ndim == 4 else None
    if ctx.a.ndim == 4:
        return "output map" if axis == 0 else "input map"
    if ctx.a.ndim == 2:
        return "row" if axis == 0 else "column"
    return None


def _support_hint(ctx: _Context) -> str | None:
    """Mismatches only where one side is zero and the other is not."""
    bad = ctx.mismatch & ctx.known
    if bad.sum() < _MIN_ELEMENTS:
        return None
    n_zero = np.abs(ctx.n) <= ctx.tol
    if np.all(ctx.n[bad] == 0.0):
        return None  # exactly zero: _unread_hint says it (and why) more precisely
    if np.all(n_zero[bad]) and (ctx.known & ~n_zero).any():
        return (
            f"{ctx.name}: every mismatch is where the numerical gradient is zero (the output "
            f"does not depend on those elements) but the analytic one is not -- a mask or "
            f"routing is missing: ReLU's f'(U) = 0 for U < 0, max-pool's up() that must send "
            f"delta to the arg-max only, positions no window reaches."
        )
    if np.all(ctx.a[bad] == 0) and np.all(~n_zero[bad]):
        return (
            f"{ctx.name}: every mismatch is where the analytic gradient is exactly zero and "
            f"the numerical one is not -- part of the gradient is never written (a loop that "
            f"stops early, a mask that zeroes too much, a slice that misses some positions)."
        )
    return None


def _unread_hint(ctx: _Context) -> str | None:
    """The numerical gradient is exactly 0.0 at every mismatch: no perturbation of those
    elements moved any output, yet the analytic gradient is not 0 there."""
    bad = ctx.mismatch & ctx.known
    k = int(bad.sum())
    if k == 0 or np.any(ctx.n[bad] != 0.0):
        return None
    m = int(ctx.known.sum())
    if np.all(ctx.n[ctx.known] == 0.0):
        return (
            f"{ctx.name}: the numerical gradient is exactly 0 at every checked element "
            f"({k} of {m} mismatch) while the analytic one is not -- the output does not "
            f"depend on {ctx.name} here: forward does not read it (it reads a copy, an array "
            f"under another name, or a branch cut off from the output), or every element sits "
            f"where a ReLU/clip holds the output constant."
        )
    return (
        f"{ctx.name}: the numerical gradient is exactly 0 at the {k} mismatched elements (of "
        f"{m} checked) while the analytic one is not -- the output does not depend on them "
        f"here: a mask or routing is missing in backward (ReLU's f'(U) = 0 for U < 0, a "
        f"clip's flat part, max-pool's up() that must send delta to the arg-max only, "
        f"positions no window reaches), or forward does not read those elements (a slice or "
        f"a copy of the parameter, a detached branch)."
    )


def _region_ratio_hint(ctx: _Context) -> str | None:
    """analytic = c * numerical at the mismatched elements, analytic = numerical elsewhere."""
    bad = ctx.mismatch & ctx.known
    good = ctx.known & ~ctx.mismatch
    k = int(bad.sum())
    if k < _MIN_ELEMENTS or not good.any():
        return None
    n, a, tol = ctx.n[bad], ctx.a[bad], ctx.tol[bad]
    if np.any(np.abs(n) <= tol):
        return None  # no ratio where the numerical gradient is zero (the support hints' case)
    c = float(a @ n) / float(n @ n)
    if not np.isfinite(c) or c == 0.0 or abs(c - 1.0) < 1e-6:
        return None
    allowed = max(1.0, abs(c))
    if not np.all(np.abs(a - c * n) <= allowed * tol):
        return None
    # the right elements must not follow the same factor (that is the global scale hint)
    if np.all(np.abs(ctx.a[good] - c * ctx.n[good]) <= allowed * ctx.tol[good]):
        return None
    return (
        f"{ctx.name}: analytic = {_factor_text(c)} x numerical at the {k} mismatched "
        f"elements, analytic = numerical at the other {int(good.sum())} checked -- a factor "
        f"applied on one region only: a slope wrong on one side of a kink (a leaky-ReLU/ELU "
        f"slope on the negative side: alpha applied twice, or 1 where alpha is meant; are the "
        f"mismatched elements those where the input is negative?), or a scale applied to part "
        f"of the tensor only."
    )


def _rank_one_hint(ctx: _Context) -> str | None:
    """A matrix parameter's analytic gradient is an outer product, the numerical one is not."""
    a, n = ctx.a, ctx.n
    if ctx.is_x or a.ndim != 2 or min(a.shape) < 2 or not ctx.known.all():
        return None
    if ctx.mismatch.sum() < _MIN_ELEMENTS:
        return None
    sa = np.linalg.svd(a, compute_uv=False)
    sn = np.linalg.svd(n, compute_uv=False)
    noise = float(np.linalg.norm(ctx.tol))
    if sa[0] == 0.0 or sn[0] == 0.0 or sa[1] > 1e-6 * sa[0]:
        return None
    rank = int(np.sum((sn > 1e-3 * sn[0]) & (sn > noise)))
    if rank < 2:
        return None
    return (
        f"{ctx.name}: the analytic gradient is an outer product (rank 1) while the numerical "
        f"one has rank {rank} -- the gradient comes from one sample of the batch: dW = "
        f"delta_n^T x_n for a single n (x[0] or x[-1] where the sum over n is needed, or a "
        f"loop over the batch that overwrites dW instead of accumulating), or the batch is "
        f"summed before the product (outer(sum_n delta_n, sum_n x_n))."
    )


_STRUCTURE_DETECTORS: tuple[Callable[[_Context], str | None], ...] = (
    _single_hint,
    _rank_one_hint,
    _one_slice_hint,
    _border_hint,
    _stride_hint,
    _region_ratio_hint,
    _unread_hint,
    _support_hint,
)
