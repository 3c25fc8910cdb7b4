"""What the torch door calls a function and its arguments in a report.

A plain function is named by its ``__name__`` and its arguments by its positional
parameters. A custom ``torch.autograd.Function``'s ``apply`` (whose own signature is
``*args``) is named by its class, its arguments by the parameters of its ``forward`` after
``ctx`` (``forward``'s own when the class defines ``setup_context``). Past the named ones,
arguments are ``inputs[i]``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from checks.doors.naming import padded_names, positional_parameters

__all__ = ["arg_names", "label"]


def _function_class(fn: Any) -> type | None:
    """The ``torch.autograd.Function`` subclass whose ``apply`` ``fn`` is, else None."""
    torch = sys.modules.get("torch")
    cls = getattr(fn, "__self__", None)
    if torch is not None and isinstance(cls, type) and issubclass(cls, torch.autograd.Function):
        return cls
    return None


def label(fn: Callable[..., Any]) -> str:
    """``fn``'s name in a report: the Function class for an ``apply``."""
    cls = _function_class(fn)
    if cls is not None:
        return cls.__name__
    return str(getattr(fn, "__name__", type(fn).__name__))


def arg_names(fn: Callable[..., Any], n: int) -> list[str]:
    """The names of ``fn``'s first ``n`` positional arguments, ``inputs[i]`` past them."""
    cls = _function_class(fn)
    params = positional_parameters(fn if cls is None else getattr(cls, "forward", fn))
    if cls is not None and "setup_context" not in _overridden(cls):
        params = params[1:]  # forward(ctx, ...): ctx is not an argument of apply
    return padded_names(params, n)


def _overridden(cls: type) -> set[str]:
    """Names defined by ``cls`` or its bases outside torch."""
    return {name for k in cls.__mro__ if not k.__module__.startswith("torch.") for name in vars(k)}
