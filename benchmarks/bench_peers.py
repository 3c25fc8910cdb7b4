"""What a user would pick instead, measured in the same run as ``bench_conv``.

* PyTorch CPU ``conv2d``: forward, backward (``aten.convolution_backward``, the kernel
  autograd calls) and forward+backward through autograd;
* ``scipy.signal.correlate`` / ``convolve`` loops over (sample, output map) pairs;
* mygrad's ``conv_nd``, a pure-numpy autograd library from PyPI (numpy-ml, the best-known
  pure-numpy CNN, does not import on Python >= 3.10: ``from collections import Hashable``).

Each peer skips cleanly when its package is not installed. All peers compute
cross-correlation (``convention="xcorr"``); their results are checked against the same
float64 reference as ``cnn_ref``'s.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from benchmarks._common import (
    DTYPES,
    OPS,
    SHAPES,
    ConvReference,
    ConvShape,
    dtype_name,
    make_conv_case,
    settle,
)

# Loops of scipy.signal calls are timed only where one pass is at most this many
# correlate calls on (C_in, H, W) volumes (A, D, S, P); at B and C a pass takes seconds.
SCIPY_MAX_CALLS = 512


def _prepare(
    benchmark: Any, smoke: bool, shape: ConvShape, dtype: Any, impl: str, op: str
) -> tuple[ConvShape, dict[str, np.ndarray]]:
    full = shape
    if smoke:
        shape = shape.smoke()
    benchmark.group = f"conv {full.name} {dtype_name(dtype)} {op}"
    benchmark.extra_info.update(
        impl=impl,
        convention="xcorr",
        op=op,
        dtype=dtype_name(dtype),
        shape=shape.name,
        shape_label=shape.label,
        flops=shape.flops(op),
    )
    return shape, make_conv_case(shape, dtype)


def _check(ref: ConvReference, op: str, result: Any) -> None:
    """Compare a peer's result for ``op`` against the float64 reference."""
    __tracebackhide__ = True
    if op == "forward":
        ref.check_forward(result)
    elif op == "backward":
        ref.check_backward(result)
    else:
        ref.check_forward(result[0])
        ref.check_backward(result[1])


@pytest.mark.torch
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.label)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
@pytest.mark.parametrize("op", OPS)
def bench_torch_conv2d(benchmark: Any, smoke: bool, op: str, dtype: Any, shape: ConvShape) -> None:
    """PyTorch CPU ``conv2d`` (oneDNN in float32; its native kernels in float64)."""
    torch = pytest.importorskip("torch")
    shape, case = _prepare(benchmark, smoke, shape, dtype, "torch", op)
    x, K, b, dy = (torch.from_numpy(case[k]) for k in ("x", "K", "b", "dy"))
    geo = {"stride": shape.stride, "padding": shape.padding, "dilation": shape.dilation}
    pair = [shape.stride] * 2, [shape.padding] * 2, [shape.dilation] * 2

    def forward() -> Any:
        with torch.no_grad():
            return torch.nn.functional.conv2d(x, K, b, **geo).numpy()

    def backward() -> Any:
        dx, dK, db = torch.ops.aten.convolution_backward(
            dy, x, K, [K.shape[0]], *pair, False, [0, 0], 1, [True, True, True]
        )
        return dx.numpy(), dK.numpy(), db.numpy()

    def forward_backward() -> Any:
        xg, Kg, bg = (t.detach().requires_grad_() for t in (x, K, b))
        u = torch.nn.functional.conv2d(xg, Kg, bg, **geo)
        grads = torch.autograd.grad(u, (xg, Kg, bg), dy)
        return u.detach().numpy(), tuple(g.numpy() for g in grads)

    fn = {"forward": forward, "backward": backward, "forward+backward": forward_backward}[op]
    settle("torch", smoke)
    result = benchmark(fn)
    _check(ConvReference(case, shape, "xcorr"), op, result)


def _scipy_forward(signal: Any, shape: ConvShape, x: np.ndarray, K: np.ndarray, b: np.ndarray):
    p, s = shape.padding, shape.stride
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x
    h, w = shape.out_hw
    u = np.empty((x.shape[0], K.shape[0], h, w), dtype=x.dtype)
    for n in range(x.shape[0]):
        for o in range(K.shape[0]):
            # (C, H, W) against (C, k, k), 'valid': the channel axis collapses to length 1.
            u[n, o] = signal.correlate(xp[n], K[o], mode="valid")[0, ::s, ::s] + b[o]
    return u


