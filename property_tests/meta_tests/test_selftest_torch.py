"""The self-test's torch rows: every case of checks.audit.torch_corpus as it should be when
PyTorch is installed, and one line saying they were skipped when it is not."""

from __future__ import annotations

import io
import sys

import pytest
from rich.console import Console

from checks.audit.selftest import SelftestResult, render, torch_rows


@pytest.mark.torch
def test_with_torch_every_torch_case_is_a_row_as_expected():
    from checks.audit.torch_corpus import TORCH_CASES

    rows, notes = torch_rows()
    assert [r.name for r in rows] == [c.name for c in TORCH_CASES] and not notes
    bad = [(r.name, r.outcome) for r in rows if not r.ok]
    assert not bad
    assert {r.kind for r in rows} == {"mutant", "correct"}


def test_without_torch_the_rows_are_skipped_and_the_table_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ModuleNotFoundError
    for name in ("checks.audit.torch_corpus", "checks.audit.torch_functions"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    rows, notes = torch_rows()
    assert rows == [] and len(notes) == 1 and "PyTorch is not installed" in notes[0]
    out = io.StringIO()
    render(SelftestResult([], {}, notes), Console(file=out, width=140))
    assert "torch rows skipped: PyTorch is not installed" in out.getvalue()
