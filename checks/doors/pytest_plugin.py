"""pytest plugin: a ``gradcheck`` fixture, report files, and assertion helpers.

Registered through the ``pytest11`` entry point ``gradcheck = "checks.doors.pytest_plugin"``, so
installing the project is enough; nothing needs to go into ``conftest.py``.

Options
-------
``--gradcheck-json DIR``
    Write every report produced through the fixture to ``DIR`` as JSON (``Report.to_json()``).
``--gradcheck-plots DIR``
    Write a PNG heatmap of the per-element error for every failing report to ``DIR``.
``--gradcheck-html DIR``
    Write ``DIR/index.html``: one self-contained page listing every check of the session
    (test id, layer, verdict, coverage, max relative error, forward calls, time) with each
    failing check's message and heatmap embedded. Works under pytest-xdist: every check writes
    a fragment to ``DIR/.fragments``, and the controller builds the page at the end of the
    session (and clears old fragments at its start).

pytest-html
-----------
When pytest-html is active (``--html=report.html``), each failing check's message and heatmap
are attached to its test's row as pytest-html extras.

Marker
------
``@pytest.mark.gradcheck(method=..., coverage=..., rtol=..., atol=..., seed=..., batch_axis=...)``
sets the fixture's defaults for one test (or a class / module via ``pytestmark``); keyword
arguments of a call still win. ``order=2`` (the double backward) applies to torch targets.

Torch
-----
``gradcheck(module, x)`` checks a ``torch.nn.Module`` with :func:`checks.torch.check_module`;
``gradcheck.function(fn, *tensors)`` a function of tensors (a custom ``autograd.Function``'s
``apply``) with :func:`checks.torch.check_function`.

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

_DEFAULT_KEYS = (
    "dy", "method", "coverage", "rtol", "atol", "seed", "batch_axis", "precision", "order",
)  # fmt: skip


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
    group.addoption(
        "--gradcheck-html",
        metavar="DIR",
        default=None,
        help="write DIR/index.html: every check of the session, failing ones with their "
        "message and heatmap (works under pytest-xdist)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "gradcheck(**defaults): defaults for the gradcheck fixture in this test "
        "(method, coverage, rtol, atol, seed, batch_axis, dy, precision; order for torch targets)",
    )
    html_dir = config.getoption("--gradcheck-html")
    if html_dir and not hasattr(config, "workerinput"):  # the controller, before any worker
        from checks.report.html import clear_fragments

        clear_fragments(html_dir)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Build ``--gradcheck-html DIR/index.html`` from every check's fragment (on the
    controller only: an xdist worker has ``config.workerinput`` and its own fragments)."""
    config = session.config
    html_dir = config.getoption("--gradcheck-html")
    if html_dir and not hasattr(config, "workerinput"):
        from checks.report.html import write_index

        write_index(html_dir, title="Gradient checks of the test session")


_CHECKER = pytest.StashKey["GradChecker"]()


