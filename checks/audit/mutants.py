"""A corpus of deliberately broken layers, and of correct layers that are awkward to check.

Each :class:`Case` builds a layer that follows the cnn_ref protocol and an input to check it
on. A *mutant* wraps a correct cnn_ref layer and corrupts one step of its backward pass the way
a real derivation mistake would (a missing rot180, K_ij for K_ji, an up-sampling without 1/n^2,
a dropped beta, ...); the checker must raise the expected exception class on it and, where the
mistake has a known signature, print the expected hint. A *correct* case is a right layer at a
point where naive checkers raise false alarms (ReLU at exactly 0, max ties, float32, large
magnitudes, a batch-dependent layer); the checker must pass it.

The corpus is used by :mod:`checks.audit.selftest` (``python -m checks selftest``) and by
``property_tests/meta_tests/test_selftest.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from checks.errors import GradcheckError, GradientMismatchError, LayerContractError

__all__ = ["BatchCentre", "Case", "Ctx", "Mutant", "correct_cases", "mutant_cases"]


@dataclass
class Ctx:
    """What a corruption sees: the forward input, ``dy``, the correct results, the layer."""

    x: np.ndarray
    dy: np.ndarray
    dx: np.ndarray
    grads: dict[str, np.ndarray]
    params: dict[str, np.ndarray]
    base: Any


class Mutant:
    """A correct layer whose backward result is rewritten by ``corrupt(ctx) -> dx``.

    ``corrupt`` may also rewrite ``ctx.grads`` (a copy of the base layer's gradients). The
    mutant shares ``params`` with the base layer, so a checker's perturbations reach it.
    """

    def __init__(self, base: Any, corrupt: Callable[[Ctx], np.ndarray], name: str = "") -> None:
        self.base = base
        self.params = base.params
        self.grads: dict[str, np.ndarray] = {k: np.zeros_like(v) for k, v in base.params.items()}
        self._corrupt = corrupt
        self._x: np.ndarray | None = None
        self.name = name

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = x
        return np.asarray(self.base.forward(x))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        assert self._x is not None
        dx = self.base.backward(dy)
        ctx = Ctx(self._x, dy, dx, dict(self.base.grads), self.params, self.base)
        dx = self._corrupt(ctx)
        self.grads = ctx.grads
        return dx

    def __repr__(self) -> str:
        return f"Mutant({self.name}: {self.base!r})"


@dataclass(frozen=True)
class Case:
    """One entry of the corpus.

    Attributes
    ----------
    name : str
    mistake : str
        The derivation mistake in words (for mutants) or what makes the case awkward.
    make : callable
        ``make() -> (layer, x)``; a fresh layer each call.
    expected : type or None
        The exception class the checker must raise; ``None`` for a correct layer.
    hint : str or None
        A substring one of the failure's hints must contain; ``None`` when the mistake has no
        catalogued signature.
    options : dict
        Extra keyword arguments for ``check_layer``.
    """

    name: str
    mistake: str
    make: Callable[[], tuple[Any, np.ndarray]]
    expected: type[GradcheckError] | None
    hint: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- building blocks


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _x(*shape: int, seed: int = 1, scale: float = 1.0) -> np.ndarray:
    return _rng(seed).standard_normal(shape) * scale


def _conv(c_in: int = 2, c_out: int = 3, k: tuple[int, int] = (3, 2), **kw: Any) -> Any:
    from cnn_ref import Conv2D

    kw.setdefault("seed", 0)
    return Conv2D(c_in, c_out, k, **kw)


def _sub(c: int = 2, n: int = 2, kind: str = "sum", **kw: Any) -> Any:
    from cnn_ref import Subsample

    layer = Subsample(c, n, kind=kind, seed=0, **kw)
    # beta != 1 and different per map, so a dropped beta cannot hide
    layer.params["beta"][...] = np.linspace(1.5, -0.7, c)
    return layer


def _dense(n_in: int = 4, n_out: int = 3, **kw: Any) -> Any:
    from cnn_ref import Dense

    return Dense(n_in, n_out, seed=0, **kw)


def _tie_free(*shape: int, seed: int = 2) -> np.ndarray:
    size = int(np.prod(shape))
    return (_rng(seed).permutation(size) - size / 2).reshape(shape) * 0.1


def _mut(
    base: Any, corrupt: Callable[[Ctx], np.ndarray], x: np.ndarray, name: str
) -> Callable[[], tuple[Any, np.ndarray]]:
    # base is a factory so that every make() builds fresh state
    def make() -> tuple[Any, np.ndarray]:
        return Mutant(base(), corrupt, name), x.copy()

    return make


def _delta(ctx: Ctx) -> np.ndarray:
    """dJ/dU of an identity-activation layer (= dy)."""
    return ctx.dy


def _conv_kw(layer: Any) -> dict[str, Any]:
    return dict(
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
        convention=layer.convention,
    )


# --------------------------------------------------------------------------- corruptions


def _set_grad(name: str, fn: Callable[[Ctx], np.ndarray]) -> Callable[[Ctx], np.ndarray]:
    def corrupt(ctx: Ctx) -> np.ndarray:
        ctx.grads[name] = np.asarray(fn(ctx))
        return ctx.dx

    return corrupt


def _dK_not_flipped(ctx: Ctx) -> np.ndarray:
    # eq. (14) without its outer rot180 (or with it, on a cross-correlation layer)
    return ctx.grads["K"][..., ::-1, ::-1].copy()


def _dK_channels_swapped(ctx: Ctx) -> np.ndarray:
    return ctx.grads["K"].transpose(1, 0, 2, 3).copy()  # dK[i, j] from delta_j and A_i


def _dx_with_kij_for_kji(ctx: Ctx) -> np.ndarray:
    # eq. (18) as written: the kernel of the wrong channel pair (K transposed in its first axes)
    from cnn_ref.functional.conv import conv2d_backward

    K = ctx.params["K"].transpose(1, 0, 2, 3)
    return np.asarray(conv2d_backward(_delta(ctx), ctx.x, K, **_conv_kw(ctx.base))[0])


def _dx_without_rot180(ctx: Ctx) -> np.ndarray:
    # eq. (18) as written on a true-convolution layer: conv2(delta, K, 'full'), no rot180
    from cnn_ref.functional.conv import conv2d_backward

    kw = _conv_kw(ctx.base)
    kw["convention"] = "xcorr" if kw["convention"] == "conv" else "conv"
    return np.asarray(conv2d_backward(_delta(ctx), ctx.x, ctx.params["K"], **kw)[0])


def _dx_stride_repeat(ctx: Ctx) -> np.ndarray:
    # delta up-sampled by repetition instead of zero insertion before the stride-1 backward
    from cnn_ref.functional.conv import conv2d_backward, conv2d_forward

    layer = ctx.base
    sh, sw = layer.stride
    d = np.repeat(np.repeat(_delta(ctx), sh, axis=2), sw, axis=3)
    kw = dict(_conv_kw(layer), stride=1)
    full_shape = conv2d_forward(ctx.x, ctx.params["K"], ctx.params["b"], **kw).shape
    dd = np.zeros(full_shape)
    h, w = min(d.shape[2], full_shape[2]), min(d.shape[3], full_shape[3])
    dd[:, :, :h, :w] = d[:, :, :h, :w]
    return np.asarray(conv2d_backward(dd, ctx.x, ctx.params["K"], **kw)[0])


def _dx_padding_offset(ctx: Ctx) -> np.ndarray:
    # the gradient of the padded input cropped at [0:H] instead of [p:p+H]
    from cnn_ref.functional.conv import conv2d_backward

    layer = ctx.base
    ph, pw = layer.padding
    xp = np.pad(ctx.x, [(0, 0), (0, 0), (ph, ph), (pw, pw)])
    dxp = conv2d_backward(_delta(ctx), xp, ctx.params["K"], **dict(_conv_kw(layer), padding=0))[0]
    return np.asarray(dxp[:, :, : ctx.x.shape[2], : ctx.x.shape[3]])


def _dx_border_zeroed(ctx: Ctx) -> np.ndarray:
    # the border rows/columns that only padded windows reach are dropped
    dx = ctx.dx.copy()
    dx[:, :, 0, :] = 0
    dx[:, :, -1, :] = 0
    return dx


def _one_element(name: str, rel: float) -> Callable[[Ctx], np.ndarray]:
    """Scale the largest-magnitude element of ``grads[name]`` by ``1 + rel``."""

    def fn(ctx: Ctx) -> np.ndarray:
        g = ctx.grads[name].copy()
        flat = g.reshape(-1)
        flat[int(np.argmax(np.abs(flat)))] *= 1 + rel
        return g

    return fn


def _dx_one_element(rel: float, where: Callable[[Ctx], int]) -> Callable[[Ctx], np.ndarray]:
    def corrupt(ctx: Ctx) -> np.ndarray:
        dx = ctx.dx.copy()
        dx.reshape(-1)[where(ctx)] *= 1 + rel
        return dx

    return corrupt


def _largest(ctx: Ctx) -> int:
    return int(np.argmax(np.abs(ctx.dx)))


def _first_sample_only(ctx: Ctx) -> np.ndarray:
    dx = ctx.dx.copy()
    dx[1:] = 0  # a loop over the batch that stops after n = 0
    return dx


def _scaled(name: str, c: float) -> Callable[[Ctx], np.ndarray]:
    return lambda ctx: ctx.grads[name] * c


def _mean_up_without_factor(ctx: Ctx) -> np.ndarray:
    n = ctx.base.size
    return ctx.dx * (n[0] * n[1])  # (10) with up() = ones-Kronecker, the 1/n^2 forgotten


def _max_up_as_kron(ctx: Ctx) -> np.ndarray:
    # (10) with the ones-Kronecker up() on a max layer: delta spread over the whole block
    layer = ctx.base
    n = layer.size
    beta = ctx.params["beta"]
    d = np.kron(_delta(ctx), np.ones(n)) * beta[:, None, None]
    dx = np.zeros_like(ctx.x)
    dx[:, :, : d.shape[2], : d.shape[3]] = d
    return dx


def _beta_dropped(ctx: Ctx) -> np.ndarray:
    return ctx.dx / ctx.params["beta"][:, None, None]  # (10) without beta^{l+1}


def _dbeta_without_down(ctx: Ctx) -> np.ndarray:
    return _delta(ctx).sum(axis=(0, 2, 3))  # (20) without d = down(A)


def _db_times_beta(ctx: Ctx) -> np.ndarray:
    return ctx.grads["b"] * ctx.params["beta"]  # (19) with a stray beta


def _dense_db_wrong_axis(ctx: Ctx) -> np.ndarray:
    return _delta(ctx).sum(axis=1)  # summed over features instead of samples


def _dense_dW_transposed(ctx: Ctx) -> np.ndarray:
    return (ctx.x.T @ _delta(ctx)).copy()  # x^T delta where (5) needs delta^T x


def _dense_dW_first_sample(ctx: Ctx) -> np.ndarray:
    return np.outer(_delta(ctx)[0], ctx.x[0])  # (5) for sample 0 only


def _negate(name: str) -> Callable[[Ctx], np.ndarray]:
    return lambda ctx: -ctx.grads[name]


def _zero(name: str) -> Callable[[Ctx], np.ndarray]:
    return lambda ctx: np.zeros_like(ctx.grads[name])


def _sigmoid_df_of_u(ctx: Ctx) -> np.ndarray:
    u = ctx.x  # Activation: U is the input
    return ctx.dy * u * (1 - u)  # f'(U) written as U (1 - U): the A(1 - A) form applied to U


def _tanh_df_missing_square(ctx: Ctx) -> np.ndarray:
    return ctx.dy * (1 - np.tanh(ctx.x))  # 1 - tanh where 1 - tanh^2 is needed


def _relu_mask_forgotten(ctx: Ctx) -> np.ndarray:
    return ctx.dy.copy()  # relu'(U) = 1 everywhere


def _nan_in_grad(ctx: Ctx) -> np.ndarray:
    g = ctx.grads["K"].copy()
    g[0, 0, 0, 0] = np.nan
    ctx.grads["K"] = g
    return ctx.dx


def _dense_dx_wrong_shape(ctx: Ctx) -> np.ndarray:
    ctx.grads["b"] = _delta(ctx).sum(axis=1)  # shape (N,) for a bias of shape (out,)
    return ctx.dx


class _MutatesDy:
    """Backward multiplies dy by f'(U) in place: the caller's dy is changed."""

    def __init__(self) -> None:
        from cnn_ref import Conv2D

        self.base = Conv2D(2, 2, 2, activation="tanh", seed=0)
        self.params = self.base.params
        self.grads = self.base.grads

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._u = self.base.forward(x)
        return np.asarray(self._u)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dx = self.base.backward(dy)
        self.grads = self.base.grads
        dy *= 1 - self._u**2  # in place: the checker's dy is overwritten
        return np.asarray(dx)


class _MutatesInput:
    """Forward centres x in place (x -= x.mean()) before using it."""

    def __init__(self) -> None:
        self.base = _dense()
        self.params = self.base.params
        self.grads = self.base.grads

    def forward(self, x: np.ndarray) -> np.ndarray:
        x -= 0.0 * x + 1e-3  # a shift in place
        return np.asarray(self.base.forward(x))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dx = self.base.backward(dy)
        self.grads = self.base.grads
        return np.asarray(dx)


class _Dropout:
    """Dropout that draws its mask from numpy's global RNG at every forward (non-deterministic)."""

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._mask = np.random.random(x.shape) > 0.3  # noqa: NPY002 - the bug is the global RNG
        return np.asarray(x * self._mask)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return np.asarray(dy * self._mask)


class BatchCentre:
    """A correct batch-dependent layer: ``y = x - mean over the batch``, ``dx = dy - mean(dy)``.

    Samples are not independent, so a checker that packs perturbations along the batch axis
    must detect it and fall back.
    """

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x - x.mean(axis=0, keepdims=True))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return np.asarray(dy - dy.mean(axis=0, keepdims=True))


