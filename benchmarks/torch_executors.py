"""The torch door serially and on a spawned process pool, with torch's default threads per
worker or one each, side by side in one run.

Not collected by pytest (it starts two pools). Run it with ``OMP_NUM_THREADS`` unset, since
the point is torch's default thread count::

    python -m benchmarks.torch_executors                  # every case, 3 rounds
    python -m benchmarks.torch_executors module --rounds 2 --workers 2

Each round runs every column on the same case one after the other, so that a machine shared
with other work loads them alike; the table gives the best wall time of the rounds and the
forward calls. Serial columns set torch's threads in this process for their run (and put them
back); the pools' workers keep what they started with, or one thread
(``initializer=torch.set_num_threads, initargs=(1,)``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any

import torch

import checks.torch as ct
from checks.audit.torch_functions import Conv2dFn


def _conv(n: int, c_in: int, c_out: int, size: int) -> Callable[[Executor | None], Any]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c_in, size, size, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(c_out, c_in, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(c_out, generator=g, dtype=torch.float64, requires_grad=True)
    return lambda ex: ct.check_function(Conv2dFn.apply, x, w, b, "", executor=ex)


def _module() -> Callable[[Executor | None], Any]:
    torch.manual_seed(0)
    nn = torch.nn
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.Tanh(), nn.Conv2d(16, 16, 3, padding=1), nn.Tanh(),
        nn.AvgPool2d(4), nn.Flatten(), nn.Linear(16 * 4 * 4, 10),
    ).double()  # fmt: skip
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return lambda ex: ct.check_module(net, x, executor=ex)


CASES: dict[str, tuple[str, Callable[[], Callable[[Executor | None], Any]]]] = {
    "module": (
        "check_module: conv 3->16, tanh, conv 16->16, tanh, avg-pool 4, linear -> 10; "
        "x (8, 3, 16, 16)",
        _module,
    ),
    "small": ("Conv2dFn.apply, x (2, 3, 5, 5), 3 -> 4 maps", lambda: _conv(2, 3, 4, 5)),
    "wide": ("Conv2dFn.apply, x (8, 32, 16, 16), 32 -> 32 maps", lambda: _conv(8, 32, 32, 16)),
}


def _timed(check: Callable[[Executor | None], Any], ex: Executor | None) -> tuple[float, int]:
    t = time.perf_counter()
    report = check(ex)
    return time.perf_counter() - t, report.n_evals


def _round(check: Callable[[Executor | None], Any], pools: dict[str, Executor]) -> dict:
    """One run of every column: ``{column: (seconds, forward calls)}``."""
    default = torch.get_num_threads()
    out = {}
    for threads in sorted({1, default}):
        torch.set_num_threads(threads)
        try:
            out[f"serial, {threads} torch thread(s)"] = _timed(check, None)
        finally:
            torch.set_num_threads(default)
    for name, pool in pools.items():
        out[name] = _timed(check, pool)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", default=list(CASES), help=f"of {', '.join(CASES)}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    spawn = multiprocessing.get_context("spawn")
    n = args.workers
    print(f"torch {torch.__version__}, {torch.get_num_threads()} torch threads here, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")  # fmt: skip
    with (
        ProcessPoolExecutor(n, mp_context=spawn) as default_pool,
        ProcessPoolExecutor(
            n, mp_context=spawn, initializer=torch.set_num_threads, initargs=(1,)
        ) as one_thread_pool,
    ):  # fmt: skip
        pools = {f"pool ({n}), default threads": default_pool,
                 f"pool ({n}), 1 torch thread each": one_thread_pool}  # fmt: skip
        for case in args.cases:
            title, make = CASES[case]
            check = make()
            _round(check, pools)  # warm-up: the workers import torch and the checker
            rounds = [_round(check, pools) for _ in range(args.rounds)]
            print(f"\n{title}  (load average {os.getloadavg()[0]:.1f})")
            for column in rounds[0]:
                best = min(r[column][0] for r in rounds)
                print(f"  {column:34s} {best:7.2f} s  {rounds[0][column][1]:6d} forward calls")


if __name__ == "__main__":
    main()
