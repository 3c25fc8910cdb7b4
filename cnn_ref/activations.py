"""Element-wise activations f and their derivatives f' (eq. (2), (4), (8), (16)).

A layer computes ``A = f(U)`` in forward (eq. 2 for convolution layers, eq. 4 for subsampling
layers) and turns the upstream gradient ``dJ/dA`` into its delta with
``delta = dJ/dA * f'(U)`` in backward (eq. (8) and (16): the element-wise product, the derivation's
``\\otimes``). Each activation is an :class:`ActivationFn` pair ``(f, df)`` in the registry
:data:`ACTIVATIONS`; :func:`get` looks one up by name.

``identity``, ``sigmoid`` and ``tanh`` propagate complex input (they are analytic), which is what
lets a checker differentiate through them with the complex step. ``relu`` is not analytic and
raises ``TypeError`` on complex input rather than return a silently wrong derivative.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["ACTIVATIONS", "ActivationFn", "get", "identity", "relu", "sigmoid", "tanh"]


@dataclass(frozen=True)
class ActivationFn:
    """An element-wise activation: ``f(U)`` and its derivative ``df(U) = f'(U)``."""

    name: str
    f: Callable[[np.ndarray], np.ndarray]
    df: Callable[[np.ndarray], np.ndarray]


def _identity(u: np.ndarray) -> np.ndarray:
    # A copy, so that a caller who mutates the output never mutates a layer's cached U.
    return np.array(u, copy=True)


def _identity_df(u: np.ndarray) -> np.ndarray:
    return np.ones_like(u)


def _sigmoid(u: np.ndarray) -> np.ndarray:
    # Stable for large |Re u|: exp is only ever taken of a number with non-positive real part,
    # 1 / (1 + e^-u) for Re u >= 0 and e^u / (1 + e^u) otherwise. The same expression carries a
    # complex step (the imaginary part goes through exp unchanged).
    positive = np.real(u) >= 0
    e = np.exp(np.where(positive, -u, u))
    return np.where(positive, 1 / (1 + e), e / (1 + e))


def _sigmoid_df(u: np.ndarray) -> np.ndarray:
    # s(u) * s(-u) == s(1 - s), without the cancellation in 1 - s when s is close to 1
    return _sigmoid(u) * _sigmoid(-u)


def _tanh(u: np.ndarray) -> np.ndarray:
    return np.tanh(u)


def _tanh_df(u: np.ndarray) -> np.ndarray:
    # sech^2(u) = 4 e^{-2|u|} / (1 + e^{-2|u|})^2 == 1 - tanh^2(u), without its cancellation
    # for large |u| and without overflow; sech is even, so |u| may be taken on the real part.
    z = np.where(np.real(u) >= 0, u, -u)
    e = np.exp(-2 * z)
    return 4 * e / ((1 + e) * (1 + e))


def _reject_complex(u: np.ndarray) -> None:
    if np.iscomplexobj(u):
        raise TypeError(
            f"relu is not analytic and does not accept complex input (got dtype {u.dtype}); "
            "use central differences instead of the complex step"
        )


def _relu(u: np.ndarray) -> np.ndarray:
    _reject_complex(u)
    return np.maximum(u, 0)


def _relu_df(u: np.ndarray) -> np.ndarray:
    # f'(0) := 0, a valid subgradient (the one PyTorch uses).
    _reject_complex(u)
    return (u > 0).astype(u.dtype)


identity = ActivationFn("identity", _identity, _identity_df)
sigmoid = ActivationFn("sigmoid", _sigmoid, _sigmoid_df)
tanh = ActivationFn("tanh", _tanh, _tanh_df)
relu = ActivationFn("relu", _relu, _relu_df)

ACTIVATIONS: dict[str, ActivationFn] = {a.name: a for a in (identity, sigmoid, tanh, relu)}


def get(name: str, arg: str = "activation") -> ActivationFn:
    """Look up an activation by name.

    Parameters
    ----------
    name : str
        One of ``identity``, ``sigmoid``, ``tanh``, ``relu``.
    arg : str, default "activation"
        The argument's name, used in the error message.

    Returns
    -------
    ActivationFn

    Raises
    ------
    ValueError
        If ``name`` is not a registered activation (the message lists the choices).

    Notes
    -----
    Forward: ``A = f(U)`` (eq. (2) and (4)). Backward: ``delta = dJ/dA * f'(U)``
    (eq. (8) and (16), an element-wise product).

    Examples
    --------
    >>> import numpy as np
    >>> get("tanh").df(np.zeros(2))
    array([1., 1.])
    >>> get("softplus")
    Traceback (most recent call last):
    ...
    ValueError: activation must be one of 'identity', 'sigmoid', 'tanh', 'relu', got 'softplus'
    """
    if not isinstance(name, str) or name not in ACTIVATIONS:
        options = ", ".join(repr(c) for c in ACTIVATIONS)
        raise ValueError(f"{arg} must be one of {options}, got {name!r}")
    return ACTIVATIONS[name]