def _lenet_mean_without_factor() -> tuple[Any, np.ndarray]:
    from cnn_ref import Conv2D, Dense, Flatten, Sequential

    sub = _sub(2, 2, "mean")
    net = Sequential(
        [
            Conv2D(1, 2, 3, activation="tanh", seed=0),
            Mutant(sub, _mean_up_without_factor, "mean up without 1/n^2"),
            Conv2D(2, 3, 2, activation="tanh", seed=1),
            Flatten(),
            Dense(6, 2, seed=2),
        ]
    )
    return net, _x(2, 1, 7, 8)


def _lenet_correct() -> tuple[Any, np.ndarray]:
    from cnn_ref import lenet5

    return lenet5(image_size=16, n_classes=3, seed=0, loss=None), _x(2, 1, 16, 16)


# --------------------------------------------------------------------------- the corpus


def mutant_cases() -> list[Case]:
    """Every deliberately broken layer, with the exception class and hint it must produce."""
    from cnn_ref import Activation, MaxPool2D

    M, C = GradientMismatchError, LayerContractError
    x4 = _x(2, 2, 6, 7)
    xs = _tie_free(2, 2, 7, 9)
    cases = [
        Case(
            "conv_dK_not_flipped",
            "eq. 14 without its outer rot180 (true convolution)",
            _mut(_conv, _set_grad("K", _dK_not_flipped), x4, "dK not flipped"),
            M,
            "rot180",
        ),
        Case(
            "xcorr_dK_flipped",
            "eq. 14 as written used on a cross-correlation layer",
            _mut(
                lambda: _conv(convention="xcorr"),
                _set_grad("K", _dK_not_flipped),
                x4,
                "xcorr with eq. 14",
            ),
            M,
            "rot180",
        ),
        Case(
            "conv_dK_channels_swapped",
            "dK[i, j] built from delta_j and A_i (K_ij/K_ji)",
            _mut(
                lambda: _conv(3, 3),
                _set_grad("K", _dK_channels_swapped),
                _x(2, 3, 6, 7),
                "dK swapped",
            ),
            M,
            "swapped",
        ),
        Case(
            "conv_dx_kij_for_kji",
            "eq. 18 as typed: the kernel of the swapped channel pair",
            _mut(lambda: _conv(3, 3), _dx_with_kij_for_kji, _x(2, 3, 6, 7), "K_ij for K_ji"),
            M,
            None,
        ),
        Case(
            "conv_dx_without_rot180",
            "eq. 18 as typed on a true convolution: no rot180 of K",
            _mut(lambda: _conv(1, 1), _dx_without_rot180, _x(2, 1, 6, 7), "dx no rot180"),
            M,
            None,
        ),
        Case(
            "conv_stride_delta_repeated",
            "stride 2: delta up-sampled by repetition, not zeros",
            _mut(lambda: _conv(stride=2), _dx_stride_repeat, _x(2, 2, 7, 8), "stride repeat"),
            M,
            None,
        ),
        Case(
            "conv1x1_stride_delta_repeated",
            "1x1 kernel, stride 2: skipped rows get delta",
            _mut(
                lambda: _conv(k=(1, 1), stride=2),
                _dx_stride_repeat,
                _x(2, 2, 7, 8),
                "1x1 stride repeat",
            ),
            M,
            "stride",
        ),
        Case(
            "conv_padding_offset",
            "padding 1: dx cropped at [0:H] instead of [p:p+H]",
            _mut(lambda: _conv(padding=1), _dx_padding_offset, x4, "padding offset"),
            M,
            None,
        ),
        Case(
            "conv_padding_border_zeroed",
            "padding 1: first and last rows of dx dropped",
            _mut(lambda: _conv(padding=1), _dx_border_zeroed, x4, "border zeroed"),
            M,
            "border",
        ),
        Case(
            "conv_one_element_1e-6",
            "one element of dK off by a relative 1e-6 (float64)",
            _mut(_conv, _set_grad("K", _one_element("K", 1e-6)), x4, "dK 1e-6"),
            M,
            "single element",
        ),
        Case(
            "relu_conv_one_element_1e-4",
            "ReLU conv: one element of dK off by 1e-4",
            _mut(
                lambda: _conv(activation="relu"),
                _set_grad("K", _one_element("K", 1e-4)),
                x4,
                "relu dK 1e-4",
            ),
            M,
            "single element",
        ),
        Case(
            "maxpool_one_element_1e-4",
            "max pooling: one routed element of dx off by 1e-4",
            _mut(lambda: MaxPool2D(2), _dx_one_element(1e-4, _largest), xs, "max dx 1e-4"),
            M,
            "single element",
        ),
        Case(
            "conv_first_sample_only",
            "dx filled for sample 0 only",
            _mut(_conv, _first_sample_only, _x(3, 2, 6, 7), "first sample"),
            M,
            "sample 0",
        ),
        Case(
            "conv_dK_batch_mean",
            "dK averaged over the batch where the loss sums (1/N)",
            _mut(_conv, _set_grad("K", _scaled("K", 0.5)), x4, "batch mean"),
            M,
            "1/2",
        ),
        Case(
            "conv_dK_sign",
            "dK with its sign flipped",
            _mut(_conv, _set_grad("K", _negate("K")), x4, "sign"),
            M,
            "sign",
        ),
        Case(
            "conv_db_not_written",
            "backward never writes db",
            _mut(_conv, _set_grad("b", _zero("b")), x4, "db zero"),
            M,
            "zero",
        ),
        Case(
            "mean_up_without_factor",
            "eq. 10 with mean pooling: up() without 1/n^2",
            _mut(lambda: _sub(kind="mean"), _mean_up_without_factor, xs, "mean up"),
            M,
            "1/n^2",
        ),
        Case(
            "max_up_as_kron",
            "eq. 10 with max pooling: ones-Kronecker up(), no argmax",
            _mut(lambda: _sub(kind="max"), _max_up_as_kron, xs, "max kron"),
            M,
            None,
        ),
        Case(
            "subsample_beta_dropped",
            "eq. 10 without beta^{l+1}",
            _mut(_sub, _beta_dropped, xs, "beta dropped"),
            M,
            None,
        ),
        Case(
            "subsample_dbeta_without_down",
            "eq. 20 without d = down(A)",
            _mut(_sub, _set_grad("beta", _dbeta_without_down), xs, "dbeta no down"),
            M,
            None,
        ),
        Case(
            "subsample_db_times_beta",
            "eq. 19 with a stray beta",
            _mut(_sub, _set_grad("b", _db_times_beta), xs, "db beta"),
            M,
            None,
        ),
        Case(
            "dense_db_wrong_axis",
            "eq. 6 summed over features instead of samples (N = out)",
            _mut(lambda: _dense(4, 3), _set_grad("b", _dense_db_wrong_axis), _x(3, 4), "db axis"),
            M,
            None,
        ),
        Case(
            "dense_dW_transposed",
            "eq. 5 as x^T delta (square W, so the shape fits)",
            _mut(lambda: _dense(3, 3), _set_grad("W", _dense_dW_transposed), _x(4, 3), "dW^T"),
            M,
            "transposed",
        ),
        Case(
            "dense_dW_first_sample",
            "eq. 5 for the first sample only",
            _mut(_dense, _set_grad("W", _dense_dW_first_sample), _x(3, 4), "dW n=0"),
            M,
            None,
        ),
        Case(
            "sigmoid_df_of_u",
            "f'(U) = U (1 - U): the A(1-A) form applied to U",
            _mut(lambda: Activation("sigmoid"), _sigmoid_df_of_u, _x(2, 3, 4), "sigmoid'"),
            M,
            None,
        ),
        Case(
            "tanh_df_missing_square",
            "f'(U) = 1 - tanh(U) instead of 1 - tanh(U)^2",
            _mut(lambda: Activation("tanh"), _tanh_df_missing_square, _x(2, 3, 4), "tanh'"),
            M,
            None,
        ),
        Case(
            "relu_mask_forgotten",
            "relu'(U) = 1 everywhere",
            _mut(lambda: Activation("relu"), _relu_mask_forgotten, _x(2, 3, 4), "relu'"),
            M,
            None,
        ),
        Case(
            "lenet_mean_up_without_factor",
            "LeNet chain with one eq. 10 mistake inside",
            _lenet_mean_without_factor,
            M,
            None,
        ),
        Case(
            "dense_db_wrong_shape",
            "eq. 6 summed over the wrong axis: shape (N,), not (out,)",
            _mut(lambda: _dense(4, 3), _dense_dx_wrong_shape, _x(5, 4), "db shape"),
            C,
            None,
        ),
        Case(
            "conv_nan_in_dK",
            "a NaN in the analytic dK (uninitialised memory)",
            _mut(_conv, _nan_in_grad, x4, "NaN"),
            C,
            None,
        ),
        Case(
            "mutates_dy",
            "backward multiplies dy by f'(U) in place",
            lambda: (_MutatesDy(), _x(2, 2, 5, 5)),
            C,
            None,
        ),
        Case(
            "mutates_input",
            "forward shifts x in place",
            lambda: (_MutatesInput(), _x(3, 4)),
            C,
            None,
        ),
        Case(
            "dropout_global_rng",
            "forward draws a dropout mask from the global RNG",
            lambda: (_Dropout(), _x(4, 8)),  # masks coincide w.p. 0.58^n: 3e-8 here
            C,
            None,
        ),
    ]
    return cases


