"""Hypothesis profiles for the property tests.

``dev`` is the default for ``make test`` (fast, random); ``ci`` is what ``.ci/run`` uses
(derandomised, more examples); ``thorough`` is for ``make test-thorough``. Select one with
``HYPOTHESIS_PROFILE=ci``.
"""

from __future__ import annotations

import os

# one torch (OpenMP) thread per process, as `make test` sets it, also when pytest is run by
# hand: the torch door makes thousands of small calls, and two pytest workers with two torch
# threads each on two busy cores made a check of a small CNN 14x slower (7.5 s instead of
# 0.55 s). Read when torch is first imported, which is after this file.
os.environ.setdefault("OMP_NUM_THREADS", "1")

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


def _missing(module: str) -> bool:
    try:
        __import__(module)
    except ModuleNotFoundError:
        return True
    return False


# marker -> (module it needs, the skip reason)
_OPTIONAL = {
    "torch": ("torch", "needs PyTorch (pip install the 'torch' extra)"),
    "jax": ("jax", "needs JAX (pip install the 'jax' extra)"),
}


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked ``torch`` (``jax``) are skipped before they run when PyTorch (JAX) is
    absent: a Hypothesis test that skips from inside (``importorskip``) first prints every
    explicit example it was given ("Failing explicit example: ..." with whole arrays)."""
    for marker, (module, reason) in _OPTIONAL.items():
        marked = [item for item in items if item.get_closest_marker(marker)]
        if marked and _missing(module):
            skip = pytest.mark.skip(reason=reason)
            for item in marked:
                item.add_marker(skip)
