"""Report, TensorReport, to_json() schema and the failure text built by checks.report.messages."""

from __future__ import annotations

import json

import numpy as np
import pytest

from checks import GradientMismatchError, check_layer
from checks.report import SCHEMA_VERSION, TensorReport, order_with_ties
from property_tests.meta_tests._tiny_layers import Conv, Planted, ReLU, conv


def _failing():
    rng = np.random.default_rng(0)
    layer = Planted(conv(rng, 4, 8, 3), "K", (2, 0, 1, 2), 0.05)
    with pytest.raises(GradientMismatchError) as ei:
        check_layer(layer, rng.standard_normal((2, 4, 6, 6)))
    return ei.value


def test_failure_text_reads_like_assert_allclose():
    err = _failing()
    text = str(err)
    lines = text.splitlines()
    assert lines[0] == "Gradient check failed: Planted, tensor K"
    assert "shape (8, 4, 3, 3), dtype float64, method complex" in lines[1]
    assert lines[2].startswith("  tolerance: estimated")
    assert "Mismatched elements: 1 / 288 (0.347 %)" in text
    assert "K[2, 0, 1, 2]" in text
    assert lines[-1].startswith("Reproduce: check_layer(Planted, ..., seed=0, method='auto'")


def test_failure_text_carries_hints_from_the_catalogue():
    class NoFlip(Conv):
        def backward(self, dy):
            dx = super().backward(dy)
            self.grads["K"] = self.grads["K"][:, :, ::-1, ::-1].copy()
            return dx

    rng = np.random.default_rng(1)
    with pytest.raises(GradientMismatchError) as ei:
        check_layer(
            NoFlip(rng.standard_normal((2, 2, 3, 3)), rng.standard_normal(2)),
            rng.standard_normal((2, 2, 6, 6)),
        )
    assert "Hint: K: analytic = rot180(numerical)" in str(ei.value)


def test_to_json_follows_the_documented_schema():
    rep = _failing().report
    d = json.loads(rep.to_json())
    assert d["schema_version"] == SCHEMA_VERSION
    assert set(d) >= {
        "ok",
        "layer_name",
        "method",
        "coverage",
        "seed",
        "n_evals",
        "elapsed",
        "problems",
        "kinks",
        "reproduce",
        "tensors",
        "batching",
    }
    k = next(t for t in d["tensors"] if t["name"] == "K")
    assert k["shape"] == [8, 4, 3, 3] and k["n_mismatched"] == 1 and not k["ok"]
    assert k["worst_index"] == [2, 0, 1, 2]
    assert k["worst"][0]["index"] == [2, 0, 1, 2]
    assert set(k["worst"][0]) == {
        "index",
        "analytic",
        "numerical",
        "abs_err",
        "rel_err",
        "tol",
        "error_estimate",
    }


def test_passing_report_fields_and_summary():
    x = np.array([[0.0, 1.0], [-1.0, 2.0]])
    rep = check_layer(ReLU(), x)
    assert rep.ok and rep.seed == 0 and rep.layer_name == "ReLU" and rep.n_evals > 0
    assert rep.kinks == [("x", (0, 0))]
    tx = rep.tensor("x")
    assert tx.shape == (2, 2) and tx.dtype == "float64" and tx.n_total == 4
    assert np.isnan(tx.numerical).sum() == 0 and tx.checked.all()
    assert str(rep).startswith("Gradient check passed: ReLU")
    with pytest.raises(KeyError, match="tensors"):
        rep.tensor("W")
    json.loads(rep.to_json())


@pytest.mark.parametrize("ulps", [-2, 2])
def test_errors_tied_within_rounding_are_listed_by_index(ulps):
    """A rot180 pair's errors are equal but for their last bits, which a BLAS kernel or a
    thread count decides: the listing (and the worst index) must not follow those bits."""
    err = np.array([36.0, 5.0, 21.0, 36.0, 21.0, 1.0])
    err[4] = err[4] + ulps * np.spacing(err[4])  # the partner of index 2
    err[0] = err[0] - ulps * np.spacing(err[0])  # the partner of index 3
    a = np.zeros(6)
    tr = TensorReport(
        name="K", shape=(6,), dtype="float64", n_total=6, n_checked=6, analytic=a,
        numerical=a + err, error_estimate=np.full(6, 1e-9), tol=np.full(6, 1e-6),
        checked=np.ones(6, bool), mismatch=err > 1e-6,
    )  # fmt: skip
    assert [w["index"] for w in tr.worst(5)] == [(0,), (3,), (2,), (4,), (1,)]
    assert [w["index"] for w in tr.worst(3)] == [(0,), (3,), (2,)]
    assert order_with_ties(err, np.zeros(6), np.arange(6)).tolist() == [0, 3, 2, 4, 1, 5]
    # values further apart than their error estimates keep their order
    spread = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert order_with_ties(np.array([1.0, 2.0]), spread[:2], np.arange(2)).tolist() == [1, 0]
