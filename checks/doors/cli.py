"""``python -m checks``: check a layer from the shell, run the audit, the self-test, verify.

Subcommands
-----------
``layer TARGET``
    Build a layer from ``TARGET`` (``package.module:factory`` or ``path/to/file.py:factory``;
    the factory is called with no arguments, or TARGET may name a layer object directly),
    check it on a seeded random input and print a per-tensor table; on a mismatch also the
    full failure message with its hints. Before checking, the memory the check needs (the
    layer's tensors and :func:`checks.engine.memory.budget` of them, ~9x) is compared with the
    memory available (or ``--max-memory``); when it would not fit, one line says how much
    it needs and the command exits 2. ``--json PATH``, ``--plot PATH`` and ``--html FILE``
    write the report as JSON, its heatmap, and a self-contained HTML page of the check. A
    ``torch.nn.Module`` is checked through :func:`checks.torch.check_module`, in its
    parameters' dtype (or ``--dtype``'s); ``--order 2`` checks its double backward. A JAX
    target, a pair ``(f, args)`` of a JAX function and the tuple of its positional arguments
    (what ``jax.test_util.check_grads(f, args, order)`` takes), is checked at those arguments
    through :func:`checks.jax.check_function` (``--order 2``: its backward pass; ``--dtype``
    casts its floating arrays; ``--input``, ``--input-shape`` and ``--workers`` are refused).
``function F VJP --input FILE``
    Check ``VJP(dy, *inputs)`` (one gradient per input) against finite differences of
    ``F(*inputs)`` (:func:`checks.check_vjp`), the inputs from a ``.npz`` with one array per
    argument of ``F``, by name (or a ``.npy`` for a function of one array).
``audit [--json PATH]``
    The derivation audit of eq. (1)-(20) in docs/derivation.md (``checks.audit.derivations``).
``selftest``
    The checker's mutation self-test (``checks.audit.selftest``).
``verify [--json PATH]``
    The audit, then every reference layer (``checks.audit.reference``); what ``make verify`` runs.

Exit status: 0 pass; 1 gradient mismatch (or the audit / self-test found a problem);
2 usage error, a TARGET that cannot be loaded or built, an input the layer rejects, or a
broken layer contract. Errors are one line on stderr; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from checks.doors.jax_targets import ACCEPTED as JAX_ACCEPTED
from checks.doors.jax_targets import JaxTarget, JaxTargetError, is_jax_target, pair_problem
from checks.doors.torch_targets import ModuleTarget, is_module
from checks.report.table import render_table

__all__ = ["UsageError", "load_target", "main", "parse_shape"]

METHODS = ("auto", "central", "richardson", "complex")
COVERAGES = ("auto", "full", "sampled", "projected")
PRECISIONS = ("auto", "native")
DTYPES = ("float64", "float32")
_ACCEPTED = f"a layer (forward, backward, params), a torch nn.Module, or {JAX_ACCEPTED}"


class UsageError(Exception):
    """A problem the user can fix from the command line: printed as one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line on stderr (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse ``"2,3,8,8"`` (spaces allowed) into a tuple of positive ints."""
    parts = [p.strip() for p in text.split(",")]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise UsageError(
            f"--input-shape must be comma-separated positive integers, got {text!r}"
        ) from None
    if not shape or any(s < 1 for s in shape):
        raise UsageError(f"--input-shape must be comma-separated positive integers, got {text!r}")
    return shape


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise UsageError(f"TARGET file {str(path)!r} does not exist")
    name = f"_checks_target_{abs(hash(path.resolve()))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot import {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    # let the file import its siblings, as `python file.py` would
    sys.path.insert(0, str(path.resolve().parent))
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise UsageError(f"importing {str(path)!r} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        sys.path.pop(0)
    return module


def _resolve(target: str) -> Any:
    """The object ``module:attr`` or ``file.py:attr`` names (UsageError when it cannot)."""
    if ":" not in target:
        raise UsageError(
            f"TARGET must be 'package.module:factory' or 'path/to/file.py:factory', got {target!r}"
        )
    where, _, attr = target.rpartition(":")
    if not where or not attr:
        raise UsageError(f"TARGET {target!r} needs both a module/file and a factory name")
    if where.endswith(".py") or "/" in where or "\\" in where:
        module = _import_file(Path(where))
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise UsageError(f"cannot import module {where!r}: {exc}") from exc
        except Exception as exc:
            raise UsageError(
                f"importing module {where!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"{where!r} has no attribute {attr!r}") from None
    return obj


def load_target(target: str, kwargs: Mapping[str, Any] | None = None) -> Any:
    """Resolve ``module:attr`` or ``file.py:attr`` and return the layer it names or builds
    (a factory is called with ``kwargs``, the ``--arg`` values); a ``torch.nn.Module`` comes
    back as a :class:`~checks.doors.torch_targets.ModuleTarget`, a pair ``(f, args)`` of a
    JAX function and its arguments as a :class:`~checks.doors.jax_targets.JaxTarget`.

    Raises
    ------
    UsageError
        When TARGET is malformed, does not import, has no such attribute, the factory
        raises, or the result is none of the three (or a JAX target without JAX).
    """
    obj = _resolve(target)
    given = _is_layer(obj) or is_module(obj) or is_jax_target(obj)
    if kwargs and given:
        what = "a JAX target (f, args)" if is_jax_target(obj) else "a layer"
        raise UsageError(f"{target} is {what}, not a factory: --arg has nothing to pass to")
    if not given:
        if not callable(obj):
            raise UsageError(
                f"{target} is an object of type {type(obj).__name__}, neither a callable "
                f"factory nor what a factory returns: {_ACCEPTED}"
            )
        try:
            obj = obj(**(kwargs or {}))
        except Exception as exc:
            raise UsageError(f"factory {target} raised {type(exc).__name__}: {exc}") from exc
    if is_module(obj):  # checked through checks.torch.check_module
        return ModuleTarget(obj)
    if is_jax_target(obj):  # checked through checks.jax.check_function
        try:
            return JaxTarget(*obj)
        except JaxTargetError as exc:
            raise UsageError(f"{target}: {exc}") from exc
    if not _is_layer(obj):
        missing = [n for n in ("forward", "backward") if not callable(getattr(obj, n, None))] + (
            [] if isinstance(getattr(obj, "params", None), Mapping) else ["params (a dict)"]
        )
        problem = pair_problem(obj)
        what = f"a pair, not a JAX target (f, args): {problem}" if problem else (
            f"an object of type {type(obj).__name__}, not a layer: missing {', '.join(missing)}"
        )  # fmt: skip
        raise UsageError(f"{target} returned {what}; accepted: {_ACCEPTED}")
    return obj


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _is_layer(obj: Any) -> bool:
    return (
        not isinstance(obj, type)
        and callable(getattr(obj, "forward", None))
        and callable(getattr(obj, "backward", None))
        and isinstance(getattr(obj, "params", None), Mapping)
    )


#: the options of every check command (layer, function): how to check, and where to write
_SHARED_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--method", {"choices": METHODS, "default": "auto"}),
    ("--coverage", {"choices": COVERAGES, "default": "auto"}),
    ("--precision", {"choices": PRECISIONS, "default": "auto",
                     "help": "auto: difference float32 layers in float64 when a probe allows "
                     "(default)"}),
    ("--seed", {"type": int, "default": 0, "help": "seed of x, dy and sampling"}),
    ("--rtol", {"type": float, "default": None, "help": "override the derived tolerance"}),
    ("--atol", {"type": float, "default": None, "help": "override the derived tolerance"}),
    ("--batch-axis", {"type": int, "default": 0}),
    ("--max-memory", {"metavar": "SIZE", "default": None,
                      "help": "memory the check may use, e.g. 2GB or 512MiB (default: what the "
                      "system reports available); refuse (exit 2) when the estimate exceeds it"}),
    ("--json", {"metavar": "PATH", "default": None, "help": "write the report as JSON"}),
    ("--plot", {"metavar": "PATH", "default": None, "help": "write a PNG heatmap"}),
    ("--html", {"metavar": "FILE", "default": None,
                "help": "write a self-contained HTML page of the check (with the heatmap on a "
                "mismatch)"}),
    ("--workers", {"type": int, "metavar": "N", "default": None,
                   "help": "run the forward calls on N worker processes (a process pool; pays "
                   "for large layers only, see docs/limitations.md)"}),
    ("--debug", {"action": "store_true", "help": "show tracebacks"}),
)  # fmt: skip


def _build_parser() -> _Parser:
    parser = _Parser(
        prog="python -m checks",
        description="Finite-difference gradient checks for hand-written layers.",
        epilog="Exit status: 0 pass, 1 mismatch, 2 usage or contract error.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    layer = sub.add_parser(
        "layer",
        help="check one layer: python -m checks layer pkg.mod:factory --input-shape 2,3,8,8",
        description="Check the gradients of what TARGET names or builds: a layer (forward, "
        "backward, params) or a torch nn.Module, on a seeded random input; or a JAX target, a "
        "pair (f, args) of a JAX function and the tuple of its positional arguments, at those "
        "arguments (checks.jax.check_function).",
    )
    layer.add_argument("target", metavar="TARGET", help="package.module:factory or file.py:factory")
    layer.add_argument(
        "--input-shape",
        metavar="N,C,H,W",
        default=None,
        help="shape of a random normal x, comma-separated (default 2,3,8,8)",
    )
    layer.add_argument(
        "--input",
        metavar="FILE",
        default=None,
        help="x from a .npy file, or the array 'x' (or the only array) of a .npz file, "
        "instead of a random normal x",
    )
    layer.add_argument(
        "--arg",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="keyword argument for the factory, a Python literal (repeatable): --arg c_in=3",
    )
    layer.add_argument(
        "--dtype",
        choices=DTYPES,
        default=None,
        help="dtype of x (default: the layer's parameters' dtype, float64 without parameters); "
        "of a JAX target's floating arrays (default: theirs)",
    )
    layer.add_argument(
        "--order", type=int, choices=(1, 2), default=1,
        help="2: a torch nn.Module's double backward (gradgradcheck's check), a JAX "
        "target's backward pass",
    )  # fmt: skip
    for flag, kw in _SHARED_OPTIONS:
        layer.add_argument(flag, **kw)

    function = sub.add_parser(
        "function",
        help="check a function and its vjp: python -m checks function pkg.mod:f pkg.mod:f_vjp "
        "--input args.npz",
        description="Check VJP(dy, *inputs) against finite differences of F(*inputs), the "
        "inputs read from --input (a .npz with one array per argument of F, by name, or a .npy "
        "for a function of one array).",
    )
    function.add_argument("target", metavar="F", help="package.module:name or file.py:name")
    function.add_argument("vjp", metavar="VJP", help="vjp(dy, *inputs) -> one gradient each")
    function.add_argument("--input", metavar="FILE", required=True, help=".npz or .npy")
    for flag, kw in _SHARED_OPTIONS:
        function.add_argument(flag, **kw)
    audit = sub.add_parser("audit", help="the audit of eq. (1)-(20) of docs/derivation.md")
    audit.add_argument("--json", metavar="PATH", default=None)
    audit.add_argument("--debug", action="store_true")
    selftest = sub.add_parser("selftest", help="the checker's mutation self-test")
    selftest.add_argument("--debug", action="store_true")
    verify = sub.add_parser("verify", help="the audit, then every reference layer (make verify)")
    verify.add_argument("--json", metavar="PATH", default=None)
    verify.add_argument("--debug", action="store_true")
    return parser


def _console(stderr: bool = False) -> Any:
    import os

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # rich falls back to 80 columns when output is piped (CI logs, `make verify | tee`), which
    # cuts the audit's claims to a few characters; a log has room for a wider table.
    piped = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stderr, highlight=False, width=140 if piped else None)


def _memory_limit(text: str | None) -> tuple[int | None, str]:
    """The bytes a check may use and where that number comes from."""
    from checks.engine import memory

    if text is not None:
        try:
            return memory.parse_bytes(text), "--max-memory"
        except ValueError as exc:
            raise UsageError(f"--max-memory: {exc}") from None
    return memory.available(), "available"


def _fits(
    tensors: int, limit: tuple[int | None, str], what: str, fix: str = "use a smaller --input-shape"
) -> None:
    """Refuse (a UsageError: one line, exit 2) when a check of a layer whose tensors take
    ``tensors`` bytes would need more than ``limit``."""
    from checks.engine import memory

    allowed, source = limit
    need = tensors + memory.budget(tensors)
    if allowed is not None and need > allowed:
        raise UsageError(
            f"the check would need about {memory.format_bytes(need)} of memory ({what} "
            f"{memory.format_bytes(tensors)}, and up to {memory.FACTOR}x that, at least "
            f"{memory.format_bytes(memory.FLOOR)}, for the check), {memory.format_bytes(allowed)} "
            f"{source}; {fix}"
        )


def load_callable(target: str) -> Callable[..., Any]:
    """Resolve ``module:attr`` or ``file.py:attr`` to the callable it names (F or VJP of the
    ``function`` command)."""
    obj = _resolve(target)
    if not callable(obj):
        raise UsageError(f"{target} is not callable")
    return obj


def load_inputs(path: str, f: Callable[..., Any]) -> list[np.ndarray]:
    """The inputs of ``f`` from ``--input``: a .npz's arrays by ``f``'s argument names (in
    their order), or a .npy as its one input."""
    import inspect

    data = _load_arrays(path)
    if isinstance(data, np.ndarray):
        return [data]
    arrays = data
    try:
        names = [
            n for n, prm in inspect.signature(f).parameters.items()
            if prm.kind in (prm.POSITIONAL_ONLY, prm.POSITIONAL_OR_KEYWORD)
        ]  # fmt: skip
    except (TypeError, ValueError):
        names = []
    missing = [n for n in names if n not in arrays]
    extra = sorted(set(arrays) - set(names))
    if not names or missing or extra:
        raise UsageError(
            f"--input {path}: a .npz holds one array per argument of the function, by name; "
            f"the function takes {names}, the file holds {sorted(arrays)}"
        )
    return [arrays[n] for n in names]


def parse_args_kv(pairs: Sequence[str]) -> dict[str, Any]:
    """``["c_in=3", "activation='relu'"]`` -> ``{"c_in": 3, "activation": "relu"}``: each value
    a Python literal, or taken as a string when it is not one (``activation=relu``)."""
    import ast

    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name.isidentifier():
            raise UsageError(f"--arg must be NAME=VALUE with NAME an identifier, got {pair!r}")
        try:
            out[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[name] = text
    return out


def _load_arrays(path: str) -> np.ndarray | dict[str, np.ndarray]:
    """``--input``'s contents: the array of a .npy file, or a .npz file's arrays by name."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--input {path}: no such file")
    try:
        data = np.load(p, allow_pickle=False)
    except Exception as exc:
        raise UsageError(
            f"--input {path}: not a .npy/.npz file ({type(exc).__name__}: {exc})"
        ) from exc
    if isinstance(data, np.ndarray):
        return data
    with data:
        return {k: data[k] for k in data.files}


