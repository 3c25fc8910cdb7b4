"""The HTML report: checks.report.html, the plugin's --gradcheck-html DIR (serial and under
pytest-xdist), pytest-html extras, the CLI's --html FILE, and the page in a headless browser."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import cnn_ref
from checks import GradientMismatchError, check_layer
from checks.report.html import make_entry, read_fragments, render_html, write_fragment

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

LAYERS = """
import numpy as np
import cnn_ref


class KernelNotFlipped(cnn_ref.Conv2D):
    def backward(self, dy):
        dx = super().backward(dy)
        self.grads["K"] = np.ascontiguousarray(self.grads["K"][..., ::-1, ::-1])
        return dx


def x():
    return np.random.default_rng(0).standard_normal((2, 2, 5, 5))


def bad():
    return KernelNotFlipped(2, 3, 2, seed=0)


class MutatesInput(cnn_ref.Dense):
    def forward(self, x):
        y = super().forward(x)
        x *= 2.0
        return y


def mutates():
    return MutatesInput(4, 2, seed=0)
"""

SESSION = """
import pytest
from my_layers import KernelNotFlipped, MutatesInput, x
import cnn_ref


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_good(gradcheck, seed):
    gradcheck(cnn_ref.Conv2D(2, 3, 2, seed=seed), x())


def test_two_checks(gradcheck):
    gradcheck(cnn_ref.Dense(4, 3, seed=0), x().reshape(2, -1)[:, :4])
    gradcheck(cnn_ref.Conv2D(2, 2, 3, seed=1), x())


def test_bad(gradcheck):
    gradcheck(KernelNotFlipped(2, 3, 2, seed=0), x())


def test_contract(gradcheck):
    gradcheck(MutatesInput(4, 2, seed=0), x().reshape(2, -1)[:, :4])
"""


class _Page(HTMLParser):
    """The table rows (cell texts), the failure sections' <pre> texts and the <img> sources."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.headers: list[str] = []
        self.pres: list[str] = []
        self.images: list[dict[str, str | None]] = []
        self._cell: list[str] | None = None
        self._pre: list[str] | None = None
        self._in_body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "pre":
            self._pre = []
        elif tag == "img":
            self.images.append(dict(attrs))

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self._in_body = False
        elif tag in ("td", "th") and self._cell is not None:
            text = "".join(self._cell).strip()
            (self.rows[-1] if tag == "td" else self.headers).append(text)
            self._cell = None
        elif tag == "pre" and self._pre is not None:
            self.pres.append("".join(self._pre))
            self._pre = None

    def handle_data(self, data: str) -> None:
        for buf in (self._cell, self._pre):
            if buf is not None:
                buf.append(data)


def parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    return parser


def _png_of_image(img: dict[str, str | None]) -> bytes:
    src = img.get("src") or ""
    assert src.startswith("data:image/png;base64,")
    return base64.b64decode(src.split(",", 1)[1])


def _failing_report() -> Any:
    layer = cnn_ref.Conv2D(2, 3, 2, seed=0)
    original = layer.backward

    def backward(dy: np.ndarray) -> np.ndarray:
        dx = original(dy)
        layer.grads["K"] = np.ascontiguousarray(layer.grads["K"][..., ::-1, ::-1])
        return dx

    layer.backward = backward  # type: ignore[method-assign]
    with pytest.raises(GradientMismatchError) as info:
        check_layer(layer, np.random.default_rng(0).standard_normal((2, 2, 5, 5)))
    return info.value.report


def _passing_report() -> Any:
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 5))
    return check_layer(cnn_ref.Conv2D(2, 3, 2, seed=0), x)


HEADERS = ["test", "layer", "verdict", "coverage", "max rel. error", "forward calls", "time"]


def _page_with_one_pass_and_one_fail() -> str:
    pytest.importorskip("matplotlib")
    from checks.report.plotting import plot_png

    failing = _failing_report()
    entries = [
        make_entry("test_mod.py::test_good", _passing_report()),
        make_entry("test_mod.py::test_bad", failing, plot_png(failing)),
    ]
    return render_html(entries)


