"""Peak memory of ``checks.check_layer``, relative to the layer's own tensors.

Not collected by pytest; ``meta_tests/test_checker_memory.py`` asserts the bound on one
layer, this measures any of the cases below and, with ``--where``, shows what the check
held at its largest. Usage::

    python -m property_tests.measure_memory                    # the default cases' peaks
    python -m property_tests.measure_memory conv32 --where     # + where the peak was
    python -m property_tests.measure_memory conv32 --snapshot  # + what was held there
    python -m property_tests.measure_memory conv32 --save a.npz    # the reports' numbers
    python -m property_tests.measure_memory conv32 --compare a.npz # ... the same as saved?
    python -m property_tests.measure_memory conv32 --time 3    # best of 3, not traced
    python -m property_tests.measure_memory conv32 --workers 2 # on a process pool (this
                                                               # process's peak only)

Run each case in its own process for peaks: a reference cycle freed by the garbage
collector at a different moment moves the peak (the complex-step probe kept one until this
was fixed).

The ratio is tracemalloc's peak (numpy's allocations are traced) over the bytes of ``x``,
``y``, ``dx``, the parameters and their gradients (:func:`layer_bytes`); tracing starts
after the layer, ``x`` and one forward/backward exist, so those are not counted twice.
"""

from __future__ import annotations

import argparse
import contextlib
import linecache
import math
import multiprocessing
import sys
import time
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

import cnn_ref
from checks import check_layer
from checks.errors import GradcheckError


def layer_bytes(layer: Any, x: np.ndarray) -> int:
    """``x + y + dx + params + grads`` in bytes, from one forward and backward."""
    y = layer.forward(x)
    dx = layer.backward(np.ones_like(y))
    p = sum(v.nbytes for v in layer.params.values())
    g = sum(np.asarray(v).nbytes for v in getattr(layer, "grads", {}).values())
    return int(x.nbytes + y.nbytes + np.asarray(dx).nbytes + p + g)


def _conv(c_in: int, c_out: int, shape: tuple[int, ...], **kw: Any) -> Callable[[], tuple]:
    def make() -> tuple[Any, np.ndarray, dict]:
        rest = dict(kw)
        dtype = rest.pop("dtype", np.float64)
        opts = rest.pop("options", {})
        layer = cnn_ref.Conv2D(c_in, c_out, 3, seed=0, dtype=dtype, **rest)
        x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
        return layer, x, opts

    return make


def _dense() -> tuple[Any, np.ndarray, dict]:
    layer = cnn_ref.Dense(256, 128, seed=0)
    return layer, np.random.default_rng(0).standard_normal((64, 256)), {}


def _bench(kind: str, x_shape: tuple[int, ...], p: tuple[int, ...]) -> Callable[[], tuple]:
    """benchmarks/bench_checker.py's cases, coverage="full"."""

    def make() -> tuple[Any, np.ndarray, dict]:
        x = np.random.default_rng(1).standard_normal(x_shape)
        if kind == "conv":
            layer = cnn_ref.Conv2D(p[1], p[0], p[2], seed=0)
        elif kind == "subsample":
            layer = cnn_ref.Subsample(p[0], p[1], seed=0)
        else:
            layer = cnn_ref.Dense(p[1], p[0], seed=0)
        return layer, x, {"coverage": "full"}

    return make


