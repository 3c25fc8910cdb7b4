"""pytest plugin: a ``gradcheck`` fixture, report files, and assertion helpers.

Registered through the ``pytest11`` entry point ``gradcheck = "checks.doors.pytest_plugin"``, so
installing the project is enough; nothing needs to go into ``conftest.py``.

Options
-------
``--gradcheck-json DIR``
    Write every report produced through the fixture to ``DIR`` as JSON (``Report.to_json()``).
``--gradcheck-plots DIR``
    Write a PNG heatmap of the per-element error for every failing report to ``DIR``.

Marker
------
``@pytest.mark.gradcheck(method=..., coverage=..., rtol=..., atol=..., seed=..., batch_axis=...)``
sets the fixture's defaults for one test (or a class / module via ``pytestmark``); keyword
arguments of a call still win.

Examples
--------
>>> def test_my_conv(gradcheck):                                   # doctest: +SKIP
...     gradcheck(MyConv(3, 4, 3), np.random.default_rng(0).normal(size=(2, 3, 8, 8)))
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest

_DEFAULT_KEYS = ("dy", "method", "coverage", "rtol", "atol", "seed", "batch_axis", "precision")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup(
        "gradcheck",
        "gradient checks (the `gradcheck` fixture; per-test defaults with "
        "@pytest.mark.gradcheck(method=..., coverage=..., rtol=..., atol=..., seed=...))",
    )
    group.addoption(
        "--gradcheck-json",
        metavar="DIR",
        default=None,
        help="write every gradcheck report as JSON into DIR",
    )
    group.addoption(
        "--gradcheck-plots",
        metavar="DIR",
        default=None,
        help="write a PNG heatmap of the per-element error of every failing check into DIR",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "gradcheck(**defaults): defaults for the gradcheck fixture in this test "
        "(method, coverage, rtol, atol, seed, batch_axis, dy)",
    )


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Say where the report files went (counted on disk, so it also works under xdist)."""
    for option, what, pattern in (
        ("--gradcheck-json", "report(s)", "*.json"),
        ("--gradcheck-plots", "heatmap(s) of failing checks", "*.png"),
    ):
        where = config.getoption(option)
        if where and Path(where).is_dir():
            count = len(list(Path(where).glob(pattern)))
            terminalreporter.write_line(f"gradcheck: {count} {what} in {where}")


