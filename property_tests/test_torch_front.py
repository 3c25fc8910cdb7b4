"""checks.torch (issue 13, a first cut): custom autograd Functions and modules through the
same checker, ground truth from construction (a planted element) and from torch's own
conv2d gradients (torch.nn.grad), never from our checker."""

from __future__ import annotations

import numpy as np
import pytest

from checks import GradientMismatchError, LayerContractError

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")
import checks.torch as ct  # noqa: E402


class Conv(torch.autograd.Function):
    """conv2d (padding 1) with a hand-written backward from torch.nn.grad; ``bug`` scales
    one element of dx."""

    @staticmethod
    def forward(ctx, x, w, b, bug=0.0):
        ctx.save_for_backward(x, w)
        ctx.bug = bug
        return torch.nn.functional.conv2d(x, w, b, padding=1)

    @staticmethod
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        gx = torch.nn.grad.conv2d_input(x.shape, w, gy, padding=1)
        gw = torch.nn.grad.conv2d_weight(x, w.shape, gy, padding=1)
        if ctx.bug:
            gx = gx.clone()
            gx[1, 2, 3, 4] *= 1 + ctx.bug
        return gx, gw, gy.sum((0, 2, 3)), None


def _conv(x, w, b):
    return Conv.apply(x, w, b)


def _conv_bad(x, w, b):
    return Conv.apply(x, w, b, 1e-3)


def _inputs(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 10, 10, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(5, 3, 3, 3, generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(5, generator=g, dtype=dtype, requires_grad=True)
    return x, w, b


def test_a_correct_function_passes_with_its_arguments_names():
    rep = ct.check_function(_conv, *_inputs(), coverage="full")
    assert [t.name for t in rep.tensors] == ["x", "w", "b"]
    assert all(t.n_checked == t.n_total for t in rep.tensors)


def test_a_planted_element_of_dx_is_caught_and_named():
    """0.1 % in one element of dx: caught, and named with the argument's name."""
    with pytest.raises(GradientMismatchError) as ei:
        ct.check_function(_conv_bad, *_inputs())
    tx = ei.value.report.tensor("x")
    assert tx.worst_index == (1, 2, 3, 4) and tx.n_mismatched == 1
    assert "x[1, 2, 3, 4]" in str(ei.value)


def test_an_output_backward_ignores_is_checked_too():
    """A second output that moves with x but gets no gradient in backward (gradcheck skips
    outputs that do not require grad)."""

    class TwoOut(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            y2 = 2 * x
            ctx.mark_non_differentiable(y2)
            return torch.tanh(x), y2

        @staticmethod
        def backward(ctx, g1, g2):
            (x,) = ctx.saved_tensors
            return g1 * (1 - torch.tanh(x) ** 2)

    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    with pytest.raises(GradientMismatchError):
        ct.check_function(TwoOut.apply, x)


def test_a_module_is_checked_with_its_parameter_names_in_float64_and_float32():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Tanh())
    x = torch.randn(2, 3, 8, 8)
    rep32 = ct.check_module(net, x)
    assert [t.name for t in rep32.tensors] == ["x", "0.weight", "0.bias"]
    assert rep32.tensors[0].dtype == "float32"
    rep64 = ct.check_module(net.double(), x.double())
    assert rep64.ok and rep64.tensors[1].dtype == "float64"


def test_an_input_without_requires_grad_is_a_constant_and_none_is_an_error():
    x, w, b = _inputs()
    rep = ct.check_function(_conv, x, w.detach(), b.detach())
    assert [t.name for t in rep.tensors] == ["x"]
    with pytest.raises(ValueError, match="requires_grad"):
        ct.check_function(_conv, x.detach(), w.detach(), b.detach())


def test_a_function_returning_something_else_is_named():
    x = torch.randn(3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(LayerContractError, match=r"not a torch\.Tensor"):
        ct.check_function(lambda t: t.detach().numpy(), x)


def test_the_caller_tensors_are_untouched():
    x, w, b = _inputs()
    before = [t.detach().clone() for t in (x, w, b)]
    ct.check_function(_conv, x, w, b)
    for t, t0 in zip((x, w, b), before, strict=True):
        assert torch.equal(t.detach(), t0) and t.grad is None
    assert np.isfinite(before[0].numpy()).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tensors_on_a_gpu_are_evaluated_there():
    """The function sees its tensors on their own device in every call (the engine works on
    host copies; each call's tensors go back to the device)."""
    seen = set()

    def f(x, w):
        seen.add((x.device.type, w.device.type))
        return torch.tanh(x @ w)

    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(4, 3, dtype=torch.float64, device="cuda", generator=gen, requires_grad=True)
    w = torch.randn(3, 2, dtype=torch.float64, device="cuda", generator=gen, requires_grad=True)
    report = ct.check_function(f, x, w)
    assert report.ok
    assert seen == {("cuda", "cuda")}
