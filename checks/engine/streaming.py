"""Reductions of forward outputs as they arrive, in slices: what a check keeps of an output
that it may not hold whole (working memory, :mod:`checks.engine.memory`).

:class:`Sums` reduces a Richardson stencil's four outputs, a pair of points at a time;
:func:`complex_sums` one complex-step output. Both sum over slices of ``SLICE`` outputs, so
their float64 temporaries are that small, whatever the output's size.
"""

from __future__ import annotations

import numpy as np

from checks.engine import finite_diff

__all__ = ["SLICE", "Sums", "complex_sums"]

# outputs reduced at once by Sums (float64 temporaries of this many elements)
SLICE = 1 << 16


class Sums:
    """The numbers a directional Richardson needs, from its four stencil outputs given one at
    a time (each in the baseline's layout, any dtype): ``r`` (``<y_k - y0, dy>``) per point,
    and per pair of points ((0, 1), (2, 3)) the magnitude ``<|ya - yb|, |dy|>`` and the
    rounding estimates of :func:`finite_diff.numerator_noise`. A pair's first output is kept
    until its second arrives; everything is summed over slices of ``SLICE`` outputs."""

    def __init__(
        self,
        y0: np.ndarray,
        dy: np.ndarray,
        res: tuple[float, float],
        *,
        ybar: float,
        eps: float,
        dy_random: bool,
    ) -> None:
        self.res, self.ybar, self.eps, self.dy_random = res, ybar, eps, dy_random
        self.y0, self.dy = y0.reshape(-1), dy.reshape(-1)
        self.r: list[float] = []
        self.mags: list[float] = []
        self.noise: list[float] = []
        self.typical: list[float] = []
        self.first: np.ndarray | None = None

    def add(self, y: np.ndarray, borrowed: bool = False) -> None:
        """Reduce output ``y``; a ``borrowed`` one (the layer's own buffer) is copied if kept."""
        y = y.reshape(-1)
        n = y.size
        self.r.append(sum(
            float(np.dot(y[i : i + SLICE].astype(np.float64) - self.y0[i : i + SLICE],
                         self.dy[i : i + SLICE]))
            for i in range(0, n, SLICE)
        ))  # fmt: skip
        if self.first is None:
            self.first = y.copy() if borrowed else y
            return
        ya, yb, self.first = self.first, y, None
        mag = terms = squares = 0.0
        for i in range(0, n, SLICE):
            a = ya[i : i + SLICE].astype(np.float64)
            b = yb[i : i + SLICE].astype(np.float64)
            d = self.dy[i : i + SLICE]
            mag += float(np.dot(np.abs(a - b), np.abs(d)))
            tt, sq = finite_diff.noise_terms(a, b, d, self.ybar, np.sum)
            terms, squares = terms + float(tt), squares + float(sq)
        nz, ty = finite_diff.noise_from_terms(
            np.float64(terms), np.float64(squares), self.eps,
            dy_random=self.dy_random, resolution=self.res[len(self.mags)],
        )  # fmt: skip
        self.mags.append(mag)
        self.noise.append(float(nz))
        self.typical.append(float(ty))


def complex_sums(y: np.ndarray, dy: np.ndarray) -> tuple[float, float, float]:
    """``(<Im y, dy>, <|Im y|, |dy|>, <|Re y| where Im y != 0, |dy|>)`` (what
    :func:`reduce_outputs` gives the complex step), summed over slices of the outputs."""
    y, dy = y.reshape(-1), dy.reshape(-1)
    im_sum = abs_sum = out_sum = 0.0
    for i in range(0, y.size, SLICE):
        part, d = y[i : i + SLICE], dy[i : i + SLICE]
        im = part.imag.astype(np.float64)
        ad = np.abs(d)
        im_sum += float(np.dot(im, d))
        abs_sum += float(np.dot(np.abs(im), ad))
        out_sum += float(np.dot(np.where(im != 0, np.abs(part.real), 0.0), ad))
    return im_sum, abs_sum, out_sum
