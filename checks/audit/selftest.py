"""The checker's self-test: every mutant caught, every correct layer passed, and its power.

``python -m checks selftest`` runs :func:`checks.check_layer` on every case of
:mod:`checks.audit.corpus` and, when PyTorch is installed, the torch door on every case of
:mod:`checks.audit.torch_corpus` (rows ``torch_*``; without PyTorch a line says they were
skipped), and prints a table (case, caught or passed, by which exception, which hint), then,
per finite-difference method, the smallest relative error in a single gradient element that
the checker detects, found by bisection on a planted error.

Examples
--------
>>> from checks.audit.selftest import run_selftest
>>> result = run_selftest(sensitivity=False)          # doctest: +SKIP
>>> result.ok                                         # doctest: +SKIP
True
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from checks.audit.corpus import Case, correct_cases, mutant_cases
from checks.audit.mutants import Mutant, dx_one_element, largest, one_element, set_grad
from checks.report.errors import GradcheckError

__all__ = [
    "SENSITIVITY_SETUPS",
    "CaseResult",
    "SelftestResult",
    "Setup",
    "detection_threshold",
    "run_case",
    "run_selftest",
    "selftest_command",
    "torch_rows",
]


@dataclass(frozen=True)
class CaseResult:
    """The checker's verdict on one corpus case."""

    name: str
    kind: str  # "mutant" or "correct"
    mistake: str
    expected: str  # exception class name, or "pass"
    outcome: str  # exception class name, "pass", or "raised <Type>: ..." for a crash
    hints: tuple[str, ...]
    hint_expected: str | None
    ok: bool
    elapsed: float


@dataclass
class SelftestResult:
    """All case results and the per-method detection thresholds."""

    cases: list[CaseResult]
    #: method -> smallest detected relative single-element error (None: not even 10 %)
    thresholds: dict[str, float | None] = field(default_factory=dict)
    #: what was left out and why (the torch rows without PyTorch)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every case as expected and every measured threshold within its target."""
        targets = {s.label: s for s in SENSITIVITY_SETUPS}
        return all(c.ok for c in self.cases) and all(
            _meets(targets[label], value) for label, value in self.thresholds.items()
        )

    @property
    def n_mutants(self) -> int:
        return sum(c.kind == "mutant" for c in self.cases)


def _check_layer() -> Callable[..., Any]:
    from checks.doors.api import check_layer

    return check_layer


def _hints(err: GradcheckError) -> tuple[str, ...]:
    found = [line.strip() for line in str(err).splitlines() if "Hint" in line]
    report = getattr(err, "report", None)
    if report is not None:
        from checks.report.hints import diagnose

        for tensor in getattr(report, "tensors", []):
            if not getattr(tensor, "ok", True):
                try:
                    found.extend(diagnose(tensor))
                except Exception:  # a hint detector must never hide the verdict
                    pass
    return tuple(dict.fromkeys(found))


def run_case(case: Case, *, seed: int = 0) -> CaseResult:
    """Check one case and judge the outcome against the case's expectation."""
    layer, x = case.make()
    kind = "correct" if case.expected is None else "mutant"
    expected = "pass" if case.expected is None else case.expected.__name__
    hints: tuple[str, ...] = ()
    start = time.perf_counter()
    try:
        _check_layer()(layer, x, seed=seed, **case.options)
        outcome = "pass"
        ok = case.expected is None
    except GradcheckError as err:
        outcome = type(err).__name__
        hints = _hints(err)
        ok = case.expected is not None and isinstance(err, case.expected)
        if ok and case.hint is not None:
            ok = any(case.hint in h for h in hints)
    except Exception as err:  # the checker itself crashed: never ok
        outcome = f"raised {type(err).__name__}: {err}"
        ok = False
    return CaseResult(
        case.name,
        kind,
        case.mistake,
        expected,
        outcome,
        hints,
        case.hint,
        ok,
        time.perf_counter() - start,
    )


# --------------------------------------------------------------------------- sensitivity


def _smooth_conv() -> tuple[Any, np.ndarray]:
    from cnn_ref import Conv2D

    layer = Conv2D(2, 3, (3, 2), activation="tanh", seed=0)
    return layer, np.random.default_rng(1).standard_normal((2, 2, 6, 7))


def _relu_conv() -> tuple[Any, np.ndarray]:
    from cnn_ref import Conv2D

    layer = Conv2D(2, 3, (3, 2), activation="relu", seed=0)
    return layer, np.random.default_rng(1).standard_normal((2, 2, 6, 7))