def load_input(path: str) -> np.ndarray:
    """x from ``--input``: a .npy array, or a .npz file's array ``x`` (or its only array)."""
    data = _load_arrays(path)
    if isinstance(data, np.ndarray):
        x = data
    elif "x" in data:
        x = data["x"]
    elif len(data) == 1:
        x = next(iter(data.values()))
    else:
        raise UsageError(
            f"--input {path}: a .npz needs an array named 'x' (or exactly one array), "
            f"it holds {list(data)}"
        )
    if x.dtype.kind != "f":
        raise UsageError(f"--input {path}: x has dtype {x.dtype}, not a floating dtype")
    return x


def reproduce_command(args: argparse.Namespace) -> str:
    """The command line that repeats this check (the options that differ from the defaults,
    and the dtype always: it may have been inferred)."""
    import shlex

    if args.command == "function":
        cmd = ["python", "-m", "checks", "function", args.target, args.vjp,
               "--input", args.input, "--seed", str(args.seed)]  # fmt: skip
    else:
        # a JAX target has no x (its arguments are the factory's), and a dtype only if given
        shape = ["--input-shape", args.input_shape] if args.input_shape else []
        where = ["--input", args.input] if args.input else shape
        dtype = ["--dtype", args.dtype] if args.dtype else []
        cmd = ["python", "-m", "checks", "layer", args.target, *where, *dtype,
               "--seed", str(args.seed)]  # fmt: skip
        for pair in args.arg:
            cmd += ["--arg", pair]
    for flag, value, default in (
        ("--method", args.method, "auto"),
        ("--coverage", args.coverage, "auto"),
        ("--precision", args.precision, "auto"),
        ("--rtol", args.rtol, None),
        ("--atol", args.atol, None),
        ("--batch-axis", args.batch_axis, 0),
        ("--order", getattr(args, "order", 1), 1),
        ("--workers", args.workers, None),
    ):
        if value != default:
            cmd += [flag, str(value)]
    return shlex.join(cmd)


