"""A stand-alone activation layer (eq. (2)/(4) forward, eq. (8)/(16) backward)."""

from __future__ import annotations

import numpy as np

from cnn_ref import activations
from cnn_ref._layer import ActivatedLayer
from cnn_ref._validate import check_array

__all__ = ["Activation"]


class Activation(ActivatedLayer):
    """Element-wise ``A = f(U)`` as its own layer, for any input shape.

    Parameters
    ----------
    name : {"identity", "sigmoid", "tanh", "relu"}

    Notes
    -----
    Forward ``A = f(U)`` (eq. 2/4); backward ``dJ/dU = dJ/dA * f'(U)`` (eq. 8/16). No
    parameters: ``params`` and ``grads`` are empty.

    Examples
    --------
    >>> import numpy as np
    >>> Activation("relu").forward(np.array([[-1.0, 2.0]]))
    array([[0., 2.]])
    >>> Activation("gelu")
    Traceback (most recent call last):
    ...
    ValueError: name must be one of 'identity', 'sigmoid', 'tanh', 'relu', got 'gelu'
    """

    def __init__(self, name: str) -> None:
        activations.get(name, "name")  # names the argument "name" in the error
        super().__init__(name)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``f(x)``; caches x."""
        return self._activate(check_array(x, "x"))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """``dy * f'(x)`` for the last forward's x."""
        delta, _ = self._delta(dy)
        # identity's delta is dy itself; a copy, so that dx never aliases the caller's dy
        return delta.copy() if self.activation is activations.identity else delta

    def __repr__(self) -> str:
        return f"Activation({self.activation.name!r})"