# -- the renderer ---------------------------------------------------------------------------
def test_render_lists_every_check_and_embeds_the_failures_heatmap() -> None:
    page = _page_with_one_pass_and_one_fail()
    doc = parse(page)
    assert doc.headers == HEADERS
    assert [row[0] for row in doc.rows] == ["test_mod.py::test_good", "test_mod.py::test_bad"]
    assert [row[2] for row in doc.rows] == ["PASS", "FAIL"]
    good, bad = doc.rows
    assert good[1] == bad[1] == "Conv2D"
    assert good[3].startswith(("full", "sampled", "projected"))
    assert re.fullmatch(r"\d\.\d\de[+-]\d+", bad[4]), bad[4]
    assert float(bad[4]) > 1e-3 > float(good[4])
    assert int(good[5]) > 0 and int(bad[5]) > 0
    assert re.fullmatch(r"\d+\.\d\d s", good[6])
    assert len(doc.pres) == 1 and "rot180" in doc.pres[0] and "K" in doc.pres[0]
    assert len(doc.images) == 1 and _png_of_image(doc.images[0])[:8] == PNG_MAGIC
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_render_escapes_every_text() -> None:
    report = _failing_report()
    report.layer_name = "<b>Layer</b>"
    page = render_html([make_entry('t.py::test[<script>alert("x")</script>]', report)])
    assert "<script>" not in page and "<b>Layer</b>" not in page
    assert "&lt;script&gt;" in page and "&lt;b&gt;Layer&lt;/b&gt;" in page
    doc = parse(page)
    assert doc.rows[0][0] == 't.py::test[<script>alert("x")</script>]'
    assert doc.images == []  # no PNG given, none embedded


def test_fragments_round_trip_in_test_order(tmp_path: Path) -> None:
    report = _passing_report()
    for name, test, seq in (("b-2", "b", 2), ("a-1", "a", 1), ("b-1", "b", 1)):
        write_fragment(tmp_path, name, {**make_entry(test, report), "seq": seq})
    assert [(e["test_id"], e["seq"]) for e in read_fragments(tmp_path)] == [
        ("a", 1),
        ("b", 1),
        ("b", 2),
    ]
    assert read_fragments(tmp_path / "nowhere") == []


def test_plot_png_is_the_png_plot_report_writes(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from checks.report.plotting import plot_png, plot_report

    report = _failing_report()
    plot_report(report, tmp_path / "r.png")
    png = plot_png(report)
    assert png[:8] == PNG_MAGIC
    assert png == (tmp_path / "r.png").read_bytes()


# -- the pytest plugin ----------------------------------------------------------------------
@pytest.mark.parametrize("workers", [None, "2"], ids=["serial", "xdist"])
def test_plugin_writes_one_page_of_every_check(pytester: pytest.Pytester, workers: Any) -> None:
    pytest.importorskip("matplotlib")
    if workers:
        pytest.importorskip("xdist")
    pytester.makepyfile(my_layers=LAYERS, test_session=SESSION)
    stale = pytester.path / "out" / ".fragments"
    stale.mkdir(parents=True)
    (stale / "old-session.json").write_text('{"test_id": "stale", "report": {"ok": true}}')
    args = ["-p", "no:cacheprovider", "--gradcheck-html", "out"]
    result = pytester.runpytest(*args, *(["-n", workers] if workers else []))
    result.assert_outcomes(passed=4, failed=2)
    result.stdout.fnmatch_lines(["*gradcheck: 7 check(s) in the HTML report in out*index.html"])
    page = (pytester.path / "out" / "index.html").read_text(encoding="utf-8")
    doc = parse(page)
    assert doc.headers == HEADERS
    ids = [row[0] for row in doc.rows]
    assert ids == [
        "test_session.py::test_bad",
        "test_session.py::test_contract",
        "test_session.py::test_good[0]",
        "test_session.py::test_good[1]",
        "test_session.py::test_good[2]",
        "test_session.py::test_two_checks",
        "test_session.py::test_two_checks",
    ]
    assert [row[1] for row in doc.rows][-2:] == ["Dense", "Conv2D"]  # in the order they ran
    assert [row[2] for row in doc.rows] == ["FAIL", "CONTRACT"] + ["PASS"] * 5
    assert len(doc.pres) == 2 and "rot180" in doc.pres[0]
    assert "mutate" in doc.pres[1] or "modif" in doc.pres[1], doc.pres[1]
    pngs = [_png_of_image(img) for img in doc.images]
    assert pngs and all(png[:8] == PNG_MAGIC for png in pngs)
    assert 'alt="heatmap of the per-element error of test_session.py::test_bad"' in page


def test_plugin_writes_no_page_without_the_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(my_layers=LAYERS, test_session=SESSION)
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "good")
    result.assert_outcomes(passed=3, deselected=3)
    assert not list(pytester.path.rglob("index.html"))


