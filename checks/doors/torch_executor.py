"""What ``executor=`` needs from the torch door: a function that pickles, CPU tensors, and
workers that do not hang.

The engine pickles the function it checks once per check and rebuilds it in each worker
(:mod:`checks.engine.dispatch`). The torch door's wrappers are classes, not closures --
:class:`Named`, :class:`FunctionalCall`, and ``__getstate__`` on the wrappers of
:mod:`checks.doors.torch_front` and :mod:`checks.doors.torch_double`, which leave ``torch``
out (each side imports it) and the checked inputs too (every call carries its own) -- so they
pickle whenever the user's ``fn`` (an ``nn.Module``) does: a module-level function, a
``torch.autograd.Function``'s ``apply`` (pickled as the class, by reference), a module of a
class defined at module level. :func:`refuse` says why before any forward call when they do
not.

Three refusals, each naming the argument:

- ``fn`` (``module``) or an argument passed as it is that cannot be pickled: the engine's
  :class:`TypeError` (:func:`checks.engine.dispatch.ship`), or one that names the class
  defined inside a function;
- a tensor that is not on the CPU: every worker would need the device (and its own copy of
  the module there);
- a ``ProcessPoolExecutor`` that forks its workers while torch runs more than one thread: GNU
  OpenMP (torch's CPU thread pool) does not survive ``fork`` once this process has used it,
  and the forked workers hang in their first parallel region (a 2 x 3 x 5 x 5 conv2d is one;
  seen with torch 2.13 on Linux). "spawn" or "forkserver" workers, or one torch thread, work.

PyTorch is an optional dependency; this module needs it only when called.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from checks.doors.torch_double import torch_module
from checks.engine.dispatch import ship

__all__ = ["FunctionalCall", "Named", "refuse"]


class Named:
    """``fn`` under the name its report gives it: the ``f`` the engine sees (a class, not a
    closure, so that it pickles whenever ``fn`` does)."""

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        self.fn = fn
        self.__name__ = name

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)


class FunctionalCall:
    """``module`` as a function of ``x`` and of the parameters named ``keys``, through
    ``torch.func.functional_call``: ``check_module``'s ``fn``, which pickles whenever the
    module does."""

    def __init__(self, module: Any, keys: list[str]) -> None:
        self.module, self.keys = module, list(keys)
        self.__name__ = type(module).__name__

    def __call__(self, x: Any, *params: Any) -> Any:
        params_by_name = dict(zip(self.keys, params, strict=True))
        return torch_module().func.functional_call(self.module, params_by_name, (x,))


def refuse(executor: Any, label: str, obj: Any, args: Iterable[tuple[str, Any]]) -> None:
    """Raise, before any forward call, when ``executor`` cannot run ``obj`` on ``args``.

    Parameters
    ----------
    executor : concurrent.futures.Executor or None
        The check's ``executor=`` (nothing is refused without one).
    label : str
        ``obj`` in the message: ``"fn conv"``, ``"module Net"``.
    obj : callable
        The function (or module) the workers will call.
    args : iterable of (str, object)
        Its arguments by name: tensors (each must be on the CPU) and the arguments passed as
        they are (each must pickle).

    Raises
    ------
    ValueError
        A tensor off the CPU; a process pool that forks while torch runs several threads.
    TypeError
        ``obj``, or an argument, that cannot be pickled.
    """
    if executor is None:
        return
    torch = torch_module()
    args = list(args)
    away = [f"{n} on {t.device}" for n, t in args if _device(t, torch) != "cpu"]
    if away:
        raise ValueError(
            f"executor= needs CPU tensors: {', '.join(away)}; the workers would each need the "
            "device (pass executor=None to check on the device here, or move the tensors and "
            "the module to the CPU)"
        )
    _refuse_fork(executor, torch)
    local = _local_class(obj)
    if local is not None:
        raise TypeError(
            f"{label} cannot be sent to the executor: its class {local} is defined inside a "
            "function, which cannot be pickled; define it at module level (in a module the "
            "workers can import) or pass executor=None"
        )
    ship(obj, label)
    for name, a in args:
        if not isinstance(a, torch.Tensor):
            ship(a, f"argument {name} of {label}")


def _device(t: Any, torch: Any) -> str:
    return str(t.device.type) if isinstance(t, torch.Tensor) else "cpu"


def _local_class(obj: Any) -> str | None:
    """The qualified name of ``obj``'s class (an ``apply``'s Function class) when it is
    defined inside a function, else None."""
    owner = getattr(obj, "__self__", obj)
    cls = owner if isinstance(owner, type) else type(owner)
    qual = str(getattr(cls, "__qualname__", ""))
    return qual if "<locals>" in qual else None


def _refuse_fork(executor: Any, torch: Any) -> None:
    """A ``ProcessPoolExecutor`` whose workers fork while torch runs several threads."""
    context = getattr(executor, "_mp_context", None)  # concurrent.futures' process pool
    method = context.get_start_method() if context is not None else None
    threads = torch.get_num_threads()
    if method == "fork" and threads > 1:
        raise ValueError(
            f"executor is a ProcessPoolExecutor whose workers fork (start method 'fork') while "
            f"torch runs {threads} threads: torch's OpenMP thread pool does not survive fork "
            "and the workers hang in their first parallel region; create it with "
            "mp_context=multiprocessing.get_context('spawn') (or 'forkserver'), or call "
            "torch.set_num_threads(1) first"
        )
