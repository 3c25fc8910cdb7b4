"""The checker's self-test: every mutant caught, every correct layer passed, and its power.

``python -m checks selftest`` runs :func:`checks.check_layer` on every case of
:mod:`checks.mutants` and prints a table (case, caught or passed, by which exception, which
hint), then, per finite-difference method, the smallest relative error in a single gradient
element that the checker detects, found by bisection on a planted error.

Examples
--------
>>> from checks.selftest import run_selftest
>>> result = run_selftest(sensitivity=False)          # doctest: +SKIP
>>> result.ok                                         # doctest: +SKIP
True
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from checks.errors import GradcheckError
from checks.mutants import Case, Mutant, correct_cases, mutant_cases

__all__ = [
    "SENSITIVITY_SETUPS",
    "CaseResult",
    "SelftestResult",
    "detection_threshold",
    "run_case",
    "run_selftest",
    "selftest_command",
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

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.cases)

    @property
    def n_mutants(self) -> int:
        return sum(c.kind == "mutant" for c in self.cases)


def _check_layer() -> Callable[..., Any]:
    import checks

    fn: Callable[..., Any] = checks.check_layer  # type: ignore[attr-defined,unused-ignore]
    return fn


def _hints(err: GradcheckError) -> tuple[str, ...]:
    found = [line.strip() for line in str(err).splitlines() if "Hint" in line]
    report = getattr(err, "report", None)
    if report is not None:
        from checks.hints import diagnose

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


#: (label, method, layer factory): the layers the detection threshold is measured on.
SENSITIVITY_SETUPS: list[tuple[str, str, Callable[[], tuple[Any, np.ndarray]]]] = [
    ("complex (tanh conv)", "complex", _smooth_conv),
    ("richardson (tanh conv)", "richardson", _smooth_conv),
    ("central (tanh conv)", "central", _smooth_conv),
    ("central (ReLU conv, kinks)", "central", _relu_conv),
]


def _caught(make: Callable[[], tuple[Any, np.ndarray]], method: str, rel: float) -> bool:
    from checks.mutants import _one_element, _set_grad

    base, x = make()
    layer = Mutant(base, _set_grad("K", _one_element("K", rel)), f"dK x (1 + {rel:.1e})")
    try:
        _check_layer()(layer, x, method=method, coverage="full", seed=0)
    except GradcheckError:
        return True
    return False


def detection_threshold(
    make: Callable[[], tuple[Any, np.ndarray]],
    method: str,
    *,
    lo: float = 1e-15,
    hi: float = 1e-1,
    steps: int = 12,
) -> float | None:
    """Smallest relative error in the largest element of dK that ``method`` detects.

    Bisection on ``log10(rel)`` between ``lo`` and ``hi``; returns the smallest caught value
    found (within ``(log10(hi) - log10(lo)) / 2**steps`` decades), or None when even ``hi`` is
    missed. Assumes detection is monotone in the error's size.
    """
    if not _caught(make, method, hi):
        return None
    if _caught(make, method, lo):
        return lo
    a, b = math.log10(lo), math.log10(hi)  # a missed, b caught
    for _ in range(steps):
        mid = (a + b) / 2
        if _caught(make, method, 10.0**mid):
            b = mid
        else:
            a = mid
    return float(10.0**b)


def run_selftest(*, sensitivity: bool = True, seed: int = 0) -> SelftestResult:
    """Run the whole corpus (and the detection thresholds unless ``sensitivity=False``)."""
    results = [run_case(c, seed=seed) for c in [*mutant_cases(), *correct_cases()]]
    thresholds: dict[str, float | None] = {}
    if sensitivity:
        for label, method, make in SENSITIVITY_SETUPS:
            try:
                thresholds[label] = detection_threshold(make, method)
            except Exception:  # a method the checker does not offer: report, do not crash
                thresholds[label] = None
    return SelftestResult(results, thresholds)


# --------------------------------------------------------------------------- output


def _short(text: str, n: int = 70) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def render(result: SelftestResult, console: Any) -> None:
    """Print the case table and the detection thresholds."""
    from rich.table import Table

    table = Table(title="Checker self-test", header_style="bold", pad_edge=False)
    table.add_column("case", style="bold", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("exception", no_wrap=True)
    width = int(getattr(console, "width", 120) or 120)
    table.add_column("hint", no_wrap=True, overflow="ellipsis", width=max(16, width - 78))
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
            _short(c.outcome, 40),
            _short(hint.replace("Hint:", "").strip()),
        )
    console.print(table)
    if result.thresholds:
        t = Table(
            title="Smallest detected relative error in one element of dK", header_style="bold"
        )
        t.add_column("method")
        t.add_column("threshold", justify="right")
        for label, value in result.thresholds.items():
            t.add_row(label, "not detected at 1e-1" if value is None else f"{value:.1e}")
        console.print(t)


def selftest_command(console: Any, *, sensitivity: bool = True) -> int:
    """``python -m checks selftest``: 0 when every mutant is caught, every correct case passes."""
    result = run_selftest(sensitivity=sensitivity)
    render(result, console)
    bad = [c for c in result.cases if not c.ok]
    n_correct = len(result.cases) - result.n_mutants
    if bad:
        console.print(f"[bold red]self-test failed[/]: {', '.join(c.name for c in bad)}")
        return 1
    console.print(
        f"[green]self-test ok[/]: {result.n_mutants} mutants caught with the expected "
        f"exception and hint, {n_correct} correct layers passed"
    )
    return 0
