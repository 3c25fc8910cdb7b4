"""docs/front_door.md stays true: every ``python`` block runs, in order, in one namespace, and
the test functions it defines are run too; the captured failure message matches a fresh run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import settings

from checks.doors.pytest_plugin import GradChecker

DOC = Path(__file__).resolve().parents[1] / "docs" / "front_door.md"


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def test_every_python_block_of_the_front_door_doc_runs(tmp_path, monkeypatch) -> None:
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "front_door_doc"}
    for block in _blocks("python"):
        exec(compile(block, str(DOC), "exec"), namespace)
    assert (tmp_path / "front_door_rot180.png").read_bytes()[:4] == b"\x89PNG"

    # the pytest examples, with the marker's defaults applied by hand
    namespace["test_my_conv"](GradChecker({"coverage": "full", "seed": 3}, "doc::test_my_conv"))
    namespace["test_known_bug_is_found"](GradChecker({}, "doc::test_known_bug_is_found"))
    settings(max_examples=3)(namespace["test_my_conv_gradients"])()


def test_the_captured_failure_message_is_what_the_checker_prints_today() -> None:
    namespace: dict = {"__name__": "front_door_doc"}
    first = _blocks("python")[0].replace('err.report.plot("front_door_rot180.png")', "pass")
    exec(compile(first, str(DOC), "exec"), namespace)
    fresh = namespace["message"]
    captured = _blocks("text")[0].strip().splitlines()
    # the findings must be today's: the mismatch count, the worst elements, the hint. (The
    # wording of the header may evolve in checks/report/messages.py without invalidating the doc.)
    findings = [line.strip() for line in captured if line.startswith(("Mismatched", "Hint:"))]
    for line in captured:
        if line.startswith("  K["):  # worst elements: the index and both values
            index, _, rest = line.strip().partition("]")
            findings += [index + "]", *rest.split()[:2]]
    assert len(findings) >= 17
    for item in findings:
        assert item in fresh, f"docs/front_door.md is stale; a fresh run prints:\n{fresh}"
