"""Forward calls of a check, in this process or spread over a ``concurrent.futures`` executor.

The numerical part issues its independent forward calls -- the packed chunks, the grouped
copies, the elements evaluated one by one -- as :class:`Call` s through
:meth:`Dispatcher.imap`. Without an executor each call runs at once on the target, in order,
exactly as a plain loop would (the serial path, and its results, are those of a loop). With
one, calls go to the workers as tasks (small one-element calls several to a task), at most
:attr:`Dispatcher.depth` tasks are in flight (two per worker: one runs while the next one's
arguments and the last one's outputs travel; the memory budget's scratch pays for those
outputs, see :class:`checks.engine.evaluation.Chunks`), and the outputs come back in the order
of the calls. Single calls (probes, directional derivatives) run here.

A worker never sees this process's arrays, let alone its in-place perturbations: it rebuilds
the target once per check from the layer (or ``f``) and the working copies as the numerical
part starts (:meth:`Target.worker_state <checks.engine.targets.Target.worker_state>`, float64
copies for a promoted float32 layer), keeps it in a small per-thread cache by the check's
token, and runs each call -- which carries its own perturbed values -- on it, perturbing and
restoring its own copies. The layer is pickled once before the check's first forward call,
so that one that cannot be gets its :class:`TypeError` at once; the payload goes with the
first tasks, and a task that reaches a worker without it is sent again with it. What the
layer raises comes back with its cause (the fallbacks of the complex step read the cause),
the caller's warning filters and numpy error state apply in the worker (a ``ComplexWarning``
turned into an error must raise there too), and a worker that sees the layer change its ``x``
or parameters says so (:attr:`Dispatcher.mutated`).
"""

from __future__ import annotations

import itertools
import pickle
import threading
import uuid
import warnings
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple, TypeVar

import numpy as np

from checks.engine import contract
from checks.engine.batching import Copies
from checks.engine.targets import LayerTarget, Target, VjpTarget

__all__ = ["Call", "Dispatcher", "run_remote", "workers"]

T = TypeVar("T")

#: checks a worker thread keeps rebuilt (the most recent ones; each holds the layer and its
#: working copies, and a digest of them for the mutation check)
KEEP = 2

_TARGETS: dict[str, type[Target]] = {"LayerTarget": LayerTarget, "VjpTarget": VjpTarget}


class Call(NamedTuple):
    """One forward call: ``getattr(target, method)(*args)``, ``method`` one of the target's
    ``eval_packed``, ``eval_element``, ``eval_replace`` (their arguments carry the perturbed
    values, never a reference to the parent's state). An argument that is a
    :class:`~checks.engine.batching.Copies` is built where the call runs, from that side's
    copy of the tensor."""

    method: str
    args: tuple[Any, ...]

    def run(self, target: Target) -> np.ndarray:
        args = (a.build(target.value(a.name)) if isinstance(a, Copies) else a for a in self.args)
        y: np.ndarray = getattr(target, self.method)(*args)
        return y


def workers(executor: Any) -> int:
    """How many calls ``executor`` runs at once: ``max_workers`` of a process or thread pool,
    the threads of a ``dask.distributed`` client's workers, else 2."""
    n = getattr(executor, "_max_workers", None)  # concurrent.futures' pools
    if isinstance(n, int) and n > 0:
        return n
    client = getattr(executor, "_client", None)  # distributed's Client.get_executor()
    if client is not None:
        try:
            n = sum(client.nthreads().values())
        except Exception:  # a client that cannot say: the default below
            n = 0
        if n > 0:
            return int(n)
    return 2


def _unpicklable(obj: Any, depth: int = 3) -> tuple[str, Any] | None:
    """Where in ``obj`` (its attributes, dict values and sequence items, ``depth`` levels
    down) the first part that pickle refuses sits: ``(path, part)``, or ``None``."""
    if depth == 0:
        return None
    if isinstance(obj, dict):
        parts = [(f"[{k!r}]", v) for k, v in obj.items()]
    elif isinstance(obj, (list, tuple)):
        parts = [(f"[{i}]", v) for i, v in enumerate(obj)]
    elif hasattr(obj, "__dict__"):
        parts = [(f".{k}", v) for k, v in vars(obj).items()]
    else:
        return None
    for path, v in parts:
        try:
            pickle.dumps(v)
        except Exception:
            inner = _unpicklable(v, depth - 1)
            return (path + inner[0], inner[1]) if inner else (path, v)
    return None