CASES: dict[str, Callable[[], tuple]] = {
    # the layer: Conv2D(32, 32, 3), x (16, 32, 32, 32) float64, default options
    "conv32": _conv(32, 32, (16, 32, 32, 32)),
    # coverage="full" on a smaller conv
    "conv-full": _conv(8, 8, (8, 8, 16, 16), options={"coverage": "full"}),
    # float32 ReLU conv (precision="auto": differenced in float64)
    "relu32": _conv(8, 16, (8, 8, 32, 32), activation="relu", dtype=np.float32),
    "dense": _dense,
    # a real method (Richardson) at the size: float64 ReLU
    "relu64": _conv(32, 32, (16, 32, 32, 32), activation="relu"),
    # float32 ReLU at the size (differenced in float64)
    "relu32-big": _conv(32, 32, (16, 32, 32, 32), activation="relu", dtype=np.float32),
    # float32 tanh at the size: differenced in float64 (the probe promotes it)
    "tanh32-big": _conv(32, 32, (16, 32, 32, 32), activation="tanh", dtype=np.float32),
    # a small float32 tanh conv (promoted, complex step)
    "tanh32": _conv(8, 16, (8, 8, 32, 32), activation="tanh", dtype=np.float32),
    # the meta test's layer (meta_tests/test_checker_memory.py)
    "meta": _conv(16, 16, (16, 16, 32, 32)),
    # a small conv of the test suite's size (below the floor)
    "test": _conv(8, 8, (8, 8, 32, 32)),
    # issue 12's layer (benchmarks/bench_scale.py), default options
    "issue12": _conv(16, 32, (8, 16, 32, 32), convention="xcorr", activation="tanh"),
    # benchmarks/bench_scale.py's growth table, full coverage (131k and ~1M elements)
    "growth-131k": _conv(
        4, 8, (8, 4, 64, 64), convention="xcorr", activation="tanh", options={"coverage": "full"}
    ),
    "growth-1m": _conv(
        4, 8, (16, 4, 128, 128), convention="xcorr", activation="tanh", options={"coverage": "full"}
    ),
    "bench-conv-small": _bench("conv", (2, 3, 8, 8), (4, 3, 3, 3)),
    "bench-conv-large": _bench("conv", (4, 4, 16, 16), (8, 4, 3, 3)),
    "bench-subsample": _bench("subsample", (4, 4, 16, 16), (4, 2)),
    "bench-dense": _bench("dense", (8, 64), (32, 64)),
}
DEFAULT = ["conv32", "conv-full", "relu32", "dense"]


def measure(
    case: str, where: bool | str = False, executor: Any = None
) -> tuple[int, int, float, Any]:
    """``(peak bytes, layer bytes, seconds, report)`` of a default check of ``case``."""
    layer, x, opts = CASES[case]()
    if executor is not None:
        opts = {**opts, "executor": executor}
    base = layer_bytes(layer, x)
    tops: list[tuple[int, list[str]]] = []
    snap: list = []
    hook = _peak_hook(tops, snap if where == "snapshot" else None) if where else None
    tracemalloc.start(25 if where else 1)
    if hook:
        sys.setprofile(hook)
    t0 = time.perf_counter()
    try:
        report = check_layer(layer, x, **opts)
    except GradcheckError as exc:
        report = exc.report
    finally:
        sys.setprofile(None)
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    if where and tops:
        size, stack = tops[-1]
        print(f"  largest held at a call boundary: {size / 2**20:.1f} MiB, in")
        for line in stack:
            print(f"    {line}")
    if snap:
        print("  what was held there (by line that allocated it):")
        for stat in snap[0].statistics("lineno")[:25]:
            frame = stat.traceback[0]
            where_ = f"{frame.filename.rsplit('/', 2)[-2]}/{frame.filename.rsplit('/', 1)[-1]}"
            print(f"    {stat.size / 2**20:7.1f} MiB  {where_}:{frame.lineno}  "
                  f"{linecache.getline(frame.filename, frame.lineno).strip()[:70]}")  # fmt: skip
    return peak, base, elapsed, report


