"""Purpose-built tiny layers for the checker's meta-tests: correct ones, and bugs planted by
construction (so the expected verdict never comes from the code under test)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


class Conv:
    """Valid cross-correlation, NCHW, K (C_out, C_in, kh, kw), bias (C_out,)."""

    def __init__(self, K: np.ndarray, b: np.ndarray) -> None:
        self.params = {"K": K, "b": b}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        K, b = self.params["K"], self.params["b"]
        w = sliding_window_view(x, K.shape[2:], axis=(2, 3))
        return np.einsum("nchwij,ocij->nohw", w, K) + b[:, None, None]

    def backward(self, dy: np.ndarray) -> np.ndarray:
        x, K = self.x, self.params["K"]
        kh, kw = K.shape[2:]
        w = sliding_window_view(x, (kh, kw), axis=(2, 3))
        self.grads["K"] = np.einsum("nchwij,nohw->ocij", w, dy)
        self.grads["b"] = dy.sum(axis=(0, 2, 3))
        dyp = np.pad(dy, ((0, 0), (0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1)))
        wd = sliding_window_view(dyp, (kh, kw), axis=(2, 3))
        return np.einsum("nohwij,ocij->nchw", wd, K[:, :, ::-1, ::-1])


class Dense:
    """y = sigmoid(x W^T + b), smooth and analytic (complex step works)."""

    def __init__(self, W: np.ndarray, b: np.ndarray) -> None:
        self.params = {"W": W, "b": b}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        u = x @ self.params["W"].T + self.params["b"]
        self.s = 1.0 / (1.0 + np.exp(-u))
        return self.s

    def backward(self, dy: np.ndarray) -> np.ndarray:
        du = dy * self.s * (1.0 - self.s)
        self.grads["W"] = du.T @ self.x
        self.grads["b"] = du.sum(axis=0)
        return du @ self.params["W"]


class ReLU:
    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        return np.maximum(x, 0)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy * (self.x > 0)


class ScaleReLU:
    """y = relu(x * w): a parameter through a kink (needs central differences)."""

    def __init__(self, w: np.ndarray) -> None:
        self.params = {"w": w}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        self.u = x * self.params["w"]
        return np.where(self.u > 0, self.u, 0.0)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        du = dy * (self.u > 0)
        self.grads["w"] = (du * self.x).sum(axis=0)
        return du * self.params["w"]


class MaxPool2:
    """2x2 max pooling, NCHW; the gradient goes to the first maximum of each block."""

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        n, c, h, w = x.shape
        blocks = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5)
        flat = blocks.reshape(n, c, h // 2, w // 2, 4)
        self.arg = flat.argmax(axis=-1)
        self.shape = x.shape
        return flat.max(axis=-1)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        n, c, h, w = self.shape
        flat = np.zeros((n, c, h // 2, w // 2, 4))
        np.put_along_axis(flat, self.arg[..., None], dy[..., None], axis=-1)
        blocks = flat.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5)
        return blocks.reshape(n, c, h, w)


class BatchNormLike:
    """y = (x - mean_batch(x)) * g: samples are NOT independent."""

    def __init__(self, g: np.ndarray) -> None:
        self.params = {"g": g}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.xc = x - x.mean(axis=0, keepdims=True)
        return self.xc * self.params["g"]

    def backward(self, dy: np.ndarray) -> np.ndarray:
        self.grads["g"] = (dy * self.xc).sum(axis=0)
        d = dy * self.params["g"]
        return d - d.mean(axis=0, keepdims=True)


class Planted:
    """Wrap a correct layer and scale one element of one gradient by ``1 + rel``."""

    def __init__(self, inner: Any, tensor: str, index: tuple[int, ...], rel: float) -> None:
        self.inner = inner
        self.params = inner.params
        self.tensor, self.index, self.rel = tensor, index, rel

    @property
    def grads(self) -> dict[str, np.ndarray]:
        return self.inner.grads

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.inner.forward(x)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dx = self.inner.backward(dy)
        g = dx if self.tensor == "x" else self.inner.grads[self.tensor]
        g[self.index] *= 1.0 + self.rel
        return dx


def conv(
    rng: np.random.Generator, c_in: int = 2, c_out: int = 3, k: int = 3, dtype: type = np.float64
) -> Conv:
    return Conv(
        rng.standard_normal((c_out, c_in, k, k)).astype(dtype),
        rng.standard_normal(c_out).astype(dtype),
    )


def dense(
    rng: np.random.Generator, n_in: int = 5, n_out: int = 4, dtype: type = np.float64
) -> Dense:
    return Dense(
        rng.standard_normal((n_out, n_in)).astype(dtype), rng.standard_normal(n_out).astype(dtype)
    )


def typical_index(g: np.ndarray, rng: np.random.Generator) -> tuple[int, ...]:
    """A random non-zero element whose magnitude is at least the median of the non-zero ones
    (so a relative error there is an error of a typical size)."""
    mag = np.abs(g)
    cand = np.argwhere((mag > 0) & (mag >= np.median(mag[mag > 0])))
    return tuple(int(i) for i in cand[rng.integers(len(cand))])


class PositionRounded:
    """A ReLU conv whose pre-activations at odd batch positions are rounded differently, as a
    BLAS-backed layer's are: a fixed pattern of them (every third, per sample) is nudged by
    one ulp of the sample's typical pre-activation ``mean |u|`` -- what a GEMM's blocking
    does to the same sample in another column (near-cancelling sums carry the rounding of
    their terms, not of their small result). The function stays correct to rounding, so a
    checker must give the verdicts it gives without the nudge."""

    def __init__(self, inner: Any, nudge: bool = True) -> None:
        self.inner = inner  # a correct layer with no activation
        self.params = inner.params
        self.nudge = nudge

    @property
    def grads(self) -> dict[str, np.ndarray]:
        return self.inner.grads

    def forward(self, x: np.ndarray) -> np.ndarray:
        u = np.array(self.inner.forward(x))
        if self.nudge:
            flat = u.reshape(u.shape[0], -1)  # a view: nudges land in u
            typical = np.abs(flat).mean(axis=1, keepdims=True)
            odd = np.arange(u.shape[0]) % 2 == 1
            flat[odd, ::3] += np.spacing(typical[odd].astype(u.real.dtype))
        self.u = u
        return np.maximum(u, 0)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return self.inner.backward(dy * (self.u > 0))


class ReusedBuffer:
    """``y = tanh(x W^T + b)`` written into one buffer that every forward call returns (a
    common speed trick: ``np.tanh(u, out=self._out)``), with an optional bug in ``dW``:
    ``"flip"`` (sign), ``"zero"`` or ``"scale"`` (x 1.5). The checker must treat what a
    layer returns as borrowed until its next call."""

    def __init__(self, W: np.ndarray, b: np.ndarray, bug: str | None = None) -> None:
        self.params = {"W": W, "b": b}
        self.grads: dict[str, np.ndarray] = {}
        self.bug = bug
        self._out: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        u = x @ self.params["W"].T + self.params["b"]
        if self._out is None or self._out.shape != u.shape or self._out.dtype != u.dtype:
            self._out = np.empty_like(u)
        np.tanh(u, out=self._out)
        self.x = x
        return self._out

    def backward(self, dy: np.ndarray) -> np.ndarray:
        assert self._out is not None
        du = dy * (1.0 - self._out**2)
        dW = du.T @ self.x
        self.grads["W"] = {None: dW, "flip": -dW, "zero": 0 * dW, "scale": 1.5 * dW}[self.bug]
        self.grads["b"] = du.sum(axis=0)
        return du @ self.params["W"]
