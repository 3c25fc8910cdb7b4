"""Vectorised cross-correlation core behind ``conv2d_forward`` / ``conv2d_backward(impl="fast")``.

Everything here is cross-correlation (no kernel flip) on an already zero-padded input ``xp``;
``conv.py`` flips the kernel for ``convention="conv"`` and crops the padding. Arguments are
trusted (``conv.py`` validates them).

How it is fast (measured on the 2-core OpenBLAS machine this was written on): im2col feeding
one GEMM per chunk of samples, the chunk's columns side by side in one reused buffer of about
4 MB so that the GEMM reads them from cache. One buffer for the whole batch made the GEMM read
its operand from memory and cost 20-35 % of the throughput. The backward pass reuses the same
machinery: the kernel gradient is ``dy @ cols.T`` per chunk, the input gradient (stride 1) is
the forward correlation of the zero-padded ``dy`` with the flipped, channel-transposed kernel,
and for strides > 1 a col2im scatter of ``K.T @ dy``.

For stride 1 the columns are built with the "flattened rows" trick: output position
``j = y * Wp + x`` reads input element ``j + p * dh * Wp + q * dw`` of the flattened padded
map, so every (channel, p, q) row of the im2col matrix is one contiguous run of the input
(a memcpy). The ``Wp - Wo`` right-most columns of every output row are garbage and are dropped.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

# im2col buffer per GEMM call. Measured (f32, shapes B and C): 1-4 MB chunks reach 66-80 % of
# the GEMM peak on an idle machine, 24 MB only 50-60 % (the GEMM then reads its operand from
# memory instead of cache); under heavy contention from other processes larger chunks
# degrade less, but the idle numbers are what the targets are about.
_CHUNK_BYTES = 4 << 20


def _chunk(n: int, per_sample_bytes: int) -> int:
    return max(1, min(n, _CHUNK_BYTES // max(per_sample_bytes, 1)))


class _Im2col:
    """Reusable im2col buffer for a padded input of shape ``(N, C, Hp, Wp)``.

    ``cols(xp, n0, n1)`` returns the ``(C*kh*kw, m * Ho*Wc)`` matrix of samples ``n0:n1``
    side by side (sample-major within each row), where ``Wc`` is ``Wp`` (stride 1, flattened
    rows, garbage columns beyond ``Wo``) or ``Wo`` (strided). One GEMM covers ``m`` samples,
    so small maps do not pay one BLAS call per sample.
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        kernel_hw: tuple[int, int],
        stride: tuple[int, int],
        dilation: tuple[int, int],
        out_hw: tuple[int, int],
        dtype: np.dtype,
    ) -> None:
        n, c, _, wp = shape
        self.c = c
        self.kh, self.kw = kernel_hw
        self.stride, self.dilation = stride, dilation
        self.ho, self.wo = out_hw
        self.flat = stride == (1, 1)
        self.wc = wp if self.flat else self.wo
        self.rows = c * self.kh * self.kw
        self.npos = self.ho * self.wc
        self.chunk = _chunk(n, self.rows * self.npos * dtype.itemsize)
        # zeros: the garbage tail of each flattened row stays finite (it is never written)
        self.buf = np.zeros(self.rows * self.chunk * self.npos, dtype=dtype)

    def cols(self, xp: np.ndarray, n0: int, n1: int) -> np.ndarray:
        m = n1 - n0
        xs = xp[n0:n1]
        s0, s1, s2, s3 = xs.strides
        (dh, dw), (sh, sw) = self.dilation, self.stride
        block = self.buf[: self.rows * m * self.npos].reshape(self.c, self.kh, self.kw, m, -1)
        if self.flat:
            length = (self.ho - 1) * self.wc + self.wo
            view = as_strided(
                xs,
                (self.c, self.kh, self.kw, m, length),
                (s1, s2 * dh, s3 * dw, s0, s3),
                writeable=False,
            )
            block[..., :length] = view
        else:
            view = as_strided(
                xs,
                (self.c, self.kh, self.kw, m, self.ho, self.wo),
                (s1, s2 * dh, s3 * dw, s0, s2 * sh, s3 * sw),
                writeable=False,
            )
            block.reshape(self.c, self.kh, self.kw, m, self.ho, self.wo)[...] = view
        return block.reshape(self.rows, m * self.npos)


def xcorr_forward(
    xp: np.ndarray,
    Kx: np.ndarray,
    stride: tuple[int, int],
    dilation: tuple[int, int],
    dtype: np.dtype,
) -> np.ndarray:
    """``u[n, o, y, x] = sum_{c,p,q} xp[n, c, y*sh + p*dh, x*sw + q*dw] * Kx[o, c, p, q]``."""
    n, c, hp, wp = xp.shape
    o, _, kh, kw = Kx.shape
    (sh, sw), (dh, dw) = stride, dilation
    ho = (hp - (kh - 1) * dh - 1) // sh + 1
    wo = (wp - (kw - 1) * dw - 1) // sw + 1
    xp = np.ascontiguousarray(xp)  # the flattened-rows trick needs C-contiguous maps
    K2 = np.ascontiguousarray(Kx.reshape(o, c * kh * kw), dtype=dtype)
    im = _Im2col(xp.shape, (kh, kw), stride, dilation, (ho, wo), dtype)
    u = np.empty((n, o, ho, wo), dtype=dtype)
    res = np.empty(o * im.chunk * im.npos, dtype=dtype)
    for n0 in range(0, n, im.chunk):
        n1 = min(n0 + im.chunk, n)
        m = n1 - n0
        t = np.matmul(K2, im.cols(xp, n0, n1), out=res[: o * m * im.npos].reshape(o, -1))
        u[n0:n1] = t.reshape(o, m, ho, im.wc)[..., :wo].transpose(1, 0, 2, 3)
    return u


