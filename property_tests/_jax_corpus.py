"""Correct and buggy ``jax.custom_vjp`` functions, each with its plain forward.

Every case is a function whose backward is written by hand (``custom_vjp``) and the same
forward written plainly in ``jax.numpy``/``jax.lax``, whose derivative JAX takes itself: the
oracle the tests compare the hand-written backward with (``jax.vjp`` of the plain forward),
never our checker. A buggy case carries the derivation mistake that real code makes and the
name of the argument whose gradient shows it.

Kept here rather than in ``checks/audit/corpus.py``: the self-test there runs layers through
``check_layer`` and imports nothing optional, while these need JAX and the JAX door.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")  # collected by --doctest-modules: skipped without JAX
import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402


@dataclass(frozen=True)
class JaxCase:
    """One function: ``fn`` (custom rule) and ``plain`` (JAX's own derivative), arguments
    from ``args(dtype)``; ``bug`` in words and the ``tensor`` it shows in, or None; what the
    failure message must say (``says``) where the mistake has a catalogued hint."""

    name: str
    fn: Callable[..., Any]
    plain: Callable[..., Any]
    args: Callable[[Any], tuple[Any, ...]]
    bug: str | None = None
    tensor: str | None = None
    says: str = ""


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------- softmax cross-entropy


def xent_plain(logits, labels):
    logp = jax.nn.log_softmax(logits, axis=1)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))


def _xent(one_element: float = 0.0) -> Callable[..., Any]:
    @jax.custom_vjp
    def xent(logits, labels):
        return xent_plain(logits, labels)

    def fwd(logits, labels):
        return xent_plain(logits, labels), (logits, labels)

    def bwd(res, g):
        logits, labels = res
        n, c = logits.shape
        d = (jax.nn.softmax(logits, axis=1) - jax.nn.one_hot(labels, c, dtype=logits.dtype)) / n
        if one_element:
            d = d.at[1, 2].multiply(1 + one_element)  # the bug: 1 % in one element
        return g * d, None

    xent.defvjp(fwd, bwd)
    return xent


def _xent_args(dtype: Any) -> tuple[Any, ...]:
    return (_rng(1).standard_normal((4, 5)).astype(dtype), np.array([0, 3, 1, 4], np.int32))


# --------------------------------------------------------------- convolution


_DN = ("NCHW", "OIHW", "NCHW")


def conv_plain(x, K, b):
    y = lax.conv_general_dilated(x, K, (1, 1), ((1, 1), (1, 1)), dimension_numbers=_DN)
    return y + b[None, :, None, None]


def _conv(bug: str = "") -> Callable[..., Any]:
    @jax.custom_vjp
    def conv(x, K, b):
        return conv_plain(x, K, b)

    def fwd(x, K, b):
        return conv_plain(x, K, b), (x, K)

    def bwd(res, dy):
        x, K = res
        kh = K.shape[2]
        # dx: the transposed convolution, with the kernel flipped and its axes O, I swapped
        Kt = K.transpose(1, 0, 2, 3)
        Kt = Kt if bug == "dx_no_flip" else Kt[:, :, ::-1, ::-1]
        pad = ((kh - 2, kh - 2), (kh - 2, kh - 2))  # (k - 1 - p) with p = 1
        dx = lax.conv_general_dilated(dy, Kt, (1, 1), pad, dimension_numbers=_DN)
        # dK: x correlated with dy, batch and channel axes swapped
        dK = lax.conv_general_dilated(
            x.transpose(1, 0, 2, 3), dy.transpose(1, 0, 2, 3), (1, 1), ((1, 1), (1, 1)),
            dimension_numbers=_DN,
        ).transpose(1, 0, 2, 3)  # fmt: skip
        if bug == "dK_flipped":
            dK = dK[:, :, ::-1, ::-1]
        return dx, dK, dy.sum(axis=(0, 2, 3))

    conv.defvjp(fwd, bwd)
    return conv


def _conv_args(dtype: Any) -> tuple[Any, ...]:
    r = _rng(2)
    return tuple(r.standard_normal(s).astype(dtype) for s in ((2, 3, 6, 5), (4, 3, 3, 3), (4,)))


# --------------------------------------------------------------- layer norm


EPS = 1e-3


def layer_norm_plain(x, gamma, beta):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / jnp.sqrt(var + EPS) * gamma + beta


def _layer_norm(forget_eps: bool = False) -> Callable[..., Any]:
    @jax.custom_vjp
    def layer_norm(x, gamma, beta):
        return layer_norm_plain(x, gamma, beta)

    def fwd(x, gamma, beta):
        return layer_norm_plain(x, gamma, beta), (x, gamma)

    def bwd(res, dy):
        x, gamma = res
        mu = x.mean(axis=-1, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
        rstd = 1 / jnp.sqrt(var if forget_eps else var + EPS)  # the bug: eps forgotten
        xhat = (x - mu) * rstd
        dxhat = dy * gamma
        dx = rstd * (
            dxhat
            - dxhat.mean(axis=-1, keepdims=True)
            - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True)
        )
        return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)

    layer_norm.defvjp(fwd, bwd)
    return layer_norm


def _layer_norm_args(dtype: Any) -> tuple[Any, ...]:
    # variances near 0.1, so eps = 1e-3 is a 1 % term of var + eps
    r = _rng(3)
    x = 0.3 * r.standard_normal((3, 6))
    return x.astype(dtype), r.uniform(0.5, 1.5, 6).astype(dtype), r.standard_normal(6).astype(dtype)


# --------------------------------------------------------------- max-pool after ReLU


def pool_plain(x):
    return lax.reduce_window(jax.nn.relu(x), -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")


def _windows(a):
    n, c, h, w = a.shape
    return (
        a.reshape(n, c, h // 2, 2, w // 2, 2)
        .transpose(0, 1, 2, 4, 3, 5)
        .reshape(n, c, h // 2, w // 2, 4)
    )


def _unwindows(m, shape):
    n, c, h, w = shape
    return m.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(shape)


def _relu_pool(every_tie: bool = False) -> Callable[..., Any]:
    @jax.custom_vjp
    def relu_pool(x):
        return pool_plain(x)

    def fwd(x):
        return pool_plain(x), x

    def bwd(x, dy):
        win = _windows(jax.nn.relu(x))
        if every_tie:  # the bug: dy to every tied maximum
            route = (win == win.max(axis=-1, keepdims=True)).astype(x.dtype)
        else:  # to the first maximum in row-major order, as jax.grad of the plain forward
            route = jax.nn.one_hot(jnp.argmax(win, axis=-1), 4, dtype=x.dtype)
        dx = _unwindows(route * dy[..., None], x.shape)
        return (dx * (x > 0).astype(x.dtype),)

    relu_pool.defvjp(fwd, bwd)
    return relu_pool


def _pool_args(dtype: Any) -> tuple[Any, ...]:
    """Ties of every kind: exact zeros (ReLU's kink), windows wholly negative (all tied at 0
    after ReLU) and windows with two or four equal positive maxima."""
    x = _rng(4).standard_normal((2, 2, 4, 6))
    x[0, 0, 0:2, 0:2] = [[0.7, 0.7], [0.2, -0.3]]  # two tied maxima
    x[0, 1, 2:4, 2:4] = 1.3  # four tied maxima
    x[1, 0, 0:2, 2:4] = [[-0.5, -1.0], [-0.2, -2.0]]  # all tied at 0 after ReLU
    x[1, 1, 2:4, 4:6] = [[0.0, -0.4], [0.0, 0.0]]  # exact zeros
    x[1, 1, 0:2, 0:2] = [[0.9, -0.1], [0.4, 0.9]]  # tied maxima on a diagonal
    return (x.astype(dtype),)


CORRECT = [
    JaxCase("softmax_xent", _xent(), xent_plain, _xent_args),
    JaxCase("conv", _conv(), conv_plain, _conv_args),
    JaxCase("layer_norm", _layer_norm(), layer_norm_plain, _layer_norm_args),
    JaxCase("relu_maxpool", _relu_pool(), pool_plain, _pool_args),
]

BUGGY = [
    JaxCase("softmax_xent_one_element", _xent(0.01), xent_plain, _xent_args,
            "1 % too much in one element of dlogits", "logits", "logits[1, 2]"),
    JaxCase("conv_dx_no_flip", _conv("dx_no_flip"), conv_plain, _conv_args,
            "the transposed convolution of dx without the kernel flip", "x"),
    JaxCase("conv_dK_flipped", _conv("dK_flipped"), conv_plain, _conv_args,
            "the kernel gradient flipped (rot180)", "K", "Hint: K: analytic = rot180(numerical)"),
    JaxCase("layer_norm_no_eps", _layer_norm(forget_eps=True), layer_norm_plain,
            _layer_norm_args, "eps forgotten in the backward's 1 / sqrt(var + eps)", "x"),
    JaxCase("relu_maxpool_every_tie", _relu_pool(every_tie=True), pool_plain, _pool_args,
            "dy routed to every tied maximum", "x", "dy sent to every tied maximum?"),
]  # fmt: skip


# --------------------------------------------------------------- backward passes, order=2


def _tanh_fwd(x):
    y = jnp.tanh(x)
    return y, y


def _tanh(bwd: Callable[..., Any]) -> Callable[..., Any]:
    @jax.custom_vjp
    def tanh(x):
        return jnp.tanh(x)

    tanh.defvjp(_tanh_fwd, bwd)
    return tanh


def _bwd_jnp(y, g):
    return (g * (1 - y**2),)


def _bwd_stop_gradient(y, g):
    return (g * (1 - lax.stop_gradient(y) ** 2),)  # its derivative in y is lost


def _bwd_callback(y, g):
    d = jax.pure_callback(
        lambda v: (1 - np.asarray(v) ** 2).astype(v.dtype),
        jax.ShapeDtypeStruct(y.shape, y.dtype),
        y,
    )
    return (g * d,)


def _bwd_numpy(y, g):
    return (g * (1 - np.asarray(y) ** 2),)


TANH = _tanh(_bwd_jnp)
TANH_STOP_GRADIENT = _tanh(_bwd_stop_gradient)
TANH_CALLBACK = _tanh(_bwd_callback)
TANH_NUMPY = _tanh(_bwd_numpy)
