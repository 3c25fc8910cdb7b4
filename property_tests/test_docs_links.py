"""The docs are self-contained: no link leaves the repository, and every equation the checker's
hints cite is a numbered equation of docs/derivation.md."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DERIVATION = ROOT / "docs" / "derivation.md"
HINTS = ROOT / "checks" / "report" / "hints.py"

# built from parts so that this file does not match itself
OUTSIDE_FILE = "shared" + "/seed"
# [text](target): the target up to the closing parenthesis or a title
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)")
# eq. (14), eq. (10)/(11), eq. (14) and (18), eq. (5), (6)
CITATION = re.compile(r"\beq\.\s*(\(\d+\)(?:\s*(?:/|,|and|or)\s*\(\d+\))*)", re.IGNORECASE)


def _tracked_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, text=True
        ).stdout
        names = [n for n in out.split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        names = []
    if not names:  # not a git checkout (an unpacked sdist): walk the tree instead
        for dirpath, dirnames, filenames in os.walk(ROOT):
            dirnames[:] = [
                d for d in dirnames if not d.startswith(".") and d not in ("__pycache__", "build")
            ]
            base = Path(dirpath).relative_to(ROOT)
            names += [str(base / f) for f in filenames]
    files = [ROOT / n for n in names]
    if DERIVATION not in files:  # tracked once committed; checked before that too
        files.append(DERIVATION)
    return [f for f in files if f.is_file()]


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None  # a binary file (a PNG)


def _tags() -> list[str]:
    return re.findall(r"\\tag\{([^}]*)\}", DERIVATION.read_text(encoding="utf-8"))


def test_no_tracked_file_refers_to_a_file_outside_the_repository() -> None:
    offenders = []
    for path in _tracked_files():
        text = _text(path)
        if text is None:
            continue
        if OUTSIDE_FILE in text:
            offenders.append(f"{path.relative_to(ROOT)}: mentions {OUTSIDE_FILE}")
        if path.suffix == ".md" and "](../" in text and path.parent == ROOT:
            offenders.append(f"{path.relative_to(ROOT)}: a ](../ link from the repository root")
    assert not offenders, "\n".join(offenders)


def test_every_relative_markdown_link_resolves_inside_the_repository() -> None:
    checked = 0
    bad = []
    for path in _tracked_files():
        if path.suffix != ".md":
            continue
        for target in LINK.findall(path.read_text(encoding="utf-8")):
            if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
                continue  # a URL or an anchor on the same page
            resolved = (path.parent / target.split("#")[0]).resolve()
            checked += 1
            if not resolved.is_relative_to(ROOT) or not resolved.exists():
                bad.append(f"{path.relative_to(ROOT)}: ]({target}) -> {resolved}")
    assert checked >= 5  # the README's links to docs/ are among them
    assert not bad, "\n".join(bad)


def test_the_derivation_links_nothing_outside_the_repository() -> None:
    text = DERIVATION.read_text(encoding="utf-8")
    assert not re.search(r"https?://|www\.", text)
    assert "Bouvrie" in text and "2006" in text  # the public reference, cited in plain text


def test_the_derivation_numbers_each_of_the_equations_1_to_20_once() -> None:
    numbered = [t for t in _tags() if t.isdigit()]
    assert sorted(numbered, key=int) == [str(n) for n in range(1, 21)]


def test_every_equation_the_hints_cite_is_numbered_in_the_derivation() -> None:
    source = HINTS.read_text(encoding="utf-8")
    # every citation has the form eq. (N): a bare "eq. 14" would escape the check below
    bare = re.findall(r"\beq\.\s*(?!\()\S+", source, flags=re.IGNORECASE)
    assert not bare, bare
    cited = {n for group in CITATION.findall(source) for n in re.findall(r"\d+", group)}
    assert {"5", "6", "10", "11", "14", "18"} <= cited  # the parser sees the hints' citations
    missing = cited - set(_tags())
    assert not missing, (
        f"checks/report/hints.py cites eq. {sorted(missing, key=int)}, not in {DERIVATION}"
    )
