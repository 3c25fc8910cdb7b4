"""Numerical derivatives of a tensor's elements: of a tensor packed along the batch axis
(:class:`checks.engine.evaluation.Packed`), and of one that is not packed along the batch
axis (a layer's parameters, ``check_vjp``'s other inputs): in groups with disjoint footprints
where a trial allows, else one forward call per stencil point, and where one element's
outputs would not fit the scratch, each output reduced as it arrives (in slices; a
complex-step call on slices of the samples when the input is packed). Also the entry point
:func:`finite_differences`, which sends a packed tensor to :mod:`checks.engine.evaluation`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np

from checks.engine import finite_diff
from checks.engine.dispatch import Call
from checks.engine.evaluation import (
    CHUNK_ELEMENTS,
    COMPLEX_FIELDS,
    ELEMENT_GROUP,
    FD_FIELDS,
    JUDGE_ARRAYS,
    REDUCE_ROWS,
    Chunks,
    Ctx,
    Packed,
    check_out_shape,
    complex_value,
    element_call_cost,
    element_run,
    expand,
    reduce_outputs,
    scratch_bytes,
)
from checks.engine.streaming import Sums, complex_sums
from checks.engine.targets import borrowing, fmt_index
from checks.engine.tensor_groups import grouped

__all__ = ["finite_differences", "row_slices", "sample_slices"]


def _fd_packed(
    ctx: Ctx,
    name: str,
    mask: np.ndarray,
    kind: str,
    compact: bool = False,
    refining: bool = False,
) -> dict[str, np.ndarray]:
    """Numerical derivatives of the masked elements of a packable tensor, many per call:
    disjoint-footprint groups where a trial allows (:func:`grouped`), the rest one by one
    (see :class:`Packed`). ``compact``: the fields of the masked elements only, 1-D in their
    C order."""
    pk = Packed(ctx, name, mask, kind, compact, refining)
    # decoding: a quarter of the scratch (the forward calls' half, less the layer's cache of
    # its last call) is free while the outputs are decoded
    cols = grouped(ctx, name, pk.run, pk.xf, pk.xb.shape[1:], pk.cols, kind, pk.dym, pk.out,
                   "lattice", pk.xf.size, pk.chunks.max_elements(), pk.where,
                   pk.chunks.scratch // 32, use_owners=not refining)  # fmt: skip
    pk.one_by_one(cols)
    return pk.results(compact)


def _fd_elements(
    ctx: Ctx,
    name: str,
    mask: np.ndarray,
    kind: str,
    compact: bool = False,
    refining: bool = False,
) -> dict[str, np.ndarray]:
    """Numerical derivatives of the masked elements, one forward call per stencil point
    (fields kept for the masked elements only; ``compact`` as in :func:`_fd_packed`)."""
    tgt = ctx.target
    t_all = tgt.value(name)
    stencil = finite_diff.COMPLEX_STENCIL if kind == "complex" else finite_diff.REAL_STENCIL
    k = len(stencil)
    y0 = ctx.y0.reshape(1, -1)
    dym = ctx.dy64.reshape(1, -1)
    fields = COMPLEX_FIELDS if kind == "complex" else FD_FIELDS
    cols = np.flatnonzero(mask.reshape(-1))
    out = {f: np.full((1, cols.size), np.nan) for f in fields}
    where = np.full(t_all.size, -1, dtype=np.intp)
    where[cols] = np.arange(cols.size)
    held = 8 * cols.size * len(fields) + (8 * JUDGE_ARRAYS * t_all.size if refining else 0)
    osz = 16 if kind == "complex" else 8
    chunks = Chunks(scratch_bytes(ctx, name, held), 0, y0.shape[1], osz, kind, ctx.remote_depth)

    run = element_run(ctx, name, chunks)
    call_cost = element_call_cost(ctx)
    cols = grouped(ctx, name, run, t_all.reshape(1, -1), t_all.shape, cols, kind, dym,
                    out, "axis0", call_cost, chunks.max_elements(), where,
                    use_owners=not refining)  # fmt: skip
    left = np.zeros(t_all.size, dtype=bool)
    left[cols] = True
    idxs = np.argwhere(left.reshape(t_all.shape))
    left_flat = np.flatnonzero(left)  # the same elements (argwhere is in C order)
    per_group = max(1, min(ELEMENT_GROUP, CHUNK_ELEMENTS // max(1, k * y0.shape[1])))
    per_el = k * y0.shape[1] * osz * (1 + REDUCE_ROWS)
    if per_el > chunks.scratch:
        # one element's outputs do not fit the scratch: each reduced as it arrives (here)
        _elements_streamed(ctx, name, kind, idxs, per_group, out, where[left_flat], chunks.scratch)
    else:
        room = chunks.scratch - (0 if ctx.local else chunks.call * chunks.per_task())  # in flight
        per_group = max(1, min(per_group, room // per_el))
        per_task = chunks.per_task(len(idxs) * k)
        _elements_one_by_one(ctx, name, kind, idxs, per_group, out, where[left_flat], per_task)
    store = {f: v[0] for f, v in out.items()}
    del out
    if compact:  # every masked element (cols is now only those left after the groups)
        n_masked = int(np.count_nonzero(where >= 0))
        return {f: store.get(f, np.full(n_masked, np.nan)) for f in FD_FIELDS}
    return expand(store, np.flatnonzero(where >= 0), t_all.shape)


def _elements_one_by_one(
    ctx: Ctx,
    name: str,
    kind: str,
    idxs: np.ndarray,
    per_group: int,
    out: dict[str, np.ndarray],
    dest: np.ndarray,
    per_task: int = 1,
) -> None:
    """The elements ``idxs`` (multi-indices) of a tensor that is not packed, one forward
    call per stencil point, reduced ``per_group`` elements at a time into the columns
    ``dest`` of ``out``. One stream of calls over every group: with an executor, the next
    group's calls run while a group is reduced, ``per_task`` calls per task."""
    t_all = ctx.target.value(name)
    stencil = finite_diff.COMPLEX_STENCIL if kind == "complex" else finite_diff.REAL_STENCIL
    k = len(stencil)
    y0 = ctx.y0.reshape(1, -1)
    dym = ctx.dy64.reshape(1, -1)
    fields = COMPLEX_FIELDS if kind == "complex" else FD_FIELDS

    def calls() -> Iterator[tuple[Call, tuple[Any, ...]]]:
        for start in range(0, len(idxs), per_group):
            group = [tuple(int(i) for i in row) for row in idxs[start : start + per_group]]
            t = np.array([t_all[i] for i in group], dtype=t_all.dtype)
            taken = None
            if kind == "complex":
                h = finite_diff.step_sizes(t, ctx.rule.h_complex)
                vals = complex_value(t, h, ctx.rule)[None]
            else:
                h = finite_diff.step_sizes(t, ctx.rule.h_central)
                vals, taken = finite_diff.perturbed_values(t, h, stencil)
            prep = (start, group, t, h, taken)
            for j, idx in enumerate(group):
                what = f"while perturbing {fmt_index(name, idx)}"
                for q in range(k):
                    yield Call("eval_element", (name, idx, vals[q, j], what)), (prep, j, q, what)

    ys = None
    for y, (prep, j, q, what) in ctx.imap(calls(), per_task):
        start, group, t, h, taken = prep
        if ys is None:
            ys = np.empty(
                (len(group), k, 1, y0.shape[1]),
                dtype=np.complex128 if kind == "complex" else np.float64,
            )
        check_out_shape(ctx, y, ctx.y_shape, what)
        ys[j, q, 0] = y.reshape(-1)
        del y
        if (j, q) != (len(group) - 1, k - 1):
            continue
        if kind == "complex":
            im, ab, ore = reduce_outputs(ys, y0, dym, ctx.ybar, ctx.rule.eps, kind, ctx.dy_random)
            fd = finite_diff.combine_complex(
                im[:, 0], ab[:, 0], h, ctx.rule.eps, ore[:, 0], t, forward_eps=ctx.rule.analytic_eps
            )
        else:
            res = finite_diff.forward_resolution(ctx.rule.h_central, ctx.rule.analytic_eps)
            r, mag, noise, typ = reduce_outputs(
                ys, y0, dym, ctx.ybar, ctx.rule.eps, kind, ctx.dy_random, res
            )
            fd = finite_diff.combine_real(r[:, :, 0], taken, mag[:, :, 0], noise[:, :, 0],
                                          method=kind, typical_num=typ[:, :, 0])  # fmt: skip
        ys = None
        _store(out, fields, fd, dest[start : start + per_group])


