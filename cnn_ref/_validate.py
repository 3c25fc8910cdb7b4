"""Shared argument checks for every ``cnn_ref`` module.

Every check raises a ``TypeError`` (wrong kind of object) or a ``ValueError`` (right kind,
wrong value) whose message names the argument and the value received, so that a user who
passes a bad shape sees what was expected and what arrived. The checks are cheap (the
checker calls forward thousands of times), and they never copy or cast the data.

The API is small and stable; other modules import exactly these names:

- ``as_pair(value, name, *, minimum=1) -> (int, int)``
- ``check_array(x, name, *, ndim=None, finite=True) -> np.ndarray``
- ``check_choice(value, name, choices) -> str``
- ``check_same_shape(a, name_a, b, name_b)`` -- equal shapes, both named in the message
"""

from __future__ import annotations

from collections.abc import Collection
from numbers import Integral

import numpy as np

__all__ = ["as_pair", "check_array", "check_choice", "check_same_shape"]


def as_pair(value: object, name: str, *, minimum: int = 1) -> tuple[int, int]:
    """Return ``value`` as a pair of Python ints ``(h, w)``, each at least ``minimum``.

    Parameters
    ----------
    value : int or pair of int
        An int means the same value for both axes. ``bool`` is rejected (it is an int in
        Python, but ``stride=True`` is always a mistake).
    name : str
        The argument's name, used in error messages.
    minimum : int, default 1
        Smallest allowed value: 1 for sizes, strides and dilations, 0 for padding.

    Returns
    -------
    tuple of (int, int)

    Raises
    ------
    TypeError
        If ``value`` is not an int or a length-2 sequence of ints.
    ValueError
        If a value is below ``minimum``.

    Examples
    --------
    >>> as_pair(2, "stride")
    (2, 2)
    >>> as_pair((1, 3), "padding", minimum=0)
    (1, 3)
    >>> as_pair(0, "stride")
    Traceback (most recent call last):
    ...
    ValueError: stride must be >= 1, got 0
    """
    if isinstance(value, Integral) and not isinstance(value, bool):
        pair = (int(value), int(value))
    elif (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, Integral) and not isinstance(v, bool) for v in value)
    ):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints (h, w), got {value!r}")
    if pair[0] < minimum or pair[1] < minimum:
        shown = pair[0] if isinstance(value, Integral) else value
        raise ValueError(f"{name} must be >= {minimum}, got {shown!r}")
    return pair


def _all_finite(x: np.ndarray) -> bool:
    if x.size <= 65536:  # small arrays: the direct test is cheapest (per-call overhead matters)
        return bool(np.isfinite(x).all())
    # A sum is one pass without a temporary; it is finite whenever every element is (unless
    # it overflows, in which case the exact element-wise test decides).
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(x.sum()):
            return True
    return bool(np.isfinite(x).all())


def check_array(
    x: object, name: str, *, ndim: int | None = None, finite: bool = True
) -> np.ndarray:
    """Check that ``x`` is a floating or complex ndarray with ``ndim`` axes and finite values.

    Parameters
    ----------
    x : object
        The value to check. Lists are not converted: ``cnn_ref`` never guesses a dtype.
    name : str
        The argument's name, used in error messages.
    ndim : int, optional
        Required number of axes (for example 4 for NCHW maps).
    finite : bool, default True
        Reject NaN and infinity.

    Returns
    -------
    numpy.ndarray
        ``x`` itself (no copy, no cast).

    Raises
    ------
    TypeError
        If ``x`` is not an ndarray or its dtype is not floating or complex.
    ValueError
        If ``x`` has the wrong number of axes or non-finite values.

    Examples
    --------
    >>> import numpy as np
    >>> check_array(np.zeros((2, 3)), "x", ndim=2).shape
    (2, 3)
    >>> check_array(np.zeros((2, 3)), "x", ndim=4)
    Traceback (most recent call last):
    ...
    ValueError: x must have 4 dimensions, got shape (2, 3)
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype.kind not in "fc":
        raise TypeError(
            f"{name} must have a floating or complex dtype, got {x.dtype} "
            f"(convert it explicitly, e.g. {name}.astype(np.float64))"
        )
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {x.shape}")
    if finite and x.size and not _all_finite(x):
        bad = np.argwhere(~np.isfinite(x))
        raise ValueError(
            f"{name} contains {len(bad)} non-finite value(s) (NaN or Inf), "
            f"first at index {tuple(int(i) for i in bad[0])}"
        )
    return x


def check_choice(value: object, name: str, choices: Collection[str]) -> str:
    """Check that ``value`` is one of ``choices``.

    Examples
    --------
    >>> check_choice("conv", "convention", ("conv", "xcorr"))
    'conv'
    >>> check_choice("full", "convention", ("conv", "xcorr"))
    Traceback (most recent call last):
    ...
    ValueError: convention must be one of 'conv', 'xcorr', got 'full'
    """
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


def check_same_shape(a: np.ndarray, name_a: str, b: np.ndarray, name_b: str) -> None:
    """Raise ``ValueError`` unless ``a.shape == b.shape`` (both names and shapes in the message)."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} has shape {a.shape}, expected {b.shape} (the shape of {name_b})"
        )
