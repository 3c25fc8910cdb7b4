"""checks.torch at order=2: the double backward (what gradgradcheck checks), ground truth from
construction (a planted element in the derivative of backward only) and from autograd of the
plain forward, never from our checker."""

from __future__ import annotations

import pytest

from checks import GradientMismatchError, LayerContractError

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")
import checks.torch as ct  # noqa: E402
from checks.audit.torch_functions import BatchMomentsFn  # noqa: E402

PLANTED = (1, 2)


class Sigmoid(torch.autograd.Function):
    """sigmoid, whose backward scales one element of dx by ``1 + bug``."""

    @staticmethod
    def forward(ctx, x, bug=0.0):
        s = torch.sigmoid(x)
        ctx.save_for_backward(s)
        ctx.bug = bug
        return s

    @staticmethod
    def backward(ctx, g):
        (s,) = ctx.saved_tensors
        scale = torch.ones_like(s)
        scale[PLANTED] += ctx.bug
        return g * s * (1 - s) * scale, None


class Softplus(torch.autograd.Function):
    """softplus, whose (right) backward dy * sigmoid(x) goes through :class:`Sigmoid`: the
    double backward inherits Sigmoid's bug, the first derivative does not."""

    @staticmethod
    def forward(ctx, x, bug=0.0):
        ctx.save_for_backward(x)
        ctx.bug = bug
        return torch.nn.functional.softplus(x)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return dy * Sigmoid.apply(x, ctx.bug), None


def softplus(x):
    return Softplus.apply(x)


def softplus_bad(x):
    return Softplus.apply(x, 0.01)


def _x(dtype=torch.float64):
    return torch.randn(
        3, 4, generator=torch.Generator().manual_seed(0), dtype=dtype
    ).requires_grad_()


def _double_backward(fn, x, dy, v):
    (g,) = torch.autograd.grad(fn(x), x, dy, create_graph=True)
    return torch.autograd.grad(g, (x, dy), v)


def test_ground_truth_the_planted_bug_is_in_the_double_backward_only():
    x = _x()
    dy, v = torch.randn(3, 4, dtype=torch.float64, requires_grad=True), torch.randn(3, 4).double()
    (g_bad,) = torch.autograd.grad(softplus_bad(x), x, dy)
    (g_ref,) = torch.autograd.grad(torch.nn.functional.softplus(x), x, dy)
    assert torch.allclose(g_bad, g_ref, rtol=1e-14, atol=0)
    bad = _double_backward(softplus_bad, x, dy, v)[0]
    ref = _double_backward(torch.nn.functional.softplus, x, dy, v)[0]
    differ = torch.nonzero((bad - ref).abs() > 1e-12 * ref.abs().max()).tolist()
    assert differ == [list(PLANTED)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_differentiable_backward_passes_at_order_2_with_dy_checked_too(dtype):
    rep = ct.check_function(softplus, _x(dtype), order=2)
    assert [t.name for t in rep.tensors] == ["x", "dy"]
    assert all(t.n_checked == t.n_total for t in rep.tensors)


def test_a_wrong_double_backward_is_caught_and_located_while_order_1_passes():
    assert ct.check_function(softplus_bad, _x()).ok
    with pytest.raises(GradientMismatchError) as ei:
        ct.check_function(softplus_bad, _x(), order=2)
    tx = ei.value.report.tensor("x")
    assert tx.worst_index == PLANTED and tx.n_mismatched == 1
    assert ei.value.report.tensor("dy").ok  # d g / d dy is the first derivative: right


def test_a_module_at_order_2_names_its_parameters_and_dy():
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Tanh()).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    rep = ct.check_module(net, x, order=2)
    assert [t.name for t in rep.tensors] == ["x", "0.weight", "0.bias", "dy"]


def test_several_outputs_take_one_dy_each():
    def batch_moments(x):
        return BatchMomentsFn.apply(x)

    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    rep = ct.check_function(batch_moments, x, order=2)
    assert [t.name for t in rep.tensors] == ["x", "dy[0]", "dy[1]"]


def test_an_argument_called_dy_makes_the_cotangent_grad_output():
    def scale(x, dy):
        return x * dy

    a, b = (torch.randn(3, dtype=torch.float64, requires_grad=True) for _ in range(2))
    rep = ct.check_function(scale, a, b, order=2)
    assert [t.name for t in rep.tensors] == ["x", "dy", "grad_output"]


def test_grad_outputs_is_the_point_and_is_validated():
    x = _x()
    rep = ct.check_function(softplus, x, order=2, grad_outputs=torch.ones(3, 4).double())
    assert rep.ok
    with pytest.raises(
        ValueError, match=r"grad_outputs\[0\] has shape \(4,\), output has \(3, 4\)"
    ):
        ct.check_function(softplus, x, order=2, grad_outputs=torch.ones(4))
    with pytest.raises(ValueError, match="grad_outputs has 2 entries"):
        ct.check_function(softplus, x, order=2, grad_outputs=[torch.ones(3, 4)] * 2)


def test_order_other_than_1_or_2_and_no_differentiable_output_are_errors():
    with pytest.raises(ValueError, match="order must be 1 or 2, got 3"):
        ct.check_function(softplus, _x(), order=3)
    with pytest.raises(LayerContractError, match="no output of detached requires grad"):

        def detached(x):
            return x.detach() * 2

        ct.check_function(detached, _x(), order=2)


def test_the_caller_tensors_are_untouched_at_order_2():
    x = _x()
    before = x.detach().clone()
    ct.check_function(softplus, x, order=2)
    assert torch.equal(x.detach(), before) and x.grad is None


class Affine(torch.autograd.Function):
    """The setup_context style: forward(x, weight) without ctx."""

    @staticmethod
    def forward(x, weight):
        return x * weight

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        return g * w, (g * x).sum(0)


def test_a_function_apply_is_named_by_its_class_and_forward_arguments_at_both_orders():
    x = _x()
    w = torch.randn(4, dtype=torch.float64, requires_grad=True)
    for order in (1, 2):
        rep = ct.check_function(Softplus.apply, x, order=order)
        assert rep.layer_name == "Softplus" and rep.tensors[0].name == "x"
        rep = ct.check_function(Affine.apply, x, w, order=order)
        assert [t.name for t in rep.tensors][:2] == ["x", "weight"]