def _slug(nodeid: str) -> str:
    """A file name for a test: readable, at most ~130 characters, and unique per node id (a
    short hash of the whole id: two long parametrized ids cut to the same prefix, from any
    pytest-xdist worker, would otherwise write the same file)."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:120] or "test"
    return f"{readable}-{hashlib.sha1(nodeid.encode()).hexdigest()[:8]}"


class GradChecker:
    """The checker bound to one test: per-test defaults, report files, assertion helpers.

    Calling it runs :func:`checks.check_layer` and returns the report (raising
    ``GradientMismatchError`` / ``LayerContractError`` on failure, which pytest shows as a
    test failure at the caller's line).

    Parameters
    ----------
    defaults : dict
        Keyword defaults for ``check_layer`` / ``check_vjp`` (from the ``gradcheck`` marker).
    nodeid : str
        The test's node id; names the files written.
    json_dir, plot_dir : Path or None
        Where to write reports (every one) and heatmaps (failures only).
    """

    def __init__(
        self,
        defaults: dict[str, Any],
        nodeid: str,
        json_dir: Path | None = None,
        plot_dir: Path | None = None,
    ) -> None:
        unknown = sorted(set(defaults) - set(_DEFAULT_KEYS))
        if unknown:
            raise TypeError(
                f"@pytest.mark.gradcheck got unknown keyword(s) {unknown}; "
                f"expected some of {list(_DEFAULT_KEYS)}"
            )
        self.defaults = dict(defaults)
        self.nodeid = nodeid
        self.json_dir = json_dir
        self.plot_dir = plot_dir
        self.reports: list[Any] = []

    # -- running -------------------------------------------------------------------------
    def _record(self, report: Any, failed: bool) -> None:
        self.reports.append(report)
        stem = f"{_slug(self.nodeid)}-{len(self.reports)}"
        if self.json_dir is not None:
            self.json_dir.mkdir(parents=True, exist_ok=True)
            (self.json_dir / f"{stem}.json").write_text(report.to_json())
        if failed and self.plot_dir is not None:
            from checks.report.plotting import plot_report

            self.plot_dir.mkdir(parents=True, exist_ok=True)
            plot_report(report, self.plot_dir / f"{stem}.png")

    def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        from checks.report.errors import GradcheckError

        options = {**self.defaults, **kwargs}
        try:
            report = fn(*args, **options)
        except GradcheckError as err:
            report = getattr(err, "report", None)
            if report is not None:
                self._record(report, failed=True)
            # drop the checker's own frames: the message says what went wrong, and the test's
            # line is where to look. A cause (the layer raising) keeps its full traceback.
            raise err.with_traceback(None)  # noqa: B904
        self._record(report, failed=False)
        return report

    def __call__(self, layer: Any, x: Any, **kwargs: Any) -> Any:
        """Check ``layer`` at ``x`` with :func:`checks.check_layer`; return the Report."""
        __tracebackhide__ = True
        from checks.doors.api import check_layer

        return self._run(check_layer, layer, x, **kwargs)

    def vjp(self, f: Any, vjp: Any, *inputs: Any, **kwargs: Any) -> Any:
        """Check a function and its vector-Jacobian product with :func:`checks.check_vjp`."""
        __tracebackhide__ = True
        from checks.doors.api import check_vjp

        return self._run(check_vjp, f, vjp, *inputs, **kwargs)

    # -- assertion helpers ---------------------------------------------------------------
    def assert_passes(self, layer: Any, x: Any, **kwargs: Any) -> Any:
        """Assert that the layer's gradients match; the same as calling the fixture."""
        __tracebackhide__ = True
        return self(layer, x, **kwargs)

    def assert_fails(
        self,
        layer: Any,
        x: Any,
        *,
        tensor: str | None = None,
        hint: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Assert that the check finds a gradient mismatch; return the failing Report.

        Parameters
        ----------
        tensor : str, optional
            The tensor that must be among the failing ones (``"x"`` or a parameter name).
        hint : str, optional
            A substring that must appear in the failure message (e.g. ``"rot180"``).
        """
        __tracebackhide__ = True
        from checks.report.errors import GradientMismatchError

        try:
            self(layer, x, **kwargs)
        except GradientMismatchError as err:
            report = err.report
            message = str(err)
        else:
            pytest.fail("expected a gradient mismatch, but every gradient matched")
        if tensor is not None:
            failing = [t.name for t in report.tensors if not t.ok] if report is not None else []
            if tensor not in failing:
                pytest.fail(f"expected tensor {tensor!r} to fail; failing tensors: {failing}")
        if hint is not None and hint not in message:
            pytest.fail(f"expected {hint!r} in the failure message; got:\n{message}")
        return report


@pytest.fixture
def gradcheck(request: pytest.FixtureRequest) -> GradChecker:
    """The gradient checker with this test's defaults (``@pytest.mark.gradcheck(...)``).

    ``gradcheck(layer, x, **options)`` runs :func:`checks.check_layer`;
    ``gradcheck.vjp(f, vjp, *inputs)`` runs :func:`checks.check_vjp`;
    ``gradcheck.assert_fails(layer, x, tensor=..., hint=...)`` expects a mismatch.
    """
    defaults: dict[str, Any] = {}
    # closest marker last, so a function's marker overrides its class's and module's
    for marker in reversed(list(request.node.iter_markers("gradcheck"))):
        if marker.args:
            raise TypeError(
                "@pytest.mark.gradcheck takes keyword arguments only, "
                f"got positional {marker.args!r}"
            )
        defaults.update(marker.kwargs)
    config = request.config
    json_opt = config.getoption("--gradcheck-json")
    plot_opt = config.getoption("--gradcheck-plots")
    return GradChecker(
        defaults,
        request.node.nodeid,
        json_dir=Path(json_opt) if json_opt else None,
        plot_dir=Path(plot_opt) if plot_opt else None,
    )
