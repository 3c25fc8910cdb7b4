"""The double backward of a torch function, seen by the engine (``order=2`` of the torch door).

``checks.torch.check_function(fn, *inputs, order=2)`` checks what
``torch.autograd.gradgradcheck`` checks: the first-order backward as a function of the inputs
*and* of the cotangent,

    g(x, weight, ..., dy) = torch.autograd.grad(fn(x, weight, ...), (x, weight, ...), dy),

flattened, against finite differences of ``g``, with ``g``'s own vector-Jacobian product (the
*double backward*) from a second ``torch.autograd.grad`` through the graph the first one
recorded (``create_graph=True``). A custom ``torch.autograd.Function`` passes only if its
``backward`` is itself differentiable: written in torch operations that autograd records.

A backward computed outside autograd (a ``.detach()``, numpy, ``torch.no_grad``, a
``@once_differentiable`` decorator) is refused before any finite difference, with a
:class:`~checks.report.errors.LayerContractError` naming the input whose gradient it is
(:meth:`DoubleBackward.probe`): its first-order gradient does not require grad although it is
not zero, or the second ``autograd.grad`` raises. Where only part of the backward escapes
autograd (``dy * x.detach()``), the gradient still requires grad through ``dy``: that cannot
be seen from the graph, but the double backward then misses a term, the finite differences
see it, and the mismatch fails; :meth:`DoubleBackward.note` adds a line to its message when
the second ``autograd.grad`` found no path back to a failing input.

PyTorch is an optional dependency; this module needs it only when called.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from checks.doors.torch_names import label
from checks.report.errors import LayerContractError

__all__ = ["NOT_DIFFERENTIABLE", "DoubleBackward", "tensor_outputs", "torch_module"]

#: what a first-order gradient computed outside autograd was made with, in every message
NOT_DIFFERENTIABLE = "it was computed without autograd (detach, numpy, no_grad)"


def torch_module() -> Any:
    """``torch``, or an ImportError that says which extra brings it (for both torch doors)."""
    try:
        import torch
    except ModuleNotFoundError as exc:  # pragma: no cover - the tests skip without torch
        raise ImportError(
            "checks.torch needs PyTorch: pip install 'convgrad-harness[torch]'"
        ) from exc
    return torch


def tensor_outputs(out: Any) -> list[Any]:
    """``fn``'s result as a list of tensors (a tensor, or a tuple or list of them)."""
    torch = torch_module()
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    for k, o in enumerate(outs):
        if not isinstance(o, torch.Tensor):
            raise TypeError(f"output {k} is a {type(o).__name__}, not a torch.Tensor")
    return outs


