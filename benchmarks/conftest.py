"""Shared fixtures and pytest-benchmark hooks of the benchmark suite.

Two modes:

* ``make bench`` (``--benchmark-enable``): every benchmark is timed at its full shape; the
  JSON hook below turns ``extra_info["flops"]`` into GFLOP/s and records the machine.
* plain ``pytest`` (``--benchmark-disable`` in addopts, or under xdist, which disables
  pytest-benchmark): each benchmark runs its function once on a shrunken problem
  (:meth:`ConvShape.smoke`) and still checks the result, so the smoke run can fail.
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks._common import describe_machine


@pytest.fixture
def smoke(benchmark: Any) -> bool:
    """True when benchmarking is disabled: run once, on reduced shapes, and check."""
    return bool(benchmark.disabled)


def pytest_benchmark_update_machine_info(config: Any, machine_info: dict[str, Any]) -> None:
    machine_info["convgrad"] = describe_machine()


def pytest_benchmark_update_json(config: Any, benchmarks: Any, output_json: dict[str, Any]) -> None:
    """Add GFLOP/s (median and best round) to every benchmark that declares its flops."""
    for bench in output_json.get("benchmarks", []):
        extra = bench.get("extra_info", {})
        flops = extra.get("flops")
        stats = bench.get("stats", {})
        if flops and stats.get("median"):
            extra["gflops"] = flops / stats["median"] / 1e9
            extra["gflops_best"] = flops / stats["min"] / 1e9
