"""What a full gradient check costs: ``checks.check_layer`` vs ``torch.autograd.gradcheck``.

The checker issue's performance claim, measured side by side: ``check_layer`` with full
coverage on ``cnn_ref.Conv2D`` at x (2,3,8,8), K (4,3,3,3) and x (4,4,16,16), K (8,4,3,3)
in float64, against torch's gradcheck slow mode (full Jacobian) and fast mode (one random
projection) on ``torch.nn.functional.conv2d`` at the same shapes, plus ``coverage="auto"``
at the smaller shape (after timing, asserted to still catch a 0.5 % error in one element
of dx) and the subsampling and dense layers. Every timed call's outcome is checked: a
``Report`` with ``ok`` or gradcheck returning True.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pytest

from benchmarks._common import settle


class CheckCase(NamedTuple):
    """A layer geometry; ``smoke`` is the shrunken one used when benchmarking is disabled."""

    name: str
    kind: str  # conv | subsample | dense
    x_shape: tuple[int, ...]
    p_shape: tuple[int, ...]  # K (C_out, C_in, k, k), pooling (C, size), dense (out, in)
    smoke_x: tuple[int, ...]
    smoke_p: tuple[int, ...]

    @property
    def label(self) -> str:
        return f"{self.name}: x{self.x_shape} p{self.p_shape}"


CASES = {
    "conv-small": CheckCase(
        "conv-small", "conv", (2, 3, 8, 8), (4, 3, 3, 3), (1, 2, 5, 5), (2, 2, 3, 3)
    ),
    "conv-large": CheckCase(
        "conv-large", "conv", (4, 4, 16, 16), (8, 4, 3, 3), (1, 2, 6, 6), (3, 2, 3, 3)
    ),
    "subsample": CheckCase("subsample", "subsample", (4, 4, 16, 16), (4, 2), (1, 2, 4, 4), (2, 2)),
    "dense": CheckCase("dense", "dense", (8, 64), (32, 64), (2, 5), (3, 5)),
}


def _cnn_ref_class(name: str, module: str) -> Any:
    """``cnn_ref.<name>``, or ``cnn_ref.<module>.<name>`` until the package re-exports it."""
    try:
        pkg = importlib.import_module("cnn_ref")
        obj = getattr(pkg, name, None)
        if obj is None:
            obj = getattr(importlib.import_module(f"cnn_ref.{module}"), name, None)
    except ImportError as exc:
        pytest.skip(f"cnn_ref.{module} does not import: {exc}")
    if obj is None:
        pytest.skip(f"cnn_ref.{name} not implemented yet")
    return obj


def _check_layer() -> tuple[Callable[..., Any], type[BaseException]]:
    try:
        checks = importlib.import_module("checks")
        fn = getattr(checks, "check_layer", None)
        if fn is None:
            fn = getattr(importlib.import_module("checks.doors.api"), "check_layer", None)
        err = getattr(checks, "GradientMismatchError", None)
    except ImportError as exc:
        pytest.skip(f"checks.check_layer does not import: {exc}")
    if fn is None or err is None:
        pytest.skip("checks.check_layer not implemented yet")
    return fn, err


def _shapes(case: CheckCase, smoke: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return (case.smoke_x, case.smoke_p) if smoke else (case.x_shape, case.p_shape)


def make_layer(case: CheckCase, smoke: bool) -> tuple[Any, np.ndarray]:
    """A float64 ``cnn_ref`` layer and a seeded input for ``case``."""
    x_shape, p = _shapes(case, smoke)
    x = np.random.default_rng(1).standard_normal(x_shape)
    if case.kind == "conv":
        layer = _cnn_ref_class("Conv2D", "conv")(p[1], p[0], p[2], seed=0)
    elif case.kind == "subsample":
        layer = _cnn_ref_class("Subsample", "subsample")(p[0], p[1], seed=0)
    else:
        layer = _cnn_ref_class("Dense", "dense")(p[1], p[0], seed=0)
    return layer, x


def n_elements(layer: Any, x: np.ndarray) -> int:
    return int(x.size + sum(v.size for v in layer.params.values()))


def _record(benchmark: Any, case: CheckCase, tool: str, mode: str, n: int) -> None:
    benchmark.group = f"checker {case.name}"
    benchmark.extra_info.update(
        kind="checker", case=case.name, case_label=case.label, tool=tool, mode=mode, n_elements=n
    )


@pytest.mark.parametrize(
    ("case_name", "coverage"),
    [
        ("conv-small", "full"),
        ("conv-small", "auto"),
        ("conv-large", "full"),
        ("subsample", "full"),
        ("dense", "full"),
    ],
)
def bench_check_layer(benchmark: Any, smoke: bool, case_name: str, coverage: str) -> None:
    """``checks.check_layer(layer, x, coverage=...)`` on a correct ``cnn_ref`` layer."""
    check_layer, mismatch_error = _check_layer()
    case = CASES[case_name]
    layer, x = make_layer(case, smoke)
    _record(benchmark, case, "check_layer", coverage, n_elements(layer, x))

    settle("numpy", smoke)
    report = benchmark.pedantic(
        check_layer, args=(layer, x), kwargs={"coverage": coverage}, rounds=5, iterations=1
    )
    assert report.ok, str(report)
    benchmark.extra_info.update(n_evals=report.n_evals, coverage_used=str(report.coverage))

    if coverage == "auto":
        # The point of "auto": cheaper, and still catches one dx element 0.5 % off.
        class OneElementOff(type(layer)):  # type: ignore[misc]
            def backward(self, dy: np.ndarray) -> np.ndarray:
                dx = np.array(super().backward(dy), copy=True)
                dx[(0,) * (dx.ndim - 2) + (2, 3)] *= 1.005
                return dx

        bad, _ = make_layer(case, smoke)
        bad.__class__ = OneElementOff
        with pytest.raises(mismatch_error):
            check_layer(bad, x, coverage="auto")


def _torch_problem(case: CheckCase, smoke: bool, torch: Any) -> tuple[Callable[..., Any], tuple]:
    """The torch function and double-precision leaf inputs matching ``case``."""
    F = torch.nn.functional
    x_shape, p = _shapes(case, smoke)
    gen = torch.Generator().manual_seed(1)

    def leaf(*shape: int) -> Any:
        return torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_()

    if case.kind == "conv":
        return F.conv2d, (leaf(*x_shape), leaf(*p), leaf(p[0]))
    if case.kind == "subsample":
        C, size = p

        def subsample(x: Any, beta: Any, b: Any) -> Any:  # eq. (3): beta * down(x) + b
            pooled = F.avg_pool2d(x, size) * (size * size)
            return beta.view(1, C, 1, 1) * pooled + b.view(1, C, 1, 1)

        return subsample, (leaf(*x_shape), leaf(C), leaf(C))
    return F.linear, (leaf(*x_shape), leaf(*p), leaf(p[0]))


@pytest.mark.torch
@pytest.mark.parametrize(
    ("case_name", "mode"),
    [
        ("conv-small", "slow"),
        ("conv-small", "fast"),
        ("conv-large", "slow"),
        ("conv-large", "fast"),
        ("subsample", "slow"),
        ("dense", "slow"),
    ],
)
def bench_torch_gradcheck(benchmark: Any, smoke: bool, case_name: str, mode: str) -> None:
    """``torch.autograd.gradcheck`` (slow: full Jacobian; fast: one random projection)."""
    torch = pytest.importorskip("torch")
    case = CASES[case_name]
    fn, inputs = _torch_problem(case, smoke, torch)
    _record(benchmark, case, "gradcheck", mode, int(sum(t.numel() for t in inputs)))

    settle("torch", smoke)
    rounds = 3 if (mode == "slow" and case_name == "conv-large") else 5
    # gradcheck makes thousands of tiny conv calls; with torch's default 2 intra-op threads
    # on this 2-core machine they spend most of their time synchronising (41 s vs 7 s for
    # conv-large slow mode, measured). One thread is torch's best case: the ratios are
    # conservative.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ok = benchmark.pedantic(
            torch.autograd.gradcheck,
            args=(fn, inputs),
            kwargs={"fast_mode": mode == "fast"},
            rounds=rounds,
            iterations=1,
        )
    finally:
        torch.set_num_threads(threads)
    benchmark.extra_info["torch_threads"] = 1
    assert ok is True
