"""checks.report.hints: each catalogued derivation mistake, planted in a small layer, is named
by the ``Hint:`` line of check_layer's failure message.

Every broken layer below is a reference layer from ``cnn_ref`` whose backward was changed in
exactly one way; the correct layer passes (so the hint is about the planted mistake, not
noise). A last group feeds hand-built arrays to ``diagnose`` for the cases a check would not
produce on its own (partial coverage, no pattern).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import cnn_ref
from checks import check_layer
from checks.report.errors import GradientMismatchError
from checks.report.hints import diagnose
from cnn_ref.functional.conv import conv2d_backward
from cnn_ref.functional.subsample import subsample_backward

RNG = np.random.default_rng(20)


def _x(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape)


def _failure(layer, x: np.ndarray, **options) -> tuple[str, list[str]]:
    """Run the checker, expect a mismatch; return (message, names of the failing tensors)."""
    with pytest.raises(GradientMismatchError) as info:
        check_layer(layer, x, **options)
    failing = [t.name for t in info.value.report.tensors if not t.ok]
    return str(info.value), failing


def _hint_lines(message: str) -> list[str]:
    return [line.strip() for line in message.splitlines() if line.strip().startswith("Hint")]


# --- planted mistakes -------------------------------------------------------------------------
class KernelNotFlipped(cnn_ref.Conv2D):
    """Eq. (14) without the outer rot180."""

    def backward(self, dy):
        dx = super().backward(dy)
        self.grads["K"] = np.ascontiguousarray(self.grads["K"][..., ::-1, ::-1])
        return dx


class ChannelsSwapped(cnn_ref.Conv2D):
    """dK[i, j] built from delta_j and A_i: K_ij read as K_ji."""

    def backward(self, dy):
        dx = super().backward(dy)
        self.grads["K"] = np.ascontiguousarray(self.grads["K"].swapaxes(0, 1))
        return dx


class KernelTransposed(cnn_ref.Conv2D):
    """Each kh x kw kernel gradient transposed (an (h, w) vs (w, h) reshape)."""

    def backward(self, dy):
        dx = super().backward(dy)
        self.grads["K"] = np.ascontiguousarray(self.grads["K"].swapaxes(-1, -2))
        return dx


class DenseWeightTransposed(cnn_ref.Dense):
    """dW = x^T delta where eq. (5) needs delta^T x (W is (out, in))."""

    def backward(self, dy):
        dx = super().backward(dy)
        self.grads["W"] = np.ascontiguousarray(self.grads["W"].T)
        return dx


class MeanPoolUpWithoutFactor(cnn_ref.Subsample):
    """Mean pooling forward, but up(delta) without the 1/n^2 (sum pooling's backward)."""

    def backward(self, dy):
        delta, cache = self._delta(dy)
        dx, dbeta, db = subsample_backward(
            delta, cache["x"], cache["beta"], size=self.size, stride=self.stride, kind="sum"
        )
        # only up() is wrong; beta's gradient (eq. 20 with the mean down) is kept right
        self.grads = {"beta": dbeta / np.prod(self.size), "b": db}
        return dx


class BatchMeanWeights(cnn_ref.Dense):
    """dW averaged over the batch where the loss sums."""

    def backward(self, dy):
        dx = super().backward(dy)
        self.grads["W"] = self.grads["W"] / dy.shape[0]
        return dx


class SignFlippedBias(cnn_ref.Dense):
    def backward(self, dy):
        dx = super().backward(dy)
        self.grads["b"] = -self.grads["b"]
        return dx


class WeightGradientNeverWritten(cnn_ref.Dense):
    def backward(self, dy):
        dx = super().backward(dy)
        self.grads["W"] = np.zeros_like(self.params["W"])
        return dx


class PaddingBorderLost(cnn_ref.Conv2D):
    """The input gradient misses the contributions on the outermost ring (padding=1)."""

    def backward(self, dy):
        dx = super().backward(dy).copy()
        dx[..., 0, :] = 0
        dx[..., -1, :] = 0
        dx[..., :, 0] = 0
        dx[..., :, -1] = 0
        return dx


class StrideByRepetition(cnn_ref.Conv2D):
    """1x1 kernel, stride 2: delta up-sampled by repetition instead of zero insertion."""

    def forward(self, x):
        self.x_shape = x.shape
        return super().forward(x)

    def backward(self, dy):
        super().backward(dy)
        K = self.params["K"][:, :, 0, 0]
        dx_strided = np.einsum("nohw,oc->nchw", dy, K)
        h, w = self.x_shape[-2:]
        return np.repeat(np.repeat(dx_strided, 2, axis=-2), 2, axis=-1)[..., :h, :w].copy()


class LastSampleDropped(cnn_ref.Dense):
    """The batch loop stops one sample early: for n in range(N - 1)."""

    def backward(self, dy):
        dx = super().backward(dy).copy()
        dx[-1] = 0
        return dx


class FirstSampleOnly(cnn_ref.Conv2D):
    """Backward uses sample 0 where sample n is meant."""

    def backward(self, dy):
        dx = super().backward(dy).copy()
        dx[1:] = 0
        return dx


class LastChannelDropped(cnn_ref.Conv2D):
    """The input-map loop stops one channel early."""

    def backward(self, dy):
        dx = super().backward(dy).copy()
        dx[:, -1] = 0
        return dx


class PaddingCroppedAtZero(cnn_ref.Conv2D):
    """The padded input's gradient cropped at [0:H] instead of [p:p+H]."""

    def forward(self, x):
        self.x_in = x
        return super().forward(x)

    def backward(self, dy):
        super().backward(dy)
        (ph, pw), (h, w) = self.padding, self.x_in.shape[-2:]
        xp = np.pad(self.x_in, [(0, 0), (0, 0), (ph, ph), (pw, pw)])
        dxp = conv2d_backward(dy, xp, self.params["K"], padding=0, convention=self.convention)[0]
        return dxp[:, :, :h, :w].copy()


class BetaDropped(cnn_ref.Subsample):
    """Eq. (10) without beta: delta = up(delta_next)."""

    def backward(self, dy):
        return super().backward(dy) / self.params["beta"][None, :, None, None]


class ReluMaskForgotten(cnn_ref.Activation):
    """relu'(U) taken as 1 everywhere."""

    def backward(self, dy):
        super().backward(dy)
        return dy.copy()


class MaxUpAsKron(cnn_ref.MaxPool2D):
    """Max pooling's up() as the ones-Kronecker: delta spread over the whole block."""

    def backward(self, dy):
        super().backward(dy)
        return np.kron(dy, np.ones(self.size))


def _conv(cls=cnn_ref.Conv2D, *args, **kwargs):
    return cls(*args, seed=3, **kwargs)


@pytest.mark.parametrize(
    ("make", "x_shape"),
    [
        (lambda: _conv(cnn_ref.Conv2D, 2, 3, (2, 3)), (2, 2, 6, 7)),
        (lambda: _conv(cnn_ref.Conv2D, 2, 2, 3, padding=1), (2, 2, 6, 7)),
        (lambda: _conv(cnn_ref.Conv2D, 2, 3, 1, stride=2), (2, 2, 7, 6)),
        (lambda: cnn_ref.Subsample(3, 2, kind="mean", seed=1), (2, 3, 6, 6)),
        (lambda: cnn_ref.Dense(5, 4, seed=1), (3, 5)),
    ],
)
def test_the_unbroken_layers_pass(make, x_shape) -> None:
    assert check_layer(make(), _x(*x_shape)).ok


def test_hint_kernel_not_flipped_eq14() -> None:
    message, failing = _failure(_conv(KernelNotFlipped, 2, 3, (2, 3)), _x(2, 2, 6, 7))
    assert failing == ["K"]
    assert any(
        "analytic = rot180(numerical)" in h and "eq. (14)" in h for h in _hint_lines(message)
    )


def test_hint_kernel_not_flipped_with_sampled_coverage() -> None:
    message, _ = _failure(_conv(KernelNotFlipped, 3, 4, (3, 3)), _x(2, 3, 7, 7), coverage="sampled")
    assert any("rot180" in h for h in _hint_lines(message))


def test_hint_swapped_channel_indices_eq18() -> None:
    message, failing = _failure(_conv(ChannelsSwapped, 3, 3, (2, 2)), _x(2, 3, 5, 5))
    assert failing == ["K"]
    assert any("analytic[i, j] = numerical[j, i]" in h for h in _hint_lines(message))


def test_hint_spatially_transposed_kernel() -> None:
    message, failing = _failure(_conv(KernelTransposed, 2, 3, 3), _x(2, 2, 6, 6))
    assert failing == ["K"]
    assert any("last two axes swapped" in h for h in _hint_lines(message))


def test_hint_dense_weight_gradient_transposed_eq5() -> None:
    message, failing = _failure(DenseWeightTransposed(4, 4, seed=1), _x(3, 4))
    assert failing == ["W"]
    assert any("analytic = numerical transposed" in h for h in _hint_lines(message))


def test_hint_mean_pool_up_sampling_without_1_over_n2() -> None:
    message, failing = _failure(MeanPoolUpWithoutFactor(3, 2, kind="mean", seed=1), _x(2, 3, 6, 6))
    assert failing == ["x"]
    hints = _hint_lines(message)
    assert any("analytic = 4 x numerical" in h and "1/n^2" in h for h in hints), hints


def test_hint_batch_mean_vs_sum_reports_the_factor() -> None:
    message, failing = _failure(BatchMeanWeights(5, 4, seed=1), _x(3, 5))
    assert failing == ["W"]
    hints = _hint_lines(message)
    assert any("(= 1/3)" in h and "batch size N" in h for h in hints), hints


def test_hint_sign_flip() -> None:
    message, failing = _failure(SignFlippedBias(5, 4, seed=1), _x(3, 5))
    assert failing == ["b"]
    assert any("analytic = -numerical" in h for h in _hint_lines(message))


def test_hint_all_zero_analytic_gradient() -> None:
    message, failing = _failure(WeightGradientNeverWritten(5, 4, seed=1), _x(3, 5))
    assert failing == ["W"]
    assert any("exactly zero everywhere" in h for h in _hint_lines(message))


def test_hint_errors_only_on_the_border_means_padding() -> None:
    message, failing = _failure(_conv(PaddingBorderLost, 2, 2, 3, padding=1), _x(2, 2, 6, 7))
    assert failing == ["x"]
    assert any("border" in h and "padding" in h for h in _hint_lines(message))


def test_hint_errors_only_where_the_stride_skips() -> None:
    message, failing = _failure(_conv(StrideByRepetition, 2, 3, 1, stride=2), _x(2, 2, 7, 6))
    assert failing == ["x"]
    hints = _hint_lines(message)
    assert any("a stride of (2, 2) skips" in h for h in hints), hints


def test_hint_one_sample_only() -> None:
    message, failing = _failure(LastSampleDropped(5, 4, seed=1), _x(3, 5))
    assert failing == ["x"]
    assert any("mismatches only in sample 2" in h for h in _hint_lines(message))


def test_hint_only_the_first_sample_is_right() -> None:
    message, failing = _failure(_conv(FirstSampleOnly, 2, 2, 2), _x(3, 2, 5, 5))
    assert failing == ["x"]
    assert any("only sample 0 (axis 0) is right" in h for h in _hint_lines(message))


def test_hint_one_channel_only() -> None:
    message, failing = _failure(_conv(LastChannelDropped, 3, 2, 2), _x(2, 3, 5, 5))
    assert failing == ["x"]
    assert any("mismatches only in channel 2" in h for h in _hint_lines(message))


def test_hint_padding_cropped_at_the_wrong_offset_is_a_shift() -> None:
    message, failing = _failure(_conv(PaddingCroppedAtZero, 2, 2, 3, padding=1), _x(2, 2, 7, 8))
    assert failing == ["x"]
    hints = _hint_lines(message)
    assert any("shifted by (1, 1)" in h and "[p:p+H]" in h for h in hints), hints


def test_hint_beta_dropped_is_one_factor_per_channel_eq10() -> None:
    message, failing = _failure(BetaDropped(3, 2, kind="sum", seed=1), _x(2, 3, 6, 6))
    assert failing == ["x"]
    hints = _hint_lines(message)
    assert any("one factor per channel" in h and "beta" in h for h in hints), hints


def test_hint_relu_mask_forgotten_is_a_missing_mask() -> None:
    message, failing = _failure(ReluMaskForgotten("relu"), _x(3, 4, 5))
    assert failing == ["x"]
    hints = _hint_lines(message)
    assert any("numerical gradient is exactly 0" in h and "mask" in h for h in hints), hints


def test_hint_max_pool_up_spread_over_the_block() -> None:
    x = RNG.permutation(2 * 2 * 6 * 6).reshape(2, 2, 6, 6) * 0.1  # no ties
    message, failing = _failure(MaxUpAsKron(2), x)
    assert failing == ["x"]
    hints = _hint_lines(message)
    assert any("arg-max" in h for h in hints), hints


# --- diagnose on hand-built arrays: the cases a check does not produce by itself ---------------
def _tensor(name, analytic, numerical, checked=None, rtol=1e-8):
    checked = np.ones(analytic.shape, bool) if checked is None else checked
    numerical = np.where(checked, numerical, np.nan)
    tol = np.where(checked, rtol * np.abs(numerical) + 1e-12, np.nan)
    with np.errstate(invalid="ignore"):
        mismatch = checked & (np.abs(analytic - numerical) > tol)
    return SimpleNamespace(
        name=name,
        shape=analytic.shape,
        analytic=analytic,
        numerical=numerical,
        checked=checked,
        mismatch=mismatch,
        tol=tol,
    )


def test_diagnose_uses_only_the_checked_elements() -> None:
    n = _x(3, 2, 4, 4)
    a = n[..., ::-1, ::-1].copy()
    checked = RNG.random(n.shape) < 0.4
    hints = diagnose(_tensor("K", a, n, checked))
    assert hints and "rot180" in hints[0]


def test_diagnose_says_nothing_about_unstructured_errors() -> None:
    n = _x(2, 3, 5, 5)
    a = n + RNG.standard_normal(n.shape)
    assert diagnose(_tensor("x", a, n)) == []


def test_diagnose_says_nothing_without_a_mismatch() -> None:
    n = _x(2, 3)
    assert diagnose(_tensor("W", n.copy(), n)) == []


def test_diagnose_rot180_of_a_symmetric_gradient_is_not_a_hint() -> None:
    base = _x(2, 2, 3, 3)
    n = base + base[..., ::-1, ::-1]  # rot180-symmetric: flipping changes nothing
    a = n * 1.0
    a[0, 0, 1, 1] += 1.0
    hints = diagnose(_tensor("K", a, n))
    assert not any("rot180" in h for h in hints)


def test_hint_through_check_vjp_names_the_kernel_input() -> None:
    from checks import check_vjp
    from cnn_ref.functional.conv import conv2d_forward

    b = np.zeros(3)

    def f(x, K):
        return conv2d_forward(x, K, b)

    def vjp(dy, x, K):
        dx, dK, _ = conv2d_backward(dy, x, K)
        return dx, dK[..., ::-1, ::-1]  # eq. (14) without the outer rot180

    with pytest.raises(GradientMismatchError) as info:
        check_vjp(f, vjp, _x(2, 2, 5, 6), _x(3, 2, 2, 3))
    hints = _hint_lines(str(info.value))
    assert any(
        h.startswith("Hint: inputs[1]: analytic = rot180") and "eq. (14)" in h for h in hints
    ), hints


# --- region ratio, one-sample weights, unread elements, neutral axis words ---------------------
class LeakyReLU:
    """y = x for x > 0, alpha * x otherwise; ``neg_slope`` is the slope backward uses there."""

    def __init__(self, alpha: float = 0.1, neg_slope: float | None = None) -> None:
        self.alpha = alpha
        self.neg_slope = alpha if neg_slope is None else neg_slope
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        return np.where(x.real > 0, x, self.alpha * x)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy * np.where(self.x.real > 0, 1.0, self.neg_slope)


class ScaledLeakyReLU(LeakyReLU):
    """Both slopes doubled in backward: a global factor 2, not a region."""

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return 2.0 * super().backward(dy)


class TinyDense:
    """y = x W^T + b with W (out, in); ``bug`` plants a batch mistake in dW."""

    def __init__(self, n_in: int, n_out: int, bug: str | None = None, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.params = {"W": rng.standard_normal((n_out, n_in)), "b": rng.standard_normal(n_out)}
        self.grads: dict[str, np.ndarray] = {}
        self.bug = bug

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        return x @ self.params["W"].T + self.params["b"]

    def backward(self, dy: np.ndarray) -> np.ndarray:
        x = self.x
        if self.bug == "sample0":  # dW from the first sample only
            dW = np.outer(dy[0], x[0])
        elif self.bug == "overwrite":  # the batch loop overwrites instead of accumulating
            for n in range(x.shape[0]):
                dW = np.outer(dy[n], x[n])
        else:
            dW = dy.T @ x
        self.grads = {"W": dW, "b": dy.sum(axis=0)}
        return dy @ self.params["W"]


class LastColumnUnread(TinyDense):
    """Forward reads W[:, :-1] and x[:, :-1] only (a slice one short); backward is the full
    dense gradient, so W[:, -1] and x[:, -1] get a gradient forward never earns."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        return x[:, :-1] @ self.params["W"][:, :-1].T + self.params["b"]


class LastStepDropped:
    """y = tanh(x) on (N, T, F) sequences; backward skips the last time step."""

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.y = np.tanh(x)
        return self.y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dx = dy * (1.0 - self.y**2)
        dx[:, -1] = 0.0
        return dx


def _away_from_zero(*shape: int) -> np.ndarray:
    x = _x(*shape)
    return np.where(np.abs(x) < 0.1, x + np.sign(x) * 0.1 + 0.05 * (x == 0), x)


_REGION = "mismatched elements, analytic = numerical at the other"
_RANK1 = "outer product (rank 1)"
_UNREAD = "numerical gradient is exactly 0"


def test_correct_tiny_layers_pass() -> None:
    assert check_layer(LeakyReLU(), _away_from_zero(3, 4, 5)).ok
    assert check_layer(TinyDense(5, 4), _x(3, 5)).ok


def test_hint_leaky_relu_slope_wrong_on_the_negative_side_is_a_region_ratio() -> None:
    x = _away_from_zero(3, 4, 5)
    message, failing = _failure(LeakyReLU(0.1, neg_slope=0.2), x)
    assert failing == ["x"]
    hints = _hint_lines(message)
    k = int((x < 0).sum())
    assert any(f"analytic = 2 x numerical at the {k} {_REGION}" in h for h in hints), hints
    assert any("leaky-ReLU" in h for h in hints), hints
    # not the global factor's hint, and not "where x < 0" (the report cannot know x)
    assert not any("x numerical --" in h for h in hints), hints
    assert not any("x < 0" in h for h in hints), hints
    # a random sign pattern on a small map is no stride grid
    assert not any("stride" in h for h in hints), hints


def test_hint_leaky_relu_slope_forgotten_reports_one_over_alpha() -> None:
    message, _ = _failure(LeakyReLU(0.25, neg_slope=1.0), _away_from_zero(2, 3, 4))
    assert any("analytic = 4 x numerical at the" in h for h in _hint_lines(message))


def test_a_global_factor_is_not_a_region_ratio() -> None:
    message, _ = _failure(ScaledLeakyReLU(), _away_from_zero(3, 4, 5))
    hints = _hint_lines(message)
    assert any("analytic = 2 x numerical --" in h for h in hints), hints
    assert not any(_REGION in h for h in hints), hints
    message, _ = _failure(BatchMeanWeights(5, 4, seed=1), _x(3, 5))
    assert not any(_REGION in h or _RANK1 in h for h in _hint_lines(message))


@pytest.mark.parametrize("bug", ["sample0", "overwrite"])
def test_hint_weight_gradient_from_one_sample_of_the_batch(bug: str) -> None:
    message, failing = _failure(TinyDense(5, 4, bug=bug), _x(3, 5))
    assert failing == ["W"]
    hints = _hint_lines(message)
    assert any(_RANK1 in h and "one sample of the batch" in h for h in hints), hints
    assert not any(_REGION in h or _UNREAD in h for h in hints), hints


def test_a_rank_one_true_gradient_gets_no_one_sample_hint() -> None:
    # batch of one: the true dW is an outer product too; a wrong factor is not "one sample"
    n = np.outer(_x(4), _x(5))
    hints = diagnose(_tensor("W", 3.0 * n, n))
    assert not any(_RANK1 in h for h in hints), hints
    # an unstructured error on a matrix is not rank 1
    m = _x(4, 5)
    assert not any(_RANK1 in h for h in diagnose(_tensor("W", m + _x(4, 5), m)))


def test_hint_parameter_elements_forward_does_not_read() -> None:
    message, failing = _failure(LastColumnUnread(5, 4), _x(3, 5))
    assert set(failing) == {"x", "W"}
    hints = _hint_lines(message)
    for name in ("x", "W"):
        assert any(
            h.startswith(f"Hint: {name}: the {_UNREAD} at the") and "does not read" in h
            for h in hints
        ), hints
    assert not any(_REGION in h or _RANK1 in h for h in hints), hints
    # one wrong edge column is not padding (padding is on both sides), nor a stride
    assert not any("padding" in h or "stride" in h for h in hints), hints


def test_hint_an_input_the_function_never_reads() -> None:
    from checks import check_vjp

    def f(x, w):
        return np.tanh(x)

    def vjp(dy, x, w):
        return dy * (1.0 - np.tanh(x) ** 2), dy.sum(axis=0)

    with pytest.raises(GradientMismatchError) as info:
        check_vjp(f, vjp, _x(3, 4), _x(4))
    hints = _hint_lines(str(info.value))
    assert any(
        h.startswith(f"Hint: inputs[1]: the {_UNREAD} at every checked element")
        and "does not read" in h
        for h in hints
    ), hints


def test_unread_hint_needs_exact_zeros() -> None:
    # numerical tiny but not exactly 0: the (older) approximate support hint, not "unread"
    n = _x(2, 3, 4)
    n[0] = 1e-14
    a = n.copy()
    a[0] = 1.0
    hints = diagnose(_tensor("x", a, n, rtol=1e-6))
    assert any("numerical gradient is zero" in h for h in hints), hints
    assert not any(_UNREAD in h for h in hints), hints


def test_hint_axis_words_stay_neutral_for_a_time_axis() -> None:
    message, failing = _failure(LastStepDropped(), _x(2, 6, 3))
    assert failing == ["x"]
    hints = _hint_lines(message)
    assert any("mismatches only in index 5 of axis 1" in h for h in hints), hints
    assert not any("feature" in h for h in hints), hints
    assert not any("padding" in h or "stride" in h for h in hints), hints


def test_diagnose_region_ratio_and_global_ratio_are_exclusive() -> None:
    n = _x(2, 3, 4)
    region = RNG.random(n.shape) < 0.4
    partial = diagnose(_tensor("x", np.where(region, 0.5 * n, n), n))
    assert any(
        f"analytic = 0.5 (= 1/2) x numerical at the {int(region.sum())} " in h for h in partial
    )
    assert not any("x numerical --" in h for h in partial), partial
    overall = diagnose(_tensor("x", 0.5 * n, n))
    assert any("analytic = 0.5 (= 1/2) x numerical --" in h for h in overall), overall
    assert not any(_REGION in h for h in overall), overall
    # no common ratio at the mismatches: no region hint
    noisy = np.where(region, n * RNG.uniform(1.5, 3.0, n.shape), n)
    assert not any(_REGION in h for h in diagnose(_tensor("x", noisy, n)))
