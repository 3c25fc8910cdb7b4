"""Collection rules for the whole tree (``--doctest-modules`` imports every module of
``checks``): the modules that need PyTorch are left out when it is not installed, as the
tests that need it are skipped (``property_tests/conftest.py``)."""

from __future__ import annotations

import importlib.util
import sys


def _has_torch() -> bool:
    if "torch" in sys.modules:  # None there: imported and found missing (or blocked)
        return sys.modules["torch"] is not None
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


collect_ignore = (
    [] if _has_torch() else ["checks/audit/torch_functions.py", "checks/audit/torch_corpus.py"]
)
