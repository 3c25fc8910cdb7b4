"""Non-differentiable points: one-sided disagreement means a kink; accept a subgradient there.

Notes
-----
Away from a kink the one-sided slopes differ by ``right - left ~ h phi''(t)``, which halves when
``h`` halves. At a kink (ReLU at 0, tied maxima in max pooling, ``|t|`` at 0) they differ by the
jump of the derivative, which does not shrink with ``h``. The test used here, per element:

* ``|right(h) - left(h)| > safety * 2 * onesided_noise`` (the disagreement is not rounding), and
* ``|right(h) - left(h)| > 0.75 |right(2h) - left(2h)|`` (it does not shrink like ``h``).

A kink *near* ``t`` (at a distance ``0 < delta < 2h``: in float32 one element of a conv kernel
moves ~70 ReLU pre-activations by up to ``2h``) is non-differentiability within the stencil
too. For smooth ``phi``, ``right(2h) - left(2h) = 2 (right(h) - left(h)) + O(h^3)`` (their
difference is the fourth difference ``(phi(2h) - 4 phi(h) + 6 phi(0) - 4 phi(-h) + phi(-2h))
/ 2h``); a kink at ``delta`` in ``(h, 2h)`` moves only the ``2h`` slopes, one in ``(0, h)``
moves both but not in that ratio, so

* ``|(right(2h) - left(2h)) - 2 (right(h) - left(h))| > safety * 3 * onesided_noise`` (3: the
  rounding of that combination in units of a one-sided slope's, ``sqrt(1/4 + 1/4 + 4 + 4)``
  for independent roundings; 5 if they all added up) and ``> |right(h) - left(h)| / 4`` (for
  smooth ``phi`` the ratio is ``O(h^2 phi'''' / phi'')``, whatever the noise)

also marks the element.
The runner first re-evaluates suspect elements with smaller steps (see
:func:`checks.engine.judgement.refine`), so this fallback decides only where the kink stays
within the smallest stencil.

At such a point the analytic value is accepted when it lies in the interval spanned by the
one-sided slopes (at h and 2h), widened by the element's tolerance: any value in
``[phi'_-(t), phi'_+(t)]`` is a valid (Clarke) subgradient of a piecewise-smooth ``phi``.
"""

from __future__ import annotations

import numpy as np

from checks.engine.finite_diff import FDResult

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
        Non-differentiable at ``t`` or within the stencil (either test above).
    accepted : ndarray of bool
        ``kink`` and the analytic value lies between the one-sided slopes (within ``tol``).
    """
    if fd.left is None or fd.right is None or fd.left2 is None or fd.right2 is None:
        raise ValueError("judge_kinks needs one-sided slopes (a real method), got a complex step")
    assert fd.onesided_noise is not None
    d1 = np.abs(fd.right - fd.left)
    d2 = np.abs(fd.right2 - fd.left2)
    with np.errstate(invalid="ignore"):
        at_t = (d1 > safety * 2.0 * fd.onesided_noise) & (d1 > 0.75 * d2)
        fourth = np.abs((fd.right2 - fd.left2) - 2.0 * (fd.right - fd.left))
        near = (fourth > safety * 3.0 * fd.onesided_noise) & (fourth > 0.25 * d1)
        kink = (at_t | near) & np.isfinite(d1)
        lo = np.minimum.reduce([fd.left, fd.right, fd.left2, fd.right2])
        hi = np.maximum.reduce([fd.left, fd.right, fd.left2, fd.right2])
        accepted = kink & (analytic >= lo - tol) & (analytic <= hi + tol)
    return kink, accepted
