"""Working memory of a check: at most ``FACTOR`` times the layer's own tensors.

The layer's tensors are ``x``, ``y``, ``dx``, the parameters and their gradients, in bytes,
in the caller's dtypes (:func:`tensor_bytes`; for :func:`checks.check_vjp` the inputs, the
output and the gradients). What a check holds at its peak besides them -- its copies of
``x``, ``y`` and ``dy``, the analytic gradients in float64, the report's per-element arrays,
the scratch of the numerical part, and what the layer allocates in the forward calls the
checker makes -- is meant to stay within :func:`budget`, ``max(FACTOR * tensors, FLOOR)``.

``FLOOR`` (32 MiB) keeps small layers from being cut into small forward calls: ``cnn_ref``'s
conv allocates a 4 MiB im2col buffer per call, and with a 16 MiB floor the test suite's
8 -> 8 map conv on x (8, 8, 32, 32) took 1025 forward calls instead of 135 (283 at 32 MiB).

How the runner (:mod:`checks.engine.runner`) keeps to it: ``account_memory`` (in
:mod:`checks.engine.evaluation`) counts what the run holds
outside its numerical part (about three copies of the inputs and two of the outputs, more
when a float32 layer is differenced in float64); the rest of the budget is the scratch of
the numerical part. Packed forward calls, the outputs kept for decoding a group
(:mod:`checks.engine.grouping`) and one-by-one evaluations are cut to it, along the copies and,
when one copy of the whole batch does not fit, along the samples (which the batching probe
showed to be independent: the numbers are the same bit for bit). A grouping whose copies
of one sample do not fit is not tried; its elements are then evaluated one by one (or in
a coarser lattice), which gives the same derivatives to rounding but error estimates of
the one-by-one formula. Refinement keeps only its candidates at each step. The layer's own
allocations are estimated: a forward call is taken to hold its input and two outputs,
twice (a layer's cache of its previous call lives until the new call ends), and after
packed calls that would leave a large cache the runner calls forward once on the tensor
itself.

Outputs reduced as they arrive: a projection's stencil outputs and, where one element's
outputs exceed the scratch, a one-by-one element's are summed in slices, and not copied
when they are reduced before the next call (:func:`checks.engine.targets.borrowing`).

Not bounded: the layer's own allocations beyond that model (a complex-step call of a float32
layer allocates in complex128). Measured (``property_tests/measure_memory.py``, peaks with
``tracemalloc``, x (16, 32, 32, 32)): float64 conv 6.5x, float64 ReLU conv with Richardson
6.8x, float32 ReLU conv 7.7x, float32 tanh conv promoted to float64 7.9x (docs/limitations.md).

The command line (``python -m checks layer``) compares :func:`budget` of the layer's tensors
with :func:`available` memory before it starts and refuses (exit 2) when it would not fit.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping

import numpy as np

__all__ = ["FACTOR", "FLOOR", "available", "budget", "format_bytes", "parse_bytes", "tensor_bytes"]

#: working memory of a check, in multiples of the layer's tensors
FACTOR = 8
#: ... and at least this many bytes
FLOOR = 32 << 20


def budget(tensors: int) -> int:
    """Bytes a check may hold at its peak for a layer whose tensors take ``tensors`` bytes."""
    return max(FACTOR * int(tensors), FLOOR)


def tensor_bytes(x: np.ndarray, y: np.ndarray, params: Mapping[str, np.ndarray]) -> int:
    """``x + y + dx + params + grads`` in bytes (``dx`` and the gradients taken to be the
    size and dtype of ``x`` and of the parameters, as the layer protocol requires)."""
    p = sum(int(np.asarray(v).nbytes) for v in params.values())
    return 2 * int(x.nbytes) + int(y.nbytes) + 2 * p


def available() -> int | None:
    """Memory available to a new process (``MemAvailable`` of ``/proc/meminfo``, else free
    pages), or ``None`` when the system does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_AVPHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}  # fmt: skip


def parse_bytes(text: str) -> int:
    """``"512MB"``, ``"1.5GiB"``, ``"2g"``, ``"1000000"`` -> bytes (decimal or binary units)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([kmgtKMGT]i?)?[bB]?\s*", text)
    if not m:
        raise ValueError(f"not a size: {text!r} (examples: 512MB, 1.5GiB, 2G)")
    value = float(m.group(1)) * _UNITS[(m.group(2) or "").lower()]
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"not a positive size: {text!r}")
    return int(value)


def format_bytes(n: float) -> str:
    """``1536 -> '1.5 KiB'``: binary units, three significant digits."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.3g} TiB"
