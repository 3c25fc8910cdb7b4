"""Working memory of a check (:mod:`checks.engine.memory`): the bound, and chunking that changes no
number.

The peak is measured with ``tracemalloc`` (numpy's allocations are traced), which counts
bytes, not time: the same on any machine with the same numpy. Before the bound, the default
check of the conv below peaked at 34x its tensors (6.7x after) (every code probe's outputs of every
sample held twice, in float64 and complex128, and a fixed 2**21-element chunk).
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import cnn_ref
from checks import GradientMismatchError, check_layer, check_vjp
from checks.engine import elements, evaluation, memory, targets


def _tensor_bytes(layer: Any, x: np.ndarray) -> int:
    """``x + y + dx + params + grads`` from one forward and backward."""
    y = layer.forward(x)
    dx = layer.backward(np.ones_like(y))
    p = sum(v.nbytes for v in layer.params.values())
    return int(x.nbytes + y.nbytes + dx.nbytes + 2 * p)


def _peak(fn: Callable[[], Any]) -> tuple[Any, int]:
    gc.collect()
    tracemalloc.start()
    try:
        out = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return out, peak


def test_a_default_check_of_a_conv_stays_within_eight_times_its_tensors():
    layer = cnn_ref.Conv2D(16, 16, 3, seed=0)
    x = np.random.default_rng(0).standard_normal((16, 16, 32, 32))
    tensors = _tensor_bytes(layer, x)  # 5.8 MiB
    assert 8 * tensors > memory.FLOOR  # the factor applies, not the floor
    report, peak = _peak(lambda: check_layer(layer, x))
    assert report.ok
    assert peak <= 8 * tensors, f"peak {peak / 2**20:.1f} MiB, {peak / tensors:.1f}x the tensors"


def test_a_small_layer_stays_within_the_floor():
    layer = cnn_ref.Conv2D(3, 4, 3, activation="relu", seed=0)
    x = np.random.default_rng(0).standard_normal((4, 3, 12, 12))
    assert 8 * _tensor_bytes(layer, x) < memory.FLOOR
    report, peak = _peak(lambda: check_layer(layer, x, coverage="full"))
    assert report.ok
    assert peak <= memory.FLOOR


class _Rows:
    """Records the sample slices the runner's packed calls were made on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sliced = 0
        for cls in (targets.LayerTarget, targets.VjpTarget):
            original = cls.eval_packed

            def eval_packed(tgt: Any, name: str, big: Any, copies: int, what: str,
                            rows: slice = slice(None), _orig: Any = original) -> Any:  # fmt: skip
                self.sliced += rows != slice(None)
                return _orig(tgt, name, big, copies, what, rows)

            monkeypatch.setattr(cls, "eval_packed", eval_packed)


def _squeeze(monkeypatch: pytest.MonkeyPatch, scratch: int) -> None:
    """A budget of nothing: every evaluation gets the least scratch, ``scratch`` bytes."""
    monkeypatch.setattr(memory, "FLOOR", 0)
    monkeypatch.setattr(memory, "FACTOR", 0)
    monkeypatch.setattr(evaluation, "_MIN_SCRATCH", scratch)


def _same_numbers(a: Any, b: Any) -> None:
    assert a.batching == b.batching  # the same groupings, so the same formulas
    for p, q in zip(a.tensors, b.tensors, strict=True):
        for f in ("numerical", "error_estimate", "tol"):
            np.testing.assert_array_equal(getattr(p, f), getattr(q, f), err_msg=f"{p.name}.{f}")
        assert p.projections == q.projections and p.kinks == q.kinks and p.ok == q.ok


@pytest.mark.parametrize("method", ["auto", "richardson"])
def test_a_conv_checked_in_small_chunks_gives_the_same_numbers(monkeypatch, method):
    """Cut along the copies and the samples of the batch: bit for bit the same derivatives,
    error estimates and tolerances as in calls of every sample at once."""
    layer = cnn_ref.Conv2D(4, 6, 3, activation="tanh", seed=1)
    x = np.random.default_rng(1).standard_normal((6, 4, 16, 16))
    whole = check_layer(layer, x, coverage="full", method=method)
    rows = _Rows(monkeypatch)
    _squeeze(monkeypatch, 3 << 20)
    cut = check_layer(layer, x, coverage="full", method=method)
    assert rows.sliced and cut.n_evals > whole.n_evals
    _same_numbers(whole, cut)


