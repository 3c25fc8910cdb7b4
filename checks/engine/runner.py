"""The private runner behind :func:`checks.check_layer` and :func:`checks.check_vjp`.

One pass, in order: validate the arguments; run forward and backward once for the analytic
gradients (with contract checks: mutation, shapes, dtype kinds, NaN/Inf); check determinism;
probe sample independence (batching) and complex-step safety (method) per tensor; plan the
coverage; evaluate the numerical gradients; judge every element against its own tolerance,
accepting subgradients at kinks; build the :class:`~checks.report.Report` and raise when it is
not ok. The layer's parameters are restored in ``finally`` whatever happens.

Memory: everything the run holds stays within :func:`checks.engine.memory.budget` of the layer's
tensors (8x, at least 32 MiB). ``_memory`` counts what the run holds outside its numerical
part; the rest is the scratch (``_scratch``) to which packed forward calls, the outputs
kept for decoding groups and one-by-one evaluations are cut (``_Chunks``), along the copies
and along the samples; a grouping whose copies of one sample do not fit is not tried (its
elements go one by one); result fields are kept for the evaluated elements only until
they are expanded, and ``_refine`` keeps only its candidates at each step.
"""

from __future__ import annotations

import math
import numbers
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn

import numpy as np

from checks.engine import (
    batching,
    contract,
    coverage,
    finite_diff,
    grouping,
    kinks,
    memory,
    tolerances,
)
from checks.engine import precision as precision_probe
from checks.engine.finite_diff import FDResult
from checks.report import Report, TensorReport, order_with_ties
from checks.report.errors import GradcheckError, GradientMismatchError, LayerContractError

__all__ = ["METHODS", "run_layer", "run_vjp"]

METHODS = ("auto", "central", "richardson", "complex")
PRECISIONS = ("auto", "native")
# elements of float64 scratch (outputs of packed copies) per reduction chunk
_CHUNK_ELEMENTS = 2**21
_FD_FIELDS = ("value", "error", "magnitude", "left", "right", "left2", "right2",
              "onesided_noise", "central", "central2")  # fmt: skip
# elements evaluated one at a time are reduced in groups of this many
_ELEMENT_GROUP = 64
# real-method elements re-evaluated with steps h / s (see _refine), and at most this many
_REFINE_SCALES = (4.0, 16.0, 64.0)
_REFINE_MAX = 512
# tied sets of kinked elements judged together along their common direction (_tied_sets)
_TIED_MAX = 3
# _refine's smoothness tests allow this many typical roundings (finite_diff.numerator_noise:
# ~2.7 standard deviations each); too few marks smooth stencils as kinked, too many lets
# several kinks pass for a curvature
_SMOOTH_SAFETY = 3.0


def _fmt_index(name: str, idx: tuple[int, ...]) -> str:
    return f"{name}[{', '.join(map(str, idx))}]"


# --------------------------------------------------------------------------------------------
# targets: what is being checked, behind one interface


def _as_output(y: Any, label: str) -> np.ndarray:
    """A forward result as an ndarray of its own; a scalar output (a loss) becomes a 0-d array.

    Always a copy: a layer may return the same buffer from every call (``np.tanh(u,
    out=self._out)``), so what it returns is only borrowed until its next call.
    """
    if isinstance(y, (np.generic, float)) and not isinstance(y, (bool, np.bool_)):
        y = np.asarray(y)
    if not isinstance(y, np.ndarray):
        raise LayerContractError(f"{label} returned {type(y).__name__}, not an ndarray")
    return y.copy()


def _own(g: Any) -> Any:
    """A copy of a gradient the layer returned (borrowed until its next call, as outputs)."""
    return g.copy() if isinstance(g, np.ndarray) else g


def param_names(keys: Sequence[str]) -> dict[str, str]:
    """Report names of a layer's parameters, keyed by those names: the key itself, except
    where it could be taken for the input ``x`` (``"x"``, or ``"params[...]"``), which is
    reported as ``params['x']``."""
    return {k: f"params[{k!r}]" if k == "x" or k.startswith("params[") else k for k in keys}


class _ComplexCallError(LayerContractError):
    """The layer raised on a call that carried complex values (see :func:`_complex_refused`)."""


def _reraise(exc: LayerContractError, *inputs: Any) -> NoReturn:
    """Re-raise ``exc`` from a call on ``inputs`` (what forward read: the input and, for a
    layer, its parameters, still as perturbed), as a :class:`_ComplexCallError` when the
    layer raised and some input was complex."""
    if exc.__cause__ is not None and any(np.iscomplexobj(a) for a in inputs):
        raise _ComplexCallError(str(exc)) from exc.__cause__
    raise exc


