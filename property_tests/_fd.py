"""A small, independent central-difference helper for tests of cnn_ref.

The project's checker (``checks``) is the main tool; this helper exists so that cnn_ref's
gradients are also tested by code that shares nothing with the checker.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def numerical_vjp(
    f: Callable[[], np.ndarray], theta: np.ndarray, dy: np.ndarray, h: float = 1e-6
) -> np.ndarray:
    """Central differences of ``phi(theta) = <dy, f()>`` with respect to every element of theta.

    ``f`` reads ``theta`` (perturbed in place, then restored). Truncation error is O(h^2).
    """
    grad = np.zeros(theta.shape, dtype=np.float64)
    flat = theta.reshape(-1)  # a view: perturbs theta in place
    for i in range(flat.size):
        old = flat[i]
        step = h * max(1.0, abs(float(old)))
        flat[i] = old + step
        plus = float(np.vdot(dy, f()))
        flat[i] = old - step
        minus = float(np.vdot(dy, f()))
        flat[i] = old
        grad.reshape(-1)[i] = (plus - minus) / (2 * step)
    return grad


def assert_vjp_close(
    analytic: np.ndarray, numerical: np.ndarray, *, rtol: float = 1e-6, atol: float = 1e-8
) -> None:
    """Compare with a tolerance relative to the gradient's scale, as ``assert_allclose`` does."""
    scale = max(1.0, float(np.max(np.abs(numerical), initial=0.0)))
    np.testing.assert_allclose(analytic, numerical, rtol=rtol, atol=atol * scale)
