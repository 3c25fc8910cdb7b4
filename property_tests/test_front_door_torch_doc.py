"""docs/front_door.md's PyTorch section stays true: its ``python torch`` blocks run, in order,
in one namespace; the messages it shows match a fresh run; its corpus table lists every case
of checks.audit.torch_corpus with the verdict the case expects (which test_torch_corpus.py
holds the checker to)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from checks import GradientMismatchError, LayerContractError

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")
from checks.audit.torch_corpus import TORCH_CASES  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "front_door.md"


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def _run_blocks() -> dict:
    namespace: dict = {"__name__": "front_door_torch_doc"}
    for block in _blocks("python torch"):
        exec(compile(block, str(DOC), "exec"), namespace)
    return namespace


def test_the_torch_blocks_run_and_print_what_the_doc_shows() -> None:
    namespace = _run_blocks()
    shown_message, shown_refusal = (b.strip() for b in _blocks("text torch"))
    fresh = namespace["message"].splitlines()
    # the findings, not the tolerance wording: mismatch count, worst rows, hint, note
    for line in shown_message.splitlines():
        if not line.startswith(("  shape", "  tolerance")):
            assert line in fresh, f"docs/front_door.md is stale; a fresh run prints:\n{fresh}"
    assert namespace["refused"].strip() == shown_refusal


def test_the_corpus_table_lists_every_case_with_todays_verdict() -> None:
    rows = {
        m.group(1): m.group(2).strip()
        for m in re.finditer(
            r"^\| `(torch_\w+)` \| \d \| [^|]+ \| ([^|]+) \|", DOC.read_text(), re.M
        )
    }
    assert set(rows) == {c.name for c in TORCH_CASES}
    # the checker gives each case its expected verdict (property_tests/test_torch_corpus.py)
    words = {None: "passes", GradientMismatchError: "mismatch", LayerContractError: "contract"}
    for case in TORCH_CASES:
        assert rows[case.name].startswith(words[case.expected]), (case.name, rows[case.name])
