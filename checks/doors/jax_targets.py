"""JAX targets at the command line: ``python -m checks layer file.py:make``, where ``make``
returns ``(f, args)``.

A JAX function is checked at the arguments it is given, so the target is the function and its
arguments together: the pair ``(f, args)`` that ``jax.test_util.check_grads(f, args, order)``
takes, ``args`` the tuple of ``f``'s positional arguments (arrays, pytrees of arrays, integer
labels, ...). :func:`checks.jax.check_function` checks it, as ``check_function(f, *args)``:
every floating-point array leaf, ``order=2`` its backward pass.

:func:`is_jax_target` and :func:`pair_problem` look at the shape of what a factory returned
without importing JAX; :class:`JaxTarget` (which needs JAX) is what the command checks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

__all__ = ["ACCEPTED", "JaxTarget", "JaxTargetError", "is_jax_target", "pair_problem"]

#: what the command line accepts as a JAX target, in its error messages
ACCEPTED = "a JAX target (f, args): a function and the tuple of its positional arguments"

#: options of ``python -m checks layer`` that a JAX target cannot take, and why
REFUSED = {
    "--input": "the arguments are the factory's (f, args); give it the data through --arg",
    "--input-shape": "the arguments are the factory's (f, args); size them through --arg",
    "--workers": "f and the checker's JAX wrappers around it (closures, compiled functions) "
    "do not go to worker processes; run without --workers",
}


class JaxTargetError(ValueError):
    """A JAX target the command cannot check as given (the command line: exit 2)."""


def is_jax_target(obj: Any) -> bool:
    """Whether ``obj`` is a pair ``(f, args)``: a callable and a tuple (or list) of its
    positional arguments (JAX is not imported)."""
    return (
        isinstance(obj, tuple)
        and len(obj) == 2
        and callable(obj[0])
        and isinstance(obj[1], (tuple, list))
    )


def pair_problem(obj: Any) -> str:
    """What keeps a 2-tuple from being a JAX target ``(f, args)``; ``""`` for anything else."""
    if not isinstance(obj, tuple) or len(obj) != 2 or is_jax_target(obj):
        return ""
    f, args = obj
    if not callable(f):
        return f"its first item, f, is not callable (got {type(f).__name__})"
    return (
        f"its second item, args, must be the tuple of f's positional arguments, got "
        f"{type(args).__name__} (for a function of one array: (f, (x,)))"
    )


def _name(f: Any) -> str:
    name = getattr(f, "__name__", None)
    return name if isinstance(name, str) and name else type(f).__name__


class JaxTarget:
    """A JAX function and its arguments, as the command line checks them.

    Parameters
    ----------
    f : callable
        The JAX function (a ``jax.custom_vjp``, or any function JAX can differentiate).
    args : tuple or list
        Its positional arguments.

    Raises
    ------
    JaxTargetError
        When JAX is not installed.
    """

    def __init__(self, f: Callable[..., Any], args: tuple[Any, ...] | list[Any]) -> None:
        from checks.doors.jax_eval import jax_module

        try:
            self._jax = jax_module()
        except ImportError as exc:
            raise JaxTargetError(
                f"a JAX target (f, args) is checked with checks.jax.check_function: {exc}"
            ) from exc
        self.f, self.args = f, tuple(args)
        self.__name__ = _name(f)

    def validate(self, given: Mapping[str, Any]) -> None:
        """Raise :class:`JaxTargetError` naming the first option of ``given`` (flag ->
        value, ``None`` when not given) that a JAX target cannot take, or saying that its
        arguments hold nothing to check."""
        for flag, value in given.items():
            if value is not None and flag in REFUSED:
                raise JaxTargetError(
                    f"{flag} does not apply to a JAX target ({self.__name__}, args): "
                    f"{REFUSED[flag]}"
                )
        if not self.leaves():
            raise JaxTargetError(
                f"the arguments of {self.__name__} hold no floating-point array (numpy or JAX) "
                f"to check: got {[type(a).__name__ for a in self.args]}"
            )

    def _floating(self, leaf: Any) -> bool:  # as the door decides (bfloat16 included)
        jnp = self._jax.numpy
        return isinstance(leaf, (np.ndarray, self._jax.Array)) and bool(
            jnp.issubdtype(leaf.dtype, jnp.floating)
        )

    def leaves(self) -> list[Any]:
        """The floating-point array leaves of the arguments (what is checked)."""
        leaves = self._jax.tree_util.tree_leaves(self.args)
        return [leaf for leaf in leaves if self._floating(leaf)]

    def cast(self, dtype: str) -> None:
        """``--dtype``: every floating-point array leaf as a numpy array of ``dtype`` (the
        door evaluates float64 in 64-bit JAX, whatever ``jax_enable_x64`` says)."""

        def cast(leaf: Any) -> Any:
            return np.asarray(leaf).astype(dtype) if self._floating(leaf) else leaf

        self.args = tuple(self._jax.tree_util.tree_map(cast, list(self.args)))

    def describe(self) -> str:
        """The checked arrays' shapes and dtypes, for the progress line."""
        return ", ".join(f"{tuple(a.shape)} {a.dtype}" for a in self.leaves()) or "no arrays"

    def tensor_bytes(self) -> int:
        """The checked arrays and their gradients, and ``f``'s outputs (from
        ``jax.eval_shape``; left out when ``f`` cannot be traced), in bytes."""
        from checks.doors.jax_eval import x64_for

        leaves = self.leaves()
        held = 2 * sum(int(np.dtype(a.dtype).itemsize) * int(np.size(a)) for a in leaves)
        try:
            with x64_for(leaves):
                outs = self._jax.tree_util.tree_leaves(self._jax.eval_shape(self.f, *self.args))
        except Exception:  # numpy inside f: its outputs are known after the first call
            return held
        return held + sum(int(np.dtype(o.dtype).itemsize) * int(np.prod(o.shape)) for o in outs)

    def check(self, order: int = 1, **options: Any) -> Any:
        """:func:`checks.jax.check_function` of ``f`` at ``args`` (``options`` as for it)."""
        from checks.doors.jax_front import check_function

        if options.pop("executor", None) is not None:  # --workers is refused before this
            raise JaxTargetError(
                f"--workers does not apply to a JAX target: {REFUSED['--workers']}"
            )
        return check_function(self.f, *self.args, order=order, **options)

    @contextlib.contextmanager
    def counting(self, update: Callable[[int], None]) -> Iterator[None]:
        """Count the checker's calls of ``f`` for the progress bar.

        They are counted where the door makes them (``FlatFunction.forward``, patched for the
        duration of the check): a wrapper around ``f`` would miss the calls that run compiled.
        """
        from checks.doors.jax_eval import FlatFunction

        original = FlatFunction.forward
        calls = [0]

        def forward(flat: FlatFunction, *arrays: np.ndarray) -> np.ndarray:
            calls[0] += 1
            if calls[0] % 16 == 0:
                update(calls[0])
            return original(flat, *arrays)

        setattr(FlatFunction, "forward", forward)  # noqa: B010 (mypy: no method assignment)
        try:
            yield
        finally:
            setattr(FlatFunction, "forward", original)  # noqa: B010
            update(calls[0])