def correct_cases() -> list[Case]:
    """Correct layers at points where naive checkers raise false alarms; each must pass."""
    from cnn_ref import Activation, AvgPool2D, Conv2D, Dense, MaxPool2D

    relu_x = _x(2, 3, 4)
    relu_x[0, 0, :] = 0.0  # ReLU at exactly 0
    ties = np.repeat(np.repeat(_x(2, 2, 3, 3), 2, axis=2), 2, axis=3)  # every 2x2 block tied
    return [
        Case(
            "relu_at_zero",
            "ReLU evaluated at exactly 0 (a kink)",
            lambda: (Activation("relu"), relu_x.copy()),
            None,
        ),
        Case(
            "maxpool_ties",
            "max pooling over blocks of four equal values",
            lambda: (MaxPool2D(2), ties.copy()),
            None,
        ),
        Case(
            "subsample_max_ties",
            "Subsample(max) with beta != 1 on tied blocks",
            lambda: (_sub(kind="max"), ties.copy()),
            None,
        ),
        Case(
            "conv_float32",
            "a float32 convolution (tanh)",
            lambda: (
                Conv2D(2, 3, 3, activation="tanh", seed=0, dtype=np.float32),
                _x(2, 2, 6, 7).astype(np.float32),
            ),
            None,
        ),
        Case(
            "dense_large_magnitude",
            "Dense on inputs ~1e3 with weights ~1e3",
            lambda: (_scaled_dense(), _x(3, 5, scale=1e3)),
            None,
        ),
        Case(
            "conv_xcorr_stride_pad_dilation",
            "xcorr conv, stride (2,1), padding 1, dilation 2",
            lambda: (
                Conv2D(
                    2,
                    3,
                    (2, 3),
                    stride=(2, 1),
                    padding=1,
                    dilation=2,
                    convention="xcorr",
                    activation="sigmoid",
                    seed=0,
                ),
                _x(2, 2, 7, 8),
            ),
            None,
        ),
        Case(
            "avgpool_non_divisible",
            "AvgPool2D(2) on a 7 x 9 map (cropped border)",
            lambda: (AvgPool2D(2), _x(2, 2, 7, 9)),
            None,
        ),
        Case(
            "subsample_mean_tanh",
            "Subsample(mean) with tanh and beta != 1",
            lambda: (_sub(kind="mean", activation="tanh"), _x(2, 2, 6, 8)),
            None,
        ),
        Case(
            "batch_centre",
            "a batch-dependent layer (x minus the batch mean)",
            lambda: (BatchCentre(), _x(4, 3)),
            None,
        ),
        Case(
            "dense_sigmoid",
            "Dense with sigmoid",
            lambda: (Dense(5, 4, activation="sigmoid", seed=0), _x(3, 5)),
            None,
        ),
        Case(
            "lenet5_small", "lenet5 on 16 x 16 images (every layer chained)", _lenet_correct, None
        ),
    ]


def _scaled_dense() -> Any:
    layer = _dense(5, 4)
    layer.params["W"][...] *= 1e3
    layer.params["b"][...] *= 1e3
    return layer