class DoubleBackward:
    """``g(*checked inputs, *dys)`` and its vector-Jacobian product, on host arrays.

    Parameters
    ----------
    fn : callable
        The function of tensors under check.
    inputs : sequence
        Its arguments, as given to ``check_function``.
    checked : list of int
        Positions of the inputs that require grad.
    names : list of str
        Names of all of ``fn``'s arguments (``inputs[i]`` where it has none).
    grad_outputs : tensor, array or sequence of them, optional
        The cotangent(s) ``dy`` at which ``g`` is evaluated, one per output that requires
        grad; by default seeded standard normal values in each output's dtype.
    seed : int
        Seed of the default ``dy``.

    Attributes
    ----------
    arrays : list of ndarray
        The checked inputs and the ``dy``\\ s, host copies: ``g``'s inputs for the engine.
    names : list of str
        Their names: the checked inputs', then ``dy`` (``dy[k]`` for output ``k`` of several;
        ``grad_output`` when ``fn`` has an argument called ``dy``).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        inputs: Sequence[Any],
        checked: list[int],
        names: list[str],
        grad_outputs: Any = None,
        seed: int = 0,
    ) -> None:
        torch = torch_module()
        self.fn, self.inputs, self.checked = fn, list(inputs), checked
        self.__name__ = label(fn)
        with torch.enable_grad():
            outs = tensor_outputs(fn(*inputs))
        # the outputs autograd can differentiate; the others take no dy (order=1 checks them)
        self.diff = [k for k, o in enumerate(outs) if o.requires_grad]
        if not self.diff:
            raise LayerContractError(
                f"no output of {self.__name__} requires grad: there is no backward to "
                "differentiate (order=2)"
            )
        dys = _grad_outputs(grad_outputs, [outs[k] for k in self.diff], seed)
        dy_name = "grad_output" if "dy" in names else "dy"
        self.names = [names[i] for i in checked] + (
            [dy_name] if len(outs) == 1 else [f"{dy_name}[{k}]" for k in self.diff]
        )
        self.arrays = [inputs[i].detach().cpu().numpy() for i in checked] + dys
        self.devices = [inputs[i].device for i in checked] + [outs[k].device for k in self.diff]
        self.unreached: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        """What an executor's worker needs for :meth:`forward`: not the checked inputs nor
        the host arrays (every call brings their values)."""
        state = dict(vars(self))
        state["inputs"] = [None if i in self.checked else a for i, a in enumerate(self.inputs)]
        state["arrays"] = []
        return state

    # -- evaluation ------------------------------------------------------------------------
    def _grads(
        self, arrays: Sequence[np.ndarray], create_graph: bool
    ) -> tuple[list[Any], list[Any]]:
        """The first-order gradients (None where the outputs do not depend on an input) and
        the leaves they were computed from (the checked inputs, then the dys)."""
        torch = torch_module()
        leaves = [
            torch.as_tensor(np.ascontiguousarray(a), device=d).detach().requires_grad_(True)
            for a, d in zip(arrays, self.devices, strict=True)
        ]
        args = list(self.inputs)
        for i, t in zip(self.checked, leaves, strict=False):
            args[i] = t
        with torch.enable_grad():
            outs = tensor_outputs(self.fn(*args))
            diff = [outs[k] for k in self.diff]
            if not all(o.requires_grad for o in diff):
                raise LayerContractError(
                    f"an output of {self.__name__} that required grad at the first call "
                    "no longer does"
                )
            grads = torch.autograd.grad(
                diff, leaves[: len(self.checked)], leaves[len(self.checked) :],
                create_graph=create_graph, allow_unused=True,
            )  # fmt: skip
        return list(grads), leaves

    def _pack(self, parts: Sequence[np.ndarray]) -> np.ndarray:
        if len(parts) == 1:  # kept in its shape, so that its batch axis can be packed
            return parts[0]
        return np.concatenate([p.reshape(-1) for p in parts])

    def forward(self, *arrays: np.ndarray) -> np.ndarray:
        """``g``: the first-order gradients of the checked inputs, flattened and joined."""
        if any(np.iscomplexobj(a) for a in arrays):
            # torch's complex gradients are conjugated (Wirtinger): not holomorphic in the
            # inputs, so no complex step; the engine takes this refusal and uses real steps
            raise TypeError("the double backward is not differenced with the complex step")
        grads, leaves = self._grads(arrays, create_graph=False)
        return self._pack(
            [
                np.zeros(t.shape, dtype=a.dtype) if g is None else g.detach().cpu().numpy()
                for g, t, a in zip(grads, leaves, arrays, strict=False)
            ]
        )

    def vjp(self, v: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        """``g``'s vector-Jacobian product: the double backward, by a second autograd.grad."""
        torch = torch_module()
        grads, leaves = self._grads(arrays, create_graph=True)
        pairs, start, flat = [], 0, v.reshape(-1)
        for g, t in zip(grads, leaves, strict=False):
            part = flat[start : start + t.numel()].reshape(t.shape)
            start += t.numel()
            if g is not None and g.requires_grad:
                pairs.append((g, torch.as_tensor(part, dtype=g.dtype, device=g.device)))
        second: Sequence[Any] = [None] * len(leaves)
        if pairs:
            second = torch.autograd.grad(
                [g for g, _ in pairs], leaves, [p for _, p in pairs], allow_unused=True
            )
        if any(g is not None for g in grads):
            self.unreached = {n for n, s in zip(self.names, second, strict=True) if s is None}
        return tuple(
            np.zeros(a.shape, dtype=a.dtype) if s is None else s.detach().cpu().numpy()
            for s, a in zip(second, arrays, strict=True)
        )

    # -- what autograd can tell before any finite difference ---------------------------------
    def probe(self) -> None:
        """Refuse a backward computed outside autograd: a first-order gradient that is not
        zero but has no autograd path back to any leaf (it does not require grad, or its
        ``grad_fn`` leads nowhere, as ``@once_differentiable``'s does), or whose second
        ``autograd.grad`` raises.

        A nonzero gradient is linear in ``dy``, so it must reach ``dy`` at least: where it
        reaches nothing, autograd did not record how it was computed.

        Raises
        ------
        LayerContractError
            Naming the input whose backward is not differentiable, and why.
        """
        torch = torch_module()
        try:
            grads, leaves = self._grads(self.arrays, create_graph=True)
        except RuntimeError as exc:  # e.g. dy.numpy() on a dy that requires grad
            self._grads(self.arrays, create_graph=False)  # a backward that always raises
            checked = ", ".join(self.names[: len(self.checked)])
            raise LayerContractError(
                f"{self._refusal(checked)} (torch, recording the backward: {_one_line(exc)})"
            ) from exc
        for name, g in zip(self.names, grads, strict=False):
            if g is None or not bool(torch.any(g != 0)):
                continue  # a zero gradient has a zero derivative, whatever computed it
            if g.requires_grad:
                try:
                    back = torch.autograd.grad(
                        g, leaves, torch.ones_like(g), allow_unused=True, retain_graph=True
                    )
                except RuntimeError as exc:
                    raise LayerContractError(
                        f"{self._refusal(name)} (torch: {_one_line(exc)})"
                    ) from exc
                if any(b is not None for b in back):
                    continue
            once = type(g.grad_fn).__name__ == "Error"  # once_differentiable's DelayedError
            raise LayerContractError(
                self._refusal(name) + (" (its backward is @once_differentiable)" if once else "")
            )

    def _refusal(self, name: str) -> str:
        return (
            f"The backward of {name} in {self.__name__} is not differentiable: "
            f"{NOT_DIFFERENTIABLE}, so its double backward (order=2, what gradgradcheck "
            "checks) cannot be taken; write backward in torch operations that autograd records"
        )

    def note(self, report: Any) -> str:
        """A line for a failing order=2 report: failing inputs the double backward found no
        autograd path back to (the backward read them outside autograd)."""
        failing = [t.name for t in getattr(report, "tensors", []) if not t.ok]
        lost = [n for n in failing if n in self.unreached]
        if not lost:
            return ""
        return (
            f"Note: the first-order gradients change with {', '.join(lost)} (the finite "
            "differences) but have no autograd path back to it: the backward read it outside "
            f"autograd -- part of it was {NOT_DIFFERENTIABLE.removeprefix('it was ')}."
        )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _grad_outputs(given: Any, outs: list[Any], seed: int) -> list[np.ndarray]:
    """The dys as host arrays: the caller's (one per output that requires grad) or seeded
    standard normal values in each output's shape and dtype."""
    if given is None:
        rng = np.random.default_rng([seed, 2])
        return [
            rng.standard_normal(tuple(o.shape)).astype(str(o.dtype).removeprefix("torch."))
            for o in outs
        ]
    parts = list(given) if isinstance(given, (tuple, list)) else [given]
    if len(parts) != len(outs):
        raise ValueError(
            f"grad_outputs has {len(parts)} entries, fn has {len(outs)} output(s) requiring grad"
        )
    arrays = []
    for k, (p, o) in enumerate(zip(parts, outs, strict=True)):
        a = p.detach().cpu().numpy() if hasattr(p, "detach") else np.asarray(p)
        if tuple(a.shape) != tuple(o.shape):
            raise ValueError(
                f"grad_outputs[{k}] has shape {tuple(a.shape)}, output has {tuple(o.shape)}"
            )
        arrays.append(a.astype(str(o.dtype).removeprefix("torch."), copy=True))
    return arrays
