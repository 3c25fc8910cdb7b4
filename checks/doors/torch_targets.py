"""Torch targets at the other doors: the pytest fixture and ``python -m checks layer``.

:func:`is_module` recognises a ``torch.nn.Module`` without importing torch (a program that
never imported torch cannot hold one). :class:`ModuleTarget` is what the command line checks
when a factory returns a module: it looks enough like a layer for the command's dtype
inference, input probe and memory estimate (``params``, ``forward`` on numpy arrays), and its
:meth:`ModuleTarget.check` runs :func:`checks.torch.check_module`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

__all__ = ["ModuleTarget", "is_module"]


def is_module(obj: Any) -> bool:
    """Whether ``obj`` is a ``torch.nn.Module`` instance (False when torch was never imported)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


class ModuleTarget:
    """An ``nn.Module`` as the command line sees it.

    Attributes
    ----------
    module : torch.nn.Module
    params : dict of ndarray
        Host copies of the parameters that require grad (for the dtype and the memory
        estimate; the check itself reads the module's).
    """

    def __init__(self, module: Any) -> None:
        self.module = module
        self.__name__ = type(module).__name__
        self.params = {
            n: p.detach().cpu().numpy() for n, p in module.named_parameters() if p.requires_grad
        }

    def _to(self, x: np.ndarray) -> Any:
        """``x`` as a tensor on the module's device; the module in ``x``'s dtype (``--dtype
        float64`` checks ``module.double()``)."""
        import torch

        dtype = getattr(torch, str(x.dtype))
        device = next((p.device for p in self.module.parameters()), torch.device("cpu"))
        self.module.to(dtype)
        return torch.as_tensor(np.ascontiguousarray(x), device=device)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The module's output on ``x`` (no autograd), as a host array."""
        import torch

        with torch.no_grad():
            y = self.module(self._to(x))
        return np.asarray(y.detach().cpu().numpy())

    def check(self, x: np.ndarray, **options: Any) -> Any:
        """:func:`checks.torch.check_module` at ``x`` (``order=2``: the double backward)."""
        from checks.doors.torch_front import check_module

        return check_module(self.module, self._to(x), **options)

    @contextlib.contextmanager
    def counting(self, update: Callable[[int], None]) -> Iterator[None]:
        """Count the module's forward calls for the progress bar (a forward pre-hook)."""
        calls = [0]

        def hook(*_: Any) -> None:
            calls[0] += 1
            if calls[0] % 16 == 0:
                update(calls[0])

        handle = self.module.register_forward_pre_hook(hook)
        try:
            yield
        finally:
            handle.remove()
            update(calls[0])
