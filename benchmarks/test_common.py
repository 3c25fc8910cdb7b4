"""The instrument the smoke runs rely on: the float64 reference and its rounding bound."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks._common import (
    SHAPES,
    ConvReference,
    ConvShape,
    make_conv_case,
    reference_backward,
    reference_forward,
)

GEOMETRIES = [
    ConvShape("t", 2, 3, 9, 8, 4, 3),
    ConvShape("t", 2, 3, 11, 10, 4, 3, stride=2, padding=1, dilation=2),
    *(s.smoke() for s in SHAPES),
]


@pytest.mark.torch
@pytest.mark.parametrize("shape", GEOMETRIES, ids=lambda s: s.label)
@pytest.mark.parametrize("convention", ["conv", "xcorr"])
def test_reference_agrees_with_torch_autograd(shape: ConvShape, convention: str) -> None:
    torch = pytest.importorskip("torch")
    c = make_conv_case(shape, np.float64)
    K_xcorr = c["K"][..., ::-1, ::-1].copy() if convention == "conv" else c["K"]
    x, K, b = (torch.tensor(a, requires_grad=True) for a in (c["x"], K_xcorr, c["b"]))
    u = torch.nn.functional.conv2d(
        x, K, b, stride=shape.stride, padding=shape.padding, dilation=shape.dilation
    )
    u.backward(torch.tensor(c["dy"]))
    dK_torch = K.grad.numpy()[..., ::-1, ::-1] if convention == "conv" else K.grad.numpy()
    ref = ConvReference(c, shape, convention)
    ref.check_forward(u.detach().numpy())
    ref.check_backward((x.grad.numpy(), dK_torch.copy(), b.grad.numpy()))


@pytest.mark.parametrize("shape", GEOMETRIES[:2], ids=lambda s: s.label)
def test_reference_check_rejects_the_other_convention(shape: ConvShape) -> None:
    c = make_conv_case(shape, np.float64)
    wrong = reference_forward(c["x"], c["K"], c["b"], shape, "xcorr")
    with pytest.raises(AssertionError, match="differ from the float64 reference"):
        ConvReference(c, shape, "conv").check_forward(wrong)


def test_reference_check_rejects_one_gradient_element_off_by_1e_6() -> None:
    shape = GEOMETRIES[0]
    c = make_conv_case(shape, np.float64)
    dx, dK, db = reference_backward(c["dy"], c["x"], c["K"], shape, "conv")
    dK = dK.copy()
    dK[1, 2, 0, 1] *= 1 + 1e-6
    with pytest.raises(AssertionError, match=r"dK: 1 / 108 elements"):
        ConvReference(c, shape, "conv").check_backward((dx, dK, db))


def test_reference_check_accepts_float32_rounding_and_rejects_dtype_change() -> None:
    shape = GEOMETRIES[0]
    c32 = make_conv_case(shape, np.float32)
    u64 = reference_forward(c32["x"], c32["K"], c32["b"], shape, "xcorr")
    ref = ConvReference(c32, shape, "xcorr")
    ref.check_forward(u64.astype(np.float32))  # correctly rounded float32 result passes
    with pytest.raises(AssertionError, match="dtype float64, expected float32"):
        ref.check_forward(u64)