def infer_dtype(layer: Any) -> str:
    """The dtype for ``x`` when ``--dtype`` is not given: the layer's floating parameters'
    (the widest if they differ), float64 for a layer without any (a float32 layer checked
    with float64 ``x`` would not be the layer the user runs)."""
    params = getattr(layer, "params", None)
    dtypes = [
        np.dtype(v.dtype)
        for v in (params.values() if isinstance(params, dict) else ())
        if isinstance(v, np.ndarray) and v.dtype.kind == "f"
    ]
    if not dtypes:
        return "float64"
    name = str(np.result_type(*dtypes))
    return name if name in DTYPES else "float64"


def _run_layer(args: argparse.Namespace) -> int:
    if args.input is not None and args.input_shape is not None:
        raise UsageError("give --input FILE or --input-shape, not both")
    limit = _memory_limit(args.max_memory)
    layer = load_target(args.target, parse_args_kv(args.arg))
    if isinstance(layer, JaxTarget):
        return _run_jax(args, layer, limit)
    if args.order != 1 and not isinstance(layer, ModuleTarget):
        raise UsageError(
            f"--order {args.order} needs a torch nn.Module or {JAX_ACCEPTED}; "
            f"{args.target} is a layer"
        )
    given = load_input(args.input) if args.input is not None else None
    if given is None:
        args.input_shape = args.input_shape or "2,3,8,8"
    shape = parse_shape(args.input_shape) if given is None else tuple(given.shape)
    from checks.doors.api import check_layer
    from checks.engine import memory

    if args.dtype is None:
        # a given x keeps its dtype; a random one takes the layer's
        args.dtype = str(given.dtype) if given is not None else infer_dtype(layer)
    # before x exists: x and dx alone (the output and the parameters come after a forward)
    _fits(2 * int(np.prod(shape)) * np.dtype(args.dtype).itemsize, limit, "x and dx take")
    rng = np.random.default_rng(args.seed)
    if given is not None:
        x = given.astype(args.dtype, copy=False)  # --dtype given: cast as asked
    else:
        x = rng.standard_normal(shape).astype(args.dtype)
    try:
        y = layer.forward(x.copy())
    except Exception as exc:
        raise UsageError(
            f"{args.target} rejected an input of shape {shape} ({args.dtype}): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    y_like = y if isinstance(y, np.ndarray) else np.asarray(y)
    _fits(memory.tensor_bytes(x, y_like, layer.params), limit, "the layer's x, y, dx, "
          "parameters and gradients take")  # fmt: skip
    del y, y_like

    def run(options: dict[str, Any]) -> Any:
        if isinstance(layer, ModuleTarget):
            return layer.check(x, order=args.order, **options)
        return check_layer(layer, x, **options)

    def counting(update: Callable[[int], None]) -> Any:
        if args.workers:  # forward runs there: the layer must pickle without the counter
            return contextlib.nullcontext()
        if isinstance(layer, ModuleTarget):
            return layer.counting(update)
        return _counting_forward(layer, update)

    return _check_and_report(args, f"on x {shape} {args.dtype}", run, counting)


def _run_jax(args: argparse.Namespace, target: JaxTarget, limit: tuple[int | None, str]) -> int:
    """A JAX target ``(f, args)``: :func:`checks.jax.check_function` at the factory's
    arguments (``--dtype``: cast to it), ``--order 2`` its backward pass."""
    try:
        target.validate({"--input": args.input, "--input-shape": args.input_shape,
                       "--workers": args.workers})  # fmt: skip
        if args.dtype is not None:
            target.cast(args.dtype)
    except JaxTargetError as exc:
        raise UsageError(str(exc)) from exc
    _fits(target.tensor_bytes(), limit, "the arguments, their gradients and the outputs take",
          "give the factory smaller arrays")  # fmt: skip

    def run(options: dict[str, Any]) -> Any:
        return target.check(order=args.order, **options)

    return _check_and_report(args, f"on {target.describe()}", run, target.counting)


def _check_and_report(
    args: argparse.Namespace,
    what: str,
    run: Callable[[dict[str, Any]], Any],
    counting: Callable[[Callable[[int], None]], Any],
) -> int:
    """Run one check with a progress line, print its table and failure message (whose
    Reproduce: line is this command), write --json/--plot/--html; return the exit status."""
    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from checks.report.errors import GradientMismatchError, LayerContractError
    from checks.report.messages import format_report

    out = _console()
    options: dict[str, Any] = {
        "method": args.method,
        "coverage": args.coverage,
        "precision": args.precision,
        "seed": args.seed,
        "rtol": args.rtol,
        "atol": args.atol,
        "batch_axis": args.batch_axis,
    }
    report = None
    failure: Exception | None = None
    code = 0
    err_console = _console(stderr=True)
    with (
        _pool(args.workers) as options["executor"],
        Progress(
            SpinnerColumn(),
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed} forward calls"),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
            disable=not err_console.is_terminal,  # no stray blank line when stderr is a file
        ) as progress,
    ):
        task = progress.add_task(f"checking {args.target} {what}", total=None)
        started = time.perf_counter()
        with counting(lambda n: progress.update(task, completed=n)):
            try:
                report = run(options)
            except GradientMismatchError as exc:
                report, failure, code = exc.report, exc, 1
            except LayerContractError as exc:
                report, failure, code = exc.report, exc, 2
        elapsed = time.perf_counter() - started
    if report is not None:
        report.command = reproduce_command(args)
        render_table(report, out)
    if failure is not None:
        # the message again, now that its Reproduce: line is this command
        text = format_report(report) if report is not None else str(failure)
        out.print(text, markup=False, highlight=False, soft_wrap=True)
    if report is not None:
        _write_outputs(report, args.json, args.plot)
        _write_html(report, args.target, args.html)
    if code == 2 and failure is not None:
        problems = list(getattr(report, "problems", None) or [])
        lines = str(failure).strip().splitlines()
        first = problems[0] if problems else (lines[0] if lines else "contract error")
        print(
            f"python -m checks {args.command}: contract error: {_one_line(first)}",
            file=sys.stderr,
        )
    verdict = {0: "[bold green]PASS[/]", 1: "[bold red]MISMATCH[/]", 2: "[bold red]CONTRACT[/]"}
    out.print(f"{verdict[code]} {args.target} ({elapsed:.2f} s)")
    return code


