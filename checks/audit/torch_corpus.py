"""The torch corpus: custom autograd Functions and modules, right and wrong, for the torch door.

Each :class:`TorchCase` builds (:func:`TorchCase.make`, in float64 or float32) a function of
tensors or an ``nn.Module`` from :mod:`checks.audit.torch_functions`, its arguments, and a
*reference*: the same forward written in plain torch operations, whose autograd gradient is
the ground truth (``property_tests/test_torch_corpus.py`` asserts that every buggy backward
really differs from it and every correct one agrees within rounding, without the checker).
:func:`run_torch_case` checks a case through :func:`checks.torch.check_function` /
:func:`checks.torch.check_module`; the self-test (``python -m checks selftest``) runs every
case in float64 when torch is installed.

Rows with ``order=2`` check the double backward (what ``gradgradcheck`` checks): a backward
written in torch operations passes; one computed outside autograd fails, with the message of
:mod:`checks.doors.torch_double`.

Needs PyTorch: import this module only when torch is installed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from checks.audit.torch_functions import (
    ONE_DW,
    ONE_DX,
    BatchMomentsFn,
    Conv2dFn,
    NormFn,
    ReluMaxPoolFn,
    SmallCNN,
    SoftmaxCrossEntropyFn,
    SoftplusFn,
    SoftplusOnceFn,
)
from checks.doors.torch_double import NOT_DIFFERENTIABLE
from checks.doors.torch_front import check_function, check_module
from checks.report.errors import GradcheckError, GradientMismatchError, LayerContractError

__all__ = ["TORCH_CASES", "Built", "TorchCase", "run_torch_case"]


@dataclass(frozen=True)
class Built:
    """What a case checks: ``target(*inputs)`` (a function, or a module of ``inputs[0]``),
    and ``reference(*inputs)``, the same forward in plain torch operations."""

    target: Any
    inputs: tuple[Any, ...]
    reference: Callable[..., Any]

    @property
    def is_module(self) -> bool:
        return isinstance(self.target, torch.nn.Module)


@dataclass(frozen=True)
class TorchCase:
    """One entry of the torch corpus.

    Attributes
    ----------
    name, mistake : str
        The case, and the mistake in words (or what makes a correct case awkward).
    build : callable
        ``build(dtype) -> Built``, fresh each call.
    expected : type or None
        The exception class the check must raise; None for a correct case.
    tensor : str or None
        A tensor that must be among the failing ones.
    located : tuple or None
        For a single-element bug: the planted index, which must be the failing tensor's
        ``worst_index`` and its only mismatch.
    order : int
        1 (the backward) or 2 (the double backward).
    message : str or None
        A substring the failure message must contain.
    options : dict
        More keyword arguments for the check.
    """

    name: str
    mistake: str
    build: Callable[[torch.dtype], Built]
    expected: type[GradcheckError] | None = None
    tensor: str | None = None
    located: tuple[int, ...] | None = None
    order: int = 1
    message: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def make(self, dtype: torch.dtype = torch.float64) -> Built:
        return self.build(dtype)


def run_torch_case(case: TorchCase, dtype: torch.dtype = torch.float64, **options: Any) -> Any:
    """Check one case (raises as the check does; returns its report when it passes)."""
    built = case.make(dtype)
    kw = {**case.options, **options, "order": case.order}
    if built.is_module:
        return check_module(built.target, *built.inputs, **kw)
    return check_function(built.target, *built.inputs, **kw)


def judge(case: TorchCase, err: GradcheckError | None) -> tuple[bool, str]:
    """Whether the check's outcome (``err`` None: it passed) is the case's expectation, and
    why not."""
    if case.expected is None:
        return err is None, "" if err is None else f"false alarm: {type(err).__name__}"
    if err is None:
        return False, "missed"
    if not isinstance(err, case.expected):
        return False, f"{type(err).__name__}, expected {case.expected.__name__}"
    if case.message is not None and case.message not in str(err):
        return False, f"the message lacks {case.message!r}"
    report = err.report
    failing = [t for t in (report.tensors if report is not None else []) if not t.ok]
    if case.tensor is not None and not failing:  # a broken contract: named in the message
        named = case.tensor in str(err)
        return named, "" if named else f"the message does not name {case.tensor}"
    if case.tensor is not None and case.tensor not in [t.name for t in failing]:
        return False, f"{case.tensor} not among the failing tensors {[t.name for t in failing]}"
    if case.located is not None:
        t = next(t for t in failing if t.name == case.tensor)
        if t.worst_index != case.located or t.n_mismatched != 1:
            return False, f"located at {t.worst_index} ({t.n_mismatched} wrong), planted at " + str(
                case.located
            )
    return True, ""


# --------------------------------------------------------------------------- the functions


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _leaf(t: Any, dtype: torch.dtype) -> Any:
    return t.to(dtype).requires_grad_(True)


def _conv(bug: str = "", c_out: int = 4) -> Callable[[torch.dtype], Built]:
    def conv2d(x: Any, weight: Any, bias: Any) -> Any:
        return Conv2dFn.apply(x, weight, bias, bug, None)

    def build(dtype: torch.dtype) -> Built:
        g = _gen(0)
        x = torch.randn(2, 3, 5, 5, generator=g, dtype=torch.float64)
        w = torch.randn(c_out, 3, 3, 3, generator=g, dtype=torch.float64) * 0.4
        b = torch.randn(c_out, generator=g, dtype=torch.float64) * 0.1
        return Built(conv2d, tuple(_leaf(t, dtype) for t in (x, w, b)), _conv_reference)

    return build


def _conv_reference(x: Any, weight: Any, bias: Any) -> Any:
    return F.conv2d(x, weight, bias, padding=1)


def _norm(dim: int, bug: str = "") -> Callable[[torch.dtype], Built]:
    def norm(x: Any, weight: Any, bias: Any) -> Any:
        return NormFn.apply(x, weight, bias, dim, bug)

    norm.__name__ = "layer_norm" if dim == -1 else "batch_norm"

    def reference(x: Any, weight: Any, bias: Any) -> Any:
        mu = x.mean(dim, keepdim=True)
        var = ((x - mu) ** 2).mean(dim, keepdim=True)
        return (x - mu) / torch.sqrt(var + NormFn.EPS) * weight + bias

    def build(dtype: torch.dtype) -> Built:
        g = _gen(1)
        shape = (4, 8) if dim == -1 else (6, 4)  # var ~ 1: eps / (2 var) ~ 5e-6
        x = torch.randn(*shape, generator=g, dtype=torch.float64) + 0.3
        w = 1 + 0.2 * torch.randn(shape[-1], generator=g, dtype=torch.float64)
        b = 0.1 * torch.randn(shape[-1], generator=g, dtype=torch.float64)
        return Built(norm, tuple(_leaf(t, dtype) for t in (x, w, b)), reference)

    return build


def _softmax_ce(bug: str = "") -> Callable[[torch.dtype], Built]:
    def softmax_cross_entropy(logits: Any, target: Any) -> Any:
        return SoftmaxCrossEntropyFn.apply(logits, target, bug)

    def reference(logits: Any, target: Any) -> Any:
        loss = F.cross_entropy(logits, target)
        if bug == "probs_non_differentiable":  # the outputs the Function returns
            return loss, torch.softmax(logits, dim=1)
        return loss

    def build(dtype: torch.dtype) -> Built:
        logits = torch.randn(3, 5, generator=_gen(2), dtype=torch.float64) * 1.5
        target = torch.tensor([0, 3, 4])
        return Built(softmax_cross_entropy, (_leaf(logits, dtype), target), reference)

    return build


def _tied_input(dtype: torch.dtype) -> Any:
    """(2, 2, 4, 4) on a grid of 0.5: exact zeros (ReLU's kink) and ties of positive maxima
    (window [0, 0, 0, 0] holds 1.5 twice, window [1, 1, 1, 1] holds 1.0 three times)."""
    x = torch.randint(-3, 4, (2, 2, 4, 4), generator=_gen(3)).to(torch.float64) / 2
    x[0, 0, :2, :2] = torch.tensor([[1.5, 1.5], [0.5, -1.0]])
    x[1, 1, 2:, 2:] = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    return _leaf(x, dtype)


def _relu_maxpool(bug: str = "") -> Callable[[torch.dtype], Built]:
    def relu_maxpool(x: Any) -> Any:
        return ReluMaxPoolFn.apply(x, bug)

    def reference(x: Any) -> Any:
        return F.max_pool2d(torch.relu(x), 2)

    return lambda dtype: Built(relu_maxpool, (_tied_input(dtype),), reference)


def _moments(bug: str = "") -> Callable[[torch.dtype], Built]:
    def batch_moments(x: Any) -> Any:
        return BatchMomentsFn.apply(x, bug)

    def reference(x: Any) -> Any:
        return x.mean(0), ((x - x.mean(0)) ** 2).mean(0)

    def build(dtype: torch.dtype) -> Built:
        x = torch.randn(5, 3, generator=_gen(4), dtype=torch.float64)
        return Built(batch_moments, (_leaf(x, dtype),), reference)

    return build


def _softplus(bug: str = "") -> Callable[[torch.dtype], Built]:
    def softplus(x: Any) -> Any:
        if bug == "once_differentiable":
            return SoftplusOnceFn.apply(x)
        return SoftplusFn.apply(x, bug)

    def build(dtype: torch.dtype) -> Built:
        x = torch.randn(3, 4, generator=_gen(5), dtype=torch.float64)
        return Built(softplus, (_leaf(x, dtype),), F.softplus)

    return build


def _cnn(bug: str = "") -> Callable[[torch.dtype], Built]:
    def build(dtype: torch.dtype) -> Built:
        net = SmallCNN(bug).to(dtype)
        x = torch.randn(2, 3, 6, 6, generator=_gen(6), dtype=torch.float64).to(dtype)
        return Built(net, (x,), net.reference)

    return build


# --------------------------------------------------------------------------- the corpus

MISMATCH, CONTRACT = GradientMismatchError, LayerContractError
_REFUSED = f"The backward of x in softplus is not differentiable: {NOT_DIFFERENTIABLE}"

#: Every torch case: correct ones (expected None) and buggy ones.
TORCH_CASES: tuple[TorchCase, ...] = (
    TorchCase("torch_conv2d", "conv2d via torch.nn.grad.conv2d_input/conv2d_weight", _conv()),
    TorchCase("torch_conv2d_dx_kernel_not_flipped", "dx = xcorr(dy, K^T): kernel not flipped",
              _conv("dx_kernel_not_flipped"), MISMATCH, "x"),
    TorchCase("torch_conv2d_dx_kernel_not_transposed", "dx = xcorr(dy, rot180(K)): K_ij for K_ji",
              _conv("dx_kernel_not_transposed", c_out=3), MISMATCH, "x"),
    TorchCase("torch_conv2d_dx_one_element", "1 % in one element of dx",
              _conv("dx_one_element"), MISMATCH, "x", ONE_DX, message="a single element"),
    TorchCase("torch_layer_norm", "layer norm, eps = 1e-5 under the sqrt", _norm(-1)),
    TorchCase("torch_layer_norm_eps_forgotten", "backward's 1/sqrt(var) without the eps "
              "(relative error ~1e-5)", _norm(-1, "eps_forgotten"), MISMATCH, "x"),
    TorchCase("torch_layer_norm_mean_term_dropped", "dx without the -mean(dxhat) term",
              _norm(-1, "mean_term_dropped"), MISMATCH, "x"),
    TorchCase("torch_softmax_cross_entropy", "mean softmax cross-entropy", _softmax_ce()),
    TorchCase("torch_softmax_ce_batch_mean_forgotten", "dlogits = p - onehot, without 1/N",
              _softmax_ce("batch_mean_forgotten"), MISMATCH, "logits", message="batch size N"),
    TorchCase("torch_softmax_ce_probs_non_differentiable", "probabilities returned and marked "
              "non-differentiable, though they move with the logits",
              _softmax_ce("probs_non_differentiable"), MISMATCH, "logits"),
    TorchCase("torch_relu_maxpool_ties", "max-pool after ReLU: exact zeros and tied maxima",
              _relu_maxpool()),
    TorchCase("torch_relu_maxpool_dy_to_every_tie", "dy sent to every tied maximum",
              _relu_maxpool("dy_to_every_tied_max"), MISMATCH, "x",
              message="dy sent to every tied maximum"),
    TorchCase("torch_batch_norm", "batch norm (training mode): samples not independent",
              _norm(0)),
    TorchCase("torch_batch_norm_stats_constant", "dx as if the batch mean and variance were "
              "constants", _norm(0, "stats_constant"), MISMATCH, "x"),
    TorchCase("torch_batch_moments", "mean and variance over the batch: two outputs",
              _moments()),
    TorchCase("torch_batch_moments_var_unbiased", "variance's gradient 2 (x - mean) / (N - 1), "
              "forward divides by N", _moments("var_unbiased_in_backward"), MISMATCH, "x"),
    TorchCase("torch_small_cnn", "nn.Module: custom conv Function, ReLU, max-pool, linear",
              _cnn()),
    TorchCase("torch_small_cnn_dw_one_element", "1 % in one element of the custom conv's dW",
              _cnn("dw_one_element"), MISMATCH, "conv.weight", ONE_DW,
              message="a single element"),
    TorchCase("torch_small_cnn_dw_accumulated", "dW += into a buffer kept across backward calls",
              _cnn("dw_accumulated"), CONTRACT, "conv.weight", message="+= without a reset"),
    TorchCase("torch_softplus_detached_order1", "order=1 of a backward with a detach: the first "
              "derivative is right", _softplus("sigmoid_detached")),
    TorchCase("torch_layer_norm_order2", "double backward of a backward in torch operations",
              _norm(-1), order=2),
    TorchCase("torch_softplus_order2", "double backward of dy * sigmoid(x)", _softplus(),
              order=2),
    TorchCase("torch_softplus_detached_order2", "dy * sigmoid(x).detach(): double backward "
              "misses d/dx", _softplus("sigmoid_detached"), MISMATCH, "x", order=2,
              message="no autograd path back to it"),
    TorchCase("torch_softplus_no_grad_order2", "backward under torch.no_grad()",
              _softplus("no_grad"), CONTRACT, order=2, message=_REFUSED),
    TorchCase("torch_softplus_numpy_order2", "backward through dy.numpy()",
              _softplus("numpy"), CONTRACT, order=2, message=_REFUSED),
    TorchCase("torch_softplus_once_differentiable_order2", "backward @once_differentiable",
              _softplus("once_differentiable"), CONTRACT, order=2, message=_REFUSED),
)  # fmt: skip
