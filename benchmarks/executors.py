"""Serial check_layer against a process pool and a dask LocalCluster, side by side in one run.

Not collected by pytest (it starts a pool and a cluster). Usage::

    OPENBLAS_NUM_THREADS=1 python -m benchmarks.executors              # every case, 3 rounds
    OPENBLAS_NUM_THREADS=1 python -m benchmarks.executors large --rounds 2 --workers 2

Each round runs every executor on the same case one after the other, so that a machine
shared with other work loads them alike; the table gives the best wall time of the rounds,
the CPU seconds of this process and of the workers in that round (Linux: from /proc), the
forward calls, and the load average when the case ended. Needs the ``dask`` extra for the
dask column.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

import cnn_ref
from checks import check_layer


def _conv(c_in: int, c_out: int, k: int, shape: tuple[int, ...]) -> Callable[[], tuple]:
    def make() -> tuple[Any, np.ndarray]:
        layer = cnn_ref.Conv2D(c_in, c_out, k, convention="xcorr", activation="tanh", seed=0)
        return layer, np.random.default_rng(0).standard_normal(shape)

    return make


def _lenet() -> tuple[Any, np.ndarray]:
    net = cnn_ref.lenet5(seed=0, activation="tanh", loss=None)
    return net, np.random.default_rng(0).standard_normal((16, 1, 28, 28))


CASES: dict[str, tuple[str, Callable[[], tuple]]] = {
    "large": ("Conv2D(16, 32, 3) tanh, x (8, 16, 32, 32)", _conv(16, 32, 3, (8, 16, 32, 32))),
    "wide": ("Conv2D(64, 8, 5) tanh, x (8, 64, 16, 16)", _conv(64, 8, 5, (8, 64, 16, 16))),
    "lenet": ("lenet5 tanh (no loss), x (16, 1, 28, 28)", _lenet),
    "small": ("Conv2D(3, 4, 3) tanh, x (2, 3, 8, 8)", _conv(3, 4, 3, (2, 3, 8, 8))),
}


def _cpu(pids: list[int]) -> float:
    """User + system CPU seconds of the processes ``pids`` (0 where /proc cannot say)."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _one(case: str, executor: Any, pids: list[int]) -> tuple[float, float, float, int]:
    layer, x = CASES[case][1]()
    w0, c0, t0 = _cpu(pids), time.process_time(), time.perf_counter()
    report = check_layer(layer, x, executor=executor)
    wall = time.perf_counter() - t0
    assert report.ok
    return wall, time.process_time() - c0, _cpu(pids) - w0, report.n_evals


# dask's workers get MALLOC_TRIM_THRESHOLD_=65536 by default (distributed.nanny.pre-spawn-
# environ); any explicit value also fixes glibc's mmap threshold at 128 KiB, so every array a
# forward call allocates is mapped and faulted in anew: worker CPU doubled on lenet5 here
NO_TRIM = {"distributed.nanny.pre-spawn-environ": {
    "OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1, "OPENBLAS_NUM_THREADS": 1}}  # fmt: skip


def _clusters(stack: contextlib.ExitStack, workers: int) -> list[tuple[str, Any, list[int]]]:
    """dask LocalClusters of ``workers`` processes, with dask's defaults and without the
    malloc trim setting; none without the ``dask`` extra."""
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        print("(no dask: pip install the 'dask' extra for its rows)")
        return []
    out = []
    for label, config in (("dask defaults", {}), ("dask, no malloc trim", NO_TRIM)):
        os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)  # a cluster sets it here too
        with dask.config.set(config):
            cluster = stack.enter_context(
                LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                             dashboard_address=":0", silence_logs=logging.ERROR)
            )  # fmt: skip
        client = stack.enter_context(Client(cluster))
        pids = list(client.run(os.getpid).values())
        out.append((f"{label} ({workers})", client.get_executor(), pids))
    return out


def run(cases: list[str], rounds: int, workers: int) -> None:
    """Print one table row per case and executor."""
    environ = dict(os.environ)
    spawn = multiprocessing.get_context("spawn")
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=spawn))
        # the pool's processes start before any cluster changes this process's environment
        check_layer(*CASES["small"][1](), executor=pool)
        runs: list[tuple[str, Any, list[int]]] = [
            ("serial", None, []),
            (f"process pool ({workers})", pool, list(pool._processes)),  # type: ignore[attr-defined]
            *_clusters(stack, workers),
        ]
        for _, ex, _pids in runs[2:]:  # the workers' imports
            check_layer(*CASES["small"][1](), executor=ex)
        print("| case | executor | wall (best) | CPU here | CPU workers | forward calls | load |")
        print("|---|---|---|---|---|---|---|")
        for case in cases:
            best: dict[str, tuple[float, float, float, int]] = {}
            for _ in range(rounds):
                for label, ex, pids in runs:
                    r = _one(case, ex, pids)
                    if label not in best or r[0] < best[label][0]:
                        best[label] = r
            load = os.getloadavg()[0]
            for label, _, _ in runs:
                wall, here, there, calls = best[label]
                print(f"| {CASES[case][0]} | {label} | {wall:.2f} s | {here:.2f} s | "
                      f"{there:.2f} s | {calls} | {load:.1f} |", flush=True)  # fmt: skip
    os.environ.clear()
    os.environ.update(environ)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", default=list(CASES), help=f"of {', '.join(CASES)}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    run(args.cases, args.rounds, args.workers)


if __name__ == "__main__":
    main()
