"""LeNet-style subsampling, forward and backward (eq. (3), (10)/(11), (19), (20)).

Forward, per map i (eq. 3): ``U_i = beta_i * down(A_i) + b_i``, where ``down`` pools
``size``-blocks (sum, mean or max) with step ``stride`` (``None``: ``stride = size``, the
derivation's non-overlapping case). Shapes: ``x`` is NCHW ``(N, C, H, W)``, ``beta`` and ``b`` are
``(C,)``, ``u`` is ``(N, C, Ho, Wo)`` with ``Ho = (H - size_h) // stride_h + 1``; rows and
columns that do not fill a window are cropped (they get a zero gradient).

Two implementations that agree to ~1e-12: ``impl="literal"`` is the derivation's equations per
sample and channel, written with :func:`cnn_ref.signal.down` / :func:`cnn_ref.signal.up` (and, for a
stride that differs from the size, with the explicit window loop that defines them);
``impl="fast"`` works on all samples and channels at once, one strided view of ``x`` per
window offset.
"""

from __future__ import annotations

import numpy as np

from cnn_ref import signal
from cnn_ref._validate import as_pair, check_array, check_choice

__all__ = ["subsample_backward", "subsample_forward"]

KINDS = ("sum", "mean", "max")
IMPLS = ("literal", "fast")


class _Geometry:
    """Window size, stride and output size of one subsampling call, checked once."""

    def __init__(self, x: np.ndarray, size: object, stride: object) -> None:
        self.sh, self.sw = as_pair(size, "size")
        self.th, self.tw = (self.sh, self.sw) if stride is None else as_pair(stride, "stride")
        H, W = x.shape[2:]
        if self.sh > H or self.sw > W:
            raise ValueError(
                f"size {(self.sh, self.sw)} is larger than the input maps {(H, W)} "
                f"(x has shape {x.shape})"
            )
        self.Ho = (H - self.sh) // self.th + 1
        self.Wo = (W - self.sw) // self.tw + 1
        self.tiles = (self.th, self.tw) == (self.sh, self.sw)  # the derivation's case

    def __repr__(self) -> str:
        return f"size={(self.sh, self.sw)}, stride={(self.th, self.tw)}"


def _check_inputs(
    x: object, beta: object, size: object, stride: object, kind: object, impl: object
) -> tuple[np.ndarray, np.ndarray, _Geometry]:
    x = check_array(x, "x", ndim=4)
    beta = check_array(beta, "beta", ndim=1)
    if beta.shape != (x.shape[1],):
        raise ValueError(
            f"beta has shape {beta.shape}, expected ({x.shape[1]},) "
            f"(one per channel of x, which has shape {x.shape})"
        )
    check_choice(kind, "kind", KINDS)
    check_choice(impl, "impl", IMPLS)
    return x, beta, _Geometry(x, size, stride)


# ---------------------------------------------------------------------------------------------
# literal: the derivation's equations, one sample and one map at a time
# ---------------------------------------------------------------------------------------------


def _down2d(a: np.ndarray, g: _Geometry, kind: str) -> np.ndarray:
    """down(A) of one 2-D map."""
    if g.tiles:
        return signal.down(a, (g.sh, g.sw), kind)
    # Overlapping or gapped windows: the definition of down, window by window.
    d = np.empty((g.Ho, g.Wo), dtype=a.dtype)
    for s in range(g.Ho):
        for t in range(g.Wo):
            window = a[s * g.th : s * g.th + g.sh, t * g.tw : t * g.tw + g.sw]
            d[s, t] = _pool(window, kind)
    return d


def _pool(window: np.ndarray, kind: str) -> np.ndarray:
    if kind == "sum":
        return window.sum()
    if kind == "mean":
        return window.sum() / window.size
    # first maximum in row-major order; complex input (a complex step) is ranked by its real part
    return window.reshape(-1)[np.argmax(np.real(window))]


def _up2d(d: np.ndarray, a: np.ndarray, g: _Geometry, kind: str) -> np.ndarray:
    """up(delta) of one 2-D map: the adjoint of down, back to the shape of A."""
    if g.tiles:
        return signal.up(d, (g.sh, g.sw), kind, shape=a.shape, a=a)
    out = np.zeros(a.shape, dtype=d.dtype)
    for s in range(g.Ho):
        for t in range(g.Wo):
            rows = slice(s * g.th, s * g.th + g.sh)
            cols = slice(t * g.tw, t * g.tw + g.sw)
            if kind == "sum":
                out[rows, cols] += d[s, t]
            elif kind == "mean":
                out[rows, cols] += d[s, t] / (g.sh * g.sw)
            else:
                k = int(np.argmax(np.real(a[rows, cols])))
                out[rows, cols][divmod(k, g.sw)] += d[s, t]
    return out


