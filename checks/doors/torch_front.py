"""The PyTorch front door: the checker for ``torch.autograd.Function``\\ s and modules.

``check_function(fn, *inputs)`` checks every input tensor that requires grad, against the
engine's finite differences, with the analytic side from ``torch.autograd.grad`` and the
checker's random cotangent; ``check_module(module, x)`` checks ``x`` and every parameter that
requires grad, named as in ``named_parameters()``. Both return the :class:`~checks.Report` of
:func:`checks.check_vjp` and raise its errors, with the tensors named from ``fn``'s signature
(``inputs[i]`` where it has none) or the module's parameter names.

Every output is checked, each with its own random cotangent, also outputs that do not require
grad (``ctx.mark_non_differentiable``) or whose gradient ``backward`` ignores: if such an
output moves with a checked input, the analytic side says 0 there and the check fails.
Tensors are evaluated in their own dtype and on their own device; the engine works on host
copies. float32 inputs are differenced in float64 when the function follows float64 copies
(``precision="auto"``), else in float32 -- never silently cast. ``order=2`` checks the
double backward instead, what ``gradgradcheck`` checks (:mod:`checks.doors.torch_double`).

PyTorch is an optional dependency (the ``torch`` extra); importing this module needs it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from checks.doors.api import check_vjp
from checks.doors.torch_double import DoubleBackward
from checks.doors.torch_double import tensor_outputs as _flat_outputs
from checks.doors.torch_double import torch_module as _torch
from checks.doors.torch_executor import FunctionalCall, Named, refuse
from checks.doors.torch_names import arg_names, label
from checks.report.errors import GradcheckError
from checks.report.messages import format_report

__all__ = ["check_function", "check_module"]


def _names(fn: Callable[..., Any], n: int) -> list[str]:
    """The names of ``fn``'s first ``n`` positional parameters, ``inputs[i]`` past them (a
    Function's ``apply``: its ``forward``'s, after ``ctx``)."""
    return arg_names(fn, n)


class _Wrapped:
    """``fn`` seen by the engine: host arrays in, one host array out (a single output in its
    own shape; several flattened and concatenated), and its vector-Jacobian product through
    autograd.

    A check calls ``forward`` hundreds of times on small arrays, so its own cost per call
    counts: CPU inputs are wrapped with ``torch.from_numpy`` (no copy, a third of the cost of
    ``torch.as_tensor``) and tensors made for a call without gradients are used as they are.

    It pickles, for an executor's workers, whenever ``fn`` and the unchecked inputs do
    (:meth:`__getstate__`).
    """

    def __init__(self, fn: Callable[..., Any], inputs: Sequence[Any], checked: list[int]) -> None:
        self.fn, self.inputs, self.checked = fn, list(inputs), checked
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)
        self.torch = _torch()
        self.cpu = [self.inputs[i].device.type == "cpu" for i in checked]

    def __getstate__(self) -> dict[str, Any]:
        """What a worker needs: not ``torch`` (it imports its own) nor the checked inputs
        (every call brings their values)."""
        state = dict(vars(self))
        del state["torch"]
        state["inputs"] = [None if i in self.checked else a for i, a in enumerate(self.inputs)]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state)
        self.torch = _torch()

    def _args(self, arrays: Sequence[np.ndarray], grad: bool) -> tuple[list[Any], list[Any]]:
        torch = self.torch
        args = list(self.inputs)
        leaves = []
        for i, cpu, arr in zip(self.checked, self.cpu, arrays, strict=True):
            arr = np.ascontiguousarray(arr)
            t = torch.from_numpy(arr) if cpu else torch.as_tensor(arr, device=args[i].device)
            if grad:
                t.requires_grad_(True)
            args[i] = t
            leaves.append(t)
        return args, leaves

    def forward(self, *arrays: np.ndarray) -> np.ndarray:
        torch = self.torch
        args, _ = self._args(arrays, grad=False)
        with torch.no_grad():
            try:
                outs = _flat_outputs(self.fn(*args))
            except RuntimeError as exc:
                if any(np.iscomplexobj(a) for a in arrays):
                    # most torch ops refuse to mix complex and real tensors: the complex step
                    # is then not available, which the engine handles as a refusal
                    raise TypeError(f"complex input refused by torch: {exc}") from exc
                raise
        if len(outs) == 1:  # kept in its shape, so that its batch axis can be packed
            return outs[0].detach().cpu().numpy()
        return np.concatenate([o.detach().cpu().numpy().reshape(-1) for o in outs])

    def vjp(self, dy: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        torch = self.torch
        args, leaves = self._args(arrays, grad=True)
        outs = _flat_outputs(self.fn(*args))
        pairs, start = [], 0
        flat = dy.reshape(-1)
        for o in outs:
            part = flat[start : start + o.numel()].reshape(o.shape)
            start += o.numel()
            if o.requires_grad:  # an output autograd cannot differentiate contributes 0
                pairs.append((o, torch.as_tensor(part, dtype=o.dtype, device=o.device)))
        grads: Sequence[Any] = [None] * len(leaves)
        if pairs:
            grads = torch.autograd.grad(
                [o for o, _ in pairs], leaves, [g for _, g in pairs], allow_unused=True
            )
        return tuple(
            np.zeros(arr.shape, dtype=arr.dtype) if g is None else g.detach().cpu().numpy()
            for g, arr in zip(grads, arrays, strict=True)
        )


def _rename(report: Any, names: dict[str, str]) -> None:
    """The report's tensors (and the texts that name them) under their own names."""
    for tr in report.tensors:
        tr.name = names.get(tr.name, tr.name)
    report.kinks = [(names.get(n, n), i) for n, i in report.kinks]

    def sub(text: str) -> str:  # one pass: inputs[1] -> inputs[2] -> ... never chains
        return re.sub(r"inputs\[\d+\]", lambda m: names.get(m.group(0), m.group(0)), text)

    report.batching = sub(report.batching)
    report.problems = [sub(p) for p in report.problems]


