"""Hypothesis strategies for gradient-checking layers, and a property-test builder.

Configurations are small NamedTuples that describe one geometry and always give a non-empty
output; element counts are capped so that a full gradient check of one example stays cheap.
This is the only module of ``checks`` that imports Hypothesis.

Examples
--------
A property test of your own convolution layer, over every valid geometry:

>>> from checks.doors.strategies import conv_configs, gradcheck_property
>>> test_my_conv = gradcheck_property(                                 # doctest: +SKIP
...     conv_configs(max_stride=2),
...     lambda c: MyConv(c.c_in, c.c_out, (c.kh, c.kw), stride=c.stride, padding=c.padding),
... )

Or draw the pieces yourself:

>>> from hypothesis import given, strategies as st                      # doctest: +SKIP
>>> @given(cfg=conv_configs(), data=st.data())                          # doctest: +SKIP
... def test_output_shape(cfg, data):
...     x = data.draw(well_conditioned_arrays(cfg.x_shape), label="x")
...     assert my_conv(x, cfg).shape == cfg.out_shape
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

import numpy as np
from hypothesis import strategies as st

__all__ = [
    "ConvConfig",
    "DenseConfig",
    "SubsampleConfig",
    "conv_configs",
    "dense_configs",
    "gradcheck_property",
    "subsample_configs",
    "tie_free_arrays",
    "well_conditioned_arrays",
]

C = TypeVar("C")


def _out_len(size: int, k: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1


class ConvConfig(NamedTuple):
    """One convolution geometry (NCHW, ``K`` is ``(c_out, c_in, kh, kw)``)."""

    n: int
    c_in: int
    c_out: int
    h: int
    w: int
    kh: int
    kw: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.c_in, self.h, self.w)

    @property
    def K_shape(self) -> tuple[int, int, int, int]:
        return (self.c_out, self.c_in, self.kh, self.kw)

    @property
    def b_shape(self) -> tuple[int]:
        return (self.c_out,)

    @property
    def kernel_size(self) -> tuple[int, int]:
        return (self.kh, self.kw)

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        """``(n, c_out, h_out, w_out)``; both spatial sizes are at least 1 by construction."""
        ho = _out_len(self.h, self.kh, self.stride[0], self.padding[0], self.dilation[0])
        wo = _out_len(self.w, self.kw, self.stride[1], self.padding[1], self.dilation[1])
        return (self.n, self.c_out, ho, wo)


class SubsampleConfig(NamedTuple):
    """One subsampling geometry: ``size`` x ``size`` blocks moved by ``stride`` (NCHW)."""

    n: int
    c: int
    h: int
    w: int
    size: tuple[int, int]
    stride: tuple[int, int]
    kind: str

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.c, self.h, self.w)

    @property
    def param_shape(self) -> tuple[int]:
        """Shape of ``beta`` and ``b``: one per channel."""
        return (self.c,)

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        ho = (self.h - self.size[0]) // self.stride[0] + 1
        wo = (self.w - self.size[1]) // self.stride[1] + 1
        return (self.n, self.c, ho, wo)


class DenseConfig(NamedTuple):
    """One fully-connected geometry: ``x`` is ``(n, in_features)``, ``W`` ``(out, in)``."""

    n: int
    in_features: int
    out_features: int

    @property
    def x_shape(self) -> tuple[int, int]:
        return (self.n, self.in_features)

    @property
    def W_shape(self) -> tuple[int, int]:
        return (self.out_features, self.in_features)

    @property
    def b_shape(self) -> tuple[int]:
        return (self.out_features,)

    @property
    def out_shape(self) -> tuple[int, int]:
        return (self.n, self.out_features)


def _check_bounds(**bounds: int) -> None:
    for name, value in bounds.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


@st.composite
def _conv(
    draw: st.DrawFn,
    max_batch: int,
    max_channels: int,
    max_side: int,
    max_kernel: int,
    max_stride: int,
    max_padding: int,
    max_dilation: int,
    max_elements: int,
) -> ConvConfig:
    def axis(name: str) -> tuple[int, int, int, int, int]:
        d = draw(st.integers(1, max_dilation), label=f"dilation_{name}")
        # the dilated kernel must fit into max_side + 2 * padding
        k = draw(st.integers(1, max(1, min(max_kernel, (max_side - 1) // d + 1))), label=f"k{name}")
        s = draw(st.integers(1, max_stride), label=f"stride_{name}")
        p = draw(st.integers(0, min(max_padding, d * (k - 1))), label=f"padding_{name}")
        lo = max(1, d * (k - 1) + 1 - 2 * p)  # smallest side with a non-empty output
        return d, k, s, p, lo

    dh, kh, sh, ph, h_lo = axis("h")
    dw, kw, sw, pw, w_lo = axis("w")
    n = draw(st.integers(1, max(1, min(max_batch, max_elements // (h_lo * w_lo)))), label="n")
    c_in = draw(
        st.integers(1, max(1, min(max_channels, max_elements // (n * h_lo * w_lo)))),
        label="c_in",
    )
    c_out = draw(
        st.integers(1, max(1, min(max_channels, max_elements // (c_in * kh * kw)))),
        label="c_out",
    )
    area = max(h_lo * w_lo, max_elements // (n * c_in))
    h = draw(st.integers(h_lo, max(h_lo, min(max_side, area // w_lo))), label="h")
    w = draw(st.integers(w_lo, max(w_lo, min(max_side, area // h))), label="w")
    return ConvConfig(n, c_in, c_out, h, w, kh, kw, (sh, sw), (ph, pw), (dh, dw))


def conv_configs(
    *,
    max_batch: int = 3,
    max_channels: int = 4,
    max_side: int = 9,
    max_kernel: int = 4,
    max_stride: int = 2,
    max_padding: int = 2,
    max_dilation: int = 2,
    max_elements: int = 400,
) -> st.SearchStrategy[ConvConfig]:
    """Valid convolution geometries with a non-empty output.

    Parameters
    ----------
    max_batch, max_channels, max_side, max_kernel : int
        Upper bounds on ``n``, ``c_in``/``c_out``, ``h``/``w`` and ``kh``/``kw``.
    max_stride, max_padding, max_dilation : int
        Upper bounds on the stride (1 fixes it), zero padding (0 turns it off) and dilation;
        each is drawn per axis, so non-square strides and paddings occur.
    max_elements : int
        Cap on the elements of ``x`` and of ``K`` (so one full check stays cheap).

    Returns
    -------
    SearchStrategy[ConvConfig]

    Notes
    -----
    Output side ``(size + 2p - d(k - 1) - 1) // s + 1 >= 1`` holds by construction: the
    side is drawn from at least ``d(k - 1) + 1 - 2p``. Padding is at most ``d(k - 1)`` (a
    wider pad only adds windows that see nothing but zeros).
    """
    _check_bounds(
        max_batch=max_batch,
        max_channels=max_channels,
        max_side=max_side,
        max_kernel=max_kernel,
        max_stride=max_stride,
        max_dilation=max_dilation,
        max_elements=max_elements,
    )
    if max_padding < 0:
        raise ValueError(f"max_padding must be >= 0, got {max_padding!r}")
    return _conv(
        max_batch,
        max_channels,
        max_side,
        max_kernel,
        max_stride,
        max_padding,
        max_dilation,
        max_elements,
    )


@st.composite
def _subsample(
    draw: st.DrawFn,
    max_batch: int,
    max_channels: int,
    max_side: int,
    max_size: int,
    overlapping: bool,
    kinds: tuple[str, ...],
    max_elements: int,
) -> SubsampleConfig:
    kind = draw(st.sampled_from(kinds), label="kind")
    size = (
        draw(st.integers(1, min(max_size, max_side)), label="size_h"),
        draw(st.integers(1, min(max_size, max_side)), label="size_w"),
    )
    if overlapping:
        stride = (
            draw(st.integers(1, size[0]), label="stride_h"),
            draw(st.integers(1, size[1]), label="stride_w"),
        )
    else:
        stride = size
    n = draw(st.integers(1, max(1, min(max_batch, max_elements // (size[0] * size[1])))), label="n")
    c = draw(
        st.integers(1, max(1, min(max_channels, max_elements // (n * size[0] * size[1])))),
        label="c",
    )
    area = max(size[0] * size[1], max_elements // (n * c))
    h = draw(st.integers(size[0], max(size[0], min(max_side, area // size[1]))), label="h")
    w = draw(st.integers(size[1], max(size[1], min(max_side, area // h))), label="w")
    return SubsampleConfig(n, c, h, w, size, stride, kind)


def subsample_configs(
    *,
    max_batch: int = 3,
    max_channels: int = 4,
    max_side: int = 9,
    max_size: int = 3,
    overlapping: bool = False,
    kinds: Sequence[str] = ("sum", "mean", "max"),
    max_elements: int = 400,
) -> st.SearchStrategy[SubsampleConfig]:
    """Valid subsampling geometries (eq. (3)): ``h >= size_h``, ``w >= size_w``.

    Parameters
    ----------
    max_size : int
        Upper bound on the block size per axis (drawn per axis: non-square blocks occur).
    overlapping : bool
        ``False`` (down of eq. (3)): stride equals the block size. ``True``: stride drawn
        in ``1..size``.
    kinds : sequence of str
        Pooling kinds to draw from (``"sum"``, ``"mean"``, ``"max"``).

    Notes
    -----
    Sides need not be divisible by the block size; trailing rows/columns are cropped, which
    is the case that catches up-sampling bugs at the border.
    """
    _check_bounds(
        max_batch=max_batch,
        max_channels=max_channels,
        max_side=max_side,
        max_size=max_size,
        max_elements=max_elements,
    )
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in ("sum", "mean", "max")]
    if not kinds or bad:
        raise ValueError(f"kinds must be a non-empty subset of sum/mean/max, got {kinds!r}")
    return _subsample(
        max_batch, max_channels, max_side, max_size, bool(overlapping), kinds, max_elements
    )


def dense_configs(*, max_batch: int = 4, max_features: int = 12) -> st.SearchStrategy[DenseConfig]:
    """Fully-connected geometries (eq. (5)/(6)) with ``n``, features in ``1..max``."""
    _check_bounds(max_batch=max_batch, max_features=max_features)
    return st.builds(
        DenseConfig,
        st.integers(1, max_batch),
        st.integers(1, max_features),
        st.integers(1, max_features),
    )


def _dtype(dtype: Any) -> np.dtype[Any]:
    dt = np.dtype(dtype)
    if dt.kind != "f" or dt.itemsize not in (4, 8):
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt


def _dims(shape: Sequence[int] | int) -> tuple[int, ...]:
    dims = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    if any(not isinstance(d, (int, np.integer)) or d < 0 for d in dims):
        raise ValueError(f"shape must be non-negative integers, got {shape!r}")
    return tuple(int(d) for d in dims)


# 2**32 seeds are plenty; the seed shrinks towards 0, which is still a valid array
_SEEDS = st.integers(0, 2**32 - 1)


def well_conditioned_arrays(
    shape: Sequence[int] | int,
    dtype: Any = np.float64,
    *,
    low: float = 0.1,
    high: float = 2.0,
) -> st.SearchStrategy[np.ndarray]:
    """Arrays whose entries have magnitude in ``[low, high]`` and a random sign.

    No zeros, no huge or tiny values: finite differences are accurate on them and a
    gradient bug cannot hide behind a zero input or a constant array.

    Parameters
    ----------
    shape : int or tuple of int
    dtype : float32 or float64
    low, high : float
        Magnitude bounds, ``0 < low <= high``.

    Notes
    -----
    Hypothesis draws a seed and numpy fills the array from it (uniform magnitudes, fair
    signs). Drawing every element through Hypothesis would fail its ``large_base_example``
    health check at a few hundred elements, and letting it use a fill value would make most
    elements equal -- the opposite of well-conditioned.
    """
    dt = _dtype(dtype)
    dims = _dims(shape)
    if not (0 < low <= high) or not np.isfinite(high):
        raise ValueError(f"need 0 < low <= high < inf, got low={low!r}, high={high!r}")

    def build(seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        magnitude = rng.uniform(low, high, size=dims)
        sign = np.where(rng.random(size=dims) < 0.5, -1.0, 1.0)
        return (sign * magnitude).astype(dt)

    return _SEEDS.map(build)


def tie_free_arrays(
    shape: Sequence[int] | int,
    dtype: Any = np.float64,
    *,
    spacing: float = 0.05,
) -> st.SearchStrategy[np.ndarray]:
    """Arrays of pairwise-distinct values at least ``spacing`` apart (for max pooling).

    A random permutation of ``0..size-1``, centred and scaled by ``spacing``: no two
    elements tie, so every max-pool window has one arg-max and a finite-difference step
    smaller than ``spacing / 2`` never moves it. The permutation comes from a drawn seed
    (see :func:`well_conditioned_arrays`).
    """
    dt = _dtype(dtype)
    dims = _dims(shape)
    if not spacing > 0:
        raise ValueError(f"spacing must be > 0, got {spacing!r}")
    size = int(np.prod(dims, dtype=np.int64))

    def build(seed: int) -> np.ndarray:
        perm = np.random.default_rng(seed).permutation(size).astype(np.float64)
        return ((perm - (size - 1) / 2) * spacing).reshape(dims).astype(dt)

    return _SEEDS.map(build)


def gradcheck_property(
    configs: st.SearchStrategy[C],
    factory: Callable[[C], Any],
    *,
    inputs: Callable[[C], st.SearchStrategy[np.ndarray]] | None = None,
    draw_params: bool = True,
    dtype: Any = np.float64,
    **check_options: Any,
) -> Callable[..., None]:
    """Turn a strategy of configurations into a property test of a layer factory.

    Parameters
    ----------
    configs : SearchStrategy
        Configurations, e.g. :func:`conv_configs`; each must have an ``x_shape`` attribute
        unless ``inputs`` is given.
    factory : callable
        ``factory(config) -> layer`` following the layer protocol (forward / backward /
        params / grads).
    inputs : callable, optional
        ``inputs(config) -> SearchStrategy[np.ndarray]`` for ``x``; the default draws
        :func:`well_conditioned_arrays` of ``config.x_shape``, or :func:`tie_free_arrays`
        when the configuration has ``kind == "max"``.
    draw_params : bool
        Overwrite every array in ``layer.params`` in place with a drawn well-conditioned
        array, so Hypothesis explores parameter values too (and shrinks them).
    dtype : float32 or float64
        dtype of the drawn arrays.
    **check_options
        Passed to :func:`checks.check_layer` (``method``, ``coverage``, ``rtol``, ...).

    Returns
    -------
    callable
        A Hypothesis test (no arguments when called by pytest): assign it to a module-level
        name starting with ``test_``.
    """
    dt = _dtype(dtype)

    def default_inputs(config: Any) -> st.SearchStrategy[np.ndarray]:
        shape = getattr(config, "x_shape", None)
        if shape is None:
            raise TypeError(
                f"configuration {config!r} has no x_shape; pass inputs=callable(config)"
            )
        if getattr(config, "kind", None) == "max":
            return tie_free_arrays(shape, dt)
        return well_conditioned_arrays(shape, dt)

    make_inputs = inputs if inputs is not None else default_inputs

    from hypothesis import given

    @given(config=configs, data=st.data())
    def property_test(config: Any, data: st.DataObject) -> None:
        from checks.doors.api import check_layer

        layer = factory(config)
        if draw_params:
            for name, value in getattr(layer, "params", {}).items():
                value[...] = data.draw(
                    well_conditioned_arrays(value.shape, value.dtype), label=f"params[{name}]"
                )
        x = data.draw(make_inputs(config), label="x")
        check_layer(layer, x, **check_options)

    name = getattr(factory, "__name__", "layer")
    property_test.__name__ = f"test_gradients_of_{name}".replace("<lambda>", "layer")
    property_test.__qualname__ = property_test.__name__
    return property_test