def _float32_conv() -> tuple[Any, np.ndarray]:
    from cnn_ref import Conv2D

    layer = Conv2D(2, 3, (3, 2), activation="tanh", seed=0, dtype=np.float32)
    return layer, np.random.default_rng(1).standard_normal((2, 2, 6, 7)).astype(np.float32)


def _maxpool() -> tuple[Any, np.ndarray]:
    from cnn_ref import MaxPool2D

    x = (np.random.default_rng(2).permutation(96) - 48.0).reshape(2, 2, 4, 6) * 0.1
    return MaxPool2D(2), x


class Setup(NamedTuple):
    """A layer on which the detection threshold is measured, and the target to meet."""

    label: str
    method: str
    make: Callable[[], tuple[Any, np.ndarray]]
    tensor: str  # "x" or a parameter name: where the single wrong element is planted
    target: float  # issue 3: 1e-6 smooth float64, 1e-4 kink-bearing, 1e-2 float32
    precision: str = "auto"  # "native": float32 layers differenced in float32


#: The layers the detection threshold is measured on.
SENSITIVITY_SETUPS: list[Setup] = [
    Setup("complex (tanh conv)", "complex", _smooth_conv, "K", 1e-6),
    Setup("richardson (tanh conv)", "richardson", _smooth_conv, "K", 1e-6),
    Setup("central (tanh conv)", "central", _smooth_conv, "K", 1e-6),
    Setup("auto (tanh conv)", "auto", _smooth_conv, "K", 1e-6),
    Setup("auto (ReLU conv, kinks)", "auto", _relu_conv, "K", 1e-4),
    Setup("auto (MaxPool2D dx, kinks)", "auto", _maxpool, "x", 1e-4),
    Setup("auto (float32 tanh conv)", "auto", _float32_conv, "K", 1e-2),
    Setup("native float32 (tanh conv)", "auto", _float32_conv, "K", 1e-2, "native"),
]


def _caught(setup: Setup, rel: float) -> bool:
    base, x = setup.make()
    if setup.tensor == "x":
        corrupt = dx_one_element(rel, largest)
    else:
        corrupt = set_grad(setup.tensor, one_element(setup.tensor, rel))
    layer = Mutant(base, corrupt, f"d{setup.tensor} x (1 + {rel:.1e})")
    try:
        _check_layer()(
            layer, x, method=setup.method, coverage="full", seed=0, precision=setup.precision
        )
    except GradcheckError:
        return True
    return False


def detection_threshold(
    setup: Setup,
    *,
    lo: float = 1e-15,
    hi: float = 1e-1,
    steps: int = 12,
) -> float | None:
    """Smallest relative error in one element (the largest of its tensor) the checker detects.

    Bisection on ``log10(rel)`` between ``lo`` and ``hi``; returns the smallest caught value
    found (within ``(log10(hi) - log10(lo)) / 2**steps`` decades), or None when even ``hi`` is
    missed. Assumes detection is monotone in the error's size.
    """
    if not _caught(setup, hi):
        return None
    if _caught(setup, lo):
        return lo
    a, b = math.log10(lo), math.log10(hi)  # a missed, b caught
    for _ in range(steps):
        mid = (a + b) / 2
        if _caught(setup, 10.0**mid):
            b = mid
        else:
            a = mid
    return float(10.0**b)


def torch_rows(*, seed: int = 0) -> tuple[list[CaseResult], list[str]]:
    """The torch corpus (:mod:`checks.audit.torch_corpus`) in float64 through the torch door,
    or no rows and a note saying why when PyTorch is not installed."""
    try:
        from checks.audit.torch_corpus import TORCH_CASES, judge, run_torch_case
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "torch":
            raise
        return [], ["torch rows skipped: PyTorch is not installed (pip install the 'torch' extra)"]
    import torch

    threads = torch.get_num_threads()
    # the corpus' tensors are tiny: one thread. With two on two busy cores the rows took 119 s
    # instead of 1.9 s (OpenMP threads waiting for each other at every small call)
    torch.set_num_threads(1)
    try:
        return [_torch_row(case, seed, judge, run_torch_case) for case in TORCH_CASES], []
    finally:
        torch.set_num_threads(threads)