@pytest.mark.parametrize("workers", [None, "2"], ids=["serial", "xdist"])
def test_pytest_html_rows_carry_the_failing_checks_message_and_heatmap(
    pytester: pytest.Pytester, workers: Any
) -> None:
    pytest.importorskip("pytest_html")
    pytest.importorskip("matplotlib")
    if workers:
        pytest.importorskip("xdist")
    pytester.makepyfile(my_layers=LAYERS, test_session=SESSION)
    tests = ["test_session.py::test_bad", "test_session.py::test_good"]
    args = ["-p", "no:cacheprovider", *tests, "--html=r.html", "--self-contained-html"]
    result = pytester.runpytest(*args, *(["-n", workers] if workers else []))
    result.assert_outcomes(passed=3, failed=1)
    page = (pytester.path / "r.html").read_text(encoding="utf-8")
    assert "gradcheck 1: message" in page
    assert (
        "rot180"
        in base64.b64decode(
            re.search(r"data:text/plain;charset=utf-8;base64,([A-Za-z0-9+/=]+)", page).group(1)  # type: ignore[union-attr]
        ).decode()
    )
    assert re.search(r"gradcheck 1&#34;, &#34;format_type&#34;: &#34;image", page)
    assert "data:image/png;base64,iVBORw0KGgo" in page  # the PNG magic, base64-encoded
    assert "gradcheck 2" not in page  # one failing check, passing tests get no extras


# -- the command line -----------------------------------------------------------------------
def test_cli_html_writes_the_page_of_one_check(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    (tmp_path / "my_layers.py").write_text(LAYERS)
    out = tmp_path / "check.html"
    target = f"{tmp_path / 'my_layers.py'}:bad"
    command = [sys.executable, "-m", "checks", "layer", target, "--input-shape", "2,2,6,6"]
    proc = subprocess.run(
        [*command, "--html", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    doc = parse(out.read_text(encoding="utf-8"))
    assert [row[0] for row in doc.rows] == [target]
    assert doc.rows[0][2] == "FAIL"
    assert len(doc.pres) == 1 and "rot180" in doc.pres[0]
    assert "Reproduce:" in doc.pres[0] and "python -m checks layer" in doc.pres[0]
    assert len(doc.images) == 1 and _png_of_image(doc.images[0])[:8] == PNG_MAGIC


def test_cli_html_of_a_broken_contract(tmp_path: Path) -> None:
    from checks.doors.cli import main

    (tmp_path / "my_layers.py").write_text(LAYERS)
    out = tmp_path / "check.html"
    target = f"{tmp_path / 'my_layers.py'}:mutates"
    assert main(["layer", target, "--input-shape", "3,4", "--html", str(out)]) == 2
    doc = parse(out.read_text(encoding="utf-8"))
    assert [row[:3] for row in doc.rows] == [[target, "MutatesInput", "CONTRACT"]]
    assert len(doc.pres) == 1


def test_cli_html_to_an_unwritable_place_is_a_usage_error(tmp_path: Path) -> None:
    from checks.doors.cli import main

    args = ["layer", "cnn_ref:Flatten", "--input-shape", "2,3,2,2"]
    assert main([*args, "--html", str(tmp_path / "no" / "such" / "dir" / "x.html")]) == 2


# -- a real browser -------------------------------------------------------------------------
def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
    ]
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=120)


def test_the_page_in_a_headless_browser(tmp_path: Path) -> None:
    """The page loads in chromium, its DOM lists both checks, and the failing check's heatmap
    shows in a screenshot: strongly red pixels (coolwarm beyond the tolerance) are there."""
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("chromium is not installed")
    page = tmp_path / "index.html"
    page.write_text(_page_with_one_pass_and_one_fail(), encoding="utf-8")

    dom = _chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    doc = parse(dom.stdout)
    assert [row[0] for row in doc.rows] == ["test_mod.py::test_good", "test_mod.py::test_bad"]
    assert len(doc.images) == 1

    shot = tmp_path / "shot.png"
    proc = _chromium(
        f"--screenshot={shot}",
        "--window-size=1200,1600",
        "--hide-scrollbars",
        page.as_uri(),
        profile=tmp_path / "profile-shot",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.read_bytes()[:8] == PNG_MAGIC
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (1600, 1200)
    assert float(pixels.std()) > 0.05  # not a blank page
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    red = (r > 0.6) & (g < 0.35) & (b < 0.35)  # coolwarm's red end: the K mismatches
    blue = (b > 0.6) & (r < 0.45)  # coolwarm's blue end (the colour bar)
    assert blue.sum() > 100, blue.sum()
    # rows crossed by whole red panels (the verdict's red "FAIL" text is a few pixels wide)
    panels = np.nonzero(red.sum(axis=1) >= 80)[0]
    assert len(panels) > 50, len(panels)
    assert panels.min() > 300  # below the table and the message: the embedded heatmap
