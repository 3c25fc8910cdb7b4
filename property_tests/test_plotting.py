"""checks.report.plotting: the heatmap PNG of a real failing check is written, opens, is laid out in
the failing tensor's own shape, and shows both the wrong and the right elements."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")
import matplotlib.image as mpimg

import cnn_ref
from checks import check_layer
from checks.report.errors import GradientMismatchError
from checks.report.plotting import error_ratio, plot_report


class KernelNotFlipped(cnn_ref.Conv2D):
    """Eq. (14) without the outer rot180."""

    def backward(self, dy):
        dx = super().backward(dy)
        self.grads["K"] = np.ascontiguousarray(self.grads["K"][..., ::-1, ::-1])
        return dx


def _failing_report(out_channels: int):
    x = np.random.default_rng(0).standard_normal((2, 2, 6, 6))
    with pytest.raises(GradientMismatchError) as info:
        check_layer(KernelNotFlipped(2, out_channels, 3, seed=1), x)
    return info.value.report


def test_heatmap_png_of_a_failing_check_opens_with_the_expected_content(tmp_path) -> None:
    report = _failing_report(3)
    path = tmp_path / "k.png"
    report.plot(path)
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[0] > 100 and image.shape[1] > 100
    rgb = image[..., :3]
    red = (rgb[..., 0] > 0.6) & (rgb[..., 2] < 0.4)
    blue = (rgb[..., 2] > 0.6) & (rgb[..., 0] < 0.4)
    # rot180 leaves each 3x3 kernel's centre right (blue) and moves the rest (red)
    assert red.sum() > 50 and blue.sum() > 50


def test_one_panel_row_per_output_map(tmp_path) -> None:
    heights = []
    for c_out in (2, 5):
        path = tmp_path / f"k{c_out}.png"
        plot_report(_failing_report(c_out), path)
        heights.append(mpimg.imread(path).shape[0])
    assert heights[1] > heights[0]


def test_error_ratio_is_masked_where_not_checked() -> None:
    report = _failing_report(2)
    k = report.tensor("K")
    ratio = error_ratio(k)
    assert ratio.shape == k.shape
    np.testing.assert_array_equal(np.ma.getmaskarray(ratio), ~k.checked)
    assert (ratio.compressed() > 1).sum() == k.n_mismatched


def test_a_passing_report_plots_every_tensor(tmp_path) -> None:
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 5))
    report = check_layer(cnn_ref.Conv2D(2, 2, 2, seed=0), x)
    path = tmp_path / "ok.png"
    plot_report(report, path)
    assert mpimg.imread(path).shape[0] > 100


def test_missing_matplotlib_names_the_plot_extra(tmp_path, monkeypatch) -> None:
    report = _failing_report(2)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"'plot' extra"):
        plot_report(report, tmp_path / "never.png")


def test_a_long_layer_name_fits_the_picture(tmp_path, monkeypatch) -> None:
    """The title was one centred line: a long layer name was cut at both sides."""
    from matplotlib.figure import Figure

    report = _failing_report(2)
    report.layer_name = "VeryLongWrapperName(" + "inner_layer_with_a_long_name, " * 6 + ")"
    figures = []
    real_savefig = Figure.savefig
    monkeypatch.setattr(
        Figure, "savefig", lambda self, *a, **k: figures.append(self) or real_savefig(self, *a, **k)
    )
    plot_report(report, str(tmp_path / "long.png"))
    fig = figures[0]
    renderer = fig.canvas.get_renderer()
    box = fig._suptitle.get_window_extent(renderer)
    width, height = fig.bbox.width, fig.bbox.height
    assert box.x0 >= 0 and box.x1 <= width and box.y1 <= height
    assert fig._suptitle.get_text().replace("\n", " ").startswith(report.layer_name[:40])
