"""Finite-difference formulas: central, one-sided, Richardson, complex step.

Pure functions on arrays. The runner evaluates ``phi(t) = <dy, forward(t)>`` at the stencil
points and hands this module the differences ``r_k = phi(t + s_k) - phi(t)`` (computed from the
outputs as ``<dy, y_k - y_0>`` in float64, which avoids cancelling two large sums); these
functions turn them into derivatives, error estimates and one-sided slopes.

Notes
-----
With steps ``h`` and ``2h``,

* central:   ``D(h) = (phi(t+h) - phi(t-h)) / 2h = phi'(t) + h^2 phi'''(t) / 6 + O(h^4)``;
* one-sided: ``right = (phi(t+h) - phi(t)) / h``, ``left = (phi(t) - phi(t-h)) / h``; at a
  kink they tend to the two one-sided derivatives, elsewhere they differ by ``~h phi''``;
* Richardson: ``R = (4 D(h) - D(2h)) / 3 = phi'(t) + O(h^4)``; ``|D(h) - D(2h)| / 3`` estimates
  the truncation error of ``D(h)`` and bounds that of ``R`` (the central method reports
  ``D(h)`` with ``|D(h) - D(2h)|``, three times that, as a margin for kinks near t);
* complex step: ``phi'(t) = Im phi(t + i h) / h + O(h^2)`` with no subtraction, so ``h`` can be
  tiny and the result is exact to rounding -- valid only when forward is complex-analytic in
  ``t`` (no casts to real, comparisons, ``abs``), which the runner checks with a probe.

Rounding (:func:`numerator_noise`): each output ``y_j`` carries an error ``e_j`` of about
``eps * G_j``, ``G_j = max(|y_j^+|, |y_j^-|, mean |y_0|)`` (the mean guards outputs that are
small by cancellation), over the outputs that changed. Their sum in the numerator,
``sum_j dy_j e_j``, is at most ``eps * sum_j |dy_j| G_j``. When ``dy`` is the checker's own
Gaussian draw it is independent of the roundings, so whatever their correlation (a shared
normaliser) the sum has variance ``sum_j e_j^2`` and its size is
``~eps * sqrt(sum_j (dy_j G_j)^2)``: for a conv kernel element moving ~800 outputs the bound
is ~30x that, enough to hide a kink inside every stencil. A ``dy`` given by the caller gets
the bound (an all-ones ``dy`` adds correlated roundings coherently).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "COMPLEX_STENCIL",
    "REAL_STENCIL",
    "FDResult",
    "combine_complex",
    "combine_real",
    "forward_resolution",
    "noise_from_terms",
    "noise_terms",
    "numerator_noise",
    "perturbed_values",
    "step_sizes",
]

#: multiples of h evaluated by the real methods, in this order
REAL_STENCIL = (1.0, -1.0, 2.0, -2.0)
#: the complex step evaluates once, at t + i h
COMPLEX_STENCIL = (1.0,)


@dataclass
class FDResult:
    """Numerical derivatives of a set of elements, with everything needed to judge them.

    Attributes
    ----------
    value : ndarray
        The derivative reported for the method.
    error : ndarray
        Estimated absolute error of ``value`` (truncation + rounding).
    magnitude : ndarray
        ``sum_j |dy_j| |d y_j / d t|`` (scale of the terms of the derivative).
    left, right : ndarray or None
        One-sided slopes at step h (real methods only).
    left2, right2 : ndarray or None
        One-sided slopes at step 2h.
    onesided_noise : ndarray or None
        Rounding error of a one-sided slope at step h.
    central, central2 : ndarray or None
        ``D(h)`` and ``D(2h)``.
    """

    value: np.ndarray
    error: np.ndarray
    magnitude: np.ndarray
    left: np.ndarray | None = None
    right: np.ndarray | None = None
    left2: np.ndarray | None = None
    right2: np.ndarray | None = None
    onesided_noise: np.ndarray | None = None
    central: np.ndarray | None = None
    central2: np.ndarray | None = None


def step_sizes(t: np.ndarray, rel: float) -> np.ndarray:
    """Per-element step ``rel * max(|t|, 1)`` in float64.

    The step is relative so that an element of magnitude 1e3 is perturbed by as many ulps as
    one of magnitude 1; the floor of 1 keeps the step from vanishing at ``t = 0``.
    """
    return rel * np.maximum(np.abs(t.astype(np.float64, copy=False)), 1.0)


def perturbed_values(
    t: np.ndarray, h: np.ndarray, stencil: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Perturbed values in ``t``'s dtype and the steps actually taken.

    Returns
    -------
    values : ndarray, shape ``(len(stencil),) + t.shape``, dtype of ``t``
        ``t + s h`` rounded to ``t``'s dtype.
    taken : ndarray, same shape, float64
        ``values - t`` computed exactly in float64: the step the layer really saw.
    """
    t64 = t.astype(np.float64, copy=False)
    values = np.stack([(t64 + s * h).astype(t.dtype) for s in stencil])
    taken = values.astype(np.float64) - t64[None]
    return values, taken


