"""A JAX function as the engine sees it: host arrays in, one host array out, and its
vector-Jacobian product from ``jax.vjp``.

:class:`FlatFunction` wraps a function of the checked arrays that returns the tuple of its
output leaves. Forward calls go through ``jax.jit`` (compiled once per shape and dtype) unless
the function cannot be traced, in which case it is evaluated op by op from then on; the
vector-Jacobian product is taken op by op (``jax.vjp``), so a ``custom_vjp`` whose ``bwd``
uses numpy on concrete values works as it does under ``jax.grad``.

64-bit values: JAX computes in float32 unless ``jax_enable_x64`` is set. A call whose arrays
include a float64 or complex128 one runs inside ``jax.enable_x64(True)`` (in older JAX
``jax.experimental.enable_x64``), a thread-local context that leaves the user's setting as it
was; where neither exists, such a call raises ``TypeError`` -- the engine's sign for "not
this way": a float32 check then stays in float32 (its complex step in complex64); a float64
argument is refused up front by the door (:func:`x64_available`).

JAX is an optional dependency (the ``jax`` extra); it is imported on first use.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from checks.engine import contract

__all__ = ["FlatFunction", "NotDifferentiableError", "jax_module", "x64_available", "x64_for"]

_WIDE = (np.dtype(np.float64), np.dtype(np.complex128))

#: calls of one shape and dtype signature evaluated op by op before it is compiled
JIT_AFTER = 32

# what tracing raises when a function needs concrete values (Python control flow on them,
# numpy on them): the function can still be evaluated op by op
_TRACE_ERRORS = (
    "ConcretizationTypeError",
    "TracerArrayConversionError",
    "TracerBoolConversionError",
    "TracerIntegerConversionError",
    "NonConcreteBooleanIndexError",
)


class NotDifferentiableError(Exception):
    """A backward pass that JAX cannot differentiate (``order=2``)."""


def jax_module() -> Any:
    """``jax``, or an ImportError that says how to install it."""
    try:
        import jax
    except ModuleNotFoundError as exc:  # pragma: no cover - the tests skip without jax
        raise ImportError("checks.jax needs JAX: pip install 'convgrad-harness[jax]'") from exc
    return jax


def _x64_manager() -> Callable[[bool], Any] | None:
    jax = jax_module()
    manager = getattr(jax, "enable_x64", None)
    if callable(manager):
        return manager
    try:  # JAX before the top-level context manager
        return importlib.import_module("jax.experimental").enable_x64
    except (ImportError, AttributeError):
        return None


def x64_available() -> bool:
    """Whether float64 can be evaluated: ``jax_enable_x64`` is on, or a context manager can
    turn it on for a call."""
    return bool(jax_module().config.jax_enable_x64) or _x64_manager() is not None


@contextlib.contextmanager
def x64_for(arrays: Sequence[Any]) -> Iterator[None]:
    """64-bit JAX for the duration of a call on ``arrays`` when one of them is float64 or
    complex128 and ``jax_enable_x64`` is off (see the module docstring)."""
    jax = jax_module()
    wide = any(np.dtype(getattr(a, "dtype", np.float32)) in _WIDE for a in arrays)
    if not wide or jax.config.jax_enable_x64:
        yield
        return
    manager = _x64_manager()
    if manager is None:
        raise TypeError(
            "this JAX has no enable_x64 context manager and jax_enable_x64 is off: "
            "float64 and complex128 cannot be evaluated (set jax_enable_x64 to check float64)"
        )
    with manager(True):
        yield


def _is_trace_error(exc: BaseException) -> bool:
    return type(exc).__name__ in _TRACE_ERRORS or any(
        t.__name__ in _TRACE_ERRORS for t in type(exc).__mro__
    )


class FlatFunction:
    """``fn(*arrays) -> tuple of output leaves`` for the engine.

    Parameters
    ----------
    fn : callable
        A JAX function of the checked arrays returning the tuple of its output leaves.
    name : str
        What the report calls it.
    arrays : sequence of ndarray
        The checked arrays at the point of the check: one call there tells which outputs are
        checked (the floating ones) and their shapes.
    jit : bool
        Compile forward calls with ``jax.jit`` (falling back to op-by-op evaluation when the
        function cannot be traced).
    backward_of : str, optional
        Set when ``fn`` is another function's vector-Jacobian product (``order=2``): a
        ``jax.vjp`` of it that fails for want of a derivative raises
        :class:`NotDifferentiableError` naming that function.
    """

    def __init__(
        self,
        fn: Callable[..., tuple[Any, ...]],
        name: str,
        arrays: Sequence[np.ndarray],
        *,
        jit: bool = True,
        backward_of: str | None = None,
    ) -> None:
        jax = jax_module()
        self.fn, self.__name__, self.backward_of = fn, name, backward_of
        self._jitted: Any = jax.jit(fn) if jit else None
        self._calls: dict[Any, int] = {}  # calls per shapes and dtypes
        self._jitted_vjp: Any = jax.jit(self._pullback) if jit else None
        self.eager_reason = ""  # why forward is evaluated op by op after all
        # the first call, before the engine's: what f raises is the function failing, as
        # on any of the engine's calls
        outs = contract.call_layer(self._outputs, f"{name} on its arguments", arrays)
        self.out_dtypes = [np.dtype(o.dtype) for o in outs]
        self.out_shapes = [tuple(o.shape) for o in outs]
        self.kept = [k for k, d in enumerate(self.out_dtypes) if d.kind == "f"]

    def _outputs(self, arrays: Sequence[Any]) -> tuple[Any, ...]:
        with x64_for(arrays):
            if self._jitted is not None:
                key = tuple((np.shape(a), str(getattr(a, "dtype", type(a)))) for a in arrays)
                seen = self._calls[key] = self._calls.get(key, 0) + 1
                if seen > JIT_AFTER:
                    try:
                        return tuple(self._jitted(*arrays))
                    except Exception as exc:
                        if not _is_trace_error(exc):
                            raise
                        self._jitted = None
                        self.eager_reason = f"{type(exc).__name__} under jax.jit"
            return tuple(self.fn(*arrays))

    def forward(self, *arrays: np.ndarray) -> np.ndarray:
        """The floating outputs on the host: one in its own shape, several flattened and
        concatenated. A call with complex values that raises is a ``TypeError`` (the complex
        step is then not available)."""
        try:
            outs = self._outputs(arrays)
        except Exception as exc:
            if any(np.iscomplexobj(a) for a in arrays) and not isinstance(exc, TypeError):
                raise TypeError(f"complex input refused by JAX: {exc}") from exc
            raise
        kept = [np.asarray(outs[k]) for k in self.kept]
        if len(kept) == 1:  # kept in its shape, so that its batch axis can be packed
            return kept[0]
        return np.concatenate([o.reshape(-1) for o in kept])

    def cotangents(self, dy: np.ndarray) -> tuple[Any, ...]:
        """``dy`` (over the floating outputs, as :meth:`forward` returns them) split into one
        cotangent per output leaf, in its dtype (see :meth:`assemble`)."""
        flat, start, parts = dy.reshape(-1), 0, []
        for k in self.kept:
            n = int(np.prod(self.out_shapes[k], dtype=np.int64))
            part = flat[start : start + n].reshape(self.out_shapes[k])
            parts.append(part.astype(self.out_dtypes[k], copy=False))
            start += n
        return self.assemble(parts)

    def assemble(self, parts: Sequence[Any]) -> tuple[Any, ...]:
        """One cotangent per output leaf: ``parts`` for the floating outputs, in order, and
        zeros of ``float0`` (JAX's cotangent type of integers) for the others."""
        jax = jax_module()
        cts: list[Any] = [np.zeros(s, dtype=jax.dtypes.float0) for s in self.out_shapes]
        for k, part in zip(self.kept, parts, strict=True):
            cts[k] = part
        return tuple(cts)

    def _pullback(self, parts: Sequence[Any], *arrays: Any) -> tuple[Any, ...]:
        _, pull = jax_module().vjp(self.fn, *arrays)
        return tuple(pull(self.assemble(parts)))

    def vjp(self, dy: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        """``jax.vjp`` of the function at ``arrays``, pulled back from ``dy``: compiled, or op
        by op where ``bwd`` cannot be traced (numpy on concrete values, as ``jax.grad``
        allows)."""
        jax = jax_module()
        # JAX arrays, as jax.grad hands them to a bwd (numpy ones would make numpy
        # arithmetic of it, with numpy's dtype promotion)
        with x64_for(arrays):
            parts = [jax.numpy.asarray(c) for c in self.cotangents(dy) if c.dtype.kind == "f"]
            try:
                if self._jitted_vjp is not None:
                    try:
                        grads = self._jitted_vjp(parts, *arrays)
                        return tuple(np.asarray(g) for g in grads)
                    except Exception as exc:
                        if not _is_trace_error(exc):
                            raise
                        self._jitted_vjp = None
                grads = self._pullback(parts, *arrays)
            except Exception as exc:
                why = self._not_differentiable(exc)
                if why:
                    raise NotDifferentiableError(why) from exc
                raise
        return tuple(np.asarray(g) for g in grads)

    def _not_differentiable(self, exc: BaseException) -> str:
        """Why ``jax.vjp`` of a backward pass failed for want of a derivative, or ``""``."""
        if self.backward_of is None:
            return ""
        text = str(exc).split("\n", 1)[0]
        head = f"the backward of {self.backward_of} is not differentiable: "
        if "callback" in text.lower() and "jvp" in text.lower():
            return head + (
                "it calls jax.pure_callback, which JAX cannot differentiate (write bwd in "
                "jax.numpy, or give the callback its own jax.custom_jvp)"
            )
        if type(exc).__name__ == "TracerArrayConversionError" or _is_trace_error(exc):
            return head + (
                "it turns a traced value into a numpy array (numpy inside bwd), which JAX "
                f"cannot differentiate ({type(exc).__name__})"
            )
        if isinstance(exc, NotImplementedError) and "rule" in text.lower():
            return head + text
        return ""
