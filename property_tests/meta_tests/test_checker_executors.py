"""Issue 12, item 4: ``check_layer`` / ``check_vjp`` spread their forward calls over a
``concurrent.futures`` executor -- a local process pool, or a ``dask.distributed`` cluster's
``Client.get_executor()`` -- with the verdicts of a serial check, per-element numbers equal to
rounding, a planted single-element bug caught and located through each, a clear error for a
layer that cannot be pickled, and the caller's arrays untouched.

The executors start once per module (two spawned processes each); the dask tests skip when
``distributed`` is not installed (the ``dask`` extra).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from checks import GradientMismatchError, LayerContractError, check_layer, check_vjp
from property_tests.meta_tests import _executor_layers as el

EXECUTORS = ["process_pool", "dask_executor"]


@pytest.fixture(scope="module")
def process_pool() -> Iterator[Executor]:
    # spawned, not forked: the workers import what they rebuild, as a cluster's would
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


@pytest.fixture(scope="module")
def dask_executor() -> Iterator[Executor]:
    distributed = pytest.importorskip("distributed", reason="needs the 'dask' extra")
    environ = dict(os.environ)  # a cluster sets MALLOC_TRIM_THRESHOLD_ & co. here too
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
            silence_logs=logging.ERROR,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):  # fmt: skip
        yield client.get_executor()
    os.environ.clear()
    os.environ.update(environ)


@pytest.fixture(params=EXECUTORS)
def executor(request: pytest.FixtureRequest) -> Executor:
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


def _same_verdicts_and_numbers(serial: Any, other: Any) -> None:
    """The same verdict per tensor and per element; the numbers the same to rounding: a
    worker evaluates the copies at other batch positions (and may block its BLAS
    differently), so each value may move by its own error estimate."""
    assert other.ok == serial.ok
    assert [t.name for t in other.tensors] == [t.name for t in serial.tensors]
    for s, o in zip(serial.tensors, other.tensors, strict=True):
        assert o.ok == s.ok
        np.testing.assert_array_equal(o.checked, s.checked)
        np.testing.assert_array_equal(o.mismatch, s.mismatch)
        assert o.kinks == s.kinks
        c = s.checked
        allowed = s.error_estimate[c] + o.error_estimate[c]
        assert np.all(np.abs(o.numerical[c] - s.numerical[c]) <= allowed), s.name
        assert len(o.projections) == len(s.projections)
        for (av_s, nv_s, tol_s), (av_o, nv_o, _) in zip(s.projections, o.projections, strict=True):
            assert av_o == av_s and abs(nv_o - nv_s) <= tol_s


def test_a_correct_layer_passes_as_it_does_serially(executor: Executor) -> None:
    layer, x = el.small_conv()
    serial = check_layer(layer, x, coverage="full")
    report = check_layer(layer, x, coverage="full", executor=executor)
    _same_verdicts_and_numbers(serial, report)
    assert report.ok and all(t.n_checked == t.n_total for t in report.tensors)


def test_a_thread_pool_is_an_executor_too() -> None:
    """Each thread rebuilds its own copy of the layer: the threads never share one."""
    layer, x = el.small_conv(seed=3)
    serial = check_layer(layer, x, coverage="full")
    with ThreadPoolExecutor(2) as threads:
        report = check_layer(layer, x, coverage="full", executor=threads)
    _same_verdicts_and_numbers(serial, report)


def test_sampled_coverage_with_projections_matches_serial(process_pool: Executor) -> None:
    layer, x = el.small_conv(seed=1)
    serial = check_layer(layer, x, coverage="sampled")
    report = check_layer(layer, x, coverage="sampled", executor=process_pool)
    _same_verdicts_and_numbers(serial, report)


@pytest.mark.parametrize("through", ["serial", *EXECUTORS])
def test_a_planted_single_element_bug_is_caught_and_located(
    through: str, request: pytest.FixtureRequest
) -> None:
    """0.1 % off in one element of dx, behind a failing projection: localization (group
    testing, judgement._locate) finds it through every executor as it does serially."""
    executor = None if through == "serial" else request.getfixturevalue(through)
    _, x = el.small_conv()
    idx = (1, 1, 4, 7)
    layer = el.PlantedConv(3, 4, 3, convention="xcorr", activation="tanh", seed=0, index=idx)
    with pytest.raises(GradientMismatchError) as ei:
        check_layer(layer, x, coverage="projected", executor=executor)
    tr = ei.value.report.tensor("x")
    assert tr.located is not None and tr.located["mismatched"] == 1
    assert tr.worst_index == idx and tr.n_mismatched == 1 and tr.mismatch[idx]
    assert all(t.ok for t in ei.value.report.tensors if t.name != "x")


def test_the_planted_bug_is_caught_with_full_coverage(process_pool: Executor) -> None:
    _, x = el.small_conv()
    idx = (0, 2, 7, 0)
    layer = el.PlantedConv(3, 4, 3, convention="xcorr", activation="tanh", seed=0, index=idx)
    with pytest.raises(GradientMismatchError) as ei:
        check_layer(layer, x, coverage="full", executor=process_pool)
    tr = ei.value.report.tensor("x")
    assert [tuple(int(i) for i in r) for r in np.argwhere(tr.mismatch)] == [idx]


def test_a_layer_that_cannot_be_pickled_gets_a_clear_error(process_pool: Executor) -> None:
    layer, x = el.small_conv(cls=el.HoldsLambda)
    with pytest.raises(TypeError) as ei:
        check_layer(layer, x, executor=process_pool)
    text = str(ei.value)
    assert "layer HoldsLambda cannot be sent to the executor" in text
    assert "schedule holds a lambda" in text and "executor=None" in text
    assert check_layer(layer, x).ok  # serially it is checked as any layer


def test_a_function_that_cannot_be_pickled_gets_a_clear_error(process_pool: Executor) -> None:
    x = np.linspace(-1.0, 1.0, 6)
    with pytest.raises(TypeError, match=r"function <lambda> cannot be sent .* a lambda"):
        check_vjp(lambda a: np.sin(a), lambda dy, a: (dy * np.cos(a),), x, executor=process_pool)


def test_executor_must_be_an_executor() -> None:
    layer, x = el.small_conv()
    with pytest.raises(TypeError, match=r"executor must be None or a concurrent\.futures"):
        check_layer(layer, x, executor=2)


def test_the_callers_arrays_are_untouched(process_pool: Executor) -> None:
    layer, x = el.small_conv(seed=2)
    x.flags.writeable = False
    dy = np.random.default_rng(5).standard_normal((2, 4, 6, 6))
    before = {"x": x.copy(), "dy": dy.copy(), **{k: v.copy() for k, v in layer.params.items()}}
    ids = {k: id(v) for k, v in layer.params.items()}
    check_layer(layer, x, dy=dy, executor=process_pool)
    np.testing.assert_array_equal(x, before["x"])
    np.testing.assert_array_equal(dy, before["dy"])
    for k, v in layer.params.items():
        assert id(v) == ids[k]
        np.testing.assert_array_equal(v, before[k])


def test_forward_calls_are_counted_wherever_they_run(executor: Executor, tmp_path: Any) -> None:
    """report.n_evals against the layer's own log of its forward calls (written by the
    worker processes for the calls they ran)."""
    for i, ex in enumerate((None, executor)):
        log = tmp_path / f"calls{i}.txt"
        _, x = el.small_conv()
        layer = el.LoggedConv(3, 4, 3, convention="xcorr", activation="tanh", seed=0, log=str(log))
        report = check_layer(layer, x, coverage="sampled", executor=ex)
        assert len(log.read_text().splitlines()) == report.n_evals


def test_check_vjp_runs_on_an_executor(executor: Executor) -> None:
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((6, 5)), rng.standard_normal(5)
    serial = check_vjp(el.scaled_tanh, el.scaled_tanh_vjp, x, w)
    report = check_vjp(el.scaled_tanh, el.scaled_tanh_vjp, x, w, executor=executor)
    _same_verdicts_and_numbers(serial, report)


def test_a_complex_step_refused_in_a_worker_falls_back_as_serially(
    process_pool: Executor,
) -> None:
    """The layer's TypeError on a packed complex call travels back as the cause of the
    contract error, so the complex step falls back to Richardson (and is not a failure)."""
    layer, x = el.small_conv(cls=el.RefusesLargeComplex)
    serial = check_layer(layer, x, coverage="full")
    report = check_layer(layer, x, coverage="full", executor=process_pool)
    assert "complex step failed mid-check (TypeError)" in serial.tensor("x").tolerance_rule
    assert "complex step failed mid-check (TypeError)" in report.tensor("x").tolerance_rule
    _same_verdicts_and_numbers(serial, report)


def test_a_layer_that_raises_in_a_worker_fails_as_serially(process_pool: Executor) -> None:
    """Its RuntimeError comes back as the cause: a contract error, not a complex-step
    fallback (which a cause lost on the way would have made it)."""
    layer, x = el.small_conv(cls=el.FailsOnPackedComplex)
    for ex in (None, process_pool):
        with pytest.raises(LayerContractError, match="raised RuntimeError: out of workspace"):
            check_layer(layer, x, coverage="full", executor=ex)


def test_a_layer_that_mutates_its_parameters_in_a_worker_is_reported(
    process_pool: Executor,
) -> None:
    layer, x = el.small_conv(cls=el.MutatesOnPackedComplex)
    b = layer.params["b"].copy()
    for ex in (None, process_pool):
        with pytest.raises(LayerContractError, match="mutated b during the numerical"):
            check_layer(layer, x, coverage="full", executor=ex)
        np.testing.assert_array_equal(layer.params["b"], b)  # restored serially, never sent
