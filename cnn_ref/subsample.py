"""Subsampling layers: LeNet-style ``Subsample`` (eq. (3), (4); (10)/(11), (16), (19), (20)) and the
parameter-free ``MaxPool2D`` / ``AvgPool2D``."""

from __future__ import annotations

import numpy as np

from cnn_ref._layer import ActivatedLayer, Layer, float_dtype, positive_int
from cnn_ref._validate import as_pair, check_array, check_choice
from cnn_ref.functional.subsample import KINDS, subsample_backward, subsample_forward

__all__ = ["AvgPool2D", "MaxPool2D", "Subsample"]


def _pool_options(size: object, stride: object) -> tuple[tuple[int, int], tuple[int, int] | None]:
    return as_pair(size, "size"), None if stride is None else as_pair(stride, "stride")


class Subsample(ActivatedLayer):
    """LeNet-style subsampling with a trainable scale and bias per map.

    Parameters
    ----------
    channels : int
        Number of maps (input and output; subsampling acts on each map alone).
    size : int or (int, int)
        Pooling window.
    stride : int or (int, int), optional
        Step between windows; ``None`` (default) means ``stride = size`` as in the derivation.
    kind : {"sum", "mean", "max"}
        What ``down`` computes over a window.
    activation : {"identity", "sigmoid", "tanh", "relu"}
    seed : int, optional
        Seed of ``np.random.default_rng`` for the initial parameters.
    dtype : numpy floating dtype, default float64

    Attributes
    ----------
    params : dict
        ``"beta"``, ``"b"``: ``(channels,)``. ``beta`` starts in U(0.5, 1.5) (near the identity
        scale, but not 1, so that a dropped beta shows in a gradient check), ``b`` in
        U(-0.1, 0.1).
    grads : dict
        Same keys and shapes, filled by :meth:`backward`.

    Notes
    -----
    Forward, eq. (3)-(4): ``U_i = beta_i * down(A_i) + b_i``, ``A_i = f(U_i)``. Backward: the
    delta ``dJ/dU = dJ/dA * f'(U)`` (eq. 16), ``db`` (eq. 19), ``dbeta`` (eq. 20) and
    ``dx = beta * up(delta)`` (eq. 10/11 without the lower layer's f').

    Examples
    --------
    >>> import numpy as np
    >>> layer = Subsample(2, 2, kind="mean", seed=0)
    >>> layer.forward(np.ones((3, 2, 6, 5))).shape
    (3, 2, 3, 2)
    >>> Subsample(2, 2, kind="median")
    Traceback (most recent call last):
    ...
    ValueError: kind must be one of 'sum', 'mean', 'max', got 'median'
    """

    def __init__(
        self,
        channels: int,
        size: int | tuple[int, int],
        *,
        stride: int | tuple[int, int] | None = None,
        kind: str = "sum",
        activation: str = "identity",
        seed: int | None = None,
        dtype: np.dtype | type = np.float64,
    ) -> None:
        super().__init__(activation)
        self.channels = positive_int(channels, "channels")
        self.size, self.stride = _pool_options(size, stride)
        self.kind = check_choice(kind, "kind", KINDS)
        self.dtype = float_dtype(dtype)
        rng = np.random.default_rng(seed)
        self.params = {
            "beta": rng.uniform(0.5, 1.5, self.channels).astype(self.dtype),
            "b": rng.uniform(-0.1, 0.1, self.channels).astype(self.dtype),
        }
        self._init_grads()

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``A = f(beta * down(x) + b)`` (eq. 3-4); caches x and U."""
        x = check_array(x, "x", ndim=4)
        if x.shape[1] != self.channels:
            raise ValueError(
                f"x has {x.shape[1]} channels (shape {x.shape}), "
                f"Subsample expects channels={self.channels}"
            )
        beta, b = self.params["beta"], self.params["b"]
        u = subsample_forward(x, beta, b, size=self.size, stride=self.stride, kind=self.kind)
        return self._activate(u, x=x, beta=beta)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """``dJ/dx`` from ``dy = dJ/dA``; fills ``grads["beta"]``, ``grads["b"]``."""
        delta, cache = self._delta(dy)  # eq. (16)
        dx, dbeta, db = subsample_backward(
            delta,
            cache["x"],
            cache["beta"],
            size=self.size,
            stride=self.stride,
            kind=self.kind,
        )
        self.grads = {"beta": dbeta, "b": db}  # eq. (20), eq. (19)
        return dx  # eq. (10)/(11): the layer below multiplies by its own f'

    def __repr__(self) -> str:
        return (
            f"Subsample({self.channels}, size={self.size}, stride={self.stride}, "
            f"kind={self.kind!r}, activation={self.activation.name!r}, dtype={self.dtype})"
        )


class _Pool2D(Layer):
    """Parameter-free pooling: ``down(x)`` with beta = 1 and b = 0."""

    kind: str

    def __init__(self, size: int | tuple[int, int], stride: int | tuple[int, int] | None = None):
        super().__init__()
        self.size, self.stride = _pool_options(size, stride)

    def _unit(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        C = x.shape[1]
        return np.ones(C, dtype=x.real.dtype), np.zeros(C, dtype=x.real.dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``down(x)``; caches x."""
        x = check_array(x, "x", ndim=4)
        one, zero = self._unit(x)
        y = subsample_forward(x, one, zero, size=self.size, stride=self.stride, kind=self.kind)
        return self._store(y, x=x)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """``up(dy)``, the adjoint of ``down`` (eq. 10/11 with beta = 1)."""
        dy, cache = self._load(dy)
        x = cache["x"]
        one, _ = self._unit(x)
        dx, _, _ = subsample_backward(
            dy, x, one, size=self.size, stride=self.stride, kind=self.kind
        )
        return dx

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, stride={self.stride})"


class MaxPool2D(_Pool2D):
    """Max pooling (no parameters): each window's first maximum in row-major order.

    Examples
    --------
    >>> import numpy as np
    >>> MaxPool2D(2).forward(np.arange(16.0).reshape(1, 1, 4, 4))
    array([[[[ 5.,  7.],
             [13., 15.]]]])
    """

    kind = "max"


class AvgPool2D(_Pool2D):
    """Average pooling (no parameters): each window's mean.

    Examples
    --------
    >>> import numpy as np
    >>> AvgPool2D(2).forward(np.arange(16.0).reshape(1, 1, 4, 4))
    array([[[[ 2.5,  4.5],
             [10.5, 12.5]]]])
    """

    kind = "mean"