class _Target:
    """The function under check: named tensors, forward with one tensor replaced, gradients."""

    layer_name: str
    entry: str
    names: list[str]
    packable: set[str]
    n_evals: int = 0

    def value(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def analytic(self, dy: np.ndarray) -> tuple[dict[str, Any], list[str]]:
        raise NotImplementedError

    def base_forward(self) -> np.ndarray:
        raise NotImplementedError

    def eval_replace(self, name: str, arr: np.ndarray, what: str) -> np.ndarray:
        raise NotImplementedError

    def eval_element(self, name: str, idx: tuple[Any, ...], v: Any, what: str) -> np.ndarray:
        raise NotImplementedError

    def eval_packed(
        self, name: str, big: np.ndarray, copies: int, what: str, rows: slice = slice(None)
    ) -> np.ndarray:
        """Forward on ``copies`` stacked copies of the samples ``rows`` of tensor ``name``."""
        raise NotImplementedError

    def watched(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def working_forward(self, what: str) -> np.ndarray:
        """Forward on the working copies (what the numerical part perturbs)."""
        raise NotImplementedError

    def promote(self) -> None:
        """Make the working copies of every floating tensor float64."""
        raise NotImplementedError

    def demote(self) -> list[str]:
        """Back to working copies in the caller's dtypes; the names of the float64 copies
        that forward changed meanwhile (a contract breach the caller's arrays cannot show)."""
        raise NotImplementedError


class _LayerTarget(_Target):
    """A layer: the input ``x`` and every parameter, under names that cannot clash
    (:func:`param_names`). The layer only ever sees the checker's copy of ``x`` and of
    ``dy``, never the caller's arrays."""

    def __init__(self, layer: Any, x: np.ndarray) -> None:
        self.layer = layer
        self.layer_name = type(layer).__name__
        self.entry = "check_layer"
        self.xw = x.copy()  # the input every call sees (never the caller's array)
        self.params: dict[str, np.ndarray] = layer.params
        self.key = {name: k for k, name in param_names(list(self.params)).items()}
        self.names = ["x", *self.key]
        self.packable = {"x"}
        self._complex_copy: dict[str, np.ndarray] = {}

    def value(self, name: str) -> np.ndarray:
        return self.xw if name == "x" else self.params[self.key[name]]

    def _forward(self, x: np.ndarray, what: str) -> np.ndarray:
        self.n_evals += 1
        label = f"{self.layer_name}.forward {what}"
        try:
            y = contract.call_layer(self.layer.forward, label, x)
        except LayerContractError as exc:
            _reraise(exc, x, *self.params.values())
        return _as_output(y, label)

    def base_forward(self) -> np.ndarray:
        return self._forward(self.xw, "on x")

    def analytic(self, dy: np.ndarray) -> tuple[dict[str, Any], list[str]]:
        what = f"{self.layer_name}.backward"
        dx = _own(contract.call_layer(self.layer.backward, what, dy))
        grads = getattr(self.layer, "grads", None)
        out: dict[str, Any] = {"x": dx}
        problems = []
        for name, k in self.key.items():
            if not isinstance(grads, dict) or k not in grads:
                problems.append(f"{what} did not fill grads[{k!r}]")
                out[name] = None
            else:
                out[name] = _own(grads[k])
        return out, problems

    def eval_replace(self, name: str, arr: np.ndarray, what: str) -> np.ndarray:
        if name == "x":
            return self._forward(arr, what)
        k = self.key[name]
        orig = self.params[k]
        if arr.dtype == orig.dtype:
            saved = orig.copy()
            np.copyto(orig, arr)
            try:
                return self._forward(self.xw, what)
            finally:
                np.copyto(orig, saved)
                self.params[k] = orig  # a forward may rebind the entry (p = p.astype(...))
        self.params[k] = arr
        try:
            return self._forward(self.xw, what)
        finally:
            self.params[k] = orig

    def eval_element(self, name: str, idx: tuple[Any, ...], v: Any, what: str) -> np.ndarray:
        base = self.value(name)
        if np.iscomplexobj(v):
            arr = self._complex_copy.get(name)
            if arr is None:
                arr = self._complex_copy[name] = base.astype(np.result_type(base, v))
            old = arr[idx]
            arr[idx] = v
            try:
                return self.eval_replace(name, arr, what)
            finally:
                arr[idx] = old
        old = base[idx]
        base[idx] = v
        try:
            return self._forward(self.xw, what)
        finally:
            base[idx] = old
            if name != "x":
                self.params[self.key[name]] = base  # a forward may rebind the entry

    def eval_packed(
        self, name: str, big: np.ndarray, copies: int, what: str, rows: slice = slice(None)
    ) -> np.ndarray:
        return self._forward(big, what)

    def _tensors(self) -> dict[str, np.ndarray]:
        return {"x": self.xw, **{name: self.params[k] for name, k in self.key.items()}}

    def watched(self) -> dict[str, np.ndarray]:
        return self._tensors()

    def working_forward(self, what: str) -> np.ndarray:
        return self._forward(self.xw, what)

    def promote(self) -> None:
        # the layer's params dict gets float64 copies (its own arrays are put back by
        # demote, and by contract.restored_params whatever happens)
        self._native = (self.xw, dict(self.params))
        self.xw = self.xw.astype(np.float64)
        for k, v in self._native[1].items():
            self.params[k] = v.astype(np.float64)
        self._complex_copy = {}
        self._promoted = {name: v.copy() for name, v in self._tensors().items()}

    def demote(self) -> list[str]:
        now = self._tensors()
        changed = [k for k, v in self._promoted.items() if not np.array_equal(now[k], v)]
        self.xw, native = self._native
        for k, v in native.items():
            self.params[k] = v
        self._complex_copy = {}
        return changed


class _VjpTarget(_Target):
    def __init__(
        self, f: Callable[..., Any], vjp: Callable[..., Any], inputs: Sequence[np.ndarray]
    ) -> None:
        self.f = f
        self.vjp = vjp
        self.layer_name = getattr(f, "__name__", type(f).__name__)
        self.entry = "check_vjp"
        self.inputs = list(inputs)
        self.work = [a.copy() for a in self.inputs]
        self.index = {f"inputs[{i}]": i for i, a in enumerate(self.inputs) if a.dtype.kind == "f"}
        self.names = list(self.index)
        self.packable: set[str] = set()
        self.batch_axis = 0
        self._complex_copy: dict[str, np.ndarray] = {}

    def value(self, name: str) -> np.ndarray:
        return self.work[self.index[name]]

    def _call(self, args: list[np.ndarray], what: str) -> np.ndarray:
        self.n_evals += 1
        label = f"{self.layer_name} {what}"
        try:
            y = contract.call_layer(self.f, label, *args)
        except LayerContractError as exc:
            _reraise(exc, *args)
        return _as_output(y, label)

    def base_forward(self) -> np.ndarray:
        return self._call(self.work, "on the inputs")

    def analytic(self, dy: np.ndarray) -> tuple[dict[str, Any], list[str]]:
        what = f"vjp of {self.layer_name}"
        gs = contract.call_layer(self.vjp, what, dy, *self.work)
        if not isinstance(gs, (tuple, list)) or len(gs) != len(self.inputs):
            n = len(gs) if isinstance(gs, (tuple, list)) else type(gs).__name__
            raise LayerContractError(
                f"{what} must return a tuple with one gradient per input "
                f"({len(self.inputs)}), got {n}"
            )
        return {name: _own(gs[i]) for name, i in self.index.items()}, []

    def _args(self, name: str, arr: np.ndarray) -> list[np.ndarray]:
        args = list(self.work)
        args[self.index[name]] = arr
        return args

    def eval_replace(self, name: str, arr: np.ndarray, what: str) -> np.ndarray:
        return self._call(self._args(name, arr), what)

    def eval_element(self, name: str, idx: tuple[Any, ...], v: Any, what: str) -> np.ndarray:
        base = self.value(name)
        if np.iscomplexobj(v):
            arr = self._complex_copy.get(name)
            if arr is None:
                arr = self._complex_copy[name] = base.astype(np.result_type(base, v))
        else:
            arr = base
        old = arr[idx]
        arr[idx] = v
        try:
            return self._call(self._args(name, arr), what)
        finally:
            arr[idx] = old

    def eval_packed(
        self, name: str, big: np.ndarray, copies: int, what: str, rows: slice = slice(None)
    ) -> np.ndarray:
        ba = self.batch_axis
        n = self.value(name).shape[ba]
        args = []
        for k, a in enumerate(self.work):
            if k == self.index[name]:
                args.append(big)
            elif a.ndim > ba and a.shape[ba] == n:
                part = a[(slice(None),) * ba + (rows,)]  # the same samples as big's
                args.append(np.concatenate([part] * copies, axis=ba))
            else:
                args.append(a)
        return self._call(args, what)

    def watched(self) -> dict[str, np.ndarray]:
        return {f"inputs[{i}]": a for i, a in enumerate(self.work)}

    def working_forward(self, what: str) -> np.ndarray:
        return self._call(self.work, what)

    def promote(self) -> None:
        self._native_work = self.work
        self.work = [a.astype(np.float64) if a.dtype.kind == "f" else a for a in self._native_work]
        self._complex_copy = {}
        self._promoted = [a.copy() for a in self.work]

    def demote(self) -> list[str]:
        changed = [
            f"inputs[{i}]"
            for i, (a, b) in enumerate(zip(self.work, self._promoted, strict=True))
            if not np.array_equal(a, b)
        ]
        self.work = self._native_work
        self._complex_copy = {}
        return changed


# --------------------------------------------------------------------------------------------
# the run


@dataclass
class _Ctx:
    target: _Target
    dy: np.ndarray
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
    # working memory (see _memory): the budget, and what the run holds besides its scratch
    budget: int = 0
    held: int = 0
    reports: dict[str, int] = field(default_factory=dict)  # bytes of each tensor's report


# the least scratch a numerical evaluation gets when what the run holds already fills the
# budget (a float32 layer differenced in float64 holds float64 copies of everything): an
# eighth of the budget, and at least this
_MIN_SCRATCH = 1 << 20


def _memory(
    ctx: _Ctx, watched: dict[str, np.ndarray], analytic: dict[str, np.ndarray], y: np.ndarray
) -> None:
    """Set ``ctx.budget`` (:func:`checks.engine.memory.budget` of the layer's tensors in the
    caller's dtypes) and what the run holds outside the scratch of its numerical part: the snapshot
    of the caller's arrays, the working copies (twice when promoted to float64: the probe
    keeps a copy to compare), the analytic gradients in float64, ``y``, ``dy`` and their
    float64 copies, what the layer keeps of its last forward (taken as two outputs), and
    each tensor's report arrays (three float64 and two bool arrays)."""
    tgt = ctx.target
    grads = sum(a.size * np.dtype(ctx.dtypes[n]).itemsize for n, a in analytic.items())
    layer = y.nbytes + grads + sum(v.nbytes for v in watched.values())
    ctx.budget = memory.budget(layer)
    working = sum(tgt.value(n).nbytes for n in tgt.names)
    promoted = ctx.rule.analytic_eps is not None
    ctx.held = (
        sum(v.nbytes for v in watched.values())
        + working * (2 if promoted else 1)
        + sum(a.nbytes for a in analytic.values())
        + y.nbytes + ctx.dy.nbytes + 2 * ctx.y0.nbytes
        + (ctx.y0.nbytes if ctx.y0 is not y else 0)
        + (ctx.dy64.nbytes if ctx.dy64 is not ctx.dy else 0)
    )  # fmt: skip
    ctx.reports = {n: 26 * a.size for n, a in analytic.items()}


def _scratch(ctx: _Ctx, name: str, extra: int = 0) -> int:
    """Bytes the numerical evaluation of ``name`` may hold at once besides ``extra`` (its
    result fields): the budget less what the run holds and the other tensors' reports."""
    others = sum(v for n, v in ctx.reports.items() if n != name)
    return max(_MIN_SCRATCH, ctx.budget // 8, ctx.budget - ctx.held - others - extra)


def _reduce(
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
    r = np.einsum("pkmr,mr->kpm", y - base[None, None], dy64)
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


def _check_out_shape(ctx: _Ctx, y: np.ndarray, expected: tuple[int, ...], what: str) -> None:
    if y.shape != expected:
        raise LayerContractError(
            f"{ctx.target.layer_name} output shape changed under perturbation: {what} gave "
            f"{y.shape}, expected {expected}"
        )


def _complex_value(t: np.ndarray, h: np.ndarray, rule: tolerances.DtypeRule) -> np.ndarray:
    return t.astype(rule.complex_dtype) + 1j * h.astype(rule.complex_dtype)


_MIN_GROUPED = 8
# per-call overhead of a small forward, in input elements pushed through it (~30 us)
_CALL_OVERHEAD = 1000.0


def _grouped(
    ctx: _Ctx,
    name: str,
    run: grouping.RunFn,
    tf: np.ndarray,
    shape: tuple[int, ...],
    cols: np.ndarray,
    kind: str,
    dym: np.ndarray,
    out: dict[str, np.ndarray],
    how: str,
    copy_cost: float,
    max_elements: int = _CHUNK_ELEMENTS,
    where: np.ndarray | None = None,
) -> np.ndarray:
    """Evaluate ``cols`` in groups with disjoint footprints where a trial allows; fill ``out``
    (shape (M, S), or (M, S') at the columns ``where`` of the positions) and return the
    positions left for one-by-one evaluation. ``copy_cost``: input elements one copy pushes
    through forward (plus call overhead); ``max_elements``: outputs held at once (a grouping
    whose copies of one sample exceed it is not tried)."""
    if cols.size < _MIN_GROUPED:
        return cols
    r_out = dym.shape[1]
    key = ctx.groupings.get(f"{name}/{kind}")
    if key is None:
        key = ""
        if how == "lattice" and len(shape) >= 1:
            p = grouping.try_periods(
                run, tf, tuple(shape), ctx.rule, max(shape[-2:]), kind, copy_cost,
                max_elements, r_out,
            )  # fmt: skip
            key = f"lattice period {p}" if p else ""
        elif (
            how == "axis0"
            and len(shape) >= 1
            and grouping.worth_grouping(shape[0], kind, copy_cost)
            and grouping.copies(shape[0], kind) * r_out <= max_elements
        ):
            trial = grouping.axis0_groups(shape)[0]
            overlap = grouping.trial_overlaps(
                run, tf, trial, ctx.rule, max_elements, r_out, positions_differ=False
            )
            key = "" if overlap else "grouped along axis 0"
        ctx.groupings[f"{name}/{kind}"] = key
    if not key:
        return cols
    if key.startswith("lattice"):
        groups = grouping.lattice_groups(tuple(shape), int(key.rsplit(" ", 1)[1]))
    else:
        groups = grouping.axis0_groups(tuple(shape))
    wanted = np.zeros(tf.shape[1], dtype=bool)
    wanted[cols] = True
    groups = [g[wanted[g]] for g in groups]
    groups = [g for g in groups if g.size]
    _, failed = grouping.evaluate_groups(
        run, tf, groups, kind, ctx.rule, dym, ctx.ybar, max_elements, ctx.dy_random,
        out=out, where=where,
        positions_differ=how == "lattice",  # packed copies of x: other batch positions
    )  # fmt: skip
    done = np.zeros(tf.shape[1], dtype=bool)
    for g in groups:
        done[g] = True
    done[failed] = False
    return np.flatnonzero(wanted & ~done)


# memory (see checks.engine.memory): bytes per output element of a copy kept for decoding a group
# (its float64 output -- a group has one complex copy at most -- and, when a group's copies
# take several packed calls, their baselines); float64 rows of temporaries (per sample) of
# decoding a group and of a one-by-one reduction (_reduce)
_KEPT_BYTES = {"real": 8, "complex": 10}
_DECODE_ROWS = 10
_REDUCE_ROWS = 6
# full-shape float64 arrays _check_tensor holds while _refine evaluates its candidates
_JUDGE_ARRAYS = 14
_COMPLEX_FIELDS = ("value", "error", "magnitude")


class _Chunks:
    """How a tensor's packed (or one-by-one) evaluations are cut to the scratch.

    ``call``: bytes a forward call takes per copy of one sample (its input and two outputs,
    twice: the layer keeps its last call's until the next one ends). Packed: half the scratch
    goes to one call, half to the outputs kept for decoding; one by one (``s = 0``), a call
    is one forward and the rest is kept."""

    def __init__(self, scratch: int, s: int, r_out: int, isz: int, kind: str) -> None:
        self.scratch = scratch
        self.packed = s > 0
        self.s, self.r_out = s, r_out
        self.call = self.call_bytes(isz)
        self.kept = _KEPT_BYTES["complex" if kind == "complex" else "real"] + 8 * self.packed

    def call_bytes(self, isz: int) -> int:
        return 2 * (self.s + 2 * self.r_out) * isz

    def copies_per_call(self, isz: int | None = None) -> int:
        """Copies of one sample (baselines included) one forward call may hold (of
        ``isz``-byte elements; by default the kind's)."""
        call = self.call if isz is None else self.call_bytes(isz)
        return max(2, (self.scratch // 2) // call)

    def max_elements(self) -> int:
        """Output elements kept for decoding groups (for grouping.evaluate_groups): what the
        call and the decoding's temporaries for one sample leave."""
        room = self.scratch // 2 if self.packed else self.scratch - self.call
        return max(self.r_out, (room - 8 * _DECODE_ROWS * self.r_out) // self.kept)


def _expand(
    store: dict[str, np.ndarray], flat: np.ndarray, shape: tuple[int, ...]
) -> dict[str, np.ndarray]:
    """Full-shape fields from ``store[f]`` (1-D, the elements at the flat indices ``flat``):
    NaN elsewhere, and a read-only NaN view for the fields the method does not produce."""
    out = {}
    for f in _FD_FIELDS:
        v = store.pop(f, None)
        if v is None:
            out[f] = np.broadcast_to(np.float64(np.nan), shape)
            continue
        full = np.full(math.prod(shape), np.nan)
        full[flat] = v
        out[f] = full.reshape(shape)
    return out


def _fd_packed(
    ctx: _Ctx, name: str, mask: np.ndarray, kind: str, compact: bool = False
) -> dict[str, np.ndarray]:
    """Numerical derivatives of the masked elements of a packable tensor, many per call.

    The fields are kept for the evaluated positions only; forward calls and the outputs kept
    for decoding groups are cut to :func:`_scratch`, along the copies and, when one copy of
    the whole batch does not fit, along the samples (which the batching probe showed to be
    independent). ``compact``: the fields of the masked elements only, 1-D in their C order.
    """
    tgt, ba = ctx.target, ctx.batch_axis
    x = tgt.value(name)
    xb = np.moveaxis(x, ba, 0)
    n = xb.shape[0]
    xf = np.ascontiguousarray(xb).reshape(n, -1)
    s = xf.shape[1]
    mb = np.moveaxis(mask, ba, 0).reshape(n, s)
    cols = np.flatnonzero(mb.any(axis=0))
    stencil = finite_diff.COMPLEX_STENCIL if kind == "complex" else finite_diff.REAL_STENCIL
    k = len(stencil)
    yb_shape = list(ctx.y_shape)
    r_out = math.prod(ctx.y_shape) // n
    y0m = np.moveaxis(ctx.y0, ba, 0).reshape(n, -1)
    dym = np.moveaxis(ctx.dy64, ba, 0).reshape(n, -1)
    fields = _COMPLEX_FIELDS if kind == "complex" else _FD_FIELDS
    out = {f: np.full((n, cols.size), np.nan) for f in fields}
    where = np.full(s, -1, dtype=np.intp)
    where[cols] = np.arange(cols.size)
    held = 8 * n * cols.size * len(fields) + (8 * _JUDGE_ARRAYS * x.size if compact else 0)
    isz = np.dtype(ctx.rule.complex_dtype if kind == "complex" else x.dtype).itemsize
    chunks = _Chunks(_scratch(ctx, name, held), s, r_out, isz, kind)
    splits: dict[tuple[int, int, int, int], tuple[int, int]] = {}

    def split(m: int, units: int, copies: int, cpc: int) -> tuple[int, int]:
        """Samples and units (specs, or positions of ``copies`` copies each) per packed
        call: a baseline and the copies of ``m_call`` samples within ``cpc`` copies of one
        sample, and within the element budget of a call; the fewest calls, then the most
        samples per call."""
        key = (m, units, copies, cpc)
        if key not in splits:
            best = (math.inf, 1, 1)
            for m_call in range(min(m, max(1, cpc // (1 + copies))), 0, -1):
                cap = min(
                    _CHUNK_ELEMENTS // max(1, m_call * r_out), _CHUNK_ELEMENTS // (m_call * s)
                )
                per = max(1, min(cap // copies, (cpc // m_call - 1) // copies))
                calls = -(-m // m_call) * -(-units // per)
                if calls < best[0]:
                    best = (calls, m_call, per)
            splits[key] = best[1:]
        return splits[key]

    # one by one: every copy with its reduction
    per_cs = chunks.call + _REDUCE_ROWS * r_out * (16 if kind == "complex" else 8)
    max_cs = max(1 + k, chunks.scratch // per_cs)

    largest = [0]  # bytes of the largest packed input

    def run(
        specs: Sequence[grouping.Spec], cplx: bool, rows: slice = slice(None)
    ) -> tuple[np.ndarray, np.ndarray]:
        dtype = np.dtype(ctx.rule.complex_dtype) if cplx else x.dtype
        r0, r1, _ = rows.indices(n)
        m = r1 - r0
        c_all = len(specs)
        m_call, per_call = split(m, c_all, 1, chunks.copies_per_call(dtype.itemsize))
        ys = np.empty((c_all, m, r_out), dtype=np.complex128 if cplx else np.float64)
        # one call per slice of samples: every copy's baseline is the same row, kept once
        one_call = c_all <= per_call
        bases = np.empty((m, r_out) if one_call else (c_all, m, r_out))
        for j0 in range(0, m, m_call):
            ms = min(m_call, m - j0)
            sub = slice(r0 + j0, r0 + j0 + ms)
            for c0 in range(0, c_all, per_call):
                chunk = specs[c0 : c0 + per_call]
                big = np.empty((1 + len(chunk), ms, s), dtype=dtype)
                big[:] = xf[sub][None]
                for i, (pos_i, vals_i) in enumerate(chunk):
                    big[1 + i][:, pos_i] = vals_i[sub]
                copies = big.shape[0]
                xin = np.moveaxis(big.reshape((copies * ms, *xb.shape[1:])), 0, ba)
                what = f"on {copies} packed copies of {name} (grouped positions)"
                ybig = tgt.eval_packed(name, xin, copies, what, sub)
                largest[0] = max(largest[0], big.nbytes)
                del big, xin
                yb_shape[ba] = copies * ms
                _check_out_shape(ctx, ybig, tuple(yb_shape), what)
                y = batching.unpack_outputs(ybig, copies, ba)
                ys[c0 : c0 + len(chunk), j0 : j0 + ms] = y[1:]
                if one_call:
                    bases[j0 : j0 + ms] = y[0].real
                else:
                    bases[c0 : c0 + len(chunk), j0 : j0 + ms] = y[0].real
                del ybig, y
        if one_call:
            return np.broadcast_to(bases, ys.shape), ys
        return bases, ys

    cols = _grouped(ctx, name, run, xf, xb.shape[1:], cols, kind, dym, out, "lattice", xf.size,
                    chunks.max_elements(), where)  # fmt: skip
    m_sub, per_pos = split(n, cols.size, k, max_cs)
    for start in range(0, cols.size, per_pos):
        pos = cols[start : start + per_pos]
        p = pos.size
        for m0 in range(0, n, m_sub):
            rows = slice(m0, min(n, m0 + m_sub))
            m = rows.stop - m0
            t = xf[rows, pos]
            if kind == "complex":
                h = finite_diff.step_sizes(t, ctx.rule.h_complex)
                vals = _complex_value(t, h, ctx.rule)[None]
                dtype = np.dtype(ctx.rule.complex_dtype)
            else:
                h = finite_diff.step_sizes(t, ctx.rule.h_central)
                vals, taken = finite_diff.perturbed_values(t, h, stencil)
                dtype = x.dtype
            big = batching.pack_copies(xf[rows], pos, vals, dtype)
            copies = big.shape[0]
            xin = np.moveaxis(big.reshape((copies * m, *xb.shape[1:])), 0, ba)
            what = f"on {copies} packed copies of {name} ({p} positions)"
            ybig = tgt.eval_packed(name, xin, copies, what, rows)
            largest[0] = max(largest[0], big.nbytes)
            del big, xin
            yb_shape[ba] = copies * m
            _check_out_shape(ctx, ybig, tuple(yb_shape), what)
            y = batching.unpack_outputs(ybig, copies, ba)
            if kind == "complex":
                im, ab, ore = _reduce(
                    y[1:].reshape(p, 1, m, -1), y0m[rows], dym[rows], ctx.ybar, ctx.rule.eps,
                    kind, ctx.dy_random,
                )  # fmt: skip
                fd = finite_diff.combine_complex(
                    im.T, ab.T, h, ctx.rule.eps, ore.T, t, forward_eps=ctx.rule.analytic_eps
                )
            else:
                base = y[0].astype(np.float64)
                r, mag, noise, typ = _reduce(
                    y[1:].reshape(p, k, m, -1), base, dym[rows], ctx.ybar, ctx.rule.eps, kind,
                    ctx.dy_random,
                    finite_diff.forward_resolution(ctx.rule.h_central, ctx.rule.analytic_eps),
                )  # fmt: skip
                fd = finite_diff.combine_real(
                    r.transpose(0, 2, 1), taken, mag.transpose(0, 2, 1),
                    noise.transpose(0, 2, 1), method=kind, typical_num=typ.transpose(0, 2, 1),
                )  # fmt: skip
            del ybig, y
            for f in fields:
                v = getattr(fd, f)
                if v is not None:
                    out[f][rows, where[pos]] = v
    # a layer keeps its last input and outputs (a cache for backward) until its next call:
    # when that would not fit beside the judgement's arrays, one forward on the tensor itself
    kept = largest[0] * (s + 2 * r_out) // max(1, s)
    if kept > _scratch(ctx, name, 8 * _JUDGE_ARRAYS * x.size):
        tgt.working_forward(f"on the unperturbed {name} (so that it drops packed copies)")
    cols = np.flatnonzero(where >= 0)
    if compact:  # the masked elements, ordered by their flat index in x's own layout
        sel = mb[:, cols]
        ii, jj = np.nonzero(sel)
        multi = list(np.unravel_index(cols[jj], xb.shape[1:]))
        multi.insert(ba, ii)
        order = np.argsort(np.ravel_multi_index(tuple(multi), x.shape), kind="stable")
        return {f: out[f][sel][order] if f in out else np.full(order.size, np.nan)
                for f in _FD_FIELDS}  # fmt: skip
    full = {}
    for f in _FD_FIELDS:
        v = out.pop(f, None)
        if v is None:  # not produced by the method: a read-only NaN view, no memory
            full[f] = np.broadcast_to(np.float64(np.nan), x.shape)
            continue
        w = np.full((n, s), np.nan)
        w[:, cols] = v
        del v
        full[f] = np.moveaxis(w.reshape(xb.shape), 0, ba)
    return full


def _fd_elements(
    ctx: _Ctx, name: str, mask: np.ndarray, kind: str, compact: bool = False
) -> dict[str, np.ndarray]:
    """Numerical derivatives of the masked elements, one forward call per stencil point
    (fields kept for the masked elements only; ``compact`` as in :func:`_fd_packed`)."""
    tgt = ctx.target
    t_all = tgt.value(name)
    stencil = finite_diff.COMPLEX_STENCIL if kind == "complex" else finite_diff.REAL_STENCIL
    k = len(stencil)
    y0 = ctx.y0.reshape(1, -1)
    dym = ctx.dy64.reshape(1, -1)
    fields = _COMPLEX_FIELDS if kind == "complex" else _FD_FIELDS
    cols = np.flatnonzero(mask.reshape(-1))
    out = {f: np.full((1, cols.size), np.nan) for f in fields}
    where = np.full(t_all.size, -1, dtype=np.intp)
    where[cols] = np.arange(cols.size)
    held = 8 * cols.size * len(fields) + (8 * _JUDGE_ARRAYS * t_all.size if compact else 0)
    osz = 16 if kind == "complex" else 8
    chunks = _Chunks(_scratch(ctx, name, held), 0, y0.shape[1], osz, kind)

    def run(
        specs: Sequence[grouping.Spec], cplx: bool, rows: slice = slice(None)
    ) -> tuple[np.ndarray, np.ndarray]:
        ys = np.empty((len(specs), 1, y0.shape[1]), dtype=np.complex128 if cplx else np.float64)
        for i, (pos_i, vals_i) in enumerate(specs):
            idx = np.unravel_index(pos_i, t_all.shape)
            what = f"while perturbing {pos_i.size} elements of {name} together"
            y = tgt.eval_element(name, idx, vals_i[0], what)
            _check_out_shape(ctx, y, ctx.y_shape, what)
            ys[i, 0] = y.reshape(-1)
        return np.broadcast_to(y0, ys.shape), ys

    call_cost = _CALL_OVERHEAD + max(tgt.value(n).size for n in tgt.names)
    cols = _grouped(ctx, name, run, t_all.reshape(1, -1), t_all.shape, cols, kind, dym,
                    out, "axis0", call_cost, chunks.max_elements(), where)  # fmt: skip
    left = np.zeros(t_all.size, dtype=bool)
    left[cols] = True
    idxs = np.argwhere(left.reshape(t_all.shape))
    left_flat = np.flatnonzero(left)  # the same elements (argwhere is in C order)
    per_group = max(1, min(_ELEMENT_GROUP, _CHUNK_ELEMENTS // max(1, k * y0.shape[1])))
    per_el = k * y0.shape[1] * osz * (1 + _REDUCE_ROWS)
    per_group = max(1, min(per_group, chunks.scratch // per_el))
    for start in range(0, len(idxs), per_group):
        group = [tuple(int(i) for i in row) for row in idxs[start : start + per_group]]
        t = np.array([t_all[i] for i in group], dtype=t_all.dtype)
        if kind == "complex":
            h = finite_diff.step_sizes(t, ctx.rule.h_complex)
            vals = _complex_value(t, h, ctx.rule)[None]
        else:
            h = finite_diff.step_sizes(t, ctx.rule.h_central)
            vals, taken = finite_diff.perturbed_values(t, h, stencil)
        ys = np.empty(
            (len(group), k, 1, y0.shape[1]),
            dtype=np.complex128 if kind == "complex" else np.float64,
        )
        for j, idx in enumerate(group):
            for q in range(k):
                what = f"while perturbing {_fmt_index(name, idx)}"
                y = tgt.eval_element(name, idx, vals[q, j], what)
                _check_out_shape(ctx, y, ctx.y_shape, what)
                ys[j, q, 0] = y.reshape(-1)
        if kind == "complex":
            im, ab, ore = _reduce(ys, y0, dym, ctx.ybar, ctx.rule.eps, kind, ctx.dy_random)
            fd = finite_diff.combine_complex(
                im[:, 0], ab[:, 0], h, ctx.rule.eps, ore[:, 0], t, forward_eps=ctx.rule.analytic_eps
            )
        else:
            res = finite_diff.forward_resolution(ctx.rule.h_central, ctx.rule.analytic_eps)
            r, mag, noise, typ = _reduce(
                ys, y0, dym, ctx.ybar, ctx.rule.eps, kind, ctx.dy_random, res
            )
            fd = finite_diff.combine_real(r[:, :, 0], taken, mag[:, :, 0], noise[:, :, 0],
                                          method=kind, typical_num=typ[:, :, 0])  # fmt: skip
        del ys
        dest = where[left_flat[start : start + per_group]]
        for f in fields:
            v = getattr(fd, f)
            if v is not None:
                out[f][0, dest] = v
    store = {f: v[0] for f, v in out.items()}
    del out
    if compact:
        return {f: store.get(f, np.full(cols.size, np.nan)) for f in _FD_FIELDS}
    return _expand(store, np.flatnonzero(where >= 0), t_all.shape)


def _fd(
    ctx: _Ctx, name: str, mask: np.ndarray, kind: str, compact: bool = False
) -> dict[str, np.ndarray]:
    if name in ctx.packed:
        out = _fd_packed(ctx, name, mask, kind, compact)
    else:
        out = _fd_elements(ctx, name, mask, kind, compact)
    if kind != "complex":
        _unresolved(ctx, name, out, mask if compact else None)
    return out


def _unresolved(
    ctx: _Ctx, name: str, out: dict[str, np.ndarray], mask: np.ndarray | None = None
) -> None:
    """Where no output moved at all, the derivative is only known to be below the outputs'
    quantum: set the error estimate to ``eps * sum_j |dy_j y_j| / h`` over every output the
    element could reach (its sample when packed, else all), since the footprint is unseen.
    ``mask``: ``out`` holds the masked elements only (``_fd``'s ``compact``)."""
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


def _directional(
    ctx: _Ctx, name: str, g: np.ndarray, v: np.ndarray, kind: str
) -> tuple[float, float, float, float]:
    """Directional derivative along ``v``: ``(analytic <g, v>, numerical, error, magnitude)``.

    For real methods the analytic prediction ``<g, step>`` of each stencil point is subtracted
    before the differences are combined, so the steps' rounding to the tensor's dtype does not
    enter the comparison.
    """
    if kind != "complex":
        fd = _directional_real(ctx, name, g, v, 1.0)
        return float(np.vdot(g, v)), float(fd["value"]), float(fd["error"]), float(fd["magnitude"])
    tgt, t, vmax, scale, what = _direction_setup(ctx, name, v)
    av = float(np.vdot(g, v))
    tau = ctx.rule.h_complex * scale / vmax
    arr = t.astype(ctx.rule.complex_dtype) + 1j * (tau * v).astype(ctx.rule.complex_dtype)
    y = tgt.eval_replace(name, arr, what)
    _check_out_shape(ctx, y, ctx.y_shape, what)
    if not np.iscomplexobj(y):
        raise TypeError("forward dropped the imaginary part")
    im = y.imag.astype(np.float64)
    num = float(np.vdot(ctx.dy64, im)) / tau
    mag = float(np.vdot(np.abs(ctx.dy64), np.abs(im))) / tau
    out = float(np.vdot(np.abs(ctx.dy64), np.where(im != 0, np.abs(y.real), 0.0)))
    f_eps = ctx.rule.eps if ctx.rule.analytic_eps is None else ctx.rule.analytic_eps
    return av, num, ctx.rule.eps * mag + f_eps * out * vmax / scale, mag


def _direction_setup(
    ctx: _Ctx, name: str, v: np.ndarray
) -> tuple[_Target, np.ndarray, float, float, str]:
    """``(target, tensor, max |v|, max(|t|, 1), label)`` for a step along ``v``."""
    t = ctx.target.value(name)
    vmax = float(np.max(np.abs(v))) or 1.0
    scale = max(1.0, float(np.max(np.abs(t))) if t.size else 1.0)
    return ctx.target, t, vmax, scale, f"along a random direction in {name}"


def _directional_real(
    ctx: _Ctx, name: str, g: np.ndarray, v: np.ndarray, step_div: float
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
        held = 8 * (10 * yst.shape[-1] + _JUDGE_ARRAYS * t.size)
        chunks = _Chunks(_scratch(ctx, name, held), t.size // n, yst.shape[-1] // n,
                         t.dtype.itemsize, "real")  # fmt: skip
        per_call = len(stencil) if chunks.copies_per_call() >= len(stencil) * n else 1
        for k0 in range(0, len(stencil), per_call):
            pts = stencil[k0 : k0 + per_call]
            big = point(pts[0]) if len(pts) == 1 else np.concatenate([point(s) for s in pts], ba)
            ybig = tgt.eval_packed(name, big, len(pts), what)
            del big
            yb_shape = list(ctx.y_shape)
            yb_shape[ba] *= len(pts)
            _check_out_shape(ctx, ybig, tuple(yb_shape), what)
            for i, part in enumerate(np.split(ybig, len(pts), ba)):
                yst[0, k0 + i, 0] = np.moveaxis(part, ba, 0).reshape(-1)
            del ybig
        y0 = np.moveaxis(ctx.y0, ba, 0).reshape(1, -1)
        dy0 = np.moveaxis(ctx.dy64, ba, 0).reshape(1, -1)
    else:
        for k, s in enumerate(stencil):
            y = tgt.eval_replace(name, point(s), what)
            _check_out_shape(ctx, y, ctx.y_shape, what)
            yst[0, k, 0] = y.reshape(-1)
            del y
        y0 = ctx.y0.reshape(1, -1)
        dy0 = ctx.dy64.reshape(1, -1)
    # the forward resolution of a promoted run, per unit of the tensor's scale (as the
    # complex path's f_eps * out * vmax / scale): the width here is 2 s tau = 2 s h scale / vmax
    res = finite_diff.forward_resolution(ctx.rule.h_central / step_div, ctx.rule.analytic_eps)
    r, mags, noise, typ = _reduce(yst, y0, dy0, ctx.ybar, ctx.rule.eps, "real", ctx.dy_random, res)
    # the analytic prediction of each point is subtracted, so the steps' rounding to the
    # tensor's dtype does not enter the comparison
    resid = r[:, 0, 0] - np.array(rs)
    taken = np.array(finite_diff.REAL_STENCIL) * tau
    fd = finite_diff.combine_real(resid, taken, mags[:, 0, 0], noise[:, 0, 0],
                                  method="richardson", typical_num=typ[:, 0, 0])  # fmt: skip
    out = {f: np.asarray(getattr(fd, f), dtype=np.float64) for f in _FD_FIELDS}
    for f in ("value", "left", "right", "left2", "right2", "central", "central2"):
        out[f] = out[f] + av
    return out


def _complex_ok(ctx: _Ctx, name: str, g: np.ndarray) -> tuple[bool, str]:
    """Probe: does the complex step agree with real differences along a random direction?"""
    if g.size == 0:  # nothing to probe, nothing to fall back from (see _check_tensor)
        return True, ""
    v = ctx.rng.standard_normal(g.shape)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", np.exceptions.ComplexWarning)
            _, nc, ec, mc = _directional(ctx, name, g, v, "complex")
    except Exception as exc:
        if not _complex_refused(exc):
            raise  # the layer failed, not on account of the complex values
        # the name only: a local holding the cause would keep its traceback's frames (and
        # their complex copies of the tensors) alive in a reference cycle until gc runs
        why = type(exc.__cause__ if exc.__cause__ is not None else exc).__name__
        return False, f"complex step unusable ({why})"
    if not math.isfinite(nc):
        return False, "complex step unusable (non-finite)"
    _, nr, er, mr = _directional(ctx, name, g, v, "real")
    tol, _ = tolerances.tolerance(np.array(nr), np.array(er + ec), np.array(max(mr, mc)), ctx.rule)
    if abs(nc - nr) <= float(tol):
        return True, "complex step (probe agreed with Richardson)"
    return False, "complex step disagreed with real differences on a probe"


def _complex_refused(exc: BaseException) -> bool:
    """Whether a failure on the complex-step path is the complex values' doing, so that real
    differences may take over: the layer refusing a complex-valued call
    (:data:`checks.engine.contract.REFUSALS`), or the checker finding the outputs of one unusable
    (shape, dropped imaginary part). Anything else the layer raises -- and whatever it raises
    on a real-valued call, such as the grouping trials' -- is a contract error, as anywhere."""
    if isinstance(exc, LayerContractError) and exc.__cause__ is not None:  # the layer raised
        return isinstance(exc, _ComplexCallError) and contract.refused(exc)
    return True


def _judge(
    ctx: _Ctx, name: str, a: np.ndarray, fd: dict[str, np.ndarray], mask: np.ndarray
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


def _refine(
    ctx: _Ctx,
    name: str,
    a: np.ndarray,
    fd: dict[str, np.ndarray],
    sel: np.ndarray,
    bad: np.ndarray,
    real: str,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Re-evaluate suspect elements with smaller steps; keep the coarsest value whose stencil
    is smooth and that agrees with the finer smooth ones.

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
        levels.append(_fd(sub, name, cand, real, compact=True))
    every = np.ones(int(cand.sum()), dtype=bool)
    chosen_c, kink_c, _, _ = _choose_step(ctx, a[cand], levels, every, floor)
    chosen = dict(fd)  # the arrays of fd, the candidates overwritten
    for f, v in chosen_c.items():
        chosen[f][cand] = v
    kink_ok = np.zeros(cand.shape, dtype=bool)
    kink_ok[cand] = kink_c
    return chosen, kink_ok, cand


def _choose_step(
    ctx: _Ctx, a: np.ndarray, levels: list[dict[str, np.ndarray]], cand: np.ndarray, floor: float
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """The core of :func:`_refine`: pick each candidate's step from ``levels`` (results at
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


def _check_tensor(
    ctx: _Ctx,
    name: str,
    a: np.ndarray,
    mask: np.ndarray,
    n_proj: int,
    kind: str,
    method_note: str,
) -> TensorReport:
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
    real = "richardson" if kind in ("complex", "richardson") else "central"
    fallback_note = ""
    fd = None
    if kind == "complex":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", np.exceptions.ComplexWarning)
                fd = _fd(ctx, name, mask, "complex")
        except (GradcheckError, np.exceptions.ComplexWarning, TypeError, ValueError) as exc:
            if not _complex_refused(exc):
                raise
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            fallback_note = f"; complex step failed mid-check ({type(cause).__name__}), {real} used"
            kind = real
    if fd is None:
        fd = _fd(ctx, name, mask, kind)
    tol, bad, text = _judge(ctx, name, a, fd, mask)
    kink_mask = np.zeros(t.shape, dtype=bool)
    refined = np.zeros(t.shape, dtype=bool)
    reexam = 0
    if kind == "complex" and bad.any():
        # a complex-step mismatch is re-examined with real differences and the kink test.
        # Where Richardson agrees with the complex value (within Richardson's own error), the
        # complex step is trusted and its sharper verdict stands; where they disagree, the
        # complex step is not valid at that element (a kink: ReLU at 0, max ties; a
        # comparison) and the real verdict, with the subgradient test, decides.
        sel = bad.copy()
        fr = _fd(ctx, name, sel, real)
        sel = sel & np.isfinite(fr["value"])
        reexam = int(sel.sum())
        tol2, bad2, _ = _judge(ctx, name, a, fr, sel)
        with np.errstate(invalid="ignore"):
            agree = sel & (np.abs(fd["value"] - fr["value"]) <= tol2)
        use_real = sel & ~agree
        _, acc = kinks.judge_kinks(_as_fd(fr), a, tol2, ctx.rule.safety)
        fr, kink_ok, refined = _refine(ctx, name, a, fr, use_real, bad2, real)
        for f in fd:
            fd[f] = np.where(use_real, fr[f], fd[f])
        tol2, bad2, _ = _judge(ctx, name, a, fr, use_real)
        tol = np.where(use_real, tol2, tol)
        kink_mask = use_real & np.where(refined, kink_ok, acc)
        bad = np.where(use_real, bad2 & ~kink_mask, bad)
    elif kind != "complex":
        _, acc = kinks.judge_kinks(_as_fd(fd), a, tol, ctx.rule.safety)
        fd, kink_ok, refined = _refine(ctx, name, a, fd, mask, bad, kind)
        tol, bad, _ = _judge(ctx, name, a, fd, mask)
        kink_mask = bad & np.where(refined, kink_ok, acc)
        bad = bad & ~kink_mask
    num = np.where(mask, fd["value"], np.nan)
    err_est = np.where(mask, fd["error"], np.nan)
    tol = np.where(mask, tol, np.nan)
    nonfin_num = mask & ~np.isfinite(num)
    rule_text = text + (f"; {reexam} complex-step mismatches re-examined with {real}"
                        if reexam else "") + fallback_note  # fmt: skip
    if refined.any():
        steps = ", ".join(f"h/{s:g}" for s in _REFINE_SCALES)
        rule_text += f"; {int(refined.sum())} suspect elements re-evaluated at {steps}"

    tr = TensorReport(
        name=name, shape=tuple(t.shape), dtype=ctx.dtypes.get(name, str(t.dtype)),
        n_total=int(t.size),
        n_checked=int(mask.sum()), atol=ctx.atol, rtol=ctx.rtol,
        tolerance_rule=rule_text, analytic=a, numerical=num, error_estimate=err_est, tol=tol,
        checked=mask.copy(), method=kind if not reexam else f"{kind}+{real}",
    )  # fmt: skip
    tr.kinks = [tuple(int(i) for i in row) for row in np.argwhere(kink_mask)]
    tr.nonfinite["numerical"] = [tuple(int(i) for i in r) for r in np.argwhere(nonfin_num)]
    tr.mismatch = bad | nonfin_num
    tr.tied = _tied_sets(ctx, name, a, fd, kink_mask, real)
    del fd  # memory: the projections do not need the fields (ten arrays the tensor's size)
    # projections (the unchecked rest of the tensor)
    proj_kinks = 0
    for _ in range(n_proj):
        v = ctx.rng.standard_normal(t.shape)
        av, nv, ptol, at_kink = _projection(ctx, name, a, v, kind)
        tr.projections.append((av, nv, ptol))
        proj_kinks += at_kink
    if proj_kinks:
        tr.tolerance_rule += (
            f"; {proj_kinks} projection(s) crossed kinks at every step: tolerance spans the "
            "slopes on either side"
        )
    proj_bad = sum(1 for av, nv, pt in tr.projections if not abs(av - nv) <= pt)
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


def _tied_sets(
    ctx: _Ctx,
    name: str,
    a: np.ndarray,
    fd: dict[str, np.ndarray],
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
        sel = tuple(members.T)
        v = np.zeros(t.shape)
        v[sel] = 1.0
        joint = _directional_real(ctx, name, a, v, 1.0)
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


def _projection(
    ctx: _Ctx, name: str, a: np.ndarray, v: np.ndarray, kind: str
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
        av, nv, ev, mv = _directional(ctx, name, a, v, "complex")
        ptol, _ = tolerances.tolerance(
            np.array(nv), np.array(ev), np.array(mv), ctx.rule, rtol=ctx.rtol, atol=ctx.atol
        )
        return av, nv, float(ptol), False
    av = float(np.vdot(a, v))
    fd = _directional_real(ctx, name, a, v, 1.0)
    floor = float(fd["magnitude"])
    ptol, _ = tolerances.tolerance(
        fd["value"], fd["error"], fd["magnitude"], ctx.rule, rtol=ctx.rtol, atol=ctx.atol
    )
    with np.errstate(invalid="ignore"):
        suspect = not abs(av - float(fd["value"])) <= float(ptol) or bool(_truncation_dominated(fd))
    if not suspect:
        return av, float(fd["value"]), float(ptol), False
    levels = [fd] + [_directional_real(ctx, name, a, v, s) for s in _REFINE_SCALES]
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


def _reads_nothing(tr: TensorReport) -> bool:
    """No output moved for any checked element or projection (every numerical value exactly
    0) while the analytic gradient is not 0 there: forward does not read this tensor."""
    num = tr.numerical[tr.checked]
    proj = [nv for _, nv, _ in tr.projections]
    if num.size == 0 and not proj:
        return False
    moved = bool(np.any(num != 0)) or any(nv != 0 for nv in proj)
    said = bool(np.any(tr.analytic[tr.checked] != 0)) or any(av != 0 for av, _, _ in tr.projections)
    return not moved and said


def _as_fd(d: dict[str, np.ndarray]) -> FDResult:
    return FDResult(**d)


def _summarise(tr: TensorReport) -> None:
    a, n = tr.analytic, tr.numerical
    ok = tr.checked & np.isfinite(n) & np.isfinite(a)
    for idx in tr.kinks:
        ok[idx] = False
    tr.n_mismatched = int(tr.mismatch.sum())
    if not ok.any():
        return
    err = np.where(ok, np.abs(a - n), 0.0)
    denom = np.maximum(np.abs(a), np.abs(n))
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(ok & (denom > 0), err / denom, 0.0)
        ratio = np.where(ok, err / tr.tol, -1.0)
    ratio = np.where(np.isnan(ratio), np.inf, ratio)
    tr.max_abs_err = float(err.max())
    tr.max_rel_err = float(rel.max())
    est = np.nan_to_num(np.abs(tr.error_estimate), nan=0.0, posinf=0.0)
    bad = tr.mismatch & ok
    if bad.any():
        first = order_with_ties(err, est, np.flatnonzero(bad))[0]
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            est_ratio = np.nan_to_num(est / tr.tol, nan=0.0, posinf=0.0)
        first = order_with_ties(ratio, est_ratio, np.flatnonzero(ok))[0]
    tr.worst_index = tuple(int(i) for i in np.unravel_index(int(first), a.shape))


def _repeat_problem(
    target: _Target,
    dy: np.ndarray,
    first: dict[str, np.ndarray],
    before: dict[str, np.ndarray],
    watched: dict[str, np.ndarray],
    eps: float,
) -> str:
    """Run backward once more (forward just ran on the same x) with a copy of the same ``dy``:
    a gradient that differs is accumulated across calls (``+=`` without a reset), which one
    backward cannot show. Returns the problem text, or ``""``."""
    dy_in = dy.copy()
    grads, problems = target.analytic(dy_in)
    changed = contract.mutated(before, watched)
    if not np.array_equal(dy_in, dy, equal_nan=True):
        changed.append("dy")
    if changed:
        return (
            f"the layer mutated {', '.join(changed)} during a second forward/backward "
            "(inputs, parameters and dy must be left unchanged)"
        )
    if problems:
        return "; ".join(problems)
    for name, g1 in first.items():
        g2 = grads[name]
        if contract.check_gradient_array(name, g2, g1, target.layer_name):
            return f"a second backward returned another kind of gradient for {name}"
        g2 = np.asarray(g2, dtype=np.float64)
        tol = 16 * eps * (np.abs(g1) + (float(np.mean(np.abs(g1))) if g1.size else 0.0))
        off = ~(np.abs(g2 - g1) <= tol)
        if not off.any():
            continue
        idx = tuple(int(i) for i in np.argwhere(off)[0])
        big = np.abs(g1) > 0.1 * float(np.max(np.abs(g1)))
        ratio = float(np.median(g2[big] / g1[big])) if big.any() else float("nan")
        cause = (
            " -- gradients accumulated across calls (+= without a reset)? Reset them in "
            "backward, or wrap the layer in checks.adapters.LayerAdapter(..., accumulates=True)"
            if abs(ratio - 2.0) < 0.01
            else ""
        )
        return (
            f"backward is not repeatable: a second forward and backward with the same x and dy "
            f"gave another gradient of {name} ({int(off.sum())} of {g1.size} elements differ, "
            f"first at {_fmt_index(name, idx)}: {g1[idx]:.6g} then {g2[idx]:.6g}; median "
            f"ratio {ratio:.3g}){cause}"
        )
    return ""


def _validate_common(
    method: str, coverage_: str, seed: Any, rtol: Any, atol: Any, precision: Any = "auto"
) -> tuple[float | None, float | None]:
    """Check the shared arguments; return ``(rtol, atol)`` as Python floats (or ``None``)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if coverage_ not in coverage.COVERAGES:
        raise ValueError(f"coverage must be one of {coverage.COVERAGES}, got {coverage_!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if seed < 0:  # numpy.random.default_rng would say only "expected non-negative integer"
        raise ValueError(f"seed must be >= 0, got {seed!r}")
    tols: list[float | None] = []
    for nm, v in (("rtol", rtol), ("atol", atol)):
        if v is None:
            tols.append(None)
            continue
        # numpy scalars (np.float32(1e-3), np.int64(0)) are real numbers too; bools are not
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
            raise TypeError(f"{nm} must be a float or None, got {v!r}")
        f = float(v)  # a Python float from here on: the report prints and serialises it
        if not (math.isfinite(f) and f >= 0):
            raise ValueError(f"{nm} must be finite and >= 0, got {v!r}")
        tols.append(f)
    return tols[0], tols[1]


def _validate_array(name: str, a: Any) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy ndarray, got {type(a).__name__}")
    if a.dtype.kind != "f":
        raise TypeError(
            f"{name} must have a real floating dtype, got {a.dtype} (the checker never casts)"
        )
    if a.dtype not in tolerances.DTYPE_TABLE:
        raise TypeError(f"{name} has dtype {a.dtype}, which has no tolerance rule")
    return a


def _require_elements(name: str, a: np.ndarray) -> None:
    """An input with no element leaves nothing to differentiate (and an empty batch is most
    often a slicing mistake): say so, rather than pass vacuously or fail inside the packing.
    (A zero-size *parameter* is part of a layer's configuration: it is reported as having
    nothing to check, see :func:`_check_tensor`.)"""
    if a.size == 0:
        raise ValueError(
            f"{name} has zero size (shape {a.shape}): there is nothing to check; "
            "pass an input with at least one element"
        )


def _run(
    target: _Target,
    *,
    dy: Any,
    method: str,
    coverage_: str,
    rtol: float | None,
    atol: float | None,
    seed: int,
    batch_axis: int,
    precision: str = "auto",
) -> Report:
    t_start = time.perf_counter()
    rng = np.random.default_rng(seed)
    report = Report(
        method=method, coverage=coverage_, seed=int(seed), layer_name=target.layer_name,
        requested_method=method, requested_coverage=coverage_, entry=target.entry,
        requested_precision=precision,
    )  # fmt: skip

    def fail(exc_type: type[GradcheckError], problem: str) -> GradcheckError:
        report.problems.append(problem)
        report.ok = False
        report.elapsed = time.perf_counter() - t_start
        report.n_evals = target.n_evals
        from checks.report.messages import format_report

        return exc_type(format_report(report), report)

    watched = target.watched()
    before = contract.snapshot(watched)
    # -- analytic pass ---------------------------------------------------------------------
    try:
        y = target.base_forward()
    except LayerContractError as exc:
        raise fail(LayerContractError, str(exc)) from exc.__cause__
    y = y.copy()
    if y.dtype.kind != "f":
        raise fail(LayerContractError, f"forward returned dtype {y.dtype}; expected real float")
    if not np.isfinite(y).all():
        idx = contract.nonfinite_indices(y)
        where = contract.format_indices("y", idx, int((~np.isfinite(y)).sum()))
        raise fail(LayerContractError, f"forward output has NaN/Inf at {where}")
    dy_random = dy is None
    if dy_random:
        dy = np.asarray(rng.standard_normal(y.shape), dtype=y.dtype)
    else:
        if not isinstance(dy, np.ndarray) or dy.dtype.kind != "f":
            raise TypeError(
                f"dy must be a real floating ndarray, got {type(dy).__name__}"
                f"{'' if not isinstance(dy, np.ndarray) else ' of ' + str(dy.dtype)}"
            )
        if dy.shape != y.shape:
            raise ValueError(f"dy has shape {dy.shape}, forward output has shape {y.shape}")
        if not np.isfinite(dy).all():
            raise ValueError("dy contains NaN/Inf")
    dy_in = dy.copy()  # the layer's; the caller's dy is never handed out
    try:
        grads, problems = target.analytic(dy_in)
    except LayerContractError as exc:
        raise fail(LayerContractError, str(exc)) from exc.__cause__
    if problems:
        raise fail(LayerContractError, "; ".join(problems))
    changed = contract.mutated(before, watched)
    if not np.array_equal(dy_in, dy, equal_nan=True):
        changed.append("dy")
    if changed:
        raise fail(
            LayerContractError,
            f"the layer mutated {', '.join(changed)} during "
            "forward/backward (inputs, parameters and dy must be left unchanged)",
        )
    analytic: dict[str, np.ndarray] = {}
    for name in target.names:
        ref = target.value(name)
        p = contract.check_gradient_array(name, grads[name], ref, target.layer_name)
        if p:
            raise fail(LayerContractError, p)
        analytic[name] = np.array(grads[name], dtype=np.float64, copy=True)
    rule = tolerances.rule_for(y.dtype, *(target.value(n).dtype for n in target.names))
    # -- determinism ---------------------------------------------------------------------
    try:
        y2 = target.base_forward()
    except LayerContractError as exc:
        raise fail(LayerContractError, str(exc)) from exc.__cause__
    if y2.shape != y.shape or not np.allclose(y2, y, rtol=16 * rule.eps, atol=0.0):
        raise fail(
            LayerContractError,
            "forward is not deterministic: two calls on the same x "
            "and parameters gave different outputs (reseed any RNG inside the layer)",
        )
    # -- analytic NaN/Inf is its own case -----------------------------------------------------
    for name in target.names:
        a = analytic[name]
        if not np.isfinite(a).all():
            tr = TensorReport(name=name, shape=a.shape, dtype=str(target.value(name).dtype),
                              n_total=a.size, analytic=a, ok=False)  # fmt: skip
            tr.nonfinite["analytic"] = contract.nonfinite_indices(a)
            report.tensors.append(tr)
            where = contract.format_indices(name, tr.nonfinite["analytic"],
                                            int((~np.isfinite(a)).sum()))  # fmt: skip
            raise fail(LayerContractError, f"analytic gradient has NaN/Inf at {where}")
    # -- a second backward after the determinism forward: the same gradients ----------------
    try:
        problem = _repeat_problem(target, dy, analytic, before, watched, rule.eps)
    except LayerContractError as exc:
        raise fail(LayerContractError, str(exc)) from exc.__cause__
    if problem:
        raise fail(LayerContractError, problem)
    dtypes = {n: str(target.value(n).dtype) for n in target.names}
    # -- precision: a float32 layer's finite differences in float64 when forward allows ----
    y_num = y.astype(np.float64, copy=False)  # no second copy of a float64 output
    least = max((np.dtype(d) for d in (*dtypes.values(), y.dtype)), key=lambda d: np.finfo(d).eps)
    report.precision = f"native {least}"
    if precision == "auto" and rule.eps > tolerances.DTYPE_TABLE[np.dtype(np.float64)].eps:
        # its own generator: falling back must leave the run identical to precision="native"
        probe_rng = np.random.default_rng([int(seed), 0x70726F6265])
        try:
            y_p, why = precision_probe.probe(target, y, probe_rng, rule)
        except LayerContractError as exc:  # the layer raised in the probe (not a refusal)
            raise fail(LayerContractError, str(exc)) from exc.__cause__
        if y_p is not None:
            y_num, rule = y_p, tolerances.promoted(rule)
            report.precision = f"float64 ({why})"
        else:
            report.precision += f" ({why})"
    del y2, dy_in, grads  # memory: needed only by the contract checks above
    ctx = _Ctx(
        target=target, dy=dy, dy64=dy.astype(np.float64, copy=False), dy_random=dy_random,
        y0=y_num, y_shape=y.shape,
        ybar=float(np.mean(np.abs(y_num))) if y.size else 0.0, rule=rule,
        rng=rng, batch_axis=batch_axis, rtol=rtol, atol=atol, dtypes=dtypes,
    )  # fmt: skip
    _memory(ctx, watched, analytic, y)
    try:
        # -- batching ------------------------------------------------------------------------
        notes = []
        for name in target.names:
            if name in target.packable and target.value(name).ndim > batch_axis:
                n_batch = target.value(name).shape[batch_axis]

                def call(arr: np.ndarray, nm: str = name, nb: int = n_batch) -> np.ndarray:
                    copies = arr.shape[batch_axis] // max(nb, 1)
                    return target.eval_packed(nm, arr, copies, "in the independence probe")

                ok, why = batching.probe_independence(
                    call, target.value(name), y_num, batch_axis, rng, rule.eps
                )
                if ok:
                    ctx.packed.add(name)
                notes.append(f"{name}: {why}")
        report.batching = "; ".join(notes) if notes else "one call per probe (no batch input)"
        # -- method per tensor -----------------------------------------------------------------
        kinds: dict[str, str] = {}
        method_notes: dict[str, str] = {}
        for name in target.names:
            if method in ("auto", "complex"):
                ok, why = _complex_ok(ctx, name, analytic[name])
                kinds[name] = "complex" if ok else "richardson"
                method_notes[name] = "" if ok else why + "; richardson used"
            else:
                kinds[name] = method
                method_notes[name] = ""
        # -- coverage ------------------------------------------------------------------------
        costs = []
        res = {}
        xsize = max(1, target.value(target.names[0]).size) if target.names else 1
        for name in target.names:
            t = target.value(name)
            k = 1 if kinds[name] == "complex" else len(finite_diff.REAL_STENCIL)
            if name in ctx.packed:
                n = t.shape[batch_axis]
                cols = t.size // max(n, 1)
                work = k * cols * t.size
                calls = math.ceil(work / _CHUNK_ELEMENTS)
                group: int | None = batch_axis
            else:
                work = k * t.size * xsize
                calls = k * t.size
                group = None
            costs.append(coverage.TensorCost(name, tuple(t.shape), group, work, calls))
            res[name] = rule.safety * (rule.eps if kinds[name] == "complex"
                                       else rule.eps / rule.h_central)  # fmt: skip
        plan = coverage.plan_coverage(coverage_, costs, res, rng)
        report.coverage = plan.coverage
        # -- numerical -----------------------------------------------------------------------
        for name in target.names:
            tr = _check_tensor(ctx, name, analytic[name], plan.masks[name],
                               plan.projections[name], kinds[name], method_notes[name])  # fmt: skip
            report.tensors.append(tr)
            report.kinks.extend((name, i) for i in tr.kinks)
            if not tr.ok and isinstance(target, _LayerTarget) and _reads_nothing(tr):
                key = target.key.get(name)
                if key is not None:
                    raise LayerContractError(
                        f"forward does not read params[{key!r}]: perturbing it moved no output "
                        "while backward's gradient of it is non-zero. params must hold the very "
                        "arrays forward uses (not copies, and not arrays forward reads under "
                        "another name)"
                    )
    except LayerContractError as exc:
        raise fail(LayerContractError, str(exc)) from exc.__cause__
    finally:
        report.n_evals = target.n_evals
        mutated_promoted = target.demote() if rule.analytic_eps is not None else []
    grouped = sorted({f"{k.split('/')[0]}: {v}" for k, v in ctx.groupings.items() if v})
    if grouped:
        report.batching += "; disjoint-footprint groups: " + ", ".join(grouped)
    used = sorted({t.method for t in report.tensors})
    report.method = used[0] if len(used) == 1 else (
        "mixed(" + ", ".join(f"{t.name}={t.method}" for t in report.tensors) + ")")  # fmt: skip
    changed = contract.mutated(before, watched) + mutated_promoted
    if changed:
        raise fail(
            LayerContractError,
            f"the layer mutated {', '.join(changed)} during the numerical evaluation",
        )
    for tr in report.tensors:
        if tr.nonfinite["numerical"]:
            where = contract.format_indices(tr.name, tr.nonfinite["numerical"][:10],
                                            len(tr.nonfinite["numerical"]))  # fmt: skip
            report.problems.append(
                f"numerical gradient is NaN/Inf at {where}: forward produced non-finite "
                "values when these elements were perturbed"
            )
    report.elapsed = time.perf_counter() - t_start
    report.n_evals = target.n_evals
    report.ok = all(t.ok for t in report.tensors) and not report.problems
    if not report.ok:
        from checks.report.messages import format_report

        exc_type = LayerContractError if report.problems else GradientMismatchError
        raise exc_type(format_report(report), report)
    return report


def run_layer(
    layer: Any,
    x: Any,
    *,
    dy: Any,
    method: str,
    coverage_: str,
    rtol: float | None,
    atol: float | None,
    seed: int,
    batch_axis: int,
    precision: str = "auto",
) -> Report:
    """Check ``layer`` at ``x`` (see :func:`checks.check_layer`)."""
    for attr in ("forward", "backward"):
        if not callable(getattr(layer, attr, None)):
            raise TypeError(f"layer must have a callable .{attr}; {type(layer).__name__} has not")
    params = getattr(layer, "params", None)
    if not isinstance(params, dict):
        raise TypeError(f"layer.params must be a dict of arrays, got {type(params).__name__}")
    for k, v in params.items():
        _validate_array(f"layer.params[{k!r}]", v)
        if not v.flags.writeable:  # else numpy's "assignment destination is read-only"
            raise ValueError(
                f"layer.params[{k!r}] is read-only (flags.writeable is False); the checker "
                "perturbs parameters in place and restores them: pass writeable arrays"
            )
    _validate_array("x", x)
    _require_elements("x", x)
    rtol, atol = _validate_common(method, coverage_, seed, rtol, atol, precision)
    ba = _batch_axis(batch_axis, x.ndim)
    with contract.restored_params(params):
        return _run(_LayerTarget(layer, x), dy=dy, method=method, coverage_=coverage_,
                    rtol=rtol, atol=atol, seed=seed, batch_axis=ba,
                    precision=precision)  # fmt: skip


def _batch_axis(batch_axis: Any, ndim: int) -> int:
    if isinstance(batch_axis, bool) or not isinstance(batch_axis, (int, np.integer)):
        raise TypeError(f"batch_axis must be an int, got {batch_axis!r}")
    if ndim == 0:
        return 0
    if not -ndim <= batch_axis < ndim:
        raise ValueError(f"batch_axis={batch_axis} is out of range for an input with {ndim} dims")
    return int(batch_axis) % ndim


def run_vjp(
    f: Callable[..., Any],
    vjp: Callable[..., Any],
    inputs: Sequence[Any],
    *,
    dy: Any,
    method: str,
    coverage_: str,
    rtol: float | None,
    atol: float | None,
    seed: int,
    batch_axis: int,
    precision: str = "auto",
) -> Report:
    """Check ``vjp`` against ``f`` (see :func:`checks.check_vjp`)."""
    if not callable(f) or not callable(vjp):
        raise TypeError("f and vjp must be callables")
    if not inputs:
        raise ValueError("check_vjp needs at least one input")
    arrays = []
    for i, a in enumerate(inputs):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"inputs[{i}] must be a numpy ndarray, got {type(a).__name__}")
        if a.dtype.kind == "f":
            _validate_array(f"inputs[{i}]", a)
            _require_elements(f"inputs[{i}]", a)
        arrays.append(a)
    if not any(a.dtype.kind == "f" for a in arrays):
        raise TypeError("check_vjp needs at least one real floating input")
    rtol, atol = _validate_common(method, coverage_, seed, rtol, atol, precision)
    target = _VjpTarget(f, vjp, arrays)
    first = next(a for a in arrays if a.dtype.kind == "f")
    ba = _batch_axis(batch_axis, first.ndim)
    target.batch_axis = ba
    batched = [n for n in target.names if target.value(n).ndim > ba]
    sizes = {target.value(n).shape[ba] for n in batched}
    if len(sizes) == 1:
        target.packable = set(batched)
    return _run(target, dy=dy, method=method, coverage_=coverage_, rtol=rtol, atol=atol,
                seed=seed, batch_axis=ba, precision=precision)  # fmt: skip
