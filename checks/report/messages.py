"""The one place that turns a :class:`~checks.report.Report` into text.

A failure reads like numpy's ``assert_allclose`` mismatch report, per failing tensor::

    Gradient check failed: Conv2D, tensor K
      shape (8, 4, 3, 3), dtype float64, method complex, coverage full (288 / 288 checked, 100 %)
      tolerance: estimated: 8 x error estimate (truncation + rounding) + ...
    Mismatched elements: 1 / 288 (0.347 %)
    Worst elements:
      index              analytic         numerical         abs err   rel err       tol
      K[2, 0, 1, 2]      1.2345678e+00    1.2283950e+00     6.2e-03   5.0e-03   1.1e-13
    Max absolute difference among checked elements: 0.0062
    Max relative difference among checked elements: 0.005
    Hint: ...
    Reproduce: check_layer(Conv2D, ..., seed=0, method='auto', coverage='auto')

NaN/Inf (by side), excluded kinks and contract problems get their own lines before the hints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from checks.report.data import Report, TensorReport

__all__ = ["format_failure", "format_indices", "format_report", "format_tensor"]

_N_WORST = 5


def format_indices(name: str, idx: list[tuple[int, ...]], total: int) -> str:
    """``K[0, 1, 2, 2], K[1, 0, 0, 0] (and 3 more)``."""
    parts = [f"{name}[{', '.join(map(str, i))}]" for i in idx]
    more = f" (and {total - len(idx)} more)" if total > len(idx) else ""
    return ", ".join(parts) + more


def _idx(name: str, idx: tuple[int, ...]) -> str:
    return f"{name}[{', '.join(map(str, idx))}]"


def _hints(tr: TensorReport) -> list[str]:
    try:
        from checks.report.hints import diagnose
    except ImportError:  # the front door is optional for the numerical core
        return []
    try:
        return list(diagnose(tr))
    except Exception as exc:  # a hint must never hide the failure it explains
        return [f"(hint catalogue failed: {type(exc).__name__}: {exc})"]


def _header(report: Report, tr: TensorReport) -> list[str]:
    pct = 100.0 * tr.fraction_checked
    cov = f"{report.coverage} ({tr.n_checked} / {tr.n_total} checked, {pct:.3g} %"
    if tr.projections:
        cov += f", {len(tr.projections)} random projections"
    cov += ")"
    lines = [
        f"  shape {tr.shape}, dtype {tr.dtype}, method {tr.method or report.method}, "
        f"coverage {cov}",
        f"  tolerance: {tr.tolerance_rule}",
    ]
    if report.precision and not report.precision.startswith("native float64"):
        lines.append(f"  finite differences in {report.precision}")
    return lines


def format_tensor(report: Report, tr: TensorReport) -> str:
    """The failure text of one tensor (header, counts, worst elements, NaN/Inf, kinks, hints)."""
    lines = [f"Gradient check failed: {report.layer_name}, tensor {tr.name}"]
    lines += _header(report, tr)
    n = tr.n_checked
    pct = 100.0 * tr.n_mismatched / n if n else 0.0
    lines.append(f"Mismatched elements: {tr.n_mismatched} / {n} ({pct:.3g} %)")
    worst = [w for w in tr.worst(_N_WORST) if tr.mismatch[w["index"]]]
    if worst:
        lines.append("Worst elements:")
        w0 = max(len(_idx(tr.name, w["index"])) for w in worst) + 2
        lines.append(
            f"  {'index':<{w0}}{'analytic':>16} {'numerical':>16} {'abs err':>9} "
            f"{'rel err':>9} {'tol':>9}"
        )
        for w in worst:
            lines.append(
                f"  {_idx(tr.name, w['index']):<{w0}}{w['analytic']:>16.9g} "
                f"{w['numerical']:>16.9g} {w['abs_err']:>9.2g} {w['rel_err']:>9.2g} "
                f"{w['tol']:>9.2g}"
            )
        lines.append(f"Max absolute difference among checked elements: {tr.max_abs_err:.6g}")
        lines.append(f"Max relative difference among checked elements: {tr.max_rel_err:.6g}")
    for side in ("analytic", "numerical"):
        idx = tr.nonfinite.get(side, [])
        if idx:
            lines.append(
                f"NaN/Inf in the {side} gradient at {format_indices(tr.name, idx, len(idx))}"
            )
    bad_proj = [(a, v, t) for a, v, t in tr.projections if not abs(a - v) <= t]
    if bad_proj:
        loc = tr.located
        found = (
            f"; located by group testing ({loc['tests']} directional tests over the "
            f"{loc['unchecked']} unchecked elements): {loc['mismatched']} of {loc['suspects']} "
            "suspects mismatch, listed above"
            if loc
            else ""
        )
        lines.append(
            f"Random projections failed: {len(bad_proj)} / {len(tr.projections)} "
            f"(an unchecked element is wrong){found}"
        )
        for a, v, t in bad_proj[:3]:
            lines.append(f"  <analytic, v> = {a:.9g}, numerical = {v:.9g}, tol = {t:.2g}")
    for d in tr.tied:
        if d["ok"]:
            continue
        members = d["elements"]
        shown = ", ".join(_idx(tr.name, i) for i in members[:4])
        more = f" (and {len(members) - 4} more)" if len(members) > 4 else ""
        lines.append(
            f"Tied kinks judged together failed: {len(members)} elements equal to "
            f"{d['value']:.6g} ({shown}{more}) moved together change the output at rate "
            f"{d['numerical']:.9g}, but the analytic gradient sums to {d['analytic']:.9g} over "
            f"them (tol {d['tol']:.2g}): each alone lies between its one-sided slopes, together "
            "they do not -- dy sent to every tied maximum? Route it to one (or split it)."
        )
    if tr.kinks:
        shown = ", ".join(_idx(tr.name, i) for i in tr.kinks[:5])
        more = f" (and {len(tr.kinks) - 5} more)" if len(tr.kinks) > 5 else ""
        lines.append(f"Kinks excluded (analytic value is a valid subgradient): {shown}{more}")
    for h in _hints(tr):
        lines.append(f"Hint: {h}")
    return "\n".join(lines)


def format_failure(report: Report) -> str:
    """The full failure message: contract problems, then every failing tensor, then a
    reproduction line."""
    parts = []
    if report.problems:
        head = f"Layer contract broken: {report.layer_name}"
        parts.append("\n".join([head] + [f"  {p}" for p in report.problems]))
    for tr in report.tensors:
        if not tr.ok:
            parts.append(format_tensor(report, tr))
    parts.extend(f"Note: {n}" for n in report.notes)
    parts.append(f"Reproduce: {report.reproduce}")
    return "\n".join(parts)


def format_report(report: Report) -> str:
    """``str(report)``: the failure message, or a one-screen summary of a passing check."""
    if not report.ok:
        return format_failure(report)
    lines = [
        f"Gradient check passed: {report.layer_name} (method {report.method}, "
        f"coverage {report.coverage}, seed {report.seed}, {report.n_evals} forward calls, "
        f"{report.elapsed:.3g} s)"
    ]
    for tr in report.tensors:
        rel = tr.max_rel_err
        lines.append(
            f"  {tr.name:<10} {tr.dtype:<8} {tr.n_checked:>7} / {tr.n_total:<7} checked  "
            f"max rel err {rel:.2g}  {len(tr.projections)} projections"
            + (f"  {len(tr.kinks)} kinks" if tr.kinks else "")
        )
    if report.kinks:
        shown = ", ".join(_idx(n, i) for n, i in report.kinks[:5])
        more = f" (and {len(report.kinks) - 5} more)" if len(report.kinks) > 5 else ""
        lines.append(f"  kinks accepted as subgradients: {shown}{more}")
    if report.precision and not report.precision.startswith("native float64"):
        lines.append(f"  finite differences in {report.precision}")
    lines.extend(f"  note: {n}" for n in report.notes)
    return "\n".join(lines)
