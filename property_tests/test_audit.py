"""The derivation audit: schema, every corrected form holds, the documented as-written verdicts.

The documented verdicts (``EXPECTED_AS_WRITTEN``) were derived by hand; this module also pins
the most important ones here, independently of that table, so that an edit to the table cannot
silently change a finding.
"""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from checks.audit.derivations import (
    EXPECTED_AS_WRITTEN,
    REL_TOL,
    audit_command,
    render_markdown,
    rows_to_json,
    run_audit,
)


@pytest.fixture(scope="module")
def rows():
    return run_audit(n_cases=2, seed=0)


def test_json_has_the_documented_schema(rows):
    data = json.loads(json.dumps(rows_to_json(rows)))
    assert len(data) >= 50
    for row in data:
        assert {"equation", "variant", "form", "holds", "max_rel_err", "note"} <= set(row)
        assert isinstance(row["equation"], str) and isinstance(row["variant"], str)
        assert row["form"] in ("as-written", "corrected")
        assert isinstance(row["holds"], bool)
        assert isinstance(row["max_rel_err"], float) and row["max_rel_err"] >= 0
        assert row["holds"] == (row["max_rel_err"] < REL_TOL)
        assert row["note"]


def test_covers_the_required_equations(rows):
    eqs = {r.equation for r in rows}
    for eq in ("1", "3", "5", "6", "8/16", "10/11", "12", "13", "14", "18", "19", "20", "net"):
        assert eq in eqs
    variants = {(r.equation, r.variant) for r in rows}
    for v in ("conv", "xcorr"):
        assert ("14", v) in variants and ("18", v) in variants
    for kind in ("sum", "mean", "max"):
        assert ("10/11", kind) in variants and ("20", kind) in variants
    assert {"batch", "stride", "padding", "dilation"} <= {r.variant for r in rows}


def test_every_corrected_form_holds(rows):
    failing = [(r.equation, r.variant) for r in rows if r.form == "corrected" and not r.holds]
    assert not failing


def test_every_as_written_verdict_is_the_documented_one(rows):
    as_written = {(r.equation, r.variant): r.holds for r in rows if r.form == "as-written"}
    assert as_written == EXPECTED_AS_WRITTEN


@pytest.mark.parametrize(
    ("equation", "variant", "holds"),
    [
        ("14", "conv", True),  # rot180(conv2(A, rot180(delta), 'valid')) is the conv gradient
        ("14", "xcorr", False),  # ... and not the cross-correlation one
        ("18", "conv", False),  # wrong indices and no rot180
        ("18", "xcorr-1map", True),  # with one map and xcorr the typed form is right
        ("10/11", "sum", True),
        ("10/11", "mean", False),  # 1/n^2 missing
        ("10/11", "max", False),  # argmax routing missing
        ("20", "max", True),
        ("net", "conv", False),
    ],
)
def test_key_findings(rows, equation, variant, holds):
    (row,) = [
        r for r in rows if (r.equation, r.variant, r.form) == (equation, variant, "as-written")
    ]
    assert row.holds is holds
    if not holds:
        assert row.max_rel_err > 1e-2  # a real error, not a rounding artefact


def test_audit_is_reproducible_from_its_seed(rows):
    again = run_audit(n_cases=2, seed=0)
    assert [r.max_rel_err for r in again] == [r.max_rel_err for r in rows]


def test_audit_command_prints_writes_json_and_exits_zero(tmp_path):
    console = Console(record=True, width=160)
    path = tmp_path / "audit.json"
    assert audit_command(console, path, n_cases=1) == 0
    assert "audit ok" in console.export_text()
    assert len(json.loads(path.read_text())) >= 40


def test_markdown_names_the_wrong_equations(rows):
    text = render_markdown(rows)
    assert text.startswith("## What the derivation gets right and wrong")
    assert "Eq. (18), conv" in text and "Eq. (10/11), mean" in text
    assert "Eq. (14), conv**" not in text  # (14) is right for true convolution


def test_tables_wrap_notes_and_hints_instead_of_cutting_them(rows):
    """On an 80-column console (a piped CI log) the audit's notes and the self-test's hints
    were cut with an ellipsis; they wrap now, and every word is printed."""
    from checks.audit.derivations import render
    from checks.audit.selftest import CaseResult, SelftestResult
    from checks.audit.selftest import render as render_selftest

    console = Console(record=True, width=80)
    render(rows, console)
    hint = (
        "Hint: K: analytic = rot180(numerical) over the last two axes -- the kernel gradient "
        "is not flipped: eq. (14) is rot180(conv2(A_j, rot180(delta_i), 'valid'))"
    )
    case = CaseResult("dK_not_flipped", "mutant", "rot180 forgotten", "GradientMismatchError",
                      "GradientMismatchError", (hint,), "rot180", True, 0.1)  # fmt: skip
    render_selftest(SelftestResult([case]), console)
    text = console.export_text()
    assert "…" not in text
    words = " ".join(text.replace("│", " ").split())
    longest = max((r.note for r in rows), key=len)
    for word in [*longest.split()[-3:], "'valid'))"]:
        assert word in words
