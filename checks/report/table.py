"""The command line's table of a report: one row per tensor, in colour (``rich``).

``python -m checks layer`` and ``function`` print it above the failure message."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["render_table"]


def _fmt(v: float | None) -> str:
    if v is None or not np.isfinite(v):
        return "-"
    return f"{v:.1e}"


def render_table(report: Any, console: Any) -> None:
    """Print the per-tensor results of ``report`` as a coloured rich table."""
    from rich.table import Table

    title = (
        f"{report.layer_name or 'layer'}: method {report.method}, coverage {report.coverage}, "
        f"seed {report.seed}, {report.n_evals} forward calls, {report.elapsed:.2f} s"
    )
    table = Table(title=title, title_justify="left")
    for col, justify in (
        ("tensor", "left"),
        ("shape", "left"),
        ("dtype", "left"),
        ("checked", "right"),
        ("wrong", "right"),
        ("max abs", "right"),
        ("max rel", "right"),
        ("worst", "left"),
        ("result", "left"),
    ):
        table.add_column(
            col,
            justify=justify,  # type: ignore[arg-type]
            no_wrap=True,
        )
    for t in report.tensors:
        pct = 100.0 * t.fraction_checked
        checked = f"{t.n_checked}/{t.n_total}" + (
            f" ({pct:.0f} %)" if t.n_checked < t.n_total else ""
        )
        if t.projections:
            checked += f" + {len(t.projections)} proj."
        worst = "-" if t.worst_index is None else f"{t.name}[{', '.join(map(str, t.worst_index))}]"
        table.add_row(
            t.name,
            str(tuple(t.shape)),
            str(t.dtype),
            checked,
            str(t.n_mismatched),
            _fmt(t.max_abs_err),
            _fmt(t.max_rel_err),
            worst,
            "[bold green]PASS[/]" if t.ok else "[bold red]FAIL[/]",
        )
    console.print(table)
    if report.kinks:
        console.print(f"[yellow]{len(report.kinks)} kink(s) accepted as subgradients[/]")
    for problem in report.problems:
        console.print(f"[red]problem:[/] {problem}")