def _peak_hook(tops: list[tuple[int, list[str]]], snap: list | None = None) -> Callable[..., None]:
    """A profile hook that records the checker's stack whenever traced memory reaches a new
    high at a Python call or return (temporaries inside one numpy expression are missed)."""
    best = [0]

    def hook(frame: Any, event: str, arg: Any) -> None:
        if event not in ("call", "return"):
            return
        cur, _ = tracemalloc.get_traced_memory()
        if cur <= best[0] * 1.02:
            return
        best[0] = cur
        stack = []
        f = frame
        while f is not None:
            fn = f.f_code.co_filename
            if "/checks/" in fn or "/cnn_ref/" in fn:
                src = linecache.getline(fn, f.f_lineno).strip()
                stack.append(f"{fn.rsplit('/', 2)[-2]}/{fn.rsplit('/', 1)[-1]}:{f.f_lineno} "
                             f"{f.f_code.co_name}: {src}")  # fmt: skip
            f = f.f_back
        tops.append((cur, stack))
        if snap is not None:
            snap[:] = [tracemalloc.take_snapshot()]

    return hook


def _numbers(report: Any) -> dict[str, np.ndarray]:
    out = {}
    for t in report.tensors:
        for f in ("numerical", "error_estimate", "tol"):
            out[f"{t.name}.{f}"] = np.asarray(getattr(t, f))
        out[f"{t.name}.projections"] = np.asarray(t.projections, dtype=np.float64).reshape(-1)
        out[f"{t.name}.kinks"] = np.asarray(t.kinks, dtype=np.int64).reshape(-1)
        out[f"{t.name}.mismatch"] = np.asarray(t.mismatch)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", default=DEFAULT, help=f"of {', '.join(CASES)}")
    parser.add_argument("--time", type=int, metavar="N", help="best of N runs, no tracing")
    parser.add_argument("--where", action="store_true", help="show the largest holding")
    parser.add_argument("--snapshot", action="store_true", help="... and what it held")
    parser.add_argument("--save", metavar="NPZ", help="save each report's numbers")
    parser.add_argument("--compare", metavar="NPZ", help="compare with saved numbers")
    parser.add_argument("--workers", type=int, metavar="N", help="on a process pool of N")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        executor = None
        if args.workers:
            spawn = multiprocessing.get_context("spawn")
            executor = stack.enter_context(ProcessPoolExecutor(args.workers, mp_context=spawn))
        _main(args, executor)


def _main(args: argparse.Namespace, executor: Any) -> None:
    if args.time:
        for case in args.cases:
            best = math.inf
            for _ in range(args.time):
                layer, x, opts = CASES[case]()
                t0 = time.perf_counter()
                check_layer(layer, x, **opts, executor=executor)
                best = min(best, time.perf_counter() - t0)
            print(f"{case:18s} {best:8.3f} s")
        return
    saved: dict[str, np.ndarray] = {}
    for case in args.cases:
        where = "snapshot" if args.snapshot else args.where
        peak, base, elapsed, report = measure(case, where, executor)
        print(
            f"{case:10s} layer {base / 2**20:7.2f} MiB  peak {peak / 2**20:8.1f} MiB  "
            f"ratio {peak / base:5.1f}  {elapsed:6.2f} s  ok={report.ok} "
            f"coverage={report.coverage} method={report.method} n_evals={report.n_evals}"
        )
        saved.update({f"{case}/{k}": v for k, v in _numbers(report).items()})
    if args.save:
        np.savez(args.save, **saved)
    if args.compare:
        with np.load(args.compare) as old:
            for k, v in saved.items():
                if k not in old:
                    print(f"  {k}: not in {args.compare}")
                    continue
                o = old[k]
                if o.shape != v.shape:
                    print(f"  {k}: shape {o.shape} -> {v.shape}")
                elif not np.array_equal(o, v, equal_nan=True):
                    with np.errstate(invalid="ignore"):
                        d = np.nanmax(np.abs(o.astype(float) - v.astype(float)) /
                                      np.maximum(np.abs(o.astype(float)), 1e-300))  # fmt: skip
                    print(f"  {k}: differs, max relative {d:.2e}")
            print(f"compared {len(saved)} arrays")


if __name__ == "__main__":
    main()
