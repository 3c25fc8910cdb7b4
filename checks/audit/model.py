"""The audit's oracle: an independent forward model and central finite differences.

Every form the audit judges is compared with :func:`numerical_grad` of a forward model written
here from index-level definitions; it shares no code with ``cnn_ref`` (the derivation's own
vocabulary, ``cnn_ref.signal``, is what :mod:`checks.audit.forms` evaluates).

Notes
-----
Forward model (single sample; ``i`` output map, ``j`` input map, ``K`` is ``(C_out, C_in, kh,
kw)``)::

    conv :  U_i[s, t] = sum_j sum_{p,q} A_j[s*S + kh-1-p, t*S + kw-1-q] K_ij[p, q] + b_i   (1)
    xcorr:  U_i[s, t] = sum_j sum_{p,q} A_j[s*S + p,      t*S + q     ] K_ij[p, q] + b_i
    subsample: U_i = beta_i * down(A_i) + b_i                                               (3)

with ``A`` zero-padded by ``P`` first.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["ACT", "conv_def", "down_def", "numerical_grad", "rel_err"]

#: Relative step of the central differences. In float64 they are accurate to ~1e-9 here (the
#: maps are linear in every parameter except through f); a wrong form is off by O(0.1).
_H = 1e-6


# --------------------------------------------------------------------------- numerics


def numerical_grad(fun: Callable[[np.ndarray], float], theta: np.ndarray) -> np.ndarray:
    """Central differences of a scalar ``fun`` at ``theta`` (a copy is perturbed)."""
    t = np.array(theta, dtype=np.float64, copy=True)
    flat = t.reshape(-1)
    grad = np.empty(t.size)
    for k in range(t.size):
        old = flat[k]
        h = _H * max(1.0, abs(old))
        flat[k] = old + h
        plus = fun(t)
        flat[k] = old - h
        minus = fun(t)
        flat[k] = old
        grad[k] = (plus - minus) / (2 * h)
    return grad.reshape(t.shape)


def rel_err(analytic: np.ndarray, numerical: np.ndarray) -> float:
    """``max|analytic - numerical| / max|numerical|`` (the scale floored at 1e-12)."""
    analytic = np.asarray(analytic, dtype=np.float64)
    if analytic.shape != numerical.shape:
        raise ValueError(f"formula has shape {analytic.shape}, gradient has {numerical.shape}")
    scale = max(float(np.max(np.abs(numerical), initial=0.0)), 1e-12)
    return float(np.max(np.abs(analytic - numerical), initial=0.0)) / scale


# --------------------------------------------------------------------------- forward model
# Written from index-level definitions; shares no code with cnn_ref.


def _sig(u: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-u))


ACT: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {
    "sigmoid": (_sig, lambda u: _sig(u) * (1 - _sig(u))),
    "tanh": (np.tanh, lambda u: 1 - np.tanh(u) ** 2),
    "relu": (lambda u: np.maximum(u, 0.0), lambda u: (u > 0).astype(np.float64)),
}


def conv_def(
    a: np.ndarray,
    k: np.ndarray,
    b: np.ndarray,
    convention: str,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
) -> np.ndarray:
    """Eq. (1) by its index definition; ``a`` is ``(..., C_in, H, W)``."""
    kk = k[..., ::-1, ::-1] if convention == "conv" else k
    pad = [(0, 0)] * (a.ndim - 2) + [(padding[0],) * 2, (padding[1],) * 2]
    ap = np.pad(a, pad)
    span = tuple(d * (n - 1) + 1 for d, n in zip(dilation, k.shape[-2:], strict=True))
    win = sliding_window_view(ap, span, axis=(-2, -1))[
        ..., :: stride[0], :: stride[1], :: dilation[0], :: dilation[1]
    ]
    return np.einsum("...jstpq,ijpq->...ist", win, kk) + b[:, None, None]


def down_def(a: np.ndarray, n: int, kind: str) -> np.ndarray:
    """Non-overlapping n x n pooling of the last two axes (cropped borders dropped)."""
    h, w = a.shape[-2] // n, a.shape[-1] // n
    blocks = a[..., : h * n, : w * n].reshape(*a.shape[:-2], h, n, w, n)
    if kind == "max":
        return np.asarray(blocks.max(axis=(-3, -1)))
    total = blocks.sum(axis=(-3, -1))
    return np.asarray(total / (n * n) if kind == "mean" else total)
