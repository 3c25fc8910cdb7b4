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

# matplotlib imported once, before any test: pytester's in-process runs (the plugin and HTML
# report tests) drop from sys.modules whatever they imported, and a check that plotted inside
# one left the next plot with a second copy of matplotlib's modules ("Single argument to
# subplot must be a three-digit integer, not GridSpec(...)" in whichever test came after)
try:
    import matplotlib.figure  # noqa: F401
    from matplotlib.backends import backend_agg  # noqa: F401
except ImportError:  # plotting is optional; its tests skip
    pass


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