def _run_function(args: argparse.Namespace) -> int:
    """``function F VJP --input FILE``: check_vjp with the inputs of a .npz by F's argument
    names (or a .npy as its one input)."""
    import inspect

    f, vjp = load_callable(args.target), load_callable(args.vjp)
    inputs = load_inputs(args.input, f)
    limit = _memory_limit(args.max_memory)
    _fits(2 * sum(a.nbytes for a in inputs), limit, "the inputs and their gradients take")
    from checks.doors.api import check_vjp

    calls = [0]

    def counted(*xs: Any) -> Any:
        calls[0] += 1
        return f(*xs)

    counted.__name__ = getattr(f, "__name__", "f")
    counted.__signature__ = inspect.signature(f)  # type: ignore[attr-defined]

    def run(options: dict[str, Any]) -> Any:
        # (with workers, f runs there: sent as it is, not wrapped in the counter)
        return check_vjp(f if args.workers else counted, vjp, *inputs, **options)

    @contextlib.contextmanager
    def counting(update: Callable[[int], None]) -> Iterator[None]:
        yield
        update(calls[0])

    shapes = ", ".join(str(a.shape) for a in inputs)
    return _check_and_report(args, f"on inputs {shapes}", run, counting)


def _pool(workers: int | None) -> Any:
    """A process pool of ``workers`` (the platform's start method), or a null context."""
    if not workers:
        return contextlib.nullcontext()
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(workers)


