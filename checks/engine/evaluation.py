"""Numerical derivatives of many elements per forward call: the run's context (:class:`Ctx`),
packed copies along the batch axis and their one-by-one evaluation, one forward call per
copy of a tensor that is not packed, cut to the working-memory budget
(:mod:`checks.engine.memory`). Disjoint-footprint groups: :mod:`checks.engine.tensor_groups`.

Memory: everything the run holds stays within :func:`checks.engine.memory.budget` of the
layer's tensors (8x, at least 32 MiB). :func:`account_memory` counts what the run holds
outside its numerical part; the rest is the scratch (:func:`scratch_bytes`) to which packed
forward calls, the outputs kept for decoding groups and one-by-one evaluations are cut
(:class:`Chunks`), along the copies and along the samples; a grouping whose copies of one
sample do not fit is not tried (its elements go one by one); result fields are kept for the
evaluated elements only until they are expanded.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from checks.engine import batching, finite_diff, grouping, memory, tolerances
from checks.engine.dispatch import Call, Dispatcher
from checks.engine.targets import Target
from checks.report.errors import LayerContractError

T = TypeVar("T")

# elements of float64 scratch (outputs of packed copies) per reduction chunk
CHUNK_ELEMENTS = 2**21

FD_FIELDS = ("value", "error", "magnitude", "left", "right", "left2", "right2",
              "onesided_noise", "central", "central2")  # fmt: skip

# elements evaluated one at a time are reduced in groups of this many
ELEMENT_GROUP = 64

# with an executor, at most this many one-element calls go to a worker as one task
TASK_CALLS = 32


@dataclass
class Ctx:
    target: Target
    dy: np.ndarray
    # dy in float64 arithmetic: a float32/float16 dy as it is (every use mixes it with float64
    # values, which numpy computes in float64 from its exact values), else a float64 copy
    dy64: np.ndarray
    dy_random: bool  # dy is the checker's own Gaussian draw (see finite_diff.numerator_noise)
    y0: np.ndarray  # float64 baseline output
    y_shape: tuple[int, ...]
    ybar: float
    rule: tolerances.DtypeRule
    rng: np.random.Generator
    batch_axis: int
    rtol: float | None
    atol: float | None
    dtypes: dict[str, str] = field(default_factory=dict)  # the caller's dtypes, by tensor
    packed: set[str] = field(default_factory=set)
    # per tensor: the grouping that passed its trial ("" when none did), found once
    groupings: dict[str, str] = field(default_factory=dict)
    # per tensor and method ("name/kind"): a parameter's map of outputs to its slices, where
    # probing it was its grouping's trial (checks.engine.trials.cell_owners; None: the
    # probe found its slices overlap), until its groups read it
    owners: dict[str, np.ndarray | None] = field(default_factory=dict)
    # tensors some of whose groups read their sources off owner maps (judgement measures
    # their suspect elements again)
    mapped: set[str] = field(default_factory=set)
    # working memory (see account_memory): the budget, and what the run holds besides its scratch
    budget: int = 0
    held: int = 0
    reports: dict[str, int] = field(default_factory=dict)  # bytes of each tensor's report
    # where the forward calls of loops run (checks.engine.dispatch): here, unless an executor
    calls: Dispatcher | None = None

    def __post_init__(self) -> None:
        if self.calls is None:
            self.calls = Dispatcher(self.target)

    @property
    def remote_lanes(self) -> int:
        """Forward calls an executor runs at once (0 without one)."""
        assert self.calls is not None
        return 0 if self.calls.local else self.calls.lanes

    @property
    def remote_depth(self) -> int:
        """Forward calls in flight on an executor at once (0 without one)."""
        assert self.calls is not None
        return 0 if self.calls.local else self.calls.depth

    @property
    def local(self) -> bool:
        """Every forward call runs in this process, on the target itself."""
        assert self.calls is not None
        return self.calls.local

    def imap(
        self, items: Iterable[tuple[Call, T]], per_task: int = 1
    ) -> Iterator[tuple[np.ndarray, T]]:
        """The outputs of independent forward calls, in order (:meth:`Dispatcher.imap`)."""
        assert self.calls is not None
        return self.calls.imap(items, per_task)


# the least scratch a numerical evaluation gets when what the run holds already fills the
# budget (a float32 layer differenced in float64 holds float64 copies of everything): an
# eighth of the budget, and at least this
_MIN_SCRATCH = 1 << 20


def account_memory(
    ctx: Ctx, watched: dict[str, np.ndarray], analytic: dict[str, np.ndarray], y: np.ndarray
) -> None:
    """Set ``ctx.budget`` (:func:`checks.engine.memory.budget` of the layer's tensors in the
    caller's dtypes) and what the run holds outside the scratch of its numerical part: the
    working copies (float64 when promoted; they and the caller's arrays are watched by
    digest, not by copies), the analytic gradients in float64, ``y``, ``dy`` and their
    float64 copies, what the layer keeps of its last forward (taken as two outputs), and
    each tensor's report arrays (three float64 and two bool arrays)."""
    tgt = ctx.target
    grads = sum(a.size * np.dtype(ctx.dtypes[n]).itemsize for n, a in analytic.items())
    layer = y.nbytes + grads + sum(v.nbytes for v in watched.values())
    ctx.budget = memory.budget(layer)
    ctx.held = (
        sum(tgt.value(n).nbytes for n in tgt.names)
        + sum(a.nbytes for a in analytic.values())
        + y.nbytes + ctx.dy.nbytes + 2 * ctx.y0.nbytes
        + (ctx.y0.nbytes if ctx.y0 is not y else 0)
        + (ctx.dy64.nbytes if ctx.dy64 is not ctx.dy else 0)
    )  # fmt: skip
    ctx.reports = {n: 26 * a.size for n, a in analytic.items()}


def scratch_bytes(ctx: Ctx, name: str, extra: int = 0) -> int:
    """Bytes the numerical evaluation of ``name`` may hold at once besides ``extra`` (its
    result fields): the budget less what the run holds and the other tensors' reports."""
    others = sum(v for n, v in ctx.reports.items() if n != name)
    return max(_MIN_SCRATCH, ctx.budget // 8, ctx.budget - ctx.held - others - extra)


def reduce_outputs(
    y: np.ndarray,
    base: np.ndarray,
    dy64: np.ndarray,
    ybar: float,
    eps: float,
    kind: str,
    dy_random: bool = False,
    resolution: tuple[float, float] = (0.0, 0.0),
) -> tuple[np.ndarray, ...]:
    """Reduce outputs ``y`` (P, K, M, R) of perturbed evaluations to the numbers FD needs.

    Returns ``(r (K, P, M), magnitude (2, P, M), noise (2, P, M), typical noise (2, P, M))``
    (see :func:`finite_diff.numerator_noise`) for real stencils and
    ``(im (P, M), abs (P, M), |Re y| (P, M))`` for the complex step.
    """
    ady = np.abs(dy64)
    if kind == "complex":
        im = y[:, 0].imag.astype(np.float64, copy=False)
        re = np.where(im != 0, np.abs(y[:, 0].real), 0.0)
        return (
            np.einsum("pmr,mr->pm", im, dy64),
            np.einsum("pmr,mr->pm", np.abs(im), ady),
            np.einsum("pmr,mr->pm", re, ady),
        )
    y = y.astype(np.float64, copy=False)
    # one stencil point at a time: y - base for all of them at once is as large as y
    r = np.stack([np.einsum("pmr,mr->pm", y[:, k] - base[None], dy64) for k in range(y.shape[1])])
    mags, noises, typical = [], [], []
    for (a, b), res in zip(((0, 1), (2, 3)), resolution, strict=True):
        ya, yb = y[:, a], y[:, b]
        mags.append(np.einsum("pmr,mr->pm", np.abs(ya - yb), ady))
        nz, ty = finite_diff.numerator_noise(
            ya, yb, dy64, ybar, eps, lambda w: w.sum(axis=-1), dy_random=dy_random, resolution=res
        )
        noises.append(nz)
        typical.append(ty)
    return r, np.stack(mags), np.stack(noises), np.stack(typical)


def check_out_shape(ctx: Ctx, y: np.ndarray, expected: tuple[int, ...], what: str) -> None:
    if y.shape != expected:
        raise LayerContractError(
            f"{ctx.target.layer_name} output shape changed under perturbation: {what} gave "
            f"{y.shape}, expected {expected}"
        )


def complex_value(t: np.ndarray, h: np.ndarray, rule: tolerances.DtypeRule) -> np.ndarray:
    return t.astype(rule.complex_dtype) + 1j * h.astype(rule.complex_dtype)


# memory (see checks.engine.memory): bytes per output element of a copy kept for decoding a group
# (its float64 output -- a group has one complex copy at most -- and, when a group's copies
# take several packed calls, their baselines); float64 rows of temporaries (per sample) of
# decoding a group and of a one-by-one reduction (reduce_outputs)
_KEPT_BYTES = {"real": 8, "complex": 10}

_DECODE_ROWS = 10

REDUCE_ROWS = 6

# full-shape float64 arrays check_tensor holds while refine evaluates its candidates
JUDGE_ARRAYS = 14

COMPLEX_FIELDS = ("value", "error", "magnitude")


class Chunks:
    """How a tensor's packed (or one-by-one) evaluations are cut to the scratch.

    ``call``: bytes a forward call takes per copy of one sample (its input and two outputs,
    twice: the layer keeps its last call's until the next one ends). Packed: half the scratch
    goes to one call, half to the outputs kept for decoding; one by one (``s = 0``), a call
    is one forward and the rest is kept. With an executor (``depth`` calls in flight, on
    other processes) a call's share is what this process holds of the ``depth`` calls: each
    one's outputs, and the same again pickled (their inputs are built where they run)."""

    def __init__(
        self, scratch: int, s: int, r_out: int, isz: int, kind: str, depth: int = 0
    ) -> None:
        self.scratch = scratch
        self.depth = depth  # 0: every call runs here
        self.packed = s > 0
        self.s, self.r_out = s, r_out
        self.call = self.call_bytes(isz)
        self.kept = _KEPT_BYTES["complex" if kind == "complex" else "real"] + 8 * self.packed

    def call_bytes(self, isz: int) -> int:
        if self.depth:
            return self.depth * 2 * self.r_out * isz
        return 2 * (self.s + 2 * self.r_out) * isz

    def copies_per_call(self, isz: int | None = None) -> int:
        """Copies of one sample (baselines included) one forward call may hold (of
        ``isz``-byte elements; by default the kind's)."""
        call = self.call if isz is None else self.call_bytes(isz)
        return max(2, (self.scratch // 2) // call)

    def per_task(self, n_calls: int | None = None) -> int:
        """One-element calls (``s = 0``) per executor task: their outputs in flight within a
        quarter of the scratch, at most :data:`TASK_CALLS`, and with ``n_calls`` to make
        enough tasks to keep every one in flight busy (1 serially, and for packed calls)."""
        if not self.depth or self.packed:
            return 1
        k = max(1, min(TASK_CALLS, (self.scratch // 4) // self.call))
        if n_calls is not None:
            k = min(k, -(-n_calls // self.depth))
        return max(1, k)

    def max_elements(self) -> int:
        """Output elements kept for decoding groups (for grouping.evaluate_groups): what the
        call and the decoding's temporaries for one sample leave."""
        room = self.scratch // 2 if self.packed else self.scratch - self.call * self.per_task()
        return max(self.r_out, (room - 8 * _DECODE_ROWS * self.r_out) // self.kept)


def expand(
    store: dict[str, np.ndarray], flat: np.ndarray, shape: tuple[int, ...]
) -> dict[str, np.ndarray]:
    """Full-shape fields from ``store[f]`` (1-D, the elements at the flat indices ``flat``):
    NaN elsewhere, and a read-only NaN view for the fields the method does not produce."""
    out = {}
    for f in FD_FIELDS:
        v = store.pop(f, None)
        if v is None:
            out[f] = np.broadcast_to(np.float64(np.nan), shape)
            continue
        full = np.full(math.prod(shape), np.nan)
        full[flat] = v
        out[f] = full.reshape(shape)
    return out


class Packed:
    """One packable tensor's evaluation: packed copies of ``x`` stacked along the batch axis,
    cut to the scratch (:class:`Chunks`) along the copies and, when one copy of the whole
    batch does not fit, along the samples (which the batching probe showed independent).
    The fields are kept for the evaluated positions only (``out``, columns ``where``)."""

    def __init__(
        self, ctx: Ctx, name: str, mask: np.ndarray, kind: str, compact: bool, refining: bool
    ) -> None:
        self.ctx, self.name, self.kind = ctx, name, kind
        self.tgt, self.ba = ctx.target, ctx.batch_axis
        self.x = x = self.tgt.value(name)
        self.xb = np.moveaxis(x, self.ba, 0)
        self.n = n = self.xb.shape[0]
        self.xf = np.ascontiguousarray(self.xb).reshape(n, -1)
        self.s = s = self.xf.shape[1]
        self.mb = np.moveaxis(mask, self.ba, 0).reshape(n, s)
        self.cols = cols = np.flatnonzero(self.mb.any(axis=0))
        self.stencil = (
            finite_diff.COMPLEX_STENCIL if kind == "complex" else finite_diff.REAL_STENCIL
        )
        self.yb_shape = list(ctx.y_shape)
        self.r_out = math.prod(ctx.y_shape) // n
        self.y0m = np.moveaxis(ctx.y0, self.ba, 0).reshape(n, -1)
        self.dym = np.moveaxis(ctx.dy64, self.ba, 0).reshape(n, -1)
        self.fields = COMPLEX_FIELDS if kind == "complex" else FD_FIELDS
        self.out = {f: np.full((n, cols.size), np.nan) for f in self.fields}
        self.where = np.full(s, -1, dtype=np.intp)
        self.where[cols] = np.arange(cols.size)
        held = 8 * n * cols.size * len(self.fields) + (8 * JUDGE_ARRAYS * x.size if refining else 0)
        isz = np.dtype(ctx.rule.complex_dtype if kind == "complex" else x.dtype).itemsize
        self.chunks = Chunks(scratch_bytes(ctx, name, held), s, self.r_out, isz, kind,
                             ctx.remote_depth)  # fmt: skip
        self.splits: dict[tuple[int, int, int, int], tuple[int, int]] = {}
        self.largest = 0  # bytes of the largest packed input

    def split(self, m: int, units: int, copies: int, cpc: int) -> tuple[int, int]:
        """Samples and units (specs, or positions of ``copies`` copies each) per packed
        call: a baseline and the copies of ``m_call`` samples within ``cpc`` copies of one
        sample, and within the element budget of a call; the fewest calls, then the most
        samples per call. With an executor, calls of about equal size in a multiple of its
        lanes (where the units allow), so that no worker waits for the last one."""
        key = (m, units, copies, cpc)
        if key not in self.splits:
            r_out, s = self.r_out, self.s
            best = (math.inf, 1, 1)
            for m_call in range(min(m, max(1, cpc // (1 + copies))), 0, -1):
                cap = min(CHUNK_ELEMENTS // max(1, m_call * r_out), CHUNK_ELEMENTS // (m_call * s))
                per = max(1, min(cap // copies, (cpc // m_call - 1) // copies))
                calls = -(-m // m_call) * -(-units // per)
                if calls < best[0]:
                    best = (calls, m_call, per)
            _, m_call, per = best
            lanes = self.ctx.remote_lanes
            if lanes > 1 and units > 0:  # more unit chunks, then more sample slices
                row_calls, unit_calls = -(-m // m_call), -(-units // per)
                wanted = -(-(row_calls * unit_calls) // lanes) * lanes
                unit_calls = min(units, -(-wanted // row_calls))
                row_calls = min(m, max(row_calls, -(-wanted // unit_calls)))
                per, m_call = -(-units // unit_calls), -(-m // row_calls)
            self.splits[key] = (m_call, per)
        return self.splits[key]

    def call(self, copies: batching.Copies, what: str) -> Call:
        """The forward call on packed ``copies`` of some samples (built where it runs: see
        :class:`checks.engine.dispatch.Dispatcher`; :meth:`unpacked` for its outputs)."""
        if self.ctx.local:  # the layer here keeps this call's arrays (see results)
            self.largest = max(self.largest, copies.nbytes(self.s))
        return Call("eval_packed", (self.name, copies, copies.copies, what, copies.rows))

    def unpacked(self, ybig: np.ndarray, copies: int, m: int, what: str) -> np.ndarray:
        """The outputs of a packed call of ``copies`` copies of ``m`` samples, as (copies,
        samples, outputs)."""
        self.yb_shape[self.ba] = copies * m
        check_out_shape(self.ctx, ybig, tuple(self.yb_shape), what)
        return batching.unpack_outputs(ybig, copies, self.ba)

    def run(
        self, specs: Sequence[grouping.Spec], cplx: bool, rows: slice = slice(None)
    ) -> tuple[np.ndarray, np.ndarray]:
        """A :data:`checks.engine.grouping.RunFn`: the copies of ``specs``, every one with the
        unperturbed baseline of its call."""
        dtype = np.dtype(self.ctx.rule.complex_dtype) if cplx else self.x.dtype
        r0, r1, _ = rows.indices(self.n)
        m = r1 - r0
        c_all = len(specs)
        m_call, per_call = self.split(m, c_all, 1, self.chunks.copies_per_call(dtype.itemsize))
        ys = np.empty((c_all, m, self.r_out), dtype=np.complex128 if cplx else np.float64)
        # one call per slice of samples: every copy's baseline is the same row, kept once
        one_call = c_all <= per_call
        bases = np.empty((m, self.r_out) if one_call else (c_all, m, self.r_out))

        def calls() -> Iterator[tuple[Call, tuple[int, int, int, int, str]]]:
            for j0 in range(0, m, m_call):
                ms = min(m_call, m - j0)
                sub = slice(r0 + j0, r0 + j0 + ms)
                for c0 in range(0, c_all, per_call):
                    chunk = specs[c0 : c0 + per_call]
                    what = f"on {1 + len(chunk)} packed copies of {self.name} (grouped positions)"
                    yield self._specs_call(chunk, sub, dtype, what), (j0, ms, c0, len(chunk), what)

        for ybig, (j0, ms, c0, n_c, what) in self.ctx.imap(calls()):
            y = self.unpacked(ybig, 1 + n_c, ms, what)
            del ybig
            ys[c0 : c0 + n_c, j0 : j0 + ms] = y[1:]
            if one_call:
                bases[j0 : j0 + ms] = y[0].real
            else:
                bases[c0 : c0 + n_c, j0 : j0 + ms] = y[0].real
            del y
        if one_call:
            return np.broadcast_to(bases, ys.shape), ys
        return bases, ys

    def _specs_call(
        self, chunk: Sequence[grouping.Spec], sub: slice, dtype: np.dtype, what: str
    ) -> Call:
        """The call on the unperturbed samples ``sub`` and a copy of them per spec."""
        specs = [(pos_i, vals_i[sub]) for pos_i, vals_i in chunk]
        return self.call(batching.Copies(self.name, self.ba, sub, dtype, specs=specs, xf=self.xf),
                         what)  # fmt: skip

    def one_by_one(self, cols: np.ndarray) -> None:
        """Every position of ``cols`` perturbed alone, many positions per packed call."""
        ctx, kind, stencil = self.ctx, self.kind, self.stencil
        k = len(stencil)
        # one by one: every copy with its reduction
        per_cs = self.chunks.call + REDUCE_ROWS * self.r_out * (16 if kind == "complex" else 8)
        max_cs = max(1 + k, self.chunks.scratch // per_cs)
        m_sub, per_pos = self.split(self.n, cols.size, k, max_cs)

        def calls() -> Iterator[tuple[Call, tuple[Any, ...]]]:
            for start in range(0, cols.size, per_pos):
                pos = cols[start : start + per_pos]
                for m0 in range(0, self.n, m_sub):
                    rows = slice(m0, min(self.n, m0 + m_sub))
                    t = self.xf[rows, pos]
                    if kind == "complex":
                        h = finite_diff.step_sizes(t, ctx.rule.h_complex)
                        vals = complex_value(t, h, ctx.rule)[None]
                        dtype = np.dtype(ctx.rule.complex_dtype)
                        taken = None
                    else:
                        h = finite_diff.step_sizes(t, ctx.rule.h_central)
                        vals, taken = finite_diff.perturbed_values(t, h, stencil)
                        dtype = self.x.dtype
                    n_copies = 1 + vals.shape[0] * pos.size
                    what = f"on {n_copies} packed copies of {self.name} ({pos.size} positions)"
                    meta = (pos, rows, t, h, taken, n_copies, what)
                    copies = batching.Copies(self.name, self.ba, rows, dtype, stencil=(pos, vals),
                                             xf=self.xf)  # fmt: skip
                    yield self.call(copies, what), meta

        for ybig, (pos, rows, t, h, taken, copies, what) in ctx.imap(calls()):
            y = self.unpacked(ybig, copies, rows.stop - rows.start, what)
            del ybig
            fd = self._combine(y, rows, t, h, taken)
            del y
            for f in self.fields:
                v = getattr(fd, f)
                if v is not None:
                    self.out[f][rows, self.where[pos]] = v

    def _combine(
        self, y: np.ndarray, rows: slice, t: np.ndarray, h: np.ndarray, taken: Any
    ) -> finite_diff.FDResult:
        """Finite differences from the outputs ``y`` (1 + copies, samples, outputs) of one
        one-by-one call: the baseline, then the stencil of each position."""
        ctx, kind = self.ctx, self.kind
        p, m, k = t.shape[1], t.shape[0], len(self.stencil)
        if kind == "complex":
            im, ab, ore = reduce_outputs(
                y[1:].reshape(p, 1, m, -1), self.y0m[rows], self.dym[rows], ctx.ybar,
                ctx.rule.eps, kind, ctx.dy_random,
            )  # fmt: skip
            return finite_diff.combine_complex(
                im.T, ab.T, h, ctx.rule.eps, ore.T, t, forward_eps=ctx.rule.analytic_eps
            )
        base = y[0].astype(np.float64)
        r, mag, noise, typ = reduce_outputs(
            y[1:].reshape(p, k, m, -1), base, self.dym[rows], ctx.ybar, ctx.rule.eps, kind,
            ctx.dy_random,
            finite_diff.forward_resolution(ctx.rule.h_central, ctx.rule.analytic_eps),
        )  # fmt: skip
        return finite_diff.combine_real(
            r.transpose(0, 2, 1), taken, mag.transpose(0, 2, 1),
            noise.transpose(0, 2, 1), method=kind, typical_num=typ.transpose(0, 2, 1),
        )  # fmt: skip

    def results(self, compact: bool) -> dict[str, np.ndarray]:
        """The fields in the tensor's shape (NaN where not evaluated), or with ``compact`` of
        the masked elements only, 1-D in their C order."""
        x, xb, ba, n, s = self.x, self.xb, self.ba, self.n, self.s
        # a layer keeps its last input and outputs (a cache for backward) until its next
        # call: when that would not fit beside the judgement's arrays, one forward on the
        # tensor itself
        kept = self.largest * (s + 2 * self.r_out) // max(1, s)
        if kept > scratch_bytes(self.ctx, self.name, 8 * JUDGE_ARRAYS * x.size):
            self.tgt.working_forward(
                f"on the unperturbed {self.name} (so that it drops packed copies)"
            )
        cols = np.flatnonzero(self.where >= 0)
        out = self.out
        if compact:  # the masked elements, ordered by their flat index in x's own layout
            sel = self.mb[:, cols]
            ii, jj = np.nonzero(sel)
            multi = list(np.unravel_index(cols[jj], xb.shape[1:])) if xb.ndim > 1 else []
            multi.insert(ba, ii)
            order = np.argsort(np.ravel_multi_index(tuple(multi), x.shape), kind="stable")
            return {f: out[f][sel][order] if f in out else np.full(order.size, np.nan)
                    for f in FD_FIELDS}  # fmt: skip
        full = {}
        for f in FD_FIELDS:
            v = out.pop(f, None)
            if v is None:  # not produced by the method: a read-only NaN view, no memory
                full[f] = np.broadcast_to(np.float64(np.nan), x.shape)
                continue
            w = np.full((n, s), np.nan)
            w[:, cols] = v
            del v
            full[f] = np.moveaxis(w.reshape(xb.shape), 0, ba)
        return full


# per-call overhead of a small forward, in input elements pushed through it (~30 us)
_CALL_OVERHEAD = 1000.0


def element_call_cost(ctx: Ctx) -> float:
    """What one forward call on the whole input costs, in input elements pushed through it."""
    tgt = ctx.target
    return _CALL_OVERHEAD + max(tgt.value(n).size for n in tgt.names)


def element_run(ctx: Ctx, name: str, chunks: Chunks | None = None) -> grouping.RunFn:
    """A :data:`checks.engine.grouping.RunFn` for a tensor that is not packed: one forward
    call per spec, the tensor's elements perturbed in place (through the run's dispatcher,
    ``chunks.per_task`` calls per task)."""
    tgt = ctx.target
    t_all = tgt.value(name)
    y0 = ctx.y0.reshape(1, -1)

    def run(
        specs: Sequence[grouping.Spec], cplx: bool, rows: slice = slice(None)
    ) -> tuple[np.ndarray, np.ndarray]:
        ys = np.empty((len(specs), 1, y0.shape[1]), dtype=np.complex128 if cplx else np.float64)

        def calls() -> Iterator[tuple[Call, tuple[int, str]]]:
            for i, (pos_i, vals_i) in enumerate(specs):
                idx = np.unravel_index(pos_i, t_all.shape)
                what = f"while perturbing {pos_i.size} elements of {name} together"
                yield Call("eval_element", (name, idx, vals_i[0], what)), (i, what)

        per_task = chunks.per_task(len(specs)) if chunks is not None else 1
        for y, (i, what) in ctx.imap(calls(), per_task):
            check_out_shape(ctx, y, ctx.y_shape, what)
            ys[i, 0] = y.reshape(-1)
        return np.broadcast_to(y0, ys.shape), ys

    return run
