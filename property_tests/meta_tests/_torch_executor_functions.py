"""Torch functions for the torch door's executor tests, at module level so that they pickle
(a spawned worker imports this module to rebuild them). Needs PyTorch."""

from __future__ import annotations

from typing import Any

import torch

from checks.audit.torch_functions import Conv2dFn


def conv(x: Any, weight: Any, bias: Any) -> Any:
    """The corpus' correct custom conv (a module-level function around ``Conv2dFn.apply``)."""
    return Conv2dFn.apply(x, weight, bias)


def logged_conv(x: Any, weight: Any, bias: Any, log: str) -> Any:
    """:func:`conv` that appends a line to the file ``log`` at each call made without
    autograd -- the checker's forward calls, wherever they run (its vjp records a graph) --
    an independent count of them."""
    if not torch.is_grad_enabled():
        with open(log, "a") as f:  # one short line per call: appends do not interleave
            f.write("forward\n")
    return Conv2dFn.apply(x, weight, bias)


def conv_inputs(seed: int = 0, dtype: Any = torch.float64) -> tuple[Any, Any, Any]:
    """x (2, 3, 5, 5), weight (4, 3, 3, 3), bias (4,), all requiring grad: the shapes of the
    corpus' planted elements (``ONE_DX``, ``ONE_DW``)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 5, 5, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(4, generator=g, dtype=dtype, requires_grad=True)
    return x, w, b
