"""The derivation's equations as written and as corrected, in its own vocabulary.

Each function evaluates one equation of docs/derivation.md with ``cnn_ref.signal`` (``conv2``,
``rot180``, ``up``, ``down``), literally, per map pair; ``form="as-written"`` takes the text
literally (with only the minimum needed to make it executable), ``form="corrected"`` is the
form derived in docs/derivation.md. :mod:`checks.audit.cases` compares both with finite
differences of the independent model in :mod:`checks.audit.model`.

Notes
-----
For ``delta = dJ/dU``:

- dJ/dK_ij = rot180(conv2(A_j, rot180(delta_i), 'valid')) for ``conv`` (eq. 14 holds) and
  conv2(A_j, rot180(delta_i), 'valid') = xcorr2(A_j, delta_i, 'valid') for ``xcorr``;
  with stride S, delta_i is first dilated by S-1 zeros between elements and the result is
  cropped to kh x kw.
- dJ/dA_j = sum_i conv2(delta_i, rot180(K_ij), 'full') for ``conv`` and
  sum_i conv2(delta_i, K_ij, 'full') for ``xcorr`` -- the sum runs over the *next* layer's
  maps i with the kernel K_ij that connects map j to them. Eq. (18) as the derivation writes
  it sums over j with delta_i and K_ij and has no rot180.
- up() must be the adjoint of down(): ones-Kronecker for sum, times 1/n^2 for mean, argmax
  routing for max.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "cnn_signal",
    "eq10_conv_delta",
    "eq13_kernel_grad",
    "eq14_kernel_grad",
    "eq18_input_delta",
    "eq20_beta_grad",
]


def cnn_signal() -> Any:
    """``cnn_ref.signal``, the derivation's vocabulary (imported on first use)."""
    from cnn_ref import signal

    return signal


def _dilate(d: np.ndarray, stride: tuple[int, int]) -> np.ndarray:
    """Insert stride-1 zeros between the elements of a 2-D map."""
    out = np.zeros(((d.shape[0] - 1) * stride[0] + 1, (d.shape[1] - 1) * stride[1] + 1))
    out[:: stride[0], :: stride[1]] = d
    return out


def eq14_kernel_grad(
    a: np.ndarray,
    delta: np.ndarray,
    kshape: tuple[int, int],
    convention: str,
    form: str,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
) -> np.ndarray:
    """Kernel gradient of one sample, eq. (14), as written or corrected.

    Parameters
    ----------
    a : ndarray, shape (C_in, H, W)
        The layer's input maps A_j (unpadded).
    delta : ndarray, shape (C_out, Ho, Wo)
        dJ/dU of the layer.
    kshape : (int, int)
        Kernel size (kh, kw).
    convention : {"conv", "xcorr"}
    form : {"as-written", "corrected"}
    stride, padding, dilation : (int, int)

    Returns
    -------
    ndarray, shape (C_out, C_in, kh, kw)

    Notes
    -----
    As written: ``rot180(conv2(A_j, rot180(delta_i), 'valid'))`` for every convention (the
    stride ignored, the result cropped to kh x kw). Corrected: delta dilated by the stride,
    every D-th lag kept, and the outer rot180 only for ``conv``.
    """
    sg = cnn_signal()
    ap = np.pad(a, [(0, 0), (padding[0],) * 2, (padding[1],) * 2])
    kh, kw = kshape
    out = np.empty((delta.shape[0], a.shape[0], kh, kw))
    for i in range(delta.shape[0]):
        # the derivation has no stride; the corrected form dilates delta by stride-1 zeros
        d = delta[i] if form == "as-written" else _dilate(delta[i], stride)
        for j in range(a.shape[0]):
            v = sg.conv2(ap[j], sg.rot180(d), "valid")
            # dilation D: the kernel taps sit D apart, so keep every D-th lag
            v = v[:: dilation[0], :: dilation[1]][:kh, :kw]
            if form == "as-written" or convention == "conv":
                out[i, j] = sg.rot180(v)  # (14)
            else:
                out[i, j] = v  # xcorr: (14) without the outer rot180
    return out


def eq13_kernel_grad(
    a: np.ndarray, delta: np.ndarray, kshape: tuple[int, int], convention: str, form: str
) -> np.ndarray:
    """Kernel gradient of one sample from eq. (13): sum_st delta_st P_st.

    ``form="as-written"`` takes P_st as the plain kh x kw window of A_j at (s, t);
    ``"corrected"`` flips it for true convolution (the elements multiplied by K_pq).
    Shapes as :func:`eq14_kernel_grad` (stride 1, no padding).
    """
    kh, kw = kshape
    win = sliding_window_view(a, (kh, kw), axis=(-2, -1))  # (C_in, Ho, Wo, kh, kw)
    if form == "corrected" and convention == "conv":
        win = win[..., ::-1, ::-1]  # the elements multiplied by K_pq are the flipped window
    return np.einsum("ist,jstpq->ijpq", delta, win)


