"""Shared fixtures and pytest-benchmark hooks of the benchmark suite.

Two modes:

* ``make bench`` (``--benchmark-enable``): every benchmark is timed at its full shape; the
  JSON hook below turns ``extra_info["flops"]`` into GFLOP/s and records the machine.
* plain ``pytest`` (``--benchmark-disable`` in addopts, or under xdist, which disables
  pytest-benchmark): each benchmark runs its function once on a shrunken problem
  (:meth:`ConvShape.smoke`) and still checks the result, so the smoke run can fail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks._common import SHAPES, describe_machine

_SHAPE_RANK = {s.name: i for i, s in enumerate(SHAPES)}
_FILE_RANK = {"bench_gemm.py": 0, "bench_conv.py": 1, "bench_peers.py": 1}


@pytest.fixture
def smoke(benchmark: Any) -> bool:
    """True when benchmarking is disabled: run once, on reduced shapes, and check."""
    return bool(benchmark.disabled)


def _timing_order(item: Any) -> tuple[Any, ...]:
    params = getattr(getattr(item, "callspec", None), "params", {})
    shape, dtype, op = params.get("shape"), params.get("dtype"), params.get("op")
    rank = _FILE_RANK.get(item.path.name, 2)
    if params.get("when") == "end":
        return (3,)
    if rank != 1 or shape is None:
        return (rank,)
    return (1, _SHAPE_RANK.get(shape.name, 99), str(dtype), str(op))


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """When timing, run cnn_ref and its peers for one (shape, dtype, op) back to back.

    The machine is shared and its load changes by the minute; measured minutes apart, a
    "x PyTorch" ratio would compare two different machines. GEMM goes first (and again
    last), the checker and the report tests after the convolutions. Plain (smoke) runs
    keep the collection order.
    """
    if not config.getoption("benchmark_enable", False):
        return
    here = Path(__file__).parent
    ours = [it for it in items if here in it.path.parents]
    others = [it for it in items if here not in it.path.parents]
    items[:] = others + sorted(ours, key=_timing_order)  # sorted() is stable


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