def _what(part: Any) -> str:
    """``part`` in words: what makes it unpicklable, most often."""
    qual = str(getattr(part, "__qualname__", ""))
    if qual.endswith("<lambda>"):
        return "a lambda"
    if "<locals>" in qual:
        return f"{qual}, defined inside a function,"
    return f"{type(part).__name__} {part!r:.60}"


def ship(obj: Any, label: str) -> bytes:
    """``obj`` pickled, or a :class:`TypeError` that names ``label``, the part that pickle
    refused and why."""
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        found = _unpicklable(obj)
        if found is not None:
            where = f"its attribute {found[0].lstrip('.')} holds {_what(found[1])} which"
        else:
            where = f"it is {_what(obj)} which"
        raise TypeError(
            f"{label} cannot be sent to the executor: {where} cannot be pickled "
            f"({type(exc).__name__}: {exc}); pass executor=None or make it picklable (a class "
            "or function defined at module level, holding arrays, numbers and module-level "
            "functions, not lambdas, closures, locks or open files)"
        ) from exc


def _filters() -> list[tuple[Any, ...]]:
    """The caller's warning filters that a worker can rebuild (categories of Python or
    numpy): a ``ComplexWarning`` turned into an error must raise in the worker as it would
    here, since the complex step's fallback depends on it."""
    top = ("builtins", "numpy")
    return [f for f in warnings.filters if str(f[2].__module__).split(".")[0] in top]


def _portable(exc: BaseException | None) -> BaseException | None:
    """``exc`` if it survives pickling, else a RuntimeError with its type and text."""
    if exc is None:
        return None
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


_LOCAL = threading.local()


def _cache() -> OrderedDict[str, tuple[Target, dict[str, tuple[Any, ...]]]]:
    cache = getattr(_LOCAL, "targets", None)
    if cache is None:
        cache = _LOCAL.targets = OrderedDict()
    return cache


def run_remote(
    token: str,
    payload: bytes | None,
    calls: list[Call],
    filters: list[tuple[Any, ...]],
    err: dict[str, str],
) -> tuple[Any, ...]:
    """A worker's side of a task: ``calls`` in order (a module-level function, so that it
    pickles).

    Returns ``("done", outputs, raised, mutated names)`` -- ``raised`` is ``None`` or
    ``(exception, cause)`` of the call after the last output, which ends the task as it
    would end a serial loop -- or ``("missing",)`` (no payload for ``token`` here yet) or
    ``("unloadable", reason)``.
    """
    cache = _cache()
    entry = cache.get(token)
    if entry is None:
        if payload is None:
            return ("missing",)
        try:
            kind, shipped, state = pickle.loads(payload)
            target = _TARGETS[kind].rebuilt(shipped, state)
        except Exception as exc:
            return ("unloadable", f"{type(exc).__name__}: {exc}")
        entry = cache[token] = (target, contract.fingerprint(target.watched()))
        while len(cache) > KEEP:
            cache.popitem(last=False)
    cache.move_to_end(token)
    target, before = entry
    outputs, raised = [], None
    with warnings.catch_warnings(), np.errstate(**err):  # type: ignore[arg-type]
        warnings.resetwarnings()
        for action, msg, cat, mod, line in reversed(filters):
            # a filter's message and module are compiled patterns, strings or None
            pattern, module = (getattr(p, "pattern", p) or "" for p in (msg, mod))
            warnings.filterwarnings(action, pattern, cat, module, line)
        for call in calls:
            try:
                outputs.append(call.run(target))
            except Exception as exc:
                raised = (_portable(exc), _portable(exc.__cause__))
                break
    now = target.watched()
    names = {n for c in calls for n in target.exposed(c.method)}
    seen = {n: v for n, v in before.items() if n in names}
    return ("done", outputs, raised, contract.mutated(seen, now))


def _run_popped(target: Target, box: list[tuple[Call, T]]) -> tuple[np.ndarray, T]:
    """Run the call ``box`` holds, emptying it (its input lives as long as the call)."""
    call, meta = box.pop()
    return call.run(target), meta


