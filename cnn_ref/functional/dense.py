"""Fully-connected layer, forward and backward (eq. (5), (6)).

Shapes: ``x`` is ``(N, in_features)``, ``W`` is ``(out_features, in_features)``, ``b`` is
``(out_features,)``; ``u = x W^T + b`` is ``(N, out_features)``.
"""

from __future__ import annotations

import numpy as np

from cnn_ref._validate import check_array

__all__ = ["dense_backward", "dense_forward"]


def _check_weights(x: np.ndarray, W: object, name_x: str = "x") -> np.ndarray:
    W = check_array(W, "W", ndim=2)
    if x.shape[1] != W.shape[1]:
        raise ValueError(
            f"{name_x} has {x.shape[1]} features (shape {x.shape}), "
            f"W expects {W.shape[1]} (W has shape {W.shape})"
        )
    return W


def dense_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pre-activation of a fully-connected layer, ``u = x W^T + b``.

    Parameters
    ----------
    x : ndarray, shape (N, in_features)
    W : ndarray, shape (out_features, in_features)
    b : ndarray, shape (out_features,)

    Returns
    -------
    u : ndarray, shape (N, out_features)
        The derivation's U for this layer (before the activation). Dtype follows numpy promotion.

    Raises
    ------
    TypeError
        If an argument is not a floating or complex ndarray.
    ValueError
        On wrong dimensions, mismatched feature counts or non-finite values.

    Notes
    -----
    Per sample, ``u_n = W x_n + b``; the rows of ``x`` are samples.

    Examples
    --------
    >>> import numpy as np
    >>> dense_forward(np.ones((2, 3)), np.ones((4, 3)), np.zeros(4)).shape
    (2, 4)
    >>> dense_forward(np.ones((2, 5)), np.ones((4, 3)), np.zeros(4))
    Traceback (most recent call last):
    ...
    ValueError: x has 5 features (shape (2, 5)), W expects 3 (W has shape (4, 3))
    """
    x = check_array(x, "x", ndim=2)
    W = _check_weights(x, W)
    b = check_array(b, "b", ndim=1)
    if b.shape != (W.shape[0],):
        raise ValueError(f"b has shape {b.shape}, expected ({W.shape[0]},) (one per row of W)")
    return x @ W.T + b


def dense_backward(
    dy: np.ndarray, x: np.ndarray, W: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of a fully-connected layer from its delta ``dy = dJ/du``.

    Parameters
    ----------
    dy : ndarray, shape (N, out_features)
        The derivation's delta for this layer (``dJ/dU``, after the activation's ``f'``).
    x : ndarray, shape (N, in_features)
        The forward input.
    W : ndarray, shape (out_features, in_features)

    Returns
    -------
    dx : ndarray, shape (N, in_features)
        ``dJ/dx = delta W`` (the upstream ``dJ/dA`` of the layer below).
    dW : ndarray, shape (out_features, in_features)
        Eq. (5), summed over the batch.
    db : ndarray, shape (out_features,)
        Eq. (6), summed over the batch.

    Raises
    ------
    TypeError, ValueError
        As :func:`dense_forward`, and when ``dy`` does not have shape ``(N, out_features)``.

    Notes
    -----
    Eq. (5): ``dJ/dW = delta x^T``; eq. (6): ``dJ/db = delta``; and ``dJ/dx = W^T delta``.
    """
    x = check_array(x, "x", ndim=2)
    W = _check_weights(x, W)
    dy = check_array(dy, "dy", ndim=2)
    if dy.shape != (x.shape[0], W.shape[0]):
        raise ValueError(
            f"dy has shape {dy.shape}, expected {(x.shape[0], W.shape[0])} (N, out_features)"
        )
    dx = dy @ W
    # eq. (5)/(6) are per sample; over a batch the per-sample gradients are summed.
    dW = dy.T @ x  # eq. (5): sum_n delta_n x_n^T
    db = dy.sum(axis=0)  # eq. (6): sum_n delta_n
    return dx, dW, db
