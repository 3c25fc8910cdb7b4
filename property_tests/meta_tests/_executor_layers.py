"""Layers and functions for the executor tests, at module level so that they pickle (an
executor's worker imports this module to rebuild them)."""

from __future__ import annotations

from typing import Any

import numpy as np

import cnn_ref


def small_conv(seed: int = 0, cls: type = cnn_ref.Conv2D, **kw: Any) -> tuple[Any, np.ndarray]:
    """A tanh conv (3 -> 4 maps, 3x3, cross-correlation) and its input (2, 3, 8, 8)."""
    layer = cls(3, 4, 3, convention="xcorr", activation="tanh", seed=seed, **kw)
    x = np.random.default_rng(100 + seed).standard_normal((2, 3, 8, 8))
    return layer, x


class PlantedConv(cnn_ref.Conv2D):
    """A cnn_ref conv whose backward scales one element of dx by ``1 + rel`` (0.1 %)."""

    def __init__(self, *args: Any, index: tuple[int, ...], rel: float = 1e-3, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.index, self.rel = index, rel

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dx = super().backward(dy)
        dx[self.index] *= 1.0 + self.rel
        return dx


class LoggedConv(cnn_ref.Conv2D):
    """A cnn_ref conv that appends a line to ``log`` at every forward call, wherever it runs
    (the count of forward calls, independent of the checker's own)."""

    def __init__(self, *args: Any, log: str, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.log = log

    def forward(self, x: np.ndarray) -> np.ndarray:
        with open(self.log, "a") as f:  # one short line per call: appends do not interleave
            f.write("forward\n")
        return super().forward(x)


class RefusesLargeComplex(cnn_ref.Conv2D):
    """Takes complex values on a batch of its own size (the checker's complex-step probe)
    and refuses them on a larger (packed) one: the complex step fails mid-check, and the
    check falls back to real differences -- the layer's ``TypeError`` must reach the
    checker as the cause, from wherever the call ran."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        if np.iscomplexobj(x) and x.shape[0] > 2:
            raise TypeError("complex input on a packed batch")
        return super().forward(x)


class MutatesOnPackedComplex(cnn_ref.Conv2D):
    """Changes its bias in forward, but only on packed complex calls (numerical part only)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        if np.iscomplexobj(x) and x.shape[0] > 2:
            self.params["b"][0] += 1e-3
        return super().forward(x)


class HoldsLambda(cnn_ref.Conv2D):
    """A cnn_ref conv with a lambda among its attributes: pickle refuses it."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.schedule = lambda step: 0.1 * step


def scaled_tanh(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``tanh(x) * w`` per feature, for check_vjp."""
    return np.tanh(x) * w


def scaled_tanh_vjp(dy: np.ndarray, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, ...]:
    return dy * w * (1.0 - np.tanh(x) ** 2), (dy * np.tanh(x)).sum(axis=0)


class FailsOnPackedComplex(cnn_ref.Conv2D):
    """Raises a RuntimeError -- not a refusal of complex values -- on packed complex calls: a
    contract error, never a reason to fall back to real differences."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        if np.iscomplexobj(x) and x.shape[0] > 2:
            raise RuntimeError("out of workspace")
        return super().forward(x)