#: multiple of the root-sum-square of the outputs' roundings taken as their sum's error. With
#: a random dy the sum is Gaussian with that standard deviation when |e_j| = eps G_j; measured
#: on float32 conv and dense layers (1500 elements against a float64 twin) the ratio of the
#: real error to the root-sum-square had median 0.25 and maximum 1.65
RSS_FACTOR = 1.0


def numerator_noise(
    ya: np.ndarray,
    yb: np.ndarray,
    dy: np.ndarray,
    ybar: float,
    eps: float,
    total: Callable[[np.ndarray], np.ndarray],
    *,
    dy_random: bool,
    resolution: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Estimated rounding error of the numerator ``<dy, ya - yb>``.

    Parameters
    ----------
    ya, yb : ndarray
        Outputs at two stencil points (float64 copies of the layer's outputs).
    dy : ndarray
        Upstream gradient, broadcastable to ``ya``.
    ybar : float
        Mean ``|y|`` at ``t``: the rounding floor of outputs small by cancellation.
    eps : float
        Machine epsilon of the layer's dtype.
    total : callable
        Sums an array shaped like ``ya`` over the outputs of each element (an einsum, or a
        scatter by source for grouped elements).
    dy_random : bool
        ``dy`` is a Gaussian draw independent of the layer (the checker's own).
    resolution : float
        Adds ``resolution * sum_j |dy_j| G_j`` to ``guarded``: for a float32 layer differenced
        in float64, ``forward_eps * width / max(|t|, 1)``, so that divided by the stencil width
        it is the float32 resolution of the forward values a backward reuses (a saturated
        ``1 - sigmoid`` is exactly 0 in float32, ~1e-9 in float64), as the complex step has.

    Returns
    -------
    guarded : ndarray
        What the tolerance uses: ``typical`` when ``dy_random``, else the worst-case bound
        ``eps * sum_j |dy_j| G_j``, ``G_j = max(|ya_j|, |yb_j|, ybar)`` over the outputs that
        differ.
    typical : ndarray
        ``eps * min(bound, RSS_FACTOR * sqrt(sum_j (dy_j G_j)^2))``: the size of the error
        when the roundings are independent. The kink and smoothness tests use it whatever
        ``dy`` is (a smaller noise only marks more stencils as non-smooth).
    """
    terms, squares = noise_terms(ya, yb, dy, ybar, total)
    return noise_from_terms(terms, squares, eps, dy_random=dy_random, resolution=resolution)


def noise_terms(
    ya: np.ndarray,
    yb: np.ndarray,
    dy: np.ndarray,
    ybar: float,
    total: Callable[[np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """The sums :func:`numerator_noise` is made of, ``(sum_j |dy_j| G_j, sum_j (dy_j G_j)^2)``:
    additive over the outputs, so that slices of them may be summed one at a time."""
    g = np.where(ya != yb, np.maximum(np.maximum(np.abs(ya), np.abs(yb)), ybar), 0.0)
    adg = np.abs(dy) * g
    return total(adg), total(adg * adg)


def noise_from_terms(
    terms: np.ndarray,
    squares: np.ndarray,
    eps: float,
    *,
    dy_random: bool,
    resolution: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """``(guarded, typical)`` of :func:`numerator_noise` from the sums of :func:`noise_terms`."""
    bound = eps * terms
    typical = np.minimum(bound, RSS_FACTOR * eps * np.sqrt(squares))
    guarded = typical if dy_random else bound
    if resolution:
        guarded = guarded + resolution * terms
    return guarded, typical


def forward_resolution(rule_h: float, forward_eps: float | None) -> tuple[float, float]:
    """``resolution`` of :func:`numerator_noise` for the h and 2h numerators (widths ``2 h``
    and ``4 h`` with ``h = rule_h max(|t|, 1)``); zero unless ``forward_eps`` is given."""
    if forward_eps is None:
        return 0.0, 0.0
    return 2.0 * rule_h * forward_eps, 4.0 * rule_h * forward_eps


def combine_real(
    r: np.ndarray,
    taken: np.ndarray,
    magnitude_num: np.ndarray,
    noise_num: np.ndarray,
    *,
    method: str,
    typical_num: np.ndarray | None = None,
) -> FDResult:
    """Central or Richardson derivative from the four real stencil points.

    Parameters
    ----------
    r : ndarray, shape ``(4, ...)``
        ``phi(t + s_k h) - phi(t)`` for ``s = (1, -1, 2, -2)``.
    taken : ndarray, shape ``(4, ...)``
        Steps actually taken (signed).
    magnitude_num : ndarray, shape ``(2, ...)``
        ``sum_j |dy_j| |y_j(t+s h) - y_j(t-s h)|`` for s = 1, 2.
    noise_num : ndarray, shape ``(2, ...)``
        Estimated rounding error of the numerators ``<dy, y(t+s h) - y(t-s h)>``, s = 1, 2
        (``guarded`` of :func:`numerator_noise`): enters ``error``.
    typical_num : ndarray, shape ``(2, ...)``, optional
        Its typical size (``typical``), for ``onesided_noise``; ``noise_num`` by default.
    method : {"central", "richardson"}
    """
    rp1, rm1, rp2, rm2 = r
    hp1, hm1, hp2, hm2 = taken
    w1 = hp1 - hm1  # hm1 < 0: the full width of the h stencil
    w2 = hp2 - hm2
    with np.errstate(divide="ignore", invalid="ignore"):
        d1 = (rp1 - rm1) / w1
        d2 = (rp2 - rm2) / w2
        right = rp1 / hp1
        left = rm1 / hm1
        right2 = rp2 / hp2
        left2 = rm2 / hm2
        noise1 = noise_num[0] / w1
        noise2 = noise_num[1] / w2
        magnitude = magnitude_num[0] / w1
        typical = noise_num if typical_num is None else typical_num
        os_noise = typical[0] / np.minimum(hp1, -hm1)
    trunc = np.abs(d1 - d2) / 3.0
    if method == "central":
        value = d1
        # |D(h) - D(2h)| / 3 is D(h)'s truncation for smooth phi; take the whole difference,
        # which also covers a kink that only one of the two stencils straddles
        error = 3.0 * trunc + noise1
    elif method == "richardson":
        value = (4.0 * d1 - d2) / 3.0
        # |D(h) - D(2h)| (not / 3): a margin for several kinks inside the stencil (a bias
        # under a ReLU moves every unit; in float32 some sit within h of 0)
        error = 3.0 * trunc + (4.0 * noise1 + noise2) / 3.0
    else:
        raise ValueError(f"method must be 'central' or 'richardson', got {method!r}")
    return FDResult(
        value=value,
        error=error,
        magnitude=magnitude,
        left=left,
        right=right,
        left2=left2,
        right2=right2,
        onesided_noise=os_noise,
        central=d1,
        central2=d2,
    )


def combine_complex(
    im_num: np.ndarray,
    abs_num: np.ndarray,
    h: np.ndarray,
    eps: float,
    out_num: np.ndarray | None = None,
    t: np.ndarray | None = None,
    forward_eps: float | None = None,
) -> FDResult:
    """Complex-step derivative ``Im phi(t + i h) / h``.

    Parameters
    ----------
    im_num : ndarray
        ``<dy, Im y(t + i h)>``.
    abs_num : ndarray
        ``sum_j |dy_j| |Im y_j(t + i h)|``.
    h : ndarray
        The imaginary steps.
    eps : float
        Machine epsilon of the evaluation.
    out_num : ndarray, optional
        ``sum_j |dy_j| |Re y_j|`` over the outputs that depend on the element.
    t : ndarray, optional
        The elements' values (with ``out_num``).
    forward_eps : float, optional
        Epsilon of the forward values a backward reuses, when it is not ``eps`` (a float32
        layer differenced in float64).

    Notes
    -----
    No difference is taken, so the only error of the value is the rounding of its terms
    (``~eps * magnitude``); the truncation ``h^2 |phi'''| / 6`` is negligible at the table's
    tiny steps. The complex step resolves derivatives far below the precision of the forward
    values a backward pass reuses (``1 - sigmoid(u)`` from a rounded ``sigmoid(u)``), so the
    estimate also carries the forward's own resolution, ``eps * out_num / max(|t|, 1)``: the
    change of ``phi`` that the rounding of its outputs amounts to, per unit of ``t``.
    """
    value = im_num / h
    magnitude = abs_num / h
    error = eps * magnitude
    if out_num is not None and t is not None:
        f_eps = eps if forward_eps is None else forward_eps
        error = error + f_eps * out_num / np.maximum(np.abs(t.astype(np.float64)), 1.0)
    return FDResult(value=value, error=error, magnitude=magnitude)