def test_check_vjp_cuts_every_batched_input_along_the_same_samples(monkeypatch):
    """With two inputs sharing the batch axis, a call on a slice of the samples of one
    gets the same slice of the other."""
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((2, 6, 3, 40))

    def f(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.tanh(a) * b

    def vjp(dy: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return dy * b * (1 - np.tanh(a) ** 2), dy * np.tanh(a)

    whole = check_vjp(f, vjp, a, b, coverage="full")
    rows = _Rows(monkeypatch)
    _squeeze(monkeypatch, 128 << 10)
    cut = check_vjp(f, vjp, a, b, coverage="full")
    assert rows.sliced
    _same_numbers(whole, cut)


@pytest.mark.parametrize(
    ("method", "points", "size", "spied"),
    [("richardson", 4, 8, "_streamed"), ("complex", 1, 16, "_streamed_complex")],
)
def test_an_element_whose_outputs_do_not_fit_is_reduced_output_by_output(
    monkeypatch, method, points, size, spied
):
    """Below the scratch one element's stencil outputs need (with the reductions'
    temporaries), each output is reduced as it arrives (``elements._streamed``; a complex
    step on slices of the samples, as x is packed): the same
    derivatives, error estimates and verdicts, to rounding (slices are summed in another
    order), and a planted error in one kernel element still caught there."""
    layer = cnn_ref.Conv2D(4, 6, 3, activation="tanh", seed=1)
    x = np.random.default_rng(1).standard_normal((6, 4, 16, 16))
    streamed = []
    original = getattr(elements, spied)

    def spy(*args: Any, **kw: Any) -> Any:
        streamed.append(len(args[2]))
        return original(*args, **kw)

    monkeypatch.setattr(elements, spied, spy)
    sliced = _spy_samples(monkeypatch)
    per_element = points * x.shape[0] * 6 * 14 * 14 * size * (1 + evaluation.REDUCE_ROWS)
    _squeeze(monkeypatch, per_element + (64 << 10))  # one element fits
    fits = check_layer(layer, x, coverage="full", method=method)
    assert not streamed
    _squeeze(monkeypatch, per_element // 2)
    cut = check_layer(layer, x, coverage="full", method=method)
    assert streamed
    # the complex step of a parameter also cuts the batch (its whole complex call does not fit)
    assert bool(sliced) == (method == "complex")
    assert fits.ok and cut.ok
    for name in ("K", "b"):  # evaluated one by one in both (x is packed, in other lattices)
        p, q = fits.tensor(name), cut.tensor(name)
        np.testing.assert_array_less(np.abs(q.numerical - p.numerical), p.error_estimate + 1e-300)
        # an estimate carries differences of nearly equal stencil sums (truncation), whose
        # last bits follow the order of summation: 1e-4 relative apart was measured
        np.testing.assert_allclose(q.error_estimate, p.error_estimate, rtol=1e-3)
        assert q.mismatch.sum() == p.mismatch.sum() == 0

    class Planted(cnn_ref.Conv2D):
        def backward(self, dy: np.ndarray) -> np.ndarray:
            dx = super().backward(dy)
            self.grads["K"][2, 1, 0, 1] *= 1.001
            return dx

    bad = Planted(4, 6, 3, activation="tanh", seed=1)
    with pytest.raises(GradientMismatchError) as err:
        check_layer(bad, x, coverage="full", method=method)
    assert err.value.report.tensor("K").worst_index == (2, 1, 0, 1)


def _spy_samples(monkeypatch: pytest.MonkeyPatch) -> list[slice]:
    """The sample slices forward was restricted to (``LayerTarget.samples``)."""
    seen: list[slice] = []
    original = targets.LayerTarget.samples

    def samples(tgt: Any, rows: slice, batch_axis: int) -> Any:
        seen.append(rows)
        return original(tgt, rows, batch_axis)

    monkeypatch.setattr(targets.LayerTarget, "samples", samples)
    return seen


def test_a_complex_projection_is_stepped_a_slice_of_samples_at_a_time(monkeypatch):
    """When the batch in complex numbers does not fit the scratch, the complex step along a
    random direction is taken on slices of the samples -- of ``x`` itself (packed), and of
    ``x`` beside a parameter stepped whole: the projections are the same sums, to rounding,
    and a planted error in one element of dx is still caught."""
    layer = cnn_ref.Conv2D(4, 6, 3, activation="tanh", seed=1)
    x = np.random.default_rng(1).standard_normal((8, 4, 16, 16))
    whole = check_layer(layer, x, coverage="projected", method="complex")
    rows = _Rows(monkeypatch)
    sliced = _spy_samples(monkeypatch)
    _squeeze(monkeypatch, 256 << 10)
    cut = check_layer(layer, x, coverage="projected", method="complex")
    assert rows.sliced and sliced
    for name in ("x", "K", "b"):
        p, q = whole.tensor(name).projections, cut.tensor(name).projections
        assert len(p) == len(q) > 0
        for a, b in zip(p, q, strict=True):
            assert a[0] == b[0]  # the analytic side: the same direction
            assert abs(a[1] - b[1]) <= 1e-12 * abs(a[1]) + 1e-15, (name, a, b)

    class Planted(cnn_ref.Conv2D):
        def backward(self, dy: np.ndarray) -> np.ndarray:
            dx = super().backward(dy).copy()
            dx[5, 2, 7, 9] *= 1.01
            return dx

    with pytest.raises(GradientMismatchError):
        check_layer(Planted(4, 6, 3, activation="tanh", seed=1), x, coverage="projected",
                    method="complex")  # fmt: skip
