"""A chain of layers with a loss (``Sequential``), the two losses, and the derivation's LeNet-5.

Back-propagation chains the layers' deltas exactly as the derivation (docs/derivation.md)
does: each layer's ``backward`` receives ``dJ/dA`` of its output, turns it into its own delta
``dJ/dU = dJ/dA * f'(U)`` (eq. (8)/(16)), fills its gradients (eq. (5)/(6), (12)/(14),
(19)/(20)) and returns ``dJ/dA`` of its input, which is the next layer's upstream gradient (the
``beta * up(delta)`` of eq. (10)/(11) or the convolution of eq. (18), before the lower layer
applies its own ``f'``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

import numpy as np

from cnn_ref._validate import as_pair, check_array, check_choice
from cnn_ref.conv import Conv2D
from cnn_ref.dense import Dense, Flatten
from cnn_ref.subsample import Subsample

__all__ = ["LOSSES", "Sequential", "lenet5", "mse", "softmax_cross_entropy"]


class LayerLike(Protocol):
    """The layer protocol of docs/ARCHITECTURE.md."""

    params: Any
    grads: Any

    def forward(self, x: np.ndarray) -> np.ndarray: ...

    def backward(self, dy: np.ndarray) -> np.ndarray: ...


# ---------------------------------------------------------------------------------------------
# losses: (J, dJ/dy) from the network output y and the target
# ---------------------------------------------------------------------------------------------


def mse(y: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean squared error, halved and averaged over the batch.

    Parameters
    ----------
    y : ndarray, shape (N, ...)
        Network output.
    target : ndarray, same shape as ``y``

    Returns
    -------
    J : float
        ``J = 1/(2N) * sum((y - target)^2)``: the batch mean of the classic per-sample error
        ``E_n = 1/2 ||y_n - t_n||^2``.
    dJ_dy : ndarray, same shape as ``y``
        ``(y - target) / N``.

    Raises
    ------
    TypeError, ValueError
        If ``target`` is not a floating ndarray of ``y``'s shape, or has non-finite values.
    """
    y = check_array(y, "y")
    target = check_array(target, "target")
    if target.shape != y.shape:
        raise ValueError(f"target has shape {target.shape}, expected {y.shape} (the output's)")
    n = y.shape[0] if y.ndim else 1
    r = y - target
    return float(0.5 * np.vdot(r, r).real / n), r / n


