"""checks.doors.pytest_plugin, run through pytester: the fixture, the marker defaults, the options
that write JSON and heatmaps, the assertion helpers, and the --help section."""

from __future__ import annotations

import json

import pytest

LAYERS = """
import numpy as np
import pytest
import cnn_ref


class KernelNotFlipped(cnn_ref.Conv2D):
    def backward(self, dy):
        dx = super().backward(dy)
        self.grads["K"] = np.ascontiguousarray(self.grads["K"][..., ::-1, ::-1])
        return dx


def x():
    return np.random.default_rng(0).standard_normal((2, 2, 5, 5))
"""


def test_fixture_passes_a_correct_layer_and_fails_a_broken_one(pytester) -> None:
    pytester.makepyfile(
        LAYERS
        + """

def test_good(gradcheck):
    report = gradcheck(cnn_ref.Conv2D(2, 3, 2, seed=0), x())
    assert report.ok
    w = np.random.default_rng(1).standard_normal((3, 4))
    report = gradcheck.vjp(lambda a: a @ w, lambda dy, a: (dy @ w.T,), x()[:, 0, :3, :3])
    assert [t.name for t in report.tensors] == ["inputs[0]"]


def test_bad(gradcheck):
    gradcheck(KernelNotFlipped(2, 3, 2, seed=0), x())
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert "GradientMismatchError" in out
    assert "rot180" in out
    # __tracebackhide__: the failure points at the user's line, not at the plugin
    assert "gradcheck(KernelNotFlipped(2, 3, 2, seed=0), x())" in out
    assert "pytest_plugin.py" not in out
    assert "runner.py" not in out  # the checker's frames are dropped, the message stays
    assert "checks/engine" not in out


def test_a_layer_that_raises_keeps_its_own_traceback(pytester) -> None:
    pytester.makepyfile(
        LAYERS
        + """

class Explodes(cnn_ref.Dense):
    def backward(self, dy):
        raise ValueError("boom in my backward")


def test_raises(gradcheck):
    gradcheck(Explodes(3, 2, seed=0), np.ones((2, 3)))
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            '*raise ValueError("boom in my backward")',
            "*direct cause*",
            "*LayerContractError*",
        ]
    )


def test_marker_sets_per_test_defaults_and_calls_override_them(pytester) -> None:
    pytester.makepyfile(
        LAYERS
        + """

pytestmark = pytest.mark.gradcheck(seed=5)


@pytest.mark.gradcheck(coverage="sampled", seed=7)
def test_marked(gradcheck):
    report = gradcheck(cnn_ref.Conv2D(2, 3, 2, seed=0), x())
    assert (report.seed, report.requested_coverage) == (7, "sampled")
    report = gradcheck(cnn_ref.Conv2D(2, 3, 2, seed=0), x(), seed=11)
    assert report.seed == 11


def test_module_default(gradcheck):
    assert gradcheck(cnn_ref.Conv2D(2, 3, 2, seed=0), x()).seed == 5


@pytest.mark.gradcheck(colour="red")
def test_unknown_default(gradcheck):
    pass
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*unknown keyword(s)*colour*"])


def test_assert_fails_checks_tensor_and_hint(pytester) -> None:
    pytester.makepyfile(
        LAYERS
        + """

def test_expected_bug(gradcheck):
    report = gradcheck.assert_fails(KernelNotFlipped(2, 3, 2, seed=0), x(), tensor="K",
                                    hint="rot180")
    assert not report.ok


def test_wrong_hint(gradcheck):
    gradcheck.assert_fails(KernelNotFlipped(2, 3, 2, seed=0), x(), hint="sign is flipped")


def test_no_bug(gradcheck):
    gradcheck.assert_fails(cnn_ref.Conv2D(2, 3, 2, seed=0), x())
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*expected 'sign is flipped' in the failure message*",
            "*expected a gradient mismatch, but every gradient matched*",
        ]
    )


def test_json_and_plot_options_write_files(pytester) -> None:
    pytest.importorskip("matplotlib")
    pytester.makepyfile(
        LAYERS
        + """

def test_good(gradcheck):
    gradcheck(cnn_ref.Conv2D(2, 3, 2, seed=0), x())


def test_bad(gradcheck):
    gradcheck(KernelNotFlipped(2, 3, 2, seed=0), x())
"""
    )
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--gradcheck-json", "reports", "--gradcheck-plots", "plots"
    )
    result.assert_outcomes(passed=1, failed=1)
    reports = sorted((pytester.path / "reports").glob("*.json"))
    assert len(reports) == 2
    docs = {p.name: json.loads(p.read_text()) for p in reports}
    assert {d["ok"] for d in docs.values()} == {True, False}
    assert all(d["schema_version"] == 1 for d in docs.values())
    result.stdout.fnmatch_lines(
        ["gradcheck: 2 report(s) in reports", "gradcheck: 1 heatmap(s) of failing checks in plots"]
    )
    plots = list((pytester.path / "plots").glob("*.png"))
    assert len(plots) == 1 and "test_bad" in plots[0].name
    assert plots[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_help_has_a_gradcheck_section(pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(
        [
            "*gradient checks*",
            "*--gradcheck-json=DIR*",
            "*--gradcheck-plots=DIR*",
        ]
    )


def test_marker_is_registered_for_strict_markers(pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["*@pytest.mark.gradcheck(**defaults)*"])


def test_outputs_of_all_xdist_workers_land_in_one_directory(pytester) -> None:
    """Under pytest-xdist every worker writes into the same directories: names are unique
    per test (long parametrized ids cut to the same prefix used to collide)."""
    pytest.importorskip("xdist")
    long = "p" * 200
    pytester.makepyfile(
        test_many=f"""
import numpy as np
import pytest
import cnn_ref

@pytest.mark.parametrize("case", [1, 2, 3, 4], ids=["{long}a", "{long}b", "{long}c", "{long}d"])
def test_good(gradcheck, case):
    x = np.random.default_rng(case).standard_normal((2, 2, 5, 5))
    gradcheck(cnn_ref.Conv2D(2, 3, 2, seed=0), x)
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-n", "2", "--gradcheck-json", "out")
    result.assert_outcomes(passed=4)
    assert len(list((pytester.path / "out").glob("*.json"))) == 4