def _pytest_html_active(config: pytest.Config) -> bool:
    return bool(config.pluginmanager.hasplugin("html") and config.getoption("htmlpath", None))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach each failing check's message and heatmap to the test's pytest-html row."""
    outcome = yield
    rep = outcome.get_result()
    checker = item.stash.get(_CHECKER, None)
    if rep.when != "call" or checker is None or not checker.failures:
        return
    if not _pytest_html_active(item.config):
        return
    try:
        from pytest_html import extras
    except ImportError:  # pragma: no cover - the plugin is active, so it imports
        return
    import base64

    found = list(getattr(rep, "extras", None) or [])
    for k, (report, png) in enumerate(checker.failures, 1):
        found.append(extras.text(str(report), name=f"gradcheck {k}: message"))
        if png:
            found.append(extras.png(base64.b64encode(png).decode("ascii"), name=f"gradcheck {k}"))
    rep.extras = found


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Say where the report files went (counted on disk, so it also works under xdist)."""
    for option, what, pattern in (
        ("--gradcheck-json", "report(s)", "*.json"),
        ("--gradcheck-plots", "heatmap(s) of failing checks", "*.png"),
        ("--gradcheck-html", "check(s) in the HTML report", ".fragments/*.json"),
    ):
        where = config.getoption(option)
        if where and Path(where).is_dir():
            count = len(list(Path(where).glob(pattern)))
            if option == "--gradcheck-html":
                where = str(Path(where) / "index.html")
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
    html_dir : Path or None
        Where to write this test's fragments of the session's HTML page.
    keep_png : bool
        Keep each failing check's heatmap in ``failures`` (for pytest-html extras).
    """

    def __init__(
        self,
        defaults: dict[str, Any],
        nodeid: str,
        json_dir: Path | None = None,
        plot_dir: Path | None = None,
        html_dir: Path | None = None,
        keep_png: bool = False,
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
        self.html_dir = html_dir
        self.keep_png = keep_png
        self.reports: list[Any] = []
        self.failures: list[tuple[Any, bytes | None]] = []

    # -- running -------------------------------------------------------------------------
    def _record(self, report: Any, failed: bool) -> None:
        self.reports.append(report)
        stem = f"{_slug(self.nodeid)}-{len(self.reports)}"
        if self.json_dir is not None:
            self.json_dir.mkdir(parents=True, exist_ok=True)
            (self.json_dir / f"{stem}.json").write_text(report.to_json())
        png = None
        if failed and (self.plot_dir is not None or self.html_dir is not None or self.keep_png):
            from checks.report.plotting import plot_png

            try:
                png = plot_png(report)
            except (ImportError, ValueError):  # no matplotlib, or no tensor to draw
                if self.plot_dir is not None:  # asked for explicitly: say what is missing
                    raise
        if failed:
            self.failures.append((report, png))
        if png is not None and self.plot_dir is not None:
            self.plot_dir.mkdir(parents=True, exist_ok=True)
            (self.plot_dir / f"{stem}.png").write_bytes(png)
        if self.html_dir is not None:
            from checks.report.html import make_entry, write_fragment

            entry = make_entry(self.nodeid, report, png)
            entry["seq"] = len(self.reports)
            write_fragment(self.html_dir, stem, entry)

    def _run(self, fn: Any, *args: Any, framework: bool = False, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        from checks.report.errors import GradcheckError

        options = {**self.defaults, **kwargs}
        if not framework and options.pop("order", 1) != 1:
            raise TypeError(
                "order=2 checks a double backward: torch and JAX targets only (an nn.Module, "
                "or gradcheck.function(fn, *tensors)), not "
                f"{getattr(args[0], '__name__', args[0])!r}"
            )
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
        """Check ``layer`` at ``x`` with :func:`checks.check_layer` (a ``torch.nn.Module``
        with :func:`checks.torch.check_module`); return the Report."""
        __tracebackhide__ = True
        from checks.doors.torch_targets import is_module

        if is_module(layer):
            from checks.doors.torch_front import check_module

            return self._run(check_module, layer, x, framework=True, **kwargs)
        from checks.doors.api import check_layer

        return self._run(check_layer, layer, x, **kwargs)

    def function(self, fn: Any, *inputs: Any, **kwargs: Any) -> Any:
        """Check a function of torch tensors with :func:`checks.torch.check_function`, or of
        JAX arrays with :func:`checks.jax.check_function` (``order=2``: its double
        backward)."""
        __tracebackhide__ = True
        if any(type(a).__module__.split(".")[0] in ("jax", "jaxlib") for a in inputs):
            from checks.doors.jax_front import check_function as check_jax

            return self._run(check_jax, fn, *inputs, framework=True, **kwargs)
        from checks.doors.torch_front import check_function

        return self._run(check_function, fn, *inputs, framework=True, **kwargs)

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

    ``gradcheck(layer, x, **options)`` runs :func:`checks.check_layer` (an ``nn.Module``:
    :func:`checks.torch.check_module`); ``gradcheck.function(fn, *tensors)`` runs
    :func:`checks.torch.check_function` (JAX arrays: :func:`checks.jax.check_function`);
    ``gradcheck.vjp(f, vjp, *inputs)`` runs
    :func:`checks.check_vjp`;
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
    html_opt = config.getoption("--gradcheck-html")
    checker = GradChecker(
        defaults,
        request.node.nodeid,
        json_dir=Path(json_opt) if json_opt else None,
        plot_dir=Path(plot_opt) if plot_opt else None,
        html_dir=Path(html_opt) if html_opt else None,
        keep_png=_pytest_html_active(config),
    )
    request.node.stash[_CHECKER] = checker
    return checker
