"""Convolution layer, forward and backward: eq. (1), (12), (13)/(14), (18) of docs/derivation.md.

Shapes: ``x`` is ``(N, C_in, H, W)``, ``K`` is ``(C_out, C_in, kh, kw)`` so that ``K[i, j]``
is the derivation's ``K_ij`` (i = output map, j = input map), ``b`` is ``(C_out,)``, and the
pre-activation ``u`` (the derivation's ``U``) and its gradient ``dy`` (its ``delta``) are
``(N, C_out, H_out, W_out)`` with ``H_out = (H + 2*ph - dh*(kh - 1) - 1) // sh + 1``.

Two implementations that agree to ~1e-12 in float64:

- ``impl="literal"``: the equations as the derivation writes them, one ``conv2`` per channel pair
  (:mod:`cnn_ref.signal`), each line labelled with its equation number. Stride, padding and
  dilation are done the literal way: zero-pad the input, dilate the kernel with zeros,
  subsample the 'valid' result; backward inserts zeros into delta and crops the padding.
- ``impl="fast"`` (default): im2col + one GEMM per sample (:mod:`._conv_fast`).

Gradients are the plain transpose of the forward map (no complex conjugation), so complex
inputs give the holomorphic extension that the complex-step method relies on.
"""

from __future__ import annotations

import numpy as np

from .._validate import as_pair, check_array, check_choice
from ..signal import conv2, rot180, xcorr2
from . import _conv_fast

__all__ = ["conv2d_backward", "conv2d_forward"]

_CONVENTIONS = ("conv", "xcorr")
_IMPLS = ("fast", "literal")


