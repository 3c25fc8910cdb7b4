"""Custom ``torch.autograd.Function``\\ s with hand-written backward passes, right and wrong.

The torch half of the self-test corpus (:mod:`checks.audit.torch_corpus`): each Function takes
a ``bug`` argument (``""`` for the correct backward) that plants one realistic mistake, and
each has a plain forward in :mod:`checks.audit.torch_corpus` (``reference``) whose autograd
gradient is the ground truth. The correct backward passes are written in torch operations that
autograd records, so they are differentiable again (``order=2``).

Needs PyTorch: import this module only when torch is installed.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
import torch.nn.grad
from torch.autograd.function import once_differentiable

__all__ = [
    "ONE_DW",
    "ONE_DX",
    "BatchMomentsFn",
    "Conv2dFn",
    "CustomConv2d",
    "NormFn",
    "ReluMaxPoolFn",
    "SmallCNN",
    "SoftmaxCrossEntropyFn",
    "SoftplusFn",
    "SoftplusOnceFn",
]

#: the element of dx (of a (2, 3, 5, 5) input) and of dW (a (4, 3, 3, 3) kernel) that the
#: single-element bugs scale by 1.01
ONE_DX = (1, 2, 3, 1)
ONE_DW = (2, 1, 0, 2)


class Conv2dFn(torch.autograd.Function):
    """``conv2d(x, weight, bias, padding=1)`` (cross-correlation, as torch's).

    Bugs: ``dx_kernel_not_flipped`` (dx as a cross-correlation of dy with the channel-swapped
    kernel, not flipped), ``dx_kernel_not_transposed`` (flipped, but K_ij for K_ji: square
    channel counts only), ``dx_one_element`` (1 % in ``dx[ONE_DX]``), ``dw_one_element``
    (1 % in ``dW[ONE_DW]``), ``dw_accumulated`` (``acc["weight"] += dW``, returned: the
    second backward returns twice the gradient).
    """

    @staticmethod
    def forward(ctx: Any, x: Any, weight: Any, bias: Any, bug: str = "", acc: Any = None) -> Any:
        ctx.save_for_backward(x, weight)
        ctx.bug, ctx.acc = bug, acc
        return F.conv2d(x, weight, bias, padding=1)

    @staticmethod
    def backward(ctx: Any, gy: Any) -> Any:
        x, w = ctx.saved_tensors
        bug = ctx.bug
        if bug == "dx_kernel_not_flipped":
            gx = F.conv2d(gy, w.transpose(0, 1), padding=1)
        elif bug == "dx_kernel_not_transposed":
            gx = F.conv2d(gy, w.flip(-2, -1), padding=1)
        else:
            gx = torch.nn.grad.conv2d_input(x.shape, w, gy, padding=1)
        gw = torch.nn.grad.conv2d_weight(x, w.shape, gy, padding=1)
        if bug == "dx_one_element":
            gx = gx * _one_hot_scale(gx, ONE_DX, 1.01)
        if bug == "dw_one_element":
            gw = gw * _one_hot_scale(gw, ONE_DW, 1.01)
        if bug == "dw_accumulated":
            ctx.acc["weight"] += gw.detach()  # the bug: += into a buffer kept across calls
            gw = ctx.acc["weight"].clone()
        return gx, gw, gy.sum((0, 2, 3)), None, None


def _one_hot_scale(t: Any, index: tuple[int, ...], factor: float) -> Any:
    scale = torch.ones_like(t)
    scale[index] = factor
    return scale


class NormFn(torch.autograd.Function):
    """Normalisation along ``dim`` with an affine ``weight``, ``bias`` (eps = 1e-5): layer norm
    (``dim=-1``, per sample) or batch norm in training mode (``dim=0``, over the batch).

    Bugs: ``eps_forgotten`` (backward's ``1/sqrt(var)`` without the eps the forward added: a
    relative error of about eps / (2 var)), ``mean_term_dropped`` (dx without the
    ``- mean(dxhat)`` term), ``stats_constant`` (dx as if mean and variance did not depend
    on x: ``dxhat / sqrt(var + eps)``).
    """

    EPS = 1e-5

    @staticmethod
    def forward(ctx: Any, x: Any, weight: Any, bias: Any, dim: int, bug: str = "") -> Any:
        ctx.save_for_backward(x, weight)
        ctx.dim, ctx.bug = dim, bug
        mu = x.mean(dim, keepdim=True)
        var = x.var(dim, unbiased=False, keepdim=True)
        return (x - mu) * torch.rsqrt(var + NormFn.EPS) * weight + bias

    @staticmethod
    def backward(ctx: Any, gy: Any) -> Any:
        x, w = ctx.saved_tensors
        d, bug = ctx.dim, ctx.bug
        mu = x.mean(d, keepdim=True)
        var = x.var(d, unbiased=False, keepdim=True)
        rstd = torch.rsqrt(var) if bug == "eps_forgotten" else torch.rsqrt(var + NormFn.EPS)
        xhat = (x - mu) * rstd
        gxhat = gy * w
        if bug == "stats_constant":
            gx = gxhat * rstd
        else:
            mean_term = 0 if bug == "mean_term_dropped" else gxhat.mean(d, keepdim=True)
            gx = rstd * (gxhat - mean_term - xhat * (gxhat * xhat).mean(d, keepdim=True))
        reduce = tuple(range(gy.ndim - w.ndim))  # weight and bias broadcast on the last axes
        return gx, (gy * xhat).sum(reduce), gy.sum(reduce), None, None


class SoftmaxCrossEntropyFn(torch.autograd.Function):
    """Mean softmax cross-entropy of ``logits`` (N, C) against class indices ``target``.

    Bugs: ``batch_mean_forgotten`` (dlogits = p - onehot, without the 1/N of the mean),
    ``probs_non_differentiable`` (also returns the probabilities, marked
    non-differentiable, though they move with the logits).
    """

    @staticmethod
    def forward(ctx: Any, logits: Any, target: Any, bug: str = "") -> Any:
        logp = torch.log_softmax(logits, dim=1)
        p = logp.exp()
        ctx.save_for_backward(p, target)
        ctx.bug = bug
        loss = -logp.gather(1, target[:, None]).mean()
        if bug == "probs_non_differentiable":
            ctx.mark_non_differentiable(p)
            return loss, p
        return loss

    @staticmethod
    def backward(ctx: Any, g: Any, *_ignored: Any) -> Any:
        p, target = ctx.saved_tensors
        onehot = F.one_hot(target, p.shape[1]).to(p.dtype)
        n = 1 if ctx.bug == "batch_mean_forgotten" else p.shape[0]
        return (p - onehot) * (g / n), None, None


class ReluMaxPoolFn(torch.autograd.Function):
    """``max_pool2d(relu(x), 2)`` (H and W even): each dy goes to the first maximum of its
    window in row-major order, times relu's derivative (0 at x = 0).

    Bug: ``dy_to_every_tied_max`` (every element equal to its window's maximum gets dy: a
    window with a tie passes on its gradient twice).
    """

    @staticmethod
    def forward(ctx: Any, x: Any, bug: str = "") -> Any:
        win = _windows(torch.relu(x))
        idx = win.argmax(-1)  # the first maximum, as torch's max_pool2d routes it
        ctx.save_for_backward(x, idx)
        ctx.bug = bug
        return win.amax(-1)

    @staticmethod
    def backward(ctx: Any, gy: Any) -> Any:
        x, idx = ctx.saved_tensors
        if ctx.bug == "dy_to_every_tied_max":
            win = _windows(torch.relu(x))
            gw = (win == win.amax(-1, keepdim=True)).to(gy.dtype) * gy[..., None]
        else:
            gw = torch.zeros((*gy.shape, 4), dtype=gy.dtype, device=gy.device)
            gw = gw.scatter(-1, idx[..., None], gy[..., None])
        n, c, h, w = x.shape
        gx = gw.reshape(n, c, h // 2, w // 2, 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(x.shape)
        return gx * (x > 0).to(gx.dtype), None


def _windows(r: Any) -> Any:
    """(N, C, H, W) -> (N, C, H/2, W/2, 4): the 2 x 2 windows, row-major inside."""
    n, c, h, w = r.shape
    return (
        r.reshape(n, c, h // 2, 2, w // 2, 2)
        .permute(0, 1, 2, 4, 3, 5)
        .reshape(n, c, h // 2, w // 2, 4)
    )


class BatchMomentsFn(torch.autograd.Function):
    """The mean and the (biased) variance of ``x`` over the batch axis 0: two outputs.

    Bug: ``var_unbiased_in_backward`` (the variance's gradient ``2 (x - mean) / (N - 1)``,
    the unbiased estimator's, while forward divides by N).
    """

    @staticmethod
    def forward(ctx: Any, x: Any, bug: str = "") -> Any:
        ctx.save_for_backward(x)
        ctx.bug = bug
        return x.mean(0), x.var(0, unbiased=False)

    @staticmethod
    def backward(ctx: Any, g_mean: Any, g_var: Any) -> Any:
        (x,) = ctx.saved_tensors
        n = x.shape[0]
        dn = n - 1 if ctx.bug == "var_unbiased_in_backward" else n
        return g_mean / n + g_var * 2 * (x - x.mean(0)) / dn, None


class SoftplusFn(torch.autograd.Function):
    """``softplus(x) = log(1 + exp(x))``, whose derivative is ``sigmoid(x)``.

    Bugs, all with a right first derivative (order=1 passes) and a wrong or missing second:
    ``sigmoid_detached`` (``dy * sigmoid(x).detach()``: the double backward misses the
    x-dependence), ``no_grad`` (backward under ``torch.no_grad()``), ``numpy``
    (``dy.numpy()``, which only works while dy does not require grad).
    """

    @staticmethod
    def forward(ctx: Any, x: Any, bug: str = "") -> Any:
        ctx.save_for_backward(x)
        ctx.bug = bug
        return F.softplus(x)

    @staticmethod
    def backward(ctx: Any, gy: Any) -> Any:
        (x,) = ctx.saved_tensors
        if ctx.bug == "sigmoid_detached":
            return gy * torch.sigmoid(x).detach(), None
        if ctx.bug == "no_grad":
            with torch.no_grad():
                return gy * torch.sigmoid(x), None
        if ctx.bug == "numpy":
            s = torch.sigmoid(x.detach()).numpy()
            return torch.from_numpy(gy.numpy() * s), None
        return gy * torch.sigmoid(x), None


class SoftplusOnceFn(SoftplusFn):
    """:class:`SoftplusFn` with its correct backward decorated ``@once_differentiable``:
    right at order=1, refused at order=2."""

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: Any) -> Any:
        (x,) = ctx.saved_tensors
        return gy * torch.sigmoid(x), None


class CustomConv2d(torch.nn.Module):
    """A 3 x 3 convolution (padding 1) through :class:`Conv2dFn`, with its ``bug``; the
    ``dw_accumulated`` buffer lives here, as a module's gradient buffer would."""

    def __init__(self, c_in: int, c_out: int, bug: str = "", seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.nn.Parameter(torch.randn(c_out, c_in, 3, 3, generator=g) * 0.4)
        self.bias = torch.nn.Parameter(torch.randn(c_out, generator=g) * 0.1)
        self.bug = bug
        self.acc: dict[str, Any] = {"weight": None}  # the gradient buffer, made at first use

    def forward(self, x: Any) -> Any:
        if self.acc["weight"] is None or self.acc["weight"].dtype != self.weight.dtype:
            self.acc["weight"] = torch.zeros_like(self.weight.detach())
        return Conv2dFn.apply(x, self.weight, self.bias, self.bug, self.acc)


class SmallCNN(torch.nn.Module):
    """conv 3x3 (custom, 3 -> 4 maps) -> ReLU -> 2x2 max-pool -> linear (on 6 x 6 inputs)."""

    def __init__(self, bug: str = "", n_classes: int = 5) -> None:
        super().__init__()
        self.conv = CustomConv2d(3, 4, bug)
        self.fc = torch.nn.Linear(4 * 3 * 3, n_classes)
        with torch.no_grad():
            g = torch.Generator().manual_seed(1)
            self.fc.weight.copy_(torch.randn(self.fc.weight.shape, generator=g) * 0.3)

    def forward(self, x: Any) -> Any:
        h = F.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.fc(h.flatten(1))

    def reference(self, x: Any) -> Any:
        """The same forward in plain torch operations (the ground truth's)."""
        h = F.conv2d(x, self.conv.weight, self.conv.bias, padding=1)
        return self.fc(F.max_pool2d(torch.relu(h), 2).flatten(1))
