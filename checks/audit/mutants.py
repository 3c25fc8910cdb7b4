"""The mutations: one step of a correct backward pass corrupted the way a derivation mistake would.

A :class:`Mutant` wraps a correct cnn_ref layer and rewrites its backward result through a
corruption ``corrupt(ctx) -> dx`` (:class:`Ctx` holds what it sees): a missing rot180, K_ij for
K_ji, an up-sampling without 1/n^2, a dropped beta, ... The corruptions are the functions of
this module; :mod:`checks.audit.corpus` pairs each with a layer, an input and the verdict the
checker must reach.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Ctx",
    "Mutant",
    "beta_dropped",
    "dK_channels_swapped",
    "dK_not_flipped",
    "db_times_beta",
    "dbeta_without_down",
    "dense_dW_first_sample",
    "dense_dW_transposed",
    "dense_db_wrong_axis",
    "dense_db_wrong_shape",
    "dx_border_zeroed",
    "dx_one_element",
    "dx_padding_offset",
    "dx_stride_repeat",
    "dx_with_kij_for_kji",
    "dx_without_rot180",
    "first_sample_only",
    "largest",
    "max_up_as_kron",
    "mean_up_without_factor",
    "nan_in_grad",
    "negate",
    "one_element",
    "relu_mask_forgotten",
    "scaled",
    "set_grad",
    "sigmoid_df_of_u",
    "tanh_df_missing_square",
    "zero",
]


@dataclass
class Ctx:
    """What a corruption sees: the forward input, ``dy``, the correct results, the layer."""

    x: np.ndarray
    dy: np.ndarray
    dx: np.ndarray
    grads: dict[str, np.ndarray]
    params: dict[str, np.ndarray]
    base: Any


class Mutant:
    """A correct layer whose backward result is rewritten by ``corrupt(ctx) -> dx``.

    ``corrupt`` may also rewrite ``ctx.grads`` (a copy of the base layer's gradients). The
    mutant shares ``params`` with the base layer, so a checker's perturbations reach it.
    """

    def __init__(self, base: Any, corrupt: Callable[[Ctx], np.ndarray], name: str = "") -> None:
        self.base = base
        self.params = base.params
        self.grads: dict[str, np.ndarray] = {k: np.zeros_like(v) for k, v in base.params.items()}
        self._corrupt = corrupt
        self._x: np.ndarray | None = None
        self.name = name

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = x
        return np.asarray(self.base.forward(x))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        assert self._x is not None
        dx = self.base.backward(dy)
        ctx = Ctx(self._x, dy, dx, dict(self.base.grads), self.params, self.base)
        dx = self._corrupt(ctx)
        self.grads = ctx.grads
        return dx

    def __repr__(self) -> str:
        return f"Mutant({self.name}: {self.base!r})"


def _delta(ctx: Ctx) -> np.ndarray:
    """dJ/dU of an identity-activation layer (= dy)."""
    return ctx.dy


def _conv_kw(layer: Any) -> dict[str, Any]:
    return dict(
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
        convention=layer.convention,
    )


# --------------------------------------------------------------------------- corruptions


def set_grad(name: str, fn: Callable[[Ctx], np.ndarray]) -> Callable[[Ctx], np.ndarray]:
    def corrupt(ctx: Ctx) -> np.ndarray:
        ctx.grads[name] = np.asarray(fn(ctx))
        return ctx.dx

    return corrupt


def dK_not_flipped(ctx: Ctx) -> np.ndarray:
    # eq. (14) without its outer rot180 (or with it, on a cross-correlation layer)
    return ctx.grads["K"][..., ::-1, ::-1].copy()


def dK_channels_swapped(ctx: Ctx) -> np.ndarray:
    return ctx.grads["K"].transpose(1, 0, 2, 3).copy()  # dK[i, j] from delta_j and A_i


def dx_with_kij_for_kji(ctx: Ctx) -> np.ndarray:
    # eq. (18) as written: the kernel of the wrong channel pair (K transposed in its first axes)
    from cnn_ref.functional.conv import conv2d_backward

    K = ctx.params["K"].transpose(1, 0, 2, 3)
    return np.asarray(conv2d_backward(_delta(ctx), ctx.x, K, **_conv_kw(ctx.base))[0])


def dx_without_rot180(ctx: Ctx) -> np.ndarray:
    # eq. (18) as written on a true-convolution layer: conv2(delta, K, 'full'), no rot180
    from cnn_ref.functional.conv import conv2d_backward

    kw = _conv_kw(ctx.base)
    kw["convention"] = "xcorr" if kw["convention"] == "conv" else "conv"
    return np.asarray(conv2d_backward(_delta(ctx), ctx.x, ctx.params["K"], **kw)[0])


def dx_stride_repeat(ctx: Ctx) -> np.ndarray:
    # delta up-sampled by repetition instead of zero insertion before the stride-1 backward
    from cnn_ref.functional.conv import conv2d_backward, conv2d_forward

    layer = ctx.base
    sh, sw = layer.stride
    d = np.repeat(np.repeat(_delta(ctx), sh, axis=2), sw, axis=3)
    kw = dict(_conv_kw(layer), stride=1)
    full_shape = conv2d_forward(ctx.x, ctx.params["K"], ctx.params["b"], **kw).shape
    dd = np.zeros(full_shape)
    h, w = min(d.shape[2], full_shape[2]), min(d.shape[3], full_shape[3])
    dd[:, :, :h, :w] = d[:, :, :h, :w]
    return np.asarray(conv2d_backward(dd, ctx.x, ctx.params["K"], **kw)[0])


def dx_padding_offset(ctx: Ctx) -> np.ndarray:
    # the gradient of the padded input cropped at [0:H] instead of [p:p+H]
    from cnn_ref.functional.conv import conv2d_backward

    layer = ctx.base
    ph, pw = layer.padding
    xp = np.pad(ctx.x, [(0, 0), (0, 0), (ph, ph), (pw, pw)])
    dxp = conv2d_backward(_delta(ctx), xp, ctx.params["K"], **dict(_conv_kw(layer), padding=0))[0]
    return np.asarray(dxp[:, :, : ctx.x.shape[2], : ctx.x.shape[3]])


def dx_border_zeroed(ctx: Ctx) -> np.ndarray:
    # the border rows/columns that only padded windows reach are dropped
    dx = ctx.dx.copy()
    dx[:, :, 0, :] = 0
    dx[:, :, -1, :] = 0
    return dx


def one_element(name: str, rel: float) -> Callable[[Ctx], np.ndarray]:
    """Scale the largest-magnitude element of ``grads[name]`` by ``1 + rel``."""

    def fn(ctx: Ctx) -> np.ndarray:
        g = ctx.grads[name].copy()
        flat = g.reshape(-1)
        flat[int(np.argmax(np.abs(flat)))] *= 1 + rel
        return g

    return fn


def dx_one_element(rel: float, where: Callable[[Ctx], int]) -> Callable[[Ctx], np.ndarray]:
    def corrupt(ctx: Ctx) -> np.ndarray:
        dx = ctx.dx.copy()
        dx.reshape(-1)[where(ctx)] *= 1 + rel
        return dx

    return corrupt


def largest(ctx: Ctx) -> int:
    return int(np.argmax(np.abs(ctx.dx)))


def first_sample_only(ctx: Ctx) -> np.ndarray:
    dx = ctx.dx.copy()
    dx[1:] = 0  # a loop over the batch that stops after n = 0
    return dx


def scaled(name: str, c: float) -> Callable[[Ctx], np.ndarray]:
    return lambda ctx: ctx.grads[name] * c


def mean_up_without_factor(ctx: Ctx) -> np.ndarray:
    n = ctx.base.size
    return ctx.dx * (n[0] * n[1])  # (10) with up() = ones-Kronecker, the 1/n^2 forgotten


def max_up_as_kron(ctx: Ctx) -> np.ndarray:
    # (10) with the ones-Kronecker up() on a max layer: delta spread over the whole block
    layer = ctx.base
    n = layer.size
    beta = ctx.params["beta"]
    d = np.kron(_delta(ctx), np.ones(n)) * beta[:, None, None]
    dx = np.zeros_like(ctx.x)
    dx[:, :, : d.shape[2], : d.shape[3]] = d
    return dx


def beta_dropped(ctx: Ctx) -> np.ndarray:
    return ctx.dx / ctx.params["beta"][:, None, None]  # (10) without beta^{l+1}


def dbeta_without_down(ctx: Ctx) -> np.ndarray:
    return _delta(ctx).sum(axis=(0, 2, 3))  # (20) without d = down(A)


def db_times_beta(ctx: Ctx) -> np.ndarray:
    return ctx.grads["b"] * ctx.params["beta"]  # (19) with a stray beta


def dense_db_wrong_axis(ctx: Ctx) -> np.ndarray:
    return _delta(ctx).sum(axis=1)  # summed over features instead of samples


def dense_dW_transposed(ctx: Ctx) -> np.ndarray:
    return (ctx.x.T @ _delta(ctx)).copy()  # x^T delta where (5) needs delta^T x


def dense_dW_first_sample(ctx: Ctx) -> np.ndarray:
    return np.outer(_delta(ctx)[0], ctx.x[0])  # (5) for sample 0 only


def negate(name: str) -> Callable[[Ctx], np.ndarray]:
    return lambda ctx: -ctx.grads[name]


def zero(name: str) -> Callable[[Ctx], np.ndarray]:
    return lambda ctx: np.zeros_like(ctx.grads[name])


def sigmoid_df_of_u(ctx: Ctx) -> np.ndarray:
    u = ctx.x  # Activation: U is the input
    return ctx.dy * u * (1 - u)  # f'(U) written as U (1 - U): the A(1 - A) form applied to U


def tanh_df_missing_square(ctx: Ctx) -> np.ndarray:
    return ctx.dy * (1 - np.tanh(ctx.x))  # 1 - tanh where 1 - tanh^2 is needed


def relu_mask_forgotten(ctx: Ctx) -> np.ndarray:
    return ctx.dy.copy()  # relu'(U) = 1 everywhere


def nan_in_grad(ctx: Ctx) -> np.ndarray:
    g = ctx.grads["K"].copy()
    g[0, 0, 0, 0] = np.nan
    ctx.grads["K"] = g
    return ctx.dx


def dense_db_wrong_shape(ctx: Ctx) -> np.ndarray:
    ctx.grads["b"] = _delta(ctx).sum(axis=1)  # shape (N,) for a bias of shape (out,)
    return ctx.dx
