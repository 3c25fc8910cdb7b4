"""The JAX front door: the checker for ``jax.custom_vjp`` functions and any JAX function.

``check_function(f, *args)`` checks the gradients of ``f`` with respect to every floating-point
array in its arguments (pytrees included: ``params['w']``), the analytic side from ``jax.vjp``
(so a ``custom_vjp``'s ``bwd`` is what is checked) against the engine's finite differences of
``f`` evaluated in JAX. ``order=2`` checks the backward pass itself: its vector-Jacobian product
(from ``jax.vjp`` of ``jax.vjp``) against finite differences of the backward.

It returns the :class:`~checks.Report` of :func:`checks.check_vjp` and raises its errors, with
the arrays named from ``f``'s signature (``inputs[i]`` where it has none). Every floating
output is checked, each with its own random cotangent; integer outputs are skipped and the
report's notes say so. float32 arguments are checked as float32 (differenced in float64 when
the precision probe allows, ``precision="auto"``), never cast; float64 arguments are evaluated
in float64 even when ``jax_enable_x64`` is off (:mod:`checks.doors.jax_eval`).

JAX is an optional dependency (the ``jax`` extra); importing this module does not need it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from checks.doors.api import check_vjp
from checks.doors.jax_eval import FlatFunction, jax_module, x64_available, x64_for
from checks.doors.naming import rename_report, signature_names
from checks.report.data import Report
from checks.report.errors import GradcheckError
from checks.report.messages import format_report

__all__ = ["check_function"]

_CHECKABLE = ("float16", "float32", "float64")


@dataclass
class _Args:
    """``f``'s positional arguments as leaves: which are checked, under which names, and how
    to rebuild the arguments from the checked ones."""

    leaves: list[Any]
    trees: list[Any]  # one treedef per argument
    counts: list[int]  # leaves per argument
    checked: list[int] = field(default_factory=list)  # indices into leaves
    names: list[str] = field(default_factory=list)  # one per checked leaf

    def rebuild(self, arrays: Sequence[Any]) -> list[Any]:
        jax = jax_module()
        leaves = list(self.leaves)
        for i, a in zip(self.checked, arrays, strict=True):
            leaves[i] = a
        out, start = [], 0
        for tree, n in zip(self.trees, self.counts, strict=True):
            out.append(jax.tree_util.tree_unflatten(tree, leaves[start : start + n]))
            start += n
        return out


def _argnums(argnums: Any, n: int) -> set[int] | None:
    if argnums is None:
        return None
    items = [argnums] if isinstance(argnums, (int, np.integer)) else argnums
    try:
        nums = [operator.index(a) for a in items]
    except TypeError:
        raise TypeError(f"argnums must be an int or a sequence of ints, got {argnums!r}") from None
    bad = [a for a in nums if not -n <= a < n]
    if bad or not nums:
        raise ValueError(f"argnums={argnums!r} is out of range for {n} positional arguments")
    return {a % n for a in nums}


def _floating(leaf: Any) -> bool:
    jax = jax_module()
    if not isinstance(leaf, (np.ndarray, jax.Array)):
        return False
    return bool(jax.numpy.issubdtype(leaf.dtype, jax.numpy.floating))


def _select(f: Callable[..., Any], args: Sequence[Any], argnums: Any) -> _Args:
    """The leaves of ``args`` and which of them are checked (see :func:`check_function`)."""
    jax = jax_module()
    wanted = _argnums(argnums, len(args))
    arg_names = signature_names(f, len(args))
    sel = _Args([], [], [])
    for i, arg in enumerate(args):
        pairs, tree = jax.tree_util.tree_flatten_with_path(arg)
        sel.trees.append(tree)
        sel.counts.append(len(pairs))
        found = False
        for path, leaf in pairs:
            if _floating(leaf) and (wanted is None or i in wanted):
                name = arg_names[i] + jax.tree_util.keystr(path)
                if str(leaf.dtype) not in _CHECKABLE:
                    raise TypeError(
                        f"{name} has dtype {leaf.dtype}, which the checker has no tolerance "
                        f"rule for ({', '.join(_CHECKABLE)}); leave it out with argnums="
                    )
                if leaf.dtype == np.float64 and not x64_available():
                    raise TypeError(
                        f"{name} is float64, but jax_enable_x64 is off and this JAX has no "
                        "enable_x64 context manager to evaluate it in float64: set "
                        "jax_enable_x64, or pass float32"
                    )
                sel.checked.append(len(sel.leaves))
                sel.names.append(name)
                found = True
            sel.leaves.append(leaf)
        if wanted is not None and i in wanted and not found:
            raise ValueError(
                f"argnums selects argument {i} ({arg_names[i]}), which holds no floating-point "
                f"array (got {type(arg).__name__})"
            )
    if not sel.checked:
        raise ValueError(
            "check_function needs at least one floating-point array argument (numpy or JAX); "
            f"got {[type(a).__name__ for a in args]}"
        )
    return sel


def _name(f: Callable[..., Any]) -> str:
    name = getattr(f, "__name__", None)
    return name if isinstance(name, str) and name else type(f).__name__


def _command(fname: str, options: dict[str, Any], order: int) -> str:
    shown = {k: options.get(k, d) for k, d in
             (("seed", 0), ("method", "auto"), ("coverage", "auto"))}  # fmt: skip
    extra = "".join(f", {k}={options[k]!r}" for k in ("precision", "batch_axis") if k in options)
    extra += ", order=2" if order == 2 else ""
    args = ", ".join(f"{k}={v!r}" for k, v in shown.items())
    return f"checks.jax.check_function({fname}, ..., {args}{extra})"


def _notes(flat: FlatFunction, what: str) -> list[str]:
    notes = [
        f"output {k} of {what} ({flat.out_dtypes[k]}, shape {flat.out_shapes[k]}) is not "
        "checked: it is not floating-point, so it has no gradient"
        for k in range(len(flat.out_dtypes))
        if k not in flat.kept
    ]
    if flat.eager_reason:
        notes.append(f"{what} evaluated op by op: it cannot be compiled ({flat.eager_reason})")
    return notes


def _batch_first(flat: FlatFunction, arrays: list[np.ndarray], batch_axis: Any) -> list[int]:
    """The order the engine gets the arrays in. It takes its first input for the one that
    carries the batch; for ``apply(params, x)`` that is ``x``, the first array whose size
    along ``batch_axis`` is the (single) output's: it goes first, the others keep their
    order."""
    same = list(range(len(arrays)))
    if len(flat.kept) != 1 or isinstance(batch_axis, bool) or not isinstance(batch_axis, int):
        return same
    shape = flat.out_shapes[flat.kept[0]]
    if not 0 <= batch_axis < len(shape):
        return same
    n = shape[batch_axis]
    carriers = [i for i, a in enumerate(arrays) if a.ndim > batch_axis and a.shape[batch_axis] == n]
    if not carriers or carriers[0] == 0:
        return same
    return [carriers[0], *(i for i in same if i != carriers[0])]


def _run(
    flat: FlatFunction,
    arrays: list[np.ndarray],
    names: list[str],
    options: dict[str, Any],
    finish: Callable[[Report], None],
) -> Report:
    """:func:`check_vjp` on ``flat``, its report renamed, in the arguments' order and
    finished by ``finish`` (the command line, the notes) on success and failure alike."""
    if not flat.kept:
        raise ValueError(
            f"{flat.__name__} has no floating-point output to check (outputs: "
            f"{[str(d) for d in flat.out_dtypes]})"
        )
    perm = _batch_first(flat, arrays, options.get("batch_axis", 0))
    where = {i: k for k, i in enumerate(perm)}  # argument i is the engine's input where[i]

    def ours(a: tuple[np.ndarray, ...]) -> list[np.ndarray]:
        return [a[where[i]] for i in range(len(a))]

    def forward(*a: np.ndarray) -> np.ndarray:
        return flat.forward(*ours(a))

    def vjp(dy: np.ndarray, *a: np.ndarray) -> tuple[np.ndarray, ...]:
        grads = flat.vjp(dy, *ours(a))
        return tuple(grads[i] for i in perm)

    forward.__name__ = flat.__name__
    rename = {f"inputs[{k}]": names[i] for k, i in enumerate(perm)}

    def tidy(report: Report) -> None:
        rename_report(report, rename)
        report.tensors.sort(key=lambda t: names.index(t.name) if t.name in names else len(names))
        finish(report)

    try:
        report = check_vjp(forward, vjp, *(arrays[i] for i in perm), **options)
    except GradcheckError as err:
        if err.report is None:
            raise
        tidy(err.report)
        raise type(err)(format_report(err.report), err.report) from err.__cause__
    tidy(report)
    return report


def check_function(
    f: Callable[..., Any],
    *args: Any,
    argnums: int | Sequence[int] | None = None,
    order: int = 1,
    jit: bool = True,
    **options: Any,
) -> Report:
    """Check the gradients of a JAX function ``f`` with respect to its floating-point arrays.

    Parameters
    ----------
    f : callable
        A JAX function: a ``jax.custom_vjp`` (its ``bwd`` is what is checked), or any function
        of arrays and pytrees of arrays returning an array or a pytree of arrays. Keyword
        arguments of ``f``: bind them first (``functools.partial``).
    *args
        Its positional arguments. Every floating-point array leaf (numpy or JAX; float16,
        float32 or float64) is checked; everything else (integer arrays, Python numbers,
        strings) is passed as it is.
    argnums : int or sequence of int, optional
        As in ``jax.grad``, the positional arguments to check (all of their floating leaves);
        the others are held constant. Default: every argument.
    order : {1, 2}
        ``2`` checks the backward pass instead of ``f``: ``g(*arrays, dy) = vjp_f(dy)`` (the
        gradients of every checked array), whose analytic side is ``jax.vjp`` of it, against
        finite differences of ``g``; ``dy`` is the seeded cotangent of ``f`` (or ``dy=``). A
        backward JAX cannot differentiate (``jax.pure_callback``, numpy inside ``bwd``) fails
        with a ``LayerContractError`` that says so; one that stops gradients it needs
        (``jax.lax.stop_gradient``) fails as a mismatch of the arrays it mistreats, with a
        note when the backward applies ``stop_gradient``.
    jit : bool
        Let calls be compiled with ``jax.jit`` (default): the forward calls of one shape and
        dtype run op by op for their first 32, then compiled (the checker's calls come in a
        few heavy shapes and a tail of one-off ones); the vjp is compiled too. What cannot be
        traced (numpy on values) is evaluated op by op, with a note in the report when it is
        ``f``. ``False`` never compiles.
    **options
        As for :func:`checks.check_vjp` (``method``, ``coverage``, ``rtol``, ``atol``, ``seed``,
        ``precision``, ``batch_axis``; ``dy`` in the output's shape, or one flat array over
        every floating output when there are several).

    Returns
    -------
    Report
        Arrays named after ``f``'s parameters and pytree paths (``x``, ``params['w']``;
        ``inputs[i]`` past the signature); at ``order=2`` also ``dy`` (``dy[k]`` for output
        ``k`` of several).

    Raises
    ------
    GradientMismatchError, LayerContractError
        As :func:`checks.check_vjp`, with the same names.
    TypeError, ValueError
        On bad arguments, naming them.

    Notes
    -----
    Complex step: used when the engine's probe shows ``f`` carries complex values; a call
    with complex values that JAX refuses counts as "not available" (real differences then).

    Examples
    --------
    >>> import jax, jax.numpy as jnp, numpy as np          # doctest: +SKIP
    >>> from checks.jax import check_function              # doctest: +SKIP
    >>> check_function(jnp.tanh, np.linspace(-1, 1, 5)).ok  # doctest: +SKIP
    True
    """
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    sel = _select(f, args, argnums)
    jax = jax_module()
    arrays = [np.array(sel.leaves[i]) for i in sel.checked]  # host copies

    def flat_f(*a: Any) -> tuple[Any, ...]:
        # arrays, also where f returns a Python or numpy number
        return tuple(jax.numpy.asarray(o) for o in jax.tree_util.tree_leaves(f(*sel.rebuild(a))))

    fname = _name(f)
    flat = FlatFunction(flat_f, fname, arrays, jit=jit)
    if order == 2:
        return _second_order(flat, arrays, sel.names, options, jit)

    def finish(report: Report) -> None:
        report.command = _command(fname, options, order)
        report.notes.extend(_notes(flat, fname))

    return _run(flat, arrays, sel.names, options, finish)


def _dy_point(flat: FlatFunction, dy: Any, seed: Any) -> list[np.ndarray]:
    """The cotangents of ``f``'s floating outputs at which its backward is differentiated:
    the caller's ``dy`` (split as :meth:`FlatFunction.cotangents` does) or a seeded draw."""
    if dy is None:
        rng = np.random.default_rng([int(seed), 2])
        return [rng.standard_normal(flat.out_shapes[k]).astype(flat.out_dtypes[k])
                for k in flat.kept]  # fmt: skip
    total = sum(int(np.prod(flat.out_shapes[k], dtype=np.int64)) for k in flat.kept)
    if not isinstance(dy, np.ndarray) or dy.size != total:
        raise ValueError(
            f"dy must be an ndarray with {total} elements (f's floating outputs), got "
            f"{getattr(dy, 'shape', type(dy).__name__)}"
        )
    cts = flat.cotangents(dy)
    return [np.array(cts[k]) for k in flat.kept]


