"""Issue 13: ``checks.torch.check_function`` / ``check_module`` take ``executor=`` where the
function can be pickled: the verdicts and numbers of a serial check, a planted single-element
bug caught and located through a process pool, every forward call counted, clear errors for
what cannot go to the workers (a function that does not pickle, a tensor off the CPU, a pool
that forks while torch runs several threads), and the caller's tensors untouched.

Ground truth: the corpus' Conv2dFn, whose backward the self-test checks against torch's own
conv2d gradients, and its ``dx_one_element`` bug planted at ``ONE_DX`` by construction; the
function's own log of its calls for the count. The pool is spawned once per module (two
processes); the conftest's one torch thread per process reaches them through the environment.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from checks import GradientMismatchError

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")
import checks.torch as ct  # noqa: E402
from checks.audit.torch_functions import ONE_DX, Conv2dFn, SmallCNN  # noqa: E402
from property_tests.meta_tests import _torch_executor_functions as tf  # noqa: E402
from property_tests.meta_tests.test_checker_executors import (  # noqa: E402
    _same_verdicts_and_numbers,
)


@pytest.fixture(scope="module")
def process_pool() -> Iterator[Executor]:
    # spawned: forked workers would hang in torch's OpenMP pool (see the refusal below)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


@pytest.fixture(scope="module")
def thread_pool() -> Iterator[Executor]:
    with ThreadPoolExecutor(2) as pool:
        yield pool


@pytest.mark.parametrize("pool", ["process_pool", "thread_pool"])
def test_a_module_level_function_passes_as_it_does_serially(
    pool: str, request: pytest.FixtureRequest
) -> None:
    executor = request.getfixturevalue(pool)
    inputs = tf.conv_inputs()
    serial = ct.check_function(tf.conv, *inputs, coverage="full")
    report = ct.check_function(tf.conv, *inputs, coverage="full", executor=executor)
    _same_verdicts_and_numbers(serial, report)
    assert report.ok and [t.name for t in report.tensors] == ["x", "weight", "bias"]
    assert all(t.n_checked == t.n_total for t in report.tensors)


def test_a_function_apply_and_an_argument_passed_as_it_is_go_to_the_workers(
    process_pool: Executor,
) -> None:
    """``Conv2dFn.apply`` pickles (as its class, by reference); so does its ``bug`` string."""
    inputs = tf.conv_inputs(seed=1)
    serial = ct.check_function(Conv2dFn.apply, *inputs, "")
    report = ct.check_function(Conv2dFn.apply, *inputs, "", executor=process_pool)
    _same_verdicts_and_numbers(serial, report)
    assert report.layer_name == "Conv2dFn"


def test_a_module_passes_as_it_does_serially(process_pool: Executor) -> None:
    net = SmallCNN().double()
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    serial = ct.check_module(net, x)
    report = ct.check_module(net, x, executor=process_pool)
    _same_verdicts_and_numbers(serial, report)
    assert [t.name for t in report.tensors] == [
        "x", "conv.weight", "conv.bias", "fc.weight", "fc.bias",
    ]  # fmt: skip


def test_a_module_instance_is_a_function_that_pickles(process_pool: Executor) -> None:
    """An ``nn.Module`` given to check_function as ``fn``: x is checked, the module goes to
    the workers with its parameters as they are."""
    net = SmallCNN(bug="dx_one_element").double()
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    for executor in (None, process_pool):
        with pytest.raises(GradientMismatchError) as ei:
            ct.check_function(net, x.requires_grad_(True), executor=executor)
        (tr,) = ei.value.report.tensors  # (named inputs[0]: a module's call takes *args)
        assert [tuple(int(i) for i in r) for r in np.argwhere(tr.mismatch)] == [ONE_DX]


def test_order_2_runs_on_the_workers_too(process_pool: Executor) -> None:
    inputs = tf.conv_inputs(seed=3)
    serial = ct.check_function(tf.conv, *inputs, order=2)
    report = ct.check_function(tf.conv, *inputs, order=2, executor=process_pool)
    _same_verdicts_and_numbers(serial, report)
    assert [t.name for t in report.tensors] == ["x", "weight", "bias", "dy"]


@pytest.mark.parametrize("coverage", ["full", "projected"])
def test_a_planted_single_element_bug_is_caught_and_located(
    coverage: str, process_pool: Executor
) -> None:
    """1 % off in dx[ONE_DX]: found element by element (full) and by localization behind a
    failing projection (projected), through the pool as serially."""
    for executor in (None, process_pool):
        with pytest.raises(GradientMismatchError) as ei:
            ct.check_function(
                Conv2dFn.apply, *tf.conv_inputs(), "dx_one_element",
                coverage=coverage, executor=executor,
            )  # fmt: skip
        tr = ei.value.report.tensor("x")
        assert [tuple(int(i) for i in r) for r in np.argwhere(tr.mismatch)] == [ONE_DX]
        assert tr.worst_index == ONE_DX and tr.n_mismatched == 1
        assert all(t.ok for t in ei.value.report.tensors if t.name != "x")


def test_forward_calls_are_counted_wherever_they_run(process_pool: Executor, tmp_path: Any) -> None:
    """report.n_evals against the function's own log of the calls made without autograd
    (written by the workers for the calls they ran)."""
    for i, executor in enumerate((None, process_pool)):
        log = tmp_path / f"calls{i}.txt"
        report = ct.check_function(
            tf.logged_conv, *tf.conv_inputs(), str(log), coverage="sampled", executor=executor
        )
        assert len(log.read_text().splitlines()) == report.n_evals


def test_the_callers_tensors_are_untouched(process_pool: Executor) -> None:
    x, w, b = tf.conv_inputs(seed=4)
    before = [t.detach().clone() for t in (x, w, b)]
    ct.check_function(tf.conv, x, w, b, executor=process_pool)
    for t, t0 in zip((x, w, b), before, strict=True):
        assert torch.equal(t.detach(), t0) and t.grad is None and t.requires_grad
    net = SmallCNN().double()
    params = {n: p.detach().clone() for n, p in net.named_parameters()}
    xm = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    xm0 = xm.clone()
    ct.check_module(net, xm, executor=process_pool)
    assert torch.equal(xm, xm0) and not xm.requires_grad
    for n, p in net.named_parameters():
        assert torch.equal(p.detach(), params[n]) and p.grad is None, n


def _local_function() -> Any:
    def scaled(x: Any) -> Any:
        return 2 * x

    return scaled


class _Twice(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Any) -> Any:
        return 2 * x

    @staticmethod
    def backward(ctx: Any, g: Any) -> Any:
        return 2 * g


def _local_function_class() -> Any:
    class Twice(_Twice):
        pass

    return Twice.apply


def test_a_function_that_cannot_be_pickled_is_named_before_any_forward_call(
    process_pool: Executor,
) -> None:
    """Each refusal names fn and why; serially every one of them is checked as usual."""
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    cases = [
        (lambda t: 2 * t, r"fn <lambda> cannot be sent to the executor: it is a lambda"),
        (_local_function(), r"fn scaled cannot be sent .* _local_function\.<locals>\.scaled, "
         r"defined inside a function"),
        (_local_function_class(), r"fn Twice cannot be sent .* its class "
         r"_local_function_class\.<locals>\.Twice is defined inside a function"),
    ]  # fmt: skip
    for fn, message in cases:
        with pytest.raises(TypeError, match=message) as ei:
            ct.check_function(fn, x, executor=process_pool)
        assert "executor=None" in str(ei.value)
        assert ct.check_function(fn, x).ok


def test_a_module_or_an_argument_that_cannot_be_pickled_is_named(process_pool: Executor) -> None:
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(3, 2).double()

        def forward(self, x: Any) -> Any:
            return torch.tanh(self.lin(x))

    x = torch.randn(4, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"module Net cannot be sent .* its class .*<locals>\.Net"):
        ct.check_module(Net(), x, executor=process_pool)
    assert ct.check_module(Net(), x).ok
    lock = threading.Lock()  # Conv2dFn's acc argument, unused without its bug
    with pytest.raises(TypeError, match=r"argument acc of fn Conv2dFn cannot be sent .* lock"):
        ct.check_function(Conv2dFn.apply, *tf.conv_inputs(), "", lock, executor=process_pool)


def test_tensors_off_the_cpu_are_refused_with_an_executor(process_pool: Executor) -> None:
    """Each worker would need the device: refused, naming the tensors and their device (the
    meta device stands in for a GPU here)."""
    x, w, b = (t.detach().to("meta").requires_grad_(True) for t in tf.conv_inputs())
    with pytest.raises(ValueError, match=r"executor= needs CPU tensors: x on meta, weight on "
                       r"meta, bias on meta"):  # fmt: skip
        ct.check_function(tf.conv, x, w, b, executor=process_pool)
    net = torch.nn.Linear(3, 2).to("meta")
    with pytest.raises(ValueError, match=r"CPU tensors: weight on meta, bias on meta"):
        ct.check_module(net, torch.randn(4, 3), executor=process_pool)


def test_a_pool_that_forks_while_torch_runs_threads_is_refused() -> None:
    """Forked workers hang in torch's OpenMP pool once this process has used it: refused
    before any worker starts; with one torch thread a forked pool works."""
    threads = torch.get_num_threads()
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
        torch.set_num_threads(2)
        try:
            with pytest.raises(ValueError, match=r"start method 'fork'\) while torch runs 2 "
                               r"threads.*get_context\('spawn'\)"):  # fmt: skip
                ct.check_function(tf.conv, *tf.conv_inputs(), executor=pool)
        finally:
            torch.set_num_threads(threads)
        assert not pool._processes  # type: ignore[attr-defined]  # no worker was forked
        if threads == 1:  # the conftest's setting
            report = ct.check_function(tf.conv, *tf.conv_inputs(), executor=pool)
            assert report.ok and pool._processes  # type: ignore[attr-defined]