def xcorr_grad_kernel(
    dy: np.ndarray,
    xp: np.ndarray,
    kernel_hw: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    dtype: np.dtype,
) -> np.ndarray:
    """``dKx[o, c, p, q] = sum_{n,y,x} dy[n, o, y, x] * xp[n, c, y*sh + p*dh, x*sw + q*dw]``."""
    n, c, _, _ = xp.shape
    o, ho, wo = dy.shape[1:]
    kh, kw = kernel_hw
    xp = np.ascontiguousarray(xp)
    im = _Im2col(xp.shape, kernel_hw, stride, dilation, (ho, wo), dtype)
    dK2 = np.zeros((o, im.rows), dtype=dtype)
    part = np.empty((o, im.rows), dtype=dtype)
    # dy laid out like the columns: (o, m, ho, Wc), zero on the garbage columns
    dyc = np.zeros(o * im.chunk * im.npos, dtype=dtype)
    for n0 in range(0, n, im.chunk):
        n1 = min(n0 + im.chunk, n)
        m = n1 - n0
        d = dyc[: o * m * im.npos].reshape(o, m, ho, im.wc)
        d[..., :wo] = dy[n0:n1].transpose(1, 0, 2, 3)
        np.matmul(d.reshape(o, -1), im.cols(xp, n0, n1).T, out=part)
        dK2 += part
    return dK2.reshape(o, c, kh, kw)


def xcorr_grad_input(
    dy: np.ndarray,
    Kx: np.ndarray,
    padded_hw: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    dtype: np.dtype,
) -> np.ndarray:
    """Gradient with respect to the padded input ``xp`` (shape ``(N, C, Hp, Wp)``).

    ``dxp[n, c, y*sh + p*dh, x*sw + q*dw] += dy[n, o, y, x] * Kx[o, c, p, q]``.
    """
    n, o, ho, wo = dy.shape
    _, c, kh, kw = Kx.shape
    hp, wp = padded_hw
    (sh, sw), (dh, dw) = stride, dilation
    # Measured: the col2im scatter wins 2-4x when C_in is small next to C_out (shape A, 3 -> 16:
    # the dy columns would be O*kh*kw rows deep for a GEMM with only C_in outputs); the 'full'
    # correlation of dy wins by 10-40 % at C_in >= C_out (shapes B, C) and on tiny maps.
    if (sh, sw) == (1, 1) and not (2 * c <= o and n * c * hp * wp >= 4096):
        # stride 1: a 'full' correlation of dy with the flipped, channel-transposed kernel,
        # i.e. the forward kernel on dy padded by the dilated kernel size minus one.
        eh, ew = (kh - 1) * dh, (kw - 1) * dw
        dyp = np.zeros((n, o, ho + 2 * eh, wo + 2 * ew), dtype=dtype)
        dyp[:, :, eh : eh + ho, ew : ew + wo] = dy
        Kt = Kx[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
        return xcorr_forward(dyp, Kt, (1, 1), dilation, dtype)
    return _col2im(dy, Kx, padded_hw, stride, dilation, dtype)


def _col2im(
    dy: np.ndarray,
    Kx: np.ndarray,
    padded_hw: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    dtype: np.dtype,
) -> np.ndarray:
    """``dxp`` as a col2im scatter of ``dcols = K^T dy``, chunk by chunk, window by window."""
    n, o, ho, wo = dy.shape
    _, c, kh, kw = Kx.shape
    hp, wp = padded_hw
    (sh, sw), (dh, dw) = stride, dilation
    K2t = np.ascontiguousarray(Kx.reshape(o, c * kh * kw).T, dtype=dtype)
    dxp = np.zeros((n, c, hp, wp), dtype=dtype)
    chunk = _chunk(n, c * kh * kw * ho * wo * np.dtype(dtype).itemsize)
    dyc = np.empty(o * chunk * ho * wo, dtype=dtype)
    for n0 in range(0, n, chunk):
        n1 = min(n0 + chunk, n)
        m = n1 - n0
        d = dyc[: o * m * ho * wo].reshape(o, m, ho, wo)
        d[...] = dy[n0:n1].transpose(1, 0, 2, 3)
        dc = np.matmul(K2t, d.reshape(o, -1)).reshape(c, kh, kw, m, ho, wo)
        for p in range(kh):
            for q in range(kw):
                r0, c0 = p * dh, q * dw
                window = (
                    slice(r0, r0 + sh * (ho - 1) + 1, sh),
                    slice(c0, c0 + sw * (wo - 1) + 1, sw),
                )
                dxp[n0:n1, :, window[0], window[1]] += dc[:, p, q].transpose(1, 0, 2, 3)
    return dxp
