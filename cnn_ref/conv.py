"""Convolution layer (eq. (1), (2) forward; (8), (12), (14), (18) backward; docs/derivation.md)."""

from __future__ import annotations

import numpy as np

from cnn_ref._layer import ActivatedLayer, float_dtype, positive_int
from cnn_ref._validate import as_pair, check_array, check_choice
from cnn_ref.functional.conv import conv2d_backward, conv2d_forward

__all__ = ["Conv2D"]


class Conv2D(ActivatedLayer):
    """2-D convolution layer with an activation: ``A = f(sum_j conv2(A_j, K_ij) + b_i)``.

    Parameters
    ----------
    in_channels, out_channels : int
        Number of input maps (the derivation's N_{l-1}) and output maps.
    kernel_size : int or (int, int)
    stride, dilation : int or (int, int), default 1
    padding : int or (int, int), default 0
        Zero padding on each side.
    convention : {"conv", "xcorr"}
        ``"conv"`` is the derivation's true convolution (kernel flipped); ``"xcorr"`` is what
        deep-learning frameworks call convolution (PyTorch ``conv2d``).
    activation : {"identity", "sigmoid", "tanh", "relu"}
    seed : int, optional
        Seed of ``np.random.default_rng`` for the initial parameters.
    dtype : numpy floating dtype, default float64

    Attributes
    ----------
    params : dict
        ``"K"``: ``(out_channels, in_channels, kh, kw)``, ``K[i, j]`` is the derivation's K_ij;
        ``"b"``: ``(out_channels,)``. Both drawn from U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
        ``fan_in = in_channels * kh * kw`` (PyTorch's default scale).
    grads : dict
        Same keys and shapes, filled by :meth:`backward`.

    Notes
    -----
    Forward, eq. (1)-(2): ``U_i = sum_j conv2(A_j, K_ij) + b_i`` and ``A_i = f(U_i)`` (the
    derivation's per-pair biases b_ij add up to one bias per output map). Backward: the delta
    ``dJ/dU = dJ/dA * f'(U)`` (eq. 8), then ``db`` (eq. 12), ``dK`` (eq. 13/14) and ``dx``
    (the conv part of eq. 18) from :func:`cnn_ref.functional.conv2d_backward`.

    Examples
    --------
    >>> import numpy as np
    >>> layer = Conv2D(1, 2, 3, activation="tanh", seed=0)
    >>> layer.forward(np.zeros((4, 1, 5, 5))).shape
    (4, 2, 3, 3)
    >>> layer.forward(np.zeros((4, 3, 5, 5)))
    Traceback (most recent call last):
    ...
    ValueError: x has 3 channels (shape (4, 3, 5, 5)), Conv2D expects in_channels=1
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        *,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        convention: str = "conv",
        activation: str = "identity",
        seed: int | None = None,
        dtype: np.dtype | type = np.float64,
    ) -> None:
        super().__init__(activation)
        self.in_channels = positive_int(in_channels, "in_channels")
        self.out_channels = positive_int(out_channels, "out_channels")
        self.kernel_size = as_pair(kernel_size, "kernel_size")
        self.stride = as_pair(stride, "stride")
        self.padding = as_pair(padding, "padding", minimum=0)
        self.dilation = as_pair(dilation, "dilation")
        self.convention = check_choice(convention, "convention", ("conv", "xcorr"))
        self.dtype = float_dtype(dtype)
        kh, kw = self.kernel_size
        bound = 1.0 / np.sqrt(self.in_channels * kh * kw)
        rng = np.random.default_rng(seed)
        K = rng.uniform(-bound, bound, (self.out_channels, self.in_channels, kh, kw))
        self.params = {
            "K": K.astype(self.dtype),
            "b": rng.uniform(-bound, bound, self.out_channels).astype(self.dtype),
        }
        self._init_grads()

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``A = f(U)``, ``U = conv(x, K) + b`` (eq. 1-2); caches x and U."""
        x = check_array(x, "x", ndim=4)
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"x has {x.shape[1]} channels (shape {x.shape}), "
                f"Conv2D expects in_channels={self.in_channels}"
            )
        (kh, kw), (ph, pw), (dh, dw) = self.kernel_size, self.padding, self.dilation
        span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
        padded = (x.shape[2] + 2 * ph, x.shape[3] + 2 * pw)
        if span[0] > padded[0] or span[1] > padded[1]:
            raise ValueError(
                f"kernel_size {self.kernel_size} with dilation {self.dilation} spans {span}, "
                f"larger than the padded input {padded} (x has shape {x.shape}, "
                f"padding {self.padding})"
            )
        K, b = self.params["K"], self.params["b"]
        u = conv2d_forward(
            x,
            K,
            b,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            convention=self.convention,
        )  # eq. (1)
        return self._activate(u, x=x, K=K)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """``dJ/dx`` from ``dy = dJ/dA``; fills ``grads["K"]``, ``grads["b"]``."""
        delta, cache = self._delta(dy)  # eq. (8)
        dx, dK, db = conv2d_backward(
            delta,
            cache["x"],
            cache["K"],
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            convention=self.convention,
        )
        self.grads = {"K": dK, "b": db}  # eq. (14), eq. (12)
        return dx

    def __repr__(self) -> str:
        return (
            f"Conv2D({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"convention={self.convention!r}, activation={self.activation.name!r}, "
            f"dtype={self.dtype})"
        )