def _scipy_backward(signal: Any, shape: ConvShape, dy: np.ndarray, x: np.ndarray, K: np.ndarray):
    p, s, k = shape.padding, shape.stride, shape.k
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x
    dxp = np.zeros_like(xp)
    dK = np.zeros_like(K)
    full_h, full_w = xp.shape[2] - k + 1, xp.shape[3] - k + 1
    for n in range(x.shape[0]):
        for o in range(K.shape[0]):
            d = dy[n, o]
            if s != 1:  # stride: the gradient lives on every s-th position of the dense map
                d = np.zeros((full_h, full_w), dtype=dy.dtype)
                d[::s, ::s] = dy[n, o]
            dK[o] += signal.correlate(xp[n], d[None], mode="valid")
            dxp[n] += signal.convolve(d[None], K[o], mode="full")
    dx = dxp[:, :, p : p + x.shape[2], p : p + x.shape[3]] if p else dxp
    return dx, dK, dy.sum(axis=(0, 2, 3))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.label)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
@pytest.mark.parametrize("op", ["forward", "forward+backward"])
def bench_scipy_correlate_loops(
    benchmark: Any, smoke: bool, op: str, dtype: Any, shape: ConvShape
) -> None:
    """``scipy.signal.correlate``/``convolve`` (method="auto") per (sample, output map)."""
    signal = pytest.importorskip("scipy.signal")
    if shape.dilation != 1:
        pytest.skip("scipy.signal has no dilation")
    if not smoke and shape.N * shape.C_out > SCIPY_MAX_CALLS:
        pytest.skip(
            f"scipy loops not timed at {shape.label}: {shape.N * shape.C_out} correlate calls "
            f"per pass (> {SCIPY_MAX_CALLS}); smoke-checked on a reduced shape instead"
        )
    shape, case = _prepare(benchmark, smoke, shape, dtype, "scipy", op)
    x, K, b, dy = case["x"], case["K"], case["b"], case["dy"]

    def forward() -> Any:
        return _scipy_forward(signal, shape, x, K, b)

    def forward_backward() -> Any:
        return forward(), _scipy_backward(signal, shape, dy, x, K)

    settle("numpy", smoke)
    result = benchmark(forward if op == "forward" else forward_backward)
    # method="auto" may pick FFT, whose rounding error is bounded relative to the norm.
    _check(ConvReference(case, shape, "xcorr", normwise=True), op, result)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.label)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
@pytest.mark.parametrize("op", ["forward", "forward+backward"])
def bench_mygrad_conv_nd(
    benchmark: Any, smoke: bool, op: str, dtype: Any, shape: ConvShape
) -> None:
    """mygrad ``nnet.layers.conv_nd`` (pure numpy, PyPI ``mygrad``), bias added after."""
    mg = pytest.importorskip("mygrad")
    conv_nd = pytest.importorskip("mygrad.nnet.layers").conv_nd
    run_shape = shape.smoke() if smoke else shape
    span = run_shape.dilation * (run_shape.k - 1) + 1
    if (run_shape.H + 2 * run_shape.padding - span) % run_shape.stride:
        pytest.skip(f"mygrad conv_nd needs (H + 2p - k) divisible by the stride at {shape.label}")
    shape, case = _prepare(benchmark, smoke, shape, dtype, "mygrad", op)
    x, K, b, dy = case["x"], case["K"], case["b"], case["dy"]
    geo = {"stride": shape.stride, "padding": shape.padding, "dilation": shape.dilation}
    b4 = b[None, :, None, None]

    def forward() -> Any:
        return (conv_nd(x, K, constant=True, **geo) + b4).data

    def forward_backward() -> Any:
        xt, Kt, bt = (mg.Tensor(a, copy=False) for a in (x, K, b4))
        u = conv_nd(xt, Kt, **geo) + bt
        u.backward(dy)
        return u.data, (xt.grad, Kt.grad, bt.grad.reshape(-1))

    settle("numpy", smoke)
    result = benchmark(forward if op == "forward" else forward_backward)
    _check(ConvReference(case, shape, "xcorr"), op, result)