def _forward_literal(
    x: np.ndarray, beta: np.ndarray, b: np.ndarray, g: _Geometry, kind: str
) -> np.ndarray:
    N, C = x.shape[:2]
    u = np.empty((N, C, g.Ho, g.Wo), dtype=np.result_type(x, beta, b))
    for n in range(N):
        for i in range(C):
            d = _down2d(x[n, i], g, kind)  # d_i = down(A_i^{l-1})
            u[n, i] = beta[i] * d + b[i]  # eq. (3)
    return u


def _backward_literal(
    dy: np.ndarray, x: np.ndarray, beta: np.ndarray, g: _Geometry, kind: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    N, C = x.shape[:2]
    dx = np.empty(x.shape, dtype=np.result_type(dy, beta))
    dbeta = np.zeros(C, dtype=np.result_type(dy, x))
    db = np.zeros(C, dtype=dy.dtype)
    for n in range(N):
        for i in range(C):
            # eq. (10)/(11) multiply by f'(U^{l-1}) too; that factor belongs to the layer below.
            # the up of eq. (10) is kron(delta, ones): right for "sum" only; mean needs
            # 1/(sh*sw), max routes to the argmax, cropped borders get zero -- signal.up is
            # down's exact adjoint.
            dx[n, i] = beta[i] * _up2d(dy[n, i], x[n, i], g, kind)  # eq. (10)/(11)
            db[i] += dy[n, i].sum()  # eq. (19)
            dbeta[i] += (dy[n, i] * _down2d(x[n, i], g, kind)).sum()  # eq. (20), d = down(A)
    return dx, dbeta, db


# ---------------------------------------------------------------------------------------------
# fast: every sample and channel at once, one strided slice of x per window offset (p, q)
# ---------------------------------------------------------------------------------------------
# Looping over the sh*sw offsets and combining (Ho, Wo)-strided views of x reads x once and
# never copies it; a (..., Ho, sh, Wo, sw) reshape reduced over two axes was 10x slower.


def _offsets(g: _Geometry) -> list[tuple[slice, slice, slice, slice]]:
    """For each window offset (p, q), row-major: the slice of x holding that element of every
    window, shape (N, C, Ho, Wo)."""
    return [
        (
            slice(None),
            slice(None),
            slice(p, p + g.th * (g.Ho - 1) + 1, g.th),
            slice(q, q + g.tw * (g.Wo - 1) + 1, g.tw),
        )
        for p in range(g.sh)
        for q in range(g.sw)
    ]


def _window_max(x: np.ndarray, offsets: list[tuple[slice, slice, slice, slice]]) -> np.ndarray:
    m = x[offsets[0]].copy()
    for sl in offsets[1:]:
        np.maximum(m, x[sl], out=m)
    return m


def _first_argmax(x: np.ndarray, g: _Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Window maxima (of the real part) and the row-major offset k of each window's first maximum.

    Complex input (a complex step) is ranked by its real part, as :func:`cnn_ref.signal.down`
    does, so the step flows through the chosen element.
    """
    key = np.real(x)
    offsets = _offsets(g)
    m = _window_max(key, offsets)
    first = np.full(m.shape, -1, dtype=np.int32)
    for k, sl in enumerate(offsets):
        first[(key[sl] == m) & (first < 0)] = k
    return m, first


def _down_fast(
    x: np.ndarray, g: _Geometry, kind: str, argmax: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    offsets = _offsets(g)
    if kind == "max":
        if not np.iscomplexobj(x):
            return _window_max(x, offsets) if argmax is None else argmax[0]
        _, first = _first_argmax(x, g) if argmax is None else argmax
        d = np.zeros(first.shape, dtype=x.dtype)
        for k, sl in enumerate(offsets):
            np.copyto(d, x[sl], where=first == k)
        return d
    d = x[offsets[0]].copy()
    for sl in offsets[1:]:
        d += x[sl]
    if kind == "mean":
        d /= g.sh * g.sw
    return d


def _up_fast(
    dy: np.ndarray,
    x: np.ndarray,
    g: _Geometry,
    kind: str,
    argmax: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """The adjoint of _down_fast: dy (N, C, Ho, Wo) back to x's shape (cropped border: 0)."""
    dx = np.zeros(x.shape, dtype=dy.dtype)
    offsets = _offsets(g)
    if kind == "max":
        _, first = _first_argmax(x, g) if argmax is None else argmax
        for k, sl in enumerate(offsets):
            if g.tiles:
                dx[sl] = np.where(first == k, dy, 0)
            else:
                dx[sl] += np.where(first == k, dy, 0)  # overlapping windows add up
        return dx
    share = dy if kind == "sum" else dy / (g.sh * g.sw)
    for sl in offsets:
        if g.tiles:
            dx[sl] = share
        else:
            dx[sl] += share  # overlapping windows (stride < size) add up
    return dx


# ---------------------------------------------------------------------------------------------
# public
# ---------------------------------------------------------------------------------------------


def subsample_forward(
    x: np.ndarray,
    beta: np.ndarray,
    b: np.ndarray,
    *,
    size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    kind: str = "sum",
    impl: str = "fast",
) -> np.ndarray:
    """Pre-activation of a subsampling layer, ``u = beta * down(x) + b`` per channel.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
        The maps ``A^{l-1}`` of the layer below.
    beta, b : ndarray, shape (C,)
        Per-channel scale and bias.
    size : int or (int, int)
        Pooling window.
    stride : int or (int, int), optional
        Step between windows; ``None`` (default) means ``stride = size`` (non-overlapping).
    kind : {"sum", "mean", "max"}
        What ``down`` computes over a window.
    impl : {"fast", "literal"}

    Returns
    -------
    u : ndarray, shape (N, C, Ho, Wo)
        ``Ho = (H - size_h) // stride_h + 1`` (likewise ``Wo``). Dtype follows numpy promotion.

    Raises
    ------
    TypeError
        If an array is not a floating or complex ndarray, or size/stride are not ints.
    ValueError
        On wrong dimensions, a beta/b that does not match the channels, a window larger than
        the map, non-positive size/stride, an unknown kind/impl, or non-finite values.

    Notes
    -----
    Eq. (3): ``U_i = beta_i * down(A_i) + b_i``. Trailing rows/columns that do not fill a window
    are cropped. ``max`` takes the first maximum of each window in row-major order.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> subsample_forward(x, np.array([2.0]), np.array([1.0]), size=2, kind="max")
    array([[[[11., 15.],
             [27., 31.]]]])
    >>> subsample_forward(x, np.array([2.0]), np.array([1.0]), size=5)
    Traceback (most recent call last):
    ...
    ValueError: size (5, 5) is larger than the input maps (4, 4) (x has shape (1, 1, 4, 4))
    """
    x, beta, g = _check_inputs(x, beta, size, stride, kind, impl)
    b = check_array(b, "b", ndim=1)
    if b.shape != beta.shape:
        raise ValueError(f"b has shape {b.shape}, expected {beta.shape} (one per channel)")
    if impl == "literal":
        return _forward_literal(x, beta, b, g, kind)
    d = _down_fast(x, g, kind)
    return beta[:, None, None] * d + b[:, None, None]  # eq. (3)


def subsample_backward(
    dy: np.ndarray,
    x: np.ndarray,
    beta: np.ndarray,
    *,
    size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    kind: str = "sum",
    impl: str = "fast",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of a subsampling layer from its delta ``dy = dJ/du``.

    Parameters
    ----------
    dy : ndarray, shape (N, C, Ho, Wo)
        The layer's delta (the derivation's delta^{l}, after this layer's ``f'``).
    x, beta, size, stride, kind, impl
        As in :func:`subsample_forward`.

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
        ``dJ/dA^{l-1} = beta * up(delta)``; the layer below multiplies it by its own ``f'``.
    dbeta : ndarray, shape (C,)
        Eq. (20), summed over the batch.
    db : ndarray, shape (C,)
        Eq. (19), summed over the batch.

    Raises
    ------
    TypeError, ValueError
        As :func:`subsample_forward`, and when ``dy`` does not have shape ``(N, C, Ho, Wo)``.

    Notes
    -----
    Eq. (10)/(11): ``delta^{l-1}_i = beta_i * up(delta_i) * f'(U^{l-1}_i)`` where ``up`` is the
    exact adjoint of ``down``: a copy of delta into each block for ``sum``, the same divided by
    the block size for ``mean``, delta routed to the first maximum for ``max``, zeros on
    cropped borders, and overlapping windows summed. Eq. (19): ``dJ/db_i = sum_st delta_i``.
    Eq. (20): ``dJ/dbeta_i = sum_st (delta_i * d_i)`` with ``d_i = down(A_i^{l-1})``.
    """
    x, beta, g = _check_inputs(x, beta, size, stride, kind, impl)
    dy = check_array(dy, "dy", ndim=4)
    expected = (x.shape[0], x.shape[1], g.Ho, g.Wo)
    if dy.shape != expected:
        raise ValueError(
            f"dy has shape {dy.shape}, expected {expected} (the output shape for x of shape "
            f"{x.shape} with {g})"
        )
    if impl == "literal":
        return _backward_literal(dy, x, beta, g, kind)
    argmax = _first_argmax(x, g) if kind == "max" else None  # shared by up and down
    # eq. (10)/(11) without f': beta * up(delta), computed as up(beta * delta) (up is linear
    # and per map), which scales the small array instead of the large one
    dx = _up_fast(beta[:, None, None] * dy, x, g, kind, argmax)
    db = dy.sum(axis=(0, 2, 3))  # eq. (19)
    d = _down_fast(x, g, kind, argmax)
    dbeta = np.einsum("nchw,nchw->c", dy, d)  # eq. (20), d = down(A)
    return dx, dbeta, db
