"""What every reference layer shares: the protocol, the forward cache, the activation step.

The protocol (docs/ARCHITECTURE.md), which users' own layers implement too:

- ``forward(x) -> y`` caches what ``backward`` needs; any batch size on every call;
- ``backward(dy) -> dx`` also fills ``grads``;
- ``params``: the very arrays ``forward`` reads (a checker perturbs them in place, or swaps in a
  complex copy), so layers read ``self.params[...]`` at every call;
- ``grads``: same keys and shapes as ``params``, filled by the last ``backward``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnn_ref import activations
from cnn_ref._validate import check_array


def positive_int(value: object, name: str) -> int:
    """``value`` as a Python int >= 1 (bool rejected), or a TypeError/ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return int(value)


def float_dtype(dtype: object) -> np.dtype:
    """A floating numpy dtype for a layer's parameters, or a TypeError naming ``dtype``."""
    try:
        dt = np.dtype(dtype)  # type: ignore[call-overload]
    except TypeError as err:
        raise TypeError(f"dtype must be a numpy floating dtype, got {dtype!r}") from err
    if dt.kind != "f":
        raise TypeError(f"dtype must be a numpy floating dtype, got {dt}")
    return dt


class Layer:
    """Base class of the reference layers (the protocol plus the shared checks).

    Subclasses implement ``forward`` and ``backward``; they store the forward state with
    :meth:`_store` and get it back in ``backward`` with :meth:`_load`, which also checks ``dy``.
    """

    params: dict[str, np.ndarray]
    grads: dict[str, np.ndarray]

    def __init__(self) -> None:
        self.params = {}
        self.grads = {}
        self._cache: dict[str, Any] | None = None
        self._out_shape: tuple[int, ...] | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def forward(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _init_grads(self) -> None:
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def _store(self, y: np.ndarray, **cache: Any) -> np.ndarray:
        self._cache = cache
        self._out_shape = y.shape
        return y

    def _load(self, dy: object) -> tuple[np.ndarray, dict[str, Any]]:
        name = type(self).__name__
        if self._cache is None or self._out_shape is None:
            raise ValueError(f"{name}.backward called before forward: call forward(x) first")
        dy = check_array(dy, "dy")
        if dy.shape != self._out_shape:
            raise ValueError(
                f"dy has shape {dy.shape}, expected {self._out_shape} "
                f"(the shape of {name}'s last forward output)"
            )
        return dy, self._cache


class ActivatedLayer(Layer):
    """A layer whose output is ``A = f(U)`` of a pre-activation U (eq. 2 and 4)."""

    def __init__(self, activation: str) -> None:
        super().__init__()
        self.activation = activations.get(activation)

    def _activate(self, u: np.ndarray, **cache: Any) -> np.ndarray:
        return self._store(self.activation.f(u), u=u, **cache)  # eq. (2)/(4): A = f(U)

    def _delta(self, dy: object) -> tuple[np.ndarray, dict[str, Any]]:
        """The layer's delta ``dJ/dU = dJ/dA * f'(U)`` (eq. 8/16), and the forward cache."""
        dA, cache = self._load(dy)
        if self.activation is activations.identity:
            return dA, cache
        return dA * self.activation.df(cache["u"]), cache  # eq. (8)/(16)
