"""The PyTorch door's cost and reach: ``checks.torch.check_function`` against
``torch.autograd.gradcheck`` on one custom ``torch.autograd.Function`` (issue 13).

The Function is a conv2d (5 output maps, 3 x 3, padding 1) with a hand-written backward from
``torch.nn.grad``, on x (4, 3, 10, 10) in float64. Timed side by side, torch on one intra-op
thread as in ``bench_checker``: our full check (``coverage="full"``: every element of x, w
and b, each with its error estimate), gradcheck's slow mode (the full Jacobian) and its fast
mode (one random projection). Every timed call's outcome is checked after the timing.

The single-element bug rows are counts, not timings: for each size of error (0.1 % to 10 %)
and each seed, one element of dx (drawn from the seed) is scaled by ``1 + size``, and the
benchmark records how many of these gradcheck's fast mode catches, how many our full check
catches, and how many it locates (the worst element it reports is the planted one, and it is
the only mismatch). A float32 row counts false alarms of our check on the correct Function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pytest

from benchmarks._common import settle

pytestmark = pytest.mark.torch

#: sizes of the planted error, relative to the element of dx
BUG_SIZES = (0.001, 0.01, 0.1)
#: seeds per size (each draws the inputs and the planted element); smoke runs take one
SEEDS = 8


class Geometry(NamedTuple):
    x: tuple[int, int, int, int]
    maps: int

    @property
    def label(self) -> str:
        return f"torch-conv: x{self.x} w({self.maps},{self.x[1]},3,3) p1"


FULL = Geometry((4, 3, 10, 10), 5)
SMOKE = Geometry((2, 2, 5, 5), 3)


def _conv_function(torch: Any) -> Any:
    """conv2d (padding 1) as a custom autograd Function; ``bug`` scales dx at ``where``."""

    class Conv(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any, w: Any, b: Any, where: Any = None, bug: float = 0.0) -> Any:
            ctx.save_for_backward(x, w)
            ctx.where, ctx.bug = where, bug
            return torch.nn.functional.conv2d(x, w, b, padding=1)

        @staticmethod
        def backward(ctx: Any, gy: Any) -> Any:
            x, w = ctx.saved_tensors
            gx = torch.nn.grad.conv2d_input(x.shape, w, gy, padding=1)
            gw = torch.nn.grad.conv2d_weight(x, w.shape, gy, padding=1)
            if ctx.bug:
                gx = gx.clone()
                gx[ctx.where] *= 1 + ctx.bug
            return gx, gw, gy.sum((0, 2, 3)), None, None

    return Conv


def make_problem(
    torch: Any, geo: Geometry, seed: int, dtype: Any, where: Any = None, bug: float = 0.0
) -> tuple[Callable[..., Any], tuple[Any, Any, Any]]:
    """The Function (with a bug planted at ``where`` when ``bug``) and its leaf inputs."""
    conv = _conv_function(torch)

    def conv2d(x: Any, w: Any, b: Any) -> Any:
        return conv.apply(x, w, b, where, bug)

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*geo.x, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(geo.maps, geo.x[1], 3, 3, generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(geo.maps, generator=g, dtype=dtype, requires_grad=True)
    return conv2d, (x, w, b)


def planted_element(seed: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The element of dx a seed plants its bug in (its own generator, apart from the inputs')."""
    rng = np.random.default_rng([seed, 0xB06])
    return tuple(int(rng.integers(n)) for n in shape)


