"""Hypothesis profiles for the property tests.

``dev`` is the default for ``make test`` (fast, random); ``ci`` is what ``.ci/run`` uses
(derandomised, more examples); ``thorough`` is for ``make test-thorough``. Select one with
``HYPOTHESIS_PROFILE=ci``.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

_common = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
settings.register_profile("dev", max_examples=25, **_common)
settings.register_profile("ci", max_examples=60, derandomize=True, print_blob=True, **_common)
settings.register_profile("thorough", max_examples=500, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def _torch_missing() -> bool:
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError:
        return True
    return False


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked ``torch`` are skipped before they run when PyTorch is absent: a
    Hypothesis test that skips from inside (``importorskip``) first prints every explicit
    example it was given ("Failing explicit example: ..." with whole arrays)."""
    marked = [item for item in items if item.get_closest_marker("torch")]
    if marked and _torch_missing():
        skip = pytest.mark.skip(reason="needs PyTorch (pip install the 'torch' extra)")
        for item in marked:
            item.add_marker(skip)


def _preload_matplotlib() -> None:
    """Import matplotlib's plotting modules before any test runs.

    pytester's in-process runs (``test_pytest_plugin.py``, ``test_html_report.py``) take out
    of ``sys.modules`` every module the inner run imported first. matplotlib first imported
    there is imported anew by the next test that plots, beside submodules that stayed, and a
    figure of the new modules rejects the old ``SubplotSpec`` ("Single argument to subplot
    must be a three-digit integer"): ``test_plotting.py`` and ``benchmarks/test_report.py``
    failed whenever an xdist worker happened to run a pytester test before them.
    """
    try:
        import matplotlib
    except ModuleNotFoundError:
        return
    matplotlib.use("Agg")
    import matplotlib.backends.backend_agg
    import matplotlib.colors
    import matplotlib.figure
    import matplotlib.pyplot


_preload_matplotlib()