def softmax_cross_entropy(z: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    """Softmax followed by cross-entropy, averaged over the batch (numerically stable).

    Parameters
    ----------
    z : ndarray, shape (N, K)
        Logits.
    target : ndarray
        Class labels, integer ``(N,)`` in ``[0, K)``, or class probabilities, floating
        ``(N, K)`` (rows of one-hot vectors, for example).

    Returns
    -------
    J : float
        ``J = -1/N * sum_n sum_k t_nk log softmax(z_n)_k``, with ``log softmax`` computed as
        ``z - logsumexp(z)`` after subtracting each row's maximum.
    dJ_dz : ndarray, shape (N, K)
        ``(softmax(z) * sum_k t_nk - t) / N`` (``(p - t) / N`` when each row of t sums to 1).

    Raises
    ------
    TypeError, ValueError
        On a target of the wrong dtype, shape or range, or non-finite values.
    """
    z = check_array(z, "z", ndim=2)
    N, K = z.shape
    if isinstance(target, np.ndarray) and target.dtype.kind in "iu":
        if target.shape != (N,):
            raise ValueError(f"target (labels) has shape {target.shape}, expected ({N},)")
        if N and (target.min() < 0 or target.max() >= K):
            raise ValueError(
                f"target labels must lie in [0, {K}), got values in "
                f"[{target.min()}, {target.max()}]"
            )
        t = np.zeros((N, K), dtype=z.real.dtype)
        t[np.arange(N), target] = 1
    else:
        t = check_array(target, "target", ndim=2)
        if t.shape != z.shape:
            raise ValueError(f"target has shape {t.shape}, expected {z.shape} (the logits')")
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    s = e.sum(axis=1, keepdims=True)
    log_p = shifted - np.log(s)
    J = -float(np.sum(t * log_p)) / max(N, 1)
    dz = (e / s * t.sum(axis=1, keepdims=True) - t) / max(N, 1)
    return J, dz


LOSSES = {"mse": mse, "softmax_cross_entropy": softmax_cross_entropy}


# ---------------------------------------------------------------------------------------------
# Sequential
# ---------------------------------------------------------------------------------------------


class _FlatParams(dict[str, np.ndarray]):
    """A Sequential's params: ``{"i.name": layers[i].params[name]}``, the very arrays.

    Assigning a key assigns the layer's own entry, so a checker that swaps in a complex copy
    (``net.params["0.K"] = K + 1e-20j``) changes what the layer reads.
    """

    def __init__(self, layers: list[LayerLike]) -> None:
        self._layers = layers
        super().__init__(
            (f"{i}.{k}", v) for i, layer in enumerate(layers) for k, v in layer.params.items()
        )

    def __setitem__(self, key: str, value: np.ndarray) -> None:
        if key not in self:
            raise KeyError(f"{key!r} is not a parameter of this network; it has {list(self)}")
        i, name = key.split(".", 1)
        self._layers[int(i)].params[name] = value
        super().__setitem__(key, value)

    def update(self, *args: Any, **kwargs: Any) -> None:  # dict.update bypasses __setitem__
        for k, v in dict(*args, **kwargs).items():
            self[k] = v

    def __delitem__(self, key: str) -> None:
        raise TypeError("a network's parameters cannot be deleted")


class Sequential:
    """Layers applied in order, with an optional loss; follows the layer protocol itself.

    Parameters
    ----------
    layers : iterable of layers
        Objects with ``forward``, ``backward``, ``params`` and ``grads``.
    loss : {"mse", "softmax_cross_entropy"}, optional
        The loss used by :meth:`loss` (see :func:`mse` and :func:`softmax_cross_entropy`).

    Attributes
    ----------
    params : dict
        Flat view ``{"i.name": array}`` of the layers' parameters (``"0.K"``, ``"1.beta"``...):
        the very arrays the layers read; assigning a key assigns the layer's entry.
    grads : dict
        Same keys, the layers' gradients after the last backward.

    Notes
    -----
    As a layer: ``forward(x)`` is the network output (logits for softmax cross-entropy) and
    ``backward(dy)`` takes ``dJ/dy`` of that output and returns ``dJ/dx``.
    With a loss: ``J = net.loss(x, target)`` runs forward and returns the loss;
    ``dx = net.loss_backward()`` then back-propagates ``dJ/dy`` through every layer, fills
    ``grads`` with ``dJ/dtheta`` and returns ``dJ/dx``.

    Examples
    --------
    >>> import numpy as np
    >>> net = Sequential([Dense(3, 4, activation="tanh", seed=0), Dense(4, 2, seed=1)],
    ...                  loss="softmax_cross_entropy")
    >>> J = net.loss(np.ones((5, 3)), np.array([0, 1, 1, 0, 1]))
    >>> net.loss_backward().shape, sorted(net.grads)
    ((5, 3), ['0.W', '0.b', '1.W', '1.b'])
    """

    def __init__(self, layers: Iterable[LayerLike], *, loss: str | None = None) -> None:
        if not isinstance(layers, Iterable):  # Sequential(conv) for Sequential([conv])
            raise TypeError(
                f"layers must be a list or tuple of layers, got {type(layers).__name__} "
                f"(a single layer goes in a list: Sequential([layer]))"
            )
        self.layers = list(layers)
        if not self.layers:
            raise ValueError("layers must hold at least one layer, got an empty sequence")
        for i, layer in enumerate(self.layers):
            missing = [
                a for a in ("forward", "backward", "params", "grads") if not hasattr(layer, a)
            ]
            if missing:
                raise TypeError(
                    f"layers[{i}] ({type(layer).__name__}) does not follow the layer protocol: "
                    f"it has no {', '.join(missing)}"
                )
        self.loss_name = None if loss is None else check_choice(loss, "loss", tuple(LOSSES))
        self._dJ_dy: np.ndarray | None = None

    @property
    def params(self) -> dict[str, np.ndarray]:
        return _FlatParams(self.layers)

    @params.setter
    def params(self, new: Mapping[str, np.ndarray]) -> None:
        flat = _FlatParams(self.layers)
        if set(new) != set(flat):
            raise ValueError(f"params keys {sorted(new)} differ from the network's {sorted(flat)}")
        flat.update(new)

    @property
    def grads(self) -> dict[str, np.ndarray]:
        return {
            f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.grads.items()
        }

    def __iter__(self) -> Iterator[LayerLike]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> LayerLike:
        return self.layers[i]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The network output; each layer caches what its backward needs."""
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """``dJ/dx`` from ``dy = dJ/dy``, layer by layer in reverse; fills every layer's grads."""
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
        return dy

    def loss(self, x: np.ndarray, target: np.ndarray) -> float:
        """Forward, then the loss ``J`` against ``target``; :meth:`loss_backward` goes back."""
        if self.loss_name is None:
            raise ValueError(
                f"this Sequential has no loss; pass loss= one of {', '.join(map(repr, LOSSES))}"
            )
        J, self._dJ_dy = LOSSES[self.loss_name](self.forward(x), target)
        return J

    def loss_backward(self) -> np.ndarray:
        """Back-propagate the last :meth:`loss`: fill grads with ``dJ/dtheta``, return ``dJ/dx``."""
        if self._dJ_dy is None:
            raise ValueError("loss_backward called before loss: call loss(x, target) first")
        return self.backward(self._dJ_dy)

    def __repr__(self) -> str:
        inner = "".join(f"\n  ({i}) {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(loss={self.loss_name!r}){inner}"


# ---------------------------------------------------------------------------------------------
# the derivation's network
# ---------------------------------------------------------------------------------------------


def lenet5(
    *,
    in_channels: int = 1,
    image_size: int | tuple[int, int] = 28,
    n_classes: int = 10,
    activation: str = "sigmoid",
    convention: str = "conv",
    kind: str = "mean",
    seed: int | None = None,
    dtype: np.dtype | type = np.float64,
    loss: str | None = "softmax_cross_entropy",
) -> Sequential:
    """The derivation's network: conv -> subsample -> conv -> subsample -> flatten -> dense.

    Sizes of LeNet-5: 6 maps from 5x5 kernels, 2x2 subsampling, 16 maps from 5x5 kernels,
    2x2 subsampling, a dense layer to ``n_classes`` outputs (28x28 input: 6@24x24 -> 6@12x12
    -> 16@8x8 -> 16@4x4 -> 256 -> n_classes).

    Parameters
    ----------
    in_channels : int, default 1
    image_size : int or (int, int), default 28
        At least 16 on each side (so that the last subsampling has a map to pool).
    n_classes : int, default 10
    activation : str, default "sigmoid"
        f of the convolution and subsampling layers (eq. 2 and 4). The dense layer's output is
        linear (logits for the loss).
    convention : {"conv", "xcorr"}
    kind : {"sum", "mean", "max"}, default "mean"
    seed : int, optional
        One seed for the whole network (each layer gets its own stream).
    dtype : numpy floating dtype, default float64
    loss : {"softmax_cross_entropy", "mse"} or None, default "softmax_cross_entropy"

    Returns
    -------
    Sequential

    Examples
    --------
    >>> import numpy as np
    >>> net = lenet5(seed=0)
    >>> net.forward(np.zeros((2, 1, 28, 28))).shape
    (2, 10)
    """
    H, W = as_pair(image_size, "image_size")
    if min(H, W) < 16:
        raise ValueError(
            f"image_size must be at least 16 on each side for two 5x5 convolutions and two 2x2 "
            f"subsamplings, got {image_size!r}"
        )
    h, w = ((H - 4) // 2 - 4) // 2, ((W - 4) // 2 - 4) // 2
    seeds = [int(s) for s in np.random.SeedSequence(seed).generate_state(5)]
    maps = (6, 16)
    common: dict[str, Any] = {"activation": activation, "dtype": dtype}
    conv: dict[str, Any] = {"convention": convention, **common}
    return Sequential(
        [
            Conv2D(in_channels, maps[0], 5, seed=seeds[0], **conv),
            Subsample(maps[0], 2, kind=kind, seed=seeds[1], **common),
            Conv2D(maps[0], maps[1], 5, seed=seeds[2], **conv),
            Subsample(maps[1], 2, kind=kind, seed=seeds[3], **common),
            Flatten(),
            Dense(maps[1] * h * w, n_classes, seed=seeds[4], dtype=dtype),
        ],
        loss=loss,
    )