def _elements_streamed(
    ctx: Ctx,
    name: str,
    kind: str,
    idxs: np.ndarray,
    per_group: int,
    out: dict[str, np.ndarray],
    dest: np.ndarray,
    scratch: int,
) -> None:
    """:func:`_elements_one_by_one` where one element's stencil outputs would not fit the
    scratch: every output reduced as it arrives (:func:`_streamed`,
    :func:`_streamed_complex`), in this process."""
    t_all = ctx.target.value(name)
    fields = COMPLEX_FIELDS if kind == "complex" else FD_FIELDS
    for start in range(0, len(idxs), per_group):
        group = [tuple(int(i) for i in row) for row in idxs[start : start + per_group]]
        t = np.array([t_all[i] for i in group], dtype=t_all.dtype)
        if kind == "complex":
            h = finite_diff.step_sizes(t, ctx.rule.h_complex)
            fd = _streamed_complex(ctx, name, group, complex_value(t, h, ctx.rule), h, t, scratch)
        else:
            h = finite_diff.step_sizes(t, ctx.rule.h_central)
            vals, taken = finite_diff.perturbed_values(t, h, finite_diff.REAL_STENCIL)
            fd = _streamed(ctx, name, group, vals, taken, kind)
        _store(out, fields, fd, dest[start : start + per_group])


