"""The private runner behind :func:`checks.check_layer` and :func:`checks.check_vjp`.

One pass, in order: validate the arguments; run forward and backward once for the analytic
gradients (with contract checks: mutation, shapes, dtype kinds, NaN/Inf); check determinism;
probe sample independence (batching) and complex-step safety (method) per tensor; plan the
coverage; evaluate the numerical gradients; judge every element against its own tolerance,
accepting subgradients at kinks; build the :class:`~checks.report.Report` and raise when it is
not ok. The layer's parameters are restored in ``finally`` whatever happens.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from checks.engine import (
    batching,
    contract,
    coverage,
    tolerances,
)
from checks.engine import precision as precision_probe
from checks.engine.directions import Directional, complex_ok
from checks.engine.dispatch import Dispatcher
from checks.engine.evaluation import CHUNK_ELEMENTS, Chunks, Ctx, account_memory, scratch_bytes
from checks.engine.judgement import check_tensor, reads_nothing
from checks.engine.targets import LayerTarget, Target, VjpTarget, borrowing, fmt_index
from checks.engine.tensor_groups import map_sharing, trial_groups
from checks.report import Report, TensorReport
from checks.report.errors import GradcheckError, GradientMismatchError, LayerContractError
from checks.report.messages import format_report

__all__ = ["METHODS", "run_layer", "run_vjp"]

METHODS = ("auto", "central", "richardson", "complex")

PRECISIONS = ("auto", "native")


def _repeat_problem(
    target: Target,
    dy: np.ndarray,
    first: dict[str, np.ndarray],
    before: dict[str, tuple[Any, ...]],
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
            f"first at {fmt_index(name, idx)}: {g1[idx]:.6g} then {g2[idx]:.6g}; median "
            f"ratio {ratio:.3g}){cause}"
        )
    return ""


def _validate_common(
    method: str,
    coverage_: str,
    seed: Any,
    rtol: Any,
    atol: Any,
    precision: Any = "auto",
    executor: Any = None,
) -> tuple[float | None, float | None]:
    """Check the shared arguments; return ``(rtol, atol)`` as Python floats (or ``None``)."""
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise TypeError(
            "executor must be None or a concurrent.futures.Executor (anything with "
            f"submit(fn, *args) -> Future), got {type(executor).__name__}"
        )
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
    nothing to check, see :func:`check_tensor`.)"""
    if a.size == 0:
        raise ValueError(
            f"{name} has zero size (shape {a.shape}): there is nothing to check; "
            "pass an input with at least one element"
        )


@dataclass
class _Analytic:
    """What the analytic pass found: the output, the cotangent, the gradients (float64 copies)
    and the tolerance rule of the caller's dtypes."""

    y: np.ndarray
    dy: np.ndarray
    dy_random: bool  # dy is the checker's own Gaussian draw
    grads: dict[str, np.ndarray]
    rule: tolerances.DtypeRule


def _failure(
    report: Report, target: Target, t_start: float, exc_type: type[GradcheckError], problem: str
) -> GradcheckError:
    """The exception of a check that ends with ``problem``, carrying its report."""
    report.problems.append(problem)
    report.ok = False
    report.elapsed = time.perf_counter() - t_start
    report.n_evals = target.n_evals
    return exc_type(format_report(report), report)


