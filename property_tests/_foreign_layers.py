"""Layers written in other projects' styles, to prove the adapters (not part of the package).

``NHWCConv2D`` follows numpy-ml's conventions: NHWC tensors, kernel ``W`` of shape
``(kh, kw, in_ch, out_ch)`` and bias ``b`` of shape ``(1, 1, 1, out_ch)`` created on the first
forward, gradients in ``self.gradients`` accumulated with ``+=``, every input appended to
``self.X`` and a backward that walks all of them. ``Dropout`` draws its mask from the global
numpy RNG. ``affine_*`` / ``conv_*`` are cs231n-style function pairs. ``Dense`` follows
ML-From-Scratch: weights in attributes ``W`` / ``w0``, each with its own copy of an optimizer
(``StochasticGradientDescent``) that backward hands the gradient to.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


class NHWCConv2D:
    """Cross-correlation layer in numpy-ml's style (NHWC, lazy parameters, ``+=`` grads)."""

    def __init__(
        self,
        out_ch: int,
        kernel_shape: tuple[int, int],
        stride: int = 1,
        pad: int = 0,
        seed: int = 0,
        flip_dW: bool = False,
        dtype: Any = np.float64,
    ) -> None:
        self.dtype = np.dtype(dtype)
        self.out_ch = out_ch
        self.kernel_shape = kernel_shape
        self.stride = stride
        self.pad = pad
        self.seed = seed
        self.flip_dW = flip_dW  # a planted bug: the kernel gradient comes out rot180'd
        self.parameters: dict[str, Any] = {"W": None, "b": None}
        self.gradients: dict[str, Any] = {"W": None, "b": None}
        self.X: list[np.ndarray] = []
        self.is_initialized = False

    def _init_params(self, in_ch: int) -> None:
        rng = np.random.default_rng(self.seed)
        fr, fc = self.kernel_shape
        W = rng.normal(scale=1.0 / np.sqrt(fr * fc * in_ch), size=(fr, fc, in_ch, self.out_ch))
        b = rng.normal(scale=0.1, size=(1, 1, 1, self.out_ch))
        W, b = W.astype(self.dtype), b.astype(self.dtype)
        self.parameters = {"W": W, "b": b}
        self.gradients = {"W": np.zeros_like(W), "b": np.zeros_like(b)}
        self.is_initialized = True

    def _windows(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p, s = self.pad, self.stride
        Xp = np.pad(X, ((0, 0), (p, p), (p, p), (0, 0)))
        win = sliding_window_view(Xp, self.kernel_shape, axis=(1, 2))[:, ::s, ::s]
        return Xp, win  # win: (n, out_r, out_c, in_ch, fr, fc)

    def forward(self, X: np.ndarray, retain_derived: bool = True) -> np.ndarray:
        if not self.is_initialized:
            self._init_params(X.shape[3])
        _, win = self._windows(X)
        Y = np.einsum("nhwcij,ijco->nhwo", win, self.parameters["W"]) + self.parameters["b"]
        if retain_derived:
            self.X.append(X)
        return Y

    def backward(self, dLdY: Any, retain_grads: bool = True) -> Any:
        if not isinstance(dLdY, list):
            dLdY = [dLdY]
        W, s, p = self.parameters["W"], self.stride, self.pad
        fr, fc = self.kernel_shape
        dX = []
        for dy, X in zip(dLdY, self.X, strict=False):
            Xp, win = self._windows(X)
            dW = np.einsum("nhwcij,nhwo->ijco", win, dy)
            if self.flip_dW:
                dW = dW[::-1, ::-1]
            db = dy.sum(axis=(0, 1, 2), keepdims=True)
            oh, ow = dy.shape[1:3]
            dXp = np.zeros_like(Xp)
            for i in range(fr):
                for j in range(fc):
                    dXp[:, i : i + s * oh : s, j : j + s * ow : s, :] += np.einsum(
                        "nhwo,co->nhwc", dy, W[i, j]
                    )
            dX.append(dXp[:, p : p + X.shape[1], p : p + X.shape[2], :])
            if retain_grads:
                self.gradients["W"] += dW
                self.gradients["b"] += db
        return dX[0] if len(self.X) == 1 else dX


class Dropout:
    """Inverted dropout with its mask drawn from the legacy global RNG (``np.random``)."""

    def __init__(self, p: float = 0.3, forget_scale: bool = False) -> None:
        self.p = p
        self.forget_scale = forget_scale  # a planted bug: backward drops the 1/(1-p)
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.mask = np.ones(0)

    def forward(self, x: np.ndarray) -> np.ndarray:
        keep = np.random.rand(*x.shape) >= self.p  # noqa: NPY002 -- the style under test
        self.mask = keep / (1.0 - self.p)
        return x * self.mask

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if self.forget_scale:
            return dy * (self.mask != 0)
        return dy * self.mask


def affine_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, Any]:
    """cs231n: ``x`` (N, d_1, ..., d_k) flattened to (N, D); ``w`` (D, M); ``b`` (M,)."""
    out = x.reshape(x.shape[0], -1) @ w + b
    return out, (x, w)


