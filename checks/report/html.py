"""An HTML page of gradient checks: one row per check, and each failure's message and heatmap.

The page is one self-contained file -- inline CSS, no script, no external resource -- so it
can be opened from disk, attached to a CI run or mailed. Heatmaps are embedded as
``data:image/png;base64,...``.

An *entry* is a JSON-ready dict, so that entries written by separate processes (pytest-xdist
workers) can be collected into one page afterwards::

    {"test_id": str,            # the pytest node id, or the CLI's target
     "report": dict,            # Report.to_dict()
     "message": str,            # str(report) for a failing check, "" for a passing one
     "png": str | None,         # base64 of the heatmap PNG (failing checks), or None
     "seq": int}                # optional: the check's number within its test (ordering)

:func:`make_entry` builds one from a :class:`~checks.report.data.Report`, :func:`render_html`
renders a list of them; :func:`write_fragment` / :func:`read_fragments` / :func:`write_index`
are the files the pytest plugin's ``--gradcheck-html DIR`` goes through (one fragment per
check in ``DIR/.fragments``, then ``DIR/index.html``).
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from checks.report.data import Report

__all__ = [
    "clear_fragments",
    "make_entry",
    "read_fragments",
    "render_html",
    "write_fragment",
    "write_index",
]

FRAGMENTS = ".fragments"

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.fail td.verdict { background: #fbe3e3; color: #a00; font-weight: bold; }
tr.pass td.verdict { background: #e3f5e3; color: #060; font-weight: bold; }
code, pre { font-family: ui-monospace, monospace; }
pre { background: #f7f7f7; border: 1px solid #ddd; padding: 0.8em; white-space: pre-wrap; }
img.heatmap { max-width: 100%; border: 1px solid #ddd; }
"""


def make_entry(test_id: str, report: Report, png: bytes | None = None) -> dict[str, Any]:
    """The page's entry for one check (see the module docstring)."""
    return {
        "test_id": test_id,
        "report": report.to_dict(),
        "message": "" if report.ok else str(report),
        "png": base64.b64encode(png).decode("ascii") if png else None,
    }


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _max_rel(report: dict[str, Any]) -> str:
    tensors = report.get("tensors") or []
    values = [t.get("max_rel_err") for t in tensors]
    if any(v is None for v in values):
        return "inf/nan"
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return f"{max(finite):.2e}" if finite else "-"


def _coverage(report: dict[str, Any]) -> str:
    tensors = report.get("tensors") or []
    checked = sum(int(t.get("n_checked") or 0) for t in tensors)
    total = sum(int(t.get("n_total") or 0) for t in tensors)
    share = f" ({checked} of {total} elements)" if total else ""
    return f"{report.get('coverage', '')}{share}"


def _verdict(report: dict[str, Any]) -> str:
    if report.get("ok"):
        return "PASS"
    return "CONTRACT" if report.get("problems") else "FAIL"


def _row(k: int, entry: dict[str, Any]) -> str:
    report = entry.get("report") or {}
    ok = bool(report.get("ok"))
    test = _e(entry.get("test_id", ""))
    link = test if ok else f'<a href="#check-{k}">{test}</a>'
    cells = [
        f"<td><code>{link}</code></td>",
        f"<td>{_e(report.get('layer_name') or 'layer')}</td>",
        f'<td class="verdict">{_verdict(report)}</td>',
        f"<td>{_e(_coverage(report))}</td>",
        f'<td class="num">{_e(_max_rel(report))}</td>',
        f'<td class="num">{int(report.get("n_evals") or 0)}</td>',
        f'<td class="num">{float(report.get("elapsed") or 0.0):.2f} s</td>',
    ]
    return f'<tr class="{"pass" if ok else "fail"}" id="row-{k}">{"".join(cells)}</tr>'


def _failure(k: int, entry: dict[str, Any]) -> str:
    report = entry.get("report") or {}
    test = _e(entry.get("test_id", ""))
    parts = [
        f'<section class="failure" id="check-{k}">',
        f"<h2>{_verdict(report)}: <code>{test}</code></h2>",
        f"<pre>{_e(entry.get('message') or '')}</pre>",
    ]
    png = entry.get("png")
    if png:
        alt = _e(f"heatmap of the per-element error of {entry.get('test_id', '')}")
        parts.append(f'<img class="heatmap" alt="{alt}" src="data:image/png;base64,{_e(png)}">')
    parts.append("</section>")
    return "\n".join(parts)


def render_html(entries: list[dict[str, Any]], title: str = "Gradient checks") -> str:
    """A self-contained HTML page of ``entries`` (dicts as in the module docstring).

    The table lists every check: test id, layer, verdict, coverage, max relative error,
    forward calls and time; below it each failing check has its message and, when given,
    its heatmap. Every text is HTML-escaped.
    """
    failed = sum(1 for e in entries if not (e.get("report") or {}).get("ok"))
    rows = "\n".join(_row(k, e) for k, e in enumerate(entries))
    failures = "\n".join(
        _failure(k, e) for k, e in enumerate(entries) if not (e.get("report") or {}).get("ok")
    )
    header = (
        "<tr><th>test</th><th>layer</th><th>verdict</th><th>coverage</th>"
        "<th>max rel. error</th><th>forward calls</th><th>time</th></tr>"
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{_e(title)}</h1>\n"
        f'<p class="summary">{len(entries)} check(s), {failed} failing.</p>\n'
        f'<table class="checks">\n<thead>{header}</thead>\n<tbody>\n{rows}\n</tbody>\n</table>\n'
        f"{failures}\n</body>\n</html>\n"
    )


def write_fragment(directory: str | os.PathLike[str], name: str, entry: dict[str, Any]) -> Path:
    """Write one entry as ``directory/.fragments/name.json`` (``name`` unique per check)."""
    folder = Path(directory) / FRAGMENTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    tmp = folder / f".{name}.json.tmp"
    tmp.write_text(json.dumps(entry))
    tmp.replace(path)  # whole files only: a reader never sees half a fragment
    return path


def read_fragments(directory: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every fragment in ``directory/.fragments``, in test-id order (then ``seq``)."""
    folder = Path(directory) / FRAGMENTS
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        entry = json.loads(path.read_text())
        found.append((str(entry.get("test_id", "")), int(entry.get("seq", 0)), path.name, entry))
    return [f[3] for f in sorted(found, key=lambda f: (f[0], f[1], f[2]))]


def clear_fragments(directory: str | os.PathLike[str]) -> None:
    """Remove the fragments of an earlier session."""
    folder = Path(directory) / FRAGMENTS
    for path in folder.glob("*.json") if folder.is_dir() else []:
        path.unlink(missing_ok=True)


def write_index(directory: str | os.PathLike[str], title: str = "Gradient checks") -> Path:
    """Render every fragment in ``directory`` into ``directory/index.html``; return its path."""
    path = Path(directory) / "index.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(read_fragments(directory), title=title), encoding="utf-8")
    return path
