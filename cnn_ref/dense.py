"""Fully-connected layer ``Dense`` (eq. (5), (6)) and ``Flatten`` (maps to feature vectors)."""

from __future__ import annotations

import math

import numpy as np

from cnn_ref._layer import ActivatedLayer, Layer, float_dtype, positive_int
from cnn_ref._validate import check_array
from cnn_ref.functional.dense import dense_backward, dense_forward

__all__ = ["Dense", "Flatten"]


class Dense(ActivatedLayer):
    """Fully-connected layer with an activation: ``A = f(x W^T + b)``.

    Parameters
    ----------
    in_features, out_features : int
    activation : {"identity", "sigmoid", "tanh", "relu"}
    seed : int, optional
        Seed of ``np.random.default_rng`` for the initial parameters.
    dtype : numpy floating dtype, default float64

    Attributes
    ----------
    params : dict
        ``"W"``: ``(out_features, in_features)``, ``"b"``: ``(out_features,)``, both drawn from
        U(-1/sqrt(in_features), 1/sqrt(in_features)) (PyTorch's default scale).
    grads : dict
        Same keys and shapes, filled by :meth:`backward`.

    Notes
    -----
    Forward: ``U = x W^T + b``, ``A = f(U)``. Backward: ``delta = dJ/dA * f'(U)`` (eq. 8),
    ``dW = delta^T x`` (eq. 5) and ``db = sum_n delta_n`` (eq. 6), ``dx = delta W``.

    Examples
    --------
    >>> import numpy as np
    >>> Dense(3, 2, seed=0).forward(np.zeros((5, 3))).shape
    (5, 2)
    >>> Dense(3, 2).forward(np.zeros((5, 4)))
    Traceback (most recent call last):
    ...
    ValueError: x has 4 features (shape (5, 4)), Dense expects in_features=3
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        activation: str = "identity",
        seed: int | None = None,
        dtype: np.dtype | type = np.float64,
    ) -> None:
        super().__init__(activation)
        self.in_features = positive_int(in_features, "in_features")
        self.out_features = positive_int(out_features, "out_features")
        self.dtype = float_dtype(dtype)
        bound = 1.0 / math.sqrt(self.in_features)
        rng = np.random.default_rng(seed)
        W = rng.uniform(-bound, bound, (self.out_features, self.in_features))
        self.params = {
            "W": W.astype(self.dtype),
            "b": rng.uniform(-bound, bound, self.out_features).astype(self.dtype),
        }
        self._init_grads()

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``A = f(x W^T + b)``; caches x and U."""
        x = check_array(x, "x", ndim=2)
        if x.shape[1] != self.in_features:
            raise ValueError(
                f"x has {x.shape[1]} features (shape {x.shape}), "
                f"Dense expects in_features={self.in_features}"
            )
        W, b = self.params["W"], self.params["b"]
        return self._activate(dense_forward(x, W, b), x=x, W=W)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """``dJ/dx`` from ``dy = dJ/dA``; fills ``grads["W"]``, ``grads["b"]``."""
        delta, cache = self._delta(dy)  # eq. (8)
        dx, dW, db = dense_backward(delta, cache["x"], cache["W"])
        self.grads = {"W": dW, "b": db}  # eq. (5), eq. (6)
        return dx

    def __repr__(self) -> str:
        return (
            f"Dense({self.in_features}, {self.out_features}, "
            f"activation={self.activation.name!r}, dtype={self.dtype})"
        )


class Flatten(Layer):
    """``(N, d1, d2, ...) -> (N, d1 * d2 * ...)``, the bridge from maps to a dense layer.

    Examples
    --------
    >>> import numpy as np
    >>> Flatten().forward(np.zeros((2, 3, 4, 5))).shape
    (2, 60)
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Reshape to ``(N, -1)`` (a copy: the output never aliases the caller's x)."""
        x = check_array(x, "x")
        if x.ndim < 2:
            raise ValueError(f"x must have at least 2 dimensions (N, ...), got shape {x.shape}")
        y = x.reshape(x.shape[0], math.prod(x.shape[1:])).copy()
        return self._store(y, shape=x.shape)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Reshape back to the last forward input's shape."""
        dy, cache = self._load(dy)
        return dy.reshape(cache["shape"]).copy()

    def __repr__(self) -> str:
        return "Flatten()"
