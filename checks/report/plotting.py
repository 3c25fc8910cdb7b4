"""Heatmaps of a gradient check: where in each tensor the analytic gradient is wrong.

Each failing tensor gets one block of panels laid out in the tensor's own shape: a 4-D
tensor ``(A, B, H, W)`` becomes an ``A x B`` grid of ``H x W`` images (``K[i, j]`` at row i,
column j; ``x[n, c]`` likewise), a 3-D tensor a row of images, a 2-D tensor one image and a
1-D tensor a strip. The colour is ``log10(|analytic - numerical| / tol)``: 0 is the
tolerance, blue is within it, red beyond; grey cells were not checked one by one.

matplotlib is an optional dependency (the ``plot`` extra). This module draws on a private
``Figure`` with the Agg canvas, so it never touches pyplot's global state or backend.
"""

from __future__ import annotations

import os
from typing import IO, TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from checks.report.data import Report, TensorReport

__all__ = ["error_ratio", "plot_png", "plot_report"]

_MAX_ROWS = 8
_MAX_COLS = 8
_FLOOR = -3.0  # log10 ratio shown as "far within tolerance"


def _require_matplotlib() -> Any:
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - exercised by a monkeypatched test
        raise ImportError(
            "checks.report.plotting needs matplotlib, which is not installed; install the 'plot' "
            "extra: pip install 'convgrad-harness[plot]' (or pip install matplotlib)"
        ) from exc
    return Figure, FigureCanvasAgg


