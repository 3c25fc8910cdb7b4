"""Issue 12: ``coverage="auto"`` at the issue's layer against torch's fast mode, and how the
cost of a check grows with the layer, from ~500 to ~1M checked elements.

Every row is float64 and carries ``extra_info["kind"] == "scale"``:

* ``checker issue12``: ``cnn_ref.Conv2D(16, 32, 3, convention="xcorr", activation="tanh")``
  on x (8, 16, 32, 32). ``check_layer`` with its defaults on the correct layer;
  ``torch.autograd.gradcheck(fast_mode=True)`` on ``tanh(conv2d(x, K, b))`` with the same
  x, K and b (one intra-op thread, as in ``bench_checker``), next to it in the run;
  ``check_layer`` on the layer with one element of dx, then of K, 0.1 % off -- after timing,
  asserted caught and located (the report's only mismatch, at the planted index). The
  default row also records the peak working memory of one untimed check under
  ``tracemalloc`` over the layer's tensors (x, y, dx, K, b and their gradients).
* ``checker growth``: ``Conv2D(4, 8, 3, convention="xcorr", activation="tanh")`` on x
  (N, 4, H, H) from 552 to 1,048,872 checked elements (x, K and b), with the default
  coverage and with ``coverage="full"``: median time, forward calls, elements checked one by
  one, and the peak of one untimed traced check. The full check at ~1M elements is timed
  once (it takes minutes; the other rows take seconds).

The checks run with one BLAS thread (``threadpoolctl``, in the ``bench`` extra), as torch's
rows run with one intra-op thread: each tool at its best on this 2-core shared machine, where a
second OpenBLAS thread made the default check 1.5-15x slower under load (0.75 s median
instead of 0.49 s with little else running; 17.5 s instead of ~1.4 s with other jobs on the
cores). Without threadpoolctl the rows run with the BLAS default and say so
(``extra_info["blas_threads"]``).

When benchmarking is disabled (plain ``pytest``), every row runs once on a small layer and
still checks its outcome.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import pytest

import cnn_ref
from benchmarks._common import peak_memory, settle
from checks import GradientMismatchError, check_layer


class Problem(NamedTuple):
    """A Conv2D (xcorr, tanh) geometry: c_in -> c_out maps of a 3 x 3 kernel on x."""

    c_in: int
    c_out: int
    x_shape: tuple[int, int, int, int]

    @property
    def n_elements(self) -> int:
        """Elements a check differentiates: x, K and b."""
        return int(np.prod(self.x_shape)) + self.c_out * self.c_in * 9 + self.c_out

    @property
    def label(self) -> str:
        return f"Conv2D({self.c_in}, {self.c_out}, 3, tanh) x{self.x_shape}"

    def build(self) -> tuple[cnn_ref.Conv2D, np.ndarray]:
        layer = cnn_ref.Conv2D(
            self.c_in, self.c_out, 3, convention="xcorr", activation="tanh", seed=0
        )
        return layer, np.random.default_rng(1).standard_normal(self.x_shape)


ISSUE = Problem(16, 32, (8, 16, 32, 32))
ISSUE_SMOKE = Problem(2, 3, (2, 2, 6, 6))
#: (N, H) of x (N, 4, H, H): 552, 4904, 50472, 131368 and 1048872 checked elements
GROWTH = {"552": (1, 8), "4.9k": (2, 24), "50k": (4, 56), "131k": (8, 64), "1M": (16, 128)}
#: the relative error planted in one gradient element
PLANTED = 1e-3


class Planted:
    """A correct layer whose ``tensor`` gradient is ``1 + PLANTED`` times right at ``index``."""

    def __init__(self, inner: Any, tensor: str, index: tuple[int, ...]) -> None:
        self.inner, self.tensor, self.index = inner, tensor, index
        self.params = inner.params

    @property
    def grads(self) -> dict[str, np.ndarray]:
        return self.inner.grads

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.inner.forward(x)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dx = self.inner.backward(dy)
        g = dx if self.tensor == "x" else self.inner.grads[self.tensor]
        g[self.index] *= 1.0 + PLANTED
        return dx


def layer_bytes(layer: Any, x: np.ndarray) -> int:
    """``x + y + dx + params + grads`` in bytes, from one forward and backward."""
    y = layer.forward(x)
    dx = layer.backward(np.ones_like(y))
    p = sum(v.nbytes for v in layer.params.values())
    return int(x.nbytes + y.nbytes + np.asarray(dx).nbytes + 2 * p)


@contextlib.contextmanager
def one_blas_thread(benchmark: Any) -> Iterator[None]:
    """Limit BLAS to one thread while the block runs (when threadpoolctl is installed)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        benchmark.extra_info["blas_threads"] = "default"
        yield
        return
    benchmark.extra_info["blas_threads"] = 1
    with threadpool_limits(1, user_api="blas"):
        yield


def _record(benchmark: Any, group: str, problem: Problem, tool: str, mode: str) -> None:
    benchmark.group = f"checker {group}"
    benchmark.extra_info.update(
        kind="scale", case=group, case_label=problem.label, tool=tool, mode=mode,
        n_elements=problem.n_elements, x_shape=list(problem.x_shape),
    )  # fmt: skip