def _torch_row(case: Any, seed: int, judge: Any, run_torch_case: Any) -> CaseResult:
    """One torch case checked and judged (see :func:`torch_rows`)."""
    start = time.perf_counter()
    err: GradcheckError | None = None
    hints: tuple[str, ...] = ()
    try:
        run_torch_case(case, seed=seed)
        outcome = "pass"
    except GradcheckError as exc:
        err, outcome, hints = exc, type(exc).__name__, _hints(exc)
    except Exception as exc:  # the checker itself crashed: never ok
        err, outcome = None, f"raised {type(exc).__name__}: {exc}"
    ok, _ = judge(case, err)
    ok = ok and not outcome.startswith("raised")
    expected = "pass" if case.expected is None else case.expected.__name__
    kind = "correct" if case.expected is None else "mutant"
    elapsed = time.perf_counter() - start
    return CaseResult(case.name, kind, case.mistake, expected, outcome, hints,
                      case.message, ok, elapsed)  # fmt: skip


def run_selftest(*, sensitivity: bool = True, seed: int = 0) -> SelftestResult:
    """Run the whole corpus, the torch rows when PyTorch is installed, and the detection
    thresholds unless ``sensitivity=False``."""
    results = [run_case(c, seed=seed) for c in [*mutant_cases(), *correct_cases()]]
    extra, notes = torch_rows(seed=seed)
    results += extra
    thresholds: dict[str, float | None] = {}
    if sensitivity:
        for setup in SENSITIVITY_SETUPS:
            try:
                thresholds[setup.label] = detection_threshold(setup)
            except Exception:  # a method the checker does not offer: report, do not crash
                thresholds[setup.label] = None
    return SelftestResult(results, thresholds, notes)


# --------------------------------------------------------------------------- output


def render(result: SelftestResult, console: Any) -> None:
    """Print the case table and the detection thresholds."""
    from rich.table import Table

    table = Table(title="Checker self-test", header_style="bold", pad_edge=False)
    table.add_column("case", style="bold", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    # the outcome and the hint wrap (never cut: a cut hint reads as another hint)
    table.add_column("exception", overflow="fold", ratio=1)
    table.add_column("hint", overflow="fold", ratio=3)
    for c in result.cases:
        if c.kind == "mutant":
            verdict = (
                "caught"
                if c.outcome not in ("pass",) and c.ok
                else ("MISSED" if c.outcome == "pass" else "WRONG")
            )
        else:
            verdict = "passed" if c.ok else "FALSE ALARM"
        colour = "green" if c.ok else "bold red"
        hint = next((h for h in c.hints if c.hint_expected and c.hint_expected in h), None)
        hint = hint or (c.hints[0] if c.hints else "")
        table.add_row(
            c.name,
            f"[{colour}]{verdict}[/]",
            c.outcome,
            hint.replace("Hint:", "").strip(),
        )
    console.print(table)
    for note in result.notes:
        console.print(f"[yellow]{note}[/]")
    if result.thresholds:
        t = Table(
            title="Smallest detected relative error in one gradient element", header_style="bold"
        )
        t.add_column("method (layer)")
        t.add_column("tensor")
        t.add_column("threshold", justify="right")
        t.add_column("target", justify="right")
        t.add_column("meets")
        for setup in SENSITIVITY_SETUPS:
            if setup.label not in result.thresholds:
                continue
            value = result.thresholds[setup.label]
            good = _meets(setup, value)
            t.add_row(
                setup.label,
                setup.tensor,
                "not detected at 1e-1" if value is None else f"{value:.1e}",
                f"{setup.target:.0e}",
                "[green]yes[/]" if good else "[bold red]NO[/]",
            )
        console.print(t)


def _meets(setup: Setup, value: float | None) -> bool:
    # a threshold at the bisection floor would mean rounding noise is flagged: also a failure
    return value is not None and 1e-15 < value <= setup.target


def selftest_command(console: Any, *, sensitivity: bool = True) -> int:
    """``python -m checks selftest``: 0 when every mutant is caught, every correct case passes."""
    result = run_selftest(sensitivity=sensitivity)
    render(result, console)
    bad = [c.name for c in result.cases if not c.ok]
    targets = {s.label: s for s in SENSITIVITY_SETUPS}
    bad += [
        f"threshold {label}"
        for label, value in result.thresholds.items()
        if not _meets(targets[label], value)
    ]
    n_correct = len(result.cases) - result.n_mutants
    if bad:
        console.print(f"[bold red]self-test failed[/]: {', '.join(bad)}")
        return 1
    console.print(
        f"[green]self-test ok[/]: {result.n_mutants} mutants caught with the expected "
        f"exception and hint, {n_correct} correct layers passed"
        + (", every detection threshold within its target" if result.thresholds else "")
    )
    return 0