def _resolve_dy(dy: Any, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """The caller's ``dy`` after validation, or the checker's own Gaussian draw (``True``)."""
    if dy is None:
        return np.asarray(rng.standard_normal(y.shape), dtype=y.dtype), True
    if not isinstance(dy, np.ndarray) or dy.dtype.kind != "f":
        raise TypeError(
            f"dy must be a real floating ndarray, got {type(dy).__name__}"
            f"{'' if not isinstance(dy, np.ndarray) else ' of ' + str(dy.dtype)}"
        )
    if dy.shape != y.shape:
        raise ValueError(f"dy has shape {dy.shape}, forward output has shape {y.shape}")
    if not np.isfinite(dy).all():
        raise ValueError("dy contains NaN/Inf")
    return dy, False


def _analytic_pass(
    target: Target,
    dy: Any,
    rng: np.random.Generator,
    report: Report,
    before: dict[str, tuple[Any, ...]],
    watched: dict[str, np.ndarray],
) -> _Analytic:
    """Forward and backward once, with every contract check that needs no finite difference:
    the output's kind and finiteness, mutation, gradient shapes and kinds, determinism, NaN/Inf
    in a gradient, and a second backward that must repeat the first. Raises
    :class:`LayerContractError` with the problem (``TypeError``/``ValueError`` for a bad
    ``dy``)."""
    y = target.base_forward()
    if y.dtype.kind != "f":
        raise LayerContractError(f"forward returned dtype {y.dtype}; expected real float")
    if not np.isfinite(y).all():
        idx = contract.nonfinite_indices(y)
        where = contract.format_indices("y", idx, int((~np.isfinite(y)).sum()))
        raise LayerContractError(f"forward output has NaN/Inf at {where}")
    dy, dy_random = _resolve_dy(dy, y, rng)
    dy_in = dy.copy()  # the layer's; the caller's dy is never handed out
    grads, problems = target.analytic(dy_in)
    if problems:
        raise LayerContractError("; ".join(problems))
    changed = contract.mutated(before, watched)
    if not np.array_equal(dy_in, dy, equal_nan=True):
        changed.append("dy")
    if changed:
        raise LayerContractError(
            f"the layer mutated {', '.join(changed)} during "
            "forward/backward (inputs, parameters and dy must be left unchanged)"
        )
    analytic: dict[str, np.ndarray] = {}
    for name in target.names:
        p = contract.check_gradient_array(name, grads[name], target.value(name), target.layer_name)
        if p:
            raise LayerContractError(p)
        analytic[name] = np.array(grads[name], dtype=np.float64, copy=True)
    del grads, dy_in  # memory: needed only by the checks above
    rule = tolerances.rule_for(y.dtype, *(target.value(n).dtype for n in target.names))
    y2 = target.base_forward()
    if y2.shape != y.shape or not np.allclose(y2, y, rtol=16 * rule.eps, atol=0.0):
        raise LayerContractError(
            "forward is not deterministic: two calls on the same x "
            "and parameters gave different outputs (reseed any RNG inside the layer)"
        )
    del y2
    for name in target.names:
        a = analytic[name]
        if not np.isfinite(a).all():
            tr = TensorReport(name=name, shape=a.shape, dtype=str(target.value(name).dtype),
                              n_total=a.size, analytic=a, ok=False)  # fmt: skip
            tr.nonfinite["analytic"] = contract.nonfinite_indices(a)
            report.tensors.append(tr)
            where = contract.format_indices(name, tr.nonfinite["analytic"],
                                            int((~np.isfinite(a)).sum()))  # fmt: skip
            raise LayerContractError(f"analytic gradient has NaN/Inf at {where}")
    # a second backward after the determinism forward: the same gradients
    problem = _repeat_problem(target, dy, analytic, before, watched, rule.eps)
    if problem:
        raise LayerContractError(problem)
    return _Analytic(y, dy, dy_random, analytic, rule)


def _precision(
    target: Target, an: _Analytic, precision: str, seed: int, report: Report
) -> tuple[np.ndarray, tolerances.DtypeRule]:
    """A float32 layer's finite differences in float64 when forward allows (the target left
    promoted): the baseline output the differences start from, and the tolerance rule."""
    y, rule = an.y, an.rule
    dtypes = [target.value(n).dtype for n in target.names]
    least = max((np.dtype(d) for d in (*dtypes, y.dtype)), key=lambda d: np.finfo(d).eps)
    report.precision = f"native {least}"
    if precision == "auto" and rule.eps > tolerances.DTYPE_TABLE[np.dtype(np.float64)].eps:
        # its own generator: falling back must leave the run identical to precision="native"
        probe_rng = np.random.default_rng([int(seed), 0x70726F6265])
        y_p, why = precision_probe.probe(target, y, probe_rng, rule)
        if y_p is not None:
            report.precision = f"float64 ({why})"
            return y_p, tolerances.promoted(rule)
        report.precision += f" ({why})"
    return y.astype(np.float64, copy=False), rule  # no second copy of a float64 output


def _exact_in_float64(dy: np.ndarray) -> np.ndarray:
    """``dy`` for ``Ctx.dy64``: a float32 or float16 ``dy`` as it is (not a float64 copy as
    large as the output: each use multiplies it with, or adds it to, float64 values, so
    numpy computes in float64 from its exact values), anything else as float64."""
    if dy.dtype in (np.float32, np.float16):
        return dy
    return dy.astype(np.float64, copy=False)


def _probe_batching(ctx: Ctx, rng: np.random.Generator) -> str:
    """Which tensors may be packed along the batch axis (``ctx.packed``), and why."""
    target, batch_axis = ctx.target, ctx.batch_axis
    notes = []
    for name in target.names:
        if name in target.packable and target.value(name).ndim > batch_axis:
            n_batch = target.value(name).shape[batch_axis]

            def call(
                arr: np.ndarray,
                nm: str = name,
                nb: int = n_batch,
                borrow: bool = False,
                rows: slice = slice(None),
            ) -> np.ndarray:
                r0, r1, _ = rows.indices(nb)
                copies = arr.shape[batch_axis] // max(r1 - r0, 1)
                with borrowing(target) if borrow else contextlib.nullcontext():
                    return target.eval_packed(nm, arr, copies, "in the independence probe", rows)

            x = target.value(name)
            n = max(1, n_batch)
            # the doubled batch of the probe: as many samples as two copies of fit the scratch
            fit = Chunks(scratch_bytes(ctx, name), x.size // n, math.prod(ctx.y_shape) // n,
                         x.dtype.itemsize, "real").copies_per_call() // 2  # fmt: skip
            ok, why = batching.probe_independence(
                call, x, ctx.y0, batch_axis, rng, ctx.rule.eps, max_samples=fit
            )
            if ok:
                ctx.packed.add(name)
            notes.append(f"{name}: {why}")
    return "; ".join(notes) if notes else "one call per probe (no batch input)"


def _methods(
    ctx: Ctx, analytic: dict[str, np.ndarray], method: str
) -> tuple[dict[str, str], dict[str, str], dict[str, list[Directional]]]:
    """The finite-difference method of each tensor, a note where ``auto`` fell back, and the
    complex-step probes' directional derivatives (random projections already evaluated)."""
    kinds: dict[str, str] = {}
    notes: dict[str, str] = {}
    probes: dict[str, list[Directional]] = {}
    for name in ctx.target.names:
        if method in ("auto", "complex"):
            ok, why, probe = complex_ok(ctx, name, analytic[name])
            kinds[name] = "complex" if ok else "richardson"
            notes[name] = "" if ok else why + "; richardson used"
            probes[name] = [probe] if probe is not None else []
        else:
            kinds[name] = method
            notes[name] = ""
            probes[name] = []
    return kinds, notes, probes


def _plan(
    ctx: Ctx, kinds: dict[str, str], coverage_: str, rng: np.random.Generator
) -> coverage.CoveragePlan:
    """Which elements are checked one by one and how many projections cover the rest.

    The cost of each tensor's full check is a function of shapes (elements pushed through
    forward per copy, :func:`checks.engine.coverage.tensor_cost`) and, for ``auto`` and
    ``sampled``, of the groups of disjoint footprints a trial finds now
    (:func:`checks.engine.tensor_groups.trial_groups`; the evaluation reuses the verdict), so
    that a tensor grouping makes cheap is checked whole and a sample is drawn group by group.
    """
    target, rule = ctx.target, ctx.rule
    f_in = sum(target.value(n).size for n in target.names)
    f_out = math.prod(ctx.y_shape)
    costs = []
    res = {}
    for name in target.names:
        t = target.value(name)
        groups: list[np.ndarray] = []
        whole = False
        if coverage_ in ("auto", "sampled"):
            groups, whole = trial_groups(ctx, name, kinds[name])
        if name in ctx.packed:
            # a copy perturbs one position of every sample: the tensor and the output once,
            # in packed calls of up to CHUNK_ELEMENTS that read the other inputs once each
            elements, calls = t.size + f_out, max(t.size, f_out) / CHUNK_ELEMENTS
            per_call = coverage.CALL_OVERHEAD + f_in - t.size
            group: int | None = ctx.batch_axis
        else:  # a copy is a forward on the whole input
            elements, calls, per_call, group = f_in + f_out, 1.0, coverage.CALL_OVERHEAD, None
        shared = map_sharing(ctx, name, kinds[name]) if groups else 0
        costs.append(coverage.tensor_cost(name, tuple(t.shape), kinds[name], group, elements,
                                          calls, per_call, groups, whole, shared))  # fmt: skip
        res[name] = rule.safety * (rule.eps if kinds[name] == "complex"
                                   else rule.eps / rule.h_central)  # fmt: skip
    budget = coverage.work_budget(f_in + f_out + coverage.CALL_OVERHEAD)
    return coverage.plan_coverage(coverage_, costs, res, rng, work_budget=budget)


def _numerical(
    ctx: Ctx,
    analytic: dict[str, np.ndarray],
    method: str,
    coverage_: str,
    rng: np.random.Generator,
    report: Report,
) -> None:
    """Batching, method, coverage, then every tensor's numerical check into ``report``."""
    target = ctx.target
    report.batching = _probe_batching(ctx, rng)
    kinds, method_notes, probes = _methods(ctx, analytic, method)
    plan = _plan(ctx, kinds, coverage_, rng)
    report.coverage = plan.coverage
    for name in target.names:
        tr = check_tensor(ctx, name, analytic[name], plan.masks[name], plan.projections[name],
                          kinds[name], method_notes[name], given=probes[name])  # fmt: skip
        report.tensors.append(tr)
        report.kinks.extend((name, i) for i in tr.kinks)
        if not tr.ok and isinstance(target, LayerTarget) and reads_nothing(tr):
            key = target.key.get(name)
            if key is not None:
                raise LayerContractError(
                    f"forward does not read params[{key!r}]: perturbing it moved no output "
                    "while backward's gradient of it is non-zero. params must hold the very "
                    "arrays forward uses (not copies, and not arrays forward reads under "
                    "another name)"
                )


def _finish(report: Report, ctx: Ctx, changed: list[str], t_start: float) -> Report:
    """Summaries, the problems found after the numerical part, and the verdict."""
    target = ctx.target
    grouped = sorted({f"{k.rsplit('/', 1)[0]}: {v}" for k, v in ctx.groupings.items() if v})
    if grouped:
        report.batching += "; disjoint-footprint groups: " + ", ".join(grouped)
    used = sorted({t.method for t in report.tensors})
    report.method = used[0] if len(used) == 1 else (
        "mixed(" + ", ".join(f"{t.name}={t.method}" for t in report.tensors) + ")")  # fmt: skip
    if changed:
        raise _failure(
            report, target, t_start, LayerContractError,
            f"the layer mutated {', '.join(changed)} during the numerical evaluation",
        )  # fmt: skip
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
        exc_type = LayerContractError if report.problems else GradientMismatchError
        raise exc_type(format_report(report), report)
    return report


def _run(
    target: Target,
    *,
    dy: Any,
    method: str,
    coverage_: str,
    rtol: float | None,
    atol: float | None,
    seed: int,
    batch_axis: int,
    precision: str = "auto",
    executor: Any = None,
) -> Report:
    t_start = time.perf_counter()
    calls = Dispatcher(target, executor)  # pickles the layer now: before any forward call
    rng = np.random.default_rng(seed)
    report = Report(
        method=method, coverage=coverage_, seed=int(seed), layer_name=target.layer_name,
        requested_method=method, requested_coverage=coverage_, entry=target.entry,
        requested_precision=precision,
    )  # fmt: skip
    watched = target.watched()
    before = contract.fingerprint(watched)
    try:
        an = _analytic_pass(target, dy, rng, report, before, watched)
        dtypes = {n: str(target.value(n).dtype) for n in target.names}
        y_num, rule = _precision(target, an, precision, seed, report)
    except LayerContractError as exc:
        raise _failure(report, target, t_start, LayerContractError, str(exc)) from exc.__cause__
    ctx = Ctx(
        target=target, dy=an.dy, dy64=_exact_in_float64(an.dy),
        dy_random=an.dy_random, y0=y_num, y_shape=an.y.shape,
        ybar=float(np.mean(np.abs(y_num))) if an.y.size else 0.0, rule=rule,
        rng=rng, batch_axis=batch_axis, rtol=rtol, atol=atol, dtypes=dtypes, calls=calls,
    )  # fmt: skip
    account_memory(ctx, watched, an.grads, an.y)
    ctx.held += calls.payload_bytes()  # in flight with the first tasks on an executor
    try:
        _numerical(ctx, an.grads, method, coverage_, rng, report)
    except LayerContractError as exc:
        raise _failure(report, target, t_start, LayerContractError, str(exc)) from exc.__cause__
    finally:
        report.n_evals = target.n_evals
        mutated_promoted = target.demote() if rule.analytic_eps is not None else []
    changed = contract.mutated(before, watched) + mutated_promoted
    changed += [n for n in calls.mutated if n not in changed]  # seen by an executor's workers
    return _finish(report, ctx, changed, t_start)


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
    executor: Any = None,
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
    rtol, atol = _validate_common(method, coverage_, seed, rtol, atol, precision, executor)
    ba = _batch_axis(batch_axis, x.ndim)
    with contract.restored_params(params):
        return _run(LayerTarget(layer, x), dy=dy, method=method, coverage_=coverage_,
                    rtol=rtol, atol=atol, seed=seed, batch_axis=ba,
                    precision=precision, executor=executor)  # fmt: skip


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
    executor: Any = None,
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
    rtol, atol = _validate_common(method, coverage_, seed, rtol, atol, precision, executor)
    target = VjpTarget(f, vjp, arrays)
    first = next(a for a in arrays if a.dtype.kind == "f")
    ba = _batch_axis(batch_axis, first.ndim)
    target.batch_axis = ba
    batched = [n for n in target.names if target.value(n).ndim > ba]
    sizes = {target.value(n).shape[ba] for n in batched}
    if len(sizes) == 1:
        target.packable = set(batched)
    elif batched and batched[0] == target.names[0]:
        # f(x, w, b) with w and b of other sizes along the axis than x: x alone carries the
        # batch (w and b are passed unchanged to packed copies of x); any other input of x's
        # size would be ambiguous (a batch, or a weight of that size?) and packs nothing
        n0 = target.value(batched[0]).shape[ba]
        if [n for n in batched if target.value(n).shape[ba] == n0] == batched[:1]:
            target.packable = {batched[0]}
    return _run(target, dy=dy, method=method, coverage_=coverage_, rtol=rtol, atol=atol,
                seed=seed, batch_axis=ba, precision=precision, executor=executor)  # fmt: skip
