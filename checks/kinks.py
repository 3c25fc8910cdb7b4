"""Non-differentiable points: one-sided disagreement means a kink; accept a subgradient there.

Notes
-----
Away from a kink the one-sided slopes differ by ``right - left ~ h phi''(t)``, which halves when
``h`` halves. At a kink (ReLU at 0, tied maxima in max pooling, ``|t|`` at 0) they differ by the
jump of the derivative, which does not shrink with ``h``. The test used here, per element:

* ``|right(h) - left(h)| > safety * 2 * onesided_noise`` (the disagreement is not rounding), and
* ``|right(h) - left(h)| > 0.75 |right(2h) - left(2h)|`` (it does not shrink like ``h``).

At such a point the analytic value is accepted when it lies in the interval spanned by the
one-sided slopes (at h and 2h), widened by the element's tolerance: any value in
``[phi'_-(t), phi'_+(t)]`` is a valid (Clarke) subgradient of a piecewise-smooth ``phi``.
"""

from __future__ import annotations

import numpy as np

from checks.finite_diff import FDResult

__all__ = ["judge_kinks"]


def judge_kinks(
    fd: FDResult, analytic: np.ndarray, tol: np.ndarray, safety: float
) -> tuple[np.ndarray, np.ndarray]:
    """Which elements sit at a kink, and at which of those the analytic value is a subgradient.

    Parameters
    ----------
    fd : FDResult
        Real-method result (must carry one-sided slopes).
    analytic : ndarray
        Analytic derivatives of the same elements.
    tol : ndarray
        Per-element tolerance.
    safety : float
        The dtype rule's safety factor.

    Returns
    -------
    kink : ndarray of bool
    accepted : ndarray of bool
        ``kink`` and the analytic value lies between the one-sided slopes (within ``tol``).
    """
    if fd.left is None or fd.right is None or fd.left2 is None or fd.right2 is None:
        raise ValueError("judge_kinks needs one-sided slopes (a real method), got a complex step")
    assert fd.onesided_noise is not None
    d1 = np.abs(fd.right - fd.left)
    d2 = np.abs(fd.right2 - fd.left2)
    with np.errstate(invalid="ignore"):
        kink = (d1 > safety * 2.0 * fd.onesided_noise) & (d1 > 0.75 * d2) & np.isfinite(d1)
        lo = np.minimum.reduce([fd.left, fd.right, fd.left2, fd.right2])
        hi = np.maximum.reduce([fd.left, fd.right, fd.left2, fd.right2])
        accepted = kink & (analytic >= lo - tol) & (analytic <= hi + tol)
    return kink, accepted
