"""The derivation's 2-D signal vocabulary: ``conv2``, ``xcorr2``, ``rot180``, ``down``, ``up``.

All five act on the last two axes; leading axes (batch, channels) broadcast. ``conv2`` follows
MATLAB's ``conv2`` exactly, which is what the derivation (and Bouvrie's notes it follows) write:

- ``'full'``: shape ``(ma + mk - 1, na + nk - 1)``;
- ``'same'``: the central part of ``'full'`` with the shape of ``a``, starting at row
  ``mk // 2`` and column ``nk // 2`` of ``'full'`` (for even kernels this differs from
  ``scipy.signal.convolve2d``, which starts at ``(mk - 1) // 2``);
- ``'valid'``: shape ``(max(ma - mk + 1, 0), max(na - nk + 1, 0))``, empty when the kernel is
  larger than ``a`` along an axis (scipy instead swaps the operands or raises).

These primitives are written for clarity, not speed: ``cnn_ref.functional``'s fast paths do not
use them. They are what the literal paths and the derivation audit are built from.
"""

from __future__ import annotations

import numpy as np

from ._validate import as_pair, check_array, check_choice

__all__ = ["conv2", "down", "rot180", "up", "xcorr2"]

_MODES = ("full", "same", "valid")
_KINDS = ("sum", "mean", "max")


def rot180(k: np.ndarray) -> np.ndarray:
    """Rotate by 180 degrees: flip the last two axes (a view, as ``numpy.flip`` returns).

    Examples
    --------
    >>> import numpy as np
    >>> rot180(np.array([[1.0, 2.0], [3.0, 4.0]]))
    array([[4., 3.],
           [2., 1.]])
    """
    if not isinstance(k, np.ndarray) or k.ndim < 2:
        raise ValueError(
            f"k must be an ndarray with at least 2 dimensions, got {getattr(k, 'shape', k)!r}"
        )
    return k[..., ::-1, ::-1]


def _check_operands(a: object, k: object, mode: object) -> tuple[np.ndarray, np.ndarray]:
    check_choice(mode, "mode", _MODES)
    a = check_array(a, "a")
    k = check_array(k, "k")
    for name, arr in (("a", a), ("k", k)):
        if arr.ndim < 2 or arr.shape[-2] == 0 or arr.shape[-1] == 0:
            raise ValueError(f"{name} must have non-empty last two axes, got shape {arr.shape}")
    try:
        np.broadcast_shapes(a.shape[:-2], k.shape[:-2])
    except ValueError:
        raise ValueError(f"leading axes of a {a.shape} and k {k.shape} do not broadcast") from None
    return a, k