def _renamed(err: GradcheckError, names: dict[str, str]) -> GradcheckError:
    """The same error with the report's tensors under their own names."""
    if err.report is None:
        return err
    _rename(err.report, names)
    return type(err)(format_report(err.report), err.report)


def check_function(fn: Callable[..., Any], *inputs: Any, order: int = 1, **options: Any) -> Any:
    """Check the gradients of ``fn`` (tensors in, a tensor or a tuple of tensors out) with
    respect to every input that requires grad; with ``order=2``, its double backward.

    Parameters
    ----------
    fn : callable
        A ``torch.autograd.Function``'s ``apply``, or any function of tensors.
    *inputs
        Its arguments; tensors with ``requires_grad=True`` are checked, the rest are passed
        as they are.
    order : {1, 2}
        1: the backward (what ``torch.autograd.gradcheck`` checks). 2: the double backward
        (what ``gradgradcheck`` checks): ``g(*inputs, dy) = autograd.grad(fn(*inputs),
        inputs, dy)`` against finite differences of ``g``, its VJP from a second
        ``autograd.grad`` (:mod:`checks.doors.torch_double`); the report has one more
        tensor, ``dy``. ``grad_outputs=`` gives the ``dy`` (one per output that requires
        grad; seeded random by default), ``dy=`` stays the checker's cotangent, of ``g``.
    **options
        As for :func:`checks.check_vjp` (``method``, ``coverage``, ``rtol``, ``atol``,
        ``seed``, ``precision``, ``batch_axis``; ``dy`` in the output's shape, or one flat
        array over every output when there are several; ``executor`` when ``fn`` and the
        arguments passed as they are pickle and every tensor is on the CPU, at both orders:
        :mod:`checks.doors.torch_executor`).

    Returns
    -------
    Report
        Tensors named after ``fn``'s parameters (``inputs[i]`` where it has none).

    Raises
    ------
    GradientMismatchError, LayerContractError
        As :func:`checks.check_vjp`, with the same names. At ``order=2`` a backward computed
        outside autograd (detach, numpy, no_grad) is a LayerContractError that says so.
    TypeError, ValueError
        With an ``executor``: ``fn`` (or an argument) that cannot be pickled, a tensor off
        the CPU, a process pool that forks while torch runs several threads
        (:func:`checks.doors.torch_executor.refuse`).
    """
    torch = _torch()
    checked = [i for i, t in enumerate(inputs) if isinstance(t, torch.Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("check_function needs at least one input tensor with requires_grad=True")
    names = _names(fn, len(inputs))
    refuse(options.get("executor"), f"fn {label(fn)}", fn, zip(names, inputs, strict=True))
    if order == 2:
        return _check_double(fn, inputs, checked, names, options)
    if order != 1:
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    wrapped = _Wrapped(fn, inputs, checked)
    arrays = [inputs[i].detach().cpu().numpy() for i in checked]
    rename = {f"inputs[{k}]": names[i] for k, i in enumerate(checked)}
    try:
        report = check_vjp(Named(wrapped.forward, label(fn)), wrapped.vjp, *arrays, **options)
    except GradcheckError as err:
        raise _renamed(err, rename) from err.__cause__
    _rename(report, rename)
    return report


def _check_double(
    fn: Callable[..., Any], inputs: Sequence[Any], checked: list[int], names: list[str],
    options: dict[str, Any],
) -> Any:  # fmt: skip
    """``order=2``: check_vjp on the double backward (:class:`DoubleBackward`)."""
    options = dict(options)
    grad_outputs = options.pop("grad_outputs", None)
    g = DoubleBackward(fn, inputs, checked, names, grad_outputs, options.get("seed", 0))
    g.probe()
    rename = {f"inputs[{k}]": name for k, name in enumerate(g.names)}
    try:
        report = check_vjp(Named(g.forward, g.__name__), g.vjp, *g.arrays, **options)
    except GradcheckError as err:
        new = _renamed(err, rename)
        note = g.note(new.report)
        if note:  # after the hints, before the Reproduce: line
            lines = str(new).splitlines()
            at = next((k for k, ln in enumerate(lines) if ln.startswith("Reproduce:")), len(lines))
            new = type(new)("\n".join([*lines[:at], note, *lines[at:]]), new.report)
        raise new from err.__cause__
    _rename(report, rename)
    return report


def check_module(module: Any, x: Any, **options: Any) -> Any:
    """Check ``module(x)``'s gradients with respect to ``x`` and every parameter that
    requires grad (named as in ``named_parameters()``), through
    ``torch.func.functional_call``. ``x`` is checked whether or not it requires grad.
    ``order=2`` checks the double backward, and ``executor=`` runs the forward calls on
    other processes (a module of a class defined at module level, on the CPU), as
    :func:`check_function` does."""
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    keys = [n for n, _ in named]
    tensors = [("x", x), *module.named_parameters(), *module.named_buffers()]
    refuse(options.get("executor"), f"module {type(module).__name__}", module, tensors)
    fn = FunctionalCall(module, keys)
    x_in = x.detach().clone().requires_grad_(True)
    params = [p.detach().clone().requires_grad_(True) for _, p in named]
    try:
        report = check_function(fn, x_in, *params, **options)
    except GradcheckError as err:
        raise _renamed(err, _module_names(keys)) from err.__cause__
    _rename(report, _module_names(keys))
    return report


def _module_names(keys: list[str]) -> dict[str, str]:
    """``inputs[k]`` past ``x`` (fn's ``*params``) -> the parameter's name."""
    return {f"inputs[{k + 1}]": key for k, key in enumerate(keys)}