@contextlib.contextmanager
def _counting_forward(layer: Any, report: Callable[[int], None]) -> Iterator[None]:
    """Count the layer's forward calls for the progress bar (an instance attribute that
    shadows the method for the duration of the check; skipped when the layer forbids it)."""
    original = layer.forward
    calls = 0

    def forward(x: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls % 16 == 0:
            report(calls)
        return original(x)

    try:
        layer.forward = forward
    except (AttributeError, TypeError):
        yield
        return
    try:
        yield
    finally:
        report(calls)
        try:
            del layer.forward
        except AttributeError:
            layer.forward = original


def _write_outputs(report: Any, json_path: str | None, plot_path: str | None) -> None:
    if json_path:
        try:
            Path(json_path).write_text(report.to_json(indent=2))
        except OSError as exc:
            raise UsageError(f"cannot write --json {json_path!r}: {exc}") from exc
    if plot_path:
        from checks.report.plotting import plot_report

        try:
            plot_report(report, plot_path)
        except ImportError as exc:
            raise UsageError(str(exc)) from exc
        except OSError as exc:
            raise UsageError(f"cannot write --plot {plot_path!r}: {exc}") from exc


def _write_html(report: Any, target: str, html_path: str | None) -> None:
    """``--html FILE``: the page of ``checks.report.html`` for this one check (the heatmap
    of a failing one when matplotlib is there)."""
    if not html_path:
        return
    from checks.report.html import make_entry, render_html

    png = None
    if not report.ok:
        from checks.report.plotting import plot_png

        with contextlib.suppress(ImportError, ValueError):  # no matplotlib / nothing to draw
            png = plot_png(report)
    page = render_html([make_entry(target, report, png)], title=f"Gradient check of {target}")
    try:
        Path(html_path).write_text(page, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write --html {html_path!r}: {exc}") from exc


def _delegate(module: str, function: str) -> Callable[..., int]:
    try:
        mod = importlib.import_module(module)
        fn: Callable[..., int] = getattr(mod, function)
        return fn
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"{module}.{function} is not available: {exc}") from exc


def _dispatch(args: argparse.Namespace) -> int:
    if getattr(args, "workers", None) is not None and args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    if args.command == "layer":
        return _run_layer(args)
    if args.command == "function":
        return _run_function(args)
    console = _console()
    if args.command == "audit":
        return int(
            _delegate("checks.audit.derivations", "audit_command")(console, json_path=args.json)
        )
    if args.command == "selftest":
        return int(_delegate("checks.audit.selftest", "selftest_command")(console))
    if args.command == "verify":
        return int(
            _delegate("checks.audit.reference", "verify_command")(console, json_path=args.json)
        )
    raise UsageError(f"unknown command {args.command!r}")  # argparse prevents this


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (see the module docstring)."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return _dispatch(args)
    except UsageError as exc:
        if args.debug:
            raise
        print(f"python -m checks {args.command}: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("python -m checks: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(
            f"python -m checks {args.command}: error: {type(exc).__name__}: "
            f"{_one_line(str(exc))} "
            f"(run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 2
