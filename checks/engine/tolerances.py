"""Step sizes and tolerances, keyed by dtype, and the error-estimate tolerance rule.

The table below is the only place where numbers that depend on the floating-point format live
(as jax's ``public_test_util._default_tolerance`` does). A tolerance is never scaled by the size
of an array: every element gets its own tolerance from the estimated error of *its* numerical
value.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

__all__ = ["DTYPE_TABLE", "DtypeRule", "promoted", "rule_for", "tolerance"]


@dataclass(frozen=True)
class DtypeRule:
    """Numbers used for one floating-point format.

    Attributes
    ----------
    eps : float
        Machine epsilon of the format the layer computes in.
    h_central : float
        Relative step of central differences, ``h = h_central * max(|t|, 1)``. The optimum of
        truncation ``h^2 |f'''| / 6`` against rounding ``eps |phi| / h`` is ``~eps^(1/3)``.
    h_complex : float
        Relative step of the complex step; there is no cancellation, so it can be tiny.
    safety : float
        Multiplies the estimated error of a numerical value to give its tolerance.
    analytic_rounding : float
        Multiple of ``eps * sum_j |dy_j d y_j / d t|`` allowed for the analytic gradient's
        own rounding (a backward pass sums the same terms in another order).
    analytic_relative : float
        Relative error allowed for the analytic value whatever the estimate: a backward pass
        may lose digits to cancellation the forward does not have (``1 - sigmoid(u)`` at a
        saturated unit); about ``7 sqrt(eps)``, still 10x below the 1e-6 (float64) and 1 %
        (float32) errors the checker must catch.
    complex_dtype : numpy dtype
        The complex type the complex step evaluates in.
    analytic_eps : float, optional
        Epsilon of the analytic gradient's own rounding when it differs from ``eps`` (a float32
        layer whose numerical side is evaluated in float64; see :func:`promoted`).
    """

    eps: float
    h_central: float
    h_complex: float
    safety: float
    analytic_rounding: float
    analytic_relative: float
    complex_dtype: type[np.complexfloating]
    analytic_eps: float | None = None


_EPS64 = float(np.finfo(np.float64).eps)
_EPS32 = float(np.finfo(np.float32).eps)

#: dtype -> rule. float16 layers are evaluated like float32 ones but with their own epsilon.
DTYPE_TABLE: dict[np.dtype, DtypeRule] = {
    np.dtype(np.float64): DtypeRule(
        eps=_EPS64,
        h_central=_EPS64 ** (1 / 3),  # 6.1e-6
        h_complex=1e-20,
        safety=8.0,
        analytic_rounding=64.0,
        analytic_relative=1e-7,
        complex_dtype=np.complex128,
    ),
    np.dtype(np.float32): DtypeRule(
        eps=_EPS32,
        h_central=_EPS32 ** (1 / 3),  # 4.9e-3
        h_complex=1e-10,
        safety=8.0,
        analytic_rounding=64.0,
        analytic_relative=1e-3,
        complex_dtype=np.complex64,
    ),
    np.dtype(np.float16): DtypeRule(
        eps=float(np.finfo(np.float16).eps),
        h_central=float(np.finfo(np.float16).eps) ** (1 / 3),
        h_complex=1e-4,
        safety=8.0,
        analytic_rounding=64.0,
        analytic_relative=2e-2,
        complex_dtype=np.complex64,
    ),
}


def rule_for(*dtypes: np.dtype) -> DtypeRule:
    """The rule of the least precise floating dtype among ``dtypes``.

    Integer or boolean dtypes are ignored (they are not perturbed); with no floating dtype at
    all the float64 rule applies.

    Raises
    ------
    TypeError
        If a dtype is complex or an unsupported float (the checker differentiates real
        functions of real arguments).
    """
    best: DtypeRule | None = None
    for dt in dtypes:
        dt = np.dtype(dt)
        if dt.kind == "c":
            raise TypeError(f"complex dtype {dt} is not supported; the checker needs real tensors")
        if dt.kind != "f":
            continue
        if dt not in DTYPE_TABLE:
            raise TypeError(f"dtype {dt} has no entry in checks.engine.tolerances.DTYPE_TABLE")
        r = DTYPE_TABLE[dt]
        if best is None or r.eps > best.eps:
            best = r
    return best if best is not None else DTYPE_TABLE[np.dtype(np.float64)]


def promoted(native: DtypeRule) -> DtypeRule:
    """The rule for a layer of ``native`` precision whose forward is evaluated in float64.

    Steps, rounding and the complex type are float64's (the finite differences are computed
    in float64); the allowances for the analytic gradient (its rounding, its relative error)
    stay those of the layer's own dtype, since backward still runs in it.
    """
    f64 = DTYPE_TABLE[np.dtype(np.float64)]
    return replace(
        f64,
        analytic_rounding=native.analytic_rounding,
        analytic_relative=native.analytic_relative,
        analytic_eps=native.eps,
    )


def tolerance(
    numerical: np.ndarray,
    error_estimate: np.ndarray,
    magnitude: np.ndarray,
    rule: DtypeRule,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    floor: float | None = None,
) -> tuple[np.ndarray, str]:
    """Per-element allowed ``|analytic - numerical|`` and a sentence saying how it was derived.

    Parameters
    ----------
    numerical : ndarray
        Numerical derivatives.
    error_estimate : ndarray
        Estimated absolute error of each numerical value (truncation + rounding).
    magnitude : ndarray
        ``sum_j |dy_j| |d y_j / d t|`` for each element: the size of the terms whose sum is the
        derivative; bounds the rounding of the analytic gradient.
    rule : DtypeRule
    rtol, atol : float, optional
        Explicit override: ``tol = atol + rtol * |numerical|`` (missing one taken as 0).
    floor : float, optional
        The magnitude floor (below); by default the largest finite ``magnitude`` given. Pass
        the whole tensor's when judging a subset of its elements again.

    Returns
    -------
    tol : ndarray
    rule_text : str

    Notes
    -----
    Default rule, per element i::

        tol_i = safety * error_estimate_i + analytic_rounding * eps * (magnitude_i + floor)
                + analytic_relative * |numerical_i|

    where ``floor = max_i magnitude_i`` keeps elements whose terms cancel (or that are zero
    on both sides, or far smaller than the tensor's largest) from demanding agreement beyond
    the rounding of the tensor's largest terms. The floor depends on the size of
    the tensor's largest gradient terms, never on the number of its elements.
    """
    if rtol is not None or atol is not None:
        r = 0.0 if rtol is None else float(rtol)
        a = 0.0 if atol is None else float(atol)
        if r < 0 or a < 0 or not np.isfinite(r) or not np.isfinite(a):
            raise ValueError(f"rtol and atol must be finite and >= 0, got rtol={rtol}, atol={atol}")
        return a + r * np.abs(numerical), f"explicit: atol={a:g} + rtol={r:g} * |numerical|"
    if floor is None:
        finite_mag = magnitude[np.isfinite(magnitude)]
        floor = float(finite_mag.max()) if finite_mag.size else 0.0
    a_eps = rule.eps if rule.analytic_eps is None else rule.analytic_eps
    tol = (
        rule.safety * error_estimate
        + rule.analytic_rounding * a_eps * (magnitude + floor)
        + rule.analytic_relative * np.abs(numerical)
    )
    text = (
        f"estimated: {rule.safety:g} x error estimate (truncation + rounding) "
        f"+ {rule.analytic_rounding:g} eps (|dy|.|dy/dt| + floor) "
        f"+ {rule.analytic_relative:g} |numerical|, eps={a_eps:.2g}"
    )
    if rule.analytic_eps is not None:
        text += f" (analytic side; numerical side evaluated in float64, eps={rule.eps:.2g})"
    return tol, text