def affine_backward(dout: np.ndarray, cache: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, w = cache
    dx = (dout @ w.T).reshape(x.shape)
    dw = x.reshape(x.shape[0], -1).T @ dout
    return dx, dw, dout.sum(axis=0)


def affine_backward_mean_bias(dout: np.ndarray, cache: Any) -> tuple[Any, Any, Any]:
    """A planted bug: the bias gradient averages over the batch instead of summing."""
    dx, dw, db = affine_backward(dout, cache)
    return dx, dw, db / dout.shape[0]


def conv_forward_naive(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, conv_param: dict[str, int]
) -> tuple[np.ndarray, Any]:
    """cs231n: cross-correlation, ``w`` (F, C, HH, WW), ``conv_param`` {stride, pad}."""
    s, p = conv_param["stride"], conv_param["pad"]
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    win = sliding_window_view(xp, w.shape[2:], axis=(2, 3))[:, :, ::s, ::s]
    out = np.einsum("nchwij,fcij->nfhw", win, w) + b[None, :, None, None]
    return out, (x, w, conv_param)


def conv_backward_naive(dout: np.ndarray, cache: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, w, conv_param = cache
    s, p = conv_param["stride"], conv_param["pad"]
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    win = sliding_window_view(xp, w.shape[2:], axis=(2, 3))[:, :, ::s, ::s]
    dw = np.einsum("nchwij,nfhw->fcij", win, dout)
    dxp = np.zeros_like(xp)
    oh, ow = dout.shape[2:]
    for i in range(w.shape[2]):
        for j in range(w.shape[3]):
            dxp[:, :, i : i + s * oh : s, j : j + s * ow : s] += np.einsum(
                "nfhw,fc->nchw", dout, w[:, :, i, j]
            )
    dx = dxp[:, :, p : p + x.shape[2], p : p + x.shape[3]]
    return dx, dw, dout.sum(axis=(0, 2, 3))


def relu_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.maximum(x, 0), x


def relu_backward(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
    return dout * (cache > 0)


class StochasticGradientDescent:
    """ML-From-Scratch's SGD with momentum: ``update`` returns new weights (a new array)."""

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0) -> None:
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.w_updt: np.ndarray | None = None

    def update(self, w: np.ndarray, grad_wrt_w: np.ndarray) -> np.ndarray:
        if self.w_updt is None:
            self.w_updt = np.zeros(np.shape(w))
        self.w_updt = self.momentum * self.w_updt + (1 - self.momentum) * grad_wrt_w
        return w - self.learning_rate * self.w_updt


class Dense:
    """A fully connected layer in ML-From-Scratch's style: ``forward_pass`` /
    ``backward_pass``, and backward updates the weights through the optimizers."""

    def __init__(
        self, n_units: int, input_shape: tuple[int], seed: int = 0, mean_grad_w: bool = False
    ) -> None:
        self.layer_input: np.ndarray | None = None
        self.input_shape = input_shape
        self.n_units = n_units
        self.trainable = True
        self.seed = seed
        self.mean_grad_w = mean_grad_w  # a planted bug: grad_w averaged over the batch

    def initialize(self, optimizer: StochasticGradientDescent) -> None:
        rng = np.random.default_rng(self.seed)
        limit = 1 / math.sqrt(self.input_shape[0])
        self.W = rng.uniform(-limit, limit, (self.input_shape[0], self.n_units))
        self.w0 = rng.uniform(-limit, limit, (1, self.n_units))  # nonzero: b's effect shows
        self.W_opt = copy.copy(optimizer)
        self.w0_opt = copy.copy(optimizer)

    def forward_pass(self, X: np.ndarray, training: bool = True) -> np.ndarray:
        self.layer_input = X
        return X.dot(self.W) + self.w0

    def backward_pass(self, accum_grad: np.ndarray) -> np.ndarray:
        W = self.W  # the weights forward used: the gradient goes back through them
        if self.trainable:
            assert self.layer_input is not None
            grad_w = self.layer_input.T.dot(accum_grad)
            if self.mean_grad_w:
                grad_w = grad_w / accum_grad.shape[0]
            grad_w0 = np.sum(accum_grad, axis=0, keepdims=True)
            self.W = self.W_opt.update(self.W, grad_w)
            self.w0 = self.w0_opt.update(self.w0, grad_w0)
        return accum_grad.dot(W.T)