def _report_info(report: Any) -> dict[str, Any]:
    return {
        "n_evals": report.n_evals,
        "coverage_used": str(report.coverage),
        "n_checked": int(sum(t.n_checked for t in report.tensors)),
        "checked": {t.name: [t.n_checked, t.n_total] for t in report.tensors},
    }


def _caught(layer: Any, x: np.ndarray, tensor: str, index: tuple[int, ...]) -> Any:
    """The report of the default check of ``layer`` with one element of ``tensor`` off."""
    try:
        check_layer(Planted(layer, tensor, index), x)
    except GradientMismatchError as exc:
        return exc.report
    raise AssertionError(f"a {PLANTED:.1%} error in {tensor}{list(index)} was not caught")


@pytest.mark.parametrize("mode", ["default", "dx-bug", "K-bug"])
def bench_issue12_check_layer(benchmark: Any, smoke: bool, mode: str) -> None:
    """``check_layer`` with its defaults: the correct layer, and one element 0.1 % off."""
    problem = ISSUE_SMOKE if smoke else ISSUE
    layer, x = problem.build()
    _record(benchmark, "issue12", problem, "check_layer", mode)
    settle("numpy", smoke)
    if mode == "default":
        with one_blas_thread(benchmark):
            report = benchmark.pedantic(check_layer, args=(layer, x), rounds=5, iterations=1)
        assert report.ok, str(report)
        tensors = layer_bytes(layer, x)
        peak, again = peak_memory(lambda: check_layer(layer, x))
        assert again.ok
        benchmark.extra_info.update(check_peak_bytes=peak, layer_bytes=tensors)
    else:
        tensor = "x" if mode == "dx-bug" else "K"
        shape = x.shape if tensor == "x" else layer.params["K"].shape
        index = tuple(int(i) for i in np.random.default_rng(7).integers(0, shape))
        with one_blas_thread(benchmark):
            report = benchmark.pedantic(
                _caught, args=(layer, x, tensor, index), rounds=3, iterations=1
            )
        tr = report.tensor(tensor)
        # caught and located: the one mismatch, at the planted element
        assert tr.n_mismatched == 1 and tr.mismatch[index] and tr.worst_index == index, str(report)
        assert all(t.ok for t in report.tensors if t.name != tensor)
        benchmark.extra_info.update(
            planted=[tensor, list(index)], located=tr.located, found_by="projection"
            if tr.located else "element check"
        )  # fmt: skip
    benchmark.extra_info.update(_report_info(report))


@pytest.mark.torch
def bench_issue12_torch_fast(benchmark: Any, smoke: bool) -> None:
    """``torch.autograd.gradcheck(fast_mode=True)`` on tanh(conv2d) with the same tensors."""
    torch = pytest.importorskip("torch")
    problem = ISSUE_SMOKE if smoke else ISSUE
    layer, x = problem.build()
    _record(benchmark, "issue12", problem, "gradcheck", "fast")

    def leaf(a: np.ndarray) -> Any:
        return torch.tensor(a, dtype=torch.float64).requires_grad_()

    inputs = (leaf(x), leaf(layer.params["K"]), leaf(layer.params["b"]))

    def fn(x: Any, K: Any, b: Any) -> Any:
        return torch.tanh(torch.nn.functional.conv2d(x, K, b))

    # the same function: torch's output is cnn_ref's (xcorr is conv2d's convention)
    y = fn(*inputs).detach().numpy()
    np.testing.assert_allclose(y, layer.forward(x), rtol=1e-12, atol=1e-12)
    settle("torch", smoke)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # torch's fastest setting here, as in bench_checker
    try:
        ok = benchmark.pedantic(
            torch.autograd.gradcheck, args=(fn, inputs), kwargs={"fast_mode": True},
            rounds=5, iterations=1,
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    benchmark.extra_info["torch_threads"] = 1
    assert ok is True


@pytest.mark.parametrize("coverage", ["auto", "full"])
@pytest.mark.parametrize("size", list(GROWTH))
def bench_growth(benchmark: Any, smoke: bool, size: str, coverage: str) -> None:
    """A check's cost from ~500 to ~1M elements: time, forward calls, peak memory."""
    n, h = GROWTH[size]
    problem = ISSUE_SMOKE if smoke else Problem(4, 8, (n, 4, h, h))
    layer, x = problem.build()
    _record(benchmark, "growth", problem, "check_layer", coverage)
    benchmark.extra_info["size"] = size
    tensors = layer_bytes(layer, x)
    settle("numpy", smoke)
    # the traced run first: it also tells how long one check takes, and so how many rounds
    t0 = time.perf_counter()
    peak, report = peak_memory(lambda: check_layer(layer, x, coverage=coverage))
    traced = time.perf_counter() - t0
    assert report.ok, str(report)
    rounds = 1 if traced > 20 else 3
    with one_blas_thread(benchmark):
        again = benchmark.pedantic(
            check_layer, args=(layer, x), kwargs={"coverage": coverage}, rounds=rounds,
            iterations=1,
        )  # fmt: skip
    assert again.ok and again.n_evals == report.n_evals  # the plan depends on shapes only
    benchmark.extra_info.update(
        check_peak_bytes=peak, layer_bytes=tensors, traced_seconds=traced, **_report_info(again)
    )
