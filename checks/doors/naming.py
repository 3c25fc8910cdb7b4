"""The names a framework door gives the engine's ``inputs[k]``: its users' own.

:func:`checks.check_vjp` calls the tensors it checks ``inputs[0]``, ``inputs[1]``, ... A
framework door knows better (the function's parameter names, a pytree path, a module's
parameter names) and renames the report and the texts that name a tensor with
:func:`rename_report` (then rebuilds an error's message from it).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

from checks.report.data import Report

__all__ = ["padded_names", "positional_parameters", "rename_report", "signature_names"]

_ENGINE_NAME = re.compile(r"inputs\[\d+\]")


def positional_parameters(fn: Callable[..., Any]) -> list[str]:
    """The names of ``fn``'s positional parameters (none when Python cannot read its
    signature)."""
    try:
        return [
            p.name
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        return []


def padded_names(params: list[str], n: int) -> list[str]:
    """``n`` names: ``params`` first, ``inputs[i]`` past them."""
    return [params[i] if i < len(params) else f"inputs[{i}]" for i in range(n)]


def signature_names(fn: Callable[..., Any], n: int) -> list[str]:
    """The names of ``fn``'s first ``n`` positional parameters, ``inputs[i]`` past them (or
    for all of them when ``fn`` has no signature Python can read)."""
    return padded_names(positional_parameters(fn), n)


def _sub(text: str, names: dict[str, str]) -> str:
    # one pass, so that a new name that looks like an old one is never renamed twice
    return _ENGINE_NAME.sub(lambda m: names.get(m.group(0), m.group(0)), text)


def rename_report(report: Report, names: dict[str, str]) -> None:
    """``report``'s tensors, kinks and the texts that name them (method, batching,
    precision, problems) under ``names`` (engine name -> the user's name)."""
    for tr in report.tensors:
        tr.name = names.get(tr.name, tr.name)
    report.kinks = [(names.get(n, n), i) for n, i in report.kinks]
    report.method = _sub(report.method, names)  # mixed(inputs[0]=complex, ...)
    report.batching = _sub(report.batching, names)
    report.precision = _sub(report.precision, names)
    report.problems = [_sub(p, names) for p in report.problems]
