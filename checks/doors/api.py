"""Public entry points: :func:`check_layer` and :func:`check_vjp`.

Thin wrappers over the private runner (:mod:`checks.engine.runner`), as chainer's
``gradient_check.check_backward`` sits over its private helpers.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import numpy as np

from checks.engine import runner
from checks.report import Report

__all__ = ["check_layer", "check_vjp"]


def check_layer(
    layer: Any,
    x: np.ndarray,
    *,
    dy: np.ndarray | None = None,
    method: str = "auto",
    coverage: str = "auto",
    rtol: float | None = None,
    atol: float | None = None,
    seed: int = 0,
    batch_axis: int = 0,
    precision: str = "auto",
    executor: Executor | None = None,
) -> Report:
    """Check a layer's backward pass against finite differences of its forward pass.

    Parameters
    ----------
    layer : object
        Follows the layer protocol: ``forward(x) -> y``, ``backward(dy) -> dx`` (which also
        fills ``grads``), ``params`` (dict of the arrays forward reads; writeable, as the
        checker perturbs them in place and restores them) and ``grads``.
    x : ndarray
        Real floating input (float64, float32 or float16) with at least one element. Never
        cast, never modified (read-only is fine).
    dy : ndarray, optional
        Upstream gradient; by default a seeded standard normal array (never all ones, which
        would hide errors that sum to zero).
    method : {"auto", "central", "richardson", "complex"}
        ``auto`` uses the complex step for each tensor whose probe shows the layer propagates
        complex numbers correctly, else Richardson extrapolation.
    coverage : {"auto", "full", "sampled", "projected"}
        ``auto`` is ``full`` whenever it fits the evaluation budget (64 forward passes'
        worth of elements pushed through forward, at least 2**25; grouping trials run first,
        so a tensor whose elements share forward calls is costed as such), else a sample of
        whole groups plus random projections, a tensor that fits its share checked whole.
    rtol, atol : float, optional
        Explicit tolerance ``atol + rtol * |numerical|`` instead of the estimated one.
    seed : int
        The only source of randomness (``dy``, samples, directions, probes).
    batch_axis : int
        Axis of ``x`` (and of the output) holding independent samples.
    precision : {"auto", "native"}
        ``auto`` computes the finite differences of a float32 (or float16) layer in float64
        when a probe shows its forward follows float64 copies of ``x`` and the parameters
        (same outputs, no internal cast); backward still runs in the layer's dtype and keeps
        that dtype's tolerance for the analytic side. ``native`` perturbs and evaluates in the
        layer's own dtype. ``report.precision`` says which was used and why.
    executor : concurrent.futures.Executor, optional
        Where the forward calls of the numerical part run: ``None`` (this process, one
        after the other), a ``ProcessPoolExecutor``, or ``dask.distributed``'s
        ``Client.get_executor()`` to spread one large check over a cluster. The layer is
        pickled once, before the first forward call, and rebuilt once per worker; the
        verdicts are those of a serial check, the per-element numbers the same to rounding
        (a worker may block its linear algebra differently). It pays for large layers only
        (docs/limitations.md: "Executors").

    Returns
    -------
    Report
        When every checked element matches.

    Raises
    ------
    GradientMismatchError
        When an analytic gradient disagrees with the numerical one beyond its tolerance.
    LayerContractError
        When the layer mutates ``x``, a parameter or ``dy``, is not deterministic, returns
        gradients of the wrong shape or dtype kind, produces NaN/Inf, changes its output shape
        under a perturbation, or raises.
    TypeError, ValueError
        On bad arguments (naming the argument and the value received); ``TypeError`` also
        when an ``executor`` is given and the layer cannot be pickled (naming the attribute
        that cannot).

    Notes
    -----
    The checked scalar is ``phi(theta) = <dy, forward(theta)>``; its gradient with respect to
    ``x`` and each parameter is what backward computes (the delta = dJ/dU of
    docs/derivation.md, propagated by eqs. (7)-(9), (12)-(14), (18)-(20)). Each numerical
    derivative comes with an error estimate (truncation from the difference of the steps h and
    2h, rounding from the output magnitudes) and each element gets its own tolerance from it;
    see :mod:`checks.engine.tolerances`.
    Non-differentiable points (ReLU at 0, max-pool ties) are detected from one-sided
    differences and accepted when the analytic value is a subgradient (:mod:`checks.engine.kinks`).

    Cost: perturbed copies of ``x`` are stacked along ``batch_axis`` (after a probe shows the
    samples are independent, :mod:`checks.engine.batching`), and elements whose effects on the
    output are disjoint (a lattice of ``x`` positions in a conv, parameters along their first axis)
    share copies, their sources measured by ``log2`` code probes (:mod:`checks.engine.grouping`).

    Examples
    --------
    >>> import numpy as np
    >>> from checks import check_layer
    >>> class Scale:
    ...     def __init__(self): self.params = {"w": np.array([2.0])}; self.grads = {}
    ...     def forward(self, x): self.x = x; return self.params["w"] * x
    ...     def backward(self, dy):
    ...         self.grads["w"] = np.array([np.sum(dy * self.x)]); return dy * self.params["w"]
    >>> check_layer(Scale(), np.linspace(-1, 1, 6).reshape(2, 3)).ok
    True

    A wrong backward raises, with the elements that are off::

        >>> class Bad(Scale):
        ...     def backward(self, dy): return 1.01 * super().backward(dy)
        >>> check_layer(Bad(), np.ones((2, 3)))  # doctest: +SKIP
        GradientMismatchError: Gradient check failed: Bad, tensor x
        ...
        Mismatched elements: 6 / 6 (100 %)
        ...
    """
    return runner.run_layer(
        layer, x, dy=dy, method=method, coverage_=coverage, rtol=rtol, atol=atol, seed=seed,
        batch_axis=batch_axis, precision=precision, executor=executor,
    )  # fmt: skip


def check_vjp(
    f: Callable[..., np.ndarray],
    vjp: Callable[..., Any],
    *inputs: np.ndarray,
    dy: np.ndarray | None = None,
    method: str = "auto",
    coverage: str = "auto",
    rtol: float | None = None,
    atol: float | None = None,
    seed: int = 0,
    batch_axis: int = 0,
    precision: str = "auto",
    executor: Executor | None = None,
) -> Report:
    """Check a vector-Jacobian product ``vjp`` against finite differences of ``f``.

    Parameters
    ----------
    f : callable
        ``f(*inputs) -> y``.
    vjp : callable
        ``vjp(dy, *inputs) -> tuple`` with one gradient per input (``None`` allowed only for
        non-floating inputs, which are not checked).
    *inputs : ndarray
        Real floating inputs are checked, reported as ``"inputs[i]"``.
    dy, method, coverage, rtol, atol, seed, batch_axis, precision, executor
        As in :func:`check_layer`. Inputs are packed along ``batch_axis`` only when they all
        share its size there and the independence probe passes. With an ``executor``, ``f``
        is pickled (a module-level function; ``vjp`` runs here).

    Returns
    -------
    Report

    Raises
    ------
    GradientMismatchError, LayerContractError, TypeError, ValueError
        As in :func:`check_layer`.

    Examples
    --------
    >>> import numpy as np
    >>> from checks import check_vjp
    >>> check_vjp(np.sin, lambda dy, x: (dy * np.cos(x),), np.linspace(0, 1, 5)).ok
    True
    """
    return runner.run_vjp(
        f, vjp, inputs, dy=dy, method=method, coverage_=coverage, rtol=rtol, atol=atol,
        seed=seed, batch_axis=batch_axis, precision=precision, executor=executor,
    )  # fmt: skip