class Dispatcher:
    """The forward calls of one check: in this process (``executor=None``), or on ``executor``.

    Parameters
    ----------
    target : Target
        What is checked; its ``n_evals`` counts every call, wherever it ran.
    executor : concurrent.futures.Executor, optional
        Anything with ``submit(fn, *args) -> Future``: a ``ProcessPoolExecutor``, a
        ``ThreadPoolExecutor``, ``dask.distributed.Client.get_executor()``.

    Raises
    ------
    TypeError
        When the layer (or ``f``) cannot be pickled: raised here, before any forward call.
    """

    def __init__(self, target: Target, executor: Any = None) -> None:
        self.target = target
        self.executor = executor
        self.local = executor is None
        #: tasks that run at once (1: every call here, one after the other)
        self.lanes = 1 if executor is None else workers(executor)
        #: tasks in flight at once
        self.depth = 1 if executor is None else 2 * self.lanes
        #: names of tensors a worker saw the layer change
        self.mutated: list[str] = []
        self._token = uuid.uuid4().hex
        self._sent = 0
        self._wave: bytes | None = None  # the payload the first tasks carry
        obj = target.shipped()
        self._label = (
            f"layer {type(obj).__name__}"
            if isinstance(target, LayerTarget)
            else f"function {target.layer_name}"
        )
        if executor is not None:
            ship(obj, self._label)  # the error now, before any forward call

    def payload(self) -> bytes:
        """What a worker rebuilds the target from: the layer (or ``f``) and the working
        copies, pickled as they are now. Built when tasks carry it (the first wave, and a
        task that met a worker without it) and not kept: between forward calls the
        numerical part leaves the layer and the working copies as they were when it began
        (perturbations are undone, a promotion lasts until the end)."""
        state = (type(self.target).__name__, self.target.shipped(), self.target.worker_state())
        return ship(state, self._label)

    def payload_bytes(self) -> int:
        """Bytes of :meth:`payload` (0 without an executor): held here while the tasks that
        carry it are in flight."""
        return 0 if self.local else len(self.payload())

    def imap(
        self, items: Iterable[tuple[Call, T]], per_task: int = 1
    ) -> Iterator[tuple[np.ndarray, T]]:
        """``(output, meta)`` of each ``(call, meta)``, in order. ``items`` is consumed
        lazily: serially one call is built, run and handed back before the next is built;
        with an executor, ``per_task`` consecutive calls go to a worker as one task (small
        calls: a task costs ~1 ms in a process pool, several in dask) and at most
        :attr:`depth` tasks are in flight."""
        if self.local:
            # this frame holds neither a call (its input) nor an output between yields: the
            # next call is built, and run, with only what the consumer keeps
            it, box = iter(items), []
            while True:
                try:
                    box.append(next(it))
                except StopIteration:
                    return
                yield _run_popped(self.target, box)
        else:
            yield from self._remote(items, max(1, per_task))

    def _remote(
        self, items: Iterable[tuple[Call, T]], per_task: int
    ) -> Iterator[tuple[np.ndarray, T]]:
        pending: deque[tuple[Any, list[Call], list[T]]] = deque()
        it = iter(items)
        try:
            while True:
                while len(pending) < self.depth:
                    task = list(itertools.islice(it, per_task))
                    if not task:
                        break
                    calls, metas = [c for c, _ in task], [m for _, m in task]
                    del task
                    pending.append((self._submit(calls), calls, metas))
                if not pending:
                    return
                fut, calls, metas = pending.popleft()
                outputs, raised = self._outcome(fut, calls)
                del fut, calls
                while outputs:  # (what the consumer makes of them comes first, as serially)
                    yield outputs.pop(0), metas.pop(0)
                if raised is not None:
                    exc, cause = raised
                    if cause is None:
                        raise exc
                    raise exc from cause
        finally:
            for fut, _, _ in pending:
                fut.cancel()

    def _submit(self, calls: list[Call], payload: bool = False) -> Any:
        assert self.executor is not None
        data = None
        if self._sent < self.lanes:  # the first wave carries the payload (one copy here)
            data = self._wave = self._wave or self.payload()
            self._sent += 1
            if self._sent == self.lanes:
                self._wave = None  # (its tasks hold it until they are sent)
        elif payload:
            data = self.payload()
        return self.executor.submit(
            run_remote, self._token, data, calls, _filters(), np.geterr()
        )  # fmt: skip

    def _outcome(
        self, fut: Any, calls: list[Call]
    ) -> tuple[list[np.ndarray], tuple[BaseException, BaseException | None] | None]:
        """The outputs of a task's calls, and what the call after them raised."""
        out = fut.result()
        if out[0] == "missing":  # a worker that has not seen this check yet
            out = self._submit(calls, payload=True).result()
        if out[0] == "unloadable":
            raise TypeError(
                f"{self._label} could not be rebuilt in an executor worker ({out[1]}): its "
                "class (or function) must be importable there -- defined in a module on the "
                "workers' path, not in __main__ or a notebook; or pass executor=None"
            )
        _, outputs, raised, changed = out
        self.target.n_evals += len(outputs) + (raised is not None)
        self.mutated += [n for n in changed if n not in self.mutated]
        return outputs, raised