def _xcorr_valid(a: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``out[..., s, t] = sum_{p, q} a[..., s + p, t + q] * k[..., p, q]`` (0-size if k larger)."""
    kh, kw = k.shape[-2:]
    ho, wo = max(a.shape[-2] - kh + 1, 0), max(a.shape[-1] - kw + 1, 0)
    lead = np.broadcast_shapes(a.shape[:-2], k.shape[:-2])
    out = np.zeros((*lead, ho, wo), dtype=np.result_type(a, k))
    # Loop over whichever is smaller, the kernel taps or the output positions: each step is
    # then one vectorised multiply-add over the leading axes (2-3x faster than an einsum on
    # the sliding-window view, which matters for the literal conv paths).
    if kh * kw <= ho * wo:
        for p in range(kh):
            for q in range(kw):
                out += a[..., p : p + ho, q : q + wo] * k[..., p, q, None, None]
    else:
        for s in range(ho):
            for t in range(wo):
                out[..., s, t] = (a[..., s : s + kh, t : t + kw] * k).sum(axis=(-2, -1))
    return out


def conv2(a: np.ndarray, k: np.ndarray, mode: str = "full") -> np.ndarray:
    """True 2-D convolution of the last two axes, exactly MATLAB's ``conv2(a, k, mode)``.

    Parameters
    ----------
    a : ndarray, shape (..., ma, na)
        The map. Floating or complex, finite.
    k : ndarray, shape (..., mk, nk)
        The kernel; leading axes broadcast against those of ``a``.
    mode : {"full", "same", "valid"}
        Output size, as in MATLAB (see the module docstring).

    Returns
    -------
    ndarray
        dtype ``numpy.result_type(a, k)``.

    Raises
    ------
    TypeError
        If ``a`` or ``k`` is not a floating/complex ndarray.
    ValueError
        For an unknown ``mode``, empty or non-finite operands, or leading axes that do not
        broadcast.

    Notes
    -----
    ``C[m, n] = sum_{p, q} a[m - p, n - q] k[p, q]`` over the indices where ``a`` is defined
    (the kernel is flipped). This is the ``conv2`` of eq. (1), (14) and (18).

    Examples
    --------
    >>> import numpy as np
    >>> conv2(np.array([[1.0, 2.0, 3.0]]), np.array([[1.0, 1.0]]), "same")  # MATLAB: [3 5 3]
    array([[3., 5., 3.]])
    >>> conv2(np.ones((2, 2)), np.ones((3, 3)), "valid").shape
    (0, 0)
    """
    a, k = _check_operands(a, k, mode)
    kh, kw = k.shape[-2:]
    flipped = k[..., ::-1, ::-1]
    if mode == "valid":
        return _xcorr_valid(a, flipped)
    pad = [(0, 0)] * (a.ndim - 2) + [(kh - 1, kh - 1), (kw - 1, kw - 1)]
    full = _xcorr_valid(np.pad(a, pad), flipped)
    if mode == "full":
        return full
    # MATLAB's 'same' starts at floor(mk/2); scipy's at floor((mk-1)/2) (they differ for even mk).
    r0, c0 = kh // 2, kw // 2
    return full[..., r0 : r0 + a.shape[-2], c0 : c0 + a.shape[-1]].copy()


def xcorr2(a: np.ndarray, k: np.ndarray, mode: str = "full") -> np.ndarray:
    """2-D cross-correlation: ``xcorr2(a, k, mode) == conv2(a, rot180(k), mode)``.

    This is what deep-learning frameworks call convolution (no kernel flip). Same shapes and
    modes as :func:`conv2`, including MATLAB's 'same' offset.

    Examples
    --------
    >>> import numpy as np
    >>> xcorr2(np.array([[1.0, 2.0, 3.0]]), np.array([[1.0, -1.0]]), "valid")
    array([[-1., -1.]])
    """
    check_array(k, "k")
    return conv2(a, rot180(k), mode)


def _block_view(a: np.ndarray, nh: int, nw: int) -> np.ndarray:
    """``a`` cropped to whole blocks and viewed as ``(..., ho, wo, nh * nw)`` (row-major blocks)."""
    ho, wo = a.shape[-2] // nh, a.shape[-1] // nw
    cropped = a[..., : ho * nh, : wo * nw]
    blocks = cropped.reshape(*a.shape[:-2], ho, nh, wo, nw)
    return np.moveaxis(blocks, -3, -2).reshape(*a.shape[:-2], ho, wo, nh * nw)


def _check_block(shape: tuple[int, ...], n: tuple[int, int], name: str) -> None:
    if len(shape) < 2 or shape[-2] < n[0] or shape[-1] < n[1]:
        raise ValueError(
            f"{name} of shape {shape} is smaller than one {n[0]}x{n[1]} block; "
            f"down needs at least one whole block"
        )


def down(a: np.ndarray, n: int | tuple[int, int], kind: str = "sum") -> np.ndarray:
    """Non-overlapping ``n x n`` (or ``nh x nw``) pooling of the last two axes.

    Parameters
    ----------
    a : ndarray, shape (..., H, W)
    n : int or (int, int)
        Block size. Trailing rows/columns that do not fill a whole block are cropped.
    kind : {"sum", "mean", "max"}
        ``"max"`` of complex input takes the element whose real part is largest (the first
        such element in row-major order within the block), so complex steps flow through it.

    Returns
    -------
    ndarray, shape (..., H // nh, W // nw)

    Notes
    -----
    The ``down`` of eq. (3) and ``d_i = down(A_i)`` of eq. (20).

    Examples
    --------
    >>> import numpy as np
    >>> down(np.arange(20.0).reshape(4, 5), 2, "max")  # the last column is cropped
    array([[ 6.,  8.],
           [16., 18.]])
    """
    a = check_array(a, "a")
    nh, nw = as_pair(n, "n")
    check_choice(kind, "kind", _KINDS)
    _check_block(a.shape, (nh, nw), "a")
    blocks = _block_view(a, nh, nw)
    if kind == "sum":
        return blocks.sum(axis=-1)
    if kind == "mean":
        return blocks.sum(axis=-1) / (nh * nw)
    if np.iscomplexobj(a):
        idx = np.argmax(blocks.real, axis=-1)[..., None]
        return np.take_along_axis(blocks, idx, axis=-1)[..., 0]
    return blocks.max(axis=-1)


def up(
    d: np.ndarray,
    n: int | tuple[int, int],
    kind: str = "sum",
    *,
    shape: tuple[int, ...] | None = None,
    a: np.ndarray | None = None,
) -> np.ndarray:
    """The exact adjoint of :func:`down`: ``<down(a, n, kind), d> == <a, up(d, n, kind, ...)>``.

    Parameters
    ----------
    d : ndarray, shape (..., ho, wo)
        The pooled-side values (for back-propagation, the delta of the pooled layer).
    n : int or (int, int)
        Block size used by ``down``.
    kind : {"sum", "mean", "max"}
        ``"sum"`` copies each ``d`` to every element of its block (the ``up`` of eq. (10) =
        ``kron(d, ones(n, n))``); ``"mean"`` does the same divided by ``nh * nw``; ``"max"``
        routes each ``d`` to the first maximum of its block in row-major order (by real part
        for complex ``a``), zero elsewhere.
    shape : tuple of int, optional
        Shape of ``a`` (the un-pooled array). Rows/columns that ``down`` cropped come back as
        zeros. Defaults to ``a.shape`` when ``a`` is given, else ``(..., ho * nh, wo * nw)``.
    a : ndarray, optional
        The array that was pooled; required for ``kind="max"``.

    Returns
    -------
    ndarray, shape ``shape`` (leading axes broadcast between ``d`` and ``shape``)

    Raises
    ------
    ValueError
        If ``kind="max"`` without ``a``, or if ``shape``/``a`` does not pool to ``d``'s shape.

    Notes
    -----
    The ``up`` of eq. (10)/(11); the adjoint identity is what makes eq. (10) the exact
    gradient of eq. (3).

    Examples
    --------
    >>> import numpy as np
    >>> up(np.array([[1.0]]), 2, "mean", shape=(3, 2))
    array([[0.25, 0.25],
           [0.25, 0.25],
           [0.  , 0.  ]])
    """
    d = check_array(d, "d")
    nh, nw = as_pair(n, "n")
    check_choice(kind, "kind", _KINDS)
    if d.ndim < 2:
        raise ValueError(f"d must have at least 2 dimensions, got shape {d.shape}")
    if a is not None:
        a = check_array(a, "a")
        if shape is not None and tuple(shape) != a.shape:
            raise ValueError(f"shape {tuple(shape)} disagrees with a.shape {a.shape}")
        shape = a.shape
    if kind == "max" and a is None:
        raise ValueError('up(..., kind="max") needs a= (the array that was pooled)')
    ho, wo = d.shape[-2:]
    if shape is None:
        shape = (*d.shape[:-2], ho * nh, wo * nw)
    shape = tuple(int(s) for s in shape)
    _check_block(shape, (nh, nw), "shape")
    if (shape[-2] // nh, shape[-1] // nw) != (ho, wo):
        raise ValueError(
            f"d has shape {d.shape}, but down(., {(nh, nw)}) of shape {shape} "
            f"has spatial shape {(shape[-2] // nh, shape[-1] // nw)}"
        )
    try:
        lead = np.broadcast_shapes(d.shape[:-2], shape[:-2])
    except ValueError:
        raise ValueError(
            f"leading axes of d {d.shape} and shape {shape} do not broadcast"
        ) from None
    if kind == "max":
        assert a is not None
        blocks = _block_view(a, nh, nw)  # (..., ho, wo, nh*nw)
        first_max = np.argmax(blocks.real, axis=-1)[..., None]
        mask = np.arange(nh * nw) == first_max
        spread = np.where(mask, d[..., None], 0).astype(np.result_type(d), copy=False)
    else:
        scale = 1.0 / (nh * nw) if kind == "mean" else 1.0
        spread = np.broadcast_to(d[..., None] * scale, (*d.shape, nh * nw))
    spread = np.broadcast_to(spread, (*lead, ho, wo, nh * nw))
    out = np.zeros((*lead, *shape[-2:]), dtype=spread.dtype)
    block = out[..., : ho * nh, : wo * nw].reshape(*lead, ho, nh, wo, nw)
    block[...] = np.moveaxis(spread.reshape(*lead, ho, wo, nh, nw), -2, -3)
    return out
