"""A corpus of deliberately broken layers, and of correct layers that are awkward to check.

Each :class:`Case` builds a layer that follows the cnn_ref protocol and an input to check it
on. A *mutant* wraps a correct cnn_ref layer and corrupts one step of its backward pass the way
a real derivation mistake would (:mod:`checks.audit.mutants`: a missing rot180, K_ij for K_ji,
an up-sampling without 1/n^2, a dropped beta, ...); the checker must raise the expected
exception class on it and, where the mistake has a known signature, print the expected hint. A
*correct* case is a right layer at a point where naive checkers raise false alarms (ReLU at
exactly 0, max ties, float32, large magnitudes, a batch-dependent layer); the checker must pass
it.

The corpus is the two tables :data:`MUTANTS` and :data:`CORRECT`, one :class:`Case` per entry:
a new case is one more entry. It is used by :mod:`checks.audit.selftest` (``python -m checks
selftest``) and by ``property_tests/meta_tests/test_selftest.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from checks.audit.mutants import (
    Ctx,
    Mutant,
    beta_dropped,
    db_times_beta,
    dbeta_without_down,
    dense_db_wrong_axis,
    dense_db_wrong_shape,
    dense_dW_first_sample,
    dense_dW_transposed,
    dK_channels_swapped,
    dK_not_flipped,
    dx_border_zeroed,
    dx_one_element,
    dx_padding_offset,
    dx_stride_repeat,
    dx_with_kij_for_kji,
    dx_without_rot180,
    first_sample_only,
    largest,
    max_up_as_kron,
    mean_up_without_factor,
    nan_in_grad,
    negate,
    one_element,
    relu_mask_forgotten,
    scaled,
    set_grad,
    sigmoid_df_of_u,
    tanh_df_missing_square,
    zero,
)
from checks.report.errors import GradcheckError, GradientMismatchError, LayerContractError
from cnn_ref import (
    Activation,
    AvgPool2D,
    Conv2D,
    Dense,
    Flatten,
    MaxPool2D,
    Sequential,
    Subsample,
    lenet5,
)

__all__ = ["CORRECT", "MUTANTS", "BatchCentre", "Case", "correct_cases", "mutant_cases"]


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
    kw.setdefault("seed", 0)
    return Conv2D(c_in, c_out, k, **kw)


def _sub(c: int = 2, n: int = 2, kind: str = "sum", **kw: Any) -> Any:
    layer = Subsample(c, n, kind=kind, seed=0, **kw)
    # beta != 1 and different per map, so a dropped beta cannot hide
    layer.params["beta"][...] = np.linspace(1.5, -0.7, c)
    return layer


def _dense(n_in: int = 4, n_out: int = 3, **kw: Any) -> Any:
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


# --------------------------------------------------------------------------- whole layers


class _MutatesDy:
    """Backward multiplies dy by f'(U) in place: the caller's dy is changed."""

    def __init__(self) -> None:
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
    sub = _sub(2, 2, "mean")
    net = Sequential(
        [
            Conv2D(1, 2, 3, activation="tanh", seed=0),
            Mutant(sub, mean_up_without_factor, "mean up without 1/n^2"),
            Conv2D(2, 3, 2, activation="tanh", seed=1),
            Flatten(),
            Dense(6, 2, seed=2),
        ]
    )
    return net, _x(2, 1, 7, 8)


def _lenet_correct() -> tuple[Any, np.ndarray]:
    return lenet5(image_size=16, n_classes=3, seed=0, loss=None), _x(2, 1, 16, 16)


def _scaled_dense() -> Any:
    layer = _dense(5, 4)
    layer.params["W"][...] *= 1e3
    layer.params["b"][...] *= 1e3
    return layer


# --------------------------------------------------------------------------- the corpus

MISMATCH, CONTRACT = GradientMismatchError, LayerContractError
_X4 = _x(2, 2, 6, 7)
_XS = _tie_free(2, 2, 7, 9)
_RELU_X = _x(2, 3, 4)
_RELU_X[0, 0, :] = 0.0  # ReLU at exactly 0
_TIES = np.repeat(np.repeat(_x(2, 2, 3, 3), 2, axis=2), 2, axis=3)  # every 2x2 block tied

#: Every deliberately broken layer, with the exception class and hint it must produce.
MUTANTS: tuple[Case, ...] = (
    Case(
        "conv_dK_not_flipped",
        "eq. 14 without its outer rot180 (true convolution)",
        _mut(_conv, set_grad("K", dK_not_flipped), _X4, "dK not flipped"),
        MISMATCH,
        "rot180",
    ),
    Case(
        "xcorr_dK_flipped",
        "eq. 14 as written used on a cross-correlation layer",
        _mut(
            lambda: _conv(convention="xcorr"),
            set_grad("K", dK_not_flipped),
            _X4,
            "xcorr with eq. 14",
        ),
        MISMATCH,
        "rot180",
    ),
    Case(
        "conv_dK_channels_swapped",
        "dK[i, j] built from delta_j and A_i (K_ij/K_ji)",
        _mut(
            lambda: _conv(3, 3),
            set_grad("K", dK_channels_swapped),
            _x(2, 3, 6, 7),
            "dK swapped",
        ),
        MISMATCH,
        "swapped",
    ),
    Case(
        "conv_dx_kij_for_kji",
        "eq. 18 as typed: the kernel of the swapped channel pair",
        _mut(lambda: _conv(3, 3), dx_with_kij_for_kji, _x(2, 3, 6, 7), "K_ij for K_ji"),
        MISMATCH,
        None,
    ),
    Case(
        "conv_dx_without_rot180",
        "eq. 18 as typed on a true convolution: no rot180 of K",
        _mut(lambda: _conv(1, 1), dx_without_rot180, _x(2, 1, 6, 7), "dx no rot180"),
        MISMATCH,
        None,
    ),
    Case(
        "conv_stride_delta_repeated",
        "stride 2: delta up-sampled by repetition, not zeros",
        _mut(lambda: _conv(stride=2), dx_stride_repeat, _x(2, 2, 7, 8), "stride repeat"),
        MISMATCH,
        None,
    ),
    Case(
        "conv1x1_stride_delta_repeated",
        "1x1 kernel, stride 2: skipped rows get delta",
        _mut(
            lambda: _conv(k=(1, 1), stride=2),
            dx_stride_repeat,
            _x(2, 2, 7, 8),
            "1x1 stride repeat",
        ),
        MISMATCH,
        "stride",
    ),
    Case(
        "conv_padding_offset",
        "padding 1: dx cropped at [0:H] instead of [p:p+H]",
        _mut(lambda: _conv(padding=1), dx_padding_offset, _X4, "padding offset"),
        MISMATCH,
        None,
    ),
    Case(
        "conv_padding_border_zeroed",
        "padding 1: first and last rows of dx dropped",
        _mut(lambda: _conv(padding=1), dx_border_zeroed, _X4, "border zeroed"),
        MISMATCH,
        "border",
    ),
    Case(
        "conv_one_element_1e-6",
        "one element of dK off by a relative 1e-6 (float64)",
        _mut(_conv, set_grad("K", one_element("K", 1e-6)), _X4, "dK 1e-6"),
        MISMATCH,
        "single element",
    ),
    Case(
        "relu_conv_one_element_1e-4",
        "ReLU conv: one element of dK off by 1e-4",
        _mut(
            lambda: _conv(activation="relu"),
            set_grad("K", one_element("K", 1e-4)),
            _X4,
            "relu dK 1e-4",
        ),
        MISMATCH,
        "single element",
    ),
    Case(
        "maxpool_one_element_1e-4",
        "max pooling: one routed element of dx off by 1e-4",
        _mut(lambda: MaxPool2D(2), dx_one_element(1e-4, largest), _XS, "max dx 1e-4"),
        MISMATCH,
        "single element",
    ),
    Case(
        "conv_first_sample_only",
        "dx filled for sample 0 only",
        _mut(_conv, first_sample_only, _x(3, 2, 6, 7), "first sample"),
        MISMATCH,
        "sample 0",
    ),
    Case(
        "conv_dK_batch_mean",
        "dK averaged over the batch where the loss sums (1/N)",
        _mut(_conv, set_grad("K", scaled("K", 0.5)), _X4, "batch mean"),
        MISMATCH,
        "1/2",
    ),
    Case(
        "conv_dK_sign",
        "dK with its sign flipped",
        _mut(_conv, set_grad("K", negate("K")), _X4, "sign"),
        MISMATCH,
        "sign",
    ),
    Case(
        "conv_db_not_written",
        "backward never writes db",
        _mut(_conv, set_grad("b", zero("b")), _X4, "db zero"),
        MISMATCH,
        "zero",
    ),
    Case(
        "mean_up_without_factor",
        "eq. 10 with mean pooling: up() without 1/n^2",
        _mut(lambda: _sub(kind="mean"), mean_up_without_factor, _XS, "mean up"),
        MISMATCH,
        "1/n^2",
    ),
    Case(
        "max_up_as_kron",
        "eq. 10 with max pooling: ones-Kronecker up(), no argmax",
        _mut(lambda: _sub(kind="max"), max_up_as_kron, _XS, "max kron"),
        MISMATCH,
        None,
    ),
    Case(
        "subsample_beta_dropped",
        "eq. 10 without beta^{l+1}",
        _mut(_sub, beta_dropped, _XS, "beta dropped"),
        MISMATCH,
        None,
    ),
    Case(
        "subsample_dbeta_without_down",
        "eq. 20 without d = down(A)",
        _mut(_sub, set_grad("beta", dbeta_without_down), _XS, "dbeta no down"),
        MISMATCH,
        None,
    ),
    Case(
        "subsample_db_times_beta",
        "eq. 19 with a stray beta",
        _mut(_sub, set_grad("b", db_times_beta), _XS, "db beta"),
        MISMATCH,
        None,
    ),
    Case(
        "dense_db_wrong_axis",
        "eq. 6 summed over features instead of samples (N = out)",
        _mut(lambda: _dense(4, 3), set_grad("b", dense_db_wrong_axis), _x(3, 4), "db axis"),
        MISMATCH,
        None,
    ),
    Case(
        "dense_dW_transposed",
        "eq. 5 as x^T delta (square W, so the shape fits)",
        _mut(lambda: _dense(3, 3), set_grad("W", dense_dW_transposed), _x(4, 3), "dW^T"),
        MISMATCH,
        "transposed",
    ),
    Case(
        "dense_dW_first_sample",
        "eq. 5 for the first sample only",
        _mut(_dense, set_grad("W", dense_dW_first_sample), _x(3, 4), "dW n=0"),
        MISMATCH,
        None,
    ),
    Case(
        "sigmoid_df_of_u",
        "f'(U) = U (1 - U): the A(1-A) form applied to U",
        _mut(lambda: Activation("sigmoid"), sigmoid_df_of_u, _x(2, 3, 4), "sigmoid'"),
        MISMATCH,
        None,
    ),
    Case(
        "tanh_df_missing_square",
        "f'(U) = 1 - tanh(U) instead of 1 - tanh(U)^2",
        _mut(lambda: Activation("tanh"), tanh_df_missing_square, _x(2, 3, 4), "tanh'"),
        MISMATCH,
        None,
    ),
    Case(
        "relu_mask_forgotten",
        "relu'(U) = 1 everywhere",
        _mut(lambda: Activation("relu"), relu_mask_forgotten, _x(2, 3, 4), "relu'"),
        MISMATCH,
        None,
    ),
    Case(
        "lenet_mean_up_without_factor",
        "LeNet chain with one eq. 10 mistake inside",
        _lenet_mean_without_factor,
        MISMATCH,
        None,
    ),
    Case(
        "dense_db_wrong_shape",
        "eq. 6 summed over the wrong axis: shape (N,), not (out,)",
        _mut(lambda: _dense(4, 3), dense_db_wrong_shape, _x(5, 4), "db shape"),
        CONTRACT,
        None,
    ),
    Case(
        "conv_nan_in_dK",
        "a NaN in the analytic dK (uninitialised memory)",
        _mut(_conv, nan_in_grad, _X4, "NaN"),
        CONTRACT,
        None,
    ),
    Case(
        "mutates_dy",
        "backward multiplies dy by f'(U) in place",
        lambda: (_MutatesDy(), _x(2, 2, 5, 5)),
        CONTRACT,
        None,
    ),
    Case(
        "mutates_input",
        "forward shifts x in place",
        lambda: (_MutatesInput(), _x(3, 4)),
        CONTRACT,
        None,
    ),
    Case(
        "dropout_global_rng",
        "forward draws a dropout mask from the global RNG",
        lambda: (_Dropout(), _x(4, 8)),  # masks coincide w.p. 0.58^n: 3e-8 here
        CONTRACT,
        None,
    ),
)

#: Correct layers at points where naive checkers raise false alarms; each must pass.
CORRECT: tuple[Case, ...] = (
    Case(
        "relu_at_zero",
        "ReLU evaluated at exactly 0 (a kink)",
        lambda: (Activation("relu"), _RELU_X.copy()),
        None,
    ),
    Case(
        "maxpool_ties",
        "max pooling over blocks of four equal values",
        lambda: (MaxPool2D(2), _TIES.copy()),
        None,
    ),
    Case(
        "subsample_max_ties",
        "Subsample(max) with beta != 1 on tied blocks",
        lambda: (_sub(kind="max"), _TIES.copy()),
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
    Case("lenet5_small", "lenet5 on 16 x 16 images (every layer chained)", _lenet_correct, None),
)


def mutant_cases() -> list[Case]:
    """Every deliberately broken layer, with the exception class and hint it must produce."""
    return list(MUTANTS)


def correct_cases() -> list[Case]:
    """Correct layers at points where naive checkers raise false alarms; each must pass."""
    return list(CORRECT)
