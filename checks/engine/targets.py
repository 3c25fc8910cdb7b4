"""What is being checked, behind one interface: a layer (:class:`LayerTarget`) or a function
with its vector-Jacobian product (:class:`VjpTarget`).

A target names its tensors (the input ``x`` and the parameters, or ``inputs[i]``), runs forward
with one tensor replaced or one element perturbed, and runs the analytic side. The layer only
ever sees the checker's copies of ``x`` and ``dy``; what it returns is copied at once (a layer
may return the same buffer from every call); a parameter that could be taken for the input is
reported as ``params['x']``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

import numpy as np

from checks.engine import (
    contract,
)
from checks.report.errors import LayerContractError


def fmt_index(name: str, idx: tuple[int, ...]) -> str:
    return f"{name}[{', '.join(map(str, idx))}]"


def _as_output(y: Any, label: str, copy: bool = True) -> np.ndarray:
    """A forward result as an ndarray of its own; a scalar output (a loss) becomes a 0-d array.

    A copy unless ``copy`` is false (see :func:`borrowing`): a layer may return the same
    buffer from every call (``np.tanh(u, out=self._out)``), so what it returns is only
    borrowed until its next call.
    """
    if isinstance(y, (np.generic, float)) and not isinstance(y, (bool, np.bool_)):
        y = np.asarray(y)
    if not isinstance(y, np.ndarray):
        raise LayerContractError(f"{label} returned {type(y).__name__}, not an ndarray")
    return y.copy() if copy else y


def _own(g: Any) -> Any:
    """A copy of a gradient the layer returned (borrowed until its next call, as outputs)."""
    return g.copy() if isinstance(g, np.ndarray) else g


def param_names(keys: Sequence[str]) -> dict[str, str]:
    """Report names of a layer's parameters, keyed by those names: the key itself, except
    where it could be taken for the input ``x`` (``"x"``, or ``"params[...]"``), which is
    reported as ``params['x']``."""
    return {k: f"params[{k!r}]" if k == "x" or k.startswith("params[") else k for k in keys}


class ComplexCallError(LayerContractError):
    """The layer raised on a call that carried complex values (see :func:`complex_refused`)."""


def _reraise(exc: LayerContractError, *inputs: Any) -> NoReturn:
    """Re-raise ``exc`` from a call on ``inputs`` (what forward read: the input and, for a
    layer, its parameters, still as perturbed), as a :class:`ComplexCallError` when the
    layer raised and some input was complex."""
    if exc.__cause__ is not None and any(np.iscomplexobj(a) for a in inputs):
        raise ComplexCallError(str(exc)) from exc.__cause__
    raise exc


@contextmanager
def borrowing(target: Target) -> Iterator[None]:
    """Within: forward's outputs are returned as the layer returned them, not copied -- for a
    caller that reduces each output before the next call, and copies what it keeps."""
    target.borrow = True
    try:
        yield
    finally:
        target.borrow = False


class Target:
    """The function under check: named tensors, forward with one tensor replaced, gradients."""

    layer_name: str
    entry: str
    names: list[str]
    packable: set[str]
    n_evals: int = 0
    borrow: bool = False  # see borrowing

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

    # whether samples() is available: forward on some samples of the input only
    slices_samples = False

    @contextmanager
    def samples(self, rows: slice, batch_axis: int) -> Iterator[None]:
        """Within: forward sees the samples ``rows`` of the input only (its outputs are those
        samples'), whatever else is perturbed."""
        raise NotImplementedError
        yield

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

    # an executor's worker rebuilds the target from what is shipped (pickled once, before
    # the first forward call) and the working state (see checks.engine.dispatch)
    def shipped(self) -> Any:
        """The object a worker needs besides the arrays: the layer, or ``f``."""
        raise NotImplementedError

    def worker_state(self) -> dict[str, Any]:
        """The working copies (and what else forward calls read), as they are now."""
        raise NotImplementedError

    def exposed(self, method: str) -> list[str]:
        """The :meth:`watched` tensors a call of ``method`` hands to the layer (those it
        could change)."""
        return list(self.watched())

    @classmethod
    def rebuilt(cls, shipped: Any, state: dict[str, Any]) -> Target:
        """A target in a worker: ``shipped`` with the parent's working ``state``."""
        raise NotImplementedError


class LayerTarget(Target):
    """A layer: the input ``x`` and every parameter, under names that cannot clash
    (:func:`param_names`). The layer only ever sees the checker's copy of ``x`` and of
    ``dy``, never the caller's arrays."""

    def __init__(self, layer: Any, x: np.ndarray) -> None:
        self.layer = layer
        # an adapter names what it wraps (LayerAdapter(Foo) is reported as Foo)
        name = getattr(layer, "__name__", None)
        self.layer_name = name if isinstance(name, str) and name else type(layer).__name__
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
        return _as_output(y, label, copy=not self.borrow)

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

    slices_samples = True

    @contextmanager
    def samples(self, rows: slice, batch_axis: int) -> Iterator[None]:
        full = self.xw
        self.xw = full[(slice(None),) * batch_axis + (rows,)]
        try:
            yield
        finally:
            self.xw = full

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
        # what demote compares (a digest: a float64 copy of every tensor would double them)
        self._promoted = contract.fingerprint(self._tensors())

    def shipped(self) -> Any:
        return self.layer

    def worker_state(self) -> dict[str, Any]:
        return {"tensors": self._tensors()}

    def exposed(self, method: str) -> list[str]:
        # a packed call's x is a fresh array: forward sees the parameters only
        return list(self.key) if method == "eval_packed" else self.names

    @classmethod
    def rebuilt(cls, shipped: Any, state: dict[str, Any]) -> LayerTarget:
        tensors = state["tensors"]
        tgt = cls(shipped, tensors["x"])
        for name, k in tgt.key.items():
            v, cur = tensors[name], tgt.params[k]
            if isinstance(cur, np.ndarray) and (cur.dtype, cur.shape) == (v.dtype, v.shape):
                np.copyto(cur, v)  # the layer's own array (other attributes may share it)
            else:  # promoted to float64 by the parent (promote rebinds the entry)
                tgt.params[k] = v
        return tgt

    def demote(self) -> list[str]:
        now = self._tensors()
        changed = contract.mutated(self._promoted, now)
        self.xw, native = self._native
        for k, v in native.items():
            self.params[k] = v
        self._complex_copy = {}
        return changed


class VjpTarget(Target):
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
        return _as_output(y, label, copy=not self.borrow)

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
        self._promoted = contract.fingerprint(self._by_name(self.work))

    def shipped(self) -> Any:
        return self.f

    def worker_state(self) -> dict[str, Any]:
        return {"work": self.work, "batch_axis": self.batch_axis}

    @classmethod
    def rebuilt(cls, shipped: Any, state: dict[str, Any]) -> VjpTarget:
        tgt = cls(shipped, shipped, state["work"])  # a worker never runs the vjp
        tgt.inputs = tgt.work
        tgt.batch_axis = state["batch_axis"]
        return tgt

    def demote(self) -> list[str]:
        changed = contract.mutated(self._promoted, self._by_name(self.work))
        self.work = self._native_work
        self._complex_copy = {}
        return changed

    @staticmethod
    def _by_name(arrays: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        return {f"inputs[{i}]": a for i, a in enumerate(arrays)}