def _store(
    out: dict[str, np.ndarray], fields: Sequence[str], fd: finite_diff.FDResult, dest: np.ndarray
) -> None:
    for f in fields:
        v = getattr(fd, f)
        if v is not None:
            out[f][0, dest] = v


def _streamed(
    ctx: Ctx,
    name: str,
    group: list[tuple[int, ...]],
    vals: np.ndarray,
    taken: np.ndarray,
    kind: str,
) -> finite_diff.FDResult:
    """Real differences of the elements ``group`` (stencil values ``vals`` (K, P)), each
    stencil output reduced as it arrives (:class:`Sums`): what the one-by-one evaluation does
    when one element's four outputs would not fit its scratch."""
    res = finite_diff.forward_resolution(ctx.rule.h_central, ctx.rule.analytic_eps)
    per = []
    for j, idx in enumerate(group):
        sums = Sums(ctx.y0, ctx.dy64, res, ybar=ctx.ybar, eps=ctx.rule.eps, dy_random=ctx.dy_random)
        for q in range(vals.shape[0]):
            what = f"while perturbing {fmt_index(name, idx)}"
            with borrowing(ctx.target):
                y = ctx.target.eval_element(name, idx, vals[q, j], what)
            check_out_shape(ctx, y, ctx.y_shape, what)
            sums.add(y, borrowed=True)
            del y
        per.append(sums)
    return finite_diff.combine_real(
        np.array([s.r for s in per]).T, taken, np.array([s.mags for s in per]).T,
        np.array([s.noise for s in per]).T, method=kind,
        typical_num=np.array([s.typical for s in per]).T,
    )  # fmt: skip