class _Geometry:
    """Validated hyper-parameters and shapes of one convolution call."""

    __slots__ = ("dilation", "dtype", "kernel_hw", "out_hw", "padded_hw", "padding", "stride")

    def __init__(
        self, x: np.ndarray, K: np.ndarray, stride: object, padding: object, dilation: object
    ) -> None:
        self.stride = as_pair(stride, "stride")
        self.padding = as_pair(padding, "padding", minimum=0)
        self.dilation = as_pair(dilation, "dilation")
        if x.shape[1] != K.shape[1]:
            raise ValueError(
                f"x has {x.shape[1]} channels (shape {x.shape}), but K of shape {K.shape} "
                f"expects {K.shape[1]} input channels"
            )
        (ph, pw), (dh, dw), (sh, sw) = self.padding, self.dilation, self.stride
        hp, wp = x.shape[2] + 2 * ph, x.shape[3] + 2 * pw
        ekh, ekw = dh * (K.shape[2] - 1) + 1, dw * (K.shape[3] - 1) + 1
        if ekh > hp or ekw > wp or K.shape[2] == 0 or K.shape[3] == 0:
            raise ValueError(
                f"kernel of size {K.shape[2:]} (dilated: {(ekh, ekw)}) does not fit the padded "
                f"input of size {(hp, wp)} (x spatial {x.shape[2:]}, padding {self.padding})"
            )
        self.kernel_hw = (K.shape[2], K.shape[3])
        self.padded_hw = (hp, wp)
        self.out_hw = ((hp - ekh) // sh + 1, (wp - ekw) // sw + 1)
        self.dtype = np.result_type(x, K)


def _check_common(x: object, K: object, convention: object, impl: object) -> None:
    check_array(x, "x", ndim=4)
    check_array(K, "K", ndim=4)
    check_choice(convention, "convention", _CONVENTIONS)
    check_choice(impl, "impl", _IMPLS)


def _pad(x: np.ndarray, padding: tuple[int, int]) -> np.ndarray:
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def _dilate(K: np.ndarray, dilation: tuple[int, int]) -> np.ndarray:
    """Insert ``d - 1`` zeros between kernel taps (the literal form of a dilated kernel)."""
    dh, dw = dilation
    o, c, kh, kw = K.shape
    Kd = np.zeros((o, c, dh * (kh - 1) + 1, dw * (kw - 1) + 1), dtype=K.dtype)
    Kd[:, :, ::dh, ::dw] = K
    return Kd


# ---------------------------------------------------------------------------- forward


def conv2d_forward(
    x: np.ndarray,
    K: np.ndarray,
    b: np.ndarray,
    *,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    convention: str = "conv",
    impl: str = "fast",
) -> np.ndarray:
    """Pre-activation of a convolution layer, eq. (1).

    Parameters
    ----------
    x : ndarray, shape (N, C_in, H, W)
        Input maps ``A^{l-1}``; floating or complex, finite.
    K : ndarray, shape (C_out, C_in, kh, kw)
        Kernels; ``K[i, j]`` is the derivation's ``K_ij``.
    b : ndarray, shape (C_out,)
        One bias per output map.
    stride, padding, dilation : int or (int, int)
        Stride (>= 1), zero padding on each side (>= 0) and kernel dilation (>= 1).
    convention : {"conv", "xcorr"}
        ``"conv"``: true convolution (kernel flipped), the derivation's ``conv2``. ``"xcorr"``:
        cross-correlation, what PyTorch's ``conv2d`` computes.
    impl : {"fast", "literal"}
        Vectorised path or the derivation's equations written per channel pair.

    Returns
    -------
    u : ndarray, shape (N, C_out, H_out, W_out)
        dtype ``numpy.result_type(x, K, b)``.

    Raises
    ------
    TypeError
        If an array is not a floating/complex ndarray, or a size is not an int or pair of ints.
    ValueError
        Wrong number of dimensions, channel mismatch, wrong bias shape, kernel larger than the
        padded input, non-positive stride/dilation, negative padding, unknown
        ``convention``/``impl``, or non-finite values.

    Notes
    -----
    Eq. (1): ``U_i = sum_j conv2(A_j, K_ij, 'valid') + b_i``. The derivation writes a bias ``b_ij``
    inside the sum; only their sum over ``j`` is identifiable, so there is one ``b_i`` per map
    (as eq. (12) assumes). With stride ``s``, padding ``P`` and dilation ``d``:
    ``U_i = [sum_j conv2(pad(A_j, P), dilate(K_ij, d), 'valid')][::s, ::s] + b_i``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> K = np.array([[[[1.0, 0.0], [0.0, -1.0]]]])
    >>> conv2d_forward(x, K, np.zeros(1), convention="xcorr")[0, 0]
    array([[-5., -5., -5.],
           [-5., -5., -5.],
           [-5., -5., -5.]])
    >>> conv2d_forward(x, K[:, :, :1], np.zeros(2))
    Traceback (most recent call last):
    ...
    ValueError: b must have shape (1,) (one bias per output map), got (2,)
    """
    _check_common(x, K, convention, impl)
    check_array(b, "b", ndim=1)
    if b.shape != (K.shape[0],):
        raise ValueError(
            f"b must have shape ({K.shape[0]},) (one bias per output map), got {b.shape}"
        )
    g = _Geometry(x, K, stride, padding, dilation)
    dtype = np.result_type(g.dtype, b)
    if impl == "literal":
        return _forward_literal(x, K, b, g, convention, dtype)
    Kx = K if convention == "xcorr" else K[:, :, ::-1, ::-1]
    u = _conv_fast.xcorr_forward(_pad(x, g.padding), Kx, g.stride, g.dilation, dtype)
    u += b[None, :, None, None]
    return u


def _forward_literal(
    x: np.ndarray, K: np.ndarray, b: np.ndarray, g: _Geometry, convention: str, dtype: np.dtype
) -> np.ndarray:
    (sh, sw) = g.stride
    A = _pad(x, g.padding)  # A^{l-1}, zero-padded
    Kd = _dilate(K, g.dilation)
    corr = conv2 if convention == "conv" else xcorr2
    n, o = x.shape[0], K.shape[0]
    U = np.zeros((n, o, *g.out_hw), dtype=dtype)
    for i in range(o):
        for j in range(K.shape[1]):
            U[:, i] += corr(A[:, j], Kd[i, j], "valid")[:, ::sh, ::sw]  # eq. (1), sum over j
        # eq. (1) as written adds b_ij inside the sum over j; only b_i = sum_j b_ij is identifiable.
        U[:, i] += b[i]  # eq. (1)
    return U


# ---------------------------------------------------------------------------- backward


def conv2d_backward(
    dy: np.ndarray,
    x: np.ndarray,
    K: np.ndarray,
    *,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    convention: str = "conv",
    impl: str = "fast",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of a convolution layer: eq. (12), (13)/(14) and (18).

    Parameters
    ----------
    dy : ndarray, shape (N, C_out, H_out, W_out)
        ``delta = dJ/dU`` of this layer (the derivation's ``delta^l``, after eq. (8)).
    x, K, stride, padding, dilation, convention, impl
        As in :func:`conv2d_forward` (the bias does not enter the gradients).

    Returns
    -------
    dx : ndarray, shape of ``x``
        ``dJ/dA^{l-1}`` (eq. (18) without the ``f'`` factor, which belongs to the previous
        layer's activation).
    dK : ndarray, shape of ``K``
        ``dJ/dK`` (eq. (13)/(14)), summed over the batch.
    db : ndarray, shape (C_out,)
        ``dJ/db`` (eq. (12)), summed over the batch.

    All three have dtype ``numpy.result_type(dy, x, K)``.

    Raises
    ------
    TypeError, ValueError
        As :func:`conv2d_forward`; also when ``dy`` does not have the forward output's shape.

    Notes
    -----
    For ``convention="conv"`` (the derivation's), with ``delta`` on the stride-1 grid:

    - eq. (12): ``db_i = sum_{n,s,t} delta_i[s, t]``;
    - eq. (14): ``dK_ij = rot180(conv2(A_j, rot180(delta_i), 'valid'))`` (true for
      convolution only: for ``"xcorr"`` the outer ``rot180`` goes, ``dK_ij = xcorr2(A_j,
      delta_i, 'valid')``);
    - eq. (18): ``dA_j = sum_i conv2(delta_i, rot180(K_ij), 'full')`` -- the derivation sums
      ``delta_i`` over ``j`` with ``K_ij`` and no ``rot180``/'full'; the sum runs over the
      next layer's maps ``i`` and, for true convolution, the kernel is rotated. The derivation's
      form (``conv2(delta_i, K_ij, 'full')``) is right for ``"xcorr"``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x, K = rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((4, 3, 3, 2))
    >>> dy = rng.standard_normal((2, 4, 4, 4))
    >>> dx, dK, db = conv2d_backward(dy, x, K)
    >>> # the adjoint identity <conv(x), dy> == <x, dx> (the bias adds nothing for b = 0)
    >>> u = conv2d_forward(x, K, np.zeros(4))
    >>> bool(np.isclose(np.vdot(u, dy), np.vdot(x, dx)))
    True
    """
    _check_common(x, K, convention, impl)
    check_array(dy, "dy", ndim=4)
    g = _Geometry(x, K, stride, padding, dilation)
    expected = (x.shape[0], K.shape[0], *g.out_hw)
    if dy.shape != expected:
        raise ValueError(
            f"dy has shape {dy.shape}, but the forward output for x {x.shape} and K {K.shape} "
            f"has shape {expected}"
        )
    dtype = np.result_type(g.dtype, dy)
    if impl == "literal":
        return _backward_literal(dy, x, K, g, convention, dtype)
    xp = _pad(x, g.padding)
    Kx = K if convention == "xcorr" else K[:, :, ::-1, ::-1]
    db = dy.sum(axis=(0, 2, 3), dtype=dtype)
    dKx = _conv_fast.xcorr_grad_kernel(dy, xp, g.kernel_hw, g.stride, g.dilation, dtype)
    dK = dKx if convention == "xcorr" else np.ascontiguousarray(dKx[:, :, ::-1, ::-1])
    dxp = _conv_fast.xcorr_grad_input(dy, Kx, g.padded_hw, g.stride, g.dilation, dtype)
    (ph, pw), (h, w) = g.padding, x.shape[2:]
    dx = dxp if ph == pw == 0 else np.ascontiguousarray(dxp[:, :, ph : ph + h, pw : pw + w])
    return dx, dK, db


def _backward_literal(
    dy: np.ndarray, x: np.ndarray, K: np.ndarray, g: _Geometry, convention: str, dtype: np.dtype
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    (sh, sw), (dh, dw), (ph, pw) = g.stride, g.dilation, g.padding
    A = _pad(x, g.padding)
    Kd = _dilate(K, g.dilation)
    n, o, c = x.shape[0], K.shape[0], K.shape[1]
    vh, vw = A.shape[2] - Kd.shape[2] + 1, A.shape[3] - Kd.shape[3] + 1  # stride-1 'valid' size
    # The stride kept every s-th 'valid' output: delta on the full grid is zero in between.
    delta = np.zeros((n, o, vh, vw), dtype=dtype)
    delta[:, :, ::sh, ::sw] = dy
    db = np.zeros(o, dtype=dtype)
    dKd = np.zeros(Kd.shape, dtype=dtype)
    dA = np.zeros(A.shape, dtype=dtype)
    for i in range(o):
        db[i] = delta[:, i].sum()  # eq. (12), summed over the batch
        for j in range(c):
            if convention == "conv":
                # eq. (13) pairs delta_st with the patch P_st; for true convolution it is rot180'd.
                dKd[i, j] = rot180(conv2(A[:, j], rot180(delta[:, i]), "valid")).sum(0)  # eq. (14)
                # (18) as written sums over j with K_ij; correct: sum over i, rot180(K_ij), "full".
                dA[:, j] += conv2(delta[:, i], rot180(Kd[i, j]), "full")  # eq. (18)
            else:
                # eq. (14) holds for true convolution only; for xcorr the outer rot180 goes.
                dKd[i, j] = xcorr2(A[:, j], delta[:, i], "valid").sum(0)  # eq. (13)/(14)
                # (18) as written sums over j; correct: sum over i of conv2(delta_i, K_ij, "full").
                dA[:, j] += conv2(delta[:, i], Kd[i, j], "full")  # eq. (18)
    dK = dKd[:, :, ::dh, ::dw]  # only the taps of the dilated kernel are parameters
    dx = dA[:, :, ph : ph + x.shape[2], pw : pw + x.shape[3]]  # padding is not an input
    return np.ascontiguousarray(dx), np.ascontiguousarray(dK), db