def eq18_input_delta(
    delta_next: np.ndarray,
    k: np.ndarray,
    dfu: np.ndarray,
    convention: str,
    form: str,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
) -> np.ndarray:
    """delta of layer l from the delta of the convolution layer l+1 above it, eq. (18).

    Parameters
    ----------
    delta_next : ndarray, shape (N_l+1, Ho, Wo)
    k : ndarray, shape (N_l+1, N_l, kh, kw)
        K^{l+1}; ``k[i, j]`` connects map j of layer l to map i of layer l+1.
    dfu : ndarray, shape (N_l, H, W)
        f'(U^l).
    convention : {"conv", "xcorr"}
    form : {"as-written", "corrected"}
    stride, padding, dilation : (int, int)

    Returns
    -------
    ndarray, shape (N_l, H, W)

    Notes
    -----
    As written: ``delta_i = sum_{j<=N_l} f'(U_i) (x) conv2(delta_i^{l+1}, K_ij, 'full')``
    (needs N_l = N_l+1). Corrected: ``delta_j = f'(U_j) (x) sum_i conv2(delta_i^{l+1},
    rot180(K_ij), 'full')`` for ``conv`` and without the rot180 for ``xcorr``; with a stride,
    delta_i^{l+1} dilated by S-1 zeros; with dilation, K dilated by D-1 zeros; the padded
    border cropped.
    """
    sg = cnn_signal()
    c_next, c_l = k.shape[:2]
    out = np.zeros_like(dfu)
    if form == "as-written":
        # literally: delta_i^l = sum_{j=1}^{N_l} f'(U_i^l) (x) conv2(delta_i^{l+1}, K_ij^{l+1})
        # (mode 'full', the only one that gives U^l's shape; needs N_l == N_{l+1})
        if c_next != c_l:
            raise ValueError(f"eq. (18) as written needs N_l == N_l+1, got {c_l} and {c_next}")
        for i in range(c_l):
            for j in range(c_l):
                out[i] += dfu[i] * sg.conv2(delta_next[i], k[i, j], "full")
        return out
    h, w = dfu.shape[-2:]
    hp, wp = h + 2 * padding[0], w + 2 * padding[1]
    for j in range(c_l):
        acc = np.zeros((hp, wp))
        for i in range(c_next):
            # (18) as written sums delta_i over j with K_ij; the correct sum runs over next maps i
            kij = sg.rot180(k[i, j]) if convention == "conv" else k[i, j]
            kij = _dilate(kij, dilation)  # dilation D: D-1 zeros between the taps
            full = sg.conv2(_dilate(delta_next[i], stride), kij, "full")
            acc[: full.shape[0], : full.shape[1]] += full[:hp, :wp]
        out[j] = dfu[j] * acc[padding[0] : padding[0] + h, padding[1] : padding[1] + w]
    return out


def eq10_conv_delta(
    delta_next: np.ndarray,
    beta: np.ndarray,
    n: int,
    kind: str,
    a: np.ndarray,
    dfu: np.ndarray,
    form: str,
) -> np.ndarray:
    """delta of a layer l followed by a subsampling layer, eq. (10)/(11).

    ``delta_i^l = beta_i^{l+1} up(delta_i^{l+1}) (x) f'(U_i^l)``, where ``a`` is A^l (the
    input of down, needed for max routing) and ``dfu`` is f'(U^l), both ``(C, H, W)``.
    As written, up is the ones-Kronecker product (Bouvrie's up), zero where down cropped;
    corrected, up is :func:`cnn_ref.signal.up` of the same kind (the adjoint of down).
    """
    sg = cnn_signal()
    out = np.zeros_like(dfu)
    for i in range(dfu.shape[0]):
        if form == "as-written":
            # up taken as Bouvrie's x (x) 1_{nxn}; rows cropped by down() get zero
            u = np.kron(delta_next[i], np.ones((n, n)))
            upd = np.zeros(dfu.shape[-2:])
            upd[: u.shape[0], : u.shape[1]] = u
        else:
            upd = sg.up(delta_next[i], n, kind, shape=a[i].shape, a=a[i])
        out[i] = beta[i] * upd * dfu[i]
    return out


def eq20_beta_grad(delta: np.ndarray, a: np.ndarray, n: int, kind: str) -> np.ndarray:
    """Eq. (20): ``dJ/dbeta_i = sum_st (delta_i (x) d_i)_st`` with ``d_i = down(A_i)``.

    ``delta`` is ``(C, Ho, Wo)``, ``a`` the subsampling layer's input ``(C, H, W)``.
    """
    sg = cnn_signal()
    return np.array([np.sum(delta[i] * sg.down(a[i], n, kind)) for i in range(a.shape[0])])