def sample_slices(
    ctx: Ctx, name: str, scratch: int
) -> list[tuple[slice | None, tuple[int, ...], np.ndarray]]:
    """How a complex call perturbing parameter ``name`` is cut along the samples: ``(rows,
    output shape, dy of those samples)`` per call -- one call on the whole batch (``rows``
    None), unless the input is packed (its samples independent), the target can slice it, and
    the batch in complex numbers would not fit ``scratch``."""
    tgt, ba = ctx.target, ctx.batch_axis
    n = ctx.y_shape[ba] if len(ctx.y_shape) > ba else 1
    whole: list[tuple[slice | None, tuple[int, ...], np.ndarray]] = [(None, ctx.y_shape, ctx.dy64)]
    if name == "x" or "x" not in ctx.packed or not tgt.slices_samples or n < 2:
        return whole
    xs = tgt.value("x").size // n
    m = Chunks(scratch, xs, math.prod(ctx.y_shape) // n, 16, "complex").copies_per_call()
    if m >= n:
        return whole
    return row_slices(ctx, m)


def row_slices(ctx: Ctx, m: int) -> list[tuple[slice | None, tuple[int, ...], np.ndarray]]:
    """The batch in slices of ``m`` samples: ``(rows, output shape, dy of those samples)``."""
    ba = ctx.batch_axis
    n = ctx.y_shape[ba]
    out: list[tuple[slice | None, tuple[int, ...], np.ndarray]] = []
    for i in range(0, n, m):
        rows = slice(i, min(i + m, n))
        shape = list(ctx.y_shape)
        shape[ba] = rows.stop - rows.start
        at = (slice(None),) * ba + (rows,)
        out.append((rows, tuple(shape), np.ascontiguousarray(ctx.dy64[at])))
    return out


def _streamed_complex(
    ctx: Ctx,
    name: str,
    group: list[tuple[int, ...]],
    vals: np.ndarray,
    h: np.ndarray,
    t: np.ndarray,
    scratch: int,
) -> finite_diff.FDResult:
    """The complex step of the elements ``group`` (complex values ``vals``), each output
    reduced in slices as it arrives (as :func:`reduce_outputs`), not copied; when the input
    is packed (its samples independent) and a complex call on the whole batch would not fit
    ``scratch``, forward runs on slices of the samples and the sums add up over them."""
    tgt = ctx.target
    sums = np.zeros((3, len(group)))
    for j, idx in enumerate(group):
        what = f"while perturbing {fmt_index(name, idx)}"
        for rows, y_shape, dy in sample_slices(ctx, name, scratch):
            with tgt.samples(rows, ctx.batch_axis) if rows else nullcontext(), borrowing(tgt):
                y = tgt.eval_element(name, idx, vals[j], what)
            check_out_shape(ctx, y, y_shape, what)
            sums[:, j] += complex_sums(y, dy)
            del y
    return finite_diff.combine_complex(
        sums[0], sums[1], h, ctx.rule.eps, sums[2], t, forward_eps=ctx.rule.analytic_eps
    )


def finite_differences(
    ctx: Ctx,
    name: str,
    mask: np.ndarray,
    kind: str,
    compact: bool = False,
    refining: bool = False,
) -> dict[str, np.ndarray]:
    if name in ctx.packed:
        out = _fd_packed(ctx, name, mask, kind, compact, refining)
    else:
        out = _fd_elements(ctx, name, mask, kind, compact, refining)
    if kind != "complex":
        _unresolved(ctx, name, out, mask if compact else None)
    return out


def _unresolved(
    ctx: Ctx, name: str, out: dict[str, np.ndarray], mask: np.ndarray | None = None
) -> None:
    """Where no output moved at all, the derivative is only known to be below the outputs'
    quantum: set the error estimate to ``eps * sum_j |dy_j y_j| / h`` over every output the
    element could reach (its sample when packed, else all), since the footprint is unseen.
    ``mask``: ``out`` holds the masked elements only (``finite_differences``'s ``compact``)."""
    still = (out["magnitude"] == 0) & (out["value"] == 0)
    if not still.any():
        return
    t = ctx.target.value(name)
    w = np.abs(ctx.dy64 * ctx.y0)
    if name in ctx.packed:
        ba = ctx.batch_axis
        per_sample = np.moveaxis(w, ba, 0).reshape(w.shape[ba], -1).sum(axis=1)
        shape = [1] * t.ndim
        shape[ba] = -1
        q = per_sample.reshape(shape)
    else:
        q = np.array(w.sum())
    if mask is not None:
        t, q = t[mask], np.broadcast_to(q, t.shape)[mask]
    h = finite_diff.step_sizes(t, ctx.rule.h_central)
    bound = ctx.rule.eps * q / h
    out["error"] = np.where(still, np.maximum(out["error"], bound), out["error"])
