"""Contract checks: the layer must not mutate what it is given, must be deterministic, must
return gradients of the right shape and kind, and must produce finite values.

Every helper here returns the text of a problem (or raises :class:`LayerContractError`); the
runner collects them into ``Report.problems``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

from checks.report.errors import LayerContractError
from checks.report.messages import format_indices

__all__ = [
    "REFUSALS",
    "call_layer",
    "check_gradient_array",
    "fingerprint",
    "format_indices",
    "mutated",
    "nonfinite_indices",
    "refused",
    "restored_params",
    "snapshot",
]

_MAX_LISTED = 10

#: What a layer raises when it does not take an input of that dtype or shape (numpy's own
#: errors, a dtype guard, a complex value cast to float). On one of the checker's unusual
#: inputs -- complex values, float64 copies of a float32 layer, a doubled batch -- it means
#: "not this way" and the checker falls back; any other exception, and any exception on an
#: ordinary input, is the layer failing: a :class:`LayerContractError`.
REFUSALS: tuple[type[Exception], ...] = (
    TypeError,
    ValueError,
    IndexError,
    np.exceptions.ComplexWarning,
)


def snapshot(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Copies of ``arrays`` to compare against later."""
    return {k: np.array(v, copy=True) for k, v in arrays.items()}


# elements hashed at a time by fingerprint (float64 temporaries of this size)
_HASH_SLICE = 1 << 16


def fingerprint(arrays: Mapping[str, np.ndarray]) -> dict[str, tuple[Any, ...]]:
    """What :func:`mutated` compares, without a copy of each array: its shape, dtype and a
    digest of its values (every NaN taken as one value and -0.0 as 0.0, as
    ``np.array_equal(..., equal_nan=True)`` does)."""
    return {k: _fingerprint(np.asarray(v)) for k, v in arrays.items()}


def _fingerprint(a: np.ndarray) -> tuple[Any, ...]:
    h = hashlib.blake2b(digest_size=16)
    flat = a.reshape(-1)
    for i in range(0, flat.size, _HASH_SLICE):
        part = flat[i : i + _HASH_SLICE]
        if a.dtype.kind in "fc":
            part = np.where(np.isnan(part), np.nan, part + 0)  # -0.0 + 0 is 0.0
        h.update(np.ascontiguousarray(part).tobytes())
    return (a.shape, a.dtype.str, h.hexdigest())


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def mutated(before: Mapping[str, tuple[Any, ...]], now: Mapping[str, np.ndarray]) -> list[str]:
    """Names whose array changed (values, shape or dtype) since ``before`` (a
    :func:`fingerprint`) was taken."""
    return [k for k, v in before.items() if k in now and v != _fingerprint(np.asarray(now[k]))]


def nonfinite_indices(a: np.ndarray, limit: int = _MAX_LISTED) -> list[tuple[int, ...]]:
    """Multi-indices of the first ``limit`` NaN/Inf elements of ``a`` (row-major order)."""
    bad = np.argwhere(~np.isfinite(a))[:limit]
    return [tuple(int(i) for i in row) for row in bad]


def check_gradient_array(name: str, g: Any, expected: np.ndarray, who: str) -> str | None:
    """Problem text when gradient ``g`` of ``name`` is missing, mis-shaped or not real float.

    A numpy or Python float scalar counts as a 0-d array when ``expected`` is 0-d."""
    if g is None:
        return f"{who} returned None for the gradient of {name}"
    if expected.ndim == 0 and isinstance(g, (np.generic, float)):
        # the gradient of a 0-d tensor may be a scalar, as forward's scalar output may (numpy
        # arithmetic on 0-d arrays returns numpy scalars); its dtype is judged below
        g = np.asarray(g)
    if not isinstance(g, np.ndarray):
        return (
            f"{who} returned a {type(g).__name__} for the gradient of {name}; "
            "expected a numpy array"
        )
    if g.shape != expected.shape:
        return (
            f"gradient of {name} has shape {g.shape}, {name} has shape {expected.shape} "
            "(the checker never broadcasts)"
        )
    if g.dtype.kind != "f":
        return (
            f"gradient of {name} has dtype {g.dtype} (kind {g.dtype.kind!r}); "
            f"expected a real floating dtype like {name}'s {expected.dtype}"
        )
    return None


def call_layer(fn: Callable[..., Any], what: str, *args: Any) -> Any:
    """Call ``fn(*args)``; wrap anything it raises in a :class:`LayerContractError` saying when.

    ``what`` describes the call, e.g. ``"Conv2D.forward while perturbing K[0, 1, 2, 2]"``.
    """
    try:
        return fn(*args)
    except LayerContractError:
        raise
    except Exception as exc:  # the layer's own error, with our context around it
        raise LayerContractError(f"{what} raised {type(exc).__name__}: {exc}") from exc


def refused(exc: BaseException) -> bool:
    """Whether ``exc``, raised by :func:`call_layer`, is the layer refusing its input (its
    cause is one of :data:`REFUSALS`) -- a fallback only where the input was unusual."""
    return isinstance(exc, LayerContractError) and isinstance(exc.__cause__, REFUSALS)


@contextmanager
def restored_params(params: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
    """Put every parameter back -- the same array object with its original values -- on exit.

    Runs also when the layer raises, so a failed check never leaves a perturbed layer behind.
    """
    objects = dict(params)
    values = snapshot(params)
    try:
        yield values
    finally:
        for k, arr in objects.items():
            params[k] = arr
            if isinstance(arr, np.ndarray) and arr.flags.writeable and not _same(arr, values[k]):
                np.copyto(arr, values[k])
