"""Throughput of ``cnn_ref.functional``'s convolution, forward, backward and both.

Every combination of impl (fast, literal), convention (conv, xcorr), dtype and shape; the
JSON hook turns ``extra_info["flops"]`` into GFLOP/s. Each call's result is checked after
timing against the float64 reference of ``benchmarks._common`` (no shared code with
``cnn_ref``). The literal path is timed only where N*C_out*C_in <= LITERAL_MAX_PAIRS; at
shapes B and C it is smoke-checked on the shrunken shape only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from benchmarks._common import (
    CONVENTIONS,
    DTYPES,
    LITERAL_MAX_PAIRS,
    OPS,
    SHAPES,
    ConvReference,
    ConvShape,
    dtype_name,
    make_conv_case,
    peak_memory,
    settle,
)


def conv_functions() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``(conv2d_forward, conv2d_backward)``, or a skip while cnn_ref does not have them."""
    try:
        from cnn_ref import functional
        from cnn_ref.functional import conv as conv_module
    except ImportError as exc:  # pragma: no cover - only while the package is incomplete
        pytest.skip(f"cnn_ref.functional.conv does not import: {exc}")
    # The contract exports them from cnn_ref.functional; accept the module until it does.
    fwd = getattr(functional, "conv2d_forward", getattr(conv_module, "conv2d_forward", None))
    bwd = getattr(functional, "conv2d_backward", getattr(conv_module, "conv2d_backward", None))
    if fwd is None or bwd is None:
        pytest.skip("cnn_ref.functional.conv2d_forward/conv2d_backward not implemented yet")
    return fwd, bwd


def geometry(shape: ConvShape) -> dict[str, int]:
    return {"stride": shape.stride, "padding": shape.padding, "dilation": shape.dilation}


def nbytes(*arrays: Any) -> int:
    return sum(int(np.asarray(a).nbytes) for a in arrays)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.label)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("impl", ["fast", "literal"])
def bench_conv(
    benchmark: Any,
    smoke: bool,
    impl: str,
    convention: str,
    op: str,
    dtype: Any,
    shape: ConvShape,
) -> None:
    """One (impl, convention, op, dtype, shape) cell of the throughput table."""
    conv2d_forward, conv2d_backward = conv_functions()
    if impl == "literal" and not smoke and shape.pairs > LITERAL_MAX_PAIRS:
        pytest.skip(
            f"literal not timed at {shape.label}: {shape.pairs} per-pair conv2 calls "
            f"(> {LITERAL_MAX_PAIRS}) per pass; smoke-checked on a reduced shape instead"
        )
    full_shape = shape
    if smoke:
        shape = shape.smoke()
    case = make_conv_case(shape, dtype)
    x, K, b, dy = case["x"], case["K"], case["b"], case["dy"]
    kw = {**geometry(shape), "convention": convention, "impl": impl}

    def forward() -> Any:
        return conv2d_forward(x, K, b, **kw)

    def backward() -> Any:
        return conv2d_backward(dy, x, K, **kw)

    def forward_backward() -> Any:
        return conv2d_forward(x, K, b, **kw), conv2d_backward(dy, x, K, **kw)

    fn = {"forward": forward, "backward": backward, "forward+backward": forward_backward}[op]
    benchmark.group = f"conv {full_shape.name} {dtype_name(dtype)} {op}"
    benchmark.extra_info.update(
        impl=impl,
        convention=convention,
        op=op,
        dtype=dtype_name(dtype),
        shape=shape.name,
        shape_label=shape.label,
        flops=shape.flops(op),
    )
    if impl == "fast" and op == "forward+backward":
        # Peak memory against the budget: 3x (inputs + outputs + gradients).
        peak, (u, grads) = peak_memory(forward_backward)
        inputs = nbytes(x, K, b, dy)
        benchmark.extra_info.update(
            peak_bytes=peak, input_bytes=inputs, io_bytes=inputs + nbytes(u, *grads)
        )

    settle("numpy", smoke)
    if impl == "literal" and not smoke:
        result = benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=0)
    else:
        result = benchmark(fn)

    ref = ConvReference(case, shape, convention)
    if op == "forward":
        ref.check_forward(result)
    elif op == "backward":
        ref.check_backward(result)
    else:
        ref.check_forward(result[0])
        ref.check_backward(result[1])
