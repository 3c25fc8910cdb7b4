"""The machine's matrix-multiply peak per dtype: the ceiling every conv row is compared to."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from benchmarks._common import DTYPES, dtype_name, settle

GEMM_N = 2048


@pytest.mark.benchmark(group="gemm")
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
@pytest.mark.parametrize("when", ["start", "end"])
def bench_gemm_peak(benchmark: Any, smoke: bool, when: str, dtype: Any) -> None:
    """numpy ``a @ b`` on n x n matrices, 2*n^3 flops (n = 2048; 64 in the smoke run).

    Measured at the start and at the end of a timed run (conftest orders them); the
    report takes the best, since a busy spell of the shared machine only lowers it.
    """
    n = 64 if smoke else GEMM_N
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    benchmark.extra_info.update(
        impl="gemm",
        op="matmul",
        when=when,
        dtype=dtype_name(dtype),
        shape=f"{n}x{n}",
        flops=2 * n**3,
    )
    settle("numpy", smoke)
    # Many rounds: the report takes the best one as the ceiling (see report.gemm_peaks).
    c = benchmark.pedantic(np.matmul, args=(a, b), rounds=15, warmup_rounds=2)
    # Check a few rows against a plain float64 sum of products (no BLAS involved).
    rows = slice(0, 4)
    ref = (a[rows, :, None].astype(np.float64) * b[None].astype(np.float64)).sum(axis=1)
    bound = (n + 2) * np.finfo(dtype).eps * (np.abs(a[rows]) @ np.abs(b)).astype(np.float64)
    assert c.dtype == np.dtype(dtype)
    assert np.all(np.abs(c[rows] - ref) <= bound)