def error_ratio(tensor: TensorReport) -> np.ma.MaskedArray:
    """``|analytic - numerical| / tol`` per element, masked where not checked.

    Elements where the numerical side is NaN/Inf or the tolerance is zero get ``inf`` when
    they differ (they are errors), ``0`` when they agree exactly.
    """
    a = np.asarray(tensor.analytic, dtype=float)
    n = np.asarray(tensor.numerical, dtype=float)
    tol = np.asarray(tensor.tol, dtype=float)
    checked = np.asarray(tensor.checked, dtype=bool)
    if a.shape != tuple(tensor.shape):
        a = np.broadcast_to(a, tuple(tensor.shape)) if a.size else np.full(tensor.shape, np.nan)
    if checked.shape != a.shape:
        checked = np.zeros(a.shape, dtype=bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.abs(a - n)
        ratio = err / tol
    ratio = np.where(np.isnan(ratio) & checked, np.inf, ratio)
    ratio = np.where(checked & (err == 0), 0.0, ratio)
    return np.ma.masked_array(ratio, mask=~checked)


def _panels(shape: tuple[int, ...]) -> tuple[int, int, tuple[int, int]]:
    """(rows, cols, image shape) of the panel grid for a tensor of ``shape``."""
    if len(shape) == 0:
        return 1, 1, (1, 1)
    if len(shape) == 1:
        return 1, 1, (1, shape[0])
    if len(shape) == 2:
        return 1, 1, (shape[0], shape[1])
    if len(shape) == 3:
        return 1, shape[0], (shape[1], shape[2])
    rows = int(np.prod(shape[:-3]))
    return rows, shape[-3], (shape[-2], shape[-1])


def _image(ratio: np.ma.MaskedArray, r: int, c: int, shape: tuple[int, ...]) -> Any:
    if ratio.ndim <= 2:
        return ratio.reshape(_panels(shape)[2])
    if ratio.ndim == 3:
        return ratio[c]
    return ratio.reshape((-1, *ratio.shape[-3:]))[r, c]


def _label(name: str, shape: tuple[int, ...], r: int, c: int) -> str:
    if len(shape) <= 2:
        return name
    if len(shape) == 3:
        return f"{name}[{c}]"
    if len(shape) == 4:
        return f"{name}[{r}, {c}]"
    lead = np.unravel_index(r, shape[:-3])
    return f"{name}[{', '.join(str(int(i)) for i in lead)}, {c}]"


def plot_png(report: Report) -> bytes:
    """The PNG of :func:`plot_report` as bytes, drawn in memory (for pages that embed it)."""
    import io

    buffer = io.BytesIO()
    plot_report(report, buffer)
    return buffer.getvalue()


def plot_report(report: Report, path: str | os.PathLike[str] | IO[bytes]) -> None:
    """Write a PNG heatmap of the per-element error of each failing tensor to ``path``.

    Parameters
    ----------
    report : Report
        A report from :func:`checks.check_layer` / :func:`checks.check_vjp` (also the
        ``.report`` of a ``GradientMismatchError``). When no tensor failed, every tensor is
        drawn, so the file always shows what was checked.
    path : str, path-like or binary file object
        Where to write the PNG (parent directories must exist).

    Raises
    ------
    ImportError
        When matplotlib is missing; the message names the ``plot`` extra.

    Notes
    -----
    At most 8 x 8 panels are drawn per tensor (the first rows and columns); the title says
    when the grid was cut. Tensors checked only through random projections have no
    per-element data and get a panel saying so.
    """
    Figure, FigureCanvasAgg = _require_matplotlib()
    from matplotlib.colors import TwoSlopeNorm

    tensors = [t for t in report.tensors if not t.ok] or list(report.tensors)
    if not tensors:
        raise ValueError("report has no tensors to plot")

    layouts = []
    for t in tensors:
        rows, cols, _ = _panels(tuple(t.shape))
        layouts.append((min(rows, _MAX_ROWS), min(cols, _MAX_COLS), rows, cols))
    total_rows = sum(lay[0] for lay in layouts)
    width = max(lay[1] for lay in layouts)
    fig_w = max(1.5 * width + 1.6, 6.4)
    title = _fit_title(
        f"{report.layer_name or 'layer'}: {report.method}, {report.coverage}, seed {report.seed}",
        fig_w,
    )
    extra = 0.2 * title.count("\n")  # inches: a long layer name takes more lines, not less room
    fig = Figure(figsize=(fig_w, 1.4 * total_rows + 0.6 * len(tensors) + 0.6 + extra))
    FigureCanvasAgg(fig)
    right = 1.0 - 1.1 / fig_w
    outer = fig.add_gridspec(
        len(tensors),
        1,
        height_ratios=[lay[0] + 0.5 for lay in layouts],
        left=0.04,
        right=right,
        top=1.0 - (0.95 + extra) / fig.get_figheight(),
        bottom=0.02,
    )

    ratios = [error_ratio(t) for t in tensors]
    finite = [r.compressed()[np.isfinite(r.compressed())] for r in ratios]
    top = max((float(f.max()) for f in finite if f.size), default=1.0)
    vmax = max(np.log10(max(top, 1e-300)), 1.0)
    norm = TwoSlopeNorm(vmin=_FLOOR, vcenter=0.0, vmax=vmax)
    cmap = _cmap()

    image = None
    for k, (t, ratio, lay) in enumerate(zip(tensors, ratios, layouts, strict=True)):
        nrows, ncols, all_rows, all_cols = lay
        inner = outer[k].subgridspec(nrows, width, wspace=0.15, hspace=0.35)
        shape = tuple(t.shape)
        # exact agreement (ratio 0) sits at the floor; inf (NaN on one side) at the top
        values = np.clip(np.nan_to_num(ratio.filled(np.nan), nan=np.nan, posinf=10**vmax), 0, None)
        with np.errstate(divide="ignore"):
            logr = np.ma.masked_array(
                np.clip(np.log10(np.maximum(values, 10**_FLOOR)), _FLOOR, vmax), mask=ratio.mask
            )
        cut = " (first 8 x 8 panels)" if (nrows, ncols) != (all_rows, all_cols) else ""
        checked = int(np.count_nonzero(~np.ma.getmaskarray(ratio)))
        status = "FAILED" if not t.ok else "ok"
        header = (
            f"{t.name} {shape} {status}: {t.n_mismatched} mismatched of {checked} checked "
            f"({t.n_total} total){cut}"
        )
        for r in range(nrows):
            for c in range(ncols):
                ax = fig.add_subplot(inner[r, c])
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0 and c == 0:
                    ax.set_title(header, loc="left", fontsize=9, pad=14)
                ax.text(0.0, 1.02, _label(t.name, shape, r, c), transform=ax.transAxes, fontsize=7)
                if checked == 0:
                    ax.text(0.5, 0.5, "projected only", ha="center", va="center", fontsize=7)
                    continue
                image = ax.imshow(
                    _image(logr, r, c, shape), cmap=cmap, norm=norm, interpolation="nearest"
                )
    if image is not None:
        top = 1.0 - (0.95 + extra) / fig.get_figheight()  # below the title
        cax = fig.add_axes((right + 0.15 / fig_w, 0.1, 0.18 / fig_w, top - 0.1))
        bar = fig.colorbar(image, cax=cax)
        bar.set_label("log10(|analytic - numerical| / tol)")
    fig.suptitle(title, fontsize=10, y=1.0 - 0.2 / fig.get_figheight(), va="top")
    target = path if hasattr(path, "write") else os.fspath(path)
    fig.savefig(target, format="png", dpi=80)


def _fit_title(text: str, fig_w: float) -> str:
    """``text`` wrapped to the figure's width (a 10-point title takes ~0.09 inch a character):
    a long layer name was cut at both sides of a centred one-line title."""
    import textwrap

    width = max(20, int(fig_w / 0.09))
    return "\n".join(textwrap.wrap(text, width, break_long_words=True)) or text


def _cmap() -> Any:
    from matplotlib import colormaps

    return colormaps["coolwarm"].with_extremes(bad="0.8")  # grey: not checked
