"""The self-test's torch rows: every case of checks.audit.torch_corpus as it should be when
PyTorch is installed, and one line saying they were skipped when it is not."""

from __future__ import annotations

import io
import sys

import pytest
from rich.console import Console

from checks.audit.selftest import SelftestResult, render, torch_rows


@pytest.mark.torch
def test_with_torch_the_torch_cases_are_rows_judged_as_expected(monkeypatch):
    """Three cases (a correct one, a mismatch, a broken contract) stand for the corpus, which
    property_tests/test_torch_corpus.py runs whole; one with the wrong expectation is not ok."""
    import dataclasses

    from checks.audit import torch_corpus

    pick = {"torch_softplus_order2", "torch_conv2d_dx_one_element", "torch_softplus_no_grad_order2"}
    cases = [c for c in torch_corpus.TORCH_CASES if c.name in pick]
    wrong = dataclasses.replace(cases[0], name="expects_a_pass_wrongly", expected=None)
    monkeypatch.setattr(torch_corpus, "TORCH_CASES", (*cases, wrong))
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(before + 1)  # the rows run on one thread and put the caller's back
    try:
        rows, notes = torch_rows()
        assert torch.get_num_threads() == before + 1
    finally:
        torch.set_num_threads(before)
    assert not notes
    assert [(r.name, r.kind, r.outcome, r.ok) for r in rows] == [
        ("torch_conv2d_dx_one_element", "mutant", "GradientMismatchError", True),
        ("torch_softplus_order2", "correct", "pass", True),
        ("torch_softplus_no_grad_order2", "mutant", "LayerContractError", True),
        ("expects_a_pass_wrongly", "correct", "GradientMismatchError", False),
    ]


def test_without_torch_the_rows_are_skipped_and_the_table_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ModuleNotFoundError
    for name in ("checks.audit.torch_corpus", "checks.audit.torch_functions"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    rows, notes = torch_rows()
    assert rows == [] and len(notes) == 1 and "PyTorch is not installed" in notes[0]
    out = io.StringIO()
    render(SelftestResult([], {}, notes), Console(file=out, width=140))
    assert "torch rows skipped: PyTorch is not installed" in out.getvalue()