def _second_order(
    flat: FlatFunction,
    arrays: list[np.ndarray],
    names: list[str],
    options: dict[str, Any],
    jit: bool,
) -> Report:
    """``order=2``: check ``g(*arrays, *dys) = vjp_f(dys)`` through the same door."""
    jax = jax_module()
    options = dict(options)
    dys = _dy_point(flat, options.pop("dy", None), options.get("seed", 0))
    n = len(arrays)

    def g(*a: Any) -> tuple[Any, ...]:
        _, pull = jax.vjp(flat.fn, *a[:n])
        return tuple(pull(flat.assemble(a[n:])))

    fname = flat.__name__
    dy_names = ["dy"] if len(flat.kept) == 1 else [f"dy[{k}]" for k in flat.kept]
    inner = FlatFunction(g, f"backward of {fname}", [*arrays, *dys], jit=jit,
                         backward_of=fname)  # fmt: skip

    def finish(report: Report) -> None:
        report.command = _command(fname, options, 2)
        report.notes.extend(_notes(flat, fname) + _notes(inner, inner.__name__))
        if not report.ok:
            report.notes.extend(_stop_gradient_note(flat, g, arrays, dys))

    return _run(inner, [*arrays, *dys], [*names, *dy_names], options, finish)


def _count_primitive(jaxpr: Any, name: str) -> int:
    """How often primitive ``name`` occurs in ``jaxpr``, sub-jaxprs included."""
    count = 0
    for eqn in getattr(jaxpr, "eqns", ()):
        count += eqn.primitive.name == name
        for v in eqn.params.values():
            for sub in v if isinstance(v, (list, tuple)) else (v,):
                inner = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr holds a Jaxpr
                if hasattr(inner, "eqns"):
                    count += _count_primitive(inner, name)
    return count


def _stop_gradient_note(
    flat: FlatFunction, g: Callable[..., Any], arrays: list[np.ndarray], dys: list[np.ndarray]
) -> list[str]:
    """A note when the backward applies ``jax.lax.stop_gradient`` beyond what the forward
    does (the jaxpr of the vjp against that of ``f``): JAX takes its derivative as 0."""
    jax = jax_module()
    try:
        with x64_for([*arrays, *dys]):
            in_f = _count_primitive(jax.make_jaxpr(flat.fn)(*arrays).jaxpr, "stop_gradient")
            in_g = _count_primitive(jax.make_jaxpr(g)(*arrays, *dys).jaxpr, "stop_gradient")
    except Exception:  # a note must never hide the failure it explains
        return []
    if in_g <= in_f:
        return []
    return [
        f"the backward of {flat.__name__} applies jax.lax.stop_gradient ({in_g - in_f} more "
        "time(s) than its forward, in the jaxpr of its vjp): JAX takes the derivative of "
        "what it stops as 0, so a bwd that stops a value it depends on is not "
        "differentiable there -- the mismatch above"
    ]