def _one_thread(torch: Any) -> Any:
    """torch on one intra-op thread until the returned callable is called (see bench_checker:
    thousands of tiny calls on 2 cores spend most of their time synchronising otherwise)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    return lambda: torch.set_num_threads(threads)


def _record(benchmark: Any, geo: Geometry, tool: str, mode: str, n: int) -> None:
    benchmark.group = "checker torch-conv"
    benchmark.extra_info.update(
        kind="checker", case="torch-conv", case_label=geo.label, tool=tool, mode=mode,
        n_elements=n, torch_threads=1,
    )  # fmt: skip


def bench_torch_door_full_check(benchmark: Any, smoke: bool) -> None:
    """``checks.torch.check_function(conv, x, w, b, coverage="full")`` on the correct Function."""
    torch = pytest.importorskip("torch")
    import checks.torch as ct

    geo = SMOKE if smoke else FULL
    fn, inputs = make_problem(torch, geo, 0, torch.float64)
    _record(benchmark, geo, "check_function", "full", sum(t.numel() for t in inputs))
    settle("torch", smoke)
    restore = _one_thread(torch)
    try:
        report = benchmark.pedantic(
            ct.check_function, args=(fn, *inputs), kwargs={"coverage": "full"},
            rounds=1 if smoke else 7, iterations=1, warmup_rounds=0 if smoke else 1,
        )  # fmt: skip
    finally:
        restore()
    assert report.ok and all(t.n_checked == t.n_total for t in report.tensors), str(report)
    benchmark.extra_info.update(n_evals=report.n_evals, coverage_used=str(report.coverage))


@pytest.mark.parametrize("mode", ["slow", "fast"])
def bench_torch_door_gradcheck(benchmark: Any, smoke: bool, mode: str) -> None:
    """``torch.autograd.gradcheck`` on the same Function and inputs."""
    torch = pytest.importorskip("torch")
    geo = SMOKE if smoke else FULL
    fn, inputs = make_problem(torch, geo, 0, torch.float64)
    _record(benchmark, geo, "gradcheck", mode, sum(t.numel() for t in inputs))
    settle("torch", smoke)
    restore = _one_thread(torch)
    try:
        ok = benchmark.pedantic(
            torch.autograd.gradcheck, args=(fn, inputs), kwargs={"fast_mode": mode == "fast"},
            rounds=1 if smoke else (3 if mode == "slow" else 7), iterations=1,
        )  # fmt: skip
    finally:
        restore()
    assert ok is True


def _caught_by_fast_mode(torch: Any, fn: Callable[..., Any], inputs: tuple, seed: int) -> bool:
    torch.manual_seed(seed)  # fast mode's random projection
    return not torch.autograd.gradcheck(fn, inputs, fast_mode=True, raise_exception=False)


def _ours(fn: Callable[..., Any], inputs: tuple, where: Any) -> tuple[bool, bool]:
    """(caught, located) by our full check; ``where`` is None for a correct Function."""
    import checks.torch as ct
    from checks import GradientMismatchError

    try:
        ct.check_function(fn, *inputs, coverage="full")
    except GradientMismatchError as err:
        rep = err.report
        tx = rep.tensor("x")
        others = sum(t.n_mismatched for t in rep.tensors if t.name != "x")
        located = where is not None and tx.worst_index == where and tx.n_mismatched == 1
        return True, located and others == 0
    return False, False


def _wrong_elements(torch: Any, fn: Callable[..., Any], inputs: tuple) -> list[tuple[int, ...]]:
    """Where the Function's dx differs from autograd's through ``torch.nn.functional.conv2d``
    (the oracle that the bug is planted where intended, and only there)."""
    x, w, b = (t.detach().requires_grad_() for t in inputs)
    gy = torch.ones(fn(x, w, b).shape, dtype=x.dtype)
    (dx,) = torch.autograd.grad(fn(x, w, b), (x,), gy)
    (ref,) = torch.autograd.grad(torch.nn.functional.conv2d(x, w, b, padding=1), (x,), gy)
    return [tuple(i) for i in torch.nonzero(dx != ref).tolist()]


def sweep(
    torch: Any, geo: Geometry, seeds: int, size: float, dtype: Any, fast_mode: bool = True
) -> dict[str, int | None]:
    """Plant a bug of ``size`` (none for 0) per seed; count what each checker says (gradcheck
    only with ``fast_mode``)."""
    planted = fast = caught = located = 0
    for seed in range(seeds):
        where = planted_element(seed, geo.x) if size else None
        fn, inputs = make_problem(torch, geo, seed, dtype, where, size)
        assert _wrong_elements(torch, fn, inputs) == ([where] if size else [])
        planted += 1
        if fast_mode:
            fast += _caught_by_fast_mode(torch, fn, inputs, seed)
        ours = _ours(fn, inputs, where)
        caught += ours[0]
        located += ours[1]
    return {"planted": planted, "fast_caught": fast if fast_mode else None,
            "ours_caught": caught, "ours_located": located}  # fmt: skip


@pytest.mark.parametrize(
    ("dtype_name", "size"), [*(("float64", s) for s in BUG_SIZES), ("float32", 0.0)]
)
def bench_torch_door_single_element_bugs(
    benchmark: Any, smoke: bool, dtype_name: str, size: float
) -> None:
    """Counts of planted single-element dx bugs caught (and located), and float32 false
    alarms (``size`` 0: the correct Function; gradcheck not run, it warns that non-double
    inputs will likely fail and reruns its slow mode on failure), for the report; timed once,
    not compared. The only assertions: the bug is planted where intended (against autograd
    through ``conv2d``), and a correct Function raises no alarm."""
    torch = pytest.importorskip("torch")
    geo = SMOKE if smoke else FULL
    dtype = getattr(torch, dtype_name)
    benchmark.group = "torch door single-element bugs"
    restore = _one_thread(torch)
    try:
        counts = benchmark.pedantic(
            sweep, args=(torch, geo, 1 if smoke else SEEDS, size, dtype, dtype_name == "float64"),
            rounds=1, iterations=1,
        )  # fmt: skip
    finally:
        restore()
    benchmark.extra_info.update(
        kind="bug-detection", case="torch-conv", case_label=geo.label, dtype=dtype_name,
        size=size, **counts,
    )  # fmt: skip
    if not size:
        assert counts["ours_caught"] == 0, f"false alarm on the correct Function: {counts}"
